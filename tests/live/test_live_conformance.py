"""Live conformance: the real driver in a real Debian guest, checked step by step.

One guest boot serves the non-destructive tests; the destructive ones load the
driver with destructive=1 in a guest of their own.
"""

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.conformance.runner import manifest, run_conformance, run_one, write_json, write_junit
from harness.conformance.traces import load_traces, parse_trace
from harness.targets.linux import LinuxTarget

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]
CORPUS = Path(__file__).resolve().parents[2] / "harness" / "traces"


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    t = LinuxTarget(tmp_path_factory.mktemp("linux-target"))
    t.prepare()
    t.boot()
    yield t
    t.close()
    assert not t.alive()


def trace(name, steps):
    return parse_trace({"name": name, "steps": steps})


def test_corpus_runs_with_zero_divergences_and_reports(target, tmp_path):
    traces = load_traces([CORPUS])
    summary = run_conformance(target, traces, out_dir=tmp_path)
    assert summary.divergences == []
    ran = [t for t in summary.traces if not t.skipped]
    assert len(ran) >= 40 and all(t.steps for t in ran)
    assert summary.steps > 1000
    # every step of a run trace has an observation from the kernel
    assert all(s.observed is not None for t in ran for s in t.steps)
    man = manifest(target, [str(CORPUS)], False, ["test"])
    assert man["accelerator"] in ("kvm", "tcg") and man["guest_kernel"].endswith("-amd64")
    write_json(tmp_path / "run.json", summary, man)
    write_junit(tmp_path / "junit.xml", summary, man)
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert int(suite.get("tests")) == len(traces) and suite.get("failures") == "0"
    assert (tmp_path / "results.jsonl").read_text().count('"type": "trace"') == len(traces)
    # no kernel address reaches user space: every number the driver reported is an
    # offset within a page, a size, a counter, or an index the trace itself supplied
    KERNEL_SPACE = 0xFFFF800000000000
    for t, tr in zip(summary.traces, traces):
        supplied = {v for s in tr.steps for v in s.args.values() if isinstance(v, int)}
        for s in t.steps:
            obs = s.observed or {}
            assert obs.get("attrs", {}).get("offset", 0) < 4096
            numbers = [obs.get("value")] + list(obs.get("state", {}).values()) + \
                [v for k, v in obs.get("attrs", {}).items() if isinstance(v, int)]
            for n in numbers:
                if isinstance(n, int) and n >= KERNEL_SPACE:
                    assert n in supplied, (t.name, s.call, obs)


def test_real_difference_between_kernels_is_a_divergence(target):
    """R4 on Linux returns the lowest free unit (1, 3); illumos LIFO gives 999, 997.

    Checked against the illumos model the same observations must diverge at exactly those steps.
    """
    r4 = next(t for t in load_traces([CORPUS / "rmap"]) if t.name.startswith("R4-"))
    target.model_name = "illumos"
    try:
        rec = run_one(target, r4, destructive=False, budget_ms=2000)
    finally:
        target.model_name = "linux"
    bad = [s for s in rec.steps if s.mismatches]
    assert [s.call for s in bad] == ["rmalloc(m, 1)", "rmalloc(m, 1)"]
    assert bad[0].observed["value"] == 1 and bad[0].predicted["value"] == 999
    assert bad[1].observed["value"] == 3 and bad[1].predicted["value"] == 997


def test_wrong_expectation_is_reported(target):
    t = trace("wrong-expect", [{"op": "rmallocmap", "map": "m", "mapsize": 1},
                               {"op": "rmfree", "map": "m", "size": 10, "index": 1},
                               {"op": "rmalloc", "map": "m", "size": 3, "expect_linux": 4}])
    rec = run_one(target, t, destructive=False, budget_ms=2000)
    assert rec.steps[-1].expect_failures == ["expect_linux value: predicted 4, observed 1"]


def test_unsatisfiable_wait_is_a_hang_and_the_guest_survives(target):
    t = trace("hang", [{"op": "rmallocmap_wait", "map": "m", "mapsize": 1},
                       {"op": "rmfree", "map": "m", "size": 5, "index": 1},
                       {"op": "rmalloc_wait", "map": "m", "size": 10}])
    boots = target.facts.boots
    rec = run_one(target, t, destructive=False, budget_ms=1000)
    assert rec.end == "hang" and rec.steps[-1].observed["kind"] == "hang" and not rec.steps[-1].mismatches
    assert target.alive() and target.facts.boots == boots
    assert target.outstanding() == 0  # the cancelled wait left nothing behind


def test_umem_pages_are_shared_both_ways(target):
    t = trace("mmap", [{"op": "umem_alloc", "buf": "b", "size": 3 * 4096 + 1, "flags": ["DDI_UMEM_SLEEP"]},
                       {"op": "umem_export", "buf": "b", "len": 4 * 4096},
                       {"op": "umem_free", "buf": "b"}])
    rec = run_one(target, t, destructive=False, budget_ms=2000)
    assert rec.steps[0].observed["value"] == 16384 and rec.steps[0].observed["attrs"]["zeroed"] is True
    assert rec.steps[1].observed["attrs"] == {"coherent": True}
    assert not any(s.mismatches for s in rec.steps)


def test_driver_unloads_with_nothing_outstanding(tmp_path):
    t = LinuxTarget(tmp_path)
    t.prepare()
    t.boot()
    try:
        rec = run_one(t, trace("leftovers", [{"op": "rmallocmap", "map": "m", "mapsize": 1},
                                             {"op": "rmfree", "map": "m", "size": 10, "index": 1},
                                             {"op": "rmalloc", "map": "m", "size": 3},
                                             {"op": "kmem_alloc", "buf": "k", "size": 100, "flags": []}]),
                      destructive=False, budget_ms=2000)
        assert not any(s.mismatches for s in rec.steps)
        u = t.unload()  # ddictl exited: release() freed the map, its units and the buffer
        assert u.unloaded and u.outstanding == 0 and u.describe() == "ok, nothing outstanding"
    finally:
        t.close()


def test_panic_is_recorded_and_the_guest_replaced(tmp_path):
    t = LinuxTarget(tmp_path, destructive=True)
    t.prepare()
    t.boot()
    try:
        bug = trace("bug255", [{"op": "rmallocmap", "map": "m", "mapsize": 1},
                               {"op": "rmfree", "map": "m", "size": 100, "index": 1},
                               {"op": "rmalloc", "map": "m", "size": 30},
                               {"op": "rmfreemap", "map": "m"}])
        rec = run_one(t, bug, destructive=True, budget_ms=2000)
        last = rec.steps[-1]
        assert rec.end == "panic" and last.observed["kind"] == "panic"
        assert "lib/genalloc.c:255" in last.observed["message"] and not last.mismatches
        assert not t.alive()
        # the run goes on: the next trace gets a fresh guest
        ok = run_one(t, trace("after", [{"op": "rmallocmap", "map": "m", "mapsize": 1},
                                        {"op": "rmfree", "map": "m", "size": 10, "index": 1},
                                        {"op": "rmalloc", "map": "m", "size": 10}]),
                     destructive=True, budget_ms=2000)
        assert ok.steps[-1].observed["value"] == 1 and t.facts.guest_replacements == 1
    finally:
        t.close()
