"""Nothing lost: an interrupted or killed run leaves readable results, no QEMU, and can be resumed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]
ROOT = Path(__file__).resolve().parents[2]


def qemu_pids(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if "qemu-system" in cmd and marker in cmd and state != "Z":
                pids.append(int(d.name))
    return pids


def start_run(out: Path, n: int = 150) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", "run", "--target", "linux", "--generate", str(n),
                             "--seed", "3", "--out", str(out), "--no-shrink", "--regressions", str(out / "none")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_traces(out: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    path = out / "results.jsonl"
    while time.monotonic() < end:
        if path.exists() and path.read_text().count('"type": "trace"') >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("the run produced no results in time")


def records(out: Path) -> list[dict]:
    good = []
    for line in (out / "results.jsonl").read_text().splitlines():
        try:
            good.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # at most the line being written at the kill
    return good


def resume_and_check(out: Path, total: int) -> None:
    r = subprocess.run([sys.executable, "-m", "harness", "run", "--resume", str(out), "--no-shrink"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    doc = json.loads((out / "run.json").read_text())
    names = [t["name"] for t in doc["traces"]]
    assert len(names) == total == len(set(names))
    assert doc["divergences"] == [] and not doc["manifest"]["interrupted"]
    assert all(t["steps"] for t in doc["traces"] if not t["skipped"])


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    proc = start_run(out)
    wait_for_traces(out, 3, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert "--resume" in stderr
    assert qemu_pids(str(out)) == []
    recs = records(out)
    assert any(r["type"] == "step" for r in recs) and any(r["type"] == "trace" for r in recs)
    partial = json.loads((out / "run.json").read_text())
    assert partial["manifest"]["interrupted"] and 3 <= len(partial["traces"]) < 150
    resume_and_check(out, 150)


def test_sigkill_leaves_readable_results_and_no_qemu(tmp_path):
    out = tmp_path / "run"
    proc = start_run(out)
    wait_for_traces(out, 2, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    end = time.monotonic() + 15
    while qemu_pids(str(out)) and time.monotonic() < end:
        time.sleep(0.2)
    assert qemu_pids(str(out)) == [], "QEMU outlived a SIGKILLed harness"
    assert sum(r["type"] == "trace" for r in records(out)) >= 2
    resume_and_check(out, 150)
