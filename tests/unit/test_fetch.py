"""harness/fetch.py against a local Range-capable HTTP server (127.0.0.1 only).

The server serves a small zstd-compressed raw image and its ``.sha256sum``
and can misbehave on request: drop the connection after N bytes, ignore
Range, serve corrupted or truncated bytes, answer 404/503, go slowly.
Every request is logged so the tests can see what the client asked for.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness import fetch
from harness.fetch import FetchError, cached_image, fetch_image, load_image_manifest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("zstd") is None,
                                reason="needs the zstd command (apt-get install zstd; `make test` installs it)")

IMG_PATH = "/hipster/20251026/test-cloudimage.img.zst"
SUM_PATH = IMG_PATH + ".sha256sum"


# --------------------------------------------------------------------------
# test data


@pytest.fixture(scope="session")
def image_data(tmp_path_factory) -> dict:
    """A 4 MB raw 'disk' (random, a zero hole, random, zeros to the end) and its zstd compression."""
    rnd = hashlib.sha256(b"seed").digest()
    blocks = []
    for i in range(1 << 15):                         # 1 MB of pseudo-random bytes
        rnd = hashlib.sha256(rnd).digest()
        blocks.append(rnd)
    noise = b"".join(blocks)
    raw = b"\xebOI-disk" + noise + bytes(1 << 20) + noise[::-1] + b"tail" + bytes((1 << 20) + 123)
    d = tmp_path_factory.mktemp("img")
    (d / "disk.raw").write_bytes(raw)
    subprocess.run(["zstd", "-q", "-3", "-o", str(d / "disk.raw.zst"), str(d / "disk.raw")], check=True)
    zst = (d / "disk.raw.zst").read_bytes()
    assert len(zst) > 1_500_000                      # several read chunks, worth resuming
    return {"raw": raw, "zst": zst, "sha": hashlib.sha256(zst).hexdigest()}


# --------------------------------------------------------------------------
# the server


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    log: list[tuple[str, str | None, int]] = field(default_factory=list)   # path, Range, status
    drop_after: list[int] = field(default_factory=list)     # per image response, popped in order
    ignore_range: bool = False
    fail_status: list[int] = field(default_factory=list)    # statuses to answer first, popped
    delay: float = 0.0                                      # seconds per 64 KB chunk
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests_for(self, path: str) -> list[tuple[str, str | None, int]]:
        with self.lock:
            return [e for e in self.log if e[0] == path]


class RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _log(self, status: int) -> None:
        st: ServerState = self.server.state  # type: ignore[attr-defined]
        with st.lock:
            st.log.append((self.path, self.headers.get("Range"), status))

    def _simple(self, status: int, headers: dict[str, str] | None = None) -> None:
        self._log(status)
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        st: ServerState = self.server.state  # type: ignore[attr-defined]
        body = st.files.get(self.path)
        if body is None:
            return self._simple(404)
        is_image = not self.path.endswith((".sha256sum", ".sha256"))
        with st.lock:
            fail = st.fail_status.pop(0) if (is_image and st.fail_status) else None
        if fail:
            return self._simple(fail)
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and not st.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            start = int(m.group(1))
            if start >= len(body):
                return self._simple(416, {"Content-Range": f"bytes */{len(body)}"})
            status = 206
        payload = body[start:]
        with st.lock:
            limit = st.drop_after.pop(0) if (is_image and st.drop_after) else len(payload)
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        sent = 0
        try:
            while sent < min(limit, len(payload)):
                n = min(65536, limit - sent)
                self.wfile.write(payload[sent:sent + n])
                sent += n
                if st.delay:
                    threading.Event().wait(st.delay)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        if limit < len(payload):                     # drop the connection mid-body
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def server(image_data):
    state = ServerState()
    state.files[IMG_PATH] = image_data["zst"]
    state.files[SUM_PATH] = f"{image_data['sha']}  test-cloudimage.img.zst\n".encode()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.daemon_threads = True
    httpd.state = state  # type: ignore[attr-defined]
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(fetch, "RETRY_DELAYS", (0.01, 0.01, 0.01))
    monkeypatch.setattr(fetch, "HTTP_TIMEOUT", 10.0)


def write_manifest(tmp_path: Path, server: ServerState, *, path: str = IMG_PATH, extra: str = "",
                   mirrors: list[str] | None = None, name: str = "testimg") -> Path:
    url = server.base + path  # type: ignore[attr-defined]
    mf = tmp_path / f"{name}.yaml"
    mf.write_text(f"name: {name}\nos: illumos\nimage:\n  url: '{url}'\n"
                  f"  mirrors: {json.dumps(mirrors or [])}\n"
                  + textwrap.indent(extra, "  ")
                  + "guest: {memory: 512M}\nprovision: {recipe: test}\n")
    return mf


def entry_dir(cache: Path, sha: str, name: str = "testimg") -> Path:
    return cache / "images" / name / sha[:16]


# --------------------------------------------------------------------------
# fetch, verify, decompress


def test_fresh_fetch_verifies_and_decompresses(tmp_path, server, image_data):
    cache = tmp_path / "cache"
    img = fetch_image(write_manifest(tmp_path, server), cache_dir=cache)
    assert img.path == entry_dir(cache, image_data["sha"]) / "disk.raw"
    assert img.path.read_bytes() == image_data["raw"]
    assert img.sha256 == image_data["sha"]
    assert img.size == len(image_data["zst"])
    assert img.format == "raw" and img.manifest.name == "testimg"
    assert img.disk_sha256 == hashlib.sha256(image_data["raw"]).hexdigest()
    probe = tmp_path / "probe"
    with open(probe, "wb") as f:
        f.seek(4 << 20)
        f.write(b"x")
    if probe.stat().st_blocks * 512 < (1 << 20):       # this filesystem keeps holes
        assert img.path.stat().st_blocks * 512 <= len(image_data["raw"]) - (1536 << 10)   # written sparse
    d = img.path.parent
    assert sorted(p.name for p in d.iterdir()) == ["disk.raw", "image.json"]   # .zst dropped, no .part
    rec = json.loads((d / "image.json").read_text())
    assert rec["sha256"] == image_data["sha"] and rec["url"].endswith(IMG_PATH)
    # the checksum and the image were each fetched once
    assert [e[2] for e in server.requests_for(SUM_PATH)] == [200]
    assert [e[2] for e in server.requests_for(IMG_PATH)] == [200]
    # a second fetch is served from the cache without any network access
    n = len(server.log)
    again = fetch_image(write_manifest(tmp_path, server), cache_dir=cache)
    assert again.path == img.path and len(server.log) == n


def test_xdg_cache_home_is_the_default_cache(tmp_path, server, image_data, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    img = fetch_image(write_manifest(tmp_path, server))
    assert img.path == tmp_path / "xdg" / "ddi-harness" / "images" / "testimg" / image_data["sha"][:16] / "disk.raw"


def test_progress_reports_increasing_done_values(tmp_path, server, image_data):
    calls: list[tuple[str, int, int]] = []
    fetch_image(write_manifest(tmp_path, server), cache_dir=tmp_path / "c",
                progress=lambda s, d, t: calls.append((s, d, t)))
    size = len(image_data["zst"])
    for stage in ("download", "verify", "decompress"):
        done = [d for s, d, t in calls if s == stage]
        assert len(done) >= 2, (stage, calls)
        assert done == sorted(done) and done[-1] == size, (stage, done)
        assert {t for s, d, t in calls if s == stage} == {size}
    assert len(set(d for s, d, t in calls if s == "download")) >= 3     # really incremental
    stages = [s for s, _, _ in calls]
    assert stages.index("download") < stages.index("verify") < stages.index("decompress")
    assert stages[-1] == "done"


def test_interrupted_download_resumes_with_range(tmp_path, server, image_data):
    server.drop_after = [700_000]
    img = fetch_image(write_manifest(tmp_path, server), cache_dir=tmp_path / "c")
    assert img.path.read_bytes() == image_data["raw"]
    reqs = server.requests_for(IMG_PATH)
    assert [(r, s) for _, r, s in reqs] == [(None, 200), ("bytes=700000-", 206)]


def test_part_file_left_by_a_killed_run_is_resumed(tmp_path, server, image_data):
    cache = tmp_path / "c"
    d = entry_dir(cache, image_data["sha"])
    d.mkdir(parents=True)
    (d / "test-cloudimage.img.zst.part").write_bytes(image_data["zst"][:123_456])
    img = fetch_image(write_manifest(tmp_path, server), cache_dir=cache)
    assert img.path.read_bytes() == image_data["raw"]
    assert [(r, s) for _, r, s in server.requests_for(IMG_PATH)] == [("bytes=123456-", 206)]


def test_server_ignoring_range_restarts_from_zero(tmp_path, server, image_data):
    server.ignore_range = True
    server.drop_after = [600_000]
    img = fetch_image(write_manifest(tmp_path, server), cache_dir=tmp_path / "c")
    assert img.path.read_bytes() == image_data["raw"]       # appending the 200 body would corrupt it
    reqs = server.requests_for(IMG_PATH)
    assert [(r, s) for _, r, s in reqs] == [(None, 200), ("bytes=600000-", 200)]


def test_416_with_a_complete_part_is_not_downloaded_again(tmp_path, server, image_data):
    cache = tmp_path / "c"
    d = entry_dir(cache, image_data["sha"])
    d.mkdir(parents=True)
    (d / "test-cloudimage.img.zst.part").write_bytes(image_data["zst"])
    img = fetch_image(write_manifest(tmp_path, server), cache_dir=cache)
    assert img.path.read_bytes() == image_data["raw"]
    assert [s for _, _, s in server.requests_for(IMG_PATH)] == [416]


def test_416_with_an_oversized_part_restarts(tmp_path, server, image_data):
    cache = tmp_path / "c"
    d = entry_dir(cache, image_data["sha"])
    d.mkdir(parents=True)
    (d / "test-cloudimage.img.zst.part").write_bytes(b"junk" * 1_000_000)
    img = fetch_image(write_manifest(tmp_path, server), cache_dir=cache)
    assert img.path.read_bytes() == image_data["raw"]
    assert [s for _, _, s in server.requests_for(IMG_PATH)] == [416, 200]


def test_repeated_drops_that_make_progress_do_not_exhaust_the_retries(tmp_path, server, image_data):
    server.drop_after = [300_000] * 6                  # more drops than RETRY_DELAYS allows
    img = fetch_image(write_manifest(tmp_path, server), cache_dir=tmp_path / "c")
    assert img.path.read_bytes() == image_data["raw"]
    ranges = [r for _, r, _ in server.requests_for(IMG_PATH)]
    assert ranges == [None] + [f"bytes={300_000 * i}-" for i in range(1, 7)]


def test_transient_server_errors_are_retried(tmp_path, server, image_data):
    server.fail_status = [503, 502]
    img = fetch_image(write_manifest(tmp_path, server), cache_dir=tmp_path / "c")
    assert img.path.read_bytes() == image_data["raw"]
    assert [s for _, _, s in server.requests_for(IMG_PATH)] == [503, 502, 200]


# --------------------------------------------------------------------------
# verification


def _assert_rejected(excinfo, expected: str, found_bytes: bytes, part: Path) -> None:
    msg = str(excinfo.value)
    assert str(part) in msg, msg
    assert f"expected sha256 {expected}" in msg, msg
    assert f"found sha256 {hashlib.sha256(found_bytes).hexdigest()}" in msg, msg
    assert f"({len(found_bytes)} bytes" in msg, msg
    assert "removed" in msg


def test_corrupted_download_is_rejected_and_removed(tmp_path, server, image_data):
    bad = bytearray(image_data["zst"])
    bad[1_000_000] ^= 0xFF
    server.files[IMG_PATH] = bytes(bad)
    cache = tmp_path / "c"
    d = entry_dir(cache, image_data["sha"])
    with pytest.raises(FetchError) as ei:
        fetch_image(write_manifest(tmp_path, server), cache_dir=cache)
    _assert_rejected(ei, image_data["sha"], bytes(bad), d / "test-cloudimage.img.zst.part")
    assert list(d.iterdir()) == []                     # nothing kept, nothing unpacked
    assert cached_image(load_image_manifest(write_manifest(tmp_path, server)), cache_dir=cache) is None
    # once the server is right again the next run succeeds from scratch
    server.files[IMG_PATH] = image_data["zst"]
    img = fetch_image(write_manifest(tmp_path, server), cache_dir=cache)
    assert img.path.read_bytes() == image_data["raw"]
    assert server.requests_for(IMG_PATH)[-1][1] is None      # not resumed from the bad bytes


def test_truncated_download_is_rejected_and_removed(tmp_path, server, image_data):
    short = image_data["zst"][:-5000]
    server.files[IMG_PATH] = short                     # consistent Content-Length, just shorter
    cache = tmp_path / "c"
    with pytest.raises(FetchError) as ei:
        fetch_image(write_manifest(tmp_path, server), cache_dir=cache)
    d = entry_dir(cache, image_data["sha"])
    _assert_rejected(ei, image_data["sha"], short, d / "test-cloudimage.img.zst.part")
    assert list(d.iterdir()) == []


def test_wrong_pinned_checksum_is_rejected(tmp_path, server, image_data):
    pin = "0123456789abcdef" * 4
    mf = write_manifest(tmp_path, server, extra=f'sha256: "sha256:{pin}"\n')
    cache = tmp_path / "c"
    with pytest.raises(FetchError) as ei:
        fetch_image(mf, cache_dir=cache)
    _assert_rejected(ei, pin, image_data["zst"], entry_dir(cache, pin) / "test-cloudimage.img.zst.part")
    assert "pinned in" in str(ei.value)
    assert server.requests_for(SUM_PATH) == []         # a pin needs no checksum file
    assert not (entry_dir(cache, pin) / "disk.raw").exists()


def test_a_pin_is_not_satisfied_by_another_cached_version(tmp_path, server, image_data):
    cache = tmp_path / "c"
    fetch_image(write_manifest(tmp_path, server), cache_dir=cache)
    pin = "f" * 64
    with pytest.raises(FetchError, match=f"expected sha256 {pin}"):
        fetch_image(write_manifest(tmp_path, server, extra=f"sha256: {pin}\n"), cache_dir=cache)
    assert cached_image(load_image_manifest(write_manifest(tmp_path, server, extra=f"sha256: {pin}\n")),
                        cache_dir=cache) is None


def test_right_pinned_checksum_needs_no_checksum_file(tmp_path, server, image_data):
    del server.files[SUM_PATH]
    mf = write_manifest(tmp_path, server, extra=f"sha256: {image_data['sha'].upper()}\n")
    img = fetch_image(mf, cache_dir=tmp_path / "c")
    assert img.path.read_bytes() == image_data["raw"]


def test_checksum_file_formats():
    h = "ab" * 32
    assert fetch.parse_checksum(f"{h}  OI-hipster-cloudimage.img.zst\n", "x") == h
    assert fetch.parse_checksum(f"{h.upper()}\n", "x") == h                    # OmniOS: bare digest
    assert fetch.parse_checksum(f"SHA256 (a.img) = {h}\n", "a.img") == h       # BSD style
    other = "cd" * 32
    two = f"{other}  b.iso\n{h} *a.img\n"
    assert fetch.parse_checksum(two, "a.img") == h
    with pytest.raises(ValueError):
        fetch.parse_checksum(two, "c.img")
    with pytest.raises(ValueError):
        fetch.parse_checksum("<html>not found</html>", "a.img")


def test_unusable_checksum_file_is_reported(tmp_path, server):
    server.files[SUM_PATH] = b"<html>moved</html>"
    with pytest.raises(FetchError, match=r"checksum file .*\.sha256sum is not usable.*pin"):
        fetch_image(write_manifest(tmp_path, server), cache_dir=tmp_path / "c")
    assert server.requests_for(IMG_PATH) == []


# --------------------------------------------------------------------------
# mirrors and network errors


def test_mirror_is_used_when_the_first_url_is_gone(tmp_path, server, image_data):
    moved = "/mirror" + IMG_PATH
    server.files[moved] = server.files.pop(IMG_PATH)
    server.files[moved + ".sha256sum"] = server.files.pop(SUM_PATH)
    mf = write_manifest(tmp_path, server, mirrors=[server.base + moved])
    img = fetch_image(mf, cache_dir=tmp_path / "c")
    assert img.path.read_bytes() == image_data["raw"]
    assert img.url == server.base + moved
    # cached under the manifest's URL set: no network next time
    n = len(server.log)
    assert fetch_image(mf, cache_dir=tmp_path / "c").path == img.path and len(server.log) == n


def test_image_missing_everywhere_is_reported(tmp_path, server):
    del server.files[IMG_PATH]
    with pytest.raises(FetchError) as ei:
        fetch_image(write_manifest(tmp_path, server), cache_dir=tmp_path / "c")
    assert server.base + IMG_PATH in str(ei.value) and "404" in str(ei.value)


def test_unreachable_server_is_reported_with_url_and_advice(tmp_path, server):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                          # nothing listens there now
    url = f"http://127.0.0.1:{port}/x/test.img.zst"
    mf = tmp_path / "dead.yaml"
    mf.write_text(f"name: dead\nimage: {{url: '{url}'}}\n")
    with pytest.raises(FetchError) as ei:
        fetch_image(mf, cache_dir=tmp_path / "c")
    msg = str(ei.value)
    assert url + ".sha256sum" in msg and "attempts" in msg and "network" in msg
    assert ei.value.__cause__ is None and ei.value.__suppress_context__   # no chained traceback


def test_download_that_keeps_failing_gives_up_and_keeps_the_part(tmp_path, server, image_data):
    server.fail_status = [503] * 10
    cache = tmp_path / "c"
    d = entry_dir(cache, image_data["sha"])
    d.mkdir(parents=True)
    (d / "test-cloudimage.img.zst.part").write_bytes(image_data["zst"][:1000])
    with pytest.raises(FetchError, match=r"could not download .*HTTP 503.*4 attempts.*resumes"):
        fetch_image(write_manifest(tmp_path, server), cache_dir=cache)
    assert (d / "test-cloudimage.img.zst.part").stat().st_size == 1000


# --------------------------------------------------------------------------
# sharing the cache


def test_two_concurrent_fetches_in_threads_download_once(tmp_path, server, image_data):
    server.delay = 0.02                                # ~0.6 s download: the runs overlap
    mf = write_manifest(tmp_path, server)
    cache = tmp_path / "c"
    results: list = [None, None]
    stages: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fetch_image(mf, cache_dir=cache, progress=lambda s, d, t: stages[i].append(s))
        except Exception as e:  # noqa: BLE001
            results[i] = e

    ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert all(isinstance(r, fetch.FetchedImage) for r in results), results
    assert results[0].path == results[1].path
    assert results[0].path.read_bytes() == image_data["raw"]
    assert len(server.requests_for(IMG_PATH)) == 1
    assert len(server.requests_for(SUM_PATH)) == 1
    assert sum("wait" in s for s in stages) == 1       # exactly one of them waited for the other


def test_two_concurrent_fetches_in_processes_download_once(tmp_path, server, image_data):
    server.delay = 0.02
    mf = write_manifest(tmp_path, server)
    cache = tmp_path / "c"
    code = ("import sys; from harness.fetch import fetch_image; "
            "print(fetch_image(sys.argv[1], cache_dir=sys.argv[2]).path)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(mf), str(cache)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1
    assert Path(paths.pop()).read_bytes() == image_data["raw"]
    assert len(server.requests_for(IMG_PATH)) == 1


# --------------------------------------------------------------------------
# a full disk


ENOSPC_MSG = re.compile(r"^no space left on (?P<dir>\S+) while writing (?P<file>\S+): free -?\d+ MB, "
                        r"need about \d+ MB; free space or set XDG_CACHE_HOME")


def test_enospc_while_downloading_is_a_clear_error(tmp_path, server, image_data, monkeypatch):
    def full(f, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fetch, "_write", full)
    cache = tmp_path / "c"
    with pytest.raises(FetchError) as ei:
        fetch_image(write_manifest(tmp_path, server), cache_dir=cache)
    m = ENOSPC_MSG.match(str(ei.value))
    assert m, str(ei.value)
    d = entry_dir(cache, image_data["sha"])
    assert m["dir"] == str(d) and m["file"] == str(d / "test-cloudimage.img.zst.part")
    assert ei.value.__cause__ is None and ei.value.__suppress_context__
    assert len(server.requests_for(IMG_PATH)) == 1     # not retried as if it were the network


def test_enospc_while_decompressing_is_a_clear_error(tmp_path, server, image_data, monkeypatch):
    real = fetch._write

    def full_for_disk(f, data):
        if ".tmp-" in getattr(f, "name", ""):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, data)
    monkeypatch.setattr(fetch, "_write", full_for_disk)
    cache = tmp_path / "c"
    with pytest.raises(FetchError) as ei:
        fetch_image(write_manifest(tmp_path, server), cache_dir=cache)
    m = ENOSPC_MSG.match(str(ei.value))
    d = entry_dir(cache, image_data["sha"])
    assert m and m["file"] == str(d / "disk.raw"), str(ei.value)
    # the verified download is kept (no second download), no half disk is left behind
    assert sorted(p.name for p in d.iterdir()) == ["test-cloudimage.img.zst"]
    monkeypatch.setattr(fetch, "_write", real)
    img = fetch_image(write_manifest(tmp_path, server), cache_dir=cache)
    assert img.path.read_bytes() == image_data["raw"]
    assert len(server.requests_for(IMG_PATH)) == 1


# --------------------------------------------------------------------------
# cache inspection, other formats


def test_cached_image_verifies_without_network(tmp_path, server, image_data):
    mf = write_manifest(tmp_path, server)
    cache = tmp_path / "c"
    assert cached_image(load_image_manifest(mf), cache_dir=cache) is None
    img = fetch_image(mf, cache_dir=cache)
    n = len(server.log)
    hit = cached_image(load_image_manifest(mf), cache_dir=cache)
    assert hit is not None and hit.path == img.path and hit.sha256 == image_data["sha"]
    assert len(server.log) == n
    # damage the disk in place (same size): the doctor sees it, the next fetch replaces it
    with open(img.path, "r+b") as f:
        f.seek(10)
        f.write(b"XX")
    problems: list[str] = []
    assert cached_image(load_image_manifest(mf), cache_dir=cache, problems=problems) is None
    assert problems and str(img.path) in problems[0]
    again = fetch_image(mf, cache_dir=cache)
    assert again.path.read_bytes() == image_data["raw"]
    assert len(server.requests_for(IMG_PATH)) == 2


def test_qcow2_passes_through(tmp_path, server):
    blob = b"QFI\xfb" + bytes(range(256)) * 4000
    server.files["/media/r151058/omnios.cloud.qcow2"] = blob
    server.files["/media/r151058/omnios.cloud.qcow2.sha256"] = hashlib.sha256(blob).hexdigest().encode() + b"\n"
    mf = tmp_path / "q.yaml"
    mf.write_text(f"name: q\nimage:\n  url: {server.base}/media/r151058/omnios.cloud.qcow2\n"
                  "  checksum_url: '{url}.sha256'\n  format: qcow2\n")
    img = fetch_image(mf, cache_dir=tmp_path / "c")
    assert img.format == "qcow2" and img.path.name == "omnios.cloud.qcow2"
    assert img.path.read_bytes() == blob and img.sha256 == hashlib.sha256(blob).hexdigest()


def test_gzip_naming_of_older_snapshots(tmp_path, server, image_data):
    import gzip
    gz = gzip.compress(image_data["raw"][:300_000])
    server.files["/20230421/OI-hipster-cloudimage.img.gz"] = gz
    server.files["/20230421/OI-hipster-cloudimage.img.gz.sha256sum"] = (
        f"{hashlib.sha256(gz).hexdigest()}  OI-hipster-cloudimage.img.gz\n".encode())
    mf = tmp_path / "old.yaml"
    mf.write_text(f"name: old\nimage: {{url: '{server.base}/20230421/OI-hipster-cloudimage.img.gz'}}\n")
    assert load_image_manifest(mf).compression == "gzip"
    img = fetch_image(mf, cache_dir=tmp_path / "c")
    assert img.path.read_bytes() == image_data["raw"][:300_000]


def test_manifest_errors_name_file_and_key(tmp_path):
    mf = tmp_path / "bad.yaml"
    mf.write_text("name: bad\nimage: {url: 'https://x/y.img.zst', sha256: 'sha256:1234'}\n")
    with pytest.raises(FetchError, match=r"bad\.yaml: key 'image\.sha256'"):
        load_image_manifest(mf)
    mf.write_text("name: bad\nimage: {url: 'https://x/y.img', format: vmdk}\n")
    with pytest.raises(FetchError, match=r"key 'image\.format'"):
        load_image_manifest(mf)
    with pytest.raises(FetchError, match="no image manifest"):
        load_image_manifest("no-such-image")


def test_shipped_manifests_follow_the_spec():
    oi = load_image_manifest("openindiana")
    assert oi.url == "https://dlc.openindiana.org/isos/hipster/20251026/OI-hipster-cloudimage.img.zst"
    assert oi.checksum_url_for(oi.url) == oi.url + ".sha256sum"
    assert (oi.compression, oi.format) == ("zstd", "raw")
    assert 800 << 20 < oi.download_size < 900 << 20
    assert oi.guest["console"] == "ttya" and oi.guest["cpus"] == 2
    assert oi.provision["recipe"] == "openindiana-v1"
    om = load_image_manifest("omnios")
    assert om.url == "https://downloads.omnios.org/media/stable/omnios-r151058.cloud.qcow2"
    assert all(u.endswith("/omnios-r151058.cloud.qcow2") for u in om.urls)
    assert om.checksum_url_for(om.url) == om.url + ".sha256"
    assert (om.compression, om.format) == ("none", "qcow2")
    assert om.seed["type"] == "nocloud" and om.seed["label"] == "cidata"


# --------------------------------------------------------------------------
# NoCloud seed


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx0ddihTestKeyOnlyForUnitTests0123456789ab ddih@test"


def _iso_files(data: bytes, joliet: bool) -> dict[str, bytes]:
    """Read the root directory of the primary (or Joliet) tree of an ISO image."""
    sector = 2048
    vd = data[(17 if joliet else 16) * sector:][:sector]
    assert vd[1:6] == b"CD001" and vd[0] == (2 if joliet else 1)
    root = vd[156:190]
    loc, size = struct.unpack("<I", root[2:6])[0], struct.unpack("<I", root[10:14])[0]
    d = data[loc * sector:loc * sector + size]
    out, off = {}, 0
    while off < len(d) and d[off]:
        n = d[off]
        rec = d[off:off + n]
        ident = rec[33:33 + rec[32]]
        if ident not in (b"\x00", b"\x01"):
            name = ident.decode("utf-16-be") if joliet else ident.decode("ascii")
            floc, fsize = struct.unpack("<I", rec[2:6])[0], struct.unpack("<I", rec[10:14])[0]
            out[name] = data[floc * sector:floc * sector + fsize]
        off += n
    return out


def test_nocloud_seed_has_cidata_label_and_the_key(tmp_path):
    import yaml
    seed = fetch.make_nocloud_seed(tmp_path / "seed" / "seed.iso", KEY + "\n", "ddih-omnios")
    data = seed.read_bytes()
    assert len(data) % 2048 == 0
    assert data[16 * 2048 + 40:16 * 2048 + 72] == b"cidata".ljust(32)          # PVD volume id
    assert data[17 * 2048 + 40:17 * 2048 + 52] == "cidata".encode("utf-16-be")  # Joliet volume id
    assert data[17 * 2048 + 88:17 * 2048 + 91] == b"%/E"
    assert data[18 * 2048] == 255                                                # terminator
    files = _iso_files(data, joliet=True)
    assert sorted(files) == ["meta-data", "user-data"]
    assert sorted(_iso_files(data, joliet=False)) == ["META-DATA.;1", "USER-DATA.;1"]
    ud = files["user-data"].decode()
    assert ud.startswith("#cloud-config\n")
    cfg = yaml.safe_load(ud)
    assert cfg["disable_root"] is False and cfg["ssh_pwauth"] is False
    assert cfg["users"] == [{"name": "root", "ssh_authorized_keys": [KEY]}]
    md = yaml.safe_load(files["meta-data"].decode())
    assert md["local-hostname"] == "ddih-omnios" and md["public-keys"] == [KEY]
    assert md["instance-id"].startswith("ddih-")
    # stable instance id: the same seed twice is byte-identical apart from timestamps
    again = fetch.nocloud_files(KEY, "ddih-omnios")
    assert again["meta-data"] == files["meta-data"]


@pytest.mark.skipif(shutil.which("blkid") is None, reason="blkid (util-linux) not installed")
def test_nocloud_seed_is_recognised_by_blkid(tmp_path):
    seed = fetch.make_nocloud_seed(tmp_path / "seed.iso", KEY, "h")
    out = subprocess.run(["blkid", "-p", "-o", "export", str(seed)], capture_output=True, text=True).stdout
    assert "TYPE=iso9660" in out and "LABEL=cidata" in out, out


def test_nocloud_seed_rejects_bad_input(tmp_path):
    with pytest.raises(FetchError, match="public key"):
        fetch.make_nocloud_seed(tmp_path / "s.iso", "ssh-ed25519 AAAA\nruncmd: [reboot]", "h")
    with pytest.raises(FetchError, match="hostname"):
        fetch.make_nocloud_seed(tmp_path / "s.iso", KEY, "bad_host!")
    assert not (tmp_path / "s.iso").exists()


# --------------------------------------------------------------------------
# offline: a name that does not resolve fails at once; reachability probe


@pytest.fixture
def unresolvable(monkeypatch):
    """getaddrinfo fails for *.invalid (as it does offline); counts the attempts."""
    real = socket.getaddrinfo
    calls: list[str] = []

    def fake(host, *a, **kw):
        if str(host).endswith(".invalid"):
            calls.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *a, **kw)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    return calls


def test_unresolvable_host_fails_at_once_naming_the_host_and_the_fix(tmp_path, unresolvable, monkeypatch):
    import time as _time
    monkeypatch.setattr(fetch, "RETRY_DELAYS", (30.0, 30.0))          # a retry would take a minute
    mf = tmp_path / "off.yaml"
    mf.write_text("name: off\nimage: {url: 'https://dl.example.invalid/x/test.img.zst'}\n")
    t0 = _time.monotonic()
    with pytest.raises(FetchError) as ei:
        fetch_image(mf, cache_dir=tmp_path / "c")
    assert _time.monotonic() - t0 < 5
    msg = str(ei.value)
    assert "cannot resolve dl.example.invalid" in msg and "nothing was retried" in msg
    assert "resolv.conf" in msg and "https_proxy" in msg
    assert unresolvable == ["dl.example.invalid"]                      # one attempt, no retries


def test_unresolvable_mirrors_are_all_named(tmp_path, unresolvable):
    mf = tmp_path / "off.yaml"
    mf.write_text("name: off\nimage:\n  url: 'https://a.example.invalid/t.img.zst'\n"
                  "  mirrors: ['https://b.example.invalid/t.img.zst']\n")
    with pytest.raises(FetchError) as ei:
        fetch_image(mf, cache_dir=tmp_path / "c")
    assert "cannot resolve a.example.invalid, b.example.invalid" in str(ei.value)


def test_an_unresolvable_first_url_falls_over_to_a_mirror_that_answers(tmp_path, server, image_data,
                                                                      unresolvable):
    mf = write_manifest(tmp_path, server, path="/gone/test-cloudimage.img.zst",
                        mirrors=[server.base + IMG_PATH])
    text = mf.read_text().replace(server.base + "/gone/", "https://dl.example.invalid/gone/")
    mf.write_text(text)
    img = fetch_image(mf, cache_dir=tmp_path / "c")
    assert img.sha256 == image_data["sha"]
    assert unresolvable == ["dl.example.invalid"]


def test_probe_url_against_a_local_server(server):
    ok, detail = fetch.probe_url(server.base + IMG_PATH, timeout=2)
    assert ok and "127.0.0.1 reachable (HTTP" in detail


def test_probe_url_says_when_the_file_is_gone(server):
    ok, detail = fetch.probe_url(server.base + "/nothing/here.img.zst", timeout=2)
    assert not ok and "HTTP 404" in detail and "not there" in detail


def test_probe_url_on_a_closed_port_fails_quickly():
    import time as _time
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = _time.monotonic()
    ok, detail = fetch.probe_url(f"http://127.0.0.1:{port}/x.img", timeout=2)
    assert not ok and f"127.0.0.1:{port} not reachable" in detail and "refused" in detail.lower()
    assert _time.monotonic() - t0 < 3


def test_probe_url_on_a_host_that_does_not_resolve(unresolvable):
    ok, detail = fetch.probe_url("https://dl.example.invalid/x.img", timeout=2)
    assert not ok and "cannot resolve dl.example.invalid" in detail


def test_probe_url_is_bounded_when_the_server_never_answers():
    import time as _time
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)                                   # accepts the connection, never answers
    try:
        t0 = _time.monotonic()
        ok, detail = fetch.probe_url(f"http://127.0.0.1:{srv.getsockname()[1]}/x.img", timeout=1)
        assert not ok and "not reachable" in detail
        assert _time.monotonic() - t0 < 3
    finally:
        srv.close()
