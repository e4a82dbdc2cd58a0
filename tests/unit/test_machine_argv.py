"""QEMU argv construction and the KVM -> TCG decision (no QEMU is started)."""

from pathlib import Path

import pytest

from harness import machine as M
from harness.machine import AccelChoice, Machine, MachineConfig, MachineError, decide_accel


def _cfg(**kw):
    base = dict(kernel=Path("/img/vmlinux"), initrd=Path("/img/initramfs.cpio.gz"),
                append="console=ttyS0 panic=-1 oops=panic quiet", memory="512M", cpus=1)
    base.update(kw)
    return MachineConfig(**base)


def _argv(accel=AccelChoice("tcg", "test"), **kw):
    return Machine(_cfg(**kw)).build_argv(accel, Path("/w"), 40022)


def _after(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_argv_always_has_safety_flags():
    a = _argv()
    for flag in ("-no-reboot", "-nodefaults"):
        assert flag in a
    assert _after(a, "-display") == ["none"]
    assert _after(a, "-monitor") == ["none"]
    assert "pvpanic-pci" in _after(a, "-device")
    assert _after(a, "-action") == ["panic=exit-failure"]


def test_argv_kernel_initrd_append_memory():
    a = _argv()
    assert _after(a, "-kernel") == ["/img/vmlinux"]
    assert _after(a, "-initrd") == ["/img/initramfs.cpio.gz"]
    assert _after(a, "-append") == ["console=ttyS0 panic=-1 oops=panic quiet"]
    assert _after(a, "-m") == ["512M"] and _after(a, "-smp") == ["1"]
    assert "-initrd" not in _argv(initrd=None)


def test_network_only_on_loopback():
    (nic,) = _after(_argv(), "-nic")
    assert "restrict=on" in nic
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in nic
    assert "hostfwd=tcp::" not in nic and "0.0.0.0" not in nic


def test_console_qmp_vmstate():
    a = _argv()
    (chardev,) = _after(a, "-chardev")
    assert chardev.startswith("socket,id=ser0,path=/w/console.sock,server=on")
    assert _after(a, "-serial") == ["chardev:ser0"]
    assert _after(a, "-qmp") == ["unix:/w/qmp.sock,server=on,wait=off"]
    assert any("vmstate.qcow2" in d for d in _after(a, "-drive"))
    assert not _after(_argv(vmstate_disk=False), "-drive")


def test_accel_args():
    a = _argv(AccelChoice("kvm", "ok", "host"))
    assert _after(a, "-accel") == ["kvm"] and _after(a, "-cpu") == ["host"]
    t = _argv(AccelChoice("tcg", "fallback"))
    assert _after(t, "-accel") == ["tcg"] and "-cpu" not in t


def test_extra_args_last():
    a = _argv(extra_args=["-s"])
    assert a[-1] == "-s"


def test_from_image_like_object():
    class Img:
        vmlinux = Path("/c/vmlinux")
        initramfs = Path("/c/initramfs.cpio.gz")
        cmdline = "console=ttyS0"
        memory = "512M"
        cpus = 2
        ready_marker = "DDIH-READY"
        client_key = Path("/c/keys/id_ed25519")
        host_key_pub = "ssh-ed25519 AAAA"
        prompt = "ddih# "
    c = MachineConfig.from_image(Img(), accel="tcg")
    assert c.kernel == Path("/c/vmlinux") and c.cpus == 2 and c.accel == "tcg"
    assert Machine(Img()).config.ready_marker == "DDIH-READY"


# -- accelerator decision ------------------------------------------------------

def _fail(reason):
    return lambda: reason


def _ok():
    return None


def test_kvm_used_when_device_and_probe_ok():
    c = decide_accel("auto", _ok, _ok)
    assert c.accel == "kvm" and c.cpu == "host"


def test_fallback_when_probe_fails_keeps_reason():
    why = "qemu-system-x86_64 exited with status -6: failed to set MSR 0x10a"
    c = decide_accel("auto", _ok, _fail(why))
    assert c.accel == "tcg" and why in c.reason and c.cpu is None


def test_fallback_when_no_device_skips_probe():
    called = []
    c = decide_accel("auto", _fail("/dev/kvm does not exist"), lambda: called.append(1))
    assert c.accel == "tcg" and "/dev/kvm" in c.reason and not called


def test_tcg_requested_never_probes():
    c = decide_accel("tcg", lambda: pytest.fail("probed"), lambda: pytest.fail("probed"))
    assert c.accel == "tcg"


def test_kvm_requested_but_broken_is_an_error():
    with pytest.raises(MachineError, match="MSR"):
        decide_accel("kvm", _ok, _fail("MSR 0x10a"))
    with pytest.raises(ValueError):
        decide_accel("hvf", _ok, _ok)


def test_choose_accel_caches_per_process(monkeypatch):
    calls = []
    monkeypatch.setattr(M, "_ACCEL_CACHE", {})
    monkeypatch.setattr(M, "_kvm_device_ok", lambda: None)
    monkeypatch.setattr(M, "_kvm_probe", lambda qemu: calls.append(qemu) or "broken")
    monkeypatch.delenv("DDIH_ACCEL", raising=False)
    a = M.choose_accel("auto", "qemu-x")
    b = M.choose_accel("auto", "qemu-x")
    assert a is b and a.accel == "tcg" and calls == ["qemu-x"]
    monkeypatch.setenv("DDIH_ACCEL", "tcg")
    assert M.choose_accel("auto", "qemu-x").reason == "TCG requested"


def test_kvm_probe_reports_missing_binary():
    assert "cannot run" in M._kvm_probe("/nonexistent/qemu-system-x86_64", timeout=1)
