"""The pinned illumos-gate sources: fetched over HTTP(S) into the cache, every file sha256-checked,
and found in the documented order (--gate DIR, the cached pinned commit, $DDIH_ILLUMOS_GATE, a fetch)."""

from __future__ import annotations

import hashlib
import shutil
import socket
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness import fetch
from harness.targets import TargetError
from harness.targets.gate import SOURCES, find_gate

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Quiet(SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args):  # noqa: D401 - quiet
        pass

    def do_GET(self):  # noqa: N802
        Quiet.requests.append(self.path)
        super().do_GET()


def tree(root: Path) -> dict[str, str]:
    """A small stand-in gate tree (our own bytes): the two sources and a header."""
    files = {SOURCES[0]: b"/* vmem */\n", SOURCES[1]: b"/* rmap */\n", "usr/src/uts/common/sys/x.h": b"#define X 1\n"}
    for p, data in files.items():
        (root / COMMIT / p).parent.mkdir(parents=True, exist_ok=True)
        (root / COMMIT / p).write_bytes(data)
    return {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "www"
    shas = tree(root)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Quiet.requests = []
    m = fetch.GateManifest(COMMIT, f"http://127.0.0.1:{srv.server_address[1]}/{{commit}}/{{path}}", shas)
    yield root, m
    srv.shutdown()


def test_fetch_verifies_every_file_and_is_reused(served, tmp_path):
    _, m = served
    d = fetch.fetch_gate(m, tmp_path / "cache")
    assert d == tmp_path / "cache" / "illumos-gate" / COMMIT and (d / "COMPLETE").exists()
    assert (d / SOURCES[0]).read_bytes() == b"/* vmem */\n"
    assert fetch.cached_gate(m, tmp_path / "cache") == d
    n = len(Quiet.requests)
    fetch.fetch_gate(m, tmp_path / "cache")
    assert len(Quiet.requests) == n == 3  # nothing fetched twice


def test_a_file_that_does_not_match_its_pin_is_refused_and_not_kept(served, tmp_path):
    root, m = served
    (root / COMMIT / SOURCES[1]).write_bytes(b"/* tampered */\n")
    with pytest.raises(fetch.FetchError, match=r"rmap\.c .* has sha256 .* pins"):
        fetch.fetch_gate(m, tmp_path / "cache")
    d = fetch.gate_cache_dir(m, tmp_path / "cache")
    assert not (d / SOURCES[1]).exists() and not (d / "COMPLETE").exists()
    assert fetch.cached_gate(m, tmp_path / "cache") is None


def test_a_cached_file_changed_later_is_not_trusted(served, tmp_path):
    _, m = served
    d = fetch.fetch_gate(m, tmp_path / "cache")
    (d / SOURCES[0]).write_text("/* edited in the cache */\n")
    assert fetch.cached_gate(m, tmp_path / "cache") is None
    fetch.fetch_gate(m, tmp_path / "cache")  # fetches that one file again
    assert fetch.cached_gate(m, tmp_path / "cache") == d


def test_no_network_fails_fast_and_says_how_to_build_from_a_local_tree(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    m = fetch.GateManifest(COMMIT, f"http://127.0.0.1:{port}/{{commit}}/{{path}}", {SOURCES[0]: "0" * 64})
    t = time.monotonic()
    with pytest.raises(fetch.FetchError, match=r"--gate DIR .*DDIH_ILLUMOS_GATE=DIR"):
        fetch.fetch_gate(m, tmp_path / "cache")
    assert time.monotonic() - t < 10


def test_the_order_gate_dir_then_cache_then_environment_then_fetch(served, tmp_path, monkeypatch):
    root, m = served
    monkeypatch.setattr(fetch, "load_gate_manifest", lambda path=None: m)
    cache = tmp_path / "cache"
    local = root / COMMIT  # a tree of its own, as a user's checkout would be
    env_tree = tmp_path / "env"
    shutil.copytree(local, env_tree)
    monkeypatch.setenv("DDIH_ILLUMOS_GATE", str(env_tree))
    # 1. --gate wins over everything
    assert find_gate(str(local), cache_dir=cache).dir == local.resolve()
    # 2. nothing cached yet: the environment
    src = find_gate(None, cache_dir=cache)
    assert src.dir == env_tree.resolve() and src.commit is None and Quiet.requests == []
    # 3. no environment: fetched, and recorded as the pinned commit
    monkeypatch.delenv("DDIH_ILLUMOS_GATE")
    src = find_gate(None, cache_dir=cache)
    assert src.commit == COMMIT and src.how == "the pinned commit, fetched"
    # 4. cached now: used before the environment, without a request
    monkeypatch.setenv("DDIH_ILLUMOS_GATE", str(env_tree))
    n = len(Quiet.requests)
    src = find_gate(None, cache_dir=cache)
    assert src.how == "the pinned commit, cached" and len(Quiet.requests) == n


def test_the_shipped_manifest_pins_what_the_build_reads():
    m = fetch.load_gate_manifest()
    assert len(m.commit) == 40 and set(SOURCES) <= set(m.files) and len(m.files) > 50
    assert m.url_for(SOURCES[0]).startswith("https://raw.githubusercontent.com/illumos/illumos-gate/" + m.commit)


def test_a_gate_dir_without_the_sources_is_named(tmp_path):
    with pytest.raises(TargetError, match=f"--gate {tmp_path}: .* has no usr/src/uts/common/os/vmem.c"):
        find_gate(str(tmp_path))
