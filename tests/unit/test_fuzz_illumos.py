"""`ddi-harness fuzz --target openindiana|omnios`: the commands fuzz.py sends to an illumos guest.

No illumos guest boots here, so the illumos path is driven against an
IllumosTarget whose guest is replaced by a recorder (ssh.put / ssh.run and a
console that never prints).  This checks the *sequence* fuzz.py would send --
upload guest/ddifuzz.c beside the driver sources, build it in the guest with
kmod/illumos/Makefile (gmake ddifuzz), run it on the device node the target
found, count what the driver holds between chunks, remove the driver -- and
nothing more: it is not a fuzz run.  The compile check of ddifuzz.c against
the real illumos headers is in test_illumos_driver_compile.py.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import fuzz as fz
from harness.ssh import CommandResult
from harness.targets.base import UnloadResult
from harness.targets.illumos import IllumosTarget

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "/devices/pseudo/ddih@0:ddih"


def _counters(n: int) -> str:
    c = {k: 0 for k in fz.COUNTERS}
    c.update(sent=n, results=n, ok=n, valid=n, valid_ok=n)
    return "ddifuzz " + " ".join(f"{k}={v}" for k, v in c.items()) + f" outstanding_after=? by_errno=OK:{n}"


class RecordingSSH:
    def __init__(self, build_status: int = 0) -> None:
        self.log: list[tuple] = []
        self.build_status = build_status

    def put(self, local, remote, mode=0o644) -> None:
        self.log.append(("put", Path(local), remote, mode))

    def run(self, cmd: str, timeout: float = 60, check: bool = False) -> CommandResult:
        self.log.append(("run", cmd))
        argv = shlex.split(cmd)
        if argv[:1] == ["gmake"]:
            return CommandResult(self.build_status, "", "" if self.build_status == 0 else "cc: error", 0.1)
        if argv[0].endswith("/ddifuzz"):
            return CommandResult(0, _counters(int(argv[argv.index("-n") + 1])) + "\n", "", 0.1)
        return CommandResult(0, "", "", 0.0)

    def close(self) -> None:
        pass


class QuietConsole:
    def new_text(self) -> str:
        return ""


@dataclass
class Config:
    cpus: int = 2
    memory: str = "4096M"


@dataclass
class FakeMachine:
    console: QuietConsole = field(default_factory=QuietConsole)
    config: Config = field(default_factory=Config)

    def is_running(self) -> bool:
        return True

    def wait_exit(self, timeout: float):
        return None


class RecordedIllumos(IllumosTarget):
    """IllumosTarget with its guest replaced by a recorder: boot() only says the driver is at DEVICE."""

    def __init__(self, workdir: Path, ssh: RecordingSSH) -> None:
        super().__init__(workdir, distro="openindiana")
        self.image = object()          # prepared (a fetched image has no cpus)
        self._ssh = ssh
        self.events: list[str] = []

    def boot(self) -> None:
        self.facts.boots += 1
        self.machine, self.ssh, self.device = FakeMachine(), self._ssh, DEVICE
        self.events.append("boot")

    def alive(self) -> bool:
        return self.machine is not None

    def outstanding(self) -> int:
        self.events.append("outstanding")
        return 0

    def unload(self) -> UnloadResult:
        self.events.append("unload")
        return UnloadResult(True, 0)

    def close(self) -> None:
        self.events.append("close")
        self.machine = self.ssh = None


@pytest.fixture
def no_host_build(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the illumos path must not build ddifuzz on the host")
    monkeypatch.setattr(fz, "build_ddifuzz", refuse)


def test_illumos_sequence(tmp_path, no_host_build):
    ssh = RecordingSSH()
    t = RecordedIllumos(tmp_path, ssh)
    rep = fz.fuzz("openindiana", 1200, 5, tmp_path, chunk=500, workers=2, threads=2, kill_storm=True,
                  cap_probe=True, target=t)
    assert rep.error == ""
    # upload the source beside kmod/illumos (uploaded by boot), build it there, run three chunks
    assert ssh.log[0] == ("put", ROOT / "guest" / "ddifuzz.c", "/tmp/ddih/guest/ddifuzz.c", 0o644)
    assert ssh.log[1] == ("run", "gmake -C /tmp/ddih/kmod/illumos ddifuzz")
    runs = [e[1] for e in ssh.log[2:]]
    assert all(e[0] == "run" for e in ssh.log[2:])
    fuzzer = f"/tmp/ddih/kmod/illumos/ddifuzz -d {DEVICE}"
    # no -c: the chunk cap is the Linux port's, even when asked for
    assert runs == [f"{fuzzer} -n 500 -s {5 * 1_000_003 + 0} -w 2 -t 2 -k",
                    f"{fuzzer} -n 500 -s {5 * 1_000_003 + 1} -w 2 -t 2 -k",
                    f"{fuzzer} -n 200 -s {5 * 1_000_003 + 2} -w 2 -t 2 -k"]
    assert t.events == ["boot", "outstanding", "outstanding", "outstanding", "unload", "close"]
    assert rep.sent == 1200 and rep.chunks == 3
    assert rep.facts["guest_cpus"] == 2 and rep.facts["guest_memory"] == "4096M"
    assert rep.passed, rep.failures()


def test_illumos_build_failure_is_reported(tmp_path, no_host_build):
    ssh = RecordingSSH(build_status=2)
    rep = fz.fuzz("omnios", 100, 1, tmp_path, target=RecordedIllumos(tmp_path, ssh))
    assert "building guest/ddifuzz in the guest failed" in rep.error and "gmake" in rep.error
    assert rep.sent == 0 and not rep.passed
    assert not any(e[0] == "run" and "ddifuzz -d" in e[1] for e in ssh.log)


def test_illumos_gate_is_refused_with_the_fix(tmp_path, capsys):
    with pytest.raises(ValueError, match="--target openindiana or --target omnios"):
        fz.fuzz("illumos-gate", 10, 1, tmp_path)
    args = argparse.Namespace(target="illumos-gate", ops=10, out=str(tmp_path))
    assert fz.fuzz_command(args) == 2
    err = capsys.readouterr().err
    assert "illumos-gate" in err and "no guest" in err and "--target openindiana" in err


def test_every_guest_target_is_offered():
    from harness.targets import TARGET_NAMES

    for name in TARGET_NAMES:
        assert (fz.unsupported(name) is None) == (name != "illumos-gate"), name


def test_makefile_has_a_ddifuzz_target_like_ddictl():
    make = shutil.which("gmake") or shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    out = {}
    for target in ("ddictl", "ddifuzz"):
        r = subprocess.run([make, "-s", "-n", "-C", str(ROOT / "kmod" / "illumos"), target],
                           capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        out[target] = shlex.split(r.stdout.strip().splitlines()[-1])
    fuzz_cmd, ctl_cmd = out["ddifuzz"], out["ddictl"]
    assert "../../guest/ddifuzz.c" in fuzz_cmd and fuzz_cmd[fuzz_cmd.index("-o") + 1] == "ddifuzz"
    assert "-static" not in fuzz_cmd and "-lpthread" in fuzz_cmd
    # the same compiler flags as ddictl
    def flags(argv: list[str]) -> list[str]:
        return [a for a in argv if not a.endswith(".c") and a not in ("-o", "ddictl", "ddifuzz")]
    assert flags(fuzz_cmd) == flags(ctl_cmd)
    clean = (ROOT / "kmod" / "illumos" / "Makefile").read_text()
    assert "rm -f ddih.o ddih ddictl ddifuzz" in clean
