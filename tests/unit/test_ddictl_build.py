"""guest/ddictl.c builds as a static binary, warning-free, against kmod/ddih_ioctl.h."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUEST = ROOT / "guest"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


def _gcc(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = ["gcc", "-O2", "-static", "-Wall", "-Werror", *extra, f"-I{ROOT / 'kmod'}",
           f"-I{GUEST / 'libddih'}", "-o", str(out), str(GUEST / "ddictl.c"),
           str(GUEST / "libddih" / "ddih.c"), "-lpthread"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_ddictl_builds_static_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "ddictl"
    proc = _gcc(out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
    assert out.stat().st_size > 0
    # static: no program interpreter
    assert b"ld-linux" not in out.read_bytes()[:4096]


def test_ddictl_builds_with_wextra(tmp_path: Path) -> None:
    proc = _gcc(tmp_path / "ddictl", "-Wextra")
    assert proc.returncode == 0, proc.stderr


def test_header_compiles_standalone(tmp_path: Path) -> None:
    """The ABI header is self-contained in user space, and its layout is fixed."""
    src = tmp_path / "h.c"
    src.write_text('#include "ddih_ioctl.h"\n#include <stddef.h>\n'
                   "_Static_assert(sizeof(struct ddih_req) == 192, \"size\");\n"
                   "_Static_assert(offsetof(struct ddih_req, arg) == 24, \"arg\");\n"
                   "_Static_assert(offsetof(struct ddih_req, status) == 64, \"status\");\n"
                   "int main(void) { return DDIH_ABI_VERSION == 2 ? 0 : 1; }\n")
    proc = subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
                           f"-I{ROOT / 'kmod'}", "-o", str(tmp_path / "h"), str(src)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_ddictl_rejects_bad_lines_without_device(tmp_path: Path) -> None:
    """Without the device ddictl exits 2 with a message (it never guesses)."""
    out = tmp_path / "ddictl"
    assert _gcc(out).returncode == 0
    proc = subprocess.run([str(out), str(tmp_path / "no-such-device")], input="rmalloc map=m size=1\n",
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "no-such-device" in proc.stderr


def test_makefile_builds(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    work = tmp_path / "tree"
    (work / "guest").mkdir(parents=True)
    (work / "kmod").mkdir()
    shutil.copy(GUEST / "ddictl.c", work / "guest")
    shutil.copy(GUEST / "lineproto.h", work / "guest")
    shutil.copy(GUEST / "Makefile", work / "guest")
    shutil.copytree(GUEST / "libddih", work / "guest" / "libddih")
    shutil.copy(ROOT / "kmod" / "ddih_ioctl.h", work / "kmod")
    proc = subprocess.run(["make", "-C", str(work / "guest")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (work / "guest" / "ddictl").exists()
