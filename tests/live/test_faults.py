"""Proof that the harness catches faults: the Linux driver misbehaves on purpose.

For each fault injected at load time, a conformance run over the traces that
touch it must fail, name the fault's symptom, and shrink to at most 5 steps on
the live guest; the HTML report, opened in headless Chromium, must show it.
"""

import json
import shutil
from pathlib import Path

import pytest

from harness.conformance.html import render
from harness.conformance.runner import manifest, run_conformance, write_json
from harness.conformance.shrink import keep, shrink, signature
from harness.conformance.traces import load_traces
from harness.targets.linux import LinuxTarget
from tests.browser import dom as browser_dom

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]
CORPUS = Path(__file__).resolve().parents[2] / "harness" / "traces"
TRACES = {t.name: t for t in load_traces([CORPUS])}

FAULTS = [
    # fault, traces that exercise it, the symptom (the diverging field)
    ("rmfree_off_by_one", ["seed-rmalloc-example", "R5-manpage-12-units"], "state.avail"),
    ("umem_not_zeroed", ["U2-umem-one-byte", "U3-umem-rounds-up"], "zeroed"),
    ("kmem_bad_offset", ["K4-kmem-oversize", "K6-kmem-zalloc-zeroed"], "align"),
    ("wait_never_woken", ["R36-rmalloc-wait-woken-by-rmfree", "R5-manpage-12-units"], "kind"),
]


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    t = LinuxTarget(tmp_path_factory.mktemp("faults"))
    t.prepare()
    t.boot()
    yield t
    t.close()


@pytest.mark.parametrize("fault, names, symptom", FAULTS, ids=[f[0] for f in FAULTS])
def test_injected_fault_is_caught_named_and_shrunk(target, tmp_path, fault, names, symptom):
    target.reload(fault=fault)
    traces = [TRACES[n] for n in names]
    summary = run_conformance(target, traces, out_dir=tmp_path)
    diverged = [t for t in summary.traces if t.first_divergence]
    assert diverged, f"{fault}: the run did not fail"
    first = diverged[0]
    sig = signature(first)
    assert sig.field == symptom, f"{fault}: symptom {sig} is not {symptom}"
    res = shrink(target, TRACES[first.name], first, destructive=False, budget_ms=2000)
    assert res is not None and len(res.minimal.steps) <= 5, res and res.minimal.steps
    path = keep(res, tmp_path / "regressions")
    kept = load_traces([path])[0]
    assert kept.steps == res.minimal.steps
    # the kept regression reproduces the divergence; with the fault gone it passes
    again = run_conformance(target, [kept])
    assert signature(again.traces[0]) == sig
    target.reload(fault="")
    clean = run_conformance(target, [kept] + traces)
    assert clean.divergences == []

    # the HTML report shows the divergence, read back from a real browser
    man = manifest(target, names, False, ["test"])
    write_json(tmp_path / "run.json", summary, man)
    page = tmp_path / "report.html"
    page.write_text(render(json.loads((tmp_path / "run.json").read_text()), traces))
    dom = browser_dom(page, tmp_path)
    assert "DIVERGES" in dom and first.name in dom
    assert first.first_divergence.call in dom and symptom.split(".")[0] in dom
