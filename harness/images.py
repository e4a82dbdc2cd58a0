"""Guest images: the Linux guest assembled from Debian packages.

``build_linux_image()`` turns ``images/linux.yaml`` into a bootable guest:

1. resolve   - ask apt which kernel ``linux-image-amd64`` currently depends on
               and the exact version of every package (``apt-cache``);
2. download  - ``apt-get download name=version`` into a shared .deb cache;
3. extract   - ``dpkg-deb`` (no install on the host, no root needed);
4. vmlinux   - the uncompressed ELF kernel is cut out of the XZ vmlinuz so
               QEMU can boot it through PVH (3 s instead of 6 s under TCG);
5. headers   - linux-headers-<rel> + -common + linux-kbuild, with the one
               absolute include in the headers Makefile made relative;
6. keys      - an ed25519 client key (OpenSSH format, 0600) and a dropbear
               host key whose public half is recorded for pinning;
7. initramfs - busybox, the listed modules (+ depmod), dropbear, sftp-server
               and an /init that brings up slirp networking, starts dropbear,
               prints ``DDIH-READY`` and runs a root shell on the console.

The result lives in ``$XDG_CACHE_HOME/ddi-harness/linux/<key>`` where key
hashes the resolved package versions, the manifest and RECIPE_VERSION.  A
complete cache is reused without running apt at all as long as apt's package
lists have not changed (their names, sizes and mtimes are part of a cheap
fingerprint); builds are serialised with an fcntl lock and assembled in a
temporary directory that is renamed into place atomically.

The initramfs never contains the test driver: that and the op runner are
uploaded over SSH at run time.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from harness.resources import IMAGES

RECIPE_VERSION = 2
"""Bump whenever the build recipe below changes what ends up in an image."""

DEFAULT_MANIFEST = IMAGES / "linux.yaml"
APT_LISTS = Path("/var/lib/apt/lists")

Progress = Callable[[str, int, int], None]


class ImageError(Exception):
    """Building or loading a guest image failed; the message says what to do."""


@dataclass(frozen=True)
class LinuxImage:
    """A built Linux guest image (everything QEMU and the target need)."""

    kernel_release: str            # e.g. "6.1.0-56-amd64"
    kernel_version: str            # Debian package version, e.g. "6.1.192-2"
    vmlinux: Path                  # uncompressed ELF kernel (PVH boot)
    vmlinuz: Path                  # the original compressed kernel
    initramfs: Path                # gzip'ed newc cpio
    headers_dir: Path              # pass as `make -C` for out-of-tree modules
    modules_dir: Path              # extracted lib/modules/<release> subset
    client_key: Path               # ed25519 private key, OpenSSH format, 0600
    client_key_pub: Path
    host_key_pub: str              # "ssh-ed25519 AAAA..." of the guest's dropbear
    packages: dict                 # package name -> version
    cache_dir: Path
    memory: str                    # QEMU -m value, e.g. "512M"
    cpus: int
    cmdline: str
    ready_marker: str = "DDIH-READY"
    prompt: str = "ddih# "
    key: str = ""

    @property
    def kernel(self) -> Path:
        """The kernel to boot (the PVH vmlinux)."""
        return self.vmlinux

    def to_json(self) -> dict:
        """image.json: paths relative to the cache entry, so a copied cache still works."""
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = "." if v == self.cache_dir else str(v.relative_to(self.cache_dir))
        return d

    @classmethod
    def from_json(cls, d: dict, entry: Path) -> "LinuxImage":
        """Read image.json of the cache entry ``entry`` (wherever the cache is now)."""
        kw = dict(d)
        for f in dataclasses.fields(cls):
            if f.name in kw and f.type in ("Path",) and kw[f.name] is not None:
                rel = Path(kw[f.name])
                if rel.is_absolute():
                    raise ValueError(f"{f.name} is an absolute path: an image.json from an older version")
                kw[f.name] = entry / rel
        return cls(**{k: v for k, v in kw.items() if k in {f.name for f in dataclasses.fields(cls)}})


# --------------------------------------------------------------------------
# small helpers

def _noop_progress(stage: str, done: int, total: int) -> None:
    pass


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>`` or ``$XDG_CACHE_HOME/ddi-harness`` (default ~/.cache)."""
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ddi-harness"


def _run(argv: list[str], what: str, fix: str, cwd: Path | None = None,
         env: dict | None = None, timeout: float = 600) -> str:
    try:
        p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=timeout)
    except FileNotFoundError as e:
        raise ImageError(f"{what}: {argv[0]} not found ({e}); {fix}") from None
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what}: timed out after {timeout:.0f} s ({' '.join(argv)}); {fix}") from None
    if p.returncode != 0:
        err = (p.stderr or p.stdout).strip().splitlines()[-5:]
        raise ImageError(f"{what} (exit {p.returncode}): {' / '.join(err)}; {fix}")
    return p.stdout


def load_manifest(path: str | os.PathLike | None = None) -> tuple[dict, bytes]:
    """Load and check a Linux image manifest; returns (data, raw bytes)."""
    path = Path(path) if path else DEFAULT_MANIFEST
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read image manifest {path}: {e}") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ImageError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ImageError(f"{path}: expected a mapping at the top level")
    for key in ("kernel", "packages", "guest_libs", "memory", "cpus", "cmdline", "modules"):
        if key not in data:
            raise ImageError(f"{path}: missing key '{key}' (see images/linux.yaml in the repository)")
    if "meta_package" not in (data.get("kernel") or {}):
        raise ImageError(f"{path}: missing key 'kernel.meta_package' (e.g. linux-image-amd64)")
    return data, raw


# --------------------------------------------------------------------------
# stage 1: resolve package names and versions with apt

_APT_FIX = "run `apt-get update` as root (and check /etc/apt/sources.list)"


def _apt_depends(pkg: str) -> list[str]:
    out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", pkg],
               f"apt-cache depends {pkg} failed", _APT_FIX, timeout=120)
    deps = []
    for line in out.splitlines():
        m = re.match(r"\s+\|?Depends:\s+(\S+)", line)
        if m and not m.group(1).startswith("<"):
            deps.append(m.group(1))
    return deps


def _apt_versions(pkgs: list[str]) -> dict[str, str]:
    out = _run(["apt-cache", "show", "--no-all-versions", *pkgs],
               f"apt-cache show failed for {' '.join(pkgs)}", _APT_FIX, timeout=120)
    versions: dict[str, str] = {}
    name = None
    for line in out.splitlines():
        if line.startswith("Package: "):
            name = line.split(None, 1)[1].strip()
        elif line.startswith("Version: ") and name and name not in versions:
            versions[name] = line.split(None, 1)[1].strip()
    missing = [p for p in pkgs if p not in versions]
    if missing:
        raise ImageError(f"apt knows no version of {', '.join(missing)}; {_APT_FIX}")
    return versions


def resolve_packages(manifest: dict) -> tuple[str, dict[str, str]]:
    """Return (kernel_release, {package: version}) as apt sees them now."""
    meta = manifest["kernel"]["meta_package"]
    images = [d for d in _apt_depends(meta) if d.startswith("linux-image-")]
    if not images:
        raise ImageError(f"{meta} depends on no linux-image-* package; {_APT_FIX}")
    image_pkg = images[0]
    release = image_pkg[len("linux-image-"):]
    flavour = release.rsplit("-", 1)[-1]
    abi = release[: -len(flavour) - 1]
    fmt = {"release": release, "abi": abi, "flavour": flavour}
    headers = [h.format(**fmt) for h in manifest["kernel"].get("headers", [])]
    prefixes = tuple(manifest["kernel"].get("headers_dependency_prefixes", []))
    extra: list[str] = []
    if headers and prefixes:
        extra = [d for d in _apt_depends(headers[0]) if d.startswith(prefixes)]
    names = [image_pkg, *headers, *extra, *manifest["packages"]]
    names = list(dict.fromkeys(names))
    return release, _apt_versions(names)


def _apt_fingerprint(manifest_raw: bytes) -> str:
    """Cheap fingerprint of apt's view: lists + sources + the manifest."""
    h = hashlib.sha256(manifest_raw)
    h.update(str(RECIPE_VERSION).encode())
    for d in (APT_LISTS, Path("/etc/apt/sources.list.d"), Path("/etc/apt/preferences.d")):
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat()
            except OSError:
                continue
            h.update(f"{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    for f in (Path("/etc/apt/sources.list"),):
        try:
            st = f.stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            pass
    return h.hexdigest()


def image_key(manifest_raw: bytes, packages: dict[str, str]) -> str:
    h = hashlib.sha256()
    h.update(f"recipe={RECIPE_VERSION}\n".encode())
    h.update(manifest_raw)
    for name in sorted(packages):
        h.update(f"{name}={packages[name]}\n".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------
# stage 2-3: download and extract

def _deb_filename(name: str, version: str, debs: Path) -> Path | None:
    # apt-get download names files name_version(with : as %3a)_arch.deb
    v = version.replace(":", "%3a")
    for p in debs.glob(f"{name}_{v}_*.deb"):
        return p
    return None


def download_debs(packages: dict[str, str], debs: Path, progress: Progress) -> dict[str, Path]:
    debs.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    total = len(packages)
    for i, (name, version) in enumerate(sorted(packages.items())):
        progress("download", i, total)
        p = _deb_filename(name, version, debs)
        if p is None:
            _run(["apt-get", "download", "-q", f"{name}={version}"],
                 f"apt-get download failed for {name}={version}",
                 "run `apt-get update` as root, then retry (the mirror may have dropped this version)",
                 cwd=debs, timeout=900)
            p = _deb_filename(name, version, debs)
            if p is None:
                raise ImageError(f"apt-get download {name}={version} produced no .deb in {debs}")
        paths[name] = p
    progress("download", total, total)
    return paths


def _deb_extract(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    _run(["dpkg-deb", "-x", str(deb), str(dest)], f"dpkg-deb -x {deb.name} failed",
         "the .deb may be truncated: delete it from the cache and retry")


def _deb_extract_members(deb: Path, dest: Path, want: Callable[[str], bool]) -> list[str]:
    """Extract only the members of ``deb`` for which ``want(path)`` is true."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    got = []
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
            for m in tf:
                name = m.name[2:] if m.name.startswith("./") else m.name
                if not want(name) or not (m.isfile() or m.issym() or m.isdir()):
                    continue
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if m.isdir():
                    target.mkdir(exist_ok=True)
                elif m.issym():
                    if target.is_symlink() or target.exists():
                        target.unlink()
                    os.symlink(m.linkname, target)
                else:
                    f = tf.extractfile(m)
                    with open(target, "wb") as out:
                        shutil.copyfileobj(f, out, 1 << 20)
                    os.chmod(target, m.mode & 0o777)
                got.append(name)
    finally:
        proc.stdout.close()
        rc = proc.wait()
    if rc != 0:
        raise ImageError(f"dpkg-deb --fsys-tarfile {deb.name} failed (exit {rc}); "
                         "the .deb may be truncated: delete it from the cache and retry")
    return got


# --------------------------------------------------------------------------
# stage 4: vmlinux from vmlinuz

def extract_vmlinux(vmlinuz: Path, out: Path) -> None:
    """Write the uncompressed ELF kernel found inside an XZ-compressed bzImage."""
    data = vmlinuz.read_bytes()
    magic = b"\xfd7zXZ\x00"
    pos = data.find(magic)
    while pos >= 0:
        d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            elf = d.decompress(data[pos:])
        except lzma.LZMAError:
            elf = b""
        if elf[:4] == b"\x7fELF":
            out.write_bytes(elf)
            return
        pos = data.find(magic, pos + 1)
    raise ImageError(f"no XZ-compressed ELF kernel found in {vmlinuz} "
                     "(only XZ bzImages are supported; Debian amd64 kernels are XZ)")


# --------------------------------------------------------------------------
# stage 6: keys

def make_client_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(priv)
    os.chmod(path, 0o600)
    Path(str(path) + ".pub").write_bytes(pub + b" ddi-harness\n")


def make_dropbear_host_key(x: Path, path: Path) -> str:
    """Generate a dropbear ed25519 host key; return its OpenSSH public line.

    ``x`` holds one extracted directory per package (dropbear-bin, libtom*).
    """
    exe = x / "dropbear-bin/usr/bin/dropbearkey"
    libdirs = [str(p / "usr/lib/x86_64-linux-gnu") for p in sorted(x.iterdir())
               if p.name.startswith(("libtomcrypt", "libtommath"))]
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(libdirs))
    fix = "dropbear-bin/libtomcrypt1/libtommath1 must be extractable and runnable on this host"
    _run([str(exe), "-t", "ed25519", "-f", str(path)], "dropbearkey failed", fix, env=env)
    out = _run([str(exe), "-y", "-f", str(path)], "dropbearkey -y failed", fix, env=env)
    for line in out.splitlines():
        if line.startswith("ssh-ed25519 "):
            return " ".join(line.split()[:2])
    raise ImageError(f"dropbearkey -y printed no ssh-ed25519 public key: {out!r}")


# --------------------------------------------------------------------------
# stage 7: initramfs (newc cpio written in Python)

class _Cpio:
    """Minimal newc cpio writer; every entry is owned by root, mtime 0."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1) -> None:
        name = name.lstrip("/") or "."
        if name in self.names:
            return
        self.names.add(name)
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + nb)
        self.buf.write(b"\0" * ((-(110 + len(nb))) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * ((-len(data)) % 4))

    def dir(self, name: str, mode: int = 0o755) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts)):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | 0o755, nlink=2)
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.dir(os.path.dirname(name.strip("/")) or ".")
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self.dir(os.path.dirname(name.strip("/")) or ".")
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        # rdevmajor/rdevminor live at fields 10/11; write the header by hand
        name = name.lstrip("/")
        if name in self.names:
            return
        self.names.add(name)
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, stat.S_IFCHR | mode, 0, 0, 1, 0, 0, 0, 0, major, minor, len(nb), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + nb + b"\0" * ((-(110 + len(nb))) % 4))

    def tree(self, src: Path, dest: str) -> None:
        """Copy a host directory tree (files, symlinks, dirs) under ``dest``."""
        for root, dirs, files in os.walk(src):
            rel = os.path.relpath(root, src)
            base = dest if rel == "." else f"{dest}/{rel}"
            self.dir(base)
            for n in sorted(dirs + files):
                p = Path(root) / n
                if p.is_symlink():
                    self.symlink(f"{base}/{n}", os.readlink(p))
                elif p.is_file():
                    self.file(f"{base}/{n}", p.read_bytes(), p.stat().st_mode & 0o777)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, nlink=1)
        data = self.buf.getvalue()
        return data + b"\0" * ((-len(data)) % 512)


INIT_TEMPLATE = r"""#!/bin/sh
# /init of the ddi-harness Linux guest (generated by harness/images.py)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root PS1='{prompt}'
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
echo 7 > /proc/sys/kernel/printk   # full oops/WARNING text on the console from here on
for m in {modules}; do
  insmod /lib/modules/{release}/kernel/$m.ko || echo "DDIH-INIT: insmod $m failed"
done
hostname ddih
ip link set lo up
ip addr add {address} dev eth0 && ip link set eth0 up && ip route add default via {gateway} \
  || echo "DDIH-INIT: network setup failed"
echo 'nameserver {dns}' > /etc/resolv.conf
/usr/sbin/dropbear -s -r /etc/dropbear/dropbear_ed25519_host_key -p 22 2>/var/log/dropbear.log \
  || echo "DDIH-INIT: dropbear failed"
echo "{marker} uptime=$(cut -d' ' -f1 /proc/uptime)"
while true; do setsid cttyhack /bin/sh; sleep 0.1; done
"""


def _busybox_applets(busybox: Path) -> list[str]:
    out = _run([str(busybox), "--list-full"], "busybox --list-full failed",
               "busybox-static must run on this host")
    return [a for a in out.split() if a]


def build_initramfs(*, manifest: dict, release: str, x: Path, modules_dir: Path,
                    host_key: Path, client_pub: Path, out: Path) -> None:
    c = _Cpio()
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root", "var/log",
              "usr/bin", "usr/sbin", "usr/lib", "lib/x86_64-linux-gnu", "lib64", "etc/dropbear",
              "mnt"):
        c.dir(d)
    c.dir("root", 0o700)
    c.dir("root/.ssh", 0o700)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    busybox = x / "busybox-static/bin/busybox"
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in _busybox_applets(busybox):
        if applet.lstrip("/") != "bin/busybox":
            c.symlink(applet, "/bin/busybox")
    # modules (subset tree, with depmod output)
    c.tree(modules_dir, f"lib/modules/{release}")
    # dropbear, sftp-server, libraries
    db = x / "dropbear-bin"
    c.file("usr/sbin/dropbear", (db / "usr/sbin/dropbear").read_bytes(), 0o755)
    c.file("usr/lib/sftp-server",
           (x / "openssh-sftp-server/usr/lib/openssh/sftp-server").read_bytes(), 0o755)
    for lib in manifest["guest_libs"]:
        found = [p for pkg in sorted(x.iterdir())
                 for p in (pkg / "lib/x86_64-linux-gnu" / lib, pkg / "usr/lib/x86_64-linux-gnu" / lib)
                 if p.exists()]
        if not found:
            raise ImageError(f"guest library {lib} is in no extracted package; "
                             "add the package that ships it to 'packages' in the manifest")
        c.file(f"lib/x86_64-linux-gnu/{lib}", found[0].resolve().read_bytes(), 0o755)
    c.symlink("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    c.file("etc/dropbear/dropbear_ed25519_host_key", host_key.read_bytes(), 0o600)
    c.file("root/.ssh/authorized_keys", client_pub.read_bytes(), 0o600)
    c.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    c.file("etc/group", b"root:x:0:\n")
    c.file("etc/shells", b"/bin/sh\n")
    net = manifest.get("network") or {}
    init = INIT_TEMPLATE.format(
        prompt=manifest.get("prompt", "ddih# "),
        modules=" ".join(manifest["modules"]),
        release=release,
        address=net.get("address", "10.0.2.15/24"),
        gateway=net.get("gateway", "10.0.2.2"),
        dns=net.get("dns", "10.0.2.3"),
        marker=manifest.get("ready_marker", "DDIH-READY"),
    )
    c.file("init", init.encode(), 0o755)
    out.write_bytes(gzip.compress(c.finish(), compresslevel=6, mtime=0))


# --------------------------------------------------------------------------
# the whole build

def _patch_headers_makefile(hdr_root: Path, release: str) -> Path:
    """Make the -amd64 Makefile's absolute /usr/src include relative to its own directory.

    kbuild runs ``make -C <headers_dir>``, so a relative include resolves against that
    directory wherever the cache lives (a cache copied to another home still builds)."""
    hdir = hdr_root / "usr/src" / f"linux-headers-{release}"
    mk = hdir / "Makefile"
    if not mk.exists():
        raise ImageError(f"headers Makefile missing: {mk}")
    text = mk.read_text()
    new = re.sub(r"^include /usr/src/(linux-headers-[^/\s]+)/Makefile",
                 lambda m: f"include ../{m.group(1)}/Makefile", text, flags=re.M)
    new = re.sub(r"(-C\s*)/usr/src/", lambda m: f"{m.group(1)}$(CURDIR)/../", new)
    mk.write_text(new)
    return hdir


# the files a boot reads, checked against what was recorded when the image was built
CHECKED_FILES = ("vmlinux", "initramfs")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _record_files(img: LinuxImage) -> dict[str, dict]:
    out = {}
    for name in CHECKED_FILES:
        p: Path = getattr(img, name)
        out[name] = {"size": p.stat().st_size, "sha256": _digest(p)}
    return out


def image_problems(img: LinuxImage, recorded: dict | None = None, digests: bool = True) -> list[str]:
    """What is wrong with a cached image's files (truncated, changed, missing); [] when sound.

    Sizes always; sha256 too unless ``digests`` is False (a boot checks sizes only: cheap)."""
    if recorded is None:
        try:
            recorded = json.loads((img.cache_dir / "image.json").read_text()).get("files") or {}
        except (OSError, ValueError):
            recorded = {}
    out = []
    for name in CHECKED_FILES:
        p: Path = getattr(img, name)
        want = recorded.get(name)
        if want is None:
            out.append(f"{name}: no size or digest recorded (an image from an older version)")
        elif not p.is_file():
            out.append(f"{name}: {p} is missing")
        elif p.stat().st_size != want["size"]:
            out.append(f"{name}: {p} is {p.stat().st_size} bytes, built as {want['size']} (truncated?)")
        elif digests and _digest(p) != want["sha256"]:
            out.append(f"{name}: {p} has changed since it was built (sha256 differs)")
    return out


def _assemble(tmp: Path, root: Path, manifest: dict, raw: bytes, release: str,
              packages: dict[str, str], key: str, progress: Progress) -> LinuxImage:
    debs = download_debs(packages, root / "debs", progress)
    x = tmp / "x"
    image_pkg = f"linux-image-{release}"
    steps = 6
    # kernel + the module subset
    progress("extract", 0, steps)
    kdir = x / "kernel"
    mods = [f"lib/modules/{release}/kernel/{m}.ko" for m in manifest["modules"]]
    wanted = set(mods)

    def want(name: str) -> bool:
        return (name == f"boot/vmlinuz-{release}" or name in wanted
                or (name.startswith(f"lib/modules/{release}/modules.") and name.count("/") == 3))

    got = _deb_extract_members(debs[image_pkg], kdir, want)
    missing = wanted - set(got)
    if missing:
        raise ImageError(f"{image_pkg} has no module(s) {', '.join(sorted(missing))}; "
                         "fix 'modules' in the manifest")
    progress("extract", 1, steps)
    for name in manifest["packages"]:
        _deb_extract(debs[name], x / name)
    progress("extract", 2, steps)
    # depmod over the subset, with kmod from its deb
    kmodbin = x / "kmod/bin/kmod"
    depmod_dir = tmp / "bin"
    depmod_dir.mkdir()
    os.symlink(kmodbin, depmod_dir / "depmod")
    _run([str(depmod_dir / "depmod"), "-b", str(kdir), release], "depmod failed",
         "kmod from the kmod .deb must run on this host (needs liblzma, libzstd, libssl)")
    modules_dir = tmp / "modules"
    shutil.move(str(kdir / "lib/modules" / release), str(modules_dir))
    progress("vmlinux", 3, steps)
    vmlinuz = tmp / f"vmlinuz-{release}"
    shutil.move(str(kdir / f"boot/vmlinuz-{release}"), str(vmlinuz))
    extract_vmlinux(vmlinuz, tmp / "vmlinux")
    # headers
    progress("headers", 4, steps)
    hdr = tmp / "headers"
    for name in packages:
        if name.startswith(("linux-headers-", "linux-kbuild-", "linux-compiler-")):
            _deb_extract(debs[name], hdr)
    # keys
    progress("keys", 5, steps)
    keys = tmp / "keys"
    keys.mkdir()
    make_client_key(keys / "id_ed25519")
    host_pub = make_dropbear_host_key(x, keys / "dropbear_ed25519_host_key")
    (keys / "host_key.pub").write_text(host_pub + "\n")
    progress("initramfs", 5, steps)
    build_initramfs(manifest=manifest, release=release, x=x, modules_dir=modules_dir,
                    host_key=keys / "dropbear_ed25519_host_key",
                    client_pub=keys / "id_ed25519.pub", out=tmp / "initramfs.cpio.gz")
    shutil.rmtree(x)
    shutil.rmtree(depmod_dir)
    # paths are recorded for the final location (the headers Makefile too)
    final = root / key
    img = LinuxImage(
        kernel_release=release,
        kernel_version=packages[image_pkg],
        vmlinux=final / "vmlinux",
        vmlinuz=final / f"vmlinuz-{release}",
        initramfs=final / "initramfs.cpio.gz",
        headers_dir=final / "headers/usr/src" / f"linux-headers-{release}",
        modules_dir=final / "modules",
        client_key=final / "keys/id_ed25519",
        client_key_pub=final / "keys/id_ed25519.pub",
        host_key_pub=host_pub,
        packages=dict(sorted(packages.items())),
        cache_dir=final,
        memory=str(manifest["memory"]),
        cpus=int(manifest["cpus"]),
        cmdline=str(manifest["cmdline"]),
        ready_marker=str(manifest.get("ready_marker", "DDIH-READY")),
        prompt=str(manifest.get("prompt", "ddih# ")),
        key=key,
    )
    return img


def _load(final: Path, problems: list[str] | None = None) -> LinuxImage | None:
    """The image in cache entry ``final`` if it is complete and its files are as built; else None
    (the reasons appended to ``problems``)."""
    problems = problems if problems is not None else []
    try:
        d = json.loads((final / "image.json").read_text())
        img = LinuxImage.from_json(d, final)
    except (OSError, ValueError, TypeError) as e:
        problems.append(f"{final}: no usable image.json ({e})")
        return None
    if not img.client_key.exists():
        problems.append(f"{final}: the SSH key is missing")
        return None
    bad = image_problems(img, d.get("files") or {})
    if bad:
        problems.extend(f"{final}: {b}" for b in bad)
        return None
    return img


def build_linux_image(manifest_path: str | os.PathLike | None = None,
                      cache_dir: str | os.PathLike | None = None,
                      progress: Progress | None = None,
                      force: bool = False) -> LinuxImage:
    """Build (or reuse) the Linux guest image described by ``manifest_path``.

    ``cache_dir`` overrides ``$XDG_CACHE_HOME/ddi-harness``; images go to
    ``<cache_dir>/linux/<key>`` and .debs to ``<cache_dir>/linux/debs``.
    ``progress(stage, done, total)`` is called as the build advances; stages
    in order: resolve, download (done/total = packages), extract, vmlinux,
    headers, keys, initramfs (done/total = steps), done.  ``force`` rebuilds
    even if a complete image exists.  Raises ImageError with a fix on failure.
    """
    progress = progress or _noop_progress
    manifest, raw = load_manifest(manifest_path)
    root = cache_root(cache_dir) / "linux"
    root.mkdir(parents=True, exist_ok=True)

    # fast path: apt's view unchanged since the last resolution -> no apt call
    fp = _apt_fingerprint(raw)
    fp_file = root / "resolved" / f"{fp}.json"
    if not force:
        try:
            key = json.loads(fp_file.read_text())["key"]
            img = _load(root / key)
            if img is not None:
                progress("done", 1, 1)
                return img
        except (OSError, ValueError, KeyError):
            pass

    progress("resolve", 0, 1)
    release, packages = resolve_packages(manifest)
    key = image_key(raw, packages)
    progress("resolve", 1, 1)
    final = root / key

    with open(root / ".lock", "a+") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        try:
            # leftovers of builds that were killed (we hold the lock: none is running)
            for stale in root.glob(".*.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            for stale in root.glob(".*.old-*"):
                shutil.rmtree(stale, ignore_errors=True)
            img = None if force else _load(final)
            if img is None:
                tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root))
                os.chmod(tmp, 0o755)
                try:
                    img = _assemble(tmp, root, manifest, raw, release, packages, key, progress)
                    _patch_headers_makefile(tmp / "headers", release)
                    here = LinuxImage.from_json(img.to_json(), tmp)  # the files, where they are now
                    (tmp / "image.json").write_text(json.dumps({**img.to_json(), "files": _record_files(here)},
                                                               indent=2) + "\n")
                    if final.exists():      # stale/incomplete (or forced): move aside
                        old = Path(tempfile.mkdtemp(prefix=f".{key}.old-", dir=root))
                        os.rename(final, old / "x")
                        shutil.rmtree(old, ignore_errors=True)
                    os.rename(tmp, final)
                finally:
                    if tmp.exists():
                        shutil.rmtree(tmp, ignore_errors=True)
                img = _load(final)
                if img is None:
                    raise ImageError(f"image in {final} is incomplete right after the build")
            fp_file.parent.mkdir(exist_ok=True)
            fp_tmp = fp_file.with_suffix(f".{os.getpid()}.tmp")
            fp_tmp.write_text(json.dumps({"key": key, "release": release}))
            os.rename(fp_tmp, fp_file)
        finally:
            fcntl.flock(lockf, fcntl.LOCK_UN)
    progress("done", 1, 1)
    return img


def image_summary(img: LinuxImage) -> dict:
    """A short dict for reports and `ddi-harness image show`."""
    return {
        "kernel_release": img.kernel_release,
        "kernel_version": img.kernel_version,
        "cache_dir": str(img.cache_dir),
        "vmlinux_bytes": img.vmlinux.stat().st_size if img.vmlinux.exists() else None,
        "initramfs_bytes": img.initramfs.stat().st_size if img.initramfs.exists() else None,
        "packages": img.packages,
    }
