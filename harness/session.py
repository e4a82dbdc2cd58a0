"""One conversation with guest/ddictl: the driver-session stage of DESIGN.md's flow.

ddictl reads op lines (``harness.protocol.encode``) on stdin and answers each
with one result line.  A target hands this module a way to start ddictl (an
SSH channel today; anything with the same few methods tomorrow) and gets back
typed output: the results decoded so far and, when the conversation ended
early, why.  It knows nothing of panics or consoles: deciding what an early
end *means* (a panic, a hang, a dead guest) is the target's classification.

Three ways to talk, one implementation each:

``stream(traces)``
    Many traces through one ddictl process, separated by ``reset`` (close and
    reopen the device: fresh driver state per trace).  The input goes out from
    a writer thread while results are read as they come, so the caller checks
    one trace while the guest runs the next; ddictl flushes only when it would
    wait for input, so a batch leaves the guest in a few large writes.  Yields
    one ``SessionOutput`` per trace and stops after the first that did not
    complete (ddictl exits after a hang; a dead guest ends everything).
``batch(trace)``
    ``stream`` of one trace.
``lockstep(trace)``
    One op per round trip: nothing is in flight when the guest dies, so a
    panic is pinned to its step even when the guest's buffers die with it.

A hang that ddictl reports itself (``kind=hang``: its per-op budget ran out)
is a result, not a break; its note says where the budget ran out.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

from harness.protocol import CONTROL_LAYOUT_ON, CONTROL_RESET, ProtocolError, control_budget, decode, encode
from harness.trace import Result, ResultKind, Trace

__all__ = ["Channel", "SessionMode", "SessionOutput", "DdictlSession"]

# after the last result, ddictl gets this long to exit before its channel is closed: dropbear
# keeps a channel whose process still runs, and runs out of them after a few dozen
EXIT_GRACE_S = 5.0
# a guest that answers nothing for this long past an op's own budget is gone
SILENCE_GRACE_S = 10.0


class Channel(Protocol):
    """What a session needs of a started ddictl (paramiko.Channel has all of it)."""

    closed: bool

    def exec_command(self, command: str) -> None: ...
    def settimeout(self, timeout: float) -> None: ...
    def sendall(self, data: bytes) -> None: ...
    def recv(self, n: int) -> bytes: ...
    def shutdown_write(self) -> None: ...
    def exit_status_ready(self) -> bool: ...
    def close(self) -> None: ...


class SessionMode(enum.Enum):
    BATCH = "batch"
    LOCKSTEP = "lockstep"
    STREAM = "stream"


@dataclass
class SessionOutput:
    """What ddictl said about one trace."""

    trace: Trace
    mode: SessionMode
    results: list[Result] = field(default_factory=list)
    broke: str | None = None  # why the conversation ended before the trace did; None: it did not
    # lines that are not results, in order, each with the number of results before it: a
    # runner whose console shares the output pipe (the illumos-gate runner) puts the kernel's
    # messages there, just before the result of the op that printed them
    console: list[tuple[int, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.broke is None


class DdictlSession:
    """Starts ddictl with ``open_channel()`` + ``command`` for each conversation.

    ``dead`` is polled while waiting for output (at most every 0.2 s): a
    guest paused on a panic never closes its connection, so silence alone
    would take the whole op budget plus ``SILENCE_GRACE_S`` to notice.
    """

    def __init__(self, open_channel: Callable[[], Channel], command: str, budget_ms: int,
                 dead: Callable[[], bool] = lambda: False, layout: bool = False) -> None:
        control_budget(budget_ms)  # validates: a bad budget fails here, not in the guest
        self.open_channel = open_channel
        self.command = command
        self.budget_ms = budget_ms
        self.dead = dead
        self.layout = layout  # ask for each resource map's whole layout after every step
        self._lines: dict[str, tuple[Trace, list[str]]] = {}  # a trace resent after a break is not re-encoded

    def lines(self, trace: Trace) -> list[str]:
        """ddictl's input lines for a trace (ProtocolError for a step that cannot be sent)."""
        hit = self._lines.get(trace.name)
        if hit is not None and hit[0] is trace:
            return hit[1]
        lines = [encode(s) for s in trace.steps]
        self._lines[trace.name] = (trace, lines)
        return lines

    # ------------------------------------------------------------ helpers
    def _controls(self) -> list[str]:
        """The control lines a conversation starts with."""
        return [control_budget(self.budget_ms)] + ([CONTROL_LAYOUT_ON] if self.layout else [])

    def _hang_note(self, step: int) -> str:
        return f"killed after {self.budget_ms / 1000:g} s in step {step}"

    def _decode(self, raw: bytes, out: SessionOutput) -> None:
        text = raw.decode(errors="replace")
        try:
            r = decode(text)
        except ProtocolError:
            if text.strip():
                out.console.append((len(out.results), text))  # not a result: console text
            return
        if r.kind is ResultKind.HANG:  # ddictl says only that the budget ran out; where is ours to say
            r.note = self._hang_note(len(out.results) + 1)
        out.results.append(r)

    def _start(self) -> Channel:
        chan = self.open_channel()
        chan.exec_command(self.command)
        return chan

    def _finish(self, chan: Channel) -> None:
        end = time.monotonic() + EXIT_GRACE_S
        while not chan.closed and not chan.exit_status_ready() and time.monotonic() < end and not self.dead():
            time.sleep(0.005)
        chan.close()

    # ------------------------------------------------------------ stream / batch
    def batch(self, trace: Trace) -> SessionOutput:
        """The whole trace in one write; see ``stream``."""
        for out in self.stream([trace]):
            out.mode = SessionMode.BATCH
            return out
        raise AssertionError("stream yields at least one output")

    def stream(self, traces: list[Trace]) -> Iterator[SessionOutput]:
        """One ddictl for all ``traces``; yields each trace's output as it completes.

        Raises ProtocolError (before anything is sent) for a step that cannot
        be encoded.
        """
        lines = self._controls()
        for t in traces:
            lines += self.lines(t)
            lines.append(CONTROL_RESET)
        data = ("\n".join(lines) + "\n").encode()
        try:
            chan = self._start()
        except Exception as e:  # paramiko raises several types when the guest vanishes
            yield SessionOutput(traces[0], SessionMode.STREAM, broke=f"the SSH channel failed: {type(e).__name__}: {e}")
            return

        def feed() -> None:  # a writer thread: the guest's output must be read meanwhile
            try:
                chan.sendall(data)
                chan.shutdown_write()
            except Exception:
                pass  # the reader sees the same death and says why

        writer = threading.Thread(target=feed, daemon=True, name="ddictl-writer")
        writer.start()
        chan.settimeout(0.2)
        silence = self.budget_ms / 1000 + SILENCE_GRACE_S
        buf, idx = b"", 0
        out = SessionOutput(traces[0], SessionMode.STREAM)
        last = time.monotonic()
        try:
            while idx < len(traces):
                want = len(traces[idx].steps)
                while b"\n" in buf and len(out.results) < want:
                    raw, buf = buf.split(b"\n", 1)
                    self._decode(raw, out)
                    if out.results and out.results[-1].kind is ResultKind.HANG:
                        yield out
                        return  # ddictl exits after a hang; the caller starts a new session
                if len(out.results) == want:
                    yield out
                    idx += 1
                    if idx < len(traces):
                        out = SessionOutput(traces[idx], SessionMode.STREAM)
                    continue
                try:
                    got = chan.recv(65536)
                except TimeoutError:
                    got = None
                except Exception as e:
                    out.broke = f"the SSH channel failed: {type(e).__name__}: {e}"
                    yield out
                    return
                if got:
                    buf += got
                    last = time.monotonic()
                elif got == b"" or chan.closed:
                    out.broke = "ddictl stopped answering"
                    yield out
                    return
                elif self.dead():
                    out.broke = "the guest stopped (QEMU exited, or paused on a kernel panic)"
                    yield out
                    return
                elif time.monotonic() - last > silence:
                    out.broke = f"no result line within {silence:g} s"
                    yield out
                    return
        finally:
            self._finish(chan)
            writer.join(timeout=EXIT_GRACE_S)

    # ------------------------------------------------------------ lockstep
    def lockstep(self, trace: Trace) -> SessionOutput:
        """One op per round trip on one ddictl process."""
        out = SessionOutput(trace, SessionMode.LOCKSTEP)
        lines = self.lines(trace)
        silence = self.budget_ms / 1000 + SILENCE_GRACE_S
        try:
            chan = self._start()
        except Exception as e:
            out.broke = f"the SSH channel failed: {type(e).__name__}: {e}"
            return out
        try:
            chan.settimeout(0.05)
            chan.sendall(("\n".join(self._controls()) + "\n").encode())
            buf = b""
            for line in lines:
                chan.sendall((line + "\n").encode())
                deadline = time.monotonic() + silence
                while b"\n" not in buf:
                    if time.monotonic() > deadline:
                        out.broke = f"no result line within {silence:g} s"
                        return out
                    try:
                        data = chan.recv(4096)
                    except TimeoutError:
                        data = None
                    if data == b"" or (data is None and (chan.closed or chan.exit_status_ready() or self.dead())):
                        out.broke = "ddictl stopped answering"
                        return out
                    if data:
                        buf += data
                raw, buf = buf.split(b"\n", 1)
                self._decode(raw, out)
                if out.results and out.results[-1].kind is ResultKind.HANG:
                    break
            chan.shutdown_write()
        except Exception as e:  # paramiko raises several types when the guest vanishes
            out.broke = f"the SSH channel failed: {type(e).__name__}: {e}"
            return out
        finally:
            self._finish(chan)
        return out
