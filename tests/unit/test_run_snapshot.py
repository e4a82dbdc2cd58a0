"""run.json from the runner, pinned: the same traces and observations give the same report.

The target is a fake that "observes" what the illumos model predicts, with one
planted departure (an rmalloc off by one), so the snapshot covers agreeing
steps, a divergence, the documented envelope and the map counters.  Volatile
fields (times) are blanked.  Regenerate the golden file only on purpose:
``DDIH_UPDATE_GOLDEN=1 pytest tests/unit/test_run_snapshot.py``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from harness.conformance.runner import run_conformance, write_json
from harness.conformance.traces import load_traces
from harness.model import build
from harness.model.base import ModelConfig

CORPUS = Path(__file__).resolve().parents[2] / "harness" / "traces"
GOLDEN = Path(__file__).resolve().parent.parent / "data" / "runner" / "run.json"
NAMES = ("R5-manpage-12-units", "R21-reuse-after-free", "K6-kmem-zalloc-zeroed")


@dataclass
class Facts:
    target: str = "fake"
    accelerator: str = "none"
    guest_kernel: str = "model"


class ModelEcho:
    """A target whose kernel behaves as the illumos model says, except one planted fault."""

    name = "fake"
    model_name = "illumos"
    os = "illumos"
    streaming = False
    unobservable: frozenset = frozenset()
    families = frozenset({"rmap", "umem", "kmem"})
    debug_kernel = None

    def __init__(self) -> None:
        self.facts = Facts()

    def run_trace(self, trace, budget_ms: int):
        model = build("illumos", ModelConfig().with_trace(trace))
        out = []
        for i, step in enumerate(trace.steps):
            r = model.step(step)
            if trace.name == "R21-reuse-after-free" and i == 4:
                r.value += 1  # the planted fault: the second rmalloc off by one
            if "align" in r.attrs:  # a kernel reports where a buffer sits, not a guarantee
                r.attrs = {**{k: v for k, v in r.attrs.items() if k != "align"}, "offset": 0}
            r.note = None  # notes are prose for people, never observed
            out.append(r)
            if r.terminal:
                break
        return out


def blank(doc):
    if isinstance(doc, dict):
        return {k: (0 if k == "seconds" else blank(v)) for k, v in doc.items()}
    if isinstance(doc, list):
        return [blank(v) for v in doc]
    return doc


def test_run_json_snapshot(tmp_path):
    traces = [t for t in load_traces([str(CORPUS)]) if t.name in NAMES]
    assert sorted(t.name for t in traces) == sorted(NAMES)
    summary = run_conformance(ModelEcho(), traces, budget_ms=2000, out_dir=tmp_path)
    write_json(tmp_path / "run.json", summary, {"target": "fake", "model": "illumos"})
    got = blank(json.loads((tmp_path / "run.json").read_text()))
    for t in got["traces"]:
        t["source"] = Path(t["source"]).name
    if os.environ.get("DDIH_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(GOLDEN.read_text())
    assert got["divergences"], "the planted fault is a divergence"
    assert {d["trace"] for d in got["divergences"]} == {"R21-reuse-after-free"}
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert sum(json.loads(l)["type"] == "trace" for l in lines) == len(NAMES)
