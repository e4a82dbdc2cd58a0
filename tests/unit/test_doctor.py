"""`doctor` with its filesystem and probe functions replaced, and the illumos QEMU argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import doctor as D
from harness.machine import AccelChoice
from harness.targets.illumos import IllumosTarget, illumos_qemu_argv


@pytest.fixture
def probes(monkeypatch, tmp_path):
    p = {
        "which": lambda exe: f"/usr/bin/{exe}",
        "free_bytes": lambda path: 100 * D.GIB,
        "cache_dir": lambda: tmp_path / "cache",
        "choose_accel": lambda: AccelChoice("kvm", "KVM probe passed", "host"),
        "linux_image": lambda: (True, "image abc in /c/linux"),
        "illumos_image": lambda distro: (True, f"/c/images/{distro}/disk.raw (sha256 0123..., verified)"),
        "illumos_base": lambda distro: (True, f"/c/illumos/{distro}/base-x"),
    }
    monkeypatch.setattr(D, "PROBES", p)
    return p


def _by_name(checks):
    return {c.name: c for c in checks}


def test_all_good_linux(probes):
    checks = D.doctor("linux")
    assert [c.name for c in checks] == ["qemu-system-x86_64", "qemu-img", "accelerator", "cache space",
                                        "linux image"]
    assert all(c.ok for c in checks)
    assert D.format_report(checks).endswith("all checks passed")


def test_all_good_openindiana(probes):
    checks = _by_name(D.doctor("openindiana"))
    assert set(checks) == {"qemu-system-x86_64", "qemu-img", "accelerator", "cache space",
                           "openindiana image", "openindiana provisioned base"}
    assert all(c.ok for c in checks.values())


def test_missing_qemu_img_fails_with_a_fix(probes):
    probes["which"] = lambda exe: None if exe == "qemu-img" else f"/usr/bin/{exe}"
    c = _by_name(D.doctor("omnios"))
    assert c["qemu-system-x86_64"].ok and not c["qemu-img"].ok
    assert "qemu-utils" in c["qemu-img"].fix
    report = D.format_report(list(c.values()))
    assert "[FAIL] qemu-img" in report and "fix: install QEMU" in report
    assert report.endswith("1 check(s) failed")


def test_tcg_is_ok_but_says_so(probes):
    probes["choose_accel"] = lambda: AccelChoice("tcg", "KVM unusable, fell back to TCG: /dev/kvm does not exist")
    c = _by_name(D.doctor("openindiana"))["accelerator"]
    assert c.ok and "tcg" in c.detail and "minutes under TCG" in c.detail


def test_accel_probe_error_is_a_failure_not_a_crash(probes):
    def boom():
        raise RuntimeError("KVM was requested but is not usable")
    probes["choose_accel"] = boom
    c = _by_name(D.doctor("linux"))["accelerator"]
    assert not c.ok and "not usable" in c.detail


def test_disk_space_against_the_target_needs(probes):
    probes["free_bytes"] = lambda path: 5 * D.GIB
    assert _by_name(D.doctor("linux"))["cache space"].ok
    c = _by_name(D.doctor("openindiana"))["cache space"]
    assert not c.ok and "5.0 GiB free" in c.detail and "10 GiB" in c.detail


def test_image_and_base_missing(probes):
    probes["illumos_image"] = lambda d: (False, f"{d} image: not downloaded yet")
    probes["illumos_base"] = lambda d: (False, "the omnios image is not downloaded yet")
    c = _by_name(D.doctor("omnios"))
    assert not c["omnios image"].ok and "internet" in c["omnios image"].fix
    assert not c["omnios provisioned base"].ok and "provisions it" in c["omnios provisioned base"].fix


def test_unknown_target():
    with pytest.raises(ValueError):
        D.doctor("solaris")


def test_base_status_without_a_downloaded_image(monkeypatch, tmp_path):
    from harness import fetch
    from harness.targets import illumos as I

    monkeypatch.setattr(fetch, "cached_image", lambda *a, **k: None)
    ok, detail = I.base_status("openindiana", cache_dir=tmp_path)
    assert not ok and "not downloaded" in detail


def test_base_status_follows_the_recipe(monkeypatch, tmp_path):
    """A base made for one recipe is not found for another (kmem_flags is part of the key)."""
    from harness import fetch
    from harness.targets import illumos as I

    class Img:
        sha256 = "ab" * 32
        path = tmp_path / "disk.raw"

    monkeypatch.setattr(fetch, "cached_image", lambda *a, **k: Img())
    key, pub = I.client_key(tmp_path)
    d = I.base_dir_for("openindiana", Img.sha256, pub, 0, tmp_path)
    d.mkdir(parents=True)
    (d / "base.qcow2").write_bytes(b"")
    (d / "base.json").write_text('{"host_key_pub": "ssh-ed25519 AAAA", "created": "now"}')
    assert I.base_status("openindiana", 0, tmp_path)[0]
    assert not I.base_status("openindiana", 0xf, tmp_path)[0]
    assert not I.base_status("omnios", 0, tmp_path)[0]


# ---------------------------------------------------------------- the illumos QEMU argv

def _after(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def _argv(**kw):
    base = dict(accel="kvm", disk="/w/disk.qcow2", serial_socket="/w/console.sock", qmp_socket="/w/qmp.sock",
                ssh_port=40022, memory="4096", cpus=2)
    base.update(kw)
    return illumos_qemu_argv(**base)


def test_illumos_argv_kvm_follows_the_spec():
    a = _argv()
    assert _after(a, "-machine") == ["pc,accel=kvm"]          # i440FX: q35 loses disk and NIC
    assert _after(a, "-cpu") == ["host"]
    assert _after(a, "-smp") == ["2"] and _after(a, "-m") == ["4096"]
    assert "kvm-pit.lost_tick_policy=delay" in _after(a, "-global")
    assert _after(a, "-rtc") == ["base=utc,clock=host,driftfix=slew"]
    assert _after(a, "-drive") == ["file=/w/disk.qcow2,if=virtio,format=qcow2,cache=writeback"]
    assert _after(a, "-netdev") == ["user,id=n0,hostfwd=tcp:127.0.0.1:40022-:22,restrict=on"]
    assert _after(a, "-device") == ["virtio-net-pci,netdev=n0"]
    assert _after(a, "-display") == ["none"] and _after(a, "-monitor") == ["none"]
    # ttya = the first (only) serial port, on a chardev the harness reads
    assert _after(a, "-serial") == ["chardev:s0"]
    assert _after(a, "-chardev") == ["socket,id=s0,path=/w/console.sock,server=on,wait=on"]
    assert "-no-reboot" in a
    assert not any("hv-" in x or "hv_" in x for x in a)       # never Hyper-V enlightenments
    assert "-kernel" not in a


def test_illumos_argv_tcg_swaps_cpu_and_drops_the_kvm_pit():
    a = _argv(accel="tcg")
    assert _after(a, "-machine") == ["pc,accel=tcg"]
    assert _after(a, "-cpu") == ["qemu64"]
    assert not any("kvm-pit" in x for x in a)


def test_illumos_argv_provisioning_and_seed():
    a = _argv(no_reboot=False, restrict=False, seed="/b/seed.iso", disk_format="qcow2")
    assert "-no-reboot" not in a
    assert _after(a, "-netdev") == ["user,id=n0,hostfwd=tcp:127.0.0.1:40022-:22"]
    assert _after(a, "-drive")[1] == "file=/b/seed.iso,if=virtio,format=raw,readonly=on"


def test_illumos_argv_rejects_unknown_accelerator():
    with pytest.raises(ValueError):
        _argv(accel="hvf")


def test_illumos_machine_is_a_disk_boot_with_the_illumos_argv(tmp_path):
    from harness.machine import DiskBoot, Machine

    t = IllumosTarget(tmp_path, distro="omnios")
    m_cfg = t._config("ddih-omnios", DiskBoot(tmp_path / "d.qcow2", seed=tmp_path / "seed.iso"))
    assert m_cfg.kernel is None
    m = Machine(m_cfg)
    a = m.build_argv(AccelChoice("kvm", "test", "host"), Path("/w"), 2222)
    assert "-kernel" not in a and _after(a, "-drive")[0].startswith(f"file={tmp_path / 'd.qcow2'},if=virtio")
    assert _after(a, "-m") == ["4096"] and "-no-reboot" in a
    assert _after(a, "-qmp") == ["unix:/w/qmp.sock,server=on,wait=off"]
    assert t.unobservable == {("kmem_alloc", "value"), ("kmem_zalloc", "value")}
    assert t.name == "omnios" and t.model_name == "illumos" and t.os == "illumos"


def test_a_machine_boots_a_kernel_or_a_disk_never_both_or_neither(tmp_path):
    from harness.machine import DiskBoot, MachineConfig

    with pytest.raises(ValueError, match="exactly one"):
        MachineConfig()
    with pytest.raises(ValueError, match="exactly one"):
        MachineConfig(kernel=tmp_path / "vmlinux", disk=DiskBoot(tmp_path / "d.qcow2"))


def test_doctor_for_the_gate_target_checks_the_compiler_and_the_sources(tmp_path, monkeypatch):
    from harness import doctor as d

    monkeypatch.setitem(d.PROBES, "cached_gate", lambda: None)
    monkeypatch.setenv("DDIH_ILLUMOS_GATE", str(tmp_path))
    checks = {c.name: c for c in d.doctor("illumos-gate")}
    assert "qemu-system-x86_64" not in checks and {"gcc", "make"} <= set(checks)
    src = checks["illumos-gate sources"]
    assert not src.ok and "vmem.c" in src.detail and "DDIH_ILLUMOS_GATE" in src.fix
    monkeypatch.delenv("DDIH_ILLUMOS_GATE")
    src = {c.name: c for c in d.doctor("illumos-gate")}["illumos-gate sources"]
    assert src.ok and "fetches commit" in src.detail


# ---------------------------------------------------------------- image host reachability

@pytest.fixture
def local_http():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802
            self.send_response(200 if self.path == "/img.zst" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/img.zst"


def _use_urls(monkeypatch, probes, *urls):
    from types import SimpleNamespace
    from harness import fetch

    monkeypatch.setattr(fetch, "load_image_manifest", lambda name: SimpleNamespace(urls=tuple(urls)))
    probes["image_host"] = D._image_host          # the real probe, against local URLs


def test_doctor_image_host_reachable_against_a_local_server(probes, monkeypatch, local_http):
    _use_urls(monkeypatch, probes, local_http + "/img.zst")
    c = _by_name(D.doctor("openindiana"))["openindiana image host"]
    assert c.ok and "127.0.0.1 reachable (HTTP 200" in c.detail


def test_doctor_image_host_closed_port_fails_quickly_with_a_fix(probes, monkeypatch):
    import time
    _use_urls(monkeypatch, probes, _closed_port_url())
    probes["illumos_image"] = lambda d: (False, f"{d} image: not downloaded yet")
    t0 = time.monotonic()
    c = _by_name(D.doctor("openindiana"))["openindiana image host"]
    assert time.monotonic() - t0 < 5
    assert not c.ok and "not reachable" in c.detail and "refused" in c.detail.lower()
    assert "https_proxy" in c.fix


def test_doctor_image_host_unreachable_is_fine_when_the_image_is_cached(probes, monkeypatch):
    _use_urls(monkeypatch, probes, _closed_port_url())
    c = _by_name(D.doctor("omnios"))["omnios image host"]
    assert c.ok and "not needed: the image is cached" in c.detail


def test_doctor_image_host_tries_the_mirrors(probes, monkeypatch, local_http):
    _use_urls(monkeypatch, probes, _closed_port_url(), local_http + "/img.zst")
    probes["illumos_image"] = lambda d: (False, "not downloaded yet")
    assert _by_name(D.doctor("omnios"))["omnios image host"].ok


# ---------------------------------------------------------------- disk and NIC models, fallbacks

def test_device_models_default_argv_is_virtio():
    a = _argv(seed="/b/seed.iso")
    assert _after(a, "-drive")[0] == "file=/w/disk.qcow2,if=virtio,format=qcow2,cache=writeback"
    assert "virtio-net-pci,netdev=n0" in _after(a, "-device")


def test_device_models_ahci_and_e1000():
    a = _argv(seed="/b/seed.iso", disk_interface="ahci", nic="e1000")
    assert _after(a, "-drive") == ["file=/w/disk.qcow2,if=none,id=disk0,format=qcow2,cache=writeback",
                                   "file=/b/seed.iso,if=virtio,format=raw,readonly=on"]   # seed stays virtio
    assert _after(a, "-device") == ["ich9-ahci,id=ahci0", "ide-hd,bus=ahci0.0,drive=disk0,bootindex=0",
                                    "e1000,netdev=n0"]
    with pytest.raises(ValueError):
        _argv(disk_interface="scsi", nic="e1000")
    with pytest.raises(ValueError):
        _argv(nic="rtl8139")


def test_a_disk_boot_carries_the_fallback_models_into_the_argv(tmp_path):
    from harness.machine import DiskBoot, Machine

    t = IllumosTarget(tmp_path, distro="openindiana")
    m = Machine(t._config("x", DiskBoot(tmp_path / "d.qcow2", nic="e1000")))
    a = m.build_argv(AccelChoice("kvm", "test", "host"), Path("/w"), 2222)
    assert "e1000,netdev=n0" in _after(a, "-device")
    assert _after(a, "-drive")[0].startswith(f"file={tmp_path / 'd.qcow2'},if=virtio")


def test_default_guest_memory_is_4_gib(tmp_path):
    from harness.fetch import load_image_manifest
    from harness.machine import DiskBoot

    t = IllumosTarget(tmp_path, distro="openindiana")
    assert t._config("x", DiskBoot(tmp_path / "d.qcow2")).memory == "4096M"     # no manifest loaded
    for name in ("openindiana", "omnios"):
        g = load_image_manifest(name).guest
        assert g["memory"] == "4096M"
        assert (g["disk_interface"], g["disk_fallback"]) == ("virtio", "ahci")
        assert (g["nic"], g["nic_fallback"]) == ("virtio-net-pci", "e1000")


class _FakeMachine:
    made: list = []

    def __init__(self, config, *, log_dir=None, accel=None):
        self.disk_interface, self.nic = config.disk.interface, config.disk.nic
        self.argv, self.accel, self.killed = ["qemu"], "kvm", False
        _FakeMachine.made.append(self)

    def start(self):
        return self

    def kill(self):
        self.killed = True

    def is_running(self):
        return False


def _provisioning_target(tmp_path, monkeypatch, outcomes):
    """An IllumosTarget whose machine and recipe are replaced: ``outcomes`` per boot
    (a NeedFallback kind to raise, or None for success)."""
    import json
    from types import SimpleNamespace
    from harness import provision as P
    from harness.targets import illumos as I

    _FakeMachine.made = []
    monkeypatch.setattr(I, "Machine", _FakeMachine)
    monkeypatch.setattr(I, "make_overlay", lambda b, f, out, size=None: (out.write_bytes(b"q"), out)[1])
    seq = list(outcomes)

    def run_recipe(self, m):
        kind = seq.pop(0)
        if kind:
            raise P.NeedFallback(kind, "nic-link" if kind == "nic" else "wait-boot", ["x"], f"no {kind} (test)")
        return "ssh-ed25519 AAAAhostkey"
    monkeypatch.setattr(I.IllumosTarget, "_run_recipe", run_recipe)
    t = I.IllumosTarget(tmp_path / "w", distro="openindiana", log=lambda s: None)
    t.image = SimpleNamespace(path=tmp_path / "disk.raw", sha256="0" * 64, format="raw",
                              manifest=SimpleNamespace(guest={"disk_interface": "virtio", "disk_fallback": "ahci",
                                                              "nic": "virtio-net-pci", "nic_fallback": "e1000"}))
    final = tmp_path / "illumos" / "openindiana" / "base-k"
    final.parent.mkdir(parents=True)
    return t, final, json


def test_no_link_boots_again_with_the_fallback_nic_and_says_so(tmp_path, monkeypatch):
    t, final, json = _provisioning_target(tmp_path, monkeypatch, ["nic", None])
    meta = t._provision(final, "rhash")
    assert [(m.disk_interface, m.nic) for m in _FakeMachine.made] == [("virtio", "virtio-net-pci"),
                                                                     ("virtio", "e1000")]
    assert _FakeMachine.made[0].killed
    assert meta["nic"] == "e1000" and meta["disk_interface"] == "virtio"
    assert json.loads((final / "base.json").read_text())["nic"] == "e1000"    # later boots use it
    assert t.facts.nic == "e1000"
    assert t.facts.provision_recoveries == [
        "no network link with virtio-net-pci (no nic (test)); booting again with e1000"]


def test_no_disk_then_no_link_uses_both_fallbacks(tmp_path, monkeypatch):
    t, final, _ = _provisioning_target(tmp_path, monkeypatch, ["disk", "nic", None])
    meta = t._provision(final, "rhash")
    assert [(m.disk_interface, m.nic) for m in _FakeMachine.made] == [
        ("virtio", "virtio-net-pci"), ("ahci", "virtio-net-pci"), ("ahci", "e1000")]
    assert (meta["disk_interface"], meta["nic"]) == ("ahci", "e1000")
    assert len(meta["recoveries"]) == 2 and "booting again with ahci" in meta["recoveries"][0]


def test_a_fallback_that_does_not_help_fails_naming_both_tries(tmp_path, monkeypatch):
    from harness.targets.base import TargetError

    t, final, _ = _provisioning_target(tmp_path, monkeypatch, ["disk", "disk"])
    with pytest.raises(TargetError) as e:
        t._provision(final, "rhash")
    msg = str(e.value)
    assert "the fallback models did not help either" in msg
    assert "virtio disk + virtio-net-pci NIC" in msg and "ahci disk + virtio-net-pci NIC" in msg
    assert len(_FakeMachine.made) == 2 and not final.exists()
