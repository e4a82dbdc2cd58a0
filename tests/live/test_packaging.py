"""Installed like any Python tool: the wheel alone, in a fresh venv, from another directory.

`pip install` of the built wheel (not editable, no checkout on any path) must give a working
`ddi-harness run` and pytest plugin: the drivers, guest programs and image manifests travel in
the package.  The README's "Write your own live test" example is run exactly as printed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.live,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")]


def sh(argv, cwd, timeout=900):
    p = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{argv}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", ROOT], tmp)
    wheels = list((tmp / "dist").glob("ddi_harness-*.whl"))
    assert len(wheels) == 1
    sh([sys.executable, "-m", "venv", tmp / "venv"], tmp)
    py = tmp / "venv" / "bin" / "python"
    sh([py, "-m", "pip", "install", "-q", wheels[0], "pytest"], tmp)
    away = tmp / "elsewhere"  # no checkout here or above
    away.mkdir()
    return py, away


def test_the_installed_package_carries_its_sources(installed):
    py, away = installed
    p = sh([py, "-c", "import harness, harness.resources as r; print(harness.__file__); "
                      "print(r.KMOD, r.GUEST, r.IMAGES, r.EXAMPLES)"], away)
    pkg, dirs = p.stdout.splitlines()
    assert str(ROOT) not in pkg and "site-packages" in pkg
    for d in dirs.split():
        assert "site-packages" in d and Path(d).is_dir(), d
    assert (Path(dirs.split()[0]) / "linux" / "ddih.c").is_file()


def test_ddi_harness_run_works_from_another_directory(installed):
    py, away = installed
    exe = py.parent / "ddi-harness"
    p = sh([exe, "run", "--match", "R21-reuse", "--out", away / "out"], away)
    assert "1 run" in p.stdout and "0 in 0 traces" in p.stdout, p.stdout


def test_the_readme_example_runs_as_printed(installed):
    py, away = installed
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Write your own live test", 1)[1]
    code = re.search(r"A complete example, `tests/test_my_driver.py`:\s*```python\n(.*?)```", section, re.S)
    assert code, "the README's example is where the test expects it"
    (away / "tests").mkdir()
    (away / "tests" / "test_my_driver.py").write_text(code.group(1))
    p = sh([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_my_driver.py"], away)
    assert "3 passed, 1 skipped" in p.stdout, p.stdout  # the destructive one needs --ddi-destructive
