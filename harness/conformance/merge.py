"""`ddi-harness report merge`: one report from the run.json files of shards or machines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.conformance.runner import RunSummary, StepRecord, TraceRecord, write_json, write_junit


def load_run(path: Path) -> tuple[dict, list[TraceRecord]]:
    doc = json.loads(path.read_text())
    recs = []
    for t in doc["traces"]:
        t = dict(t)
        steps = [StepRecord(**s) for s in t.pop("steps") or []]
        recs.append(TraceRecord(steps=steps, **t))
    return doc["manifest"], recs


def merge(paths: list[Path]) -> tuple[RunSummary, dict]:
    """Traces from every file, once each (a trace run twice keeps its later record)."""
    manifests, by_name = [], {}
    seconds = 0.0
    for p in paths:
        man, recs = load_run(p)
        manifests.append(man)
        seconds += json.loads(p.read_text()).get("seconds", 0.0)
        for r in recs:
            by_name[r.name] = r
    first = manifests[0]
    targets = sorted({m.get("target") for m in manifests})
    man = dict(first)
    man.update({"merged_from": [str(p) for p in paths], "shards": [m.get("shard") for m in manifests],
                "target": "+".join(targets), "accelerators": sorted({m.get("accelerator") for m in manifests}),
                "guest_kernels": sorted({m.get("guest_kernel") for m in manifests})})
    summary = RunSummary(traces=[by_name[k] for k in sorted(by_name)], seconds=seconds)
    return summary, man


def merge_command(args: argparse.Namespace) -> int:
    from harness.conformance.html import render

    paths = [Path(p) for p in args.runs]
    for p in paths:
        if not p.is_file():
            print(f"error: {p}: no such run.json; give the run.json files written by `ddi-harness run`",
                  file=sys.stderr)
            return 2
    try:
        summary, man = merge(paths)
    except (KeyError, ValueError, TypeError) as e:
        print(f"error: not a ddi-harness run.json ({e}); give files written by `ddi-harness run`", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run.json", summary, man)
    write_junit(out / "junit.xml", summary, man)
    (out / "report.html").write_text(render(json.loads((out / "run.json").read_text())))
    ran = [t for t in summary.traces if not t.skipped]
    print(f"merged {len(paths)} runs: {len(summary.traces)} traces ({len(ran)} run), {summary.steps} steps, "
          f"{len(summary.divergences)} divergences -> {out}/run.json, junit.xml, report.html")
    return 1 if summary.divergences else 0
