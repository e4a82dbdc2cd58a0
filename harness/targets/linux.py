"""The Linux target: a Debian kernel in QEMU running the Linux port of ddih.

Stages: build (or reuse) the guest image from Debian packages; build the
module against the image's headers and the static op runner on the host;
boot; upload both over SSH; insmod; save the ready guest (``savevm``) so a
dead one is replaced by ``loadvm`` in a fraction of a boot.  Running traces
and classifying what the guest did are harness.targets.base.GuestTarget's
(results travel on the SSH channel, never the console).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness import panics
from harness.images import LinuxImage, build_linux_image, image_problems
from harness.machine import Machine, MachineConfig
from harness.resources import GUEST, KMOD, LIBDDIH
from harness.ssh import quote
from harness.targets.base import NO_MESSAGE, Facts, GuestTarget, Log, TargetError, UnloadResult

GUEST_DIR = "/tmp/ddih"


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
        shutil.copy2(KMOD / "linux" / f, src / f)
    shutil.copy2(KMOD / "ddih_ioctl.h", build_dir / "ddih_ioctl.h")
    _make(["make", "-s", "-C", str(image.headers_dir), f"M={src}", "modules"], "building the ddih module")
    ko = src / "ddih.ko"
    _make(["strip", "--strip-debug", str(ko)], "stripping ddih.ko")
    return ko


DDICTL_FLAGS = ("-O2", "-static", "-Wall", "-Werror")


def build_ddictl(build_dir: Path) -> Path:
    """Build the static op runner guest/ddictl on the host, with guest/libddih."""
    out = build_dir / "ddictl"
    _make(["gcc", *DDICTL_FLAGS, f"-I{KMOD}", f"-I{LIBDDIH}", "-o", str(out),
           str(GUEST / "ddictl.c"), str(LIBDDIH / "ddih.c"), "-lpthread"], "building guest/ddictl")
    return out


# What a build of the driver and ddictl reads: if none of it changed, neither did the result.
BUILD_INPUTS = (KMOD / "linux" / "ddih.c", KMOD / "linux" / "Makefile", KMOD / "ddih_ioctl.h",
                GUEST / "ddictl.c", GUEST / "lineproto.h", LIBDDIH / "ddih.c", LIBDDIH / "ddih.h")


def build_key(image_key: str, inputs: tuple[Path, ...] = BUILD_INPUTS, compiler: str | None = None) -> str:
    """The cache key of a build: every source, the image (its kernel headers), the compiler's
    version and the flags.  A change to any of them is a new key, so a new build."""
    if compiler is None:
        compiler = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
    h = hashlib.sha256(f"{image_key}\n{compiler}\n{' '.join(DDICTL_FLAGS)}\n".encode())
    for p in inputs:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def cached_build(image: LinuxImage, build_dir: Path, log: Log = lambda s: None) -> tuple[Path, Path, bool]:
    """ddih.ko and ddictl for this image and these sources: from the build cache when they were
    built before (milliseconds), else built now and kept there.  (ko, ddictl, reused)."""
    from harness.images import cache_root

    key = build_key(image.key)
    entry = cache_root() / "builds" / "linux" / key
    ko, ddictl = entry / "ddih.ko", entry / "ddictl"
    if ko.is_file() and ddictl.is_file():
        return ko, ddictl, True
    fresh_ko, fresh_ddictl = build_module(image, build_dir), build_ddictl(build_dir)
    tmp = entry.with_name(f".{key}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy2(fresh_ko, tmp / "ddih.ko")
    shutil.copy2(fresh_ddictl, tmp / "ddictl")
    try:
        os.rename(tmp, entry)  # atomic: a concurrent build of the same key wins or loses whole
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"driver and ddictl built and kept in the build cache ({key})")
    return ko, ddictl, False


@dataclass
class LinuxFacts(Facts):
    """The Linux guest's facts: the common ones plus the snapshot figures."""

    target: str = "linux"
    ready_s: float = 0.0  # cold: QEMU start to driver loaded and SSH up
    snapshot_s: float = 0.0  # savevm of the ready guest
    restores: int = 0  # guests replaced by loadvm of the ready snapshot
    restore_s: float = 0.0  # the last restore: loadvm + cont (the guest is back in its ready state)
    reconnect_s: float = 0.0  # then a new SSH connection (the old one died with the old state)
    restore_failures: int = 0  # restores that failed and fell back to a fresh boot
    build_cached: bool = False  # the driver and ddictl came from the build cache
    warm_start: bool = False  # the first guest came from the saved ready guest in the cache
    warm_start_failures: int = 0  # warm starts that failed and fell back to a cold boot
    cold_boot_to_ready_s: float = 0.0  # the last cold boot: QEMU start to driver loaded, SSH up
    warm_boot_to_ready_s: float = 0.0  # the last warm start: QEMU start to loadvm'ed, SSH up


class LinuxTarget(GuestTarget):
    name = "linux"
    model_name = "linux"
    os = "linux"
    console_os = "linux"
    streaming = True
    reports_layout = True  # the layout=on control line: each map's whole layout after every step
    reloadable = True
    faults = frozenset({"rmfree_off_by_one", "umem_not_zeroed", "kmem_bad_offset", "wait_never_woken"})

    def __init__(self, workdir: Path, destructive: bool = False, accel: str = "auto",
                 log: Log = lambda s: None, progress=None, fault: str = "", snapshots: bool = True,
                 warm: bool = True) -> None:
        super().__init__(workdir, destructive=destructive, accel=accel, log=log, progress=progress)
        self.fault = fault  # faults the driver injects on purpose (kmod/linux/ddih.c)
        # snapshots: QEMU pauses a panicked guest instead of exiting, and the guest is
        # replaced by loadvm of the ready state (driver loaded) instead of a cold boot
        self.snapshots = snapshots
        # warm: start from the ready guest saved in the cache instead of booting; False forces a
        # cold boot (--cold).  Every cold boot saves its ready guest there for the next run.
        self.warm = warm and snapshots
        self.facts = LinuxFacts()
        self.image: LinuxImage | None = None
        self.ko: Path | None = None
        self.ddictl: Path | None = None

    @classmethod
    def from_options(cls, name, options, workdir, *, log=lambda s: None, progress=None) -> "LinuxTarget":
        t = cls(workdir, destructive=options.destructive, accel=options.accel, log=log, progress=progress,
                fault=options.fault, warm=not options.cold)
        t.layout = options.layout
        return t

    @property
    def pauses_on_panic(self) -> bool:
        return self.snapshots

    def ddictl_command(self) -> str:
        return f"{GUEST_DIR}/ddictl"

    def panic_message(self, findings: list) -> str:
        """The root cause first (``kernel BUG at ...``), then the panic line it led to."""
        first = panics.first_fatal(findings)
        final = panics.panic_message(findings)
        if first is None:
            return NO_MESSAGE
        if final and final != first.title and final not in first.title:
            return f"{first.title} / {final}"
        return first.title

    # ---------------------------------------------------------------- lifecycle

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log("guest image: building or reusing the cached Debian image")
        t = time.monotonic()
        self.image = build_linux_image(progress=self.progress)
        self.facts.phase("image", time.monotonic() - t)
        self.facts.guest_kernel = self.image.kernel_release
        self.facts.guest_kernel_package = self.image.kernel_version
        self.facts.image_key = self.image.key
        t = time.monotonic()
        build = self.workdir / "build"
        build.mkdir(exist_ok=True)
        self.ko, self.ddictl, reused = cached_build(self.image, build, self.log)
        self.facts.build_cached = reused
        self.facts.driver_build_s = round(time.monotonic() - t, 2)
        self.facts.phase("build", time.monotonic() - t)
        self.log(f"driver and ddictl {'from the build cache' if reused else 'built'} in "
                 f"{self.facts.driver_build_s} s")

    def _config(self, **kw) -> MachineConfig:
        return MachineConfig.from_image(self.image, accel=self.accel,
                                        panic_action="pause" if self.snapshots else "exit-failure", **kw)

    def _warm_dir(self) -> Path:
        """The saved ready guest for exactly this image, build, QEMU and driver settings."""
        from harness.images import cache_root

        qemu = subprocess.run([self._config().qemu, "--version"], capture_output=True, text=True).stdout
        c = self._config()
        h = hashlib.sha256("\n".join([self.image.key, build_key(self.image.key), qemu, self.accel,
                                       str(c.memory), str(c.cpus), c.append, c.panic_action,
                                       f"destructive={int(self.destructive)}", f"fault={self.fault}"]).encode())
        return cache_root() / "warm" / "linux" / h.hexdigest()[:16]

    def _warm_start(self) -> bool:
        """Start QEMU paused on a copy of the saved ready guest, loadvm it, and reconnect: the
        driver is already loaded.  False (counted) when that fails: the caller boots cold."""
        saved = self._warm_dir() / "vmstate.qcow2"
        if not self.warm or not saved.is_file():
            return False
        self.facts.boots += 1
        m = Machine(self._config(vmstate_from=saved), log_dir=self.workdir / f"guest-{self.facts.boots}")
        self.machine = m
        t0 = time.monotonic()
        try:
            m.start()
            m.loadvm("ready")
            m.qmp_cmd("cont")
            self.ssh = m.ssh(timeout=30)
            self.outstanding()  # the driver answers: it was loaded when the guest was saved
        except Exception as e:
            self.facts.warm_start_failures += 1
            self.log(f"warm start failed ({type(e).__name__}: {e}); booting cold")
            self.close()
            return False
        self.facts.accelerator = m.accel or ""
        self.facts.accelerator_reason = getattr(m.accel_choice, "reason", "")
        self.facts.qemu_argv = m.argv
        self.facts.warm_start = True
        self.facts.warm_boot_to_ready_s = self.facts.ready_s = round(time.monotonic() - t0, 2)
        self.facts.phase("boot", time.monotonic() - t0)
        m.console.new_text()
        self.log(f"guest up in {self.facts.ready_s} s from the saved ready guest ({self.facts.accelerator})")
        return True

    def _keep_warm(self) -> None:
        """After a cold boot's savevm: keep the ready guest in the cache for the next run."""
        d = self._warm_dir()
        if (d / "vmstate.qcow2").is_file() or self.machine is None:
            return
        tmp = d.with_name(f".{d.name}.tmp-{os.getpid()}")
        try:
            tmp.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.machine.workdir / "vmstate.qcow2", tmp / "vmstate.qcow2")
            os.rename(tmp, d)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)

    def boot(self) -> None:
        assert self.image and self.ko and self.ddictl, "prepare() first"
        bad = image_problems(self.image, digests=False)  # sizes: cheap enough for every boot
        if bad:
            raise TargetError(f"the cached Linux image is damaged ({'; '.join(bad)}); rebuild it with "
                              "`ddi-harness image build linux --rebuild`")
        if self.facts.boots == 0 and self._warm_start():
            return
        self.facts.boots += 1
        cfg = self._config()
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
            self.facts.phase("boot", time.monotonic() - t0)
            t1 = time.monotonic()
            self.ssh.run(f"mkdir -p {GUEST_DIR}", timeout=30)
            self.ssh.put(self.ko, f"{GUEST_DIR}/ddih.ko", 0o600)
            self.ssh.put(self.ddictl, f"{GUEST_DIR}/ddictl", 0o700)
            self.load_driver()
            self.facts.ready_s = round(time.monotonic() - t0, 2)
            self.facts.phase("driver load", time.monotonic() - t1)
            m.console.new_text()  # boot noise is not a step's business
            t2 = time.monotonic()
            self._save_ready()
            if self.snapshots:
                self.facts.phase("snapshot", time.monotonic() - t2)
                self._keep_warm()
            self.facts.cold_boot_to_ready_s = self.facts.ready_s
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

    # ---------------------------------------------------------------- driver state

    def outstanding(self) -> int:
        if self.ssh is None:
            raise TargetError("the linux guest is not up")
        r = self.ssh.run("cat /sys/module/ddih/parameters/outstanding", timeout=30)
        return int(r.stdout.strip())

    def unload(self) -> UnloadResult:
        """rmmod the driver, after reading what it still holds."""
        if not self.alive() or self.ssh is None:
            return UnloadResult(False, -1, "the guest was not running at the end of the run")
        left = self.outstanding()
        r = self.ssh.run("rmmod ddih", timeout=60)
        return UnloadResult(r.status == 0, left, "" if r.status == 0 else f"rmmod: {r.stderr.strip()}")
