"""The one interface every target implements, and the rules that classify what a guest did.

Callers (the runner, shrink, the CLI, the pytest plugin, bench, fuzz) use a
target only through ``Target``: they never probe for methods.  What differs
between targets is declared, not discovered:

    streaming     run_many() streams many traces per driver session; without
                  it run_many() runs them one at a time through run_trace()
    reloadable    reload() can change the driver's destructive mode (and
                  faults) on the same guest
    faults        the fault names the driver can inject on purpose
    unobservable  (op, field) pairs the driver cannot observe (the illumos
                  driver cannot see which kmem cache served a buffer)
    families      the op families it can run (harness/ops.py); a trace that
                  needs another is skipped, and the report says why
    reports_layout  it can report a resource map's whole layout after each
                  step (compared with the model's: the ``layout`` verdict)
    debug_kernel  True/False when the target knows whether its kernel is a
                  DEBUG build: a trace written for the other kind is skipped;
                  None when it cannot tell (a guest's kernel)

``DdictlTarget`` is a target driven through ddictl's line protocol
(``harness.session``); ``GuestTarget`` is one whose driver lives in a QEMU
guest reached over SSH.  ``DdictlTarget`` holds the classification rules,
once for every such target:

1. A trace runs as one ddictl batch.  A kernel that dies mid-batch can take
   the last results with it (they were still in the guest's buffers), so a
   batch that ends in a panic is run again on a fresh guest in lockstep,
   which pins the panic to its step.  Destructive runs on a guest use
   lockstep from the start: they expect panics, and each costs a guest
   (``lockstep_when_destructive``).
2. After the session, the console text since it started is scanned
   (``harness.panics``, the target's ``console_os``).  A fatal finding, or a
   guest no longer running, ends the trace with a ``panic`` result carrying
   the kernel's message and the console excerpt around it; a hang reported
   just before it was the op's thread dying, and is dropped.
3. Non-fatal findings (warnings) attach to the last step that ran.
4. A ``hang`` reported by ddictl (its per-op budget) is a result.  Where the
   hung thread can never be released (``hang_replaces_guest``: illumos
   ``cv_wait`` ignores signals) the guest is replaced before the next trace.
5. A session that broke without a hang or a panic (ddictl stopped answering,
   the channel failed) ends the trace with a ``hang`` whose note says why,
   and the guest is replaced.

Replacing a guest is ``replace_guest()``: ``restore()`` where a target keeps
a ready snapshot, else ``close()`` and ``boot()``.
"""

from __future__ import annotations

import abc
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

from harness import panics
from harness.protocol import ProtocolError
from harness.session import DdictlSession, SessionOutput
from harness.trace import Result, ResultKind, Trace

if TYPE_CHECKING:
    from harness.options import RunOptions

__all__ = ["TargetError", "Facts", "UnloadResult", "Target", "DdictlTarget", "GuestTarget", "Log"]

Log = Callable[[str], None]


class TargetError(Exception):
    """The target could not be prepared, booted or driven; the message says what to do."""


@dataclass
class Facts:
    """What every report header says about the run's target."""

    target: str = ""
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
    # seconds per stage of bringing the target up (image, build, boot, driver load, snapshot):
    # the first time each ran, so every later change is a measured ratio in one run
    phases: dict[str, float] = field(default_factory=dict)

    def phase(self, name: str, seconds: float) -> None:
        self.phases.setdefault(name, round(seconds, 3))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class UnloadResult:
    """The driver unloaded at the end of a run, and what it still held just before."""

    unloaded: bool
    outstanding: int  # objects the driver still held; -1 when it could not be read
    why: str = ""     # when not unloaded: what happened

    def describe(self) -> str:
        if self.unloaded and self.outstanding == 0:
            return f"ok, nothing outstanding ({self.why})" if self.why else "ok, nothing outstanding"
        if self.unloaded:
            return f"unloaded, but {self.outstanding} objects were still outstanding" \
                if self.outstanding > 0 else "unloaded (outstanding objects unknown)"
        return f"not unloaded: {self.why or 'unknown reason'}"


class Target(abc.ABC):
    """A place where the driver's routines run: a guest kernel, or the real code in-process."""

    name: str = ""
    model_name: str = ""
    os: str = ""
    streaming: ClassVar[bool] = False
    reloadable: ClassVar[bool] = False
    faults: ClassVar[frozenset[str]] = frozenset()
    unobservable: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    families: ClassVar[frozenset[str]] = frozenset({"rmap", "umem", "kmem"})
    debug_kernel: bool | None = None
    reports_layout: ClassVar[bool] = False  # can give a resource map's whole layout after each step
    layout: bool = False                    # this run asks for it (RunOptions.layout)
    facts: Facts
    destructive: bool = False

    @classmethod
    @abc.abstractmethod
    def from_options(cls, name: str, options: "RunOptions", workdir: Path, *, log: Log = lambda s: None,
                     progress=None) -> "Target":
        """The target registered as ``name``, set up as ``options`` say (harness.targets.make_target)."""

    # lifecycle
    @abc.abstractmethod
    def prepare(self) -> None:
        """Everything before a boot: images, builds.  Idempotent."""

    @abc.abstractmethod
    def boot(self) -> None:
        """Bring the target up with the driver loaded."""

    @abc.abstractmethod
    def close(self) -> None:
        """Tear everything down; safe to call twice."""

    @abc.abstractmethod
    def alive(self) -> bool:
        """The target can run the next trace without being replaced."""

    def replace_guest(self) -> None:
        """A dead or wedged target is replaced by a fresh one."""
        self.facts.guest_replacements += 1
        self.close()
        self.boot()

    def reload(self, fault: str | None = None, destructive: bool | None = None) -> None:
        """Load the driver again with other settings (only where ``reloadable``)."""
        raise TargetError(f"the {self.name} target cannot reload its driver")

    @abc.abstractmethod
    def unload(self) -> UnloadResult:
        """Unload the driver at the end of a run."""

    def outstanding(self) -> int:
        """Objects the driver holds right now."""
        raise TargetError(f"the {self.name} target cannot count outstanding objects")

    def guest_command(self, *argv: str, timeout: float = 60):
        """Run a command in the guest (``ssh.CommandResult``)."""
        raise TargetError(f"the {self.name} target has no guest to run commands in")

    # ops
    @abc.abstractmethod
    def run_trace(self, trace: Trace, budget_ms: int) -> list[Result]:
        """Observed results, one per executed step (fewer when the target dies)."""

    def run_many(self, traces: list[Trace], budget_ms: int) -> Iterator[tuple[Trace, list[Result]]]:
        """Yield (trace, observed results) for each trace, in order."""
        for t in traces:
            yield t, self.run_trace(t, budget_ms)


class DdictlTarget(Target):
    """A target driven through ddictl's line protocol (harness.session): the rules in the module doc.

    A subclass says how to start ddictl (``_open_channel`` + ``ddictl_command``)
    and where the kernel's console text comes from (``_console_new``).
    """

    console_os: ClassVar[str] = ""          # the panic recogniser to use (harness.panics)
    hang_replaces_guest: ClassVar[bool] = False
    # a guest that panics takes the kernel and its buffers with it: destructive runs go in
    # lockstep from the start; where a panic costs one process, they stream like any other
    lockstep_when_destructive: ClassVar[bool] = True
    death_grace_s: ClassVar[float] = 2.0    # how long a dying guest gets to exit before we look
    stream_chunk: ClassVar[int] = 100       # traces per ddictl session when streaming

    # ------------------------------------------------------------ what a subclass says
    @abc.abstractmethod
    def ddictl_command(self) -> str:
        """The command line that starts ddictl on the driver's device."""

    @abc.abstractmethod
    def _open_channel(self):
        """A new channel (harness.session.Channel) on which ddictl_command() will be started."""

    @abc.abstractmethod
    def _console_new(self) -> str:
        """The kernel's console text since the last call."""

    def panic_message(self, findings: list[panics.Finding]) -> str:
        """The panic text a result carries: the kernel's own words."""
        fatal = panics.first_fatal(findings)
        return fatal.title if fatal is not None else NO_MESSAGE

    def _dead(self) -> bool:
        """Polled by the session while it waits: the kernel stopped."""
        return False

    def _settle(self) -> None:
        """After trouble, give a dying kernel a moment, so alive() tells the truth."""

    def _retire(self) -> None:
        """The kernel died or is wedged: the next trace gets a new one."""
        self.close()

    def _ensure_up(self) -> None:
        if not self.alive():
            self.replace_guest()

    # ------------------------------------------------------------ ops
    def _session(self, budget_ms: int) -> DdictlSession:
        return DdictlSession(self._open_channel, self.ddictl_command(), budget_ms, self._dead,
                             layout=self.layout and self.reports_layout)

    def run_trace(self, trace: Trace, budget_ms: int) -> list[Result]:
        """Rule 1: a batch, rerun in lockstep on a fresh guest when it ends in a panic."""
        results = self._run(trace, budget_ms, lockstep=self.destructive and self.lockstep_when_destructive)
        if (results and results[-1].kind is ResultKind.PANIC
                and not (self.destructive and self.lockstep_when_destructive)
                and len(results) <= len(trace.steps)):
            again = self._run(trace, budget_ms, lockstep=True)
            if again and again[-1].kind is ResultKind.PANIC:
                return again
        return results

    def run_many(self, traces: list[Trace], budget_ms: int) -> Iterator[tuple[Trace, list[Result]]]:
        """Many traces per ddictl session (``streaming``); a trace that breaks the session is
        run again on its own (run_trace pins a panic to its step) and the rest go on in a
        new session.  Destructive runs on a guest go one trace at a time."""
        if not self.streaming or (self.destructive and self.lockstep_when_destructive):
            yield from super().run_many(traces, budget_ms)
            return
        pending = list(traces)
        session = self._session(budget_ms)  # its channel is opened anew for each chunk
        while pending:
            batch, pending = pending[:self.stream_chunk], pending[self.stream_chunk:]
            self._ensure_up()
            self._console_new()
            done = 0
            for out in self._checked(lambda: list(session.stream(batch)), batch[0]):
                done += 1
                if out.complete:
                    # a guest's console is not read per streamed trace (it is not in step with
                    # the results); a runner whose console shares the pipe has it in order
                    yield out.trace, (self.classify(out.trace, out, "") if out.console else out.results)
                else:
                    self._settle()
                    yield out.trace, self.run_trace(out.trace, budget_ms)
                    break
            pending = batch[done:] + pending

    def _checked(self, talk: Callable[[], list[SessionOutput]], trace: Trace) -> list[SessionOutput]:
        try:
            return talk()
        except ProtocolError as e:
            raise TargetError(f"trace {trace.name}: {e}") from None

    def _run(self, trace: Trace, budget_ms: int, lockstep: bool) -> list[Result]:
        self._ensure_up()
        self._console_new()
        session = self._session(budget_ms)
        [out] = self._checked(lambda: [session.lockstep(trace) if lockstep else session.batch(trace)], trace)
        if not out.complete or len(out.results) < len(trace.steps):
            self._settle()
        return self.classify(trace, out, self._console_new())

    def classify(self, trace: Trace, out: SessionOutput, console: str) -> list[Result]:
        """Rules 2-5 of the module doc: a session's output and the console -> the step results."""
        results = list(out.results)
        inline = [line for _, line in out.console]
        text = "\n".join(([console] if console else []) + inline)
        findings = panics.scan(text, self.console_os)
        fatal = panics.first_fatal(findings)
        if fatal is not None or not self.alive():
            if results and results[-1].kind is ResultKind.HANG:
                results.pop()  # the hang was the op's thread dying with the kernel
            results.append(Result(ResultKind.PANIC, message=self.panic_message(findings),
                                  excerpt=excerpt(text, fatal)))
            self._retire()
            return results
        if findings and results:
            for f in findings:
                # in-pipe console text comes just before the result of the op that printed it;
                # a guest's console is not in step with the results: the last step ran gets it
                at = out.console[f.line - 1][0] if not console and f.line <= len(out.console) else len(results) - 1
                r = results[min(at, len(results) - 1)]
                r.warnings = tuple(r.warnings) + (f.title,)
        if results and results[-1].kind is ResultKind.HANG:
            if self.hang_replaces_guest:
                self._retire()
        elif out.broke and len(results) < len(trace.steps):
            results.append(Result(ResultKind.HANG, note=out.broke))
            self._retire()
        return results


class GuestTarget(DdictlTarget):
    """A driver in a QEMU guest, reached over SSH: ``machine`` (console, QMP) and ``ssh``."""

    def __init__(self, workdir: Path, *, destructive: bool = False, accel: str = "auto",
                 log: Log = lambda s: None, progress=None) -> None:
        self.workdir = Path(workdir).resolve()
        self.destructive = destructive
        self.accel = accel
        self.log = log
        self.progress = progress
        self.machine = None
        self.ssh = None
        self._last_poll = 0.0

    @property
    def pauses_on_panic(self) -> bool:
        """QEMU pauses a panicking guest (kept for restore()) instead of exiting."""
        return False

    def restore(self) -> bool:
        """Replace the guest by a ready snapshot; False where there is none (then: boot)."""
        return False

    def replace_guest(self) -> None:
        self.facts.guest_replacements += 1
        if self.restore():
            return
        self.close()
        self.boot()

    def _retire(self) -> None:
        if not (self.pauses_on_panic and self.machine is not None and self.machine.panicked()):
            self.close()  # a paused guest is kept: restore() reuses its QEMU

    def alive(self) -> bool:
        m = self.machine
        return (m is not None and m.is_running() and self.ssh is not None
                and not (self.pauses_on_panic and m.panicked()))

    def close(self) -> None:
        if self.ssh is not None:
            try:
                self.ssh.close()
            except Exception:
                pass
            self.ssh = None
        if self.machine is not None:
            self._stop_machine(self.machine)
            self.machine = None

    def _stop_machine(self, machine) -> None:
        machine.shutdown(timeout=5)

    def guest_command(self, *argv: str, timeout: float = 60):
        from harness.ssh import quote

        if self.ssh is None:
            raise TargetError(f"the {self.name} guest is not up")
        return self.ssh.run(quote(*argv), timeout=timeout)

    # ------------------------------------------------------------ the session's plumbing
    def _open_channel(self):
        return self.ssh.open_channel(30)

    def _console_new(self) -> str:
        m = self.machine
        return m.console.new_text() if m is not None and m.console else ""

    def _dead(self) -> bool:
        """At most every 0.2 s: QEMU exited, or paused on a panic."""
        m = self.machine
        if m is None or not m.is_running():
            return True
        if not self.pauses_on_panic:
            return False
        now = time.monotonic()
        if now - self._last_poll < 0.2:
            return False
        self._last_poll = now
        return m.panicked()

    def _settle(self) -> None:
        m = self.machine
        if m is not None and m.is_running() and not m.panicked():
            m.wait_exit(self.death_grace_s)


NO_MESSAGE = "the guest died (QEMU exited) with no kernel message on the console"


def excerpt(console: str, fatal: panics.Finding | None, lines: int = 25) -> str | None:
    """The console lines around a fatal finding (the last lines when there is none)."""
    text = console.splitlines()
    if fatal is not None and getattr(fatal, "line", None) is not None:
        start = max(0, fatal.line - 2)
        text = text[start:start + lines]
    else:
        text = text[-lines:]
    return "\n".join(text) or None
