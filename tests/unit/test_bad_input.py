"""Nothing false-green, nothing unclear: a run that tests nothing fails, bad input is exit 2 with a
message naming the input and the fix (never a traceback), and nothing is lost or overwritten.

Every case here failed before (exit 0 with "0 traces", or a traceback); none of them boots a guest:
each is refused before any guest work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.conformance.runner import Sink, load_partial

CORPUS = Path(__file__).resolve().parents[2] / "harness" / "traces"
ONE = CORPUS / "rmap" / "R21-reuse.yaml"


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


# ------------------------------------------------------------------ runs that test nothing

def test_an_empty_trace_directory_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run(capsys, "run", "--traces", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert code == 2 and "no trace files" in err and str(tmp_path / "empty") in err
    code, err = run(capsys, "model", str(tmp_path / "empty"))
    assert code == 2 and "no trace files" in err


def test_a_match_with_no_hit_is_refused(tmp_path, capsys):
    code, err = run(capsys, "run", "--match", "no-such-trace", "--out", str(tmp_path / "o"))
    assert code == 2 and "--match 'no-such-trace'" in err and "ddi-harness traces" in err


@pytest.mark.parametrize("argv, says", [
    (["--generate", "0"], "--generate 0"), (["--generate", "-3"], "--generate -3"),
    (["--run-budget", "0"], "--run-budget 0"), (["--run-budget", "-1"], "--run-budget -1"),
    (["--jobs", "0"], "--jobs 0"), (["--jobs", "-1"], "--jobs -1"),
    (["--budget-ms", "0"], "--budget-ms 0"),
    (["--fault", "bogus"], "--fault bogus"), (["--kmem-flags", "0xf"], "--kmem-flags 0xf"),
])
def test_settings_that_would_test_nothing_or_cannot_be_honoured_fail_before_any_boot(tmp_path, capsys, argv, says):
    t = time.monotonic()
    code, err = run(capsys, "run", "--out", str(tmp_path / "o"), *argv)
    assert code == 2 and says in err, err
    assert time.monotonic() - t < 5 and not (tmp_path / "o" / "work").exists()  # no guest work started


def test_a_run_in_which_every_trace_was_skipped_fails(tmp_path, monkeypatch):
    from tests.gate.conftest import GATE, HAVE_GATE

    if not HAVE_GATE:
        pytest.skip("needs an illumos-gate tree (DDIH_ILLUMOS_GATE)")
    monkeypatch.setenv("DDIH_ILLUMOS_GATE", str(GATE))
    p = subprocess.run([sys.executable, "-m", "harness", "run", "--target", "illumos-gate", "--match", "K1-",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "no trace ran" in p.stderr, p.stdout + p.stderr


# ------------------------------------------------------------------ bad input: exit 2, never a traceback

@pytest.mark.parametrize("name", ["a/b", "../../escape", ".hidden", "with space"])
def test_trace_names_that_are_not_plain_names_are_refused(tmp_path, capsys, name):
    f = tmp_path / "t.yaml"
    f.write_text(json.dumps({"name": name, "steps": [{"op": "rmallocmap", "map": "m", "mapsize": 1}]}))
    for cmd in (["traces", str(f)], ["model", str(f)], ["run", "--traces", str(f), "--out", str(tmp_path / "o")]):
        code, err = run(capsys, *cmd)
        assert code == 2 and "is not a plain name" in err and "letters, digits" in err, (cmd, err)
    assert not (tmp_path / "escape").exists()


def test_binary_junk_and_devices_as_traces_are_refused(tmp_path, capsys):
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(bytes(range(256)) * 4)
    for cmd in (["traces", str(junk)], ["model", str(junk)], ["run", "--traces", str(junk), "--out", str(tmp_path / "o")]):
        code, err = run(capsys, *cmd)
        assert code == 2 and "not UTF-8 text" in err, err
    t = time.monotonic()
    code, err = run(capsys, "model", "/dev/zero")
    assert code == 2 and "not a regular file" in err and time.monotonic() - t < 5


def test_duplicate_yaml_keys_are_refused(tmp_path, capsys):
    f = tmp_path / "dup.yaml"
    f.write_text("name: dup\nsteps:\n  - {op: rmallocmap, map: m, mapsize: 1, mapsize: 2}\n")
    code, err = run(capsys, "model", str(f))
    assert code == 2 and "'mapsize' appears twice" in err and "line 3" in err


def test_an_out_that_is_a_file_or_cannot_be_made_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, err = run(capsys, "run", "--match", "R21", "--out", str(tmp_path / "file"))
    assert code == 2 and "that is a file" in err
    code, err = run(capsys, "run", "--match", "R21", "--out", "/proc/ddih-cannot-be-here")
    assert code == 2 and "--out /proc/ddih-cannot-be-here" in err


def test_two_runs_into_one_out_are_refused(tmp_path, capsys):
    from harness.conformance.live import lock_out

    held = lock_out(tmp_path / "o")
    try:
        code, err = run(capsys, "run", "--match", "R21", "--out", str(tmp_path / "o"))
        assert code == 2 and "another run is writing its reports there" in err and f"pid {os.getpid()}" in err
    finally:
        held.close()


@pytest.mark.parametrize("content", [None, b"not json at all", bytes(range(200)), b'{"no": "manifest"}'])
def test_replay_of_a_missing_or_garbage_file_is_refused(tmp_path, capsys, content):
    f = tmp_path / "run.json"
    if content is not None:
        f.write_bytes(content)
    code, err = run(capsys, "replay", str(f), "--out", str(tmp_path / "o"))
    assert code == 2 and str(f) in err and ("cannot read it" in err or "not a run.json" in err), err


# ------------------------------------------------------------------ nothing lost

def test_resume_after_a_torn_line_neither_merges_nor_duplicates_records(tmp_path):
    path = tmp_path / "results.jsonl"
    step = lambda i, v: json.dumps({"type": "step", "trace": "t", "index": i, "op": "rmalloc", "call": "c",
                                    "predicted": {"kind": "value", "value": v}, "observed": None})
    # the killed run: trace t got two steps, the third was being written
    path.write_text(step(1, 1) + "\n" + step(2, 2) + "\n" + step(3, 3)[:25])
    sink = Sink(tmp_path, append=True)  # the resumed run reruns t from its first step
    for i in (1, 2, 3):
        rec = json.loads(step(i, 10 + i))
        del rec["type"]
        sink.emit("step", rec)
    sink.emit("trace", {"name": "t", "source": "s", "seconds": 0.1, "end": "completed"})
    sink.close()
    lines = path.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # no line merged with the torn one
    done = load_partial(tmp_path)
    assert [s.index for s in done["t"].steps] == [1, 2, 3]
    assert [s.predicted["value"] for s in done["t"].steps] == [11, 12, 13]


def test_work_directories_of_dead_runs_are_swept(tmp_path):
    from harness.machine import OWNER_FILE, WORKDIR_PREFIX, sweep_stale_workdirs

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, live, unowned = (tmp_path / f"{WORKDIR_PREFIX}{n}" for n in ("stale", "live", "unowned"))
    for d in (stale, live, unowned):
        d.mkdir()
        (d / "vmstate.qcow2").write_bytes(b"x" * 1000)
    (stale / OWNER_FILE).write_text(f"{dead.pid}\n")
    (live / OWNER_FILE).write_text(f"{os.getppid()}\n")
    assert sweep_stale_workdirs(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and unowned.exists()
