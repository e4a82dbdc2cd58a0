"""Compile checks of the illumos code against the real illumos headers.

The headers are illumos-gate's, laid out as an illumos /usr/include
(shared/data/illumos-gate/include beside the checkout, or
$DDIH_ILLUMOS_INCLUDE); its SOURCES.md gives the gate's own gcc command
lines, used here verbatim:

  kernel (kmod/illumos/ddih.c):
    gcc -D_KERNEL -D_SYSCALL32 -D_SYSCALL32_IMPL -D_ELF64 -D_DDI_STRICT -Dsun -D__sun -D__SVR4 \
        -D__x86 -D__amd64 -D_ASM_INLINES -U__linux__ -U__linux -Ulinux -U__gnu_linux__ \
        -m64 -fno-pic -fno-pie -mcmodel=kernel -mno-red-zone -ffreestanding -nostdinc \
        -nodefaultlibs -mno-mmx -mno-sse -std=gnu99 -isystem include -I kmod \
        -O2 -Wall -Wextra -Werror -fsyntax-only kmod/illumos/ddih.c
  user (guest/ddictl.c, guest/ddifuzz.c, guest/libddih/*.c, examples/guest/*.c):
    gcc -Dsun -D__sun -D__sun__ -D__SVR4 -D__svr4__ -D__unix -Dunix \
        -U__linux__ -U__linux -Ulinux -U__gnu_linux__ -m64 -nostdinc \
        -isystem include -isystem "$(gcc -print-file-name=include)" -I kmod -I guest/libddih \
        -O2 -Wall -Werror -fsyntax-only FILE.c
    (plus -Wextra here: zero warnings with it too)

and the commands kmod/illumos/Makefile itself runs in the guest (`make -n`,
its /usr/include pointed at the same headers).  The negative tests prove the
check has teeth: a wrong argument count of rmfree, kmem_free,
devmap_umem_setup or ddi_umem_alloc, or a misspelt vmem kstat member, must
not compile.  The earlier prototype header (tests/compat/illumos, written
from the manual pages) is gone: the real headers check everything it did.
The ABI layout checks at the end need no illumos header.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "kmod" / "illumos" / "ddih.c"
GCC = shutil.which("gcc")


def illumos_include() -> Path:
    env = os.environ.get("DDIH_ILLUMOS_INCLUDE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "illumos-gate" / "include"


INCLUDE = illumos_include()

pytestmark = pytest.mark.skipif(GCC is None, reason="gcc is not installed")
needs_headers = pytest.mark.skipif(
    not (INCLUDE / "sys" / "sunddi.h").is_file(),
    reason=f"the illumos headers are not at {INCLUDE} (shared/data/illumos-gate/include beside the "
           "checkout, or set DDIH_ILLUMOS_INCLUDE)")

# SOURCES.md's kernel command line, minus gcc, the include paths and the file
KERNEL_FLAGS = [
    "-D_KERNEL", "-D_SYSCALL32", "-D_SYSCALL32_IMPL", "-D_ELF64", "-D_DDI_STRICT", "-Dsun", "-D__sun",
    "-D__SVR4", "-D__x86", "-D__amd64", "-D_ASM_INLINES", "-U__linux__", "-U__linux", "-Ulinux",
    "-U__gnu_linux__", "-m64", "-fno-pic", "-fno-pie", "-mcmodel=kernel", "-mno-red-zone",
    "-ffreestanding", "-nostdinc", "-nodefaultlibs", "-mno-mmx", "-mno-sse", "-std=gnu99",
]
KERNEL_WARN = ["-O2", "-Wall", "-Wextra", "-Werror", "-fsyntax-only"]
# SOURCES.md's user command line (the predefines and the header set of an illumos gcc)
USER_FLAGS = ["-Dsun", "-D__sun", "-D__sun__", "-D__SVR4", "-D__svr4__", "-D__unix", "-Dunix",
              "-U__linux__", "-U__linux", "-Ulinux", "-U__gnu_linux__", "-m64", "-nostdinc"]
USER_WARN = ["-O2", "-Wall", "-Wextra", "-Werror", "-fsyntax-only"]
USER_SOURCES = sorted([ROOT / "guest" / "ddictl.c", ROOT / "guest" / "ddifuzz.c",
                       *(ROOT / "guest" / "libddih").glob("*.c"), *(ROOT / "examples" / "guest").glob("*.c")])


def _gcc_include() -> str:
    return subprocess.run([GCC, "-print-file-name=include"], capture_output=True, text=True,
                          check=True).stdout.strip()


def kernel_cmd(source: Path, kmod: Path = ROOT / "kmod") -> list[str]:
    return [GCC, *KERNEL_FLAGS, "-isystem", str(INCLUDE), "-I", str(kmod), *KERNEL_WARN, str(source)]


def user_cmd(source: Path) -> list[str]:
    return [GCC, *USER_FLAGS, "-isystem", str(INCLUDE), "-isystem", _gcc_include(),
            "-I", str(ROOT / "kmod"), "-I", str(ROOT / "guest" / "libddih"), *USER_WARN, str(source)]


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def compile_driver(source: Path) -> subprocess.CompletedProcess:
    """SOURCES.md's kernel command; the copy's ../ddih_ioctl.h is found beside its folder."""
    return _run(kernel_cmd(source, source.parent.parent))


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


def _clean(r: subprocess.CompletedProcess) -> str:
    """gcc's output: must be empty (zero warnings, not only zero errors)."""
    return (r.stdout + r.stderr).strip()


@needs_headers
def test_driver_compiles_against_the_real_headers_with_the_gate_flags():
    r = _run(kernel_cmd(DRIVER))
    assert r.returncode == 0 and _clean(r) == "", _clean(r)


@needs_headers
@pytest.mark.parametrize("source", USER_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_code_compiles_against_the_real_headers(source):
    r = _run(user_cmd(source))
    assert r.returncode == 0 and _clean(r) == "", _clean(r)


def _make_n(target: str) -> list[str]:
    """The command kmod/illumos/Makefile runs for ``target``, its /usr/include pointed at the headers."""
    make = shutil.which("gmake") or shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    r = _run([make, "-s", "-n", "-C", str(ROOT / "kmod" / "illumos"), target, f"INCDIR={INCLUDE}"])
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.strip() and not l.startswith("make")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def test_makefile_kernel_flags_are_the_gate_flags():
    argv = _make_n("ddih.o")
    # the gate's flags, except what only a non-illumos compiler needs (-U__linux__ ...)
    for flag in KERNEL_FLAGS:
        if not flag.startswith("-U"):
            assert flag in argv, flag
    assert "-std=gnu99" in argv      # sys/systm.h: `int nodev();' is not C23 (gcc 15's default)
    for flag in ("-Wall", "-Wextra", "-Werror"):
        assert flag in argv, flag
    assert argv[argv.index("-isystem") + 1] == str(INCLUDE)


@needs_headers
def test_makefile_builds_the_driver_against_the_real_headers():
    argv = _make_n("ddih.o")
    # on a Linux host gcc predefines __linux__; an illumos gcc does not
    r = _run([GCC, *argv[1:], "-U__linux__", "-U__linux", "-Ulinux", "-U__gnu_linux__", "-fsyntax-only"],
             cwd=ROOT / "kmod" / "illumos")
    assert r.returncode == 0 and _clean(r) == "", _clean(r)


@needs_headers
@pytest.mark.parametrize("target", ["ddictl", "ddifuzz"])
def test_makefile_user_targets_compile_against_the_real_headers(target):
    argv = _make_n(target)
    assert argv[argv.index("-o") + 1] == target and "-lpthread" in argv
    assert {"-Wall", "-Wextra", "-Werror", "-m64"} <= set(argv)
    sources = [a for a in argv if a.endswith(".c")]
    assert f"../../guest/{target}.c" in sources
    flags = [a for a in argv[1:] if not a.endswith(".c") and a not in ("-o", target, "-lpthread")]
    for src in sources:
        r = _run([GCC, *USER_FLAGS, "-isystem", str(INCLUDE), "-isystem", _gcc_include(), *flags,
                  "-fsyntax-only", src], cwd=ROOT / "kmod" / "illumos")
        assert r.returncode == 0 and _clean(r) == "", _clean(r)


def test_driver_calls_every_routine_under_test():
    text = DRIVER.read_text()
    for fn in ("rmallocmap", "rmallocmap_wait", "rmalloc", "rmalloc_wait", "rmfree",
               "rmfreemap", "ddi_umem_alloc", "ddi_umem_free", "devmap_umem_setup",
               "kmem_alloc", "kmem_zalloc", "kmem_free", "ddi_copyin", "ddi_copyout",
               "ddi_model_convert_from", "ddi_prop_get_int", "ddi_create_minor_node"):
        assert re.search(rf"\b{fn}\(", text), fn
    assert "D_NEW | D_MP | D_DEVMAP" in text


def _call_args(text: str, routine: str) -> tuple[int, int, list[str]]:
    """(start, end, arguments) of the first call of ``routine`` in C code (not in a comment)."""
    comments = [c.span() for c in re.finditer(r"/\*.*?\*/", text, re.DOTALL)]
    for m in re.finditer(rf"\b{routine}\(", text):
        if any(a <= m.start() < b for a, b in comments):
            continue
        depth, i, args, cur = 1, m.end(), [], m.end()
        while depth:
            c = text[i]
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            elif c == "," and depth == 1:
                args.append(text[cur:i])
                cur = i + 1
            i += 1
        args.append(text[cur:i - 1])
        return m.start(), i, args
    raise AssertionError(f"no call of {routine} in ddih.c")


def wrong_arity_copy(tmp_path: Path, routine: str, delta: int) -> Path:
    """A copy of the driver whose first call of ``routine`` has one argument less (-1) or more (+1)."""
    text = DRIVER.read_text()
    a, b, args = _call_args(text, routine)
    args = args[:-1] if delta < 0 else [*args, " 0"]
    call = f"{routine}({','.join(args)})"
    return mutated_copy(tmp_path, re.escape(text[a:b]), call.replace("\\", "\\\\"))


@needs_headers
@pytest.mark.parametrize("routine,delta", [
    ("rmfree", -1),              # 2 arguments instead of 3
    ("kmem_free", -1),           # without its size
    ("devmap_umem_setup", -1),   # one argument missing (no accattrp)
    ("ddi_umem_alloc", +1),      # 4 arguments instead of 3
])
def test_the_check_has_teeth(tmp_path, routine, delta):
    bad = wrong_arity_copy(tmp_path, routine, delta)
    r = compile_driver(bad)
    assert r.returncode != 0, f"gcc accepted a broken driver ({routine} with {delta:+d} argument)"
    assert re.search(rf"too (few|many) arguments to function .{routine}.", r.stderr), r.stderr


@needs_headers
def test_a_misspelt_vmem_kstat_member_fails(tmp_path):
    bad = mutated_copy(tmp_path, r"vk->vk_contains\.value", "vk->vk_contain.value")
    r = compile_driver(bad)
    assert r.returncode != 0 and "vk_contain" in r.stderr, r.stderr


@needs_headers
def test_unchanged_copy_compiles(tmp_path):
    """The negative tests fail because of the edit, not because of the copy."""
    ok = mutated_copy(tmp_path, r"Big Theory Statement", "Big Theory Statement")
    r = compile_driver(ok)
    assert r.returncode == 0, r.stderr


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
