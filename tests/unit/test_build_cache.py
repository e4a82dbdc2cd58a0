"""Cached builds: the driver and ddictl are built once per (sources, image headers, compiler,
flags); any change to one of those is a new key, so a new build."""

from __future__ import annotations

from harness.targets.linux import BUILD_INPUTS, DDICTL_FLAGS, build_key


def test_the_key_covers_every_input(tmp_path, monkeypatch):
    files = []
    for i, p in enumerate(BUILD_INPUTS):
        f = tmp_path / f"{i}-{p.name}"
        f.write_bytes(p.read_bytes())
        files.append(f)
    files = tuple(files)
    base = build_key("img1", files, compiler="gcc 12.2")
    assert base == build_key("img1", files, compiler="gcc 12.2")  # stable
    assert build_key("img2", files, compiler="gcc 12.2") != base    # other kernel headers
    assert build_key("img1", files, compiler="gcc 13.1") != base    # another compiler
    for f in files:  # any source
        old = f.read_bytes()
        f.write_bytes(old + b"\n")
        assert build_key("img1", files, compiler="gcc 12.2") != base, f.name
        f.write_bytes(old)
    monkeypatch.setattr("harness.targets.linux.DDICTL_FLAGS", DDICTL_FLAGS + ("-O3",))
    assert build_key("img1", files, compiler="gcc 12.2") != base    # other flags
    assert {p.name for p in BUILD_INPUTS} >= {"ddih.c", "Makefile", "ddih_ioctl.h", "ddictl.c", "lineproto.h"}
