"""Downloading, verifying and caching the illumos cloud images.

``fetch_image("openindiana")`` turns ``images/openindiana.yaml`` into a disk
file QEMU can boot, downloading it only once:

1. checksum  - the expected sha256 is the manifest's pin (``image.sha256``)
               or the first field of ``<url>.sha256sum`` / ``<url>.sha256``
               fetched at run time (``<hex>  <name>``, a bare ``<hex>`` and
               BSD ``SHA256 (<name>) = <hex>`` are all understood);
2. download  - into ``<file>.part`` with a progress callback; an interrupted
               download resumes with an HTTP ``Range`` request, a server that
               ignores Range (200 instead of 206) restarts from byte 0, a 416
               either completes (the part is already whole) or restarts;
               network errors are retried with backoff, mirrors are tried in
               order, a 404 moves on to the next mirror;
3. verify    - sha256 of the whole file BEFORE anything uses it; a mismatch
               (corrupted or truncated download) removes the file and raises
               FetchError naming the file, the expected and the found digest
               and the size;
4. unpack    - zstd (the ``zstd`` command, installed by the Makefile), gzip
               or xz are decompressed into ``disk.raw`` (sparse, written under
               a temporary name and renamed into place); qcow2 passes through;
5. record    - ``image.json`` is written last (atomically): an entry without
               it is not a cache entry.

Cache layout (``$XDG_CACHE_HOME`` defaults to ``~/.cache``)::

    $XDG_CACHE_HOME/ddi-harness/images/<name>/
        .lock                         fcntl.flock: one fetch per image at a time
        <sha256[:16]>/                one directory per upstream file version
            <url basename>.part       download in progress (kept for resume)
            <url basename>            verified download (qcow2: this is the disk;
                                      compressed downloads are removed once unpacked)
            disk.raw                  decompressed disk (raw images)
            image.json                the record: url, sha256, size, disk, disk_sha256

Two runs fetching the same image serialise on ``.lock``: the second waits and
then reuses what the first one left.  Once an image is cached, fetching it
needs no network (the checksum file is not fetched again unless
``refresh=True``).  ``cached_image()`` answers from the cache only, for a
doctor command.  ``make_nocloud_seed()`` writes the cloud-init NoCloud seed
(an ISO9660 + Joliet image labelled ``cidata``) in pure Python.

Every failure is a :class:`FetchError` whose message says what to do.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import http.client
import json
import lzma
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from harness.resources import IMAGES

IMAGES_DIR = IMAGES

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages: wait, checksum, download, verify,
decompress, done.  ``total`` is 0 when unknown."""

CHUNK = 1 << 20
HTTP_TIMEOUT = 60.0
RETRY_DELAYS: tuple[float, ...] = (2.0, 5.0, 15.0, 30.0)
"""Pauses between attempts that made no progress; len() + 1 attempts in all."""
USER_AGENT = "ddi-harness image fetch (+https://github.com/; python-urllib)"
DIGEST_PREFIX_LEN = 16
COMPRESSIONS = ("zstd", "gzip", "xz", "none")
FORMATS = ("raw", "qcow2")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class FetchError(Exception):
    """Fetching, verifying or unpacking an image failed; the message says what to do."""


class _NotFound(Exception):
    """The URL answered 404/410 (or another non-retryable 4xx): try the next mirror."""


class _Retryable(Exception):
    """A transient failure: retry after a pause."""


class _NoName(Exception):
    """The host name did not resolve: never retried (offline, no DNS, or a wrong host)."""

    def __init__(self, host: str, detail: str) -> None:
        self.host = host
        self.detail = detail
        super().__init__(f"cannot resolve {host} ({detail})")


# --------------------------------------------------------------------------
# manifests


def parse_size(value: Any, what: str = "size") -> int:
    """``"831M"``, ``"1.1G"``, ``12G``, ``2048`` (bytes) -> bytes (binary units)."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a size like 831M, got {value!r}")
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)i?B?\s*", str(value), re.I)
    if not m:
        raise ValueError(f"{what}: expected a size like 831M or 12G, got {value!r}")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    return int(float(m.group(1)) * mult)


def _compression_from_url(url: str) -> str:
    path = urllib.parse.urlparse(url).path
    if path.endswith((".zst", ".zstd")):
        return "zstd"
    if path.endswith(".gz"):
        return "gzip"
    if path.endswith(".xz"):
        return "xz"
    return "none"


@dataclass(frozen=True)
class ImageManifest:
    """An ``images/<name>.yaml`` for a downloaded cloud image."""

    name: str
    url: str
    mirrors: tuple[str, ...] = ()
    checksum_url: str | None = "{url}.sha256sum"   # template; None: pin required
    sha256: str | None = None                       # pinned digest of the download
    compression: str = "none"                       # zstd | gzip | xz | none
    format: str = "raw"                             # after decompression: raw | qcow2
    download_size: int | None = None                # approximate, bytes
    disk_size_hint: int | None = None               # approximate decompressed size
    os: str = "illumos"
    release: str = ""
    guest: dict = field(default_factory=dict)
    seed: dict | None = None
    provision: dict = field(default_factory=dict)
    source: Path | None = None
    data: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url,) + tuple(u for u in self.mirrors if u != self.url)

    @property
    def filename(self) -> str:
        name = Path(urllib.parse.urlparse(self.url).path).name
        return name or f"{self.name}.img"

    def checksum_url_for(self, url: str) -> str | None:
        if not self.checksum_url:
            return None
        return self.checksum_url.replace("{url}", url)


def _manifest_path(name: str | os.PathLike) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or os.sep in str(name):
        return p
    return IMAGES_DIR / f"{name}.yaml"


def load_image_manifest(name: str | os.PathLike) -> ImageManifest:
    """Load ``images/<name>.yaml`` (or a path to a YAML file) as an ImageManifest.

    Raises FetchError naming the file, the key and the fix for any problem.
    """
    path = _manifest_path(name)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        known = sorted(p.stem for p in IMAGES_DIR.glob("*.yaml"))
        raise FetchError(f"no image manifest {path}; known images: {', '.join(known) or 'none'}") from None
    except (OSError, yaml.YAMLError) as e:
        raise FetchError(f"cannot read image manifest {path}: {e}") from None

    def bad(key: str, msg: str) -> FetchError:
        return FetchError(f"{path}: key '{key}': {msg}")

    if not isinstance(data, dict):
        raise FetchError(f"{path}: expected a mapping at the top level")
    img = data.get("image")
    if not isinstance(img, dict):
        raise bad("image", "missing; it needs at least image.url (see images/openindiana.yaml)")
    url = img.get("url")
    if not isinstance(url, str) or not re.match(r"^(https?|file)://", url):
        raise bad("image.url", f"expected an http(s) URL, got {url!r}")
    mirrors = img.get("mirrors") or []
    if not isinstance(mirrors, list) or not all(isinstance(u, str) and re.match(r"^(https?|file)://", u)
                                                for u in mirrors):
        raise bad("image.mirrors", "expected a list of http(s) URLs")
    pin = img.get("sha256")
    if pin is not None:
        pin = str(pin).strip()
        if pin.lower().startswith("sha256:"):
            pin = pin[7:].strip()
        if not _HEX64.match(pin):
            raise bad("image.sha256", f"expected 64 hex digits (optionally 'sha256:' first), got {img.get('sha256')!r}")
        pin = pin.lower()
    checksum_url = img.get("checksum_url", "{url}.sha256sum")
    if checksum_url is not None and not isinstance(checksum_url, str):
        raise bad("image.checksum_url", "expected a URL template such as '{url}.sha256sum' or null")
    if checksum_url is None and pin is None:
        raise bad("image.sha256", "with checksum_url: null a pinned sha256 is required")
    compression = img.get("compression") or _compression_from_url(url)
    if compression not in COMPRESSIONS:
        raise bad("image.compression", f"expected one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    fmt = img.get("format", "raw")
    if fmt not in FORMATS:
        raise bad("image.format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
    sizes: dict[str, int | None] = {}
    for key in ("download_size", "disk_size_hint"):
        try:
            sizes[key] = None if img.get(key) is None else parse_size(img[key], key)
        except ValueError as e:
            raise bad(f"image.{key}", str(e)) from None
    for key in ("guest", "provision"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise bad(key, "expected a mapping")
    seed = data.get("seed")
    if seed is not None and not isinstance(seed, dict):
        raise bad("seed", "expected a mapping")
    name_ = data.get("name") or path.stem
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(name_)):
        raise bad("name", f"expected a plain name (letters, digits, . _ -), got {name_!r}")
    return ImageManifest(
        name=str(name_), url=url, mirrors=tuple(mirrors), checksum_url=checksum_url,
        sha256=pin, compression=compression, format=fmt,
        download_size=sizes["download_size"], disk_size_hint=sizes["disk_size_hint"],
        os=str(data.get("os", "illumos")), release=str(data.get("release", "")),
        guest=dict(data.get("guest") or {}), seed=dict(seed) if seed else None,
        provision=dict(data.get("provision") or {}), source=path, data=data,
    )


# --------------------------------------------------------------------------
# results and cache


@dataclass(frozen=True)
class FetchedImage:
    """A verified disk image in the cache."""

    path: Path                  # the disk QEMU boots (decompressed raw, or the qcow2)
    sha256: str                 # of the download (what upstream publishes)
    size: int                   # of the download, bytes
    manifest: ImageManifest
    format: str = "raw"         # of ``path``: raw | qcow2
    url: str = ""               # where it came from
    disk_sha256: str = ""       # of ``path`` (recorded while unpacking)

    @property
    def directory(self) -> Path:
        return self.path.parent


def images_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/images`` or ``$XDG_CACHE_HOME/ddi-harness/images``."""
    if cache_dir is not None:
        return Path(cache_dir) / "images"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ddi-harness" / "images"


def _noop(stage: str, done: int, total: int) -> None:
    pass


def _sha256_file(path: Path, progress: Progress, stage: str = "verify") -> str:
    h = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    progress(stage, 0, total)
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
            done += len(b)
            progress(stage, done, total)
    return h.hexdigest()


def _load_entry(d: Path, m: ImageManifest, verify: bool, progress: Progress = _noop,
                problems: list[str] | None = None) -> FetchedImage | None:
    """The cache entry in ``d`` if it is complete (and, with verify, intact)."""
    rec_path = d / "image.json"
    try:
        rec = json.loads(rec_path.read_text())
        disk = d / rec["disk"]
        st = disk.stat()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if st.st_size != rec.get("disk_size"):
        if problems is not None:
            problems.append(f"{disk}: size {st.st_size} bytes, recorded {rec.get('disk_size')}")
        _quarantine(rec_path)
        return None
    if verify:
        found = _sha256_file(disk, progress, "verify")
        if found != rec.get("disk_sha256"):
            if problems is not None:
                problems.append(f"{disk}: sha256 {found}, recorded {rec.get('disk_sha256')}; "
                                "the entry was set aside and will be downloaded again")
            _quarantine(rec_path)
            return None
    return FetchedImage(path=disk, sha256=rec["sha256"], size=rec["size"], manifest=m,
                        format=rec.get("format", m.format), url=rec.get("url", ""),
                        disk_sha256=rec.get("disk_sha256", ""))


def _quarantine(rec_path: Path) -> None:
    try:
        os.replace(rec_path, rec_path.with_name("image.json.bad"))
    except OSError:
        pass


def _find_cached(m: ImageManifest, root: Path, verify: bool, progress: Progress = _noop,
                 problems: list[str] | None = None) -> FetchedImage | None:
    """The newest complete entry for this manifest (same URL set, or the pinned digest)."""
    if not root.is_dir():
        return None
    found: list[tuple[float, Path]] = []
    for rec_path in root.glob("*/image.json"):
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            continue
        if m.sha256:
            if rec.get("sha256") != m.sha256:
                continue
        elif rec.get("url") not in m.urls:
            continue
        found.append((float(rec.get("fetched_at", 0)), rec_path.parent))
    for _, d in sorted(found, reverse=True):
        img = _load_entry(d, m, verify, progress, problems)
        if img is not None:
            return img
    return None


def cached_image(name: str | ImageManifest, cache_dir: str | os.PathLike | None = None,
                 verify: bool = True, problems: list[str] | None = None,
                 progress: Progress | None = None) -> FetchedImage | None:
    """The cached image for ``name`` without touching the network, or None.

    With ``verify`` (the default) the disk is hashed again and compared with
    the digest recorded when it was made; a damaged entry is set aside (so the
    next fetch downloads it again) and None is returned.  Reasons go to
    ``problems`` when a list is given.
    """
    m = name if isinstance(name, ImageManifest) else load_image_manifest(name)
    return _find_cached(m, images_root(cache_dir) / m.name, verify, progress or _noop, problems)


# --------------------------------------------------------------------------
# locking


class _Lock:
    def __init__(self, path: Path, progress: Progress):
        self.path = path
        self.progress = progress
        self.f = None

    def __enter__(self) -> "_Lock":
        self.f = open(self.path, "a+")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # another run is fetching the same image: wait, then reuse its result
            self.progress("wait", 0, 0)
            fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.f is not None
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


# --------------------------------------------------------------------------
# HTTP


def _write(f: Any, data: bytes) -> None:
    """All cache writes go through here (the ENOSPC tests hook it)."""
    f.write(data)


def _free_mb(directory: Path) -> int:
    try:
        return shutil.disk_usage(directory).free // (1 << 20)
    except OSError:
        return -1


def _enospc(directory: Path, file: Path, need_bytes: int | None) -> FetchError:
    need = f"{max(need_bytes, 0) // (1 << 20) + 1} MB" if need_bytes is not None else "an unknown amount"
    return FetchError(
        f"no space left on {directory} while writing {file}: free {_free_mb(directory)} MB, "
        f"need about {need}; free space or set XDG_CACHE_HOME to a larger disk")


def _is_enospc(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def _open(url: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT,
                                               "Accept-Encoding": "identity", **(headers or {})})
    return urllib.request.urlopen(req, timeout=HTTP_TIMEOUT)


def _classify_http_error(e: urllib.error.HTTPError) -> Exception:
    if e.code in (408, 425, 429) or e.code >= 500:
        return _Retryable(f"HTTP {e.code} {e.reason}")
    return _NotFound(f"HTTP {e.code} {e.reason}")


_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                   socket.timeout, TimeoutError, OSError)


def _name_failure(e: BaseException) -> socket.gaierror | None:
    """The name-resolution error behind ``e`` (urllib wraps it in URLError), if that is what it is."""
    for x in (e, getattr(e, "reason", None), e.__cause__, e.__context__):
        if isinstance(x, socket.gaierror):
            return x
    return None


def _resolving_host(url: str) -> str:
    """The host whose name must resolve to reach ``url``: the proxy's when one is used."""
    u = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(u.scheme)
    if proxy and not urllib.request.proxy_bypass(u.hostname or ""):
        return urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}").hostname or proxy
    return u.hostname or url


def _no_name_error(failures: list[_NoName], what: str) -> FetchError:
    hosts = ", ".join(dict.fromkeys(f.host for f in failures))
    return FetchError(
        f"could not {what}: cannot resolve {hosts} ({failures[0].detail}); this machine has no working "
        f"name resolution (offline?), so nothing was retried. Fix: run where {hosts} resolves (check "
        "/etc/resolv.conf, or set https_proxy), or copy an already fetched image cache "
        "(~/.cache/ddi-harness/images/) to this machine; `ddi-harness doctor --target <t>` checks the host")


def _with_retries(url: str, what: str, attempt: Callable[[], Any],
                  made_progress: Callable[[], bool] = lambda: False) -> Any:
    """Run ``attempt`` until it returns; retry _Retryable/network errors with
    backoff (attempts that made progress do not count); _NotFound propagates,
    and so does a name that does not resolve (_NoName: retrying cannot help)."""
    failures = 0
    while True:
        try:
            return attempt()
        except (_NotFound, _NoName, FetchError):
            raise
        except urllib.error.HTTPError as e:
            err: Exception = _classify_http_error(e)
            if isinstance(err, _NotFound):
                raise err from None
        except _Retryable as e:
            err = e
        except _NETWORK_ERRORS as e:
            if _is_enospc(e):
                raise
            gai = _name_failure(e)
            if gai is not None:
                raise _NoName(_resolving_host(url), gai.strerror or str(gai)) from None
            err = e
        if made_progress():
            failures = 0
            continue
        failures += 1
        if failures > len(RETRY_DELAYS):
            reason = getattr(err, "reason", None) or err
            raise FetchError(
                f"could not {what} {url}: {reason} (after {failures} attempts); "
                "check the network connection and any proxy (https_proxy), then run again"
                + (" -- the partial download is kept and resumes" if what == "download" else "")) from None
        time.sleep(RETRY_DELAYS[failures - 1])


def parse_checksum(text: str, filename: str) -> str:
    """The sha256 for ``filename`` in a checksum file.

    Understands ``<hex>  <name>`` / ``<hex> *<name>`` (sha256sum), a bare
    ``<hex>`` (OmniOS ``.sha256``) and ``SHA256 (<name>) = <hex>`` (BSD).  A
    file with a single digest is taken whatever name it gives (OpenIndiana
    2025.04 linked a checksum file named after another extension).
    """
    entries: list[tuple[str, str | None]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"SHA256\s*\((.+)\)\s*=\s*([0-9a-fA-F]{64})", line)
        if m:
            entries.append((m.group(2).lower(), m.group(1)))
            continue
        m = re.fullmatch(r"([0-9a-fA-F]{64})(?:\s+\*?(.+))?", line)
        if m:
            entries.append((m.group(1).lower(), m.group(2)))
    if not entries:
        raise ValueError("no sha256 digest in it")
    if len(entries) == 1:
        return entries[0][0]
    for digest, name in entries:
        if name is not None and Path(name.strip()).name == filename:
            return digest
    raise ValueError(f"{len(entries)} digests and none for {filename}")


def _fetch_checksum(m: ImageManifest, progress: Progress) -> tuple[str, str]:
    """(expected sha256, URL that published it); the pin wins without any network."""
    if m.sha256:
        return m.sha256, m.url
    tried: list[str] = []
    no_name: list[_NoName] = []
    for url in m.urls:
        curl = m.checksum_url_for(url)
        assert curl is not None
        progress("checksum", 0, 1)

        def attempt() -> bytes:
            with _open(curl) as r:
                return r.read(1 << 16)
        try:
            body = _with_retries(curl, "download the checksum file", attempt)
        except _NotFound as e:
            tried.append(f"{curl} ({e})")
            continue
        except _NoName as e:
            no_name.append(e)
            tried.append(f"{curl} ({e})")
            continue
        try:
            digest = parse_checksum(body.decode("utf-8", "replace"), Path(urllib.parse.urlparse(url).path).name)
        except ValueError as e:
            raise FetchError(f"checksum file {curl} is not usable: {e}; pin the digest as "
                             f"image.sha256 in {m.source}") from None
        progress("checksum", 1, 1)
        return digest, url
    if no_name and len(no_name) == len(tried):
        raise _no_name_error(no_name, f"download the checksum file of image {m.name}")
    raise FetchError(f"no checksum file for image {m.name}: tried {'; '.join(tried)}; the release may "
                     f"have moved -- update image.url in {m.source} or pin image.sha256")


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


def _open_part(part: Path, mode: str, need: int) -> Any:
    try:
        return open(part, mode)
    except OSError as e:
        if _is_enospc(e):
            raise _enospc(part.parent, part, need) from None
        raise FetchError(f"cannot write {part}: {e}; check the permissions of the cache "
                         "or set XDG_CACHE_HOME") from None


def _download_one(url: str, part: Path, progress: Progress, size_hint: int | None,
                  extra_need: int) -> None:
    """Download ``url`` into ``part`` (resuming it); returns when the server says it is whole.

    ``size_hint`` (approximate) is used only for the free-space check when the
    server sends no length; ``extra_need`` is what unpacking will need later.
    """
    best = [part.stat().st_size if part.exists() else 0]

    def grew() -> bool:
        size = part.stat().st_size if part.exists() else 0
        if size > best[0]:
            best[0] = size
            return True
        return False

    def attempt() -> None:
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            resp = _open(url, headers)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:
                m_ = _CONTENT_RANGE.match(e.headers.get("Content-Range", "") or "")
                total = int(m_.group(3)) if m_ and m_.group(3) != "*" else None
                e.close()
                if total == have:
                    return                      # the part is already complete
                part.unlink()                   # longer than the file, or unknown: start again
                raise _Retryable("HTTP 416 for a partial download; restarting it") from None
            raise
        with resp:
            if resp.status == 206 and have:
                m_ = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "") or "")
                if not m_ or m_.group(1) is None or int(m_.group(1)) != have:
                    part.unlink()
                    raise _Retryable("server answered a different range; restarting")
                total = int(m_.group(3)) if m_.group(3) != "*" else None
                mode, done = "ab", have
            elif resp.status == 200:
                # a full answer (first request, or a server that ignores Range: start again)
                clen = resp.headers.get("Content-Length")
                total = int(clen) if clen and clen.isdigit() else None
                mode, done = "wb", 0
            else:
                raise _Retryable(f"unexpected HTTP {resp.status}")
            remaining = (total if total is not None else (size_hint or 0)) - done
            try:
                free = shutil.disk_usage(part.parent).free
            except OSError:
                free = None
            if free is not None and remaining > free:
                raise _enospc(part.parent, part, remaining + extra_need)
            progress("download", done, total or 0)
            f = _open_part(part, mode, remaining + extra_need)
            try:
                while True:
                    b = resp.read(CHUNK)        # network errors: retried by the caller
                    if not b:
                        break
                    try:
                        _write(f, b)
                    except OSError as e:
                        if _is_enospc(e):
                            need = (total - done if total is not None else 0) + extra_need
                            raise _enospc(part.parent, part, need) from None
                        raise FetchError(f"cannot write {part}: {e}") from None
                    done += len(b)
                    progress("download", done, total or 0)
            finally:
                try:
                    f.close()
                except OSError as e:
                    if _is_enospc(e):
                        raise _enospc(part.parent, part, extra_need) from None
                    raise FetchError(f"cannot write {part}: {e}") from None
            if total is not None and done < total:
                raise _Retryable(f"connection closed after {done} of {total} bytes")

    _with_retries(url, "download", attempt, grew)


def _download(m: ImageManifest, first_url: str, part: Path, progress: Progress) -> str:
    """Download the image into ``part`` from the first URL that has it; returns that URL."""
    urls = [first_url] + [u for u in m.urls if u != first_url]
    extra = 0 if m.compression == "none" else (m.disk_size_hint or 3 * (m.download_size or 0))
    tried: list[str] = []
    no_name: list[_NoName] = []
    for url in urls:
        try:
            _download_one(url, part, progress, m.download_size, extra)
            return url
        except _NotFound as e:
            tried.append(f"{url} ({e})")
        except _NoName as e:
            no_name.append(e)
            tried.append(f"{url} ({e})")
    if no_name and len(no_name) == len(tried):
        raise _no_name_error(no_name, f"download image {m.name}")
    raise FetchError(f"image {m.name} is not at any of its URLs: {'; '.join(tried)}; update image.url "
                     f"in {m.source} (see the directory index of the download site)")


def _verify(path: Path, expected: str, m: ImageManifest, url: str, progress: Progress) -> str:
    """sha256 of ``path`` == expected, or the file is removed and FetchError raised."""
    found = _sha256_file(path, progress, "verify")
    if found == expected:
        return found
    size = path.stat().st_size
    path.unlink(missing_ok=True)
    where = f"pinned in {m.source}" if m.sha256 else f"published at {m.checksum_url_for(url)}"
    approx = f", expected about {m.download_size} bytes" if m.download_size else ""
    raise FetchError(
        f"checksum mismatch for {path} downloaded from {url}: expected sha256 {expected} ({where}), "
        f"found sha256 {found} ({size} bytes{approx}); the file was removed and not used -- run again "
        "to download it afresh; if it fails again the download is corrupted on the way or the "
        "published checksum is wrong")


# --------------------------------------------------------------------------
# decompression


_HOLE = 64 << 10
_ZERO = bytes(_HOLE)


class _SparseWriter:
    """Writes a stream into a file, seeking over all-zero 64 KiB blocks
    (aligned to the output offset); hashes everything it is given."""

    def __init__(self, f: Any):
        self.f = f
        self.pos = 0
        self.sha = hashlib.sha256()

    def write(self, b: bytes) -> None:
        self.sha.update(b)
        mv = memoryview(b)
        i, n = 0, len(b)
        while i < n:
            j = min(n, i + _HOLE - (self.pos + i) % _HOLE)      # to the next block boundary
            if mv[i:j] == _ZERO[:j - i]:
                self.f.seek(j - i, os.SEEK_CUR)
                i = j
                continue
            k = j                                               # merge non-zero blocks
            while k < n:
                nk = min(n, k + _HOLE)
                if mv[k:nk] == _ZERO[:nk - k]:
                    break
                k = nk
            _write(self.f, mv[i:k])
            i = k
        self.pos += n

    def finish(self) -> None:
        self.f.truncate(self.pos)


def _zstd_stream(src: Path, consumed: list[int]) -> Iterator[bytes]:
    exe = shutil.which("zstd")
    if exe is None:
        raise FetchError("the zstd command is needed to unpack the image: apt-get install zstd "
                         "(`make test` installs it)")
    with tempfile.TemporaryFile() as errf:
        proc = subprocess.Popen([exe, "-d", "-c", "-q", "--no-progress"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=errf)
        assert proc.stdin is not None and proc.stdout is not None

        def feed() -> None:
            try:
                with open(src, "rb") as f:
                    while True:
                        b = f.read(CHUNK)
                        if not b:
                            break
                        proc.stdin.write(b)       # type: ignore[union-attr]
                        consumed[0] += len(b)
            except (BrokenPipeError, ValueError, OSError):
                pass
            finally:
                try:
                    proc.stdin.close()            # type: ignore[union-attr]
                except OSError:
                    pass

        t = threading.Thread(target=feed, daemon=True)
        t.start()
        ok = False
        try:
            while True:
                b = proc.stdout.read(CHUNK)
                if not b:
                    break
                yield b
            ok = True
        finally:
            if not ok:
                proc.kill()
            proc.stdout.close()
            rc = proc.wait()
            t.join()
        if rc != 0:
            errf.seek(0)
            msg = errf.read().decode("utf-8", "replace").strip()
            raise FetchError(f"zstd could not unpack {src} (exit {rc}): {msg}")


def _py_stream(src: Path, compression: str, consumed: list[int]) -> Iterator[bytes]:
    raw = open(src, "rb")
    opener = gzip.GzipFile if compression == "gzip" else lzma.LZMAFile
    try:
        with opener(fileobj=raw) as z:          # type: ignore[operator]
            while True:
                b = z.read(CHUNK)
                if not b:
                    break
                consumed[0] = raw.tell()
                yield b
    except (OSError, EOFError, lzma.LZMAError) as e:
        if _is_enospc(e):
            raise
        raise FetchError(f"could not unpack {src} ({compression}): {e}") from None
    finally:
        raw.close()


def _decompressed_size_hint(src: Path, m: ImageManifest) -> int | None:
    if m.compression == "zstd" and shutil.which("zstd"):
        try:
            out = subprocess.run(["zstd", "-lv", str(src)], capture_output=True, text=True, timeout=60).stdout
            mm = re.search(r"Decompressed Size:.*\((\d+) B\)", out)
            if mm:
                return int(mm.group(1))
        except (OSError, subprocess.SubprocessError):
            pass
    return m.disk_size_hint


def _decompress(src: Path, out: Path, m: ImageManifest, progress: Progress) -> str:
    """Unpack ``src`` into ``out`` (atomically); returns the sha256 of the output."""
    hint = _decompressed_size_hint(src, m)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    consumed = [0]
    total = src.stat().st_size
    progress("decompress", 0, total)
    stream = _zstd_stream(src, consumed) if m.compression == "zstd" else _py_stream(src, m.compression, consumed)
    w = None
    try:
        with open(tmp, "wb") as f:
            w = _SparseWriter(f)
            for b in stream:
                w.write(b)
                progress("decompress", min(consumed[0], total), total)
            w.finish()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as e:
        stream.close()
        tmp.unlink(missing_ok=True)
        if _is_enospc(e):
            written = w.pos if w else 0
            raise _enospc(out.parent, out, (hint - written) if hint else None) from None
        raise FetchError(f"could not write {out}: {e}") from None
    except BaseException:
        stream.close()
        tmp.unlink(missing_ok=True)
        raise
    progress("decompress", total, total)
    return w.sha.hexdigest()


# --------------------------------------------------------------------------
# the fetch


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if _is_enospc(e):
            raise _enospc(path.parent, path, 1 << 20) from None
        raise FetchError(f"could not write {path}: {e}") from None


def fetch_image(name_or_manifest: str | os.PathLike | ImageManifest,
                cache_dir: str | os.PathLike | None = None,
                progress: Progress | None = None,
                refresh: bool = False) -> FetchedImage:
    """Download (once), verify and unpack the image; return the cached disk.

    ``name_or_manifest`` is an image name (``images/<name>.yaml``), a path to
    a manifest, or an ImageManifest.  ``cache_dir`` replaces
    ``$XDG_CACHE_HOME/ddi-harness``.  ``progress(stage, done, total)`` is
    called with stages wait, checksum, download, verify, decompress, done.
    A cached image is returned without any network access unless ``refresh``
    (which fetches the checksum file again and downloads a new version if
    upstream changed).  Raises FetchError.
    """
    m = (name_or_manifest if isinstance(name_or_manifest, ImageManifest)
         else load_image_manifest(name_or_manifest))
    progress = progress or _noop
    root = images_root(cache_dir) / m.name
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(f"cannot create the image cache {root}: {e}; set XDG_CACHE_HOME "
                         "to a writable directory") from None
    with _Lock(root / ".lock", progress):
        for stale in root.glob("*/*.tmp-*"):      # left by killed runs (we hold the lock)
            stale.unlink(missing_ok=True)
        if not refresh:
            img = _find_cached(m, root, verify=False)
            if img is not None:
                progress("done", 1, 1)
                return img
        expected, first_url = _fetch_checksum(m, progress)
        d = root / expected[:DIGEST_PREFIX_LEN]
        img = _load_entry(d, m, verify=False)
        if img is not None and img.sha256 == expected:
            progress("done", 1, 1)
            return img
        try:
            d.mkdir(exist_ok=True)
        except OSError as e:
            raise FetchError(f"cannot create {d}: {e}") from None
        download = d / m.filename
        part = d / f"{m.filename}.part"
        url = first_url
        if download.exists():
            # verified by an earlier run whose unpacking did not finish: check it again
            try:
                found = _verify(download, expected, m, url, progress)
            except FetchError:
                found = ""
        if not download.exists():
            url = _download(m, first_url, part, progress)
            found = _verify(part, expected, m, url, progress)
            os.replace(part, download)
        size = download.stat().st_size
        if m.compression == "none":
            disk, disk_sha = download, found
        else:
            disk = d / f"disk.{m.format}"
            disk_sha = _decompress(download, disk, m, progress)
        rec = {"name": m.name, "url": url, "sha256": found, "size": size, "compression": m.compression,
               "format": m.format, "disk": disk.name, "disk_size": disk.stat().st_size,
               "disk_sha256": disk_sha, "fetched_at": time.time()}
        _atomic_write_text(d / "image.json", json.dumps(rec, indent=2) + "\n")
        if disk != download:
            download.unlink(missing_ok=True)       # 831 MB we no longer need
        progress("done", 1, 1)
        return FetchedImage(path=disk, sha256=found, size=size, manifest=m, format=m.format,
                            url=url, disk_sha256=disk_sha)


# --------------------------------------------------------------------------
# reachability (for `doctor`)


def _resolve(host: str, port: int, timeout: float) -> None:
    """getaddrinfo with a deadline (it has none of its own): raises socket.gaierror or TimeoutError."""
    box: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            box["e"] = None
        except BaseException as e:   # noqa: BLE001 - handed to the caller
            box["e"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if "e" not in box:
        raise TimeoutError(f"name resolution of {host} took more than {timeout:.0f} s")
    if box["e"] is not None:
        raise box["e"]


def probe_url(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    """Is ``url``'s host reachable now?  (ok, detail); bounded by about ``2 * timeout`` seconds.

    Resolves the host (or the proxy's), then sends an HTTP HEAD for the URL.  Any
    HTTP answer means the host is reachable; 404/410 says the file is not there.
    """
    u = urllib.parse.urlsplit(url)
    host = _resolving_host(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    t0 = time.monotonic()
    try:
        _resolve(host, port, timeout)
    except socket.gaierror as e:
        return False, f"cannot resolve {host} ({e.strerror or e}): no name resolution (offline?)"
    except TimeoutError as e:
        return False, str(e)
    status = 0
    for method, extra in (("HEAD", {}), ("GET", {"Range": "bytes=0-"})):   # GET when HEAD is refused
        req = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT, **extra})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            return False, f"{u.hostname}:{port} not reachable ({reason})"
        if status not in (405, 501):
            break
    took = time.monotonic() - t0
    if status in (404, 410):
        return False, f"{u.hostname} answered HTTP {status} for {url}: the image is not there (moved?)"
    return True, f"{u.hostname} reachable (HTTP {status} in {took:.1f} s)"


# --------------------------------------------------------------------------
# cloud-init NoCloud seed (ISO9660 + Joliet, label "cidata")


_SECTOR = 2048
_SSH_KEY = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) "
                      r"[A-Za-z0-9+/=]+( [^\r\n]*)?$")


def _both16(v: int) -> bytes:
    return struct.pack("<H", v) + struct.pack(">H", v)


def _both32(v: int) -> bytes:
    return struct.pack("<I", v) + struct.pack(">I", v)


def _dir_record(ident: bytes, extent: int, size: int, is_dir: bool, when: tuple[int, ...]) -> bytes:
    pad = b"\x00" if len(ident) % 2 == 0 else b""
    length = 33 + len(ident) + len(pad)
    rec = (bytes([length, 0]) + _both32(extent) + _both32(size) + bytes(when)
           + bytes([2 if is_dir else 0, 0, 0]) + _both16(1) + bytes([len(ident)]) + ident + pad)
    assert len(rec) == length
    return rec


def _text_field(text: str, n: int, joliet: bool) -> bytes:
    """An identifier field of ``n`` bytes: ASCII padded with spaces, or for
    Joliet UCS-2 big-endian padded with UCS-2 spaces (an odd last byte is 0)."""
    if not joliet:
        return text.encode("ascii").ljust(n, b" ")
    enc = text.encode("utf-16-be")
    enc += "\u0020".encode("utf-16-be") * ((n - len(enc)) // 2)
    return enc.ljust(n, b"\x00")


def _volume_descriptor(kind: int, volid: str, joliet: bool, total: int, ptable_size: int,
                       l_table: int, m_table: int, root_rec: bytes) -> bytes:
    """ISO 9660 section 8.4 (primary, kind 1) or 8.5 (Joliet supplementary, kind 2)."""
    vd = bytearray(_SECTOR)
    vd[0] = kind
    vd[1:6] = b"CD001"
    vd[6] = 1
    vd[8:40] = _text_field("", 32, joliet)                  # system identifier
    vd[40:72] = _text_field(volid, 32, joliet)              # volume identifier
    vd[80:88] = _both32(total)                              # volume space size
    if joliet:
        vd[88:91] = b"%/E"                                  # escape sequence: UCS-2 level 3
    vd[120:124] = _both16(1)                                # volume set size
    vd[124:128] = _both16(1)                                # volume sequence number
    vd[128:132] = _both16(_SECTOR)                          # logical block size
    vd[132:140] = _both32(ptable_size)
    vd[140:144] = struct.pack("<I", l_table)
    vd[148:152] = struct.pack(">I", m_table)
    vd[156:190] = root_rec
    vd[190:318] = _text_field("", 128, joliet)              # volume set
    vd[318:446] = _text_field("", 128, joliet)              # publisher
    vd[446:574] = _text_field("", 128, joliet)              # data preparer
    vd[574:702] = _text_field("DDI-HARNESS", 128, joliet)   # application
    for off in (702, 739, 776):                             # copyright, abstract, biblio files
        vd[off:off + 37] = _text_field("", 37, joliet)
    for off in (813, 830, 847, 864):                        # dates: "not specified"
        vd[off:off + 17] = b"0" * 16 + b"\x00"
    vd[881] = 1                                             # file structure version
    return bytes(vd)


def build_iso9660(files: dict[str, bytes], volume_id: str) -> bytes:
    """A minimal ISO9660 image with a Joliet tree: the files in the root directory.

    Joliet keeps the exact lower-case names (``user-data``) that illumos
    hsfs (RR > ISO9660:1999 > Joliet) and Linux isofs both present; the
    ISO9660 names are the upper-case ``USER-DATA.;1`` forms.  The volume id
    is stored as given (cloud-init on illumos compares ``labelit -F hsfs``'s
    ``Volume id: cidata`` exactly).
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,16}", volume_id):
        raise ValueError(f"volume id {volume_id!r}: 1-16 letters, digits, _ or -")
    names = sorted(files)
    for n in names:
        if not re.fullmatch(r"[a-z0-9_-]{1,30}(\.[a-z0-9_-]{1,3})?", n):
            raise ValueError(f"file name {n!r} is not supported by this writer")
    t = time.gmtime()
    when = (t.tm_year - 1900, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, 0)
    # sectors: 16 PVD, 17 Joliet SVD, 18 terminator, 19/20 ISO L/M path tables,
    # 21/22 Joliet L/M path tables, 23 ISO root dir, 24 Joliet root dir, 25.. data
    iso_root, jol_root, data_start = 23, 24, 25
    extents: dict[str, int] = {}
    nxt = data_start
    for n in names:
        extents[n] = nxt
        nxt += max(1, -(-len(files[n]) // _SECTOR))
    total = nxt

    def root_dir(sector: int, joliet: bool) -> bytes:
        recs = [_dir_record(b"\x00", sector, _SECTOR, True, when),
                _dir_record(b"\x01", sector, _SECTOR, True, when)]
        for n in names:
            if joliet:
                ident = n.encode("utf-16-be")
            else:
                base, _, ext = n.partition(".")
                ident = f"{base.upper()}.{ext.upper()};1".encode("ascii")
            recs.append(_dir_record(ident, extents[n], len(files[n]), False, when))
        blob = b"".join(recs)
        if len(blob) > _SECTOR:
            raise ValueError("too many files for a one-sector root directory")
        return blob.ljust(_SECTOR, b"\x00")

    def path_table(sector: int, big: bool) -> bytes:
        fmt = ">" if big else "<"
        return (bytes([1, 0]) + struct.pack(fmt + "I", sector) + struct.pack(fmt + "H", 1)
                + b"\x00\x00")

    ptsize = len(path_table(0, False))
    img = bytearray(total * _SECTOR)
    pvd_root = _dir_record(b"\x00", iso_root, _SECTOR, True, when)
    jol_root_rec = _dir_record(b"\x00", jol_root, _SECTOR, True, when)
    img[16 * _SECTOR:17 * _SECTOR] = _volume_descriptor(1, volume_id, False, total,
                                                        ptsize, 19, 20, pvd_root)
    img[17 * _SECTOR:18 * _SECTOR] = _volume_descriptor(2, volume_id, True, total,
                                                        ptsize, 21, 22, jol_root_rec)
    term = bytearray(_SECTOR)
    term[0], term[1:6], term[6] = 255, b"CD001", 1
    img[18 * _SECTOR:19 * _SECTOR] = term
    for sec, root, big in ((19, iso_root, False), (20, iso_root, True),
                           (21, jol_root, False), (22, jol_root, True)):
        pt = path_table(root, big)
        img[sec * _SECTOR:sec * _SECTOR + len(pt)] = pt
    img[iso_root * _SECTOR:(iso_root + 1) * _SECTOR] = root_dir(iso_root, False)
    img[jol_root * _SECTOR:(jol_root + 1) * _SECTOR] = root_dir(jol_root, True)
    for n in names:
        off = extents[n] * _SECTOR
        img[off:off + len(files[n])] = files[n]
    return bytes(img)


def nocloud_files(ssh_pubkey: str, hostname: str, instance_id: str | None = None) -> dict[str, bytes]:
    """The ``user-data`` and ``meta-data`` of the seed (root gets the key, no passwords)."""
    key = ssh_pubkey.strip()
    if not _SSH_KEY.match(key):
        raise FetchError(f"not an OpenSSH public key (one line, 'ssh-ed25519 AAAA...'): {key[:40]!r}")
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", hostname):
        raise FetchError(f"hostname {hostname!r}: letters, digits and '-', at most 63 characters")
    if instance_id is None:
        instance_id = "ddih-" + hashlib.sha256(f"{key}\n{hostname}".encode()).hexdigest()[:16]
    qkey = json.dumps(key)                     # a JSON string is a valid YAML scalar
    user_data = (
        "#cloud-config\n"
        "disable_root: false\n"
        "ssh_pwauth: false\n"
        "users:\n"
        "  - name: root\n"
        "    ssh_authorized_keys:\n"
        f"      - {qkey}\n"
    )
    meta_data = (
        f"instance-id: {instance_id}\n"
        f"local-hostname: {hostname}\n"
        "public-keys:\n"
        f"  - {qkey}\n"
    )
    return {"user-data": user_data.encode(), "meta-data": meta_data.encode()}


def make_nocloud_seed(out_path: str | os.PathLike, ssh_pubkey: str, hostname: str,
                      instance_id: str | None = None) -> Path:
    """Write a cloud-init NoCloud seed: ISO9660 + Joliet, volume id ``cidata``.

    Attach it read-only, e.g. ``-drive file=seed.iso,if=virtio,format=raw,readonly=on``.
    ``instance_id`` defaults to a digest of key and hostname, so reboots of
    the same base image do not re-run cloud-init's per-instance modules.
    """
    out = Path(out_path)
    data = build_iso9660(nocloud_files(ssh_pubkey, hostname, instance_id), "cidata")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if _is_enospc(e):
            raise _enospc(out.parent, out, len(data)) from None
        raise FetchError(f"could not write the seed {out}: {e}") from None
    return out


# ---------------------------------------------------------------- illumos-gate sources

@dataclass(frozen=True)
class GateManifest:
    """images/illumos-gate.yaml: a pinned commit and the sha256 of every file the build reads."""

    commit: str
    url: str                   # with {commit} and {path}
    files: dict[str, str]      # gate path -> sha256
    source: str = "images/illumos-gate.yaml"

    def url_for(self, path: str) -> str:
        return self.url.replace("{commit}", self.commit).replace("{path}", path)


def load_gate_manifest(path: str | os.PathLike | None = None) -> GateManifest:
    p = Path(path) if path else IMAGES_DIR / "illumos-gate.yaml"
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise FetchError(f"{p}: cannot read the illumos-gate manifest ({e}); reinstall ddi-harness") from None
    try:
        commit, url, files = str(doc["commit"]), str(doc["url"]), dict(doc["files"])
    except (KeyError, TypeError) as e:
        raise FetchError(f"{p}: the manifest needs commit, url and files ({e})") from None
    bad = [k for k, v in files.items() if not re.fullmatch(r"[0-9a-f]{64}", str(v))]
    if not re.fullmatch(r"[0-9a-f]{40}", commit) or bad:
        raise FetchError(f"{p}: commit must be 40 hex digits and every file a sha256 (bad: {bad[:3]})")
    return GateManifest(commit, url, {k: str(v) for k, v in files.items()}, str(p))


def gate_cache_dir(m: GateManifest, cache_dir: str | os.PathLike | None = None) -> Path:
    from harness.images import cache_root

    return cache_root(cache_dir) / "illumos-gate" / m.commit


def _gate_file_ok(d: Path, path: str, sha: str) -> bool:
    f = d / path
    return f.is_file() and hashlib.sha256(f.read_bytes()).hexdigest() == sha


def cached_gate(m: GateManifest | None = None, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The pinned tree in the cache, every file present and matching its sha256; else None."""
    m = m or load_gate_manifest()
    d = gate_cache_dir(m, cache_dir)
    if not (d / "COMPLETE").exists():
        return None
    return d if all(_gate_file_ok(d, p, s) for p, s in m.files.items()) else None


def fetch_gate(m: GateManifest | None = None, cache_dir: str | os.PathLike | None = None,
               progress: Progress = _noop) -> Path:
    """Fetch the pinned illumos-gate files over HTTPS into the cache, sha256-checked.

    A file whose digest does not match is not kept (FetchError names it); files already
    fetched and verified are not fetched again.  With no network the first request fails
    and the error says how to build from a local tree instead.
    """
    m = m or load_gate_manifest()
    d = gate_cache_dir(m, cache_dir)
    d.mkdir(parents=True, exist_ok=True)
    with _Lock(d / ".lock", progress):
        todo = [(p, s) for p, s in sorted(m.files.items()) if not _gate_file_ok(d, p, s)]
        for i, (path, sha) in enumerate(todo):
            url = m.url_for(path)
            try:
                with _open(url) as r:
                    data = r.read()
            except urllib.error.HTTPError as e:
                raise FetchError(f"illumos-gate {m.commit[:12]}: {url} answered HTTP {e.code}; check that the "
                                 f"commit in {m.source} exists, or give --gate DIR") from None
            except _NETWORK_ERRORS as e:
                reason = getattr(e, "reason", None) or e
                raise FetchError(f"cannot fetch the pinned illumos-gate sources ({url}: {reason}). Without "
                                 "network, build from a local tree: --gate DIR (an illumos-gate checkout) or "
                                 "DDIH_ILLUMOS_GATE=DIR") from None
            got = hashlib.sha256(data).hexdigest()
            if got != sha:
                raise FetchError(f"illumos-gate {m.commit[:12]}: {path} from {url} has sha256 {got}, "
                                 f"but {m.source} pins {sha}; the file was not kept. Check for a proxy "
                                 "rewriting downloads, or give --gate DIR")
            f = d / path
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_name(f.name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, f)
            progress("illumos-gate", i + 1, len(todo))
        (d / "COMPLETE").write_text(m.commit + "\n")
    return d
