"""`ddi-harness run`: a conformance run against a live guest, with progress and reports."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.conformance.runner import (RunSummary, TraceRecord, load_partial, manifest, run_conformance,
                                        write_json, write_junit)
from harness.conformance.traces import TraceError, load_traces

CORPUS = Path(__file__).resolve().parent.parent / "traces"
TARGETS = ("linux", "openindiana", "omnios")


def make_target(name: str, workdir: Path, destructive: bool, accel: str, log, progress, kmem_flags: int = 0,
                fault: str = ""):
    if name == "linux":
        from harness.targets.linux import LinuxTarget

        return LinuxTarget(workdir, destructive=destructive, accel=accel, log=log, progress=progress,
                           fault=fault)
    if fault:
        raise SystemExit("error: --fault is only available on the linux target")
    from harness.targets.illumos import IllumosTarget

    return IllumosTarget(workdir, distro=name, destructive=destructive, accel=accel, log=log,
                         progress=progress, kmem_flags=kmem_flags)


def run_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.ui import stage_progress

    console = Console(stderr=True)
    done: dict[str, TraceRecord] = {}
    if getattr(args, "resume", None):
        try:
            args, traces, paths = resume_state(Path(args.resume))
        except (OSError, ValueError, KeyError, TraceError) as e:
            print(f"error: cannot resume {args.resume}: {e}; give the --out directory of an "
                  "interrupted run (it holds start.json and results.jsonl)", file=sys.stderr)
            return 2
        done = load_partial(Path(args.out))
        console.print(f"resuming {args.out}: {len(done)} of {len(traces)} traces already done")
    else:
        try:
            traces, paths = select_traces(args)
        except TraceError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not done:
        save_start(out, args, traces, paths)
    log = lambda s: console.print(f"[dim]{escape(s)}[/dim]")  # noqa: E731

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        image_progress = stage_progress(bar)

        def new_target(workdir: Path):
            return make_target(args.target, workdir, args.destructive, args.accel, log, image_progress,
                               getattr(args, "kmem_flags", 0) or 0, getattr(args, "fault", "") or "")

        jobs = max(1, getattr(args, "jobs", 1) or 1)
        task = bar.add_task(f"{args.target} x{jobs}", total=len(traces))
        bar.advance(task, len(done))

        def on_trace(rec: TraceRecord) -> None:
            bar.advance(task)
            if rec.first_divergence:
                d = rec.first_divergence
                console.print("[red]DIVERGES[/red] " + escape(f"{rec.name} step {d.index}: {d.call}: "
                                                             f"{(d.mismatches + d.expect_failures)[0]}"))

        interrupted = False
        shrunk, unloaded, left = [], False, -1
        run_budget = getattr(args, "run_budget", None)
        if jobs == 1:
            target = new_target(out / "work")
            try:
                target.prepare()
                target.boot()
            except Exception as e:
                target_close(target)
                console.print(f"[red]error:[/red] could not bring up the {args.target} guest: "
                              f"{escape(str(e))}")
                return 2
            bar.update(task, description=f"{args.target} ({target.facts.accelerator})")
            try:
                summary = run_conformance(target, traces, destructive=args.destructive,
                                          budget_ms=args.budget_ms, out_dir=out, on_trace=on_trace,
                                          run_budget_s=run_budget, done=done, append=bool(done))
                shrunk = shrink_divergences(target, traces, summary, args, log)
                unloaded, left = target.unload()
            except KeyboardInterrupt:
                interrupted = True
                partial = load_partial(out)
                summary = RunSummary(traces=[partial[t.name] for t in traces if t.name in partial])
            finally:
                target_close(target)
        else:
            from harness.conformance.runner import run_parallel

            try:
                summary, targets = run_parallel(lambda i: new_target(out / "work" / f"job-{i}"), jobs, traces,
                                                destructive=args.destructive, budget_ms=args.budget_ms,
                                                out_dir=out, on_trace=on_trace, run_budget_s=run_budget,
                                                done=done, append=bool(done), log=log)
            except KeyboardInterrupt:
                interrupted, targets = True, []
                partial = load_partial(out)
                summary = RunSummary(traces=[partial[t.name] for t in traces if t.name in partial])
            if not targets:
                console.print(f"[red]error:[/red] no {args.target} guest came up")
                return 2
            target = targets[0]
            results = [getattr(t, "unload_result", (False, -1)) for t in targets]
            unloaded = all(u for u, _ in results)
            left = sum(n for _, n in results if n > 0) if unloaded else -1
            target.facts.boots = sum(t.facts.boots for t in targets)
            target.facts.guest_replacements = sum(t.facts.guest_replacements for t in targets)
            if summary.divergences and not getattr(args, "no_shrink", False) and not interrupted:
                shrinker = new_target(out / "work" / "shrink")  # one more guest, only to shrink
                try:
                    shrinker.prepare()
                    shrinker.boot()
                    shrunk = shrink_divergences(shrinker, traces, summary, args, log)
                finally:
                    target_close(shrinker)
    man = manifest(target, paths, args.destructive, sys.argv)
    man["budget_ms"], man["seed"] = args.budget_ms, (args.seed if args.generate else None)
    man["kmem_flags"] = getattr(args, "kmem_flags", 0) or 0
    man["fault"] = getattr(args, "fault", "") or ""
    man["regressions_written"] = [str(r.path) for r in shrunk]
    man["driver_unloaded"], man["outstanding_at_unload"] = unloaded, left
    man["interrupted"] = interrupted
    man["jobs"] = jobs
    man["shard"] = getattr(args, "shard", None)
    json_path = Path(args.json) if args.json else out / "run.json"
    junit_path = Path(args.junit) if args.junit else out / "junit.xml"
    write_json(json_path, summary, man)
    write_junit(junit_path, summary, man)
    html_path = Path(args.html) if getattr(args, "html", None) else out / "report.html"
    from harness.conformance.html import render

    html_path.write_text(render(json.loads(json_path.read_text()), traces))
    print_summary(Console(), summary, man, json_path, junit_path, html_path)
    if interrupted:
        console.print(f"interrupted: {len(summary.traces)} of {len(traces)} traces done; finish with "
                      f"`ddi-harness run --resume {out}`")
        return 130
    return 1 if summary.divergences else 0


START = "start.json"


def save_start(out: Path, args: argparse.Namespace, traces, paths: list[str]) -> None:
    """What a run needs to be resumed: its settings and the traces themselves."""
    keep = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None), list))
            and k not in ("func", "resume")}
    (out / START).write_text(json.dumps({"args": keep, "paths": paths,
                                         "traces": [t.to_yaml_dict() for t in traces]}, indent=1))


def resume_state(out: Path):
    from harness.conformance.traces import parse_trace

    doc = json.loads((out / START).read_text())
    ns = argparse.Namespace(**doc["args"])
    ns.out, ns.resume = str(out), None
    traces = [parse_trace(t, source=str(out / START)) for t in doc["traces"]]
    return ns, traces, doc["paths"]


def shrink_divergences(target, traces, summary, args, log) -> list:
    """Shrink each divergent trace on the live guest and keep it under --regressions."""
    from harness.conformance.shrink import keep, shrink

    if getattr(args, "no_shrink", False):
        return []
    by_name = {t.name: t for t in traces}
    kept = []
    for rec in summary.traces:
        trace = by_name.get(rec.name)
        if rec.first_divergence is None or trace is None or trace.name.endswith("-min"):
            continue
        res = shrink(target, trace, rec, args.destructive, args.budget_ms, log=log)
        if res is not None:
            keep(res, Path(args.regressions))
            log(f"kept {res.path} ({len(res.minimal.steps)} steps)")
            kept.append(res)
        if len(kept) >= 10:
            break
    return kept


def select_traces(args: argparse.Namespace) -> tuple[list, list[str]]:
    """The traces a run executes: regressions first, then the corpus (or --traces), or generated ones."""
    from harness.conformance.generate import generate

    if getattr(args, "replay_traces", None) is not None:
        return args.replay_traces, ["(replayed from a run.json)"]
    if args.generate:
        traces = generate(args.generate, args.seed)
        paths = [f"generated: {args.generate} traces, seed {args.seed}"]
    else:
        paths = args.traces or [str(CORPUS)]
        traces = load_traces(paths)
    regressions = Path(args.regressions)
    if regressions.is_dir() and any(regressions.glob("*.yaml")):
        kept = load_traces([regressions])
        names = {t.name for t in kept}
        traces = kept + [t for t in traces if t.name not in names]
        paths = [str(regressions)] + paths
    if args.match:
        traces = [t for t in traces if args.match in t.name]
    shard = getattr(args, "shard", None)
    if shard:
        i, n = parse_shard(shard)
        traces = sorted(traces, key=lambda t: t.name)[i - 1::n]
        paths = paths + [f"shard {i}/{n}"]
    return traces, paths


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N`, 1 <= I <= N: this run takes every N-th trace (by name) starting at the I-th."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise TraceError("--shard", None, f"{text!r} is not I/N", "write e.g. --shard 2/4") from None
    if not 1 <= i <= n:
        raise TraceError("--shard", None, f"shard {i} of {n} does not exist", f"use 1/{n} .. {n}/{n}")
    return i, n


def replay_command(args: argparse.Namespace) -> int:
    """Rerun a recorded run: the same traces (as recorded), target, mode and budget."""
    from harness.conformance.traces import parse_trace

    doc = json.loads(Path(args.run_json).read_text())
    man = doc["manifest"]
    traces = [parse_trace(t["definition"], source=f"{args.run_json}") for t in doc["traces"] if t.get("definition")]
    ns = argparse.Namespace(target=man["target"], traces=None, match=args.match, out=args.out, json=None,
                            junit=None, html=None, destructive=man.get("destructive", False),
                            budget_ms=man.get("budget_ms", 2000), accel=args.accel, generate=0,
                            seed=man.get("seed"), regressions="/nonexistent", replay_traces=traces,
                            kmem_flags=man.get("kmem_flags", 0), fault=man.get("fault", ""),
                            no_shrink=True)
    return run_command(ns)


def target_close(target) -> None:
    try:
        target.close()
    except Exception:
        pass


def print_summary(console, summary: RunSummary, man: dict, json_path: Path, junit_path: Path,
                  html_path: Path) -> None:
    from rich.table import Table

    ran = [t for t in summary.traces if not t.skipped]
    diverged = [t for t in ran if t.first_divergence]
    rate = summary.steps / summary.seconds if summary.seconds else 0.0
    table = Table(title="ddi-harness run", show_header=False, title_justify="left")
    table.add_row("target", f"{man['target']} (model: {man['model']})")
    table.add_row("guest kernel", f"{man.get('guest_kernel')} ({man.get('guest_kernel_package')})")
    table.add_row("accelerator", f"{man.get('accelerator')}  {man.get('accelerator_reason') or ''}".strip())
    table.add_row("boot to ready", f"{man.get('boot_to_ready_s')} s ({man.get('boots')} boots, "
                                   f"{man.get('guest_replacements')} replaced)")
    table.add_row("traces", f"{len(ran)} run, {len(summary.traces) - len(ran)} skipped (driver mode)")
    table.add_row("steps", f"{summary.steps} in {summary.seconds:.1f} s ({rate:.0f} steps/s)")
    ends = [t.end for t in ran]
    table.add_row("panics, hangs", f"{ends.count('panic')} kernel panics (guest replaced each time), "
                                   f"{ends.count('hang')} hangs cut off by the op budget")
    table.add_row("divergences", f"{len(summary.divergences)} in {len(diverged)} traces (kernel vs "
                                 f"{man['model']} model)")
    deps = summary.departures
    table.add_row("departures", f"{len(deps)} steps outside the manual pages' contract "
                                f"({sum(d['known'] for d in deps)} known, predicted by the model)")
    table.add_row("driver unload", "ok, nothing outstanding" if man.get("driver_unloaded") and
                  man.get("outstanding_at_unload") == 0 else
                  f"unloaded={man.get('driver_unloaded')} outstanding={man.get('outstanding_at_unload')}")
    table.add_row("reports", f"{json_path}  {junit_path}  {html_path}")
    console.print(table)
    for t in diverged[:20]:
        d = t.first_divergence
        console.print(f"  {t.name} step {d.index}: {d.call}: {(d.mismatches + d.expect_failures)[0]}", markup=False)
