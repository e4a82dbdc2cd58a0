"""Live tests of your own, with the ddi-harness pytest plugin (harness/pytest_plugin.py).

Each test talks to the real ddih driver in a Debian guest booted once for the
session.  `ddi_driver.check` runs the steps in the kernel and fails the test
with a step-by-step comparison when the kernel and the model disagree;
`exported_pages` gives a umem buffer exported to user space by mmap.

    python3 -m pytest -q examples -p harness.pytest_plugin
"""

from pathlib import Path

import pytest

from harness.pytest_plugin import ddih_pattern

HERE = Path(__file__).resolve().parent


def test_rmap_first_fit(ddi_driver):
    """Steps as Python data; the model predicts each result, the kernel must agree."""
    out = ddi_driver.check([
        {"op": "rmallocmap", "map": "m", "mapsize": 1},
        {"op": "rmfree", "map": "m", "size": 100, "index": 1},
        {"op": "rmalloc", "map": "m", "size": 30},
        {"op": "rmalloc", "map": "m", "size": 30},
        {"op": "rmfree", "map": "m", "size": 30, "index": 1},
        {"op": "rmalloc", "map": "m", "size": 10},
    ])
    assert out.values[2:4] == [1, 31]
    assert out.values[5] == 1  # the Linux port is first-fit: the freed hole at 1 is reused
    assert out.results[5].state == {"avail": 60, "total": 100}


def test_trace_file(ddi_driver):
    """A trace YAML file (expect_linux values are checked as well as the model)."""
    out = ddi_driver.check(HERE / "traces" / "my-map.yaml")
    assert out.ok and len(out.steps) == 9


def test_kmem_as_yaml_text(ddi_driver):
    out = ddi_driver.check("""
      - {op: kmem_zalloc, buf: a, size: 100, flags: [KM_SLEEP]}
      - {op: kmem_alloc, buf: b, size: 5000, flags: KM_NOSLEEP}
      - {op: kmem_free, buf: a, size: 100}
      - {op: kmem_free, buf: b, size: 5000}
    """)
    a, b = out.results[0], out.results[1]
    assert a.value == 128 and a.attrs["zeroed"] is True  # kmalloc-128
    assert b.value == 8192


def test_a_wrong_expectation_is_shown_step_by_step(ddi_driver):
    """run() returns the comparison instead of failing; report() is what check() prints."""
    out = ddi_driver.run([
        {"op": "rmallocmap", "map": "m", "mapsize": 1},
        {"op": "rmfree", "map": "m", "size": 1000, "index": 100},
        {"op": "rmalloc", "map": "m", "size": 150, "expect_linux": 1000},  # wrong on purpose
    ])
    assert not out.ok
    assert out.first_divergence.index == 3
    text = out.report()
    assert ">> step 3: rmalloc(m, 150) -> kernel 100; model 100" in text
    assert "value: expected (test) 1000, kernel 100" in text  # the test was wrong, not the kernel


def test_steps_that_are_not_a_trace_fail_with_the_fix(ddi_driver):
    with pytest.raises(pytest.fail.Exception, match=r"not a valid trace: .*step 2: rmalloc is missing "
                                                    r"argument 'size'"):
        ddi_driver.run([{"op": "rmallocmap", "map": "m", "mapsize": 1}, {"op": "rmalloc", "map": "m"}])


def test_nothing_leaks_after_a_trace(ddi_driver):
    ddi_driver.check([{"op": "umem_alloc", "buf": "u", "size": 8192, "flags": ["DDI_UMEM_SLEEP"]},
                      {"op": "kmem_alloc", "buf": "k", "size": 64, "flags": ["KM_SLEEP"]}])
    # the trace did not free them: closing the device did
    assert ddi_driver.outstanding() == 0


def test_pages_are_shared_both_ways(exported_pages):
    pages = exported_pages(3 * 4096 + 1)         # ddi_umem_alloc rounds up to 4 pages
    assert pages.size == 16384 and pages.zeroed
    assert pages.read(0, 16) == bytes(16)        # fresh pages read back zero

    pages.write(100, b"hello, kernel")           # user side, through the mapping
    assert pages.read(100, 13) == b"hello, kernel"

    pages.fill(seed=7)                           # user writes the pattern ...
    assert pages.kernel_check(seed=7)            # ... and the kernel sees it
    pages.kernel_fill(seed=9, offset=4096, length=4096)   # the kernel writes page 1 ...
    assert pages.read(4096, 4096) == ddih_pattern(9, 4096)  # ... user space sees it
    assert pages.check(seed=7, offset=0, length=4096)       # page 0 is untouched


def test_guest_program_on_exported_pages(exported_pages):
    """A C program (examples/guest/pagetest.c) built with libddih runs in the guest on the pages."""
    pages = exported_pages(4 * 4096)
    r = pages.run(HERE / "guest" / "pagetest.c", 0, 0x31, 0x32)
    assert r.ok, r.stdout + r.stderr
    assert "pagetest: PASS (16384 bytes at offset 0)" in r.stdout
    # the program's last write came from the kernel: the fixture's mapping sees it too
    assert pages.check(seed=0x32)


@pytest.mark.ddi_target("linux")
def test_private_mapping_is_copy_on_write(exported_pages):
    pages = exported_pages(8192, mapping="private")
    pages.kernel_fill(seed=3)
    assert pages.read(0, 8192) == ddih_pattern(3, 8192)   # not yet written: the kernel's pages
    pages.write(0, b"\xff" * 16)                          # the first write copies the page
    assert not pages.kernel_check(seed=5, length=16)
    assert pages.kernel_check(seed=3, length=4096)        # the kernel never saw the write


@pytest.mark.ddi_destructive
def test_double_free_is_caught_by_the_model(ddi_driver):
    """Destructive: the driver really frees twice and the guest panics, as the model predicts.

    Skipped unless --ddi-destructive; the next test gets a fresh guest."""
    ddi_driver.check([{"op": "kmem_alloc", "buf": "k", "size": 64, "flags": ["KM_SLEEP"]},
                      {"op": "kmem_free", "buf": "k", "size": 64},
                      {"op": "kmem_free", "buf": "k", "size": 64}])
