"""A scripted stand-in for a booted guest, to test how targets classify what they see.

This is a fake *console and session* on recorded input, not a stand-in for a
run: the live tests boot real guests.  It sits at the lowest level a target
talks to -- ``target.machine`` (console, running, paused on panic) and
``target.ssh`` (``open_channel`` for ddictl, ``run`` for commands) -- so the
same fakes drive every target whatever its internals.

A guest answers ddictl op lines from a script keyed by the op line itself
(``rmalloc map=m size=7``), so a trace rerun on a replacement guest meets the
same behaviour.  Actions:

    ("answer", LINE)            print LINE
    ("warn", LINE, CONSOLE)     print LINE, the kernel prints CONSOLE
    ("panic", CONSOLE)          the kernel prints CONSOLE and dies; ddictl output
                                not yet read by the host is lost with it
    ("hang",)                   ddictl prints kind=hang and exits 3 (its op budget)
    ("stop",)                   ddictl ends without a word; the guest lives on
    ("vanish",)                 QEMU exits; nothing on the console
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.ssh import SSHConnectionLost

DATA = Path(__file__).resolve().parent.parent / "data" / "console"


def recorded(os_name: str, name: str) -> str:
    """A recorded console log from tests/data/console (sources in its SOURCES.md)."""
    return (DATA / os_name / name).read_text(errors="replace")


class FakeConsole:
    def __init__(self) -> None:
        self.text = ""
        self.read = 0

    def add(self, text: str) -> None:
        self.text += text

    def new_text(self) -> str:
        out, self.read = self.text[self.read:], len(self.text)
        return out

    def tail(self, n: int = 20) -> str:
        return "\n".join(self.text.splitlines()[-n:])


@dataclass
class FakeGuest:
    script: dict[str, tuple]
    default: str = "kind=ok"
    console: FakeConsole = field(default_factory=FakeConsole)
    running: bool = True
    paused: bool = False      # QEMU paused on a panic (-action panic=pause)
    pause_on_panic: bool = False
    ops: list[str] = field(default_factory=list)

    def die(self, console: str) -> None:
        self.console.add(console)
        if self.pause_on_panic:
            self.paused = True
        else:
            self.running = False


class FakeChannel:
    """One ddictl process reached over SSH."""

    def __init__(self, guest: FakeGuest) -> None:
        self.guest = guest
        self.out = b""
        self.pending = b""
        self.exited = False
        self.closed = False
        self.timeout = 0.05
        self.cond = threading.Condition()

    # paramiko.Channel's surface, as far as targets use it
    def exec_command(self, command: str) -> None:
        self.command = command

    def settimeout(self, t: float) -> None:
        self.timeout = t

    def sendall(self, data: bytes) -> None:
        with self.cond:
            if self.exited or not self.guest.running or self.guest.paused:
                raise OSError("the channel is gone")
            self.pending += data
            while b"\n" in self.pending and not self.exited:
                line, self.pending = self.pending.split(b"\n", 1)
                self._line(line.decode())
            self.cond.notify_all()

    def _line(self, line: str) -> None:
        if not line.strip() or line.startswith("budget_ms=") or line == "reset":
            return
        g = self.guest
        g.ops.append(line)
        act = g.script.get(line, ("answer", g.default))
        if act[0] == "answer":
            self.out += (act[1] + "\n").encode()
        elif act[0] == "warn":
            self.out += (act[1] + "\n").encode()
            g.console.add(act[2])
        elif act[0] == "panic":
            self.out = b""  # still in the guest's buffers: lost with it
            g.die(act[1])
            self.exited = True
        elif act[0] == "hang":
            self.out += b"kind=hang\n"
            self.exited = True
        elif act[0] == "stop":
            self.exited = True
        elif act[0] == "vanish":
            self.out = b""
            g.running = False
            self.exited = True
        else:
            raise AssertionError(f"unknown action {act!r}")

    def shutdown_write(self) -> None:
        with self.cond:
            self.exited = True
            self.cond.notify_all()

    def recv(self, n: int) -> bytes:
        with self.cond:
            if not self.out and not self.exited:
                self.cond.wait(min(self.timeout, 0.02))
            if self.out:
                data, self.out = self.out[:n], self.out[n:]
                return data
            if self.exited:
                return b""
        raise TimeoutError("no data")

    def exit_status_ready(self) -> bool:
        return self.exited and not self.out

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeRun:
    status: int
    stdout: str
    stderr: str = ""
    seconds: float = 0.0


class FakeSSH:
    def __init__(self, guest: FakeGuest) -> None:
        self.guest = guest
        self.closed = False

    def open_channel(self, timeout: float = 30) -> FakeChannel:
        if not self.guest.running or self.guest.paused:
            raise SSHConnectionLost("the guest is gone")
        return FakeChannel(self.guest)

    def run(self, cmd: str, timeout: float = 60, input: str | bytes | None = None, check: bool = False):
        """A command with all its input at once (how a one-shot batch reaches ddictl)."""
        if not self.guest.running or self.guest.paused:
            raise SSHConnectionLost("the guest is gone")
        chan = FakeChannel(self.guest)
        data = input.encode() if isinstance(input, str) else (input or b"")
        chan.sendall(data)
        if not self.guest.running or self.guest.paused:
            raise SSHConnectionLost("the connection dropped mid-command")
        out = chan.out.decode()
        return FakeRun(3 if "kind=hang" in out else 0, out)

    def close(self) -> None:
        self.closed = True


class FakeMachine:
    def __init__(self, guest: FakeGuest) -> None:
        self.guest = guest
        self.console = guest.console
        self.accel = "tcg"
        self.argv = ["qemu-system-x86_64", "(fake)"]

    def is_running(self) -> bool:
        return self.guest.running

    def panicked(self) -> bool:
        return self.guest.paused

    def wait_exit(self, timeout: float | None = None):
        return None if self.guest.running else 1

    def shutdown(self, timeout: float = 10):
        self.guest.running = False

    def kill(self) -> None:
        self.guest.running = False


class Guests:
    """Boots fake guests for a target: ``target.boot`` is replaced by ``self.boot``."""

    def __init__(self, target, script: dict[str, tuple], default: str = "kind=ok",
                 pause_on_panic: bool = False) -> None:
        self.target, self.script, self.default = target, script, default
        self.pause_on_panic = pause_on_panic
        self.booted: list[FakeGuest] = []
        target.boot = self.boot
        self.boot()

    def boot(self) -> None:
        g = FakeGuest(self.script, self.default, pause_on_panic=self.pause_on_panic)
        self.booted.append(g)
        t = self.target
        t.machine = FakeMachine(g)
        t.ssh = FakeSSH(g)
        t.facts.boots += 1
        if hasattr(t, "device"):
            t.device = "/devices/pseudo/ddih@0:ddih"

    @property
    def current(self) -> FakeGuest:
        return self.booted[-1]


def wait_until(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()
