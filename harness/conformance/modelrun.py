"""`ddi-harness model`: traces through a model only, checked against their expects."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.conformance.compare import Mismatch, check_expect
from harness.conformance.traces import Trace, TraceError, load_traces
from harness.model import build
from harness.model.base import ModelConfig, TraceRun, run_trace

CORPUS = Path(__file__).resolve().parent.parent / "traces"


@dataclass
class CheckedRun:
    run: TraceRun
    failures: list[tuple[int, list[Mismatch]]] = field(default_factory=list)  # (step number, mismatches)


def run_model(traces: list[Trace], model: str, base: ModelConfig, layout: bool = False) -> list[CheckedRun]:
    out = []
    for trace in traces:
        run = run_trace(build(model, base.with_trace(trace)), trace, with_state=True, with_layout=layout)
        checked = CheckedRun(run)
        for s in run.steps:
            exp = s.step.expect.get(model)
            if exp is not None:
                mm = check_expect(exp, s.result)
                if mm:
                    checked.failures.append((s.index, mm))
        out.append(checked)
    return out


def result_json(result: Any, detail: bool) -> dict[str, Any]:
    data = result.to_json()
    if not detail:
        data = {k: v for k, v in data.items() if k in ("kind", "value", "message", "warnings")}
    return data


def model_command(args: argparse.Namespace) -> int:
    paths = args.traces or [str(CORPUS)]
    try:
        traces = load_traces(paths)
    except TraceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base = ModelConfig(destructive=not args.guarded)
    if args.kmem_flags is not None:
        base = ModelConfig(kmem_flags=args.kmem_flags, destructive=not args.guarded)
    try:
        checked = run_model(traces, args.model, base, layout=args.explain)
    except ModuleNotFoundError as e:
        print(f"error: model {args.model!r} is not available ({e})", file=sys.stderr)
        return 2
    if args.json:
        doc = {"traces": []}
        for c in checked:
            entry = c.run.to_json()
            entry["steps"] = [{"op": s.step.op, "result": result_json(s.result, args.detail)}
                              for s in c.run.steps]
            doc["traces"].append(entry)
        json.dump(doc, sys.stdout, indent=1)
        print()
    elif args.explain:
        print_explained(checked)
    else:
        print_tables(checked, args.detail)
    failed = [c for c in checked if c.failures]
    for c in failed:
        for num, mm in c.failures:
            step = c.run.steps[num - 1].step
            print(f"expect failed: {c.run.trace.name} step {num}: {step.call_text()}: "
                  + "; ".join(map(str, mm)), file=sys.stderr)
    return 1 if failed else 0


def print_explained(checked: list[CheckedRun]) -> None:
    """Step by step, what each call did to the map: its result, then the whole layout (spans as
    rows, ``[a START+SIZE]`` allocated, ``[fK START+SIZE]`` free on vmem freelist K, ``*`` the
    segment the step allocated) -- what instant fit saw, without reading vmem.c."""
    from harness.conformance.layoutview import text

    for c in checked:
        run = c.run
        print(f"== {run.trace.name} ({run.model} model, {run.end})")
        if run.trace.about:
            print(f"   {run.trace.about}")
        for s in run.steps:
            res = s.result
            print(f"{s.index:>4}  {s.step.call_text()} -> {res.short()}")
            for w in res.warnings:
                print(f"        {w}")
            if res.note:
                print(f"        ({res.note})")
            if res.layout is not None:
                taken = res.value if s.step.op in ("rmalloc", "rmalloc_wait") and res.value else None
                for line in text(res.layout, taken):
                    print(f"        {line}")
        print()


def print_tables(checked: list[CheckedRun], detail: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for c in checked:
        run = c.run
        bad = {num for num, _ in c.failures}
        title = f"{run.trace.name}  [dim]({run.model} model, {run.end})[/dim]"
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("#", justify="right")
        table.add_column("call")
        table.add_column("result")
        table.add_column("expect")
        if detail:
            table.add_column("state / note")
        for s in run.steps:
            exp = s.step.expect.get(run.model)
            mark = "" if exp is None else ("[red]FAIL[/red]" if s.index in bad else "[green]ok[/green]")
            res = s.result.short()
            if s.result.warnings:
                res += "\n" + "\n".join(s.result.warnings)
            row = [str(s.index), s.step.call_text(), res, mark]
            if detail:
                extra = []
                if s.result.state:
                    extra.append(" ".join(f"{k}={v}" for k, v in s.result.state.items()))
                if s.result.note:
                    extra.append(s.result.note)
                row.append("\n".join(extra))
            table.add_row(*row)
        console.print(table)
    n_fail = sum(1 for c in checked if c.failures)
    console.print(f"{len(checked)} traces, {sum(len(c.run.steps) for c in checked)} steps, "
                  f"{n_fail} with failed expects")
