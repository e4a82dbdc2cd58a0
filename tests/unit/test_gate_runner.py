"""kmod/gate: the real illumos vmem.c/rmap.c, built in user space as gatectl, against the model.

gatectl is built from an illumos-gate checkout: $DDIH_ILLUMOS_GATE, else the pinned sparse
checkout at <workspace>/shared/data/illumos-gate/src.  The gate's files are compiled from
there (never copied).  Tests skip only when no gate checkout is present.

These tests check the runner itself (protocol, waiters, panics, traps, the DEBUG build); the
corpus and generated traces run against the model through the illumos-gate target in
tests/gate/test_gate_target.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.model import build
from harness.model.base import ModelConfig, run_trace
from harness.protocol import control_budget, decode, encode
from harness.trace import Result, Trace

ROOT = Path(__file__).resolve().parents[2]
GATE = Path(os.environ.get("DDIH_ILLUMOS_GATE")
            or Path(__file__).resolve().parents[3] / "shared" / "data" / "illumos-gate" / "src")
PANIC_RE = re.compile(r"^panic\[cpu\d+\]/thread=[0-9a-f]+: (?P<msg>.*)$", re.MULTILINE)

pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None,
                       reason="gcc and make are needed to build gatectl"),
    pytest.mark.skipif(not (GATE / "usr" / "src" / "uts" / "common" / "os" / "vmem.c").is_file(),
                       reason=f"no illumos-gate checkout at {GATE} (set DDIH_ILLUMOS_GATE)"),
]


def _build(out: Path, debug: bool = False) -> Path:
    cmd = ["make", "-C", str(ROOT / "kmod" / "gate"), f"GATE={GATE}", f"OUT={out}"]
    if debug:
        cmd.append("GATE_DEBUG=1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "gatectl"


@pytest.fixture(scope="module")
def gatectl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("gate"))


def _run(exe: Path, lines: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe)], input="".join(f"{ln}\n" for ln in lines),
                          capture_output=True, text=True, timeout=timeout, check=False)


def _results(proc: subprocess.CompletedProcess[str]) -> list[Result]:
    """Result lines, plus a panic Result when the console (stderr) shows one."""
    out = [decode(ln) for ln in proc.stdout.splitlines() if ln.strip()]
    m = PANIC_RE.search(proc.stderr)
    if m:
        out.append(Result("panic", message=m.group("msg")))
    return out


def run_gate(exe: Path, trace: Trace) -> list[Result]:
    lines = [control_budget(2000)] + [encode(s) for s in trace.steps]
    return _results(_run(exe, lines))


# ------------------------------------------------------------------ the man page example

def test_manpage_12_unit_map(gatectl: Path) -> None:
    proc = _run(gatectl, ["rmallocmap map=m mapsize=12", "rmfree map=m size=12 index=1"]
                + ["rmalloc map=m size=3"] * 5 + ["rmfreemap map=m"])
    assert proc.returncode == 0, proc.stderr
    res = _results(proc)
    assert [r.kind for r in res] == ["ok", "ok", "value", "value", "value", "value", "value", "ok"]
    assert [r.value for r in res[2:7]] == [1, 4, 7, 10, 0]
    assert res[0].state == {"mem_total": 0, "mem_inuse": 0, "alloc": 0, "free": 0, "fail": 0,
                            "wait": 0, "contains": 0}
    assert res[5].state is not None and res[5].state["mem_inuse"] == 12
    assert res[6].state is not None and res[6].state["fail"] == 1
    assert res[7].state is None  # rmfreemap: the arena is gone, no counters
    assert "leaked 12 bytes" in proc.stderr and "WARNING: vmem_destroy('rmap')" in proc.stderr


def test_protocol_errors_and_unsupported_ops(gatectl: Path) -> None:
    proc = _run(gatectl, ["budget_ms=500", "rmalloc map=nope size=1", "frobnicate x=1",
                          "kmem_alloc buf=b size=8 flags=0x0", "umem_free buf=-",
                          "rmallocmap map=m mapsize=1", "rmfreemap map=m", "rmalloc map=m size=1"])
    assert proc.returncode == 0
    assert proc.stdout.split("\n")[:6] == [
        "kind=error errno=EPROTO", "kind=error errno=EPROTO", "kind=error errno=ENOTSUP",
        "kind=error errno=ENOTSUP",
        "kind=ok mem_total=0 mem_inuse=0 alloc=0 free=0 fail=0 wait=0 contains=0", "kind=ok"]
    assert proc.stdout.split("\n")[6] == "kind=error errno=EBADF"
    assert "not built in" in proc.stderr


# ------------------------------------------------------------------ waiters, hangs, reset

def test_background_waiter_resumed_by_rmfree(gatectl: Path) -> None:
    proc = _run(gatectl, ["rmallocmap_wait map=m mapsize=4", "rmalloc_wait map=m size=10 waiter=w",
                          "rmfree map=m size=10 index=1", "join waiter=w"])
    assert proc.returncode == 0, proc.stderr
    res = _results(proc)
    assert res[1].kind == "ok" and res[1].state and res[1].state["wait"] == 1
    assert res[3].kind == "value" and res[3].value == 1
    assert res[3].state and res[3].state["mem_inuse"] == 10


def test_broadcast_wakes_every_sleeper(gatectl: Path) -> None:
    """cv_broadcast: one free wakes both sleepers; each retries (the loser sleeps again)."""
    proc = _run(gatectl, ["rmallocmap map=m mapsize=4",
                          "rmalloc_wait map=m size=5 waiter=a", "rmalloc_wait map=m size=5 waiter=b",
                          "rmfree map=m size=5 index=100", "join waiter=a"])
    res = _results(proc)
    assert res[2].state and res[2].state["wait"] == 2
    # both woke: one got 100, the other slept again (wait counted once more)
    assert res[3].state and res[3].state["wait"] == 3 and res[3].state["alloc"] == 1


def test_foreground_wait_forever_is_a_hang(gatectl: Path) -> None:
    t0 = time.monotonic()
    proc = _run(gatectl, ["rmallocmap map=m mapsize=4", "rmalloc_wait map=m size=1 waiter=-",
                          "rmalloc map=m size=1"])
    assert proc.returncode == 3
    assert proc.stdout.splitlines()[-1] == "kind=hang"
    assert time.monotonic() - t0 < 5  # seen asleep at once, not after the 10 s budget


def test_reset_parks_waiters_and_starts_fresh(gatectl: Path) -> None:
    proc = _run(gatectl, ["rmallocmap map=m mapsize=4", "rmalloc_wait map=m size=5 waiter=w",
                          "rmfree map=m size=3 index=1", "rmalloc map=m size=2", "reset",
                          "rmallocmap map=m mapsize=4", "rmfree map=m size=4 index=7",
                          "rmalloc map=m size=4"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 7
    assert lines[-1].startswith("kind=value value=7 mem_total=4 mem_inuse=4 alloc=1 ")
    assert "leaked" not in proc.stderr  # reset destroys quietly


# ------------------------------------------------------------------ panics and traps

@pytest.mark.parametrize("ops,message", [
    (["rmfree map=m size=10 index=1", "rmalloc map=m size=3", "rmfree map=m size=3 index=1",
      "rmfree map=m size=3 index=1"], r"vmem_hash_delete\([0-9a-f]+, 1, 3\): bad free"),
    (["rmfree map=m size=10 index=1", "rmalloc map=m size=3", "rmfree map=m size=2 index=1"],
     r"vmem_hash_delete\([0-9a-f]+, 1, 2\): wrong size \(expect 3\)"),
    (["rmalloc map=m size=0"], r"vmem_xalloc\(\): size == 0"),
    (["rmfree map=m size=0 index=5"], r"vmem_add\([0-9a-f]+, 5, 0\): bad arguments"),
])
def test_misuse_panics(gatectl: Path, ops: list[str], message: str) -> None:
    proc = _run(gatectl, ["rmallocmap map=m mapsize=12", *ops])
    assert proc.returncode == 1
    assert re.search(r"^panic\[cpu0\]/thread=[0-9a-f]+: " + message + "$", proc.stderr, re.MULTILINE), \
        proc.stderr
    assert len(proc.stdout.splitlines()) == len(ops)  # no result line for the panicking op


def test_fault_prints_bad_trap(gatectl: Path) -> None:
    p = subprocess.Popen([str(gatectl)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write("rmallocmap map=m mapsize=1\n")
        p.stdin.flush()
        assert p.stdout.readline().startswith("kind=ok")
        p.send_signal(signal.SIGSEGV)
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 1
    assert re.search(r"^BAD TRAP: type=e \(#pf Page fault\) rp=[0-9a-f]+ addr=[0-9a-f]+$", err, re.MULTILINE)
    assert re.search(r"^panic\[cpu0\]/thread=[0-9a-f]+: BAD TRAP: type=e", err, re.MULTILINE)


def test_debug_build(tmp_path: Path) -> None:
    exe = _build(tmp_path, debug=True)
    proc = _run(exe, ["rmallocmap map=m mapsize=12", "rmfree map=m size=12 index=1",
                      "rmalloc map=m size=3", "rmfree map=m size=3 index=1",
                      "rmfree map=m size=3 index=1"])
    assert proc.returncode == 1
    assert "bad free" in proc.stderr
    assert _results(proc)[2].value == 1


def test_woken_sleepers_retry_in_sleep_order(gatectl: Path) -> None:
    """Sleepers woken by one broadcast take vm_lock back in the order they slept (FIFO): the same
    result on every run, and the same as the model's."""
    from harness.conformance.traces import parse_trace
    trace = parse_trace({"name": "fifo", "steps": [
        {"op": "rmallocmap", "map": "m", "mapsize": 4},
        {"op": "rmalloc_wait", "map": "m", "size": 5, "waiter": "a"},
        {"op": "rmalloc_wait", "map": "m", "size": 5, "waiter": "b"},
        {"op": "rmfree", "map": "m", "size": 5, "index": 100},
        {"op": "rmalloc_wait", "map": "m", "size": 2, "waiter": "c"},
        {"op": "rmfree", "map": "m", "size": 9, "index": 200},
        {"op": "join", "waiter": "c"}, {"op": "join", "waiter": "a"}, {"op": "join", "waiter": "b"}]})
    runs = {tuple(r.short() for r in run_gate(gatectl, trace)) for _ in range(5)}
    assert len(runs) == 1
    got = [r.value for r in run_gate(gatectl, trace)[-3:]]
    assert got == [205, 100, 200]
    model = build("illumos", ModelConfig().with_trace(trace))
    assert got == [s.result.value for s in run_trace(model, trace).steps[-3:]]
