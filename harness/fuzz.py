"""`ddi-harness fuzz`: malformed and hostile requests straight at the driver.

The Linux guest is brought up as for a conformance run (driver loaded with
``destructive=0``), the static fuzzer ``guest/ddifuzz`` is built on the host
and uploaded, and run over SSH in chunks of requests.  Every chunk is a fresh
ddifuzz process tree (several worker processes, each with several threads,
sharing one open file of the device and passing handles through shared
memory), so after each chunk every file of the driver is closed and
``/sys/module/ddih/parameters/outstanding`` must read 0.  After each chunk the
console is scanned for panics, oopses, BUGs and warnings (any finding fails
the run and is kept with its console excerpt); a guest that died is recorded
and replaced by a fresh one.  At the end the driver is unloaded (rmmod must
succeed with nothing outstanding).

ddifuzz classifies every request before sending it (see guest/ddifuzz.c):
malformed ones must be refused with an errno, absurd sizes must be declined
(NULL, or EINTR when it interrupts a sleep that can never end), valid ones
must succeed and match its exact model of its own file, contended ones (on
the shared file) may go either way but must keep invariants.

On illumos (``--target openindiana`` or ``omnios``) the guest is brought up
by IllumosTarget (driver built with kmod/illumos/Makefile and added with
add_drv, ``destructive`` off), ``guest/ddifuzz.c`` is uploaded beside the
driver sources and built in the guest with the same Makefile (``gmake
ddifuzz``, the system libc: no static host build), and run with ``-d`` the
device node the target found.  Between chunks the ``ddih:0:objects`` kstat
must read 0; at the end the driver is removed with rem_drv.  ddifuzz built
on illumos leaves out what the illumos driver passes to a sleep that never
ends and the Linux-only caps (see guest/ddifuzz.c).  illumos-gate has no
guest and no driver: there is nothing to fuzz there.

The run passes (exit 0) only with 0 panics, 0 warnings, a clean unload,
every malformed request refused, no absurd request accepted, no anomaly
(valid request failing, model or invariant broken), no leak between chunks
and no hang.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness import panics
from harness.resources import GUEST, KMOD

GUEST_DIR = "/tmp/ddih"
Log = Callable[[str], None]
Progress = Callable[[str, int, int], None]

# counters of ddifuzz's final line that are summed over chunks
COUNTERS = (
    "sent", "results", "ok", "refused", "malformed", "malformed_refused", "unrefused", "wrong_errno",
    "valid", "valid_ok", "valid_failed", "absurd", "absurd_declined", "absurd_accepted",
    "contended", "contended_ok", "contended_refused", "anomalies", "efault_side_effects",
    "mmaps", "coherence_checks", "cap_probes", "kills", "wait_interrupts",
)
DETAIL_PREFIXES = ("UNREFUSED", "WRONGERRNO", "ANOMALY", "ACCEPTED", "NOTE", "HANG")

ILLUMOS_TARGETS = ("openindiana", "omnios")
FUZZ_TARGETS = ("linux", *ILLUMOS_TARGETS)


def unsupported(target_name: str) -> str | None:
    """Why ``fuzz`` cannot run on ``target_name`` (naming the fix), or None when it can."""
    if target_name in FUZZ_TARGETS:
        return None
    if target_name == "illumos-gate":
        return ("fuzz: the illumos-gate target has no guest and no driver (it runs vmem.c and rmap.c "
                "in a user-space process), so there is no device to send ioctls to; fuzz the illumos "
                "driver in a guest instead: --target openindiana or --target omnios")
    return f"fuzz: target {target_name!r} is not supported: choose one of {', '.join(FUZZ_TARGETS)}"


def illumos_fuzz_commands(src_dir: str = GUEST_DIR) -> list[tuple[str, ...]]:
    """The guest commands that build ddifuzz on illumos (after ``ddifuzz.c`` is uploaded)."""
    return [("gmake", "-C", f"{src_dir}/kmod/illumos", "ddifuzz")]


def build_ddifuzz(build_dir: Path) -> Path:
    """Build the static fuzzer guest/ddifuzz on the host."""
    from harness.targets.linux import _make

    out = build_dir / "ddifuzz"
    _make(["gcc", "-O2", "-static", "-Wall", "-Werror", f"-I{KMOD}", "-o", str(out),
           str(GUEST / "ddifuzz.c"), "-lpthread"], "building guest/ddifuzz")
    return out


def parse_output(text: str) -> tuple[dict | None, list[str]]:
    """ddifuzz stdout -> (counters incl. by_errno, detail lines); counters None if the line is missing."""
    details = [l.strip() for l in text.splitlines() if l.startswith(DETAIL_PREFIXES)]
    counters = None
    for line in text.splitlines():
        if not line.startswith("ddifuzz "):
            continue
        counters = {}
        for tok in line.split()[1:]:
            k, _, v = tok.partition("=")
            if k == "by_errno":
                counters[k] = {n: int(c) for n, _, c in (p.partition(":") for p in v.split(",") if p)}
            elif re.fullmatch(r"-?\d+", v):
                counters[k] = int(v)
            else:
                counters[k] = v
    return counters, details


@dataclass
class Finding:
    chunk: int
    kind: str
    title: str
    excerpt: str


@dataclass
class FuzzReport:
    target: str
    ops: int
    seed: int
    workers: int
    threads: int
    cpus: int
    chunk_size: int
    kill_storm: bool
    pressure: int = 0
    chunks: int = 0
    counters: dict = field(default_factory=lambda: {k: 0 for k in COUNTERS})
    by_errno: dict = field(default_factory=dict)
    panics: int = 0
    warnings: int = 0
    findings: list = field(default_factory=list)        # Finding as dicts
    guest_deaths: list = field(default_factory=list)    # {"chunk", "reason"}
    hangs: list = field(default_factory=list)           # {"chunk", "reason"}
    leaks: list = field(default_factory=list)           # {"chunk", "outstanding"}
    details: list = field(default_factory=list)         # ddifuzz detail lines (capped)
    unloaded: bool = False
    outstanding_at_unload: int = -1
    seconds: float = 0.0
    fuzz_seconds: float = 0.0
    facts: dict = field(default_factory=dict)
    error: str = ""

    # ------------------------------------------------------------ verdict

    @property
    def sent(self) -> int:
        return self.counters["sent"]

    @property
    def refused(self) -> int:
        return self.counters["refused"]

    @property
    def all_malformed_refused(self) -> bool:
        return self.counters["malformed_refused"] == self.counters["malformed"] and \
            self.counters["unrefused"] == 0

    @property
    def unload_clean(self) -> bool:
        return self.unloaded and self.outstanding_at_unload == 0

    def failures(self) -> list[str]:
        c = self.counters
        out = []
        if self.error:
            out.append(self.error)
        if self.panics:
            out.append(f"{self.panics} panics")
        if self.warnings:
            out.append(f"{self.warnings} warnings")
        if not self.all_malformed_refused:
            out.append(f"{c['unrefused']} malformed requests not refused")
        if c["absurd_accepted"]:
            out.append(f"{c['absurd_accepted']} absurd requests accepted")
        if c["anomalies"]:
            out.append(f"{c['anomalies']} anomalies")
        if self.leaks:
            out.append(f"objects outstanding after {len(self.leaks)} chunks")
        if self.hangs:
            out.append(f"{len(self.hangs)} hangs")
        if not self.unload_clean:
            out.append(f"unload not clean (unloaded={self.unloaded}, outstanding={self.outstanding_at_unload})")
        if c["sent"] < self.ops and not self.error:
            out.append(f"only {c['sent']} of {self.ops} requests sent")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def summary_line(self) -> str:
        return f"{self.sent} requests, {self.refused} refused, {self.panics} panics, {self.warnings} warnings"

    def detail_lines(self) -> list[str]:
        c = self.counters
        return [
            f"malformed {c['malformed']}: {c['malformed_refused']} refused, {c['unrefused']} not refused"
            f" ({c['wrong_errno']} with another errno than expected)",
            f"valid {c['valid']}: {c['valid_ok']} ok, {c['valid_failed']} failed; "
            f"absurd {c['absurd']}: {c['absurd_declined']} declined, {c['absurd_accepted']} accepted; "
            f"contended {c['contended']}: {c['contended_ok']} ok, {c['contended_refused']} refused",
            f"anomalies {c['anomalies']}, EFAULT-with-side-effect {c['efault_side_effects']}, "
            f"mmaps {c['mmaps']}, coherence checks {c['coherence_checks']}, chunk-cap probes "
            f"{c['cap_probes']}, workers killed {c['kills']}, sleeps interrupted {c['wait_interrupts']}",
            "errnos: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_errno.items(), key=lambda kv: -kv[1])),
            f"driver unload: {'ok, nothing outstanding' if self.unload_clean else 'NOT clean'}"
            f" (unloaded={self.unloaded}, outstanding={self.outstanding_at_unload}); "
            f"{self.chunks} chunks, {len(self.guest_deaths)} guest deaths, "
            f"{self.facts.get('boots', 0)} boots; {self.seconds:.1f} s "
            f"({self.fuzz_seconds:.1f} s fuzzing, {self.sent / self.fuzz_seconds if self.fuzz_seconds else 0:.0f} req/s)",
        ]

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(summary=self.summary_line(), passed=self.passed, failures=self.failures())
        return d


# ---------------------------------------------------------------- the run

def fuzz(target_name: str, ops: int, seed: int, workdir: Path, log: Log = lambda s: None,
         progress: Progress | None = None, *, chunk: int = 2000, workers: int = 4, threads: int = 2,
         kill_storm: bool = True, cpus: int = 2, accel: str = "auto", cap_probe: bool | None = None,
         pressure: int = 0, target=None) -> FuzzReport:
    """Fuzz the driver of ``target_name`` with ``ops`` requests; see the module docstring.

    ``pressure`` > 0 adds ddifuzz's memory-pressure probe to the first chunk (up
    to N umem buffers of 64 MiB, then rmap chunks of 2^24 units): the driver has no
    aggregate cap, so this currently ends in the OOM killer (a warning).
    ``progress(stage, done, total)`` is called for the image build stages and with
    stage "fuzz" after each chunk.  ``target`` lets a caller pass an already
    prepared target (tests); it is booted if needed and closed at the end.
    """
    why = unsupported(target_name)
    if why:
        raise ValueError(why)
    illumos = target_name in ILLUMOS_TARGETS
    from harness.options import RunOptions
    from harness.targets import make_target

    t0 = time.monotonic()
    workdir = Path(workdir)
    report = FuzzReport(target=target_name, ops=ops, seed=seed, workers=workers, threads=threads, cpus=cpus,
                        chunk_size=chunk, kill_storm=kill_storm, pressure=pressure)
    image_progress = progress or (lambda stage, done, total: None)
    if target is None:
        target = make_target(target_name, RunOptions(target=target_name, accel=accel), workdir, log=log,
                             progress=image_progress)
    if cap_probe is None:
        cap_probe = ops >= 10000
    if illumos:
        cap_probe = False     # the 4096-chunks-per-map cap is the Linux port's
    try:
        if target.image is None:
            target.prepare()
        if not illumos and cpus and target.image.cpus != cpus:
            # concurrency needs more than one vCPU; the image's default is 1
            # (illumos guests: the manifest's cpus, 2 by default)
            target.image = dataclasses.replace(target.image, cpus=cpus)
        # Linux: a static binary built on the host; illumos: built in the guest (_upload)
        fuzzer = None if illumos else build_ddifuzz(Path(target.workdir) / "build")
        if not target.alive():
            target.boot()
        _upload(target, fuzzer)
        report.facts["guest_kernel"] = target.facts.guest_kernel
        report.facts["accelerator"] = target.facts.accelerator
        vcpus, memory = _guest_shape(target)
        report.facts["guest_cpus"] = vcpus
        report.facts["guest_memory"] = memory
        log(f"fuzzing: {ops} requests, seed {seed}, chunks of {chunk}, {workers} processes x "
            f"{threads} threads, {vcpus} vCPUs ({target.facts.accelerator})")
        tf = time.monotonic()
        done, i = 0, 0
        if progress:
            progress("fuzz", 0, ops)
        while done < ops:
            n = min(chunk if not (cap_probe and i == 0) else max(chunk, 6000), ops - done)
            _run_chunk(target, report, i, n, seed, workers, threads, kill_storm, cap_probe and i == 0, fuzzer, log,
                       pressure if i == 0 else 0)
            done += n
            i += 1
            if progress:
                progress("fuzz", done, ops)
        report.chunks = i
        report.fuzz_seconds = round(time.monotonic() - tf, 2)
        if not target.alive():
            target.replace_guest()
            _upload(target, fuzzer)
        u = target.unload()
        report.unloaded, report.outstanding_at_unload = u.unloaded, u.outstanding
        # rmmod may have printed something (a leak warning, a BUG on unload)
        tail = target.machine.console.new_text() if target.machine else ""
        _scan(report, tail, i, _console_os(target))
    except Exception as e:  # a target that cannot come up: the report says why
        report.error = f"{type(e).__name__}: {e}"
        log(f"fuzz: {report.error}")
    finally:
        report.facts["boots"] = target.facts.boots
        report.facts["guest_replacements"] = target.facts.guest_replacements
        report.facts["boot_to_ready_s"] = target.facts.boot_to_ready_s
        try:
            target.close()
        except Exception:
            pass
    report.seconds = round(time.monotonic() - t0, 2)
    return report


def _upload(target, fuzzer: Path | None) -> None:
    """Put ddifuzz in the (fresh) guest: the host build (Linux), or build it there (illumos, fuzzer None)."""
    from harness.targets.base import TargetError

    if fuzzer is not None:
        target.ssh.put(fuzzer, f"{GUEST_DIR}/ddifuzz", 0o700)
        return
    # IllumosTarget.boot() uploaded kmod/illumos (its Makefile) and kmod/ddih_ioctl.h to GUEST_DIR
    target.ssh.put(GUEST / "ddifuzz.c", f"{GUEST_DIR}/guest/ddifuzz.c", 0o644)
    for argv in illumos_fuzz_commands():
        r = target.guest_command(*argv, timeout=300)
        if r.status != 0:
            raise TargetError(f"building guest/ddifuzz in the guest failed (exit {r.status}): "
                              f"{' '.join(argv)}\n{(r.stdout + r.stderr)[-3000:]}")


def _fuzzer_argv(target) -> str:
    """The guest path of ddifuzz and, on illumos, the device node the target found."""
    from harness.ssh import quote

    if getattr(target, "console_os", "linux") == "illumos":
        return f"{GUEST_DIR}/kmod/illumos/ddifuzz -d {quote(target.device)}"
    return f"{GUEST_DIR}/ddifuzz"


def _console_os(target) -> str:
    return getattr(target, "console_os", "") or "linux"


def _guest_shape(target) -> tuple[int, str]:
    """(vCPUs, memory) of the guest as booted."""
    image = getattr(target, "image", None)
    if hasattr(image, "cpus"):           # a LinuxImage
        return image.cpus, image.memory
    cfg = getattr(getattr(target, "machine", None), "config", None)   # illumos: the manifest's
    return (cfg.cpus, cfg.memory) if cfg is not None else (0, "")


_OOM = re.compile(r"(?:\[\s*\d+\.\d+\]\s*)?(Out of memory: Killed process \d+ \((?P<comm>[^)]*)\)"
                  r"|(?P<who>\S+) invoked oom-killer)")


def _oom_findings(console: str) -> list:
    """OOM-killer reports (panics.py does not know them): each kill counts as a warning."""
    out = []
    lines = console.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(lines):
        m = _OOM.search(line)
        if m and m.group("comm") is not None:
            start = max(0, i - 2)
            excerpt = "\n".join(lines[start:i + 1])
            for j in range(i, max(-1, i - 400), -1):   # the allocation that invoked it
                if "invoked oom-killer" in lines[j]:
                    excerpt = "\n".join(lines[j:j + 12] + ["..."] + lines[i:i + 1])
                    break
            out.append(panics.Finding("warning", f"Out of memory: Killed process ({m.group('comm')})", i + 1,
                                      excerpt))
    return out


def _scan(report: FuzzReport, console: str, chunk: int, os: str = "linux") -> list:
    findings = panics.scan(console, os) + (_oom_findings(console) if os == "linux" else [])
    for f in findings:
        if f.kind in panics.FATAL_KINDS:
            report.panics += 1
        elif f.kind == "warning":
            report.warnings += 1
        else:
            continue
        report.findings.append(dataclasses.asdict(Finding(chunk, f.kind, f.title, f.excerpt)))
    return findings


def _run_chunk(target, report: FuzzReport, i: int, n: int, seed: int, workers: int, threads: int,
               kill_storm: bool, cap: bool, fuzzer: Path | None, log: Log, pressure: int = 0) -> None:
    from harness.ssh import SSHError

    if not target.alive():
        target.replace_guest()
        _upload(target, fuzzer)
    target.machine.console.new_text()
    cseed = seed * 1_000_003 + i
    argv = f"{_fuzzer_argv(target)} -n {n} -s {cseed} -w {workers} -t {threads}" + \
        (" -k" if kill_storm else "") + (" -c" if cap else "") + (f" -m {pressure}" if pressure else "")
    timeout = 120 + n * 0.1 if _console_os(target) == "linux" else 300 + n * 0.3
    out, trouble = "", None
    try:
        r = target.ssh.run(argv, timeout=timeout)
        out = r.stdout
        if r.status != 0:
            trouble = f"ddifuzz exited with status {r.status}: {r.stderr.strip()[-300:]}"
    except SSHError as e:
        out = getattr(e, "stdout", "") or ""
        trouble = f"the SSH command failed: {e}"
    counters, details = parse_output(out)
    if trouble is None and counters is None:
        trouble = "ddifuzz printed no counters"
    if trouble and target.machine and target.machine.is_running():
        target.machine.wait_exit(2.0)
    console = target.machine.console.new_text() if target.machine and target.machine.console else ""
    findings = _scan(report, console, i, _console_os(target))
    fatal = panics.first_fatal(findings)
    if counters:
        for k in COUNTERS:
            report.counters[k] += int(counters.get(k, 0))
        for k, v in counters.get("by_errno", {}).items():
            report.by_errno[k] = report.by_errno.get(k, 0) + v
    for d in details:
        if len(report.details) < 200:
            report.details.append(f"chunk {i}: {d}")
        if d.startswith("HANG"):
            report.hangs.append({"chunk": i, "reason": d})
    oom = any(f.title.startswith("Out of memory") for f in findings)
    if fatal is not None or not target.alive() or (trouble and oom):
        reason = fatal.title if fatal else "the OOM killer ended the run" if oom and target.alive() \
            else (trouble or "the guest died")
        if fatal is None and not oom:
            report.panics += 1   # QEMU gone without a message: count it as a panic
            report.findings.append(dataclasses.asdict(Finding(i, "panic", "the guest died", console[-3000:])))
        report.guest_deaths.append({"chunk": i, "reason": reason, "command": argv})
        log(f"chunk {i}: the guest died ({reason}); booting a fresh one")
        target.replace_guest()
        _upload(target, fuzzer)
        return
    for f in findings:
        log(f"chunk {i}: {f.kind}: {f.title}")
    if trouble:
        report.hangs.append({"chunk": i, "reason": trouble, "command": argv})
        log(f"chunk {i}: {trouble}; replacing the guest")
        target.replace_guest()
        _upload(target, fuzzer)
        return
    left = counters.get("outstanding_after")
    try:
        left = target.outstanding()
    except Exception:
        pass
    if left != 0:
        report.leaks.append({"chunk": i, "outstanding": left, "command": argv})
        log(f"chunk {i}: {left} objects outstanding after every file closed")


# ---------------------------------------------------------------- command

def fuzz_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    log = lambda s: console.print(f"[dim]{escape(s)}[/dim]")  # noqa: E731
    if args.ops < 1:
        print("error: --ops must be at least 1", file=sys.stderr)
        return 2
    why = unsupported(args.target)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    out = Path(args.out)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            name = "fuzz: requests" if stage == "fuzz" else f"image: {stage}"
            if stage not in tasks:
                tasks[stage] = bar.add_task(name, total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None)

        report = fuzz(args.target, args.ops, args.seed, out / "work", log, progress,
                      chunk=args.chunk, workers=args.workers, threads=args.threads,
                      kill_storm=not args.no_kill_storm, cpus=args.cpus, accel=args.accel,
                      pressure=args.pressure)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.to_json(), indent=1, default=str) + "\n")
    print(report.summary_line())
    for line in report.detail_lines():
        print("  " + line)
    for f in report.findings[:10]:
        print(f"  chunk {f['chunk']}: {f['kind']}: {f['title']}")
        for l in f["excerpt"].splitlines()[:12]:
            print("    | " + l)
    for d in report.details[:30]:
        if not d.split(": ", 1)[-1].startswith("NOTE"):
            print("  " + d)
    for leak in report.leaks[:5]:
        print(f"  chunk {leak['chunk']}: {leak['outstanding']} objects outstanding after every file closed")
    for h in report.hangs[:5]:
        print(f"  chunk {h['chunk']}: {h['reason']}")
    if report.error and report.sent == 0:
        print(f"error: {report.error}", file=sys.stderr)
        return 2
    if not report.passed:
        print("FAILED: " + "; ".join(report.failures()))
        return 1
    return 0
