"""Security rules that can be checked without a guest: quoting, names, loopback-only QEMU."""

from pathlib import Path

import pytest

from harness.conformance.traces import TraceError, parse_trace
from harness.machine import AccelChoice, Machine, MachineConfig
from harness.protocol import encode
from harness.ssh import quote


@pytest.mark.parametrize("name", ["$(reboot)", "m;rm -rf /", "a b", "`id`", "m\nrmfreemap", "x|y", "../m"])
def test_object_names_that_could_reach_a_shell_or_the_protocol_are_rejected(name):
    with pytest.raises(TraceError, match="must be an object name"):
        parse_trace({"name": "t", "steps": [{"op": "rmallocmap", "map": name, "mapsize": 1}]})


def test_protocol_lines_carry_only_validated_tokens():
    t = parse_trace({"name": "t", "steps": [{"op": "rmallocmap", "map": "m_1.x-y", "mapsize": 1}]})
    line = encode(t.steps[0])
    assert "\n" not in line and all("=" in tok for tok in line.split()[1:])


def test_quote_defuses_shell_metacharacters():
    assert quote("insmod", "/tmp/ddih.ko", "fault=a;reboot") == "insmod /tmp/ddih.ko 'fault=a;reboot'"


def test_qemu_listens_on_loopback_and_unix_sockets_only(tmp_path):
    m = Machine(MachineConfig(kernel=Path("/vmlinux"), initrd=Path("/initrd")))
    argv = m.build_argv(AccelChoice("tcg", "test"), tmp_path, 40022)
    joined = " ".join(argv)
    nics = [a for a in argv if "hostfwd" in a]
    assert nics and all("hostfwd=tcp:127.0.0.1:" in a for a in nics)
    assert "restrict=on" in nics[0]  # slirp: the guest cannot open connections out
    for i, a in enumerate(argv):
        if a in ("-qmp", "-chardev", "-monitor", "-serial"):
            val = argv[i + 1]
            assert "tcp:" not in val and "telnet" not in val and ("unix" in val or "socket" in val
                                                                  or val in ("none", "chardev:ser0"))
    assert "-vnc" not in argv and "-spice" not in joined
