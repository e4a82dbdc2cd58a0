"""One QEMU process: argv, the accelerator actually used, QMP, serial log, snapshots.

Lifecycle (after QEMU's python/qemu/machine/machine.py)::

    m = Machine(MachineConfig.from_image(img))   # nothing runs yet
    m.start()          # _pre_launch (workdir, port, qcow2) -> _launch (spawn,
                       # console, QMP) -> _post_launch (query-kvm)
    m.wait_ready()     # the image's ready marker on the console
    with m.ssh() as s: s.run("uname -r")
    m.savevm("s0"); ...; m.loadvm("s0")
    m.shutdown()       # poweroff, QMP quit, then kill -> _post_shutdown
    m.exitcode         # 1 after a guest panic (pvpanic + -action panic=exit-failure)

Every QEMU runs in its own process group, is registered for an atexit kill
and gets PR_SET_PDEATHSIG(SIGKILL), so no QEMU outlives the harness, whatever
fails.  Every failure raises MachineError (or a subclass) carrying the argv,
QEMU's stderr and the last console lines.

Accelerator: ``choose_accel()`` tries KVM (``/dev/kvm`` opens read-write and a
short QEMU probe with the real ``-accel kvm -cpu host`` arguments gets
SeaBIOS to print within a few seconds) and otherwise falls back to TCG.  The
probe result is cached per process and its reason kept for the report; the
accelerator in use is then read back from the running QEMU (``query-kvm``).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.console import Console, ConsoleError, connect_unix

QEMU = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
INSTALL_HINT = "install QEMU (Debian: apt-get install qemu-system-x86 qemu-utils)"


class MachineError(Exception):
    """A QEMU machine failed; carries argv, QEMU stderr and console tail."""

    def __init__(self, message: str, argv: Sequence[str] = (), console_tail: str = "",
                 stderr: str = "") -> None:
        self.argv = list(argv)
        self.console_tail = console_tail
        self.stderr = stderr
        parts = [message]
        if stderr.strip():
            parts.append("--- qemu stderr ---\n" + stderr.strip()[-2000:])
        if console_tail.strip():
            parts.append("--- last console lines ---\n" + console_tail)
        if self.argv:
            parts.append("--- argv ---\n" + " ".join(self.argv))
        super().__init__("\n".join(parts))


class LaunchError(MachineError):
    """QEMU did not start (bad argv, missing binary, port in use...)."""


class BootTimeout(MachineError):
    """The guest did not print its ready marker in time."""


class UnexpectedExit(MachineError):
    """QEMU exited while the harness expected it to run (e.g. guest panic)."""


class SnapshotError(MachineError):
    """savevm/loadvm failed."""


# --------------------------------------------------------------------------
# accelerator choice

@dataclass(frozen=True)
class AccelChoice:
    accel: str                 # "kvm" or "tcg"
    reason: str                # why (for the report), e.g. the KVM probe error
    cpu: str | None = None     # -cpu to pass (host for KVM)

    def args(self) -> list[str]:
        a = ["-accel", self.accel]
        if self.cpu:
            a += ["-cpu", self.cpu]
        return a


_ACCEL_CACHE: dict[tuple, AccelChoice] = {}
_ACCEL_LOCK = threading.Lock()

KVM_CPU = "host"


def decide_accel(requested: str, kvm_device_ok: Callable[[], str | None],
                 kvm_probe: Callable[[], str | None]) -> AccelChoice:
    """Pure decision: which accelerator to use, and why.

    ``kvm_device_ok()`` / ``kvm_probe()`` return None when fine, else the reason
    KVM is unusable.  ``requested`` is "auto", "kvm" or "tcg".
    """
    if requested == "tcg":
        return AccelChoice("tcg", "TCG requested")
    if requested not in ("auto", "kvm"):
        raise ValueError(f"unknown accelerator {requested!r} (use auto, kvm or tcg)")
    why = kvm_device_ok()
    if why is None:
        why = kvm_probe()
    if why is None:
        return AccelChoice("kvm", "KVM probe passed", KVM_CPU)
    if requested == "kvm":
        raise MachineError(f"KVM was requested but is not usable: {why}")
    return AccelChoice("tcg", f"KVM unusable, fell back to TCG: {why}")


def _kvm_device_ok(path: str = "/dev/kvm") -> str | None:
    if not os.path.exists(path):
        return f"{path} does not exist"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"cannot open {path}: {e.strerror}"
    os.close(fd)
    return None


def _kvm_probe(qemu: str = QEMU, timeout: float = 5.0) -> str | None:
    """Start QEMU with the real KVM arguments; OK once SeaBIOS prints.

    SeaBIOS writes its banner to the debug port 0x402 within ~0.1 s under a
    working KVM; a KVM that cannot set the CPU up (e.g. MSR 0x10a under
    nested PVM) aborts QEMU at once.
    """
    with tempfile.TemporaryDirectory(prefix="ddih-kvmprobe-") as d:
        log = Path(d) / "debugcon.log"
        argv = [qemu, "-accel", "kvm", "-cpu", KVM_CPU, "-machine", "pc", "-m", "64",
                "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "none",
                "-no-reboot", "-debugcon", f"file:{log}", "-global", "isa-debugcon.iobase=0x402"]
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            return f"cannot run {qemu}: {e}"
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if log.exists() and b"SeaBIOS" in log.read_bytes():
                    return None
                if p.poll() is not None:
                    err = (p.stderr.read() or b"").decode(errors="replace").strip()
                    lines = " / ".join(err.splitlines()[-3:])
                    return f"`{' '.join(argv[:5])}` exited with status {p.returncode}: {lines}"
                time.sleep(0.02)
            return f"KVM probe: no SeaBIOS output within {timeout:.0f} s (KVM too slow or stuck)"
        finally:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
            p.wait()
            p.stderr.close()


def choose_accel(requested: str = "auto", qemu: str = QEMU) -> AccelChoice:
    """The accelerator for this process (probe cached per process).

    ``$DDIH_ACCEL`` (auto|kvm|tcg) overrides ``requested="auto"``.
    """
    if requested == "auto":
        requested = os.environ.get("DDIH_ACCEL", "auto") or "auto"
    key = (requested, qemu)
    with _ACCEL_LOCK:
        if key not in _ACCEL_CACHE:
            _ACCEL_CACHE[key] = decide_accel(requested, _kvm_device_ok,
                                             lambda: _kvm_probe(qemu))
        return _ACCEL_CACHE[key]


# --------------------------------------------------------------------------
# helpers

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


_libc = None


def _child_setup() -> None:
    """In the child: die with the parent (PR_SET_PDEATHSIG = 1, SIGKILL)."""
    try:
        global _libc
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


_LIVE: "weakref.WeakSet[Machine]" = weakref.WeakSet()


@atexit.register
def _kill_all() -> None:
    for m in list(_LIVE):
        try:
            m.kill()
        except Exception:
            pass


@dataclass(frozen=True)
class DiskBoot:
    """Boot from a disk image instead of a kernel file (illumos: loader -> unix from the disk).

    ``seed`` is a second, read-only disk (a cloud-init NoCloud ISO); ``no_reboot``
    turns a guest reboot (illumos reboots after a panic) into a QEMU exit;
    ``restrict`` cuts the guest off the network (test runs need none,
    provisioning needs the package server).  ``interface`` and ``nic`` are the
    device models; the illumos targets fall back to ahci and e1000 when a first
    boot finds no disk or no link.
    """

    disk: Path
    format: str = "qcow2"
    seed: Path | None = None
    no_reboot: bool = True
    restrict: bool = True
    interface: str = "virtio"        # the boot disk's controller: virtio or ahci
    nic: str = "virtio-net-pci"      # the NIC model: virtio-net-pci or e1000


@dataclass
class MachineConfig:
    """What to boot: a kernel file (``kernel``, ``initrd``, ``append``), or a disk (``disk``).

    ``from_image()`` fills the kernel mode from a LinuxImage.
    """

    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    disk: DiskBoot | None = None
    memory: str = "512M"
    cpus: int = 1
    extra_args: list[str] = field(default_factory=list)
    accel: str = "auto"                # auto | kvm | tcg
    qemu: str = QEMU
    name: str = "ddih"
    ready_marker: str | None = None    # printed by the guest when it is up
    client_key: Path | None = None     # for ssh()
    host_key_pub: str | None = None    # pinned guest host key, "ssh-ed25519 AAAA..."
    vmstate_disk: bool = True          # a scratch qcow2 so savevm/loadvm work
    panic_action: str = "exit-failure"  # or "pause": keep the panicked guest for loadvm
    prompt: str | None = None
    # a warm start: the scratch qcow2 is a copy of this one (it holds a saved guest), and QEMU
    # starts paused (-S) so the caller can loadvm it before the guest runs a single instruction
    vmstate_from: Path | None = None

    def __post_init__(self) -> None:
        if (self.kernel is None) == (self.disk is None):
            raise ValueError("a machine boots a kernel file or a disk: give exactly one of kernel= and disk=")

    @classmethod
    def from_image(cls, img: Any, **overrides: Any) -> "MachineConfig":
        kw = dict(
            kernel=Path(getattr(img, "vmlinux", None) or img.kernel),
            initrd=Path(img.initramfs) if getattr(img, "initramfs", None) else None,
            append=img.cmdline,
            memory=str(img.memory),
            cpus=int(img.cpus),
            ready_marker=getattr(img, "ready_marker", None),
            client_key=getattr(img, "client_key", None),
            host_key_pub=getattr(img, "host_key_pub", None),
            prompt=getattr(img, "prompt", None),
        )
        kw.update(overrides)
        return cls(**kw)


DISK_INTERFACES = ("virtio", "ahci")
NICS = ("virtio-net-pci", "e1000")


def disk_boot_argv(*, accel: str, disk: str | os.PathLike, serial_socket: str | os.PathLike,
                   qmp_socket: str | os.PathLike | None, ssh_port: int, memory: str = "4096",
                   cpus: int = 2, disk_format: str = "qcow2", seed: str | os.PathLike | None = None,
                   no_reboot: bool = True, restrict: bool = True, qemu: str = QEMU,
                   name: str = "ddih-illumos", disk_interface: str = "virtio",
                   nic: str = "virtio-net-pci") -> list[str]:
    """The QEMU command line of a disk boot, as the illumos guests need it (pure).

    Machine ``pc`` (i440FX: OpenIndiana 2025.10 loses its disk and NIC on
    q35), virtio-blk disk, virtio-net NIC on slirp with SSH forwarded to
    loopback, serial on ttya (COM1, the first ``-serial``), ``-cpu host`` and
    the kvm-pit delay policy under KVM, ``-cpu qemu64`` under TCG, rtc
    driftfix, never any ``hv-*`` flag (the illumos kernel mistakes the guest
    for Hyper-V and hangs in microfind).  ``disk_interface`` ``ahci`` puts the
    boot disk on an ICH9 AHCI controller as an ``ide-hd`` instead (the seed
    disk stays virtio); ``nic`` ``e1000`` replaces the NIC model.
    """
    if accel not in ("kvm", "tcg"):
        raise ValueError(f"accelerator must be kvm or tcg, not {accel!r}")
    if disk_interface not in DISK_INTERFACES:
        raise ValueError(f"disk interface must be one of {', '.join(DISK_INTERFACES)}, not {disk_interface!r}")
    if nic not in NICS:
        raise ValueError(f"NIC must be one of {', '.join(NICS)}, not {nic!r}")
    argv = [qemu, "-name", name, "-machine", f"pc,accel={accel}",
            "-cpu", "host" if accel == "kvm" else "qemu64",
            "-smp", str(cpus), "-m", str(memory)]
    if accel == "kvm":
        argv += ["-global", "kvm-pit.lost_tick_policy=delay"]
    argv += ["-rtc", "base=utc,clock=host,driftfix=slew"]
    if disk_interface == "ahci":
        argv += ["-device", "ich9-ahci,id=ahci0",
                 "-drive", f"file={disk},if=none,id=disk0,format={disk_format},cache=writeback",
                 "-device", "ide-hd,bus=ahci0.0,drive=disk0,bootindex=0"]
    else:
        argv += ["-drive", f"file={disk},if=virtio,format={disk_format},cache=writeback"]
    if seed is not None:
        argv += ["-drive", f"file={seed},if=virtio,format=raw,readonly=on"]
    net = f"user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
    if restrict:
        net += ",restrict=on"
    argv += ["-netdev", net, "-device", f"{nic},netdev=n0",
             "-display", "none", "-monitor", "none",
             "-chardev", f"socket,id=s0,path={serial_socket},server=on,wait=on",
             "-serial", "chardev:s0"]
    if qmp_socket is not None:
        argv += ["-qmp", f"unix:{qmp_socket},server=on,wait=off"]
    if no_reboot:
        argv.append("-no-reboot")
    return argv


def _mib(memory: str | int) -> str:
    """``4096M``/``4G``/``4096`` -> ``4096`` (MiB, as -m wants it for a disk boot)."""
    text = str(memory).strip().upper()
    m = re.fullmatch(r"(\d+)([MG]?)B?", text)
    if not m:
        return text
    n = int(m.group(1))
    return str(n * 1024 if m.group(2) == "G" else n)


WORKDIR_PREFIX = "ddih-vm-"
OWNER_FILE = "owner.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's, and running
    return True


def sweep_stale_workdirs(tmp: str | os.PathLike | None = None) -> list[Path]:
    """Remove the QEMU work directories of harness processes that died without cleaning up
    (kill -9 skips every exit handler; a vmstate disk makes them tens of MB each).  A directory
    is stale when the pid in its owner file no longer runs; one without an owner file is left
    alone (it may be being created right now).  Returns what was removed."""
    removed = []
    for d in Path(tmp or tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*"):
        try:
            pid = int((d / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


class Machine:
    """One QEMU guest with a serial console, QMP, and SSH forwarded to loopback."""

    def __init__(self, config: MachineConfig | Any, *, log_dir: str | os.PathLike | None = None,
                 accel: str | None = None) -> None:
        if not isinstance(config, MachineConfig):
            config = MachineConfig.from_image(config)
        self.config = config
        self._requested_accel = accel or config.accel
        self._log_dir = Path(log_dir) if log_dir else None
        self.workdir: Path | None = None
        self.serial_log: Path | None = None
        self.stderr_log: Path | None = None
        self.ssh_port: int | None = None
        self.accel_choice: AccelChoice | None = None
        self.accel: str | None = None          # read back over QMP
        self.console: Console | None = None
        self.qmp = None                         # qemu.qmp.legacy.QEMUMonitorProtocol
        self._proc: subprocess.Popen | None = None
        self._argv: list[str] | None = None
        self._qmp_lock = threading.Lock()
        self.exitcode: int | None = None
        self.boot_seconds: float | None = None
        self._started_at: float | None = None

    # -- argv ----------------------------------------------------------------
    def build_argv(self, accel: AccelChoice, workdir: Path, ssh_port: int) -> list[str]:
        """The full QEMU command line (pure: no side effects)."""
        c = self.config
        if c.disk is not None:
            d = c.disk
            return disk_boot_argv(accel=accel.accel, disk=d.disk, disk_format=d.format,
                                  serial_socket=workdir / "console.sock", qmp_socket=workdir / "qmp.sock",
                                  ssh_port=ssh_port, memory=_mib(c.memory), cpus=c.cpus, seed=d.seed,
                                  no_reboot=d.no_reboot, restrict=d.restrict, qemu=c.qemu,
                                  name=c.name, disk_interface=d.interface, nic=d.nic) + list(c.extra_args)
        argv = [c.qemu, "-name", c.name, "-machine", "pc", *accel.args(),
                "-m", str(c.memory), "-smp", str(c.cpus),
                "-nodefaults", "-no-reboot", "-display", "none", "-monitor", "none",
                "-device", "pvpanic-pci", "-action", f"panic={c.panic_action}",
                "-chardev", f"socket,id=ser0,path={workdir / 'console.sock'},server=on,wait=on",
                "-serial", "chardev:ser0",
                "-qmp", f"unix:{workdir / 'qmp.sock'},server=on,wait=off",
                "-nic", f"user,model=virtio-net-pci,restrict=on,"
                        f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                "-device", "virtio-rng-pci",
                "-kernel", str(c.kernel)]
        if c.initrd:
            argv += ["-initrd", str(c.initrd)]
        if c.append:
            argv += ["-append", c.append]
        if c.vmstate_disk:
            argv += ["-drive", f"if=none,id=vmstate,format=qcow2,file={workdir / 'vmstate.qcow2'}"]
        if c.vmstate_from is not None:
            argv.append("-S")
        argv += list(c.extra_args)
        return argv

    @property
    def argv(self) -> list[str]:
        """The argv QEMU was (or will be) started with, for reports."""
        if self._argv is not None:
            return list(self._argv)
        accel = self.accel_choice or AccelChoice("tcg", "not started")
        return self.build_argv(accel, self.workdir or Path("<workdir>"), self.ssh_port or 0)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -----------------------------------------------------------
    def start(self, timeout: float = 30) -> "Machine":
        """Launch QEMU and connect console and QMP; raises LaunchError."""
        if self._proc is not None:
            raise MachineError("machine already started", self.argv)
        try:
            self._pre_launch()
            self._launch(timeout)
            self._post_launch(timeout)
        except BaseException as e:
            tail = self.console.tail() if self.console else ""
            stderr = self._stderr_text()
            self.kill()
            if isinstance(e, MachineError):
                raise
            if isinstance(e, (Exception,)):
                raise LaunchError(f"QEMU failed to start: {e}", self._argv or [], tail,
                                  stderr) from e
            raise
        return self

    def _pre_launch(self) -> None:
        if shutil.which(self.config.qemu) is None and not os.path.exists(self.config.qemu):
            raise LaunchError(f"{self.config.qemu} not found; {INSTALL_HINT}")
        self.accel_choice = choose_accel(self._requested_accel, self.config.qemu)
        sweep_stale_workdirs()
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        (self.workdir / OWNER_FILE).write_text(f"{os.getpid()}\n")
        logs = self._log_dir or self.workdir
        logs.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.serial_log = logs / f"{self.config.name}-{stamp}-{os.getpid()}-serial.log"
        self.stderr_log = logs / f"{self.config.name}-{stamp}-{os.getpid()}-qemu.log"
        if self.config.vmstate_from is not None:
            shutil.copyfile(self.config.vmstate_from, self.workdir / "vmstate.qcow2")
        elif self.config.vmstate_disk:
            p = subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2",
                                str(self.workdir / "vmstate.qcow2"), "64M"],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise LaunchError(f"qemu-img create failed: {p.stderr.strip()}; {INSTALL_HINT}")
        self.ssh_port = free_port()

    def _launch(self, timeout: float) -> None:
        assert self.workdir and self.accel_choice
        self._argv = self.build_argv(self.accel_choice, self.workdir, self.ssh_port)
        self._stderr_f = open(self.stderr_log, "wb")
        self._started_at = time.monotonic()
        self._proc = subprocess.Popen(self._argv, stdin=subprocess.DEVNULL,
                                      stdout=self._stderr_f, stderr=subprocess.STDOUT,
                                      start_new_session=True, preexec_fn=_child_setup)
        _LIVE.add(self)
        # the console socket is wait=on: QEMU waits for us before running the guest
        try:
            sock = connect_unix(self.workdir / "console.sock", timeout, self.is_running)
        except ConsoleError as e:
            self._raise_exit(LaunchError, f"QEMU did not open its console socket: {e}")
        self.console = Console(sock, self.serial_log, self.config.prompt)

    def _post_launch(self, timeout: float) -> None:
        from qemu.qmp.legacy import QEMUMonitorProtocol

        deadline = time.monotonic() + timeout
        path = str(self.workdir / "qmp.sock")
        last: Exception | None = None
        while True:
            if not self.is_running():
                self._raise_exit(LaunchError, "QEMU exited during start-up")
            if os.path.exists(path):
                q = QEMUMonitorProtocol(path)
                try:
                    q.connect(negotiate=True)
                    self.qmp = q
                    break
                except Exception as e:           # not listening yet
                    last = e
                    try:
                        q.close()
                    except Exception:
                        pass
            if time.monotonic() > deadline:
                raise LaunchError(f"cannot connect to QMP at {path}: {last}", self._argv or [])
            time.sleep(0.02)
        self.qmp.settimeout(60)
        kvm = self.qmp_cmd("query-kvm")
        self.accel = "kvm" if kvm.get("enabled") else "tcg"

    def wait_ready(self, timeout: float = 120, marker: str | None = None) -> float:
        """Wait for the guest's ready marker; returns seconds since QEMU start."""
        marker = marker or self.config.ready_marker
        if not marker:
            raise MachineError("no ready marker configured", self.argv)
        try:
            self.console.wait_for(marker, timeout)
        except ConsoleError as e:
            if not self.is_running() or self.console.closed:
                self._raise_exit(UnexpectedExit, f"QEMU exited before {marker!r}: {e.args[0].splitlines()[0]}")
            raise BootTimeout(f"{marker!r} not seen within {timeout:.0f} s "
                              f"(accel {self.accel})", self.argv, self.console.tail(),
                              self._stderr_text()) from None
        self.boot_seconds = time.monotonic() - (self._started_at or time.monotonic())
        return self.boot_seconds

    def ssh(self, timeout: float = 60, user: str = "root"):
        """An SSH connection to the guest (waits for the SSH banner first)."""
        from harness.ssh import SSH, wait_for_banner

        if not self.config.client_key or not self.config.host_key_pub:
            raise MachineError("ssh() needs client_key and host_key_pub in the config")
        wait_for_banner("127.0.0.1", self.ssh_port, timeout, alive=self.is_running)
        return SSH("127.0.0.1", self.ssh_port, self.config.client_key,
                   self.config.host_key_pub, user=user, timeout=timeout)

    # -- QMP -----------------------------------------------------------------
    def qmp_cmd(self, cmd: str, **args: Any) -> Any:
        if self.qmp is None:
            raise MachineError("QMP is not connected", self.argv)
        with self._qmp_lock:
            try:
                return self.qmp.cmd(cmd, **args)
            except Exception as e:
                raise MachineError(f"QMP {cmd} failed: {type(e).__name__}: {e}", self.argv,
                                   self.console.tail() if self.console else "",
                                   self._stderr_text()) from None

    def hmp(self, command: str) -> str:
        return self.qmp_cmd("human-monitor-command", **{"command-line": command}) or ""

    def panicked(self) -> bool:
        """True when the guest panicked and QEMU paused it (panic_action "pause")."""
        if not self.is_running() or self.qmp is None:
            return False
        try:
            return self.qmp_cmd("query-status").get("status") == "guest-panicked"
        except MachineError:
            return False

    def savevm(self, tag: str) -> float:
        """HMP savevm into the scratch qcow2; returns seconds taken."""
        return self._snapshot("savevm", tag)

    def loadvm(self, tag: str) -> float:
        """HMP loadvm; returns seconds taken.  Open SSH sessions do not survive."""
        return self._snapshot("loadvm", tag)

    def delvm(self, tag: str) -> float:
        return self._snapshot("delvm", tag)

    def _snapshot(self, op: str, tag: str) -> float:
        if not self.config.vmstate_disk:
            raise SnapshotError(f"{op} needs vmstate_disk=True", self.argv)
        if not tag or any(ch.isspace() for ch in tag):
            raise SnapshotError(f"bad snapshot tag {tag!r}", self.argv)
        t = time.monotonic()
        out = self.hmp(f"{op} {tag}").strip()
        if out:
            raise SnapshotError(f"{op} {tag} failed: {out}", self.argv,
                                self.console.tail() if self.console else "")
        return time.monotonic() - t

    # -- exit ----------------------------------------------------------------
    def wait_exit(self, timeout: float | None = None) -> int | None:
        """Wait for QEMU to exit; its status, or None if still running."""
        if self._proc is None:
            return self.exitcode
        try:
            rc = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._post_shutdown()
        return rc

    def shutdown(self, timeout: float = 10) -> int | None:
        """Stop the guest: poweroff -f on the console, QMP quit, then SIGKILL."""
        if self._proc is None:
            return self.exitcode
        if self.is_running() and self.console and not self.console.closed:
            try:
                self.console.sendline("poweroff -f")
            except ConsoleError:
                pass
            if self.wait_exit(min(timeout, 3)) is not None:
                return self.exitcode
        if self.is_running() and self.qmp is not None:
            try:
                with self._qmp_lock:
                    self.qmp.cmd("quit")
            except Exception:
                pass
            if self.wait_exit(timeout) is not None:
                return self.exitcode
        self.kill()
        return self.exitcode

    def kill(self) -> None:
        """SIGKILL QEMU's whole process group and clean up (idempotent)."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._post_shutdown()

    def _post_shutdown(self) -> None:
        if self._proc is not None:
            rc = self._proc.poll()
            if rc is not None:
                self.exitcode = rc
            # reap anything left in the group (QEMU has no helpers, but be sure)
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except OSError:
                pass
            if rc is None:
                return
        if self.qmp is not None:
            try:
                self.qmp.close()
            except Exception:
                pass
            self.qmp = None
        if self.console is not None:
            self.console.close()
        if getattr(self, "_stderr_f", None):
            self._stderr_f.close()
            self._stderr_f = None
        if self.workdir and self.workdir.exists():
            for n in ("vmstate.qcow2", "console.sock", "qmp.sock"):
                try:
                    (self.workdir / n).unlink()
                except OSError:
                    pass
            if self._log_dir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
        _LIVE.discard(self)

    def _stderr_text(self) -> str:
        try:
            text = self.stderr_log.read_text(errors="replace") if self.stderr_log else ""
            return "\n".join(l for l in text.splitlines() if "QEMU waiting for connection" not in l)
        except OSError:
            return ""

    def _raise_exit(self, cls: type, message: str):
        rc = self._proc.poll() if self._proc else None
        if rc is not None:
            message += f" (exit status {rc})"
        raise cls(message, self._argv or [], self.console.tail() if self.console else "",
                  self._stderr_text())

    def __enter__(self) -> "Machine":
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown(timeout=5)

    def __del__(self) -> None:
        try:
            if self._proc is not None and self._proc.poll() is None:
                self.kill()
        except Exception:
            pass
