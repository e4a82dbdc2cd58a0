"""Live: `ddi-harness fuzz` against the Linux driver (destructive=0).

A short seeded run (3000 requests, several processes and threads, a kill storm,
the chunk-cap probe) must end with zero panics and warnings, every malformed
request refused, no absurd request accepted, no anomaly, nothing outstanding
between chunks and a clean rmmod.  The summary line and the JSON report are
checked as the command prints and writes them.
"""

import argparse
import json
import re
import shutil

import pytest

from harness.fuzz import FuzzReport, fuzz, fuzz_command, parse_output

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build guest/ddifuzz"),
]

SUMMARY = re.compile(r"^(\d+) requests, (\d+) refused, (\d+) panics, (\d+) warnings$", re.M)


def _assert_clean(rep: FuzzReport, ops: int, probe: int = 0) -> None:
    """``probe``: requests spent on the chunk-cap probe (valid adds), not in the random mix."""
    c = rep.counters
    mix = ops - probe
    assert rep.error == "", rep.error
    assert rep.sent == ops
    assert rep.panics == 0 and rep.warnings == 0, rep.findings
    assert c["malformed"] > mix // 5, "too few malformed requests in the mix"
    assert c["malformed_refused"] == c["malformed"] and c["unrefused"] == 0, rep.details
    assert c["valid"] > mix // 5 and c["valid_failed"] == 0, rep.details
    assert c["absurd"] > 0 and c["absurd_accepted"] == 0, rep.details
    assert c["contended"] > 0
    assert c["anomalies"] == 0, rep.details
    # deep states were reached: mappings, coherence checks, interrupted sleeps
    assert c["mmaps"] > 0 and c["coherence_checks"] > 0 and c["wait_interrupts"] > 0
    # every class of refusal showed up
    for name in ("EINVAL", "EBADF", "EFAULT", "ENOTTY", "ENXIO", "EACCES", "EBUSY", "E2BIG", "EINTR"):
        assert rep.by_errno.get(name, 0) > 0, f"no {name} in {rep.by_errno}"
    assert rep.leaks == [] and rep.hangs == [] and rep.guest_deaths == []
    assert rep.unloaded and rep.outstanding_at_unload == 0
    assert rep.passed, rep.failures()


def test_fuzz_3000_ops_clean(tmp_path):
    rep = fuzz("linux", 3000, 7, tmp_path / "work", chunk=1000, cap_probe=False)
    _assert_clean(rep, 3000)
    assert rep.chunks == 3
    assert rep.counters["kills"] > 0, "the kill storm did not kill a worker"
    assert rep.summary_line() == (f"3000 requests, {rep.refused} refused, 0 panics, 0 warnings")
    # the refusals counted are the errnos ddifuzz saw (OK excluded)
    assert rep.refused == sum(v for k, v in rep.by_errno.items() if k != "OK")


def test_fuzz_chunk_cap_probe(tmp_path):
    """The 4097th chunk of one map is refused (ENOSPC), with the fuzz running around it."""
    rep = fuzz("linux", 6000, 11, tmp_path / "work", chunk=2000, cap_probe=True)
    _assert_clean(rep, 6000, probe=4098)
    assert rep.counters["cap_probes"] == 1 and rep.by_errno.get("ENOSPC", 0) >= 1


def test_fuzz_command_summary_and_json(tmp_path, capsys):
    out = tmp_path / "fuzz.json"
    args = argparse.Namespace(target="linux", ops=1500, seed=3, out=str(tmp_path / "out"), json=str(out),
                              chunk=1500, workers=3, threads=2, no_kill_storm=False, cpus=2, accel="auto",
                              pressure=0)
    status = fuzz_command(args)
    text = capsys.readouterr().out
    m = SUMMARY.search(text)
    assert m, text
    sent, refused, npanics, nwarnings = map(int, m.groups())
    assert (sent, npanics, nwarnings) == (1500, 0, 0), text
    assert status == 0, text
    doc = json.loads(out.read_text())
    assert doc["passed"] is True and doc["summary"] == m.group(0)
    assert doc["counters"]["refused"] == refused
    assert doc["counters"]["malformed_refused"] == doc["counters"]["malformed"]
    assert doc["unloaded"] is True and doc["outstanding_at_unload"] == 0


def test_parse_output_counters_and_details():
    text = ("UNREFUSED w0.t1 wrong size: op=3 (expected EINVAL)\nNOTE w-1.t0 pressure: 3\n"
            "ddifuzz sent=10 refused=4 malformed=4 malformed_refused=3 outstanding_after=0 "
            "by_errno=OK:6,EINVAL:3,EBADF:1\n")
    counters, details = parse_output(text)
    assert counters["sent"] == 10 and counters["malformed_refused"] == 3
    assert counters["by_errno"] == {"OK": 6, "EINVAL": 3, "EBADF": 1}
    assert details[0].startswith("UNREFUSED") and len(details) == 2
