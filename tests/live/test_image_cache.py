"""The Linux image cache is checked and relocatable.

A copy of the cache (another XDG_CACHE_HOME, a CI cache restored under another home) is used
as it is, driver build included; a truncated vmlinux or initramfs is caught before it is booted,
with the command that fixes it.
"""

from __future__ import annotations

import json
import shutil

import pytest

from harness.images import LinuxImage, _load, build_linux_image, cache_root, image_problems
from harness.targets import TargetError
from harness.targets.linux import LinuxTarget, build_module

pytestmark = [pytest.mark.live,
              pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs Debian's dpkg-deb")]


@pytest.fixture(scope="module")
def copied(tmp_path_factory):
    """The cached image, built if needed, then copied to a cache of its own somewhere else."""
    img = build_linux_image()
    root = tmp_path_factory.mktemp("elsewhere")
    dst = root / "ddi-harness" / "linux"
    dst.mkdir(parents=True)
    shutil.copytree(img.cache_dir, dst / img.cache_dir.name, symlinks=True)
    shutil.copytree(cache_root() / "linux" / "resolved", dst / "resolved")
    return img, root


def test_a_copied_cache_is_used_where_it_is(copied, tmp_path):
    img, root = copied
    moved = build_linux_image(cache_dir=root / "ddi-harness")  # no apt: the resolution is cached too
    assert moved.key == img.key and moved.cache_dir == root / "ddi-harness" / "linux" / img.key
    for p in (moved.vmlinux, moved.initramfs, moved.headers_dir, moved.client_key):
        assert root in p.parents, p  # nothing points back at the original cache
    assert "/" not in (moved.headers_dir / "Makefile").read_text().split("include ", 1)[1].split("\n")[0][:1]
    ko = build_module(moved, tmp_path)  # kbuild through the copied headers
    assert ko.stat().st_size > 10000


def test_a_truncated_kernel_is_caught_before_a_boot_and_names_the_fix(copied, tmp_path):
    img, root = copied
    entry = root / "ddi-harness" / "linux" / img.key
    vmlinux = entry / "vmlinux"
    data = vmlinux.read_bytes()
    vmlinux.write_bytes(data[: len(data) // 2])
    try:
        problems: list[str] = []
        assert _load(entry, problems) is None and any("truncated" in p for p in problems)
        # a target holding that image refuses to boot it, and says how to fix it
        damaged = LinuxImage.from_json(json.loads((entry / "image.json").read_text()), entry)
        assert image_problems(damaged, digests=False)
        t = LinuxTarget(tmp_path)
        t.image, t.ko, t.ddictl = damaged, tmp_path / "ko", tmp_path / "ddictl"
        with pytest.raises(TargetError, match=r"image build linux --rebuild"):
            t.boot()
    finally:
        vmlinux.write_bytes(data)
    assert _load(entry) is not None  # restored: sound again


def test_doctor_reports_a_damaged_image_and_the_fix(copied, monkeypatch):
    from harness import doctor

    img, root = copied
    monkeypatch.setenv("XDG_CACHE_HOME", str(root))
    initramfs = root / "ddi-harness" / "linux" / img.key / "initramfs.cpio.gz"
    data = initramfs.read_bytes()
    initramfs.write_bytes(data[:-100])
    try:
        ok, detail = doctor._linux_image_cached()
        assert not ok and "truncated" in detail and "image build linux --rebuild" in detail
    finally:
        initramfs.write_bytes(data)
    ok, detail = doctor._linux_image_cached()
    assert ok and "as built" in detail


def test_a_second_prepare_takes_the_driver_from_the_build_cache(tmp_path):
    first = LinuxTarget(tmp_path / "a")
    first.prepare()
    second = LinuxTarget(tmp_path / "b")
    second.prepare()
    assert second.facts.build_cached and second.facts.phases["build"] < 0.5
    assert second.ko.read_bytes() == first.ko.read_bytes() and second.ddictl.read_bytes() == first.ddictl.read_bytes()
