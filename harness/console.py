"""The guest's serial console: boot detection, marker-wrapped commands, crash text.

QEMU exposes the serial port as a Unix socket (``-chardev socket,...``).  A
background *pump* thread reads that socket from the first byte to EOF, so the
guest never stalls on a full UART even while nobody is looking; everything it
reads is appended to the serial log file and to an in-memory transcript.

On top of the pump sit three views of the same byte stream:

* ``wait_for(pattern)`` / ``expect(...)`` — pexpect matching (partial lines,
  no trailing newline needed), through a small pexpect ``SpawnBase`` that
  reads from the pump instead of a file descriptor;
* ``run(cmd)`` — a shell command wrapped in unique begin/end markers, so kernel
  messages printed on the console around it do not confuse the parsing
  (results still belong on SSH: DESIGN.md "Pitfalls");
* ``new_text()`` — everything read since the previous call, for the panic scan
  after each step.
"""

from __future__ import annotations

import codecs
import itertools
import os
import re
import socket
import threading
import time
from pathlib import Path

import pexpect
from pexpect.spawnbase import SpawnBase


class ConsoleError(Exception):
    """A console operation failed; ``tail`` holds the last console lines."""

    def __init__(self, message: str, tail: str = "") -> None:
        self.tail = tail
        if tail:
            message = f"{message}\n--- last console lines ---\n{tail}"
        super().__init__(message)


class ConsoleTimeout(ConsoleError):
    pass


class ConsoleClosed(ConsoleError):
    """The other end (QEMU) closed the console: the guest is gone."""


class _PumpSpawn(SpawnBase):
    """pexpect spawn whose input comes from the Console pump thread."""

    def __init__(self, console: "Console", timeout: float) -> None:
        super().__init__(timeout=timeout, encoding="utf-8", codec_errors="replace")
        self._console = console
        self.delaybeforesend = None
        self.delayafterread = None
        self.child_fd = -1

    def read_nonblocking(self, size: int = 1, timeout: float | None = -1):
        if timeout == -1:
            timeout = self.timeout
        data = self._console._take(size, timeout)
        if data is None:
            raise pexpect.TIMEOUT("timeout reading the console")
        if data == "":
            self.flag_eof = True
            raise pexpect.EOF("the console was closed")
        return data

    def send(self, s: str | bytes) -> int:
        b = s.encode() if isinstance(s, str) else s
        self._console._send(b)
        return len(b)

    def sendline(self, s: str = "") -> int:
        return self.send(s + "\n")

    def isalive(self) -> bool:
        return not self._console.closed


class Console:
    """The serial console of one guest, over a connected stream socket."""

    _tokens = itertools.count(1)

    def __init__(self, sock: socket.socket, log_path: str | os.PathLike,
                 prompt: str | None = None) -> None:
        self.sock = sock
        self.log_path = Path(log_path)
        self.prompt = prompt
        self._log = open(self.log_path, "a", encoding="utf-8", errors="replace")
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._cond = threading.Condition()
        self._pending: list[str] = []     # for the pexpect view
        self._transcript: list[str] = []  # everything, for new_text()/tail()
        self._mark = 0                    # characters already returned by new_text()
        self._length = 0
        self._eof = False
        self._send_lock = threading.Lock()
        self.spawn = _PumpSpawn(self, timeout=30)
        self._thread = threading.Thread(target=self._pump, name="ddih-console", daemon=True)
        self._thread.start()

    # -- pump --------------------------------------------------------------
    def _pump(self) -> None:
        while True:
            try:
                b = self.sock.recv(65536)
            except OSError:
                b = b""
            text = self._decoder.decode(b, final=not b)
            if text:
                try:
                    self._log.write(text)
                    self._log.flush()
                except (OSError, ValueError):
                    pass
            with self._cond:
                if text:
                    self._pending.append(text)
                    self._transcript.append(text)
                    self._length += len(text)
                if not b:
                    self._eof = True
                self._cond.notify_all()
            if not b:
                return

    def _take(self, size: int, timeout: float | None) -> str | None:
        """Up to ``size`` pending characters; "" at EOF; None on timeout."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0)
        with self._cond:
            while not self._pending and not self._eof:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            if not self._pending:
                return ""
            data = "".join(self._pending)
            self._pending = [data[size:]] if len(data) > size else []
            return data[:size]

    def _send(self, b: bytes) -> None:
        with self._send_lock:
            try:
                self.sock.sendall(b)
            except OSError as e:
                raise ConsoleClosed(f"cannot write to the console: {e}", self.tail()) from None

    # -- public ------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._eof

    def text(self) -> str:
        """The whole transcript so far."""
        with self._cond:
            return "".join(self._transcript)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text().replace("\r", "").splitlines()[-lines:])

    def new_text(self) -> str:
        """Console text received since the previous call (or since start)."""
        with self._cond:
            text = "".join(self._transcript)
            self._transcript = [text]
            new = text[self._mark:]
            self._mark = len(text)
        return new

    def wait_for(self, pattern: str | re.Pattern, timeout: float = 60) -> re.Match:
        """Wait until ``pattern`` (a regex) appears; returns the match.

        Raises ConsoleTimeout, or ConsoleClosed when QEMU closed the console.
        """
        try:
            self.spawn.expect(pattern, timeout=timeout)
        except pexpect.TIMEOUT:
            raise ConsoleTimeout(f"{pattern!r} did not appear on the console within {timeout:.0f} s",
                                 self.tail()) from None
        except pexpect.EOF:
            raise ConsoleClosed(f"the console closed while waiting for {pattern!r}",
                                self.tail()) from None
        return self.spawn.match

    def wait_for_exact(self, text: str, timeout: float = 60) -> None:
        self.wait_for(re.escape(text), timeout)

    def send(self, text: str) -> None:
        self.spawn.send(text)

    def sendline(self, text: str = "") -> None:
        self.spawn.sendline(text)

    def run(self, cmd: str, timeout: float = 30) -> tuple[int, str]:
        """Run ``cmd`` in the console shell; return (exit status, output).

        The command runs in a subshell between two markers built from a fresh
        token; the echoed command line never contains the assembled marker
        text, so only the real output matches.  Output is ``\\r``-stripped.
        Kernel messages printed while the command runs can still appear in
        the output (they share the line); use SSH for results.
        """
        tok = f"{os.getpid():x}x{next(self._tokens)}x{int(time.time() * 1000) % 100000}"
        begin = f"DDIHB_{tok}"
        end = re.compile(rf"DDIHE_{tok}_(\d+)")
        self.sendline(f"printf 'DDIHB_%s\\n' {tok}; ( {cmd} ); printf 'DDIHE_%s_%d\\n' {tok} $?")
        self.wait_for(re.escape(begin) + r"\r?\n", timeout)
        m = self.wait_for(end, timeout)
        out = self.spawn.before or ""
        # the markers are on their own lines: drop a possible partial line end
        out = out.replace("\r", "")
        if out.endswith("\n"):
            out = out[:-1]
        return int(m.group(1)), out

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self._thread.join(timeout=5)
        try:
            self._log.close()
        except OSError:
            pass


def connect_unix(path: str | os.PathLike, timeout: float, alive=lambda: True) -> socket.socket:
    """Connect to a Unix stream socket that a process is about to create."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            break
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(os.fspath(path))
            return s
        except OSError as e:
            last = e
            s.close()
            time.sleep(0.01)
    raise ConsoleError(f"cannot connect to {path}: {last or 'the process exited'}")
