"""More on `exported_pages`: windows, protections, errors and guest programs."""

import pytest

from harness.pytest_plugin import DdiError, ddih_pattern


def test_window_at_an_offset(exported_pages):
    """Export pages 1..2 of a 3-page buffer; offsets are buffer offsets on both sides."""
    pages = exported_pages(3 * 4096, off=4096)
    assert pages.maplen == 8192
    pages.write(4096, b"abc")
    assert pages.read(4096, 3) == b"abc"
    assert pages.kernel_check(seed=1, offset=4096, length=3) is False
    pages.kernel_fill(seed=1)                       # the whole buffer, mapped or not
    assert pages.read() == ddih_pattern(1, 3 * 4096)[4096:]
    with pytest.raises(DdiError, match="ERANGE"):   # page 0 is not mapped in user space
        pages.read(0, 1)


def test_read_only_mapping(exported_pages):
    pages = exported_pages(8192, prot="r")
    pages.kernel_fill(seed=4)
    assert pages.check(seed=4)
    with pytest.raises(DdiError, match="EACCES"):
        pages.write(0, b"x")


def test_driver_refusals_are_errors(exported_pages):
    with pytest.raises(DdiError, match="EINVAL"):   # off not page-aligned
        exported_pages(8192, off=100)
    with pytest.raises(DdiError, match="returned NULL"):  # size 0: ddi_umem_alloc gives NULL
        exported_pages(0)


def test_nosleep_buffer(exported_pages):
    pages = exported_pages(5000, flags="DDI_UMEM_NOSLEEP")
    assert pages.size == 8192 and pages.alloc["type"] == 0x200
    pages.fill(seed=11)
    assert pages.kernel_check(seed=11)


def test_programs_get_status_output_and_the_pages(exported_pages):
    pages = exported_pages(4096)
    r = pages.run("/bin/sh", "-c", 'echo "fd=$DDIH_FD size=$DDIH_SIZE len=$DDIH_LEN"; echo oops >&2; exit 3')
    assert r.status == 3 and not r.ok
    assert r.stdout.startswith("fd=") and "size=4096 len=4096" in r.stdout
    assert r.stderr == "oops\n"
    assert pages.run("/bin/sleep", "5", timeout=1).timed_out


def test_pages_are_released_at_teardown(ddi_guest, exported_pages):
    before = ddi_guest.outstanding()
    pages = exported_pages(4096)
    assert ddi_guest.outstanding() == before + 1
    pages.close()                                   # the fixture would do it after the test
    assert ddi_guest.outstanding() == before
