"""Talking to guest/ddictl over SSH, shared by every target."""

from __future__ import annotations

import time
from typing import Callable

from harness.protocol import control_budget


def lockstep(ssh, command: str, lines: list[str], budget_ms: int,
             dead: Callable[[], bool] = lambda: False) -> tuple[str, str | None]:
    """One op per round trip on one ddictl process: nothing is in flight when the guest dies.

    Returns ddictl's output lines so far and, when the session broke, why.
    ``dead`` is polled while waiting (a guest paused on panic never sends EOF).
    """
    out: list[str] = []
    try:
        chan = ssh.open_channel(30)
        chan.exec_command(command)
        chan.settimeout(0.05)
        chan.sendall((control_budget(budget_ms) + "\n").encode())
        buf = b""
        for line in lines:
            chan.sendall((line + "\n").encode())
            deadline = time.monotonic() + budget_ms / 1000 + 10
            while b"\n" not in buf:
                if time.monotonic() > deadline:
                    chan.close()
                    return "\n".join(out), "no result line within the op budget"
                try:
                    data = chan.recv(4096)
                except OSError:  # socket.timeout is an OSError
                    data = None
                if data == b"" or (data is None and (chan.closed or chan.exit_status_ready() or dead())):
                    return "\n".join(out), "ddictl stopped answering"
                if data:
                    buf += data
            text, buf = buf.split(b"\n", 1)
            out.append(text.decode(errors="replace"))
            if out[-1].startswith("kind=hang"):
                break
        chan.shutdown_write()
        end = time.monotonic() + 5  # let ddictl exit before the channel goes: dropbear keeps it otherwise
        while not chan.exit_status_ready() and time.monotonic() < end:
            time.sleep(0.005)
        chan.close()
    except Exception as e:  # paramiko raises several types when the guest vanishes
        return "\n".join(out), f"the SSH channel failed: {type(e).__name__}: {e}"
    return "\n".join(out), None
