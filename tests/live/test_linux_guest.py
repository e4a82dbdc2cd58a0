"""Live tests: a real Linux guest in QEMU (KVM if usable, else TCG).

Each test boots its own guest (~3 s under TCG with the PVH vmlinux) and checks
afterwards that no QEMU process of ours is left behind.
"""

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

from harness.images import build_linux_image
from harness.machine import Machine
from harness.panics import first_fatal, scan
from harness.ssh import SSH, HostKeyMismatch, SSHConnectionLost, quote

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 not installed"),
]


@pytest.fixture(scope="module")
def image():
    return build_linux_image()


def _qemu_pids_with(marker: str) -> list[int]:
    """PIDs of live processes whose command line mentions ``marker``."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and "qemu-system" in cmd and state != "Z":
            pids.append(int(d.name))
    return pids


@pytest.fixture
def machine(image, tmp_path):
    m = Machine(image, log_dir=tmp_path)
    try:
        yield m
    finally:
        m.kill()
        workdir = str(m.workdir)
        left = _qemu_pids_with(workdir) if m.workdir else []
        assert not left, f"QEMU left running: {left}"
        assert not m.is_running()


def test_boot_ssh_upload(machine, image, tmp_path):
    machine.start()
    assert machine.accel in ("kvm", "tcg")
    assert machine.accel_choice.reason
    boot = machine.wait_ready(120)
    t = time.monotonic()
    with machine.ssh() as s:
        connect = time.monotonic() - t
        r = s.run("uname -r")
        assert r.status == 0 and r.stdout.strip() == image.kernel_release
        r = s.run("echo out; echo err >&2; exit 7")
        assert (r.status, r.stdout, r.stderr) == (7, "out\n", "err\n")
        data = os.urandom(300_000)
        f = tmp_path / "blob"
        f.write_bytes(data)
        name = "/tmp/a file; rm -rf x"
        s.put(f, name, 0o600)
        r = s.run(quote("md5sum", name))
        assert r.stdout.split()[0] == hashlib.md5(data).hexdigest()
        assert s.run(quote("stat", "-c", "%a", name)).stdout.strip() == "600"
        assert s.run("cat", input="piped").stdout == "piped"
    print(f"\nboot-to-ready {boot:.2f}s ssh-connect {connect:.2f}s accel {machine.accel}")
    # a different pinned key must be refused
    wrong = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    with pytest.raises(HostKeyMismatch):
        SSH("127.0.0.1", machine.ssh_port, image.client_key, wrong, timeout=10)
    status, out = machine.console.run("echo hello; false", timeout=20)
    assert status == 1 and out == "hello"
    assert first_fatal(scan(machine.console.new_text(), "linux")) is None
    assert machine.shutdown(timeout=10) == 0
    assert "DDIH-READY" in machine.serial_log.read_text()


def test_savevm_loadvm_restores_state(machine):
    machine.start()
    machine.wait_ready(120)
    with machine.ssh() as s:
        s.run("echo before > /tmp/state", check=True)
    save = machine.savevm("s0")
    with machine.ssh() as s:
        s.run("echo after > /tmp/state; touch /tmp/only-after", check=True)
    load = machine.loadvm("s0")
    with machine.ssh() as s:
        assert s.run("cat /tmp/state").stdout == "before\n"
        assert s.run("test -e /tmp/only-after").status == 1
    # a second round trip works too
    machine.loadvm("s0")
    with machine.ssh() as s:
        assert s.run("cat /tmp/state").stdout == "before\n"
    print(f"\nsavevm {save:.2f}s loadvm {load:.2f}s")
    assert machine.shutdown() == 0


def test_panic_exits_with_status_1_and_is_recognised(machine):
    machine.start()
    machine.wait_ready(120)
    machine.console.new_text()
    s = machine.ssh()
    with pytest.raises(SSHConnectionLost):
        s.run("echo c > /proc/sysrq-trigger", timeout=30)
    s.close()
    assert machine.wait_exit(30) == 1
    findings = scan(machine.serial_log.read_text(errors="replace"), "linux")
    fatal = first_fatal(findings)
    assert fatal is not None and fatal.kind == "panic"
    assert fatal.title == "Kernel panic - not syncing: sysrq triggered crash"
    assert "sysrq triggered crash" in machine.console.new_text()


def test_image_cache_is_reused_fast(image):
    t = time.monotonic()
    again = build_linux_image()
    assert time.monotonic() - t < 1.0
    assert again == image
    assert oct(image.client_key.stat().st_mode & 0o777) == "0o600"
    assert image.host_key_pub.startswith("ssh-ed25519 ")
    assert (image.headers_dir / "Makefile").exists()
