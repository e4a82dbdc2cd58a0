"""`ddi-harness doctor --target T`: is this host ready to run target T?

Each check says what it looked at, whether it is fine, and how to fix it.
Nothing is downloaded, built or booted: every probe is local and cheap
(the accelerator probe starts QEMU for at most a few seconds).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

GIB = 1 << 30

# Rough needs of the cache per target, in GiB: image (+ download) + base/overlays.
NEEDS_GIB = {
    "linux": 1.0,            # .debs, extracted kernel, headers, initramfs
    "openindiana": 10.0,     # 0.8 GB .zst + ~2 GB raw + provisioned base (gcc, swap zvol) + overlays
    "omnios": 10.0,          # ~1.1 GB qcow2 + provisioned base + overlays
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


# The probes, module-level so tests can replace them.

def _which(name: str) -> str | None:
    return shutil.which(name)


def _free_bytes(path: Path) -> int:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


def _cache_dir() -> Path:
    from harness.images import cache_root
    return cache_root()


def _choose_accel():
    from harness.machine import choose_accel
    return choose_accel("auto")


def _linux_image_cached() -> tuple[bool, str]:
    """Whether a complete Linux image is in the cache (no apt, no build)."""
    from harness.images import _load, cache_root

    root = cache_root() / "linux"
    if not root.is_dir():
        return False, f"no Linux image cache at {root}"
    problems: list[str] = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and d.name not in ("debs", "resolved") \
                and _load(d, problems) is not None:
            return True, f"image {d.name} in {root} (vmlinux and initramfs as built)"
    if problems:
        return False, "damaged: " + "; ".join(problems) + " -- run `ddi-harness image build linux --rebuild`"
    return False, f"no complete Linux image in {root}"


def _illumos_image(distro: str) -> tuple[bool, str]:
    from harness import fetch

    problems: list[str] = []
    img = fetch.cached_image(distro, problems=problems)
    if img is None:
        why = "; ".join(problems) if problems else "not downloaded yet"
        return False, f"{distro} image: {why}"
    return True, f"{img.path} (sha256 {img.sha256[:16]}..., verified)"


def _illumos_base(distro: str) -> tuple[bool, str]:
    from harness.targets.illumos import base_status
    return base_status(distro)


def _image_host(distro: str) -> tuple[bool, str]:
    """Whether the image's host answers now (a bounded probe of each URL until one answers)."""
    from harness import fetch

    m = fetch.load_image_manifest(distro)
    last = ""
    for url in m.urls:
        ok, detail = fetch.probe_url(url, timeout=IMAGE_HOST_TIMEOUT)
        if ok:
            return True, detail
        last = detail
    return False, last


IMAGE_HOST_TIMEOUT = 5.0


def _cached_gate():
    from harness.fetch import cached_gate

    return cached_gate()


PROBES: dict[str, Callable] = {
    "which": _which,
    "free_bytes": _free_bytes,
    "cache_dir": _cache_dir,
    "choose_accel": _choose_accel,
    "linux_image": _linux_image_cached,
    "illumos_image": _illumos_image,
    "illumos_base": _illumos_base,
    "image_host": _image_host,
    "cached_gate": _cached_gate,
}


def _probe(name: str, *args):
    try:
        return PROBES[name](*args)
    except Exception as e:   # a probe must never crash the report
        return e


def doctor(target: str) -> list[Check]:
    """The checks for ``target`` (linux, openindiana or omnios), in order."""
    from harness.targets import TARGET_NAMES

    if target not in TARGET_NAMES:
        raise ValueError(f"unknown target {target!r} (use {', '.join(TARGET_NAMES)})")
    if target == "illumos-gate":
        return gate_checks()
    checks: list[Check] = []
    apt_qemu = "install QEMU (Debian/Ubuntu: apt-get install qemu-system-x86 qemu-utils)"
    for exe in ("qemu-system-x86_64", "qemu-img"):
        path = _probe("which", exe)
        ok = isinstance(path, str) and bool(path)
        checks.append(Check(exe, ok, path if ok else f"{exe} not found on PATH", "" if ok else apt_qemu))

    acc = _probe("choose_accel")
    if isinstance(acc, Exception):
        checks.append(Check("accelerator", False, f"accelerator probe failed: {acc}",
                            "make /dev/kvm readable and writable for this user, or run with --accel tcg"))
    else:
        kvm = acc.accel == "kvm"
        slow = "" if kvm else (" (illumos boots take minutes under TCG)" if target != "linux" else "")
        checks.append(Check("accelerator", True, f"{acc.accel}: {acc.reason}{slow}",
                            "" if kvm else "for KVM: load kvm_intel/kvm_amd and add this user to the kvm group"))

    cache = _probe("cache_dir")
    if isinstance(cache, Exception):
        checks.append(Check("cache space", False, f"cannot find the cache directory: {cache}",
                            "set XDG_CACHE_HOME to a writable directory"))
    else:
        free = _probe("free_bytes", Path(cache))
        need = NEEDS_GIB[target]
        if isinstance(free, Exception):
            checks.append(Check("cache space", False, f"cannot stat {cache}: {free}",
                                "set XDG_CACHE_HOME to a writable directory"))
        else:
            ok = free >= need * GIB
            checks.append(Check("cache space", ok,
                                f"{free / GIB:.1f} GiB free in {cache}; {target} needs about {need:.0f} GiB "
                                f"(image + provisioned base + overlays)",
                                "" if ok else f"free space there or point XDG_CACHE_HOME at a disk with "
                                              f"{need:.0f} GiB free"))

    if target == "linux":
        r = _probe("linux_image")
        ok, detail = (False, f"check failed: {r}") if isinstance(r, Exception) else r
        checks.append(Check("linux image", ok, detail,
                            "" if ok else "run `ddi-harness image build` (or any linux run) once; it needs apt"))
        return checks

    r = _probe("illumos_image", target)
    ok, detail = (False, f"check failed: {r}") if isinstance(r, Exception) else r
    checks.append(Check(f"{target} image", ok, detail,
                        "" if ok else f"run `ddi-harness run --target {target}` (or the image fetch command) "
                                      "on a machine with internet access; it downloads and verifies the image"))
    image_cached = ok
    if "image_host" in PROBES:
        r = _probe("image_host", target)
        hok, hdetail = (False, f"check failed: {r}") if isinstance(r, Exception) else r
        if not hok and image_cached:
            checks.append(Check(f"{target} image host", True, f"{hdetail} (not needed: the image is cached)"))
        else:
            checks.append(Check(f"{target} image host", hok, hdetail,
                                "" if hok else "the first run downloads the image: run it where the host "
                                               "resolves and answers (DNS, firewall, https_proxy), or copy "
                                               "~/.cache/ddi-harness/images/ from a machine that has it"))
    r = _probe("illumos_base", target)
    ok, detail = (False, f"check failed: {r}") if isinstance(r, Exception) else r
    checks.append(Check(f"{target} provisioned base", ok, detail,
                        "" if ok else f"the first `ddi-harness run --target {target}` provisions it "
                                      "(needs network for pkg install; 10-30 min with KVM)"))
    return checks


def gate_checks() -> list[Check]:
    """The illumos-gate target needs no QEMU: a C compiler, make, and an illumos-gate tree."""
    import os

    from harness import fetch
    from harness.targets.gate import ENV, SOURCES

    checks = []
    for exe in ("gcc", "make"):
        path = _probe("which", exe)
        ok = isinstance(path, str) and bool(path)
        checks.append(Check(exe, ok, path if ok else f"{exe} not found on PATH",
                            "" if ok else "install it (Debian/Ubuntu: apt-get install gcc make libc6-dev)"))
    env = os.environ.get(ENV)
    cached = _probe("cached_gate")
    if isinstance(cached, Path):
        checks.append(Check("illumos-gate sources", True, f"the pinned commit, cached and verified: {cached}"))
    elif env:
        ok = all((Path(env) / s).is_file() for s in SOURCES)
        checks.append(Check("illumos-gate sources", ok, f"{ENV}={env}" + ("" if ok else f": no {SOURCES[0]} there"),
                            "" if ok else f"point {ENV} at the root of an illumos-gate checkout"))
    else:
        m = fetch.load_gate_manifest()
        checks.append(Check("illumos-gate sources", True,
                            f"none yet: the first run fetches commit {m.commit[:12]} ({len(m.files)} files) over "
                            f"HTTPS, or give --gate DIR / {ENV}=DIR"))
    return checks


def format_report(checks: list[Check]) -> str:
    """A plain-text report: one line per check, the fix indented below a failure."""
    width = max((len(c.name) for c in checks), default=0)
    out = []
    for c in checks:
        out.append(f"[{'ok' if c.ok else 'FAIL':>4}] {c.name:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            out.append(f"       {'':<{width}}  fix: {c.fix}")
    bad = sum(1 for c in checks if not c.ok)
    out.append("all checks passed" if not bad else f"{bad} check(s) failed")
    return "\n".join(out)
