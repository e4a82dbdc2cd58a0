"""The illumos targets: OpenIndiana Hipster and OmniOS CE cloud images in QEMU.

Stages (the recipe is written out in README.md, "illumos guests"):

1. ``prepare()``: fetch and verify the cloud image (harness.fetch), then make
   or reuse the *provisioned base*: a qcow2 whose backing file is the fetched
   raw/qcow2 disk, kept under ``<cache>/illumos/<distro>/base-<key>/`` where
   key = sha256(image sha256, recipe hash, kmem_flags).  Provisioning boots
   the base with its disk writable and runs harness.provision's recipe:
   OpenIndiana over the serial console, OmniOS through a cloud-init NoCloud
   seed and then over SSH.  The guest powers off and the qcow2
   becomes the base.
2. ``boot()``: a throwaway qcow2 overlay of the base, ``-no-reboot``; wait for
   the SSH banner; upload kmod/illumos, kmod/ddih_ioctl.h and guest/ddictl.c;
   build the driver with its Makefile (gmake) and ddictl with gcc in the
   guest; install and add_drv.
3. ``run_trace()``: harness.targets.base.GuestTarget's rules, with the
   console read by the illumos recogniser; an uninterruptible rmalloc_wait
   (a hang) is recorded and the guest replaced.
4. ``unload()``: rem_drv after reading the driver's outstanding counter.

Nothing here has run against a live illumos guest (no image can be
downloaded where this was written); the console state machine is tested on
recorded transcripts (tests/unit/test_provision.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import panics
from harness.machine import QEMU_IMG, AccelChoice, DiskBoot, Machine, MachineConfig, choose_accel, disk_boot_argv
from harness.provision import (ROOT_LOCKED_NOTE, ConsoleProvisioner, NeedFallback, ProvisionError,
                               SSHProvisioner, omnios_recipe, openindiana_recipe, recipe_hash)
from harness.resources import GUEST, KMOD, LIBDDIH
from harness.ssh import SSHError, quote
from harness.targets.base import NO_MESSAGE, Facts, GuestTarget, Log, TargetError, UnloadResult

GUEST_DIR = "/tmp/ddih"
DRIVER = "ddih"
DISTROS = ("openindiana", "omnios")
DEFAULT_GROW = "24G"           # the provisioning qcow2's virtual size: room for rpool to grow into
HOSTNAME = "ddih"


# The QEMU command line of an illumos guest is a disk boot (harness.machine.disk_boot_argv).
illumos_qemu_argv = disk_boot_argv

DEFAULT_MEMORY = "4096M"       # the recipes that boot these images use 4-6 GiB (README.md, "illumos guests")


# --------------------------------------------------------------------------- cache layout

def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    from harness.images import cache_root as root
    return root(cache_dir) / "illumos"


def client_key(cache_dir: str | os.PathLike | None = None, create: bool = True) -> tuple[Path, str] | None:
    """The harness's SSH key for illumos guests (ed25519, shared by both distributions)."""
    from harness.images import make_client_key

    d = cache_root(cache_dir) / "keys"
    key = d / "id_ed25519"
    if not key.exists():
        if not create:
            return None
        d.mkdir(parents=True, exist_ok=True)
        make_client_key(key)
    pub = Path(str(key) + ".pub").read_text().strip()
    return key, pub


def recipe_for(distro: str, pubkey: str, kmem_flags: int = 0, accel: str = "kvm"):
    if distro == "openindiana":
        return openindiana_recipe(pubkey, kmem_flags, accel=accel)
    if distro == "omnios":
        return omnios_recipe(kmem_flags, accel=accel)
    raise ValueError(f"unknown illumos distribution {distro!r} (use {' or '.join(DISTROS)})")


def distro_recipe_hash(distro: str, pubkey: str, kmem_flags: int = 0) -> str:
    extra = {"distro": distro, "kmem_flags": kmem_flags}
    if distro == "omnios":
        extra["ssh_pubkey"] = pubkey          # goes in through the seed, not a console line
    return recipe_hash(recipe_for(distro, pubkey, kmem_flags), extra)


def base_key(image_sha256: str, rhash: str, kmem_flags: int) -> str:
    return hashlib.sha256(f"{image_sha256}\n{rhash}\n{kmem_flags:#x}\n".encode()).hexdigest()[:16]


def base_dir_for(distro: str, image_sha256: str, pubkey: str, kmem_flags: int = 0,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    rhash = distro_recipe_hash(distro, pubkey, kmem_flags)
    return cache_root(cache_dir) / distro / f"base-{base_key(image_sha256, rhash, kmem_flags)}"


def load_base(d: Path) -> dict | None:
    try:
        meta = json.loads((d / "base.json").read_text())
    except (OSError, ValueError):
        return None
    if not (d / "base.qcow2").exists() or not meta.get("host_key_pub"):
        return None
    return meta


def base_status(distro: str, kmem_flags: int = 0, cache_dir: str | os.PathLike | None = None,
                verify: bool = False) -> tuple[bool, str]:
    """(present, detail) of the provisioned base for the current recipe (for `doctor`)."""
    from harness import fetch

    img = fetch.cached_image(distro, cache_dir=cache_dir, verify=verify)
    if img is None:
        return False, f"the {distro} image is not downloaded yet"
    keys = client_key(cache_dir, create=False)
    if keys is None:
        return False, "no SSH key yet (made with the first provisioning)"
    d = base_dir_for(distro, img.sha256, keys[1], kmem_flags, cache_dir)
    meta = load_base(d)
    if meta is None:
        return False, f"no provisioned base at {d} for the current recipe"
    return True, f"{d} (provisioned {meta.get('created', '?')})"


def _qemu_img(*args: str, what: str) -> str:
    try:
        p = subprocess.run([QEMU_IMG, *args], capture_output=True, text=True)
    except OSError as e:
        raise TargetError(f"{what}: cannot run {QEMU_IMG}: {e}") from None
    if p.returncode != 0:
        raise TargetError(f"{what} failed: {QEMU_IMG} {' '.join(args)}\n{p.stderr.strip()}")
    return p.stdout


def make_overlay(backing: Path, backing_format: str, out: Path, size: str | None = None) -> Path:
    """``qemu-img create -f qcow2 -F <fmt> -b <backing> <out> [size]``."""
    args = ["create", "-q", "-f", "qcow2", "-F", backing_format, "-b", str(Path(backing).resolve()), str(out)]
    if size:
        args.append(size)
    _qemu_img(*args, what=f"creating the overlay {out}")
    return out


def wait_for_banner_or_none(m: Machine, timeout: float) -> None:
    """Wait for sshd's banner on the guest's forwarded port (SSHError "no SSH banner ..." when none)."""
    from harness.ssh import wait_for_banner

    wait_for_banner("127.0.0.1", m.ssh_port, timeout, alive=m.is_running)


def scan_host_key(port: int, timeout: float = 30) -> str:
    """The guest's ssh-ed25519 host key, read from the SSH handshake (trust on first use)."""
    import paramiko

    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    t = paramiko.Transport(sock)
    try:
        t.get_security_options().key_types = ["ssh-ed25519"]
        t.start_client(timeout=timeout)
        key = t.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    finally:
        t.close()


# --------------------------------------------------------------------------- facts

@dataclass
class IllumosFacts(Facts):
    """The illumos guest's facts: the common ones plus image, recipe and device."""

    target: str = "openindiana"
    distro: str = "openindiana"
    image_sha256: str = ""
    image_url: str = ""
    recipe_hash: str = ""
    kmem_flags: int = 0
    device: str = ""
    provision_s: float = 0.0
    disk_interface: str = ""                # virtio or the fallback ahci
    nic: str = ""                           # virtio-net-pci or the fallback e1000
    provision_recoveries: list[str] = field(default_factory=list)   # fallbacks, maintenance recoveries


# --------------------------------------------------------------------------- target

class IllumosTarget(GuestTarget):
    model_name = "illumos"
    os = "illumos"
    console_os = "illumos"
    reports_layout = True  # the layout=on control line: each map's whole layout after every step
    # rmalloc_wait sleeps in cv_wait, which no signal interrupts: the thread (and the driver)
    # can never be released, so after a hang the guest is replaced before the next trace
    hang_replaces_guest = True
    reloadable = True  # by replacing the guest
    debug_kernel = False  # OpenIndiana and OmniOS ship non-DEBUG kernels
    death_grace_s = 3.0  # halt_on_panic=1: a panicked guest halts; -no-reboot covers the rest
    # the illumos driver cannot observe which kmem cache a buffer came from
    unobservable = frozenset({("kmem_alloc", "value"), ("kmem_zalloc", "value")})

    def __init__(self, workdir: Path, distro: str = "openindiana", destructive: bool = False,
                 accel: str = "auto", log: Log = lambda s: None, progress=None,
                 kmem_flags: int = 0, cache_dir: str | os.PathLike | None = None) -> None:
        if distro not in DISTROS:
            raise ValueError(f"unknown illumos distribution {distro!r} (use {' or '.join(DISTROS)})")
        super().__init__(workdir, destructive=destructive, accel=accel, log=log, progress=progress)
        self.name = distro
        self.distro = distro
        self.kmem_flags = int(kmem_flags)
        self.cache_dir = cache_dir
        self.facts = IllumosFacts(target=distro, distro=distro, kmem_flags=self.kmem_flags)
        self.image = None
        self.base: Path | None = None
        self.base_meta: dict | None = None
        self.key: Path | None = None
        self.pubkey = ""
        self.accel_choice: AccelChoice | None = None
        self.device = ""

    @classmethod
    def from_options(cls, name, options, workdir, *, log=lambda s: None, progress=None) -> "IllumosTarget":
        t = cls(workdir, distro=name, destructive=options.destructive, accel=options.accel, log=log,
                progress=progress, kmem_flags=options.kmem_flags)
        t.layout = options.layout
        return t

    def reload(self, fault: str | None = None, destructive: bool | None = None) -> None:
        """A new driver mode needs a new guest: ddih.conf is read at attach (no fault injection)."""
        if fault:
            raise TargetError(f"the {self.name} driver has no fault injection")
        if destructive is not None and destructive != self.destructive:
            self.destructive = destructive
            self.replace_guest()

    # ------------------------------------------------------------ settings from the manifest
    def _guest(self, key: str, default):
        g = getattr(getattr(self.image, "manifest", None), "guest", None) or {}
        return g.get(key, default)

    def _boot_timeout(self) -> float:
        t = self._guest("boot_timeout", {"kvm": 600, "tcg": 1800})
        acc = self.accel_choice.accel if self.accel_choice else "tcg"
        return float(t.get(acc, 1800) if isinstance(t, dict) else t)

    def _models(self) -> list[tuple[str, str]]:
        """The (disk interface, NIC) of the first boot, then the manifest's fallbacks."""
        disk = str(self._guest("disk_interface", "virtio"))
        nic = str(self._guest("nic", "virtio-net-pci"))
        return [(disk, nic), (str(self._guest("disk_fallback", "ahci")), str(self._guest("nic_fallback", "e1000")))]

    def _config(self, name: str, disk: DiskBoot) -> MachineConfig:
        return MachineConfig(disk=disk, memory=str(self._guest("memory", DEFAULT_MEMORY)),
                             cpus=int(self._guest("cpus", 2)), accel=self.accel, name=name,
                             client_key=self.key, host_key_pub=(self.base_meta or {}).get("host_key_pub"),
                             vmstate_disk=False)

    # ------------------------------------------------------------ prepare
    def prepare(self) -> None:
        from harness import fetch

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log(f"{self.distro}: fetching or reusing the cloud image")
        self.image = fetch.fetch_image(self.distro, cache_dir=self.cache_dir, progress=self.progress)
        self.facts.image_sha256 = self.image.sha256
        self.facts.image_url = getattr(self.image, "url", "")
        self.key, self.pubkey = client_key(self.cache_dir)
        self.accel_choice = choose_accel(self.accel)
        self.facts.accelerator = self.accel_choice.accel
        self.facts.accelerator_reason = self.accel_choice.reason
        rhash = distro_recipe_hash(self.distro, self.pubkey, self.kmem_flags)
        self.facts.recipe_hash = rhash
        d = base_dir_for(self.distro, self.image.sha256, self.pubkey, self.kmem_flags, self.cache_dir)
        self.facts.image_key = d.name
        d.parent.mkdir(parents=True, exist_ok=True)
        with open(d.parent / ".lock", "a+") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            try:
                meta = load_base(d)
                if meta is None:
                    self.log(f"{self.distro}: provisioning a new base image {d.name} "
                             f"(once per image and recipe; needs network)")
                    meta = self._provision(d, rhash)
                else:
                    self.log(f"{self.distro}: reusing the provisioned base {d}")
            finally:
                fcntl.flock(lockf, fcntl.LOCK_UN)
        self.base, self.base_meta = d, meta
        self.facts.provision_s = float(meta.get("provision_s", 0.0))
        if not self.facts.provision_recoveries:
            self.facts.provision_recoveries = list(meta.get("recoveries") or [])
        self.facts.disk_interface = meta.get("disk_interface", "virtio")
        self.facts.nic = meta.get("nic", "virtio-net-pci")

    def _provision(self, final: Path, rhash: str) -> dict:
        img = self.image
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        t0 = time.monotonic()
        m: Machine | None = None
        (disk_if, nic), (disk_fb, nic_fb) = self._models()
        tried: list[str] = []
        try:
            seed = None
            if self.distro == "omnios":
                from harness import fetch
                seed = fetch.make_nocloud_seed(tmp / "seed.iso", self.pubkey, HOSTNAME)
            for attempt in range(1, 4):       # the first boot, then at most one disk and one NIC fallback
                # every try is a first boot: a fresh overlay (path_to_inst, cloud-init instance)
                (tmp / "base.qcow2").unlink(missing_ok=True)
                disk = make_overlay(Path(img.path), getattr(img, "format", "raw"), tmp / "base.qcow2",
                                    str(self._guest("disk_grow_target", DEFAULT_GROW)))
                boot = DiskBoot(disk, seed=seed, no_reboot=False, restrict=False, interface=disk_if, nic=nic)
                logs = tmp / ("logs" if attempt == 1 else f"logs-{attempt}")
                m = Machine(self._config(f"ddih-provision-{self.distro}", boot), log_dir=logs, accel=self.accel)
                self.facts.disk_interface, self.facts.nic = disk_if, nic
                m.start()
                self.facts.qemu_argv = m.argv
                try:
                    host_key = self._run_recipe(m)
                    break
                except NeedFallback as e:
                    m.kill()
                    m = None
                    tried.append(f"{disk_if} disk + {nic} NIC: {e.why}")
                    if e.kind == "disk" and disk_if != disk_fb:
                        note = f"no usable disk with {disk_if} ({e.detail}); booting again with {disk_fb}"
                        disk_if = disk_fb
                    elif e.kind == "nic" and nic != nic_fb:
                        note = f"no network link with {nic} ({e.detail}); booting again with {nic_fb}"
                        nic = nic_fb
                    else:
                        raise ProvisionError(e.step, e.waited_for, f"{e.why}; the fallback models did not "
                                             f"help either (tried: {' | '.join(tried)})", e.tail) from None
                    self.log(f"{self.distro}: {note}")
                    self.facts.provision_recoveries.append(note)
            if m.is_running() and m.wait_exit(120) is None:
                raise TargetError("provisioning finished but QEMU did not exit after the poweroff")
            meta = {"distro": self.distro, "image_sha256": img.sha256, "image_path": str(img.path),
                    "image_format": getattr(img, "format", "raw"), "recipe_hash": rhash,
                    "kmem_flags": self.kmem_flags, "host_key_pub": host_key,
                    "seed": "seed.iso" if seed else None, "accelerator": m.accel,
                    "disk_interface": disk_if, "nic": nic,
                    "recoveries": list(self.facts.provision_recoveries),
                    "provision_s": round(time.monotonic() - t0, 1),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (tmp / "base.json").write_text(json.dumps(meta, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            self.log(f"{self.distro}: base provisioned in {meta['provision_s']} s: {final}")
            return meta
        except ProvisionError as e:
            raise TargetError(f"provisioning the {self.distro} base failed (serial logs kept in "
                              f"{tmp}/logs*):\n{e}") from None
        finally:
            if m is not None:
                m.kill()
            if tmp.exists() and not (tmp / "base.json").exists():
                # keep the logs of a failed provisioning next to the cache for the user
                failed = final.parent / f"failed-{final.name}"
                shutil.rmtree(failed, ignore_errors=True)
                try:
                    (tmp / "base.qcow2").unlink(missing_ok=True)
                    os.rename(tmp, failed)
                except OSError:
                    shutil.rmtree(tmp, ignore_errors=True)

    def _run_recipe(self, m: Machine) -> str:
        """Run the distribution's recipe on a started provisioning machine; the pinned host key.

        Raises NeedFallback when the disk or NIC model does not work (the caller boots again).
        """
        steps = recipe_for(self.distro, self.pubkey, self.kmem_flags, m.accel or "tcg")
        state: dict[str, str] = {}

        def verify_ssh() -> None:
            if "host_key" not in state:
                state["host_key"] = (prov.results.get("host-key") if self.distro == "openindiana"
                                     else scan_host_key(m.ssh_port))
            self._ssh_twice(m, state["host_key"], timeout=self._boot_timeout())

        if self.distro == "openindiana":
            prov = ConsoleProvisioner(m.console, steps, log=self.log, wait_exit=m.wait_exit,
                                      host_actions={"verify-ssh": verify_ssh})
            try:
                prov.run()
            finally:
                self.facts.provision_recoveries.extend(prov.recoveries)
            return prov.results["host-key"]
        # OmniOS: wait for console-login (after cloud-init:final), then SSH.  cloud-init has locked
        # root's password, so a maintenance prompt is bypassed with control-d, never logged into.
        prov = ConsoleProvisioner(m.console, [s for s in steps if s.name in ("wait-boot", "wait-login")],
                                  log=self.log, console_login=False)
        try:
            prov.run()
        finally:
            self.facts.provision_recoveries.extend(prov.recoveries)

        def first_ssh() -> None:
            try:
                if "host_key" not in state:
                    wait_for_banner_or_none(m, self._boot_timeout())
                verify_ssh()
            except (SSHError, TargetError, OSError) as e:
                text = str(e)
                if "no SSH banner" in text:
                    # console login came (cloud-init final ran) but sshd never answered: no link
                    raise NeedFallback("nic", "verify-ssh", ["an SSH banner on the forwarded port"],
                                       f"{text.splitlines()[0]}", m.console.tail(20)) from None
                raise TargetError(f"{text}; {ROOT_LOCKED_NOTE}") from None

        def ssh_factory():
            return self._connect(m, state["host_key"], timeout=120)

        sp = SSHProvisioner(ssh_factory, steps, log=self.log, wait_exit=m.wait_exit,
                            console_tail=lambda: m.console.tail(20),
                            host_actions={"verify-ssh": first_ssh, "reconnect": verify_ssh})
        sp.run()
        return state["host_key"]

    def _connect(self, m: Machine, host_key: str, timeout: float):
        from harness.ssh import SSH, wait_for_banner

        wait_for_banner("127.0.0.1", m.ssh_port, timeout, alive=m.is_running)
        return SSH("127.0.0.1", m.ssh_port, self.key, host_key, user="root", timeout=60)

    def _ssh_twice(self, m: Machine, host_key: str, timeout: float) -> None:
        """SSH works two times in a row (sshd is restarted once after the first boot)."""
        deadline = time.monotonic() + timeout
        ok, last = 0, ""
        while ok < 2:
            if time.monotonic() > deadline:
                raise TargetError(f"SSH as root did not work twice in a row within {timeout:.0f} s: {last}")
            try:
                s = self._connect(m, host_key, timeout=max(5.0, deadline - time.monotonic()))
                try:
                    s.run("true", timeout=30, check=True)
                finally:
                    s.close()
                ok += 1
            except SSHError as e:
                ok, last = 0, str(e)
                time.sleep(2)
            time.sleep(1)

    # ------------------------------------------------------------ boot
    def boot(self) -> None:
        assert self.base and self.base_meta, "prepare() first"
        self.facts.boots += 1
        gdir = self.workdir / f"guest-{self.facts.boots}"
        gdir.mkdir(parents=True, exist_ok=True)
        disk = make_overlay(self.base / "base.qcow2", "qcow2", gdir / "disk.qcow2")
        seed = self.base / self.base_meta["seed"] if self.base_meta.get("seed") else None
        boot = DiskBoot(disk, seed=seed, interface=self.base_meta.get("disk_interface", "virtio"),
                        nic=self.base_meta.get("nic", "virtio-net-pci"))
        m = Machine(self._config(f"ddih-{self.distro}", boot), log_dir=gdir, accel=self.accel)
        self.facts.disk_interface, self.facts.nic = boot.interface, boot.nic
        self.machine = m
        try:
            t0 = time.monotonic()
            m.start()
            self.facts.accelerator = m.accel or ""
            self.facts.qemu_argv = m.argv
            self.ssh = self._ready_ssh(m)
            self.facts.boot_to_ready_s = round(time.monotonic() - t0, 2)
            self._install_driver()
            m.console.new_text()  # boot noise is not a step's business
        except Exception:
            self.close()
            raise
        self.log(f"guest up in {self.facts.boot_to_ready_s} s ({self.facts.accelerator}), "
                 f"driver loaded at {self.device}")

    def _ready_ssh(self, m: Machine):
        """SSH once sshd answers (banner first); retried because sshd may restart once at boot."""
        deadline = time.monotonic() + self._boot_timeout()
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                s = self._connect(m, self.base_meta["host_key_pub"], timeout=max(5.0, deadline - time.monotonic()))
                s.run("true", timeout=30, check=True)
                return s
            except SSHError as e:
                last = e
                if not m.is_running():
                    break
                time.sleep(2)
        tail = m.console.tail(20) if m.console else ""
        raise TargetError(f"the {self.distro} guest did not accept SSH within {self._boot_timeout():.0f} s: "
                          f"{last}\n--- last console lines ---\n{tail}")

    def _sources(self) -> list[tuple[Path, str]]:
        src = KMOD / "illumos"
        files = [p for p in sorted(src.iterdir()) if p.is_file() and
                 (p.name == "Makefile" or p.suffix in (".c", ".h", ".conf"))] if src.is_dir() else []
        if not any(p.name == "Makefile" for p in files):
            raise TargetError(f"{src}/Makefile is missing: the illumos driver sources are not in this tree")
        out = [(p, f"{GUEST_DIR}/kmod/illumos/{p.name}") for p in files]
        out.append((KMOD / "ddih_ioctl.h", f"{GUEST_DIR}/kmod/ddih_ioctl.h"))
        out.append((GUEST / "ddictl.c", f"{GUEST_DIR}/guest/ddictl.c"))
        out.append((GUEST / "lineproto.h", f"{GUEST_DIR}/guest/lineproto.h"))
        for name in ("ddih.c", "ddih.h"):
            out.append((LIBDDIH / name, f"{GUEST_DIR}/guest/libddih/{name}"))
        return out

    def _guest_run(self, cmd: str, what: str, timeout: float = 300) -> str:
        r = self.ssh.run(cmd, timeout=timeout)
        if r.status != 0:
            raise TargetError(f"{what} failed in the guest (exit {r.status}): {cmd}\n"
                              f"{(r.stdout + r.stderr)[-3000:]}")
        return r.stdout

    def _install_driver(self) -> None:
        t = time.monotonic()
        self._guest_run(f"rm -rf {GUEST_DIR} && mkdir -p {GUEST_DIR}/kmod/illumos {GUEST_DIR}/guest/libddih",
                        "making the upload directory", 60)
        for local, remote in self._sources():
            self.ssh.put(local, remote, 0o644)
        drv = f"{GUEST_DIR}/kmod/illumos"
        self._guest_run(f"cd {drv} && gmake all", "building the ddih driver (gmake all)", 600)
        self._guest_run(f"cd {drv} && gmake install", "installing the ddih driver (gmake install)", 120)
        if self.destructive:
            # kmod/README.md: destructive mode is set in ddih.conf (property read at attach)
            self._guest_run("printf 'name=\"ddih\" parent=\"pseudo\" instance=0;\\ndestructive=1;\\n' "
                            "> /usr/kernel/drv/ddih.conf", "writing ddih.conf (destructive=1)", 30)
        self._guest_run(f"cd {drv} && gmake load", "loading the ddih driver (gmake load: add_drv)", 120)
        self._guest_run("modinfo | awk '$6 == \"ddih\"' | grep -q ddih", "checking modinfo for ddih", 30)
        out = self._guest_run("ls -1 /devices/pseudo/ddih@0:* 2>/dev/null | head -1",
                              "finding the ddih device node", 30).strip()
        if not out.startswith("/devices/"):
            raise TargetError("ddih is loaded but /devices/pseudo/ddih@0:* does not exist")
        self.device = self.facts.device = out
        mode = self._kstats().get("destructive")
        if mode is not None and mode != int(self.destructive):
            raise TargetError(f"ddih attached with destructive={mode}, wanted {int(self.destructive)}")
        # the Makefile's ddictl target: gcc -m64 against the system libc (no -static on illumos)
        self._guest_run(f"cd {drv} && gmake ddictl", "building guest/ddictl (gmake ddictl)", 300)
        self.facts.guest_kernel = self._guest_run("uname -v", "uname -v", 30).strip()
        self.facts.guest_kernel_package = self._guest_run("uname -a", "uname -a", 30).strip()
        self.facts.driver_build_s = round(time.monotonic() - t, 2)

    def _stop_machine(self, machine) -> None:
        # no `poweroff -f` on illumos: the overlay is thrown away, so QMP quit / kill
        machine.kill()

    # ------------------------------------------------------------ ops
    def ddictl_command(self) -> str:
        return f"{GUEST_DIR}/kmod/illumos/ddictl {quote(self.device)}"

    def panic_message(self, findings: list) -> str:
        return panic_message(findings)

    def _kstats(self) -> dict[str, int]:
        """The driver's named kstat ddih:0:objects (maps, umem, kmem, files, destructive)."""
        assert self.ssh
        r = self.ssh.run("kstat -p ddih:0:objects", timeout=30)
        out = {}
        for line in r.stdout.splitlines():
            m = re.fullmatch(r"ddih:0:objects:(\w+)\s+(\d+)", line.strip())
            if m:
                out[m.group(1)] = int(m.group(2))
        return out

    def outstanding(self) -> int:
        """Objects the driver still holds: maps + umem + kmem of its ddih:0:objects kstat."""
        k = self._kstats()
        if not {"maps", "umem", "kmem"} <= set(k):
            raise TargetError(f"cannot read the ddih:0:objects kstat (got {k})")
        return k["maps"] + k["umem"] + k["kmem"]

    def unload(self) -> UnloadResult:
        """rem_drv the driver, after reading what it still holds."""
        if not self.alive() or self.ssh is None:
            return UnloadResult(False, -1, "the guest was not running at the end of the run")
        try:
            left = self.outstanding()
        except (TargetError, SSHError):
            left = -1
        try:
            r = self.ssh.run(f"rem_drv {DRIVER}", timeout=120)
            gone = self.ssh.run("modinfo | awk '$6 == \"ddih\"'", timeout=30)
        except SSHError as e:
            return UnloadResult(False, left, f"rem_drv: {e}")
        unloaded = r.status == 0 and "ddih" not in gone.stdout and "Cannot unload" not in (r.stdout + r.stderr)
        return UnloadResult(unloaded, left, "" if unloaded else f"rem_drv: {(r.stdout + r.stderr).strip()[-300:]}")


def panic_message(findings: list) -> str:
    """The ``panic[cpuN]/thread=...: msg`` line when there is one, else the first fatal title."""
    for f in findings:
        if f.kind == "panic":
            first = f.excerpt.splitlines()[0].strip() if f.excerpt else ""
            first = panics._illumos_message(first) if first else ""
            if f.message and f.message not in first:
                return f"{first} {f.message}".strip()
            return first or f.title
    fatal = panics.first_fatal(findings)
    if fatal is None:
        return NO_MESSAGE
    return fatal.title
