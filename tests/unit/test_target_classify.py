"""How targets turn a ddictl session and the console into step results.

Both guest targets are driven with scripted guests (tests/unit/guestfakes.py)
and recorded console text (tests/data/console): a complete batch, a warning on
the last step, a panic mid-batch (rerun in lockstep, the kernel's text kept),
a hang and a guest replacement, a guest that dies without a message.  The
rules are the same for every target; where the targets differ on purpose (an
illumos thread asleep in cv_wait can never be released, so its guest is
replaced after a hang) the test says so.
"""

from __future__ import annotations

import pytest

from harness.conformance.traces import parse_trace
from harness.protocol import encode
from tests.unit.guestfakes import Guests, recorded

LINUX_WARN = recorded("linux", "warn.txt")
LINUX_BUG = recorded("linux", "bug.txt")
ILLUMOS_WARN = recorded("illumos", "omnios-warning-vmem-destroy-leaked-identifiers-01.txt")
ILLUMOS_PANIC = recorded("illumos", "dilos-panic-kernel-heap-corruption-kmdb-01.txt")

CONSOLE = {
    "linux": {"warn": LINUX_WARN, "panic": LINUX_BUG,
              "warning_title": "WARNING at /tmp/crashmod/crashmod.c:11 crash_init [crashmod]",
              "panic_text": "kernel BUG at /tmp/crashmod/crashmod.c:22!"},
    "openindiana": {"warn": ILLUMOS_WARN, "panic": ILLUMOS_PANIC,
                    "warning_title": "WARNING: vmem_destroy('ipf_minor'): leaked 65949 identifiers",
                    "panic_text": "kernel heap corruption detected"},
}


def trace(name: str, sizes=(3, 4, 5, 6)):
    steps = [{"op": "rmallocmap", "map": "m", "mapsize": 100},
             {"op": "rmfree", "map": "m", "size": 50, "index": 1}]
    steps += [{"op": "rmalloc", "map": "m", "size": s} for s in sizes]
    return parse_trace({"name": name, "steps": steps}, source=f"{name}.yaml")


def line(t, i: int) -> str:
    """ddictl's input line for step i (1-based) of trace t."""
    return encode(t.steps[i - 1])


def make(name: str, tmp_path):
    if name == "linux":
        from harness.targets.linux import LinuxTarget

        return LinuxTarget(tmp_path, snapshots=False)
    from harness.targets.illumos import IllumosTarget

    return IllumosTarget(tmp_path, distro=name)


TARGETS = ["linux", "openindiana"]
BUDGET = 500


@pytest.mark.parametrize("name", TARGETS)
def test_a_complete_batch(name, tmp_path):
    t = trace("complete")
    target = make(name, tmp_path)
    script = {line(t, 3): ("answer", "kind=value value=1"), line(t, 4): ("answer", "kind=value value=4"),
              line(t, 5): ("answer", "kind=value value=8"), line(t, 6): ("answer", "kind=null")}
    guests = Guests(target, script)
    got = target.run_trace(t, BUDGET)
    assert [r.short() for r in got] == ["ok", "ok", "1", "4", "8", "NULL"]
    assert all(not r.warnings for r in got)
    assert guests.current.ops == [line(t, i) for i in range(1, 7)]  # one batch, each op once
    assert len(guests.booted) == 1 and target.alive()


@pytest.mark.parametrize("name", TARGETS)
def test_a_warning_on_the_last_step(name, tmp_path):
    t = trace("warned")
    target = make(name, tmp_path)
    script = {line(t, 6): ("warn", "kind=value value=13", CONSOLE[name]["warn"])}
    Guests(target, script)
    got = target.run_trace(t, BUDGET)
    assert [r.kind for r in got] == ["ok"] * 5 + ["value"]
    assert got[-1].value == 13
    assert CONSOLE[name]["warning_title"] in got[-1].warnings
    assert all(not r.warnings for r in got[:-1])
    assert target.alive(), "a warning is not fatal: the guest stays"


@pytest.mark.parametrize("name", TARGETS)
def test_a_panic_mid_batch_is_rerun_in_lockstep_and_keeps_the_kernel_text(name, tmp_path):
    t = trace("panics")
    target = make(name, tmp_path)
    script = {line(t, 3): ("answer", "kind=value value=1"), line(t, 4): ("answer", "kind=value value=4"),
              line(t, 5): ("panic", CONSOLE[name]["panic"])}
    guests = Guests(target, script)
    got = target.run_trace(t, BUDGET)
    # the batch lost every result still in the guest's buffers; lockstep on a fresh guest pins
    # the panic to step 5 with the four results before it
    assert [r.short() for r in got[:4]] == ["ok", "ok", "1", "4"]
    assert len(got) == 5 and got[-1].kind == "panic"
    assert CONSOLE[name]["panic_text"] in got[-1].message
    assert len(guests.booted) == 2, "the lockstep rerun needs a fresh guest"
    assert guests.booted[1].ops == [line(t, i) for i in range(1, 6)]
    # the console excerpt is the kernel's own text, not the name of the mode that caught it
    assert CONSOLE[name]["panic_text"] in got[-1].excerpt
    assert got[-1].note != "lockstep"


@pytest.mark.parametrize("name", TARGETS)
def test_a_hang_then_the_next_trace(name, tmp_path):
    t, after = trace("hangs"), trace("after", sizes=(7,))
    target = make(name, tmp_path)
    script = {line(t, 4): ("hang",), line(after, 3): ("answer", "kind=value value=1")}
    guests = Guests(target, script)
    got = target.run_trace(t, BUDGET)
    assert [r.kind for r in got] == ["ok", "ok", "ok", "hang"]
    assert f"killed after {BUDGET / 1000:g} s in step 4" in got[-1].note
    nxt = target.run_trace(after, BUDGET)
    assert [r.short() for r in nxt] == ["ok", "ok", "1"]
    # Linux: ddictl's op budget cut the op off and the guest goes on.  illumos: the worker
    # sleeps in cv_wait, which no signal ends, so the guest is replaced before the next trace.
    assert len(guests.booted) == (1 if name == "linux" else 2)


@pytest.mark.parametrize("name", TARGETS)
def test_a_session_that_stops_answering_is_a_hang_and_the_guest_is_replaced(name, tmp_path):
    t, after = trace("stops"), trace("after", sizes=(9,))
    target = make(name, tmp_path)
    script = {line(t, 3): ("answer", "kind=value value=1"), line(t, 4): ("stop",),
              line(after, 3): ("answer", "kind=value value=1")}
    guests = Guests(target, script)
    got = target.run_trace(t, BUDGET)
    assert [r.kind for r in got] == ["ok", "ok", "value", "hang"]
    assert got[-1].note, "the hang says why"
    assert [r.short() for r in target.run_trace(after, BUDGET)] == ["ok", "ok", "1"]
    assert len(guests.booted) == 2


@pytest.mark.parametrize("name", TARGETS)
def test_a_guest_that_dies_without_a_message(name, tmp_path):
    t = trace("vanishes")
    target = make(name, tmp_path)
    Guests(target, {line(t, 3): ("vanish",)})
    got = target.run_trace(t, BUDGET)
    assert got[-1].kind == "panic"
    assert got[-1].message == "the guest died (QEMU exited) with no kernel message on the console"
    assert [r.kind for r in got[:-1]] == ["ok", "ok"]
    assert not target.alive()
