"""Golden console logs -> expected findings (harness.panics)."""

from pathlib import Path

import pytest

from harness.panics import Finding, first_fatal, panic_message, scan

DATA = Path(__file__).resolve().parent.parent / "data" / "console"
CASES = sorted((os_dir.name, txt) for os_dir in DATA.iterdir() if os_dir.is_dir()
               for txt in os_dir.glob("*.txt"))


def test_golden_corpus_is_there():
    oses = {o for o, _ in CASES}
    assert {"linux", "illumos"} <= oses
    assert sum(1 for o, _ in CASES if o == "linux") >= 5
    assert sum(1 for o, _ in CASES if o == "illumos") >= 8


@pytest.mark.parametrize("os_name,path", CASES, ids=[f"{o}/{p.stem}" for o, p in CASES])
def test_golden(os_name, path):
    expected_file = path.with_suffix(".expected")
    assert expected_file.exists(), f"missing {expected_file.name}"
    expected = [l for l in expected_file.read_text().splitlines() if l.strip()]
    text = path.read_text(errors="replace")
    got = scan(text, os_name)
    assert [str(f) for f in got] == expected
    lines = text.split("\n")
    for f in got:
        assert 1 <= f.line <= len(lines)
        assert f.excerpt.splitlines()[0] == lines[f.line - 1].rstrip("\r")


def test_linux_panic_after_prompt_and_fatal_order():
    text = ("ddih# \x1b[6n[    4.0] BUG: kernel NULL pointer dereference, address: 0000000000000000\n"
            "[    4.1] Oops: 0002 [#1] PREEMPT SMP NOPTI\n"
            "[    4.2] Kernel panic - not syncing: Fatal exception\n"
            "[    4.3] ---[ end Kernel panic - not syncing: Fatal exception ]---\n")
    got = scan(text, "linux")
    assert [f.kind for f in got] == ["bug", "oops", "panic"]
    assert first_fatal(got).line == 1
    assert panic_message(got) == "Fatal exception"


def test_linux_not_fooled():
    text = ("[ 1.0] DEBUG: nothing\n[ 1.1] no BUG: here\nWARNING: not a linux warn line\n"
            "echo 'Kernel panic' > /dev/null\n")
    assert scan(text, "linux") == []


def test_warnings_are_not_fatal():
    got = scan("[ 1.0] WARNING: CPU: 0 PID: 1 at mm/vmalloc.c:1 f+0x1/0x2\n", "linux")
    assert got[0].kind == "warning" and got[0].title == "WARNING at mm/vmalloc.c:1 f"
    assert first_fatal(got) is None and panic_message(got) is None


def test_illumos_panic_message_and_aliases():
    text = "panic[cpu0]/thread=fffffffffbc490a0: microfind: could not calibrate delay loop\n"
    for name in ("illumos", "openindiana", "omnios"):
        (f,) = scan(text, name)
        assert f == Finding("panic", "microfind: could not calibrate delay loop", 1, text.strip(),
                            "microfind: could not calibrate delay loop")


def test_unknown_os():
    with pytest.raises(ValueError):
        scan("", "plan9")
