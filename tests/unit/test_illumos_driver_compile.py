"""Compile check of the illumos port (kmod/illumos/ddih.c) on the host.

No illumos kernel or header set is available here, so the driver is checked
against tests/compat/illumos, a DDI prototype header written from the manual
pages (a compile check, not the real headers): every routine's argument
count and types, flag and constant names, and the members the driver reads
(ddi_umem_cookie, vmem_t's vm_kstat).  The negative tests prove the check
has teeth.  On the guest the driver is built against the real headers with
kmod/illumos/Makefile.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "kmod" / "illumos" / "ddih.c"
COMPAT = ROOT / "tests" / "compat" / "illumos"
GCC = shutil.which("gcc")

pytestmark = pytest.mark.skipif(GCC is None, reason="gcc is not installed")


def compile_driver(source: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [GCC, "-fsyntax-only", "-Wall", "-Werror", "-D_KERNEL", "-m64",
           "-I", str(COMPAT), "-I", str(ROOT / "kmod"), *extra, str(source)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def mutated_copy(tmp_path: Path, pattern: str, repl: str) -> Path:
    """A copy of the driver (beside a copy of ../ddih_ioctl.h) with one edit."""
    text = DRIVER.read_text()
    new, n = re.subn(pattern, repl, text, count=1)
    assert n == 1, f"pattern {pattern!r} not found in ddih.c"
    (tmp_path / "illumos").mkdir()
    (tmp_path / "ddih_ioctl.h").write_text((ROOT / "kmod" / "ddih_ioctl.h").read_text())
    out = tmp_path / "illumos" / "ddih.c"
    out.write_text(new)
    return out


def test_driver_compiles_against_the_ddi_prototypes():
    r = compile_driver(DRIVER)
    assert r.returncode == 0, r.stderr


def test_driver_calls_every_routine_under_test():
    text = DRIVER.read_text()
    for fn in ("rmallocmap", "rmallocmap_wait", "rmalloc", "rmalloc_wait", "rmfree",
               "rmfreemap", "ddi_umem_alloc", "ddi_umem_free", "devmap_umem_setup",
               "kmem_alloc", "kmem_zalloc", "kmem_free", "ddi_copyin", "ddi_copyout",
               "ddi_model_convert_from", "ddi_prop_get_int", "ddi_create_minor_node"):
        assert re.search(rf"\b{fn}\(", text), fn
    assert "D_NEW | D_MP | D_DEVMAP" in text


@pytest.mark.parametrize("pattern,repl", [
    # rmfree with 2 arguments instead of 3
    (r"rmfree\(m->dm_map, \(size_t\)size, \(ulong_t\)index\)", "rmfree(m->dm_map, (size_t)size)"),
    # kmem_free without its size
    (r"kmem_free\(o->do_u\.do_kmem\.dk_buf, \(size_t\)size\)", "kmem_free(o->do_u.do_kmem.dk_buf)"),
    # devmap_umem_setup with one argument missing (no accattrp)
    (r"e->de_maxprot, e->de_flags, NULL\) != DDI_SUCCESS\) \{\n\t\terr = EINVAL;\n\t\tgoto fail;",
     "e->de_maxprot, e->de_flags) != DDI_SUCCESS) {\n\t\terr = EINVAL;\n\t\tgoto fail;"),
    # a misspelt vmem kstat member
    (r"vk->vk_contains\.value\.ui64", "vk->vk_contain.value.ui64"),
    # ddi_umem_alloc given the cookie instead of its address
    (r"ddi_umem_alloc\(\(size_t\)r->arg\[0\], flag, &cookie\)", "ddi_umem_alloc((size_t)r->arg[0], flag, cookie, 0)"),
])
def test_the_check_has_teeth(tmp_path, pattern, repl):
    bad = mutated_copy(tmp_path, pattern, repl)
    r = compile_driver(bad)
    assert r.returncode != 0, f"gcc accepted a broken driver ({repl})"


def test_unchanged_copy_compiles(tmp_path):
    """The negative tests fail because of the edit, not because of the copy."""
    ok = mutated_copy(tmp_path, r"Big Theory Statement", "Big Theory Statement")
    r = compile_driver(ok)
    assert r.returncode == 0, r.stderr


def test_compat_headers_say_they_are_a_compile_check():
    headers = [COMPAT / "ddi_proto.h", *sorted((COMPAT / "sys").glob("*.h"))]
    assert len(headers) > 10
    for h in headers:
        head = h.read_text()[:600].lower()
        assert "compile" in head and "not the real" in head, h


FIELDS = ("version", "size", "op", "flags", "handle", "xflags", "arg", "soff", "status", "kind",
          "valid", "ohandle", "value", "offset", "cookie_size", "avail", "total", "ctr", "type",
          "zeroed", "coherent", "pad")


def _layout_check(tmp_path: Path, bits: str, expect: dict[str, int]) -> subprocess.CompletedProcess:
    """Compile-time asserts of struct ddih_req's offsets for -m32 / -m64.

    Freestanding, with a stub <sys/ioctl.h>, so no C library for the target
    ABI is needed: only gcc's own <stdint.h> and <stddef.h>.
    """
    stub = tmp_path / f"stub{bits}" / "sys"
    stub.mkdir(parents=True)
    (stub / "ioctl.h").write_text("#define _IOWR(x, y, t) ((int)sizeof (t))\n")
    lines = ['#include <stddef.h>', '#include "ddih_ioctl.h"']
    for f, off in expect.items():
        lines.append(f"_Static_assert(offsetof(struct ddih_req, {f}) == {off}, \"{f}\");")
    lines.append("_Static_assert(sizeof (struct ddih_req) == 192, \"size\");")
    lines.append("_Static_assert(_Alignof (uint64_t) == (%s), \"abi\");" % ("4" if bits == "32" else "8"))
    src = tmp_path / f"layout{bits}.c"
    src.write_text("\n".join(lines) + "\n")
    return subprocess.run([GCC, f"-m{bits}", "-ffreestanding", "-fsyntax-only", "-Wall", "-Werror",
                           "-I", str(stub.parent), "-I", str(ROOT / "kmod"), str(src)],
                          capture_output=True, text=True, timeout=120)


# The LP64 offsets of struct ddih_req (ABI version 2); ILP32 must match.
LP64_OFFSETS = {"version": 0, "size": 4, "op": 8, "flags": 12, "handle": 16, "xflags": 20,
                "arg": 24, "soff": 56, "status": 64, "kind": 68, "valid": 72, "ohandle": 76,
                "value": 80, "offset": 88, "cookie_size": 96, "avail": 104, "total": 112,
                "ctr": 120, "type": 176, "zeroed": 180, "coherent": 184, "pad": 188}


@pytest.mark.parametrize("bits", ["64", "32"])
def test_abi_layout_is_the_same_for_ilp32_and_lp64(tmp_path, bits):
    assert set(LP64_OFFSETS) == set(FIELDS)
    r = _layout_check(tmp_path, bits, LP64_OFFSETS)
    if bits == "32" and r.returncode != 0 and "unrecognized" in r.stderr:
        pytest.skip("gcc cannot target -m32 here")
    assert r.returncode == 0, r.stderr


def test_layout_check_has_teeth(tmp_path):
    wrong = dict(LP64_OFFSETS, ctr=128)
    assert _layout_check(tmp_path, "64", wrong).returncode != 0
