"""Ready in a second: a later run starts QEMU from the ready guest (driver loaded, sshd up) saved
in the cache by a cold boot, instead of booting; a saved guest that does not load falls back to a
cold boot, counted; --cold forces one."""

from __future__ import annotations

import shutil

import pytest

from harness.conformance.runner import run_conformance
from harness.conformance.traces import parse_trace
from harness.options import RunOptions
from harness.targets import make_target

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")]

TRACE = parse_trace({"name": "warm", "steps": [{"op": "rmallocmap", "map": "m", "mapsize": 1},
                                               {"op": "rmfree", "map": "m", "size": 12, "index": 1},
                                               {"op": "rmalloc", "map": "m", "size": 3}]})


def up(tmp_path, name, **opts):
    t = make_target("linux", RunOptions(**opts), tmp_path / name)
    t.prepare()
    t.boot()
    return t


def test_a_warm_start_is_a_fraction_of_a_cold_boot_and_works(tmp_path):
    cold = up(tmp_path, "cold", cold=True)  # saves the ready guest if none is saved yet
    try:
        assert not cold.facts.warm_start and cold.facts.cold_boot_to_ready_s > 0
        saved = cold._warm_dir() / "vmstate.qcow2"
        assert saved.is_file()
    finally:
        cold.close()
    warm = up(tmp_path, "warm")
    try:
        assert warm.facts.warm_start and warm.facts.warm_start_failures == 0
        assert warm.facts.warm_boot_to_ready_s < cold.facts.cold_boot_to_ready_s / 2
        # the restored guest's network forwarding, SSH and driver all work: a trace runs clean,
        # the clock moves, and the driver unloads with nothing outstanding
        assert run_conformance(warm, [TRACE]).divergences == []
        r = warm.guest_command("cat", "/proc/uptime")
        assert r.status == 0 and float(r.stdout.split()[0]) > 0
        u = warm.unload()
        assert u.unloaded and u.outstanding == 0
    finally:
        warm.close()


def test_a_saved_guest_that_does_not_load_falls_back_to_a_cold_boot(tmp_path):
    probe = make_target("linux", RunOptions(), tmp_path / "probe")
    probe.prepare()
    saved = probe._warm_dir() / "vmstate.qcow2"
    if not saved.is_file():
        up(tmp_path, "seed", cold=True).close()
    good = saved.read_bytes()
    saved.write_bytes(b"not a qcow2 image" + bytes(4096))
    try:
        t = up(tmp_path, "fallback")
        try:
            assert t.facts.warm_start_failures == 1 and not t.facts.warm_start and t.facts.boots == 2
            assert run_conformance(t, [TRACE]).divergences == []
        finally:
            t.close()
    finally:
        saved.write_bytes(good)
