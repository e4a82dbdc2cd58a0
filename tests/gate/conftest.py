"""Fixtures for the illumos-gate target: where the gate tree is, and mutated copies of it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness.targets.gate import SOURCES

# CI: the Makefile points DDIH_ILLUMOS_GATE at the pinned tree beside the checkout
BESIDE = Path(__file__).resolve().parents[3] / "shared" / "data" / "illumos-gate" / "src"
GATE = Path(os.environ.get("DDIH_ILLUMOS_GATE") or BESIDE).resolve()  # as the target records it
HAVE_GATE = all((GATE / s).is_file() for s in SOURCES)

pytestmark = pytest.mark.skipif(not HAVE_GATE, reason=f"no illumos-gate tree at {GATE} (set DDIH_ILLUMOS_GATE)")


@pytest.fixture(scope="session")
def gate_tree() -> Path:
    if not HAVE_GATE:
        pytest.skip(f"no illumos-gate tree at {GATE}: set DDIH_ILLUMOS_GATE to an illumos-gate checkout")
    if shutil.which("make") is None or shutil.which("gcc") is None:
        pytest.skip("make and gcc are needed to build the illumos-gate runner")
    return GATE


def mutated_tree(gate: Path, out: Path, old: str, new: str) -> Path:
    """A gate tree whose vmem.c has ``old`` replaced by ``new`` (exactly once); every other
    file is a symlink into ``gate``.  The copy lives in the test's temporary directory."""
    vmem_rel = Path(SOURCES[0])
    text = (gate / vmem_rel).read_text()
    assert text.count(old) == 1, f"the mutation's anchor must occur once in vmem.c: {old!r}"
    # mirror the tree one level above os/, symlinking everything but usr/src/uts/common/os
    common = Path("usr/src/uts/common")
    for d in (out / common / "os",):
        d.mkdir(parents=True)
    for entry in (gate / "usr/src/uts").iterdir():
        if entry.name != "common":
            (out / "usr/src/uts" / entry.name).symlink_to(entry)
    for entry in (gate / common).iterdir():
        if entry.name != "os":
            (out / common / entry.name).symlink_to(entry)
    for entry in (gate / common / "os").iterdir():
        if entry.name != "vmem.c":
            (out / common / "os" / entry.name).symlink_to(entry)
    (out / vmem_rel).write_text(text.replace(old, new))
    return out
