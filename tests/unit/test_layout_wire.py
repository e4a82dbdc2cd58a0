"""The `layout=` result token (issue 15): a resource map's whole layout on the wire.

C-level and wire tests only: what gatectl (the real illumos vmem.c, kmod/gate) and ddictl over
the Linux port (kmod/linux, in a guest) print after `layout=on`, checked against hand-computed
layouts.  The format (kmod/ddih_ioctl.h, struct ddih_seg; guest/ddictl.c):

    layout=<total>:<seg>,<seg>,...     at most 64 listed; `layout=0:` for no segment
    <seg> = <type>:<start>+<size>      type s | a | f<k> (illumos freelist k) | f (Linux)

appended last to every non-error resource-map result line while the map exists.

gatectl is built from $DDIH_ILLUMOS_GATE, else <workspace>/shared/data/illumos-gate/src (as in
tests/unit/test_gate_runner.py).  The Linux test boots a guest (marked live).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GATE = Path(os.environ.get("DDIH_ILLUMOS_GATE")
            or Path(__file__).resolve().parents[3] / "shared" / "data" / "illumos-gate" / "src")
U64 = 1 << 64

@pytest.fixture(scope="module")
def gatectl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed to build gatectl")
    if not (GATE / "usr" / "src" / "uts" / "common" / "os" / "vmem.c").is_file():
        pytest.skip(f"no illumos-gate checkout at {GATE} (set DDIH_ILLUMOS_GATE)")
    out = tmp_path_factory.mktemp("gate-layout")
    proc = subprocess.run(["make", "-C", str(ROOT / "kmod" / "gate"), f"GATE={GATE}", f"OUT={out}"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "gatectl"


def gate(exe: Path, lines: list[str]) -> list[str]:
    proc = subprocess.run([str(exe)], input="".join(f"{ln}\n" for ln in lines),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def layout_of(line: str) -> str | None:
    """The layout token's value, checking that it is the last token of the line."""
    toks = line.split()
    found = [t for t in toks if t.startswith("layout=")]
    if not found:
        return None
    assert len(found) == 1 and toks[-1] == found[0], line
    return found[0][len("layout="):]


def parse(value: str) -> tuple[int, list[tuple[str, int, int]]]:
    total, _, segs = value.partition(":")
    out = []
    for s in filter(None, segs.split(",")):
        typ, _, rng = s.partition(":")
        start, _, size = rng.partition("+")
        out.append((typ, int(start), int(size)))
    return int(total), out


def flist(size: int) -> str:
    return f"f{size.bit_length() - 1}"


# ------------------------------------------------------------------ the C ABI


def test_seg_struct_layout(tmp_path: Path) -> None:
    """struct ddih_seg is 24 bytes with fixed offsets, the op is in the rmap family."""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    src = tmp_path / "t.c"
    src.write_text('#include <stdio.h>\n#include <stddef.h>\n#include "ddih_ioctl.h"\n'
                   "int main(void) { printf(\"%zu %zu %zu %zu %zu %d %d %u %d\\n\", "
                   "sizeof (struct ddih_seg), offsetof(struct ddih_seg, start), "
                   "offsetof(struct ddih_seg, size), offsetof(struct ddih_seg, type), "
                   "offsetof(struct ddih_seg, flist), DDIH_OP_RMAP_LAYOUT, "
                   "DDIH_OP_FAMILY(DDIH_OP_RMAP_LAYOUT), DDIH_SEG_NOLIST, DDIH_LAYOUT_MAX); "
                   "return 0; }\n")
    exe = tmp_path / "t"
    subprocess.run(["gcc", "-Wall", "-Werror", f"-I{ROOT / 'kmod'}", "-o", str(exe), str(src)],
                   check=True, capture_output=True, timeout=60)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["24", "0", "8", "16", "20", "8", "1", str(0xFFFFFFFF), "64"]


# ------------------------------------------------------------------ gatectl (real vmem.c)


def test_manpage_12_unit_map(gatectl: Path) -> None:
    """The rmalloc(9F) example: a 12-unit map at index 1, 3-unit allocations, frees coalescing."""
    out = gate(gatectl, ["layout=on", "rmallocmap map=m mapsize=12", "rmfree map=m size=12 index=1"]
               + ["rmalloc map=m size=3"] * 5
               + ["rmfree map=m size=3 index=4", "rmfree map=m size=3 index=1", "rmfreemap map=m"])
    assert [layout_of(ln) for ln in out] == [
        "0:",
        "2:s:1+12,f3:1+12",
        "3:s:1+12,a:1+3,f3:4+9",
        "4:s:1+12,a:1+3,a:4+3,f2:7+6",
        "5:s:1+12,a:1+3,a:4+3,a:7+3,f1:10+3",
        "5:s:1+12,a:1+3,a:4+3,a:7+3,a:10+3",
        "5:s:1+12,a:1+3,a:4+3,a:7+3,a:10+3",      # rmalloc -> 0: nothing changed
        "5:s:1+12,a:1+3,f1:4+3,a:7+3,a:10+3",
        "4:s:1+12,f2:1+6,a:7+3,a:10+3",           # [1,4) joins [4,7): one free of 6
        None,                                     # rmfreemap: the map is gone
    ]
    assert out[2].startswith("kind=value value=1 mem_total=12 mem_inuse=3 ")
    assert out[-1] == "kind=ok"


def test_span_wrapping_past_2_64(gatectl: Path) -> None:
    """A span [2^64-3, 2^64+2): sizes are end - start mod 2^64, starts stay map indexes."""
    top = U64 - 3
    out = gate(gatectl, ["layout=on", "rmallocmap map=m mapsize=1", f"rmfree map=m size=5 index={top}",
                         "rmalloc map=m size=2", "rmalloc map=m size=2"])
    assert layout_of(out[1]) == f"2:s:{top}+5,f2:{top}+5"
    assert out[2].startswith(f"kind=value value={top} ")
    assert layout_of(out[2]) == f"3:s:{top}+5,a:{top}+2,f1:{U64 - 1}+3"
    # the last free segment [2^64-1, 2) also wraps; vmem hands out its start
    assert out[3].startswith(f"kind=value value={U64 - 1} ")
    assert layout_of(out[3]) == f"4:s:{top}+5,a:{top}+2,a:{U64 - 1}+2,f0:1+1"


def test_overlapping_spans(gatectl: Path) -> None:
    """Overlapping spans are listed in creation order, each with its own segments."""
    out = gate(gatectl, ["layout=on", "rmallocmap map=m mapsize=1", "rmfree map=m size=4 index=100",
                         "rmfree map=m size=4 index=102", "rmalloc map=m size=4", "rmalloc map=m size=4"])
    assert layout_of(out[2]) == "4:s:100+4,f2:100+4,s:102+4,f2:102+4"
    v1 = int(out[3].split()[1].split("=")[1])
    v2 = int(out[4].split()[1].split("=")[1])
    assert {v1, v2} == {100, 102}
    assert layout_of(out[4]) == "4:s:100+4,a:100+4,s:102+4,a:102+4"


def test_more_than_64_segments(gatectl: Path) -> None:
    """102 segments: the total says so, 64 are listed, in list order."""
    out = gate(gatectl, ["layout=on", "rmallocmap map=m mapsize=1", "rmfree map=m size=200 index=1"]
               + ["rmalloc map=m size=1"] * 100)
    total, segs = parse(layout_of(out[-1]))
    assert total == 102 and len(segs) == 64
    assert segs[0] == ("s", 1, 200)
    assert segs[1:] == [("a", i, 1) for i in range(1, 64)]
    # out[2 + k] follows k + 1 allocations.  63 allocations + span + free = 65: the first
    # layout past 64 lists only up to the last allocation; 62 allocations still list all 64
    total, segs = parse(layout_of(out[2 + 62]))
    assert total == 65 and len(segs) == 64 and segs[-1] == ("a", 63, 1)
    total, segs = parse(layout_of(out[2 + 61]))
    assert total == 64 and segs[-1] == (flist(200 - 62), 63, 200 - 62)


def test_layout_off_on_reset_and_errors(gatectl: Path) -> None:
    out = gate(gatectl, [
        "rmallocmap map=m mapsize=1",          # default off
        "rmfree map=m size=8 index=1",
        "layout=on",
        "rmalloc map=m size=2",
        "layout=off",
        "rmalloc map=m size=2",
        "layout=maybe",                        # not a setting: EPROTO, still off
        "rmalloc map=m size=1",
        "layout=on",
        "reset",                               # keeps the setting
        "rmallocmap map=n mapsize=1",
        "rmfreemap map=n",
        "rmalloc map=n size=1",                # the map is gone: EBADF, no layout
    ])
    assert [layout_of(ln) for ln in out] == [
        None, None, "3:s:1+8,a:1+2,f2:3+6", None, None, None, "0:", None, None]
    assert out[4] == "kind=error errno=EPROTO"
    assert out[-1] == "kind=error errno=EBADF"
    assert all("layout" not in ln for ln in out[:2])


def test_waiter_lines_carry_the_settled_layout(gatectl: Path) -> None:
    out = gate(gatectl, ["layout=on", "rmallocmap map=m mapsize=1", "rmfree map=m size=2 index=1",
                         "rmalloc_wait map=m size=4 waiter=w", "rmfree map=m size=4 index=10",
                         "join waiter=w", "rmalloc_wait map=m size=2"])
    assert [layout_of(ln) for ln in out] == [
        "0:", "2:s:1+2,f1:1+2",
        "2:s:1+2,f1:1+2",                              # the waiter sleeps
        "4:s:1+2,f1:1+2,s:10+4,a:10+4",                # the rmfree woke it: it took [10,14)
        "4:s:1+2,f1:1+2,s:10+4,a:10+4",
        "4:s:1+2,a:1+2,s:10+4,a:10+4",
    ]
    assert out[4].startswith("kind=value value=10 ")


def test_free_classes_follow_highbit(gatectl: Path) -> None:
    """f<k>: k = highbit(size) - 1 for sizes around powers of two."""
    sizes = [1, 2, 3, 4, 7, 8, 9, 1023, 1024, 1 << 40, (1 << 63) + 5]
    lines = ["layout=on"]
    for i, sz in enumerate(sizes):
        lines += [f"rmallocmap map=m{i} mapsize=1", f"rmfree map=m{i} size={sz} index=1"]
    out = gate(gatectl, lines)
    for i, sz in enumerate(sizes):
        _, segs = parse(layout_of(out[2 * i + 1]))
        assert segs[1][0] == flist(sz) and segs[1][2] == sz


# ------------------------------------------------------------------ the Linux port, live


@pytest.mark.live
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
def test_linux_guest_layout_lines(tmp_path: Path) -> None:
    """ddictl over the gen_pool port: chunks newest first, then their bitmap runs (`f`, no class)."""
    from harness.targets.linux import LinuxTarget

    top = U64 - 3
    lines = [
        "layout=on",
        "rmallocmap map=m mapsize=12",
        "rmfree map=m size=12 index=1",
        "rmalloc map=m size=3",
        "rmalloc map=m size=2",
        "rmfree map=m size=3 index=1",
        "rmfree map=m size=4 index=100",
        f"rmfree map=m size=5 index={top}",
        "rmfreemap map=m",
        "layout=off",
        "rmalloc map=m size=1",
        "layout=on",
        "rmfree map=m size=1 index=100",
        "rmfree map=m size=2 index=4",
        "rmfreemap map=m",
        "rmalloc map=m size=1",
        "reset",
        "rmallocmap map=n mapsize=1",
        "rmalloc_wait map=n size=2 waiter=w",
        "rmfree map=n size=2 index=7",
        "join waiter=w",
        "rmallocmap map=b mapsize=1",
        "rmfree map=b size=200 index=1",
    ] + ["rmalloc map=b size=1"] * 100 + [f"rmfree map=b size=1 index={i}" for i in range(1, 100, 2)]
    t = LinuxTarget(tmp_path / "linux")
    t.prepare()
    t.boot()
    try:
        r = t.ssh.run("/tmp/ddih/ddictl", input="".join(f"{ln}\n" for ln in lines), timeout=120)
    finally:
        t.close()
    assert r.status == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[:19] == [
        "kind=ok avail=0 total=0 layout=0:",
        "kind=ok avail=12 total=12 layout=2:s:1+12,f:1+12",
        "kind=value value=1 avail=9 total=12 layout=3:s:1+12,a:1+3,f:4+9",
        "kind=value value=4 avail=7 total=12 layout=3:s:1+12,a:1+5,f:6+7",
        "kind=ok avail=10 total=12 layout=4:s:1+12,f:1+3,a:4+2,f:6+7",
        "kind=ok avail=14 total=16 layout=6:s:100+4,f:100+4,s:1+12,f:1+3,a:4+2,f:6+7",
        "kind=error errno=EINVAL avail=14 total=16",
        "kind=error errno=EBUSY avail=14 total=16",
        "kind=value value=100 avail=13 total=16",
        "kind=ok avail=14 total=16 layout=6:s:100+4,f:100+4,s:1+12,f:1+3,a:4+2,f:6+7",
        "kind=ok avail=16 total=16 layout=4:s:100+4,f:100+4,s:1+12,f:1+12",
        "kind=ok",
        "kind=error errno=EBADF",
        "kind=ok avail=0 total=0 layout=0:",
        "kind=ok avail=0 total=0 layout=0:",
        "kind=ok avail=2 total=2 layout=2:s:7+2,a:7+2",
        "kind=value value=7 avail=0 total=2 layout=2:s:7+2,a:7+2",
        "kind=ok avail=0 total=0 layout=0:",
        "kind=ok avail=200 total=200 layout=2:s:1+200,f:1+200",
    ]
    total, segs = parse(layout_of(out[-1]))
    assert total == 102 and len(segs) == 64
    assert segs[0] == ("s", 1, 200)
    assert segs[1:] == [("f" if i % 2 else "a", i, 1) for i in range(1, 64)]
    assert len(out) == 19 + 100 + 50
