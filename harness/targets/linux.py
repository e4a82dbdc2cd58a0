"""The Linux target: a Debian kernel in QEMU running the Linux port of ddih.

Stages: build (or reuse) the guest image from Debian packages; build the
module against the image's headers and the static op runner on the host;
boot; upload both over SSH; insmod; run each trace as one ddictl batch over
SSH (results travel on the SSH channel, never the console); watch the
console for kernel trouble; replace the guest when it dies.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness import panics
from harness.conformance.traces import Trace
from harness.images import LinuxImage, build_linux_image
from harness.machine import Machine, MachineConfig
from harness.model.outcome import Result
from harness.protocol import ProtocolError, control_budget, decode, encode
from harness.targets.session import lockstep
from harness.ssh import quote

REPO = Path(__file__).resolve().parents[2]
GUEST_DIR = "/tmp/ddih"
Log = Callable[[str], None]


class TargetError(Exception):
    """The target could not be prepared or booted; the message says what to do."""


def _make(argv: list[str], what: str, cwd: Path | None = None) -> None:
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise TargetError(f"{what} failed (exit {p.returncode}): {' '.join(argv)}\n"
                          f"{(p.stdout + p.stderr)[-3000:]}")


def build_module(image: LinuxImage, build_dir: Path) -> Path:
    """Build kmod/linux/ddih.ko against the image's headers, out of tree."""
    src = build_dir / "kmod-linux"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for f in ("ddih.c", "Makefile"):
        shutil.copy2(REPO / "kmod" / "linux" / f, src / f)
    shutil.copy2(REPO / "kmod" / "ddih_ioctl.h", build_dir / "ddih_ioctl.h")
    _make(["make", "-s", "-C", str(image.headers_dir), f"M={src}", "modules"], "building the ddih module")
    ko = src / "ddih.ko"
    _make(["strip", "--strip-debug", str(ko)], "stripping ddih.ko")
    return ko


def build_ddictl(build_dir: Path) -> Path:
    """Build the static op runner guest/ddictl on the host, with guest/libddih."""
    out = build_dir / "ddictl"
    lib = REPO / "guest" / "libddih"
    _make(["gcc", "-O2", "-static", "-Wall", "-Werror", f"-I{REPO / 'kmod'}", f"-I{lib}", "-o", str(out),
           str(REPO / "guest" / "ddictl.c"), str(lib / "ddih.c"), "-lpthread"], "building guest/ddictl")
    return out


@dataclass
class Facts:
    """What every report header says about the run's guest."""

    target: str = "linux"
    accelerator: str = ""
    accelerator_reason: str = ""
    guest_kernel: str = ""
    guest_kernel_package: str = ""
    image_key: str = ""
    qemu_argv: list[str] = field(default_factory=list)
    boot_to_ready_s: float = 0.0
    driver_build_s: float = 0.0
    boots: int = 0
    guest_replacements: int = 0
    snapshot_s: float = 0.0  # savevm of the ready guest
    restores: int = 0  # guests replaced by loadvm of the ready snapshot
    restore_s: float = 0.0  # the last restore: loadvm + cont (the guest is back in its ready state)
    reconnect_s: float = 0.0  # then a new SSH connection (the old one died with the old state)
    ready_s: float = 0.0  # cold: QEMU start to driver loaded and SSH up
    restore_failures: int = 0  # restores that failed and fell back to a fresh boot


class LinuxTarget:
    name = "linux"
    model_name = "linux"
    os = "linux"

    def __init__(self, workdir: Path, destructive: bool = False, accel: str = "auto",
                 log: Log = lambda s: None, progress=None, fault: str = "", snapshots: bool = True) -> None:
        self.workdir = Path(workdir).resolve()  # kbuild needs an absolute M=
        self.destructive = destructive
        self.fault = fault  # faults the driver injects on purpose (kmod/linux/ddih.c)
        # snapshots: QEMU pauses a panicked guest instead of exiting, and the guest is
        # replaced by loadvm of the ready state (driver loaded) instead of a cold boot
        self.snapshots = snapshots
        self.accel = accel
        self.log = log
        self.progress = progress
        self.facts = Facts()
        self.image: LinuxImage | None = None
        self.machine: Machine | None = None
        self.ssh = None
        self.ko: Path | None = None
        self.ddictl: Path | None = None

    # ---------------------------------------------------------------- lifecycle

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log("guest image: building or reusing the cached Debian image")
        self.image = build_linux_image(progress=self.progress)
        self.facts.guest_kernel = self.image.kernel_release
        self.facts.guest_kernel_package = self.image.kernel_version
        self.facts.image_key = self.image.key
        t = time.monotonic()
        build = self.workdir / "build"
        build.mkdir(exist_ok=True)
        self.ko = build_module(self.image, build)
        self.ddictl = build_ddictl(build)
        self.facts.driver_build_s = round(time.monotonic() - t, 2)
        self.log(f"driver and ddictl built in {self.facts.driver_build_s} s")

    def boot(self) -> None:
        assert self.image and self.ko and self.ddictl, "prepare() first"
        self.facts.boots += 1
        cfg = MachineConfig.from_image(self.image, accel=self.accel,
                                       panic_action="pause" if self.snapshots else "exit-failure")
        m = Machine(cfg, log_dir=self.workdir / f"guest-{self.facts.boots}")
        self.machine = m
        t0 = time.monotonic()
        try:
            m.start()
            self.facts.boot_to_ready_s = round(m.wait_ready(), 2)
            self.facts.accelerator = m.accel or ""
            self.facts.accelerator_reason = getattr(m.accel_choice, "reason", "")
            self.facts.qemu_argv = m.argv
            self.ssh = m.ssh()
            self.ssh.run(f"mkdir -p {GUEST_DIR}", timeout=30)
            self.ssh.put(self.ko, f"{GUEST_DIR}/ddih.ko", 0o600)
            self.ssh.put(self.ddictl, f"{GUEST_DIR}/ddictl", 0o700)
            self.load_driver()
            self.facts.ready_s = round(time.monotonic() - t0, 2)
            m.console.new_text()  # boot noise is not a step's business
            self._save_ready()
        except Exception:
            self.close()
            raise
        self.log(f"guest up in {self.facts.boot_to_ready_s} s ({self.facts.accelerator}), driver loaded")

    def _save_ready(self) -> None:
        if self.snapshots and self.machine:
            self.facts.snapshot_s = round(self.machine.savevm("ready"), 3)

    def restore(self) -> bool:
        """Replace the guest by the ready snapshot; False if that failed (counted)."""
        m = self.machine
        if not (self.snapshots and m and m.is_running()):
            return False
        t = time.monotonic()
        try:
            if self.ssh is not None:
                self.ssh.close()
                self.ssh = None
            m.loadvm("ready")
            m.qmp_cmd("cont")
            self.facts.restore_s = round(time.monotonic() - t, 3)
            m.console.new_text()
            self.ssh = m.ssh()
            self.facts.reconnect_s = round(time.monotonic() - t - self.facts.restore_s, 3)
        except Exception as e:  # a failed restore is not fatal: boot afresh
            self.facts.restore_failures += 1
            self.log(f"snapshot restore failed ({e}); booting a fresh guest")
            return False
        self.facts.restores += 1
        return True

    def _retire(self) -> None:
        """The guest died: keep a paused QEMU for restore(), drop anything else."""
        if not (self.snapshots and self.machine and self.machine.panicked()):
            self.close()

    def load_driver(self) -> None:
        args = [f"{GUEST_DIR}/ddih.ko", f"destructive={int(self.destructive)}"]
        if self.fault:
            args.append(f"fault={self.fault}")
        r = self.ssh.run("insmod " + quote(*args), timeout=60)
        if r.status != 0:
            raise TargetError(f"insmod ddih.ko failed: {r.stderr.strip()}")

    def reload(self, fault: str | None = None, destructive: bool | None = None) -> None:
        """rmmod and insmod again with other parameters, on the same guest."""
        if fault is not None:
            self.fault = fault
        if destructive is not None:
            self.destructive = destructive
        if not self.alive():
            self.replace_guest()
            return
        r = self.ssh.run("rmmod ddih", timeout=60)
        if r.status != 0:
            raise TargetError(f"rmmod ddih failed: {r.stderr.strip()}")
        self.load_driver()
        self._save_ready()  # the ready state now has the new parameters

    def replace_guest(self) -> None:
        """A dead or wedged guest is replaced: by the ready snapshot, else a fresh boot."""
        self.facts.guest_replacements += 1
        if self.restore():
            return
        self.close()
        self.boot()

    def close(self) -> None:
        if self.ssh is not None:
            try:
                self.ssh.close()
            except Exception:
                pass
            self.ssh = None
        if self.machine is not None:
            self.machine.shutdown(timeout=5)
            self.machine = None

    # ---------------------------------------------------------------- ops

    def alive(self) -> bool:
        return (self.machine is not None and self.machine.is_running() and self.ssh is not None
                and not (self.snapshots and self.machine.panicked()))

    def run_trace(self, trace: Trace, budget_ms: int) -> list[Result]:
        """Observed results, one per executed step (fewer when the guest dies).

        Normally the whole trace goes to ddictl as one batch.  A guest that
        dies mid-batch can take the last results with it (they were still in
        the guest's SSH buffers), so then the trace is run again on a fresh
        guest in lockstep, one op per round trip, which pins the panic to its
        step.  Destructive runs use lockstep from the start.
        """
        results = self._run(trace, budget_ms, lockstep=self.destructive)
        if results and results[-1].kind == "panic" and not self.destructive \
                and len(results) <= len(trace.steps) and results[-1].note != "lockstep":
            again = self._run(trace, budget_ms, lockstep=True)
            if again and again[-1].kind == "panic":
                return again
        return results

    def run_many(self, traces: list[Trace], budget_ms: int, chunk: int = 100):
        """Yield (trace, observed results) for many traces, streamed through one ddictl per chunk.

        The traces of a chunk go to one ddictl process separated by `reset`
        (close and reopen the device: fresh driver state per trace) and the
        results are read as they come, so the caller checks one trace while
        the guest already executes the next.  A trace that hangs or kills
        the guest ends the session; it is run again on its own (run_trace
        pins a panic to its step) and the rest continue in a new session.
        """
        pending = list(traces)
        while pending:
            batch, pending = pending[:chunk], pending[chunk:]
            done = 0
            for trace, results, complete in self._stream(batch, budget_ms):
                done += 1
                if complete:
                    yield trace, results
                else:  # the session broke inside this trace: redo it alone, then go on
                    yield trace, self.run_trace(trace, budget_ms)
                    break
            pending = batch[done:] + pending

    def _stream(self, batch: list[Trace], budget_ms: int):
        if not self.alive():
            self.replace_guest()
        assert self.machine and self.ssh
        lines = [control_budget(budget_ms)]
        for t in batch:
            lines += [encode(s) for s in t.steps] + ["reset"]
        self.machine.console.new_text()
        chan = self.ssh.open_channel(30)
        chan.exec_command(f"{GUEST_DIR}/ddictl")
        data = ("\n".join(lines) + "\n").encode()

        def feed() -> None:  # a writer thread: the guest's output must be read meanwhile
            try:
                chan.sendall(data)
                chan.shutdown_write()
            except Exception:
                pass

        import threading

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        chan.settimeout(0.2)
        buf, idx, results = b"", 0, []
        per_op = budget_ms / 1000 + 10
        last = time.monotonic()
        try:
            while idx < len(batch):
                trace = batch[idx]
                while b"\n" in buf and len(results) < len(trace.steps):
                    line, buf = buf.split(b"\n", 1)
                    try:
                        results.append(decode(line.decode(errors="replace")))
                    except ProtocolError:
                        continue
                    if results[-1].kind == "hang":
                        results[-1].note = results[-1].note or \
                            f"killed after {budget_ms / 1000:g} s in step {len(results)}"
                        yield trace, results, True
                        return  # ddictl exits after a hang; the caller starts a new session
                if len(results) == len(trace.steps):
                    yield trace, results, True
                    idx, results = idx + 1, []
                    continue
                try:
                    got = chan.recv(65536)
                except TimeoutError:
                    got = None
                if got:
                    buf += got
                    last = time.monotonic()
                elif got == b"" or chan.closed or (got is None and (
                        time.monotonic() - last > per_op or self._paused_by_panic())):
                    self._after_break()
                    yield trace, results, False
                    return
        finally:
            # let ddictl exit before the channel goes: dropbear keeps a channel whose
            # process is still running, and runs out of them after a few dozen
            end = time.monotonic() + 5
            while (not chan.exit_status_ready() and not chan.closed and time.monotonic() < end
                   and self.machine is not None and self.machine.is_running()
                   and not self._paused_by_panic()):
                time.sleep(0.005)
            chan.close()
            writer.join(timeout=5)

    def _paused_by_panic(self) -> bool:
        """Polled while waiting for results (at most every 0.2 s): a paused guest never sends EOF."""
        if not self.snapshots or self.machine is None:
            return False
        now = time.monotonic()
        if now - getattr(self, "_last_poll", 0.0) < 0.2:
            return False
        self._last_poll = now
        return self.machine.panicked()

    def _after_break(self) -> None:
        """A session broke: if the guest is dying, give QEMU a moment to exit (or pause), so that
        alive() tells the truth and the next run replaces it."""
        assert self.machine
        if self.machine.is_running() and not self.machine.panicked():
            self.machine.wait_exit(2.0)

    def _run(self, trace: Trace, budget_ms: int, lockstep: bool) -> list[Result]:
        if not self.alive():
            self.replace_guest()
        assert self.machine and self.ssh
        try:
            lines = [encode(s) for s in trace.steps]
        except ProtocolError as e:
            raise TargetError(f"trace {trace.name}: {e}") from None
        self.machine.console.new_text()
        results: list[Result] = []
        if lockstep:
            out, died = self._lockstep(lines, budget_ms)
            for line in out.splitlines():
                try:
                    results.append(decode(line))
                except ProtocolError:
                    continue
        else:
            died = None
            for _, got, complete in self._stream([trace], budget_ms):
                results = got
                died = None if complete else "the ddictl session broke"
        if results and results[-1].kind == "hang" and not results[-1].note:
            results[-1].note = f"killed after {budget_ms / 1000:g} s in step {len(results)}"
        console = self._console_after(died is not None or len(results) < len(trace.steps))
        findings = panics.scan(console, "linux")
        fatal = panics.first_fatal(findings)
        if fatal is not None or not self.alive():
            if results and results[-1].kind == "hang":
                results.pop()  # the hang was the worker thread dying in a BUG
            results.append(Result("panic", message=_fatal_message(findings),
                                  note="lockstep" if lockstep else _excerpt(console, fatal)))
            self._retire()
        elif findings and results:
            last = results[-1]
            last.warnings = tuple(last.warnings) + tuple(f.title for f in findings)
        elif died and len(results) < len(trace.steps):
            results.append(Result("hang", note=died))
            self._retire()
        return results

    def _lockstep(self, lines: list[str], budget_ms: int) -> tuple[str, str | None]:
        return lockstep(self.ssh, f"{GUEST_DIR}/ddictl", lines, budget_ms, self._paused_by_panic)

    def _console_after(self, trouble: bool) -> str:
        """Console text since the batch started; after trouble wait briefly for QEMU to exit."""
        assert self.machine
        if trouble and self.machine.is_running() and not self.machine.panicked():
            self.machine.wait_exit(2.0)
        text = self.machine.console.new_text() if self.machine.console else ""
        return text

    def outstanding(self) -> int:
        assert self.ssh
        r = self.ssh.run("cat /sys/module/ddih/parameters/outstanding", timeout=30)
        return int(r.stdout.strip())

    def unload(self) -> tuple[bool, int]:
        """rmmod the driver; (unloaded, objects outstanding before)."""
        if not self.alive() or self.ssh is None:
            return False, -1
        left = self.outstanding()
        r = self.ssh.run("rmmod ddih", timeout=60)
        return r.status == 0, left

    def guest_command(self, *argv: str, timeout: float = 60):
        assert self.ssh
        return self.ssh.run(quote(*argv), timeout=timeout)


def _fatal_message(findings: list) -> str:
    """The root cause first (``kernel BUG at ...``), then the panic line it led to."""
    first = panics.first_fatal(findings)
    final = panics.panic_message(findings)
    if first is None:
        return "the guest died (QEMU exited) with no kernel message on the console"
    if final and final != first.title and final not in first.title:
        return f"{first.title} / {final}"
    return first.title


def _excerpt(console: str, fatal) -> str:
    lines = console.splitlines()
    if fatal is not None and getattr(fatal, "line", None) is not None:
        start = max(0, fatal.line - 2)
        return "\n".join(lines[start:start + 25])
    return "\n".join(lines[-25:])
