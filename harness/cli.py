"""ddi-harness command line.

Subcommands are added per stage; each one here works end to end.
Exit status: 0 success, 1 a check failed (an expect, a divergence), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from harness import __version__
from harness.conformance.generate import PROFILES
from harness.model import MODEL_NAMES
from harness.options import RunOptions
from harness.targets import TARGET_NAMES, TARGETS

EPILOG = """\
exit status: 0 when everything held, 1 when a check failed (an expect or a
divergence), 2 for invalid input (the message names the file, step and fix).

examples:
  ddi-harness model harness/traces/rmap/seed-rmalloc-example.yaml
  ddi-harness model --json --model documented harness/traces
  ddi-harness bench model --ops 200000
  ddi-harness image build linux
  ddi-harness run --target linux --junit out/junit.xml
  ddi-harness fuzz --target linux --ops 20000
"""


def _corpus_dir() -> Path:
    return Path(__file__).resolve().parent / "traces"


def cmd_model(args: argparse.Namespace) -> int:
    from harness.conformance.modelrun import model_command

    return model_command(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.bench import bench_command

    return bench_command(args)


def run_options(args: argparse.Namespace) -> RunOptions:
    """`run`'s arguments as the typed options every layer below takes."""
    return RunOptions(target=args.target, traces=tuple(args.traces or ()), match=args.match, out=args.out,
                      json=args.json, junit=args.junit, html=args.html, destructive=args.destructive,
                      budget_ms=args.budget_ms, accel=args.accel, generate=args.generate or 0, seed=args.seed,
                      regressions=args.regressions, kmem_flags=args.kmem_flags, fault=args.fault,
                      jobs=args.jobs, shard=args.shard, run_budget=args.run_budget, shrink=not args.no_shrink,
                      gate=args.gate, gate_debug=args.gate_debug, profile=args.profile,
                      layout=not args.no_layout, cold=args.cold)


def cmd_run(args: argparse.Namespace) -> int:
    from harness.conformance.live import run_command

    if args.generate is not None and args.generate < 1:
        print(f"error: --generate {args.generate}: a run of no generated traces tests nothing; "
              "give a positive number (or leave --generate out to run the corpus)", file=sys.stderr)
        return 2
    return run_command(run_options(args), resume=args.resume)


def cmd_replay(args: argparse.Namespace) -> int:
    from harness.conformance.live import ReplayError, replay_options, run_command

    try:
        options, traces = replay_options(args.run_json, out=args.out, match=args.match, accel=args.accel)
    except ReplayError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run_command(options, replay_traces=traces)


def cmd_image(args: argparse.Namespace) -> int:
    from harness.images import ImageError, build_linux_image, image_summary

    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TransferSpeedColumn

    from harness.ui import stage_progress

    if (args.action == "build") != (args.name == "linux"):
        print("error: use `image build linux`, or `image fetch openindiana|omnios`", file=sys.stderr)
        return 2
    if args.action == "fetch":
        from harness.fetch import FetchError, fetch_image

        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      transient=True) as bar:
            try:
                img = fetch_image(args.name, progress=stage_progress(bar))
            except FetchError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
        print(f"{args.name}: {img.path} ({img.format}, download sha256 {img.sha256})")
        return 0

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=True) as bar:
        try:
            img = build_linux_image(progress=stage_progress(bar), force=args.rebuild)
        except ImageError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(json.dumps(image_summary(img), indent=1, default=str))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness.doctor import doctor, format_report

    checks = doctor(args.target)
    print(format_report(checks))
    return 0 if all(c.ok for c in checks) else 1


def cmd_report(args: argparse.Namespace) -> int:
    if args.action == "diff":
        from harness.conformance.diff import diff_command

        return diff_command(args)
    from harness.conformance.merge import merge_command

    return merge_command(args)


def cmd_fuzz(args: argparse.Namespace) -> int:
    from harness.fuzz import fuzz_command

    return fuzz_command(args)


def cmd_traces(args: argparse.Namespace) -> int:
    from harness.conformance.traces import TraceError, load_traces

    paths = args.traces or [str(_corpus_dir())]
    try:
        traces = load_traces(paths)
    except TraceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for t in traces:
        flag = " [destructive]" if t.destructive else ""
        print(f"{t.name}{flag}: {len(t.steps)} steps  {t.about}")
    print(f"{len(traces)} traces valid")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ddi-harness",
        description="Conformance harness for the kernel memory routines drivers use "
                    "(rmalloc family, ddi_umem_alloc + devmap, kmem_alloc), checked "
                    "against reference models of illumos, Linux and the manual pages.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ddi-harness {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    m = sub.add_parser(
        "model", help="run traces through a reference model only (no guest)",
        description="Run traces through a reference model and print each step's predicted "
                    "result. Traces whose `expect` does not hold are reported and make the "
                    "exit status 1. Default: the bundled corpus.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="JSON shape (stable): {\"traces\": [{\"name\", \"model\", \"steps\": [{\"op\", "
               "\"result\": {\"kind\", \"value\"?, \"message\"?, \"warnings\"?}}], \"end\"}]}")
    m.add_argument("traces", nargs="*", help="trace files or directories (default: the corpus)")
    m.add_argument("--model", default="illumos", choices=MODEL_NAMES,
                   help="which semantics to predict (default: illumos)")
    m.add_argument("--json", action="store_true", help="print JSON instead of tables")
    m.add_argument("--detail", action="store_true",
                   help="add attrs (alignment, zero fill, cookie type), map counters and notes")
    m.add_argument("--guarded", action="store_true",
                   help="model the driver's guards: misuse is refused with EINVAL instead of "
                        "reaching the kernel (default: raw kernel semantics)")
    m.add_argument("--explain", action="store_true",
                   help="step by step, each resource map's whole layout after the step (spans as rows, "
                        "allocated and free segments, vmem freelist classes, the segment an rmalloc took)")
    m.add_argument("--kmem-flags", type=lambda s: int(s, 0), default=None,
                   help="illumos kmem_flags to assume (e.g. 0xf); a trace's config overrides it")
    m.set_defaults(func=cmd_model)

    b = sub.add_parser("bench", help="benchmarks (throughput figures, not tests)",
                       description="Benchmarks. `bench model` runs a seeded random resource-map "
                                   "workload through the illumos model and prints ops/s. "
                                   "`bench --target linux` measures, in one run on a live guest: boot to "
                                   "ready, snapshot restore, (a) the raw rate of ddictl in the guest, (b) the "
                                   "checked rate end to end, and the speedup of --jobs 2 over --jobs 1.")
    b.add_argument("what", nargs="?", choices=["model"], help="`model`: the model-only benchmark")
    b.add_argument("--target", choices=TARGET_NAMES, help="benchmark a target: linux (a live guest) or "
                                                             "illumos-gate (the real vmem.c in-process)")
    b.add_argument("--gate", metavar="DIR", help="illumos-gate only: the illumos-gate checkout to build")
    b.add_argument("--traces-count", type=int, default=300, metavar="N",
                   help="generated traces in the live workload (default 300; --jobs uses 4x)")
    b.add_argument("--ops", type=int, default=200_000, help="operations to run (default 200000)")
    b.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    b.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser(
        "run", help="a conformance run against a live guest",
        description="Boot a guest, build and load the ddih driver, run the traces through it step "
                    "by step, compare every result with the target's model, and write reports "
                    "(JSON, JUnit). Exit status 1 on any divergence.")
    r.add_argument("--target", default="linux", choices=TARGET_NAMES,
                   help="which target (default: linux). " + "; ".join(f"{t.name}: {t.summary}"
                                                                        for t in TARGETS.values()))
    r.add_argument("--traces", action="append", metavar="PATH",
                   help="trace file or directory (repeatable; default: the corpus)")
    r.add_argument("--match", metavar="TEXT", help="only traces whose name contains TEXT")
    r.add_argument("--out", default="out", help="directory for reports and guest logs (default: out)")
    r.add_argument("--json", metavar="FILE", help="JSON report (default: OUT/run.json)")
    r.add_argument("--junit", metavar="FILE", help="JUnit XML report (default: OUT/junit.xml)")
    r.add_argument("--destructive", action="store_true",
                   help="also run traces whose expected outcome panics or hangs the kernel, with the "
                        "driver loaded in destructive mode")
    r.add_argument("--budget-ms", type=int, default=2000,
                   help="time budget per op before it counts as a hang (default 2000)")
    r.add_argument("--accel", default="auto", choices=["auto", "kvm", "tcg"],
                   help="QEMU accelerator (default: try KVM, fall back to TCG)")
    r.add_argument("--generate", type=int, default=None, metavar="N",
                   help="run N generated traces (random, valid by construction) instead of the corpus")
    r.add_argument("--seed", type=int, default=1, help="seed for --generate (default 1)")
    r.add_argument("--profile", choices=PROFILES, default=None,
                   help="what --generate makes: basic (every family, legal calls) or corners (resource maps "
                        "aimed at vmem's corners: several sleepers, spans near 2^64, overlapping spans, class "
                        "boundaries). Default: corners on illumos-gate, basic elsewhere")
    r.add_argument("--html", metavar="FILE", help="HTML report (default: OUT/report.html)")
    r.add_argument("--regressions", default="regressions", metavar="DIR",
                   help="kept regression traces, replayed first (default: ./regressions)")
    r.add_argument("--kmem-flags", type=lambda v: int(v, 0), default=0, metavar="N",
                   help="illumos only: provision a debug-allocator variant with kmem_flags=N (e.g. 0xf), "
                        "kept as its own base image")
    r.add_argument("--fault", default="", metavar="NAME[,NAME]",
                   help="linux only: load the driver with faults injected on purpose, to see the harness "
                        "catch them (rmfree_off_by_one, umem_not_zeroed, kmem_bad_offset, wait_never_woken)")
    r.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run N guests at once, traces shared among them (default 1)")
    r.add_argument("--shard", metavar="I/N",
                   help="run only shard I of N (every N-th trace by name), so separate machines or CI "
                        "jobs can split a run; merge their run.json with `ddi-harness report merge`")
    r.add_argument("--resume", metavar="OUT",
                   help="finish an interrupted run: the --out directory of that run (its settings and "
                        "traces are reused; finished traces are not run again)")
    r.add_argument("--run-budget", type=float, default=None, metavar="SECONDS",
                   help="bound the whole run: traces not started in time are recorded as skipped")
    r.add_argument("--no-shrink", action="store_true",
                   help="do not shrink divergent traces into regressions/")
    r.add_argument("--cold", action="store_true",
                   help="boot the guest cold instead of starting it from the ready guest (driver loaded) saved "
                        "in the cache by an earlier run; a cold boot saves it again")
    r.add_argument("--no-layout", action="store_true",
                   help="do not compare each resource map's whole layout after every step (compared by "
                        "default where the target can report it)")
    r.add_argument("--gate", metavar="DIR",
                   help="illumos-gate only: the illumos-gate checkout whose usr/src/uts/common/os/vmem.c and "
                        "rmap.c are built and run (default: $DDIH_ILLUMOS_GATE)")
    r.add_argument("--gate-debug", action="store_true",
                   help="illumos-gate only: build with DEBUG, so the sources' ASSERTs are live")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser("replay", help="rerun a recorded run (same traces, target and settings)",
                        description="Rerun the traces recorded in a run.json with the same target, "
                                    "driver mode and op budget; writes new reports.")
    rp.add_argument("run_json", metavar="RUN.json")
    rp.add_argument("--out", default="out/replay", help="directory for the new reports")
    rp.add_argument("--match", metavar="TEXT", help="only traces whose name contains TEXT")
    rp.add_argument("--accel", default="auto", choices=["auto", "kvm", "tcg"])
    rp.set_defaults(func=cmd_replay)

    im = sub.add_parser("image", help="build or fetch guest images",
                        description="`image build linux` assembles the Linux guest from Debian packages; "
                                    "`image fetch openindiana|omnios` downloads a cloud image with resume, "
                                    "verifies its sha256 and unpacks it into the cache.")
    im.add_argument("action", choices=["build", "fetch"])
    im.add_argument("name", choices=["linux", "openindiana", "omnios"], help="which image")
    im.add_argument("--rebuild", action="store_true", help="rebuild even if the cache is valid")
    im.set_defaults(func=cmd_image)

    dr = sub.add_parser("doctor", help="check what a target needs and say how to fix what is missing",
                        description="Check qemu, the accelerator, disk space, the cached and verified image "
                                    "and the provisioned base for a target.")
    dr.add_argument("--target", default="linux", choices=TARGET_NAMES)
    dr.set_defaults(func=cmd_doctor)

    rep = sub.add_parser("report", help="merge the reports of shards or machines; diff two runs",
                         description="`report merge RUN.json...` combines the run.json files of several "
                                     "runs (e.g. the shards of a CI matrix) into one run.json, junit.xml "
                                     "and report.html; exit status 1 if any run diverged. "
                                     "`report diff PREVIOUS.json CURRENT.json` says what changed: divergences "
                                     "new, fixed and still there (matched by trace, step and signature), "
                                     "departures that appeared or went, and what changed underneath (guest "
                                     "kernel, image, illumos-gate commit, accelerator, harness version, seed); "
                                     "exit status 1 only when something new diverged.")
    rep.add_argument("action", choices=["merge", "diff"])
    rep.add_argument("runs", nargs="+", metavar="RUN.json")
    rep.add_argument("--out", default="out/merged", help="merge: directory for the merged reports")
    fmt = rep.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true", help="diff: Markdown, for a CI job summary")
    fmt.add_argument("--json", action="store_true", help="diff: JSON, for scripts")
    rep.set_defaults(func=cmd_report)

    fz = sub.add_parser(
        "fuzz", help="send malformed and hostile requests straight at the driver",
        description="Boot a guest, load the driver with destructive=0 and run the static fuzzer guest/ddifuzz "
                    "(several processes and threads, a shared file, a kill storm) in chunks; scan the console "
                    "after each chunk, unload the driver at the end. Exit status 1 on any panic, warning, "
                    "unrefused malformed request, anomaly, leak or unclean unload.")
    fz.add_argument("--target", default="linux", choices=TARGET_NAMES,
                    help="which guest (default: linux; openindiana/omnios build the fuzzer in the guest; "
                         "illumos-gate has no driver to fuzz)")
    fz.add_argument("--ops", type=int, default=20000, help="requests to send (default 20000)")
    fz.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    fz.add_argument("--chunk", type=int, default=2000, help="requests per ddifuzz run (default 2000)")
    fz.add_argument("--workers", type=int, default=4, help="fuzzer processes (default 4)")
    fz.add_argument("--threads", type=int, default=2, help="threads per process (default 2)")
    fz.add_argument("--cpus", type=int, default=2, help="guest vCPUs (default 2)")
    fz.add_argument("--no-kill-storm", action="store_true", help="do not SIGKILL workers mid-flight")
    fz.add_argument("--pressure", type=int, default=0, metavar="N",
                    help="also probe memory exhaustion: up to N umem buffers of 64 MiB")
    fz.add_argument("--accel", default="auto", choices=["auto", "kvm", "tcg"])
    fz.add_argument("--out", default="out/fuzz", help="directory for guest logs (default: out/fuzz)")
    fz.add_argument("--json", metavar="FILE", help="write the report as JSON")
    fz.set_defaults(func=cmd_fuzz)

    t = sub.add_parser("traces", help="validate trace files and list them",
                       description="Load and validate traces without running them.")
    t.add_argument("traces", nargs="*", help="trace files or directories (default: the corpus)")
    t.set_defaults(func=cmd_traces)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
