"""Two consecutive nights (and a third): ci/nightly.sh end to end on the Linux target.

Night 1 is clean; night 2 loads the driver with a planted fault (rmfree off by one) and its
diff must name the new divergences; night 3 is clean again and its diff must call them fixed.
Each night's summary goes to $GITHUB_STEP_SUMMARY as on GitHub.  A small corpus keeps it quick.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.live,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")]


def night(tmp: Path, n: int, fault: str = "") -> tuple[int, str]:
    env = {**os.environ, "DDIH_MATCH": "R5-manpage", "DDIH_GENERATE": "0", "DDIH_RUN_BUDGET": "300",
           "DDIH_OUT_ROOT": str(tmp / f"night{n}"), "DDIH_NIGHTLY_KEEP": str(tmp / "keep"),
           "GITHUB_STEP_SUMMARY": str(tmp / "summary.md"), "DDIH_FAULT": fault}
    p = subprocess.run(["bash", str(ROOT / "ci" / "nightly.sh"), "linux", "1/1"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout + p.stderr


def test_three_nights_name_a_planted_regression_and_its_fix(tmp_path):
    code, log = night(tmp_path, 1)
    assert code == 0, log
    first = tmp_path / "night1" / "linux-1of1"
    assert "this is the first night" in (first / "diff.md").read_text()
    assert (tmp_path / "keep" / "run.json").is_file()

    code, log = night(tmp_path, 2, fault="rmfree_off_by_one")
    assert code == 1, log  # the run diverged
    d2 = tmp_path / "night2" / "linux-1of1"
    txt = (d2 / "diff.txt").read_text()
    assert txt.startswith("NEW DIVERGENCES"), txt
    assert "R5-manpage-12-units step" in txt and "state.avail" in txt
    assert "changed underneath: fault:  -> rmfree_off_by_one" in txt
    doc = json.loads((d2 / "diff.json").read_text())
    assert doc["new"] and doc["exit_status"] == 1 and not doc["fixed"]

    code, log = night(tmp_path, 3)
    assert code == 0, log
    txt = (tmp_path / "night3" / "linux-1of1" / "diff.txt").read_text()
    assert txt.startswith("no new divergence") and "Fixed (" in txt and "R5-manpage-12-units" in txt

    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("# linux 1/1") == 3
    assert ":x: **NEW DIVERGENCES" in summary and "### Fixed" in summary
