"""Live: the driver's guards of issue 13 on the Linux guest (destructive=0).

The guard traces (harness/traces/guards/) run on the real Linux port and must
agree with the linux model at every step, their ``expect_linux`` included:

- G1: same-start allocations from overlapping spans (the rmfree guard decides
  from the driver's view of what is allocated, never from an order the kernel
  may change);
- G2: umem_free of a buffer a process still maps is refused with EBUSY
  (vm_operations open/close count the VMAs; ``mapping: shared-kept`` keeps
  ddictl's mapping in place);
- G3: an export with DEVMAP_MAPPING_INVALID|DEVMAP_ALLOW_REMAP is refused.

After the traces the driver still unloads with nothing outstanding: the
mappings kept by G2 went away with ddictl, and release() freed the buffers the
guard had kept alive.
"""

import shutil
from pathlib import Path

import pytest

from harness.conformance.runner import run_conformance, run_one
from harness.conformance.traces import load_traces, parse_trace
from harness.targets.linux import LinuxTarget

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]
GUARDS = Path(__file__).resolve().parents[2] / "harness" / "traces" / "guards"


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    t = LinuxTarget(tmp_path_factory.mktemp("linux-guards"))
    t.prepare()
    t.boot()
    yield t
    t.close()


def test_guard_traces_run_with_zero_divergences(target, tmp_path):
    traces = load_traces([GUARDS])
    assert {t.name.split("-")[0] for t in traces} >= {"G1a", "G1b", "G2", "G3"}
    summary = run_conformance(target, traces, out_dir=tmp_path)
    assert summary.divergences == []
    ran = [t for t in summary.traces if not t.skipped]
    assert len(ran) == len(traces)
    for t in ran:
        assert all(s.observed is not None for s in t.steps), t.name
        assert not any(s.mismatches or s.expect_failures for s in t.steps), t.name
    # the refusals really came from the kernel driver
    by_name = {t.name: t for t in ran}
    g2 = by_name["G2-umem-free-while-mapped"]
    assert [s.observed["message"] for s in g2.steps[-2:]] == ["EBUSY", "EBUSY"]
    g3 = by_name["G3-export-cookieless"]
    assert (g3.steps[1].observed["kind"], g3.steps[1].observed["message"]) == ("error", "EINVAL")
    assert target.outstanding() == 0  # ddictl exited: mappings gone, release() freed the rest


def test_unmapped_buffer_is_freed_and_kept_mapping_blocks_only_its_own_buffer(target):
    t = parse_trace({"name": "busy", "config": {"destructive": False}, "steps": [
        {"op": "umem_alloc", "buf": "a", "size": 4096, "flags": ["DDI_UMEM_SLEEP"]},
        {"op": "umem_alloc", "buf": "b", "size": 4096, "flags": ["DDI_UMEM_NOSLEEP"]},
        {"op": "umem_export", "buf": "a", "len": 4096, "mapping": "shared-kept"},
        {"op": "umem_export", "buf": "b", "len": 4096, "mapping": "shared-kept"},
        {"op": "umem_export", "buf": "b", "len": 4096},
        {"op": "umem_free", "buf": "a"},
        {"op": "umem_free", "buf": "b"},
    ]})
    rec = run_one(target, t, destructive=False, budget_ms=4000)
    assert not any(s.mismatches for s in rec.steps), [s.mismatches for s in rec.steps]
    assert [s.observed["kind"] for s in rec.steps] == ["value", "value", "ok", "ok", "ok", "error", "error"]
    assert rec.steps[5].observed["message"] == rec.steps[6].observed["message"] == "EBUSY"
    assert target.outstanding() == 0
