"""Shrink a divergent trace against the live target, and keep it as a regression.

Every candidate runs on fresh driver state (its own ddictl process and open
file; a fresh guest after a panic) and counts only when the same divergence
signature recurs: the op, the field, and the predicted and observed kinds.
The search is delta debugging over steps: drop everything after the first
divergence, then remove ever smaller chunks while the signature holds.
Candidates that are not valid traces (an object used before it is made) are
skipped without running.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from harness.conformance.runner import TraceRecord, run_one
from harness.conformance.traces import Trace, TraceError, dump_trace, parse_trace


@dataclass(frozen=True)
class Signature:
    """What identifies a divergence while shrinking: the op, the field, and the kinds of result.

    The values themselves may change as steps go (a smaller trace allocates elsewhere), so they
    are kept for people (``detail``) but not compared.
    """

    op: str
    field: str
    predicted_kind: str
    observed_kind: str
    detail: str = dataclasses.field(default="", compare=False)  # the mismatch, values included

    def __str__(self) -> str:
        if self.detail:
            return f"{self.op}: {self.detail}"
        return f"{self.op}: {self.field} (predicted {self.predicted_kind}, observed {self.observed_kind})"


def signature(rec: TraceRecord) -> Signature | None:
    d = rec.first_divergence
    if d is None:
        return None
    text = (d.mismatches + d.expect_failures)[0]
    for prefix in ("expect_linux ", "expect_illumos "):
        text = text.removeprefix(prefix)
    field = text.split(":", 1)[0]
    return Signature(d.op, field, (d.predicted or {}).get("kind", "?"), (d.observed or {}).get("kind", "none"),
                     detail=text)


@dataclass
class ShrinkResult:
    original: Trace
    minimal: Trace
    signature: Signature
    candidates_run: int
    path: Path | None = None


def shrink(target, trace: Trace, rec: TraceRecord, destructive: bool, budget_ms: int,
           max_runs: int = 400, log: Callable[[str], None] = lambda s: None) -> ShrinkResult | None:
    want = signature(rec)
    if want is None:
        return None
    docs = [s.to_yaml_dict() for s in trace.steps]
    for d in docs:  # a minimal trace states what the kernel did, not what a model expected
        for k in [k for k in d if k == "expect" or k.startswith("expect_")]:
            del d[k]
    first = rec.first_divergence.index
    runs = 0

    def candidate(steps: list[dict]) -> Trace | None:
        try:
            return parse_trace({"name": f"{trace.name}-min", "about": f"shrunk from {trace.name}: {want}",
                                "destructive": trace.destructive, "config": dict(trace.config),
                                "steps": steps}, source=f"<shrinking {trace.name}>")
        except TraceError:
            return None

    def reproduces(steps: list[dict]) -> bool:
        nonlocal runs
        cand = candidate(steps)
        if cand is None or runs >= max_runs:
            return False
        runs += 1
        return signature(run_one(target, cand, destructive, budget_ms)) == want

    steps = docs[:first]
    if not reproduces(steps):
        steps = docs  # later steps matter (a waiter joined later, say): keep them
        if not reproduces(steps):
            log(f"{trace.name}: the divergence did not recur on fresh state; not shrunk")
            return None
    n = 2
    while len(steps) >= 2 and runs < max_runs:
        size = max(1, len(steps) // n)
        for start in range(0, len(steps), size):
            cand = steps[:start] + steps[start + size:]
            if cand and reproduces(cand):
                steps = cand
                n = max(n - 1, 2)
                break
        else:
            if size == 1:
                break
            n = min(n * 2, len(steps))
    minimal = candidate(steps)
    assert minimal is not None
    log(f"{trace.name}: shrunk {len(trace.steps)} -> {len(minimal.steps)} steps in {runs} runs: {want}")
    return ShrinkResult(trace, minimal, want, runs)


def keep(result: ShrinkResult, directory: Path) -> Path:
    """Write the minimal trace to ``directory`` as trace YAML (replayed first by later runs)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{result.minimal.name}.yaml"
    text = dump_trace(result.minimal)
    header = (f"# kept by ddi-harness: {result.signature}\n"
              f"# shrunk from {result.original.name} ({len(result.original.steps)} steps) "
              f"in {result.candidates_run} candidate runs\n")
    path.write_text(header + text)
    yaml.safe_load(text)  # it must read back
    result.path = path
    return path
