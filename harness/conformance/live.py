"""`ddi-harness run`: a conformance run against a live guest, with progress and reports.

Everything here takes a ``RunOptions`` (harness/options.py); only cli.py
knows argparse.  ``start.json`` in the output directory holds the options and
the traces themselves, so ``--resume`` finishes the same run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from harness.conformance.runner import (Job, RunSummary, TraceRecord, load_partial, manifest, run_conformance,
                                        run_parallel, write_json, write_junit)
from harness.conformance.traces import TraceError, load_traces, parse_trace
from harness.options import RunOptions
from harness.targets import TargetError, check_options, effective, make_target
from harness.targets.base import Target, UnloadResult
from harness.trace import Trace

CORPUS = Path(__file__).resolve().parent.parent / "traces"


def run_command(options: RunOptions, *, replay_traces: list[Trace] | None = None,
                resume: str | None = None) -> int:
    """A whole run: select traces, check everything, bring targets up, run, shrink, report.

    Returns the exit status: 0 all held, 1 a divergence (or nothing ran), 2 bad input (before
    any guest work), 130 interrupted.
    """
    done: dict[str, TraceRecord] = {}
    if resume:
        try:
            options, traces, paths = resume_state(Path(resume))
        except (OSError, ValueError, KeyError, TypeError, TraceError) as e:
            print(f"error: cannot resume {resume}: {e}; give the --out directory of an "
                  "interrupted run (it holds start.json and results.jsonl)", file=sys.stderr)
            return 2
        done = load_partial(Path(options.out))
    else:
        try:
            traces, paths = select_traces(options, replay_traces)
        except TraceError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    problems = options.problems()
    if not traces and not problems:
        problems.append(nothing_selected(options, paths))
    try:
        check_options(options.target, options)  # settings the target cannot honour fail before any work
        options = effective(options)
    except TargetError as e:
        problems.append(str(e))
    out = Path(options.out)
    lock = None
    if not problems:
        try:
            lock = lock_out(out)
        except OutDirError as e:
            problems.append(str(e))
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 2
    try:
        return _run(options, traces, paths, done, out)
    finally:
        lock.close()


def _run(options: RunOptions, traces: list[Trace], paths: list[str], done: dict[str, TraceRecord],
         out: Path) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from harness.ui import stage_progress

    console = Console(stderr=True)
    if done:
        console.print(f"resuming {out}: {len(done)} of {len(traces)} traces already done")
    if not done:
        save_start(out, options, traces, paths)
    log = lambda s: console.print(f"[dim]{escape(s)}[/dim]")  # noqa: E731

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        image_progress = stage_progress(bar)

        def new_target(workdir: Path) -> Target:
            return make_target(options.target, options, workdir, log=log, progress=image_progress)

        jobs = max(1, options.jobs)
        task = bar.add_task(f"{options.target} x{jobs}", total=len(traces))
        bar.advance(task, len(done))

        def on_trace(rec: TraceRecord) -> None:
            bar.advance(task)
            if rec.first_divergence:
                d = rec.first_divergence
                console.print("[red]DIVERGES[/red] " + escape(f"{rec.name} step {d.index}: {d.call}: "
                                                             f"{(d.mismatches + d.expect_failures)[0]}"))

        interrupted = False
        shrunk: list = []
        unload = UnloadResult(False, -1, "the run did not reach the end")
        if jobs == 1:
            target = new_target(out / "work")
            try:
                target.prepare()
                target.boot()
            except Exception as e:
                target_close(target)
                console.print(f"[red]error:[/red] could not bring up the {options.target} target: "
                              f"{escape(str(e))}")
                return 2
            bar.update(task, description=f"{options.target} ({target.facts.accelerator})")
            try:
                summary = run_conformance(target, traces, destructive=options.destructive,
                                          budget_ms=options.budget_ms, out_dir=out, on_trace=on_trace,
                                          run_budget_s=options.run_budget, done=done, append=bool(done))
                shrunk = shrink_divergences(target, traces, summary, options, log)
                unload = target.unload()
            except KeyboardInterrupt:
                interrupted = True
                summary = _partial(out, traces)
                unload = UnloadResult(False, -1, "interrupted (Ctrl-C) before the driver was unloaded")
            finally:
                target_close(target)
        else:
            try:
                summary, finished = run_parallel(lambda i: new_target(out / "work" / f"job-{i}"), jobs, traces,
                                                 destructive=options.destructive, budget_ms=options.budget_ms,
                                                 out_dir=out, on_trace=on_trace, run_budget_s=options.run_budget,
                                                 done=done, append=bool(done), log=log)
            except KeyboardInterrupt:
                interrupted, finished = True, []
                summary = _partial(out, traces)
            if not finished:
                console.print(f"[red]error:[/red] no {options.target} target came up")
                return 2
            target = finished[0].target
            unload = _combined_unload(finished)
            target.facts.boots = sum(j.target.facts.boots for j in finished)
            target.facts.guest_replacements = sum(j.target.facts.guest_replacements for j in finished)
            if summary.divergences and options.shrink and not interrupted:
                shrinker = new_target(out / "work" / "shrink")  # one more guest, only to shrink
                try:
                    shrinker.prepare()
                    shrinker.boot()
                    shrunk = shrink_divergences(shrinker, traces, summary, options, log)
                finally:
                    target_close(shrinker)
    t_reports = time.monotonic()
    target.facts.phase("steps", summary.seconds)
    man = manifest(target, paths, options.destructive, sys.argv)
    man["budget_ms"], man["seed"] = options.budget_ms, (options.seed if options.generate else None)
    man["kmem_flags"] = options.kmem_flags
    man["fault"] = options.fault
    man["regressions_written"] = [str(r.path) for r in shrunk]
    man["driver_unloaded"], man["outstanding_at_unload"] = unload.unloaded, unload.outstanding
    man["driver_unload"] = unload.describe()
    man["interrupted"] = interrupted
    man["jobs"] = jobs
    man["shard"] = options.shard
    man["options"] = options.to_json()
    json_path = Path(options.json) if options.json else out / "run.json"
    junit_path = Path(options.junit) if options.junit else out / "junit.xml"
    write_json(json_path, summary, man)
    write_junit(junit_path, summary, man)
    html_path = Path(options.html) if options.html else out / "report.html"
    from harness.conformance.html import render

    html_path.write_text(render(json.loads(json_path.read_text()), traces))
    man["phases"]["reports"] = round(time.monotonic() - t_reports, 3)
    print_summary(Console(), summary, man, json_path, junit_path, html_path)
    if interrupted:
        console.print(f"interrupted: {len(summary.traces)} of {len(traces)} traces done; finish with "
                      f"`ddi-harness run --resume {out}`")
        return 130
    if not any(t.steps and not t.skipped for t in summary.traces):
        console.print(f"[red]FAILED:[/red] no trace ran ({len(summary.traces)} skipped): a run that tested "
                      "nothing does not pass; see the reasons in the summary")
        return 1
    return 1 if summary.divergences else 0


class OutDirError(ValueError):
    """An --out directory that cannot take this run's reports."""


class _OutLock:
    def __init__(self, f) -> None:
        self.f = f

    def close(self) -> None:
        self.f.close()  # releases the flock


def lock_out(out: Path) -> _OutLock:
    """Make ``out`` (a writable directory) this run's alone: two runs into one --out would
    overwrite each other's reports."""
    import fcntl
    import os

    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutDirError(f"--out {out}: that is a file, not a directory; give a directory for the reports") from None
    except OSError as e:
        raise OutDirError(f"--out {out}: cannot create it ({e.strerror}); give a directory you can write") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutDirError(f"--out {out}: not writable; give a directory you can write")
    try:
        f = open(out / ".run.lock", "a+")
    except OSError as e:
        raise OutDirError(f"--out {out}: cannot write in it ({e.strerror}); give a directory you can write") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        who = f.read().strip() or "another process"
        f.close()
        raise OutDirError(f"--out {out}: another run is writing its reports there ({who}); give another --out, "
                          "or wait for it to finish") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}\n")
    f.flush()
    return _OutLock(f)


def nothing_selected(options: RunOptions, paths: list[str]) -> str:
    """Why a run selected no trace, and the fix: a run that tests nothing must not pass."""
    if options.match:
        return (f"--match {options.match!r}: no trace name contains it (looked in {', '.join(paths)}); "
                "`ddi-harness traces` lists the names")
    if options.shard:
        return f"--shard {options.shard}: that shard holds no trace; use fewer shards"
    return f"no traces in {', '.join(paths)}; give trace files or a directory that holds some"


def _partial(out: Path, traces: list[Trace]) -> RunSummary:
    partial = load_partial(out)
    return RunSummary(traces=[partial[t.name] for t in traces if t.name in partial])


def _combined_unload(jobs: list[Job]) -> UnloadResult:
    """Every job's driver unloaded: the outstanding objects add up; else the first reason."""
    for i, j in enumerate(jobs):
        if j.unload is None or not j.unload.unloaded:
            why = j.error or (j.unload.why if j.unload else "it did not finish")
            return UnloadResult(False, -1, f"job {i}: {why}")
    return UnloadResult(True, sum(max(j.unload.outstanding, 0) for j in jobs))


START = "start.json"


def save_start(out: Path, options: RunOptions, traces: list[Trace], paths: list[str]) -> None:
    """What a run needs to be resumed: its options and the traces themselves."""
    (out / START).write_text(json.dumps({"options": options.to_json(), "paths": paths,
                                         "traces": [t.to_yaml_dict() for t in traces]}, indent=1))


def resume_state(out: Path) -> tuple[RunOptions, list[Trace], list[str]]:
    doc = json.loads((out / START).read_text())
    options = RunOptions.from_json(doc["options"]).replace(out=str(out))
    traces = [parse_trace(t, source=str(out / START)) for t in doc["traces"]]
    return options, traces, doc["paths"]


def shrink_divergences(target: Target, traces: list[Trace], summary: RunSummary, options: RunOptions,
                       log) -> list:
    """Shrink each divergent trace on the live guest and keep it under the regressions directory."""
    from harness.conformance.shrink import keep, shrink

    if not options.shrink or options.regressions is None:
        return []
    by_name = {t.name: t for t in traces}
    kept = []
    for rec in summary.traces:
        trace = by_name.get(rec.name)
        if rec.first_divergence is None or trace is None or trace.name.endswith("-min"):
            continue
        res = shrink(target, trace, rec, options.destructive, options.budget_ms, log=log)
        if res is not None:
            keep(res, Path(options.regressions))
            log(f"kept {res.path} ({len(res.minimal.steps)} steps)")
            kept.append(res)
        if len(kept) >= 10:
            break
    return kept


def select_traces(options: RunOptions, replay_traces: list[Trace] | None = None) -> tuple[list[Trace], list[str]]:
    """The traces a run executes: regressions first, then the corpus (or --traces), or generated
    ones; a replay runs the recorded traces."""
    from harness.conformance.generate import generate

    if replay_traces is not None:
        traces, paths = list(replay_traces), ["(replayed from a run.json)"]
    elif options.generate > 0:
        profile = options.profile or generator_profile(options.target)
        traces = generate(options.generate, options.seed, profile=profile)
        paths = [f"generated: {options.generate} traces, seed {options.seed}, profile {profile}"]
    else:
        paths = list(options.traces) or [str(CORPUS)]
        traces = load_traces(paths)
    regressions = Path(options.regressions) if options.regressions else None
    if replay_traces is None and regressions is not None and regressions.is_dir() \
            and any(regressions.glob("*.yaml")):
        kept = load_traces([regressions])
        names = {t.name for t in kept}
        traces = kept + [t for t in traces if t.name not in names]
        paths = [str(regressions)] + paths
    if options.match:
        traces = [t for t in traces if options.match in t.name]
    shard = options.shard
    if shard:
        i, n = parse_shard(shard)
        traces = sorted(traces, key=lambda t: t.name)[i - 1::n]
        paths = paths + [f"shard {i}/{n}"]
    return traces, paths


def generator_profile(target: str) -> str:
    """The default generator profile: ``corners`` for a target that runs resource maps only
    (the illumos-gate target: its traces are all rmap, aimed at vmem's corners), else ``basic``."""
    from harness.targets import target_info

    return "corners" if target_info(target).load().families == frozenset({"rmap"}) else "basic"


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N`, 1 <= I <= N: this run takes every N-th trace (by name) starting at the I-th."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise TraceError("--shard", None, f"{text!r} is not I/N", "write e.g. --shard 2/4") from None
    if not 1 <= i <= n:
        raise TraceError("--shard", None, f"shard {i} of {n} does not exist", f"use 1/{n} .. {n}/{n}")
    return i, n


class ReplayError(ValueError):
    """A run.json that cannot be replayed; the message names the file and the fix."""


def replay_options(run_json: str, *, out: str, match: str | None, accel: str) -> tuple[RunOptions, list[Trace]]:
    """The options and traces of a recorded run, to run them again: same target, driver mode,
    budget and faults; no regressions replayed first, nothing shrunk."""
    try:
        doc = json.loads(Path(run_json).read_bytes().decode("utf-8"))
        man = doc["manifest"]
        target = man["target"]
        traces = [parse_trace(t["definition"], source=run_json) for t in doc["traces"] if t.get("definition")]
    except OSError as e:
        raise ReplayError(f"{run_json}: cannot read it ({e.strerror}); give the run.json of an earlier run") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ReplayError(f"{run_json}: not a run.json (not JSON text); give the run.json an earlier "
                          "`ddi-harness run` wrote into its --out directory") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise ReplayError(f"{run_json}: not a run.json (no {e} in it); give the run.json an earlier "
                          "`ddi-harness run` wrote") from None
    except TraceError as e:
        raise ReplayError(f"{run_json}: a recorded trace does not load: {e}") from None
    if not traces:
        raise ReplayError(f"{run_json}: it records no trace definitions to replay")
    del target
    if "options" in man:  # the run's own options, as it ran them
        recorded = RunOptions.from_json(man["options"])
    else:  # a run.json from before the manifest kept them
        recorded = RunOptions(target=man["target"], destructive=man.get("destructive", False),
                              budget_ms=man.get("budget_ms", 2000), seed=man.get("seed") or 1,
                              kmem_flags=man.get("kmem_flags", 0) or 0, fault=man.get("fault", "") or "")
    if recorded.gate is None and man.get("gate_dir"):
        recorded = recorded.replace(gate=man["gate_dir"])  # the same tree, however it was found then
    options = recorded.replace(traces=(), generate=0, match=match, out=out, json=None, junit=None, html=None,
                               accel=accel, regressions=None, shrink=False, shard=None, jobs=1, run_budget=None)
    return options, traces


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
    skipped: dict[str, int] = {}
    for t in summary.traces:
        if t.skipped:
            skipped[t.skipped] = skipped.get(t.skipped, 0) + 1
    why = "; ".join(f"{n}: {reason}" for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1]))
    table.add_row("traces", f"{len(ran)} run, {len(summary.traces) - len(ran)} skipped" + (f" ({why})" if why else ""))
    if man.get("phases"):
        table.add_row("phases", ", ".join(f"{k} {v:.2f} s" for k, v in man["phases"].items()))
    if man.get("interrupted"):
        table.add_row("steps", f"{summary.steps} recorded before the interrupt (Ctrl-C); finish with --resume")
    else:
        table.add_row("steps", f"{summary.steps} in {summary.seconds:.1f} s ({rate:.0f} steps/s)")
    ends = [t.end for t in ran]
    table.add_row("panics, hangs", f"{ends.count('panic')} kernel panics (guest replaced each time), "
                                   f"{ends.count('hang')} hangs cut off by the op budget")
    table.add_row("divergences", f"{len(summary.divergences)} in {len(diverged)} traces (kernel vs "
                                 f"{man['model']} model)")
    deps = summary.departures
    table.add_row("departures", f"{len(deps)} steps outside the manual pages' contract "
                                f"({sum(d['known'] for d in deps)} known, predicted by the model)")
    table.add_row("driver unload", man.get("driver_unload") or
                  UnloadResult(bool(man.get("driver_unloaded")), man.get("outstanding_at_unload", -1)).describe())
    table.add_row("reports", f"{json_path}  {junit_path}  {html_path}")
    console.print(table)
    for t in diverged[:20]:
        d = t.first_divergence
        console.print(f"  {t.name} step {d.index}: {d.call}: {(d.mismatches + d.expect_failures)[0]}", markup=False)
