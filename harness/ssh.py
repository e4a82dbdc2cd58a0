"""SSH to the guest: wait for sshd, exec with timeout, file upload.

slirp's hostfwd accepts the host-side TCP connection before anything listens
in the guest (and then drops it), so ``wait_for_banner`` reads until the
server's ``SSH-`` identification string arrives before paramiko is used.

The guest host key is pinned: the public key recorded when the image was
built is the only one accepted (never auto-added); a different key raises
HostKeyMismatch.
"""

from __future__ import annotations

import base64
import os
import shlex
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paramiko


class SSHError(Exception):
    """An SSH operation failed."""


class SSHTimeout(SSHError):
    """A command did not finish within its timeout (partial output attached)."""

    def __init__(self, message: str, stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.stdout = stdout
        self.stderr = stderr


class SSHConnectionLost(SSHError):
    """The connection dropped mid-command (e.g. the guest panicked)."""


class HostKeyMismatch(SSHError):
    """The guest presented a host key other than the pinned one."""


@dataclass(frozen=True)
class CommandResult:
    status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == 0


def quote(*args: object) -> str:
    """Quote arguments for the guest shell: ``quote("rm", name) -> "rm 'a b'"``."""
    return " ".join(shlex.quote(str(a)) for a in args)


def wait_for_banner(host: str, port: int, timeout: float = 60,
                    alive: Callable[[], bool] | None = None) -> float:
    """Poll until the server sends ``SSH-``; returns the seconds waited.

    ``alive()`` (e.g. Machine.is_running) aborts the wait early when False.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    last = "no connection yet"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise SSHError(f"the guest stopped while waiting for sshd on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                s.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
                data = b""
                while b"SSH-" not in data and len(data) < 256:
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    data += chunk
                if b"SSH-" in data:
                    return time.monotonic() - t0
                last = f"connection closed after {data!r}"
        except OSError as e:
            last = str(e) or type(e).__name__
        time.sleep(0.05)
    raise SSHError(f"no SSH banner from {host}:{port} within {timeout:.0f} s ({last})")


def _pinned_key(pub: str) -> paramiko.PKey:
    parts = pub.split()
    if len(parts) < 2:
        raise SSHError(f"bad pinned host key {pub!r} (expected 'ssh-ed25519 AAAA...')")
    kind, b64 = parts[0], parts[1]
    data = base64.b64decode(b64)
    if kind == "ssh-ed25519":
        return paramiko.Ed25519Key(data=data)
    if kind == "ssh-rsa":
        return paramiko.RSAKey(data=data)
    if kind.startswith("ecdsa-"):
        return paramiko.ECDSAKey(data=data)
    raise SSHError(f"unsupported pinned host key type {kind}")


def _load_client_key(path: Path) -> paramiko.PKey:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key_file(str(path))
        except (paramiko.SSHException, ValueError):
            continue
    raise SSHError(f"cannot load the client key {path}")


class SSH:
    """A paramiko connection to the guest with a pinned host key."""

    def __init__(self, host: str, port: int, client_key: str | os.PathLike,
                 host_key_pub: str, user: str = "root", timeout: float = 30) -> None:
        self.host, self.port, self.user = host, port, user
        self.client = paramiko.SSHClient()
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        pinned = _pinned_key(host_key_pub)
        name = host if port == 22 else f"[{host}]:{port}"
        self.client.get_host_keys().add(name, pinned.get_name(), pinned)
        t0 = time.monotonic()
        try:
            self.client.connect(host, port=port, username=user,
                                pkey=_load_client_key(Path(client_key)),
                                allow_agent=False, look_for_keys=False, timeout=timeout,
                                banner_timeout=timeout, auth_timeout=timeout)
        except paramiko.BadHostKeyException as e:
            self.client.close()
            raise HostKeyMismatch(f"guest {host}:{port} presented host key "
                                  f"{e.key.get_name()} {e.key.get_base64()}, expected the pinned "
                                  f"{host_key_pub}: the image keys changed or this is another "
                                  f"machine; rebuild the image") from None
        except paramiko.SSHException as e:
            self.client.close()
            if "not found in known_hosts" in str(e):
                raise HostKeyMismatch(f"guest {host}:{port} offered a host key type other "
                                      f"than the pinned {host_key_pub.split()[0]}: {e}") from None
            raise SSHError(f"SSH connect to {user}@{host}:{port} failed: {e}") from None
        except OSError as e:
            self.client.close()
            raise SSHError(f"SSH connect to {user}@{host}:{port} failed: {e}") from None
        self.connect_seconds = time.monotonic() - t0
        self._sftp: paramiko.SFTPClient | None = None

    def run(self, cmd: str, timeout: float = 60, input: str | bytes | None = None,
            check: bool = False) -> CommandResult:
        """Run ``cmd`` (a shell string; quote untrusted parts with quote())."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SSHConnectionLost(f"SSH connection to {self.host}:{self.port} is closed")
        t0 = time.monotonic()
        deadline = t0 + timeout
        try:
            chan = self.open_channel(timeout)
            chan.settimeout(0.05)
            chan.exec_command(cmd)
            if input is not None:
                chan.sendall(input.encode() if isinstance(input, str) else input)
            chan.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise SSHConnectionLost(f"cannot start {cmd!r}: {e}") from None
        out, err = bytearray(), bytearray()
        try:
            while True:
                if chan.recv_ready():
                    out += chan.recv(65536)
                    continue
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    continue
                if chan.exit_status_ready() or chan.closed or chan.eof_received:
                    break
                if time.monotonic() > deadline:
                    chan.close()
                    raise SSHTimeout(f"{cmd!r} did not finish within {timeout:.1f} s",
                                     out.decode(errors="replace"), err.decode(errors="replace"))
                try:
                    out += chan.recv(65536)          # blocks up to 0.05 s
                except socket.timeout:
                    pass
            # the exit status follows EOF closely; then drain what is left
            end = time.monotonic() + 2
            while not chan.exit_status_ready() and not chan.closed and time.monotonic() < end:
                time.sleep(0.005)
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise SSHConnectionLost(f"connection lost during {cmd!r}: {e}") from None
        # paramiko reports -1 when the channel closed without an exit-status
        # message (it also sets status_event on close)
        status = chan.exit_status if chan.status_event.is_set() else -1
        if status == -1:
            raise SSHConnectionLost(f"{cmd!r}: channel closed without an exit status "
                                    "(guest crashed or sshd died)")
        chan.close()
        res = CommandResult(status, out.decode(errors="replace"), err.decode(errors="replace"),
                            time.monotonic() - t0)
        if check and status != 0:
            raise SSHError(f"{cmd!r} exited with status {status}: {res.stderr.strip()[-500:]}")
        return res

    def open_channel(self, timeout: float = 30) -> paramiko.Channel:
        """A new session channel.  dropbear refuses one while it is still reaping
        the process of a channel we just closed: retry briefly before giving up."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SSHConnectionLost(f"SSH connection to {self.host}:{self.port} is closed")
        for attempt in range(6):
            try:
                return transport.open_session(timeout=timeout)
            except paramiko.SSHException:  # ChannelException, or "Unable to open channel."
                if attempt == 5 or not transport.is_active():
                    raise
                time.sleep(0.25 * (attempt + 1))
        raise AssertionError("unreachable")

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
            except (paramiko.SSHException, OSError) as e:
                raise SSHError(f"cannot open SFTP: {e}") from None
        return self._sftp

    def put(self, local: str | os.PathLike, remote: str, mode: int | None = None) -> None:
        """Upload a file (SFTP); ``mode`` defaults to the local file's mode."""
        local = Path(local)
        if mode is None:
            mode = stat.S_IMODE(local.stat().st_mode)
        try:
            self.sftp.put(str(local), remote)
            self.sftp.chmod(remote, mode)
        except (paramiko.SSHException, OSError) as e:
            raise SSHError(f"upload {local} -> {remote} failed: {e}") from None

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        import io
        try:
            self.sftp.putfo(io.BytesIO(data), remote)
            self.sftp.chmod(remote, mode)
        except (paramiko.SSHException, OSError) as e:
            raise SSHError(f"upload -> {remote} failed: {e}") from None

    def get(self, remote: str, local: str | os.PathLike) -> None:
        try:
            self.sftp.get(remote, str(local))
        except (paramiko.SSHException, OSError) as e:
            raise SSHError(f"download {remote} failed: {e}") from None

    def close(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:
                pass
            self._sftp = None
        self.client.close()

    def __enter__(self) -> "SSH":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
