"""The provisioning console state machine, driven by recorded transcripts.

The FakeConsole below replays console text: real transcripts from
tests/data/console/provision/ (see SOURCES.md there), cut where a person typed,
plus small scripted pieces for prompts that public logs and peers document but no
transcript here shows (the scripted shell answering marker-wrapped commands, `svcs -xv`, pkg
output, the poweroff).  A fake console is acceptable ONLY to test the state
machine: it says nothing about whether a real OpenIndiana or OmniOS guest
prints exactly this, which needs a live guest (see the report in
harness/targets/illumos.py's docstring).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import provision as P
from harness.console import ConsoleClosed, ConsoleTimeout

DATA = Path(__file__).resolve().parents[1] / "data" / "console" / "provision"
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3p0k9kq5o3p1Zk1m2n3b4v5c6x7z8a9s0d1f2g3h4j ddi-harness"
HOSTKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyHostKeyHostKeyHostKeyHostKeyHostKe"


def transcript(name: str) -> str:
    """A recorded transcript (``<name>.txt`` at its source, stored here as ``.transcript``)."""
    return (DATA / name).with_suffix(".transcript").read_text()


@dataclass
class Seg:
    text: str
    after: str | None = None   # regex the sent input must match before this piece appears
    delay: float = 0.0         # seconds of silence before it appears (virtual clock)


def cut(text: str, *points: tuple[str, str | None]) -> list[Seg]:
    """Split ``text`` after each needle (searched in order); the trigger belongs to the next piece."""
    segs, pos, trigger = [], 0, None
    for needle, nxt in points:
        idx = text.index(needle, pos) + len(needle)
        segs.append(Seg(text[pos:idx], trigger))
        pos, trigger = idx, nxt
    segs.append(Seg(text[pos:], trigger))
    return segs


class FakeConsole:
    """Replays a transcript, then (optionally) acts as a scripted root shell.

    ONLY for testing the state machine.  ``wait_for`` follows pexpect: the
    pattern is searched in the unread text, the match and everything before
    it is consumed, ``before`` keeps the text before the match.  Time is
    virtual: waiting for a piece that comes after ``delay`` seconds advances
    the clock, and a pattern that never comes raises ConsoleTimeout at the
    deadline without sleeping.
    """

    def __init__(self, segs: list[Seg], shell: "ScriptedShell | None" = None) -> None:
        self.segs = list(segs)
        self.shell = shell
        self.clock = 0.0
        self.buf = ""
        self.all = ""
        self.sent = ""
        self.before = ""
        self._mark = 0
        self._armed_at: float | None = None
        self._shell_from: int | None = None
        self.closed = False
        self._arm()

    # the pexpect-like interface
    def send(self, text: str) -> None:
        if self.closed:
            raise ConsoleClosed("closed")
        self.sent += text
        self._arm()
        self._feed_shell()

    def sendline(self, text: str = "") -> None:
        self.send(text + "\n")

    def sleep(self, seconds: float) -> None:
        self.clock += seconds

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.all.replace("\r", "").splitlines()[-lines:])

    def wait_for(self, pattern, timeout: float = 60):
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = self.clock + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                self.before = self.buf[:m.start()]
                self.buf = self.buf[m.end():]
                return m
            if self.segs and self._armed_at is not None:
                ready = self._armed_at + self.segs[0].delay
                if ready <= deadline:
                    self.clock = max(self.clock, ready)
                    self._reveal(self.segs.pop(0).text)
                    self._armed_at = None
                    self._arm()
                    if not self.segs:
                        self._shell_from = len(self.sent)
                    continue
            if self.shell is not None and self.shell.powered_off and not self.segs:
                self.closed = True
                raise ConsoleClosed("the console was closed")
            if not self.segs and self.shell is None:
                self.clock = deadline
                raise ConsoleTimeout(f"{rx.pattern!r} did not appear")
            self.clock = deadline
            raise ConsoleTimeout(f"{rx.pattern!r} did not appear within {timeout} s")

    # internals
    def _reveal(self, text: str) -> None:
        self.buf += text
        self.all += text

    def _arm(self) -> None:
        if not self.segs or self._armed_at is not None:
            return
        after = self.segs[0].after
        if after is None:
            self._armed_at = self.clock
        elif re.search(after, self.sent[self._mark:]):
            self._armed_at = self.clock
            self._mark = len(self.sent)

    def _feed_shell(self) -> None:
        if self.shell is None or self.segs or self._shell_from is None:
            return
        while "\n" in self.sent[self._shell_from:]:
            end = self.sent.index("\n", self._shell_from)
            line = self.sent[self._shell_from:end]
            self._shell_from = end + 1
            self._reveal(self.shell.line(line))


class ScriptedShell:
    """A scripted root shell on the console (scripted, not recorded): echoes each line,
    answers marker-wrapped commands from ``answers`` (regex -> (output, status); a status of
    None means the command is still running: no end marker),
    handles `reboot`/login and powers off on `init 5`."""

    def __init__(self, answers: list[tuple[str, str, int]] | None = None, host: str = "unknown") -> None:
        self.answers = list(answers or [])
        self.host = host
        self.prompt = f"root@{host}:~# "
        self.commands: list[str] = []
        self.lines: list[str] = []
        self.state = "shell"
        self.powered_off = False

    def line(self, line: str) -> str:
        self.lines.append(line)
        echo = line + "\r\n"
        if self.state == "login":
            if line == "root":
                self.state = "shell"
                self.prompt = f"root@{self.host}:~# "
                return echo + "Last login: today on console\r\n" + self.prompt
            return echo + f"{self.host} console login: "
        m = (re.fullmatch(r"__hb (\w+); \( (.*) \); __he \1 \$\?", line)
             or re.fullmatch(r"printf '__B_%s\\n' (\w+); \( (.*) \); printf '__H_%s:%d\\n' \1 \$\?", line))
        if m:
            nonce, cmd = m.groups()
            self.commands.append(cmd)
            out, status = "", 0
            for rx, o, s in self.answers:
                if re.search(rx, cmd):
                    out, status = o, s
                    break
            if callable(out):
                out, status = out(cmd)
            if status is None or "panic[cpu" in out:   # still running / the guest died
                return echo + f"__B_{nonce}\r\n" + out
            return echo + f"__B_{nonce}\r\n" + out + f"__H_{nonce}:{status}\r\n" + self.prompt
        if line.startswith("stty rows 40 columns 200; PS1="):
            self.prompt = P.SHELL_PROMPT
            return echo + self.prompt
        if line == "init 5":
            self.powered_off = True
            return echo + "svc.startd: The system is coming down.  Please wait.\r\n" \
                          "syncing file systems... done\r\n"
        if line == "reboot":
            self.state = "login"
            return echo + "syncing file systems... done\r\nrebooting...\r\n" \
                          "SunOS Release 5.11 Version illumos 64-bit\r\nHostname: unknown\r\n\r\n" \
                          f"{self.host} console login: "
        return echo + self.prompt


def provisioner(console: FakeConsole, steps, **kw) -> P.ConsoleProvisioner:
    logs: list[str] = []
    n = iter(range(1, 10_000))
    p = P.ConsoleProvisioner(console, steps, log=logs.append, sleep=console.sleep,
                             nonce=lambda: f"n{next(n):04d}", **kw)
    p.logs = logs
    return p


def sdboot_segments() -> list[Seg]:
    """illumos aarch64 uSD boot: a login prompt with syslog noise on its line, then
    (after Enter) a clean prompt, then root logs in with an empty password."""
    return cut(transcript("illumos-aarch64-odroidc2-sdboot-login-01.txt"),
               ("c8834540 -> ffff0000c8834540\n", r"\n"),
               ("\nunknown console login: ", r"root\n"))


ANSWERS = [
    (r"ssh_host_ed25519_key\.pub", HOSTKEY + " root@unknown\r\n", 0),
    (r"^pkg install", "No updates necessary for this image.\r\n", 4),
    (r"^gcc --version", "gcc (OpenIndiana 14.2.0) 14.2.0\r\nGNU Make 4.4.1\r\n", 0),
]


# ---------------------------------------------------------------- normal path

def test_normal_boot_login_and_every_recipe_step():
    steps = P.openindiana_recipe(PUBKEY, kmem_flags=0xf)
    shell = ScriptedShell(ANSWERS)
    c = FakeConsole(sdboot_segments(), shell)
    ssh_checked = []
    p = provisioner(c, steps, host_actions={"verify-ssh": lambda: ssh_checked.append(True)})
    results = p.run()

    assert results["host-key"] == HOSTKEY
    assert ssh_checked == [True]
    assert p.done == [s.name for s in steps if not s.optional]
    # the login: two enters, root, then the prompt line; no password needed in this transcript
    assert c.sent.startswith("\n\nroot\n" + P.SET_PROMPT + "\n")
    # every command step was typed, marker-wrapped, in recipe order, exactly as rendered
    expected = [s.send for s in steps if s.kind == "command" and not s.optional]
    assert shell.commands == expected
    assert shell.lines[-1] == "init 5"
    assert c.closed
    # the exact commands of the recipe (README.md, "illumos guests", step 2)
    sent = "\n".join(shell.commands)
    for needle in ("ipadm create-addr -T static -a 10.0.2.15/24 $L/v4",
                   "route -p add default 10.0.2.2",
                   "echo 'nameserver 10.0.2.3' > /etc/resolv.conf; cp /etc/nsswitch.dns /etc/nsswitch.conf",
                   f"echo '{PUBKEY}' > ~root/.ssh/authorized_keys",
                   "PermitRootLogin without-password",
                   "svcadm enable -r svc:/network/ssh:default; svcadm restart svc:/network/ssh:default",
                   "pkg set-publisher -g https://pkg.openindiana.org/hipster/ "
                   "-G http://pkg.openindiana.org/hipster/ openindiana.org",
                   "zpool online -e rpool $(zpool status rpool",
                   "zfs create -V 4g rpool/swap && swap -a /dev/zvol/dsk/rpool/swap",
                   "pkg install --accept developer/gcc-14 developer/build/gnu-make system/header",
                   "echo 'set halt_on_panic=1' >> /etc/system; echo 'set kmem_flags=0xf' >> /etc/system",
                   "bootadm update-archive"):
        assert needle in sent, needle
    # each step logged what it waited for
    assert any("wait-login: waiting for console login:" in l for l in p.logs)
    assert any("poweroff: waiting for the console to close" in l for l in p.logs)


def test_password_prompt_gets_an_empty_line():
    """OmniOS bloody transcript: `console login:` then `Password:` then the `bloody#` prompt."""
    segs = cut(transcript("omnios-bloody-bhyve-loader-boot-login-01.txt"),
               ("Hostname: bloody\n\nbloody console login:", r"\n"),
               ("\nbloody console login: ", r"root\n"),
               ("root\nPassword:", r"\n"),
               ("OmniOS 5.11     omnios-master-c6cc2b6b38       October 2018\nbloody#", None))
    c = FakeConsole(segs[:-1])
    p = provisioner(c, P.login_steps()[:4])
    p.run()
    assert c.sent == "\n\nroot\n\n"
    assert p.done == ["wait-boot", "wait-login", "settle-getty", "login"]


def test_settle_waits_for_getty_before_typing_root():
    c = FakeConsole(sdboot_segments())
    p = provisioner(c, P.login_steps(settle=20)[:3])
    p.run()
    assert c.clock >= 20
    assert "root" not in c.sent


def test_kmem_flags_zero_writes_only_halt_on_panic():
    steps = P.openindiana_recipe(PUBKEY)
    etc = next(s for s in steps if s.name == "etc-system")
    assert etc.send == "echo 'set halt_on_panic=1' >> /etc/system"


def test_pkg_install_exit_4_is_success_and_other_failures_recover_by_update_and_reboot():
    calls = {"n": 0}

    def pkg_install(cmd):
        calls["n"] += 1
        if calls["n"] == 1:
            return ("pkg install: No matching version of developer/gcc-14 can be installed:\r\n"
                    "  Reject: pkg://openindiana.org/developer/gcc-14 ... incorporation constraint\r\n", 1)
        return ("Packages to install: 40\r\n", 0)

    answers = [(r"^pkg install", pkg_install, 0), (r"^pkg update", "", 0)] + ANSWERS
    shell = ScriptedShell(answers)
    c = FakeConsole(sdboot_segments(), shell)
    p = provisioner(c, P.openindiana_recipe(PUBKEY))
    p.run()
    pkg = [x for x in shell.commands if x.startswith("pkg ")]
    assert pkg[-3:] == ["pkg install --accept developer/gcc-14 developer/build/gnu-make system/header",
                        "pkg update --accept",
                        "pkg install --accept developer/gcc-14 developer/build/gnu-make system/header"]
    assert "reboot" in shell.lines
    assert p.done.count("login") == 2 and p.done.count("set-prompt") == 2


# ---------------------------------------------------------------- interruptions

@pytest.mark.parametrize("name,cuts", [
    ("openindiana-hipster-2025.12-sparc-qemu-niagara-verbose-boot-maintenance-01.txt",
     [("Enter user name for system maintenance (control-d to bypass):", r"root\n"),
      ("Enter root password (control-d to bypass):", r"\n"),
      ("root@openindiana:~#", None)]),
    ("illumos-aarch64-odroidc2-netboot-maintenance-01.txt",
     [("Enter user name for system maintenance (control-d to bypass):", r"root\n"),
      ("Enter root password (control-d to bypass): ", r"\n"),
      ("root@meson:~# ", None)]),
])
def test_maintenance_mode_at_boot_fails_naming_the_step_with_svcs_output(name, cuts):
    segs = cut(transcript(name), *cuts)[:-1]
    svcs = ("svc:/system/filesystem/usr:default (read/write usr)\r\n"
            " State: maintenance since Oct 25 07:18:20 2020\r\n")
    shell = ScriptedShell([(r"^svcs -xv$", svcs, 0)])
    c = FakeConsole(segs, shell)
    p = provisioner(c, P.openindiana_recipe(PUBKEY), maintenance="diagnose")
    with pytest.raises(P.ProvisionError) as e:
        p.run()
    err = e.value
    assert err.step == "wait-login"
    assert "maintenance mode" in str(err)
    assert "svc:/system/filesystem/usr:default" in str(err)           # the diagnostics
    assert "Requesting System Maintenance Mode" in err.tail            # the console lines
    assert len(err.tail.splitlines()) <= P.TAIL_LINES
    assert c.sent.startswith("root\n\n")                                # root, empty password


def test_old_sulogin_password_prompt_is_maintenance_too():
    """Scripted: the older `Root password for system maintenance` form."""
    c = FakeConsole([Seg("SunOS Release 5.11 Version x 64-bit\nRequesting System Maintenance Mode\n"
                         "Root password for system maintenance (control-d to bypass): ")])
    p = provisioner(c, P.login_steps(), maintenance="fail")
    with pytest.raises(P.ProvisionError, match="maintenance mode") as e:
        p.run()
    assert e.value.step == "wait-login"


def test_slow_boot_long_silence_within_the_timeout():
    """The hang transcript's banner, then 900 s of silence (scripted), then the login prompt."""
    banner = transcript("omnios-r151030-hyperv-gen1-configuring-devices-hang-01.txt")
    segs = [Seg(banner), Seg("Hostname: unknown\n\nunknown console login: ", delay=900.0)]
    c = FakeConsole(segs)
    p = provisioner(c, P.login_steps(boot_timeout=1800)[:2])
    p.run()
    assert 900 <= c.clock < 1800
    assert p.done == ["wait-boot", "wait-login"]


def test_boot_that_never_reaches_login_times_out_naming_the_step():
    """Real transcript: OmniOS on Hyper-V Gen1 hangs after `Configuring devices.`."""
    c = FakeConsole([Seg(transcript("omnios-r151030-hyperv-gen1-configuring-devices-hang-01.txt"))])
    p = provisioner(c, P.login_steps(boot_timeout=600))
    with pytest.raises(P.ProvisionError) as e:
        p.run()
    err = e.value
    assert err.step == "wait-login"
    assert err.waited_for == [P.LOGIN_SEEN]
    assert "within 600 s" in str(err)
    assert "Configuring devices." in err.tail and "Configuring devices." in str(err)
    assert c.clock == 600


def test_unexpected_non_root_prompt_fails_naming_the_step():
    """Real transcript: an LDAP user's `$` prompt where a root shell was expected."""
    text = transcript("omnios-r151036-ldap-user-console-login-01.txt")
    segs = cut(text, ("client console login:", r"\n"))
    segs = [segs[0], Seg("\nclient console login: ", r"\n"),               # getty's reprint (scripted)
            Seg(segs[1].text.lstrip(" "), r"root\n")]
    segs[2] = Seg(segs[2].text.split("Password:")[0] + "Password:", r"root\n")
    segs.append(Seg(text.split("Password:")[1], r"\n"))
    c = FakeConsole(segs)
    p = provisioner(c, P.login_steps())
    with pytest.raises(P.ProvisionError) as e:
        p.run()
    err = e.value
    assert err.step == "login"
    assert "non-root shell" in str(err)
    assert "rigby@client:~$" in err.tail


def test_unexpected_prompt_during_a_command_fails_with_console_lines():
    shell = ScriptedShell([(r"^pkg set-publisher", "Do you want to continue (y/n)? ", None)] + ANSWERS)
    c = FakeConsole(sdboot_segments(), shell)
    p = provisioner(c, P.openindiana_recipe(PUBKEY), host_actions={"verify-ssh": lambda: None})
    with pytest.raises(P.ProvisionError) as e:
        p.run()
    err = e.value
    assert err.step == "publisher-https"
    assert "yes/no question" in str(err)
    assert "Do you want to continue (y/n)?" in err.tail
    assert "--- last 20 console lines ---" in str(err)


def test_command_that_never_finishes_times_out():
    shell = ScriptedShell(ANSWERS)
    c = FakeConsole(sdboot_segments(), shell)
    steps = P.login_steps() + [P.Step("stuck", "command", send="sleep 99999", timeout=45)]
    shell.answers.insert(0, (r"^sleep", "", None))      # never finishes
    p = provisioner(c, steps)
    with pytest.raises(P.ProvisionError) as e:
        p.run()
    assert e.value.step == "stuck"
    assert "within 45 s" in str(e.value)
    assert e.value.waited_for == ["__H_n0001:<status>"]


def test_failing_command_reports_status_and_output():
    shell = ScriptedShell([(r"^zpool online", "cannot expand c1t0d0: no such device in pool\r\n", 1)] + ANSWERS)
    c = FakeConsole(sdboot_segments(), shell)
    p = provisioner(c, P.openindiana_recipe(PUBKEY), host_actions={"verify-ssh": lambda: None})
    with pytest.raises(P.ProvisionError) as e:
        p.run()
    assert e.value.step == "grow-rpool"
    assert "exited with status 1" in str(e.value)
    assert "cannot expand c1t0d0" in str(e.value)


def test_panic_during_a_command_fails_with_the_panic_line():
    panic = transcript("dilos-panic-kernel-heap-corruption-kmdb-01.txt").replace("\n", "\r\n")
    shell = ScriptedShell([(r"^zfs create", panic, 0)] + ANSWERS)
    c = FakeConsole(sdboot_segments(), shell)
    p = provisioner(c, P.openindiana_recipe(PUBKEY), host_actions={"verify-ssh": lambda: None})
    with pytest.raises(P.ProvisionError) as e:
        p.run()
    assert e.value.step == "swap"
    assert "the guest panicked: panic[cpu1]/thread=fffffe000fde2c20: kernel heap corruption detected" \
        in str(e.value)


def test_poweroff_that_halts_without_powering_off_fails():
    shell = ScriptedShell(ANSWERS)
    c = FakeConsole(sdboot_segments(), shell)
    steps = P.login_steps() + [P._tail_steps(0, 1.0)[-1]]
    orig = shell.line

    def halted(line):
        out = orig(line)
        if line == "init 5":
            shell.powered_off = False
            out += "Press any key to reboot.\r\n"
        return out
    shell.line = halted
    p = provisioner(c, steps)
    with pytest.raises(P.ProvisionError, match="did not power off") as e:
        p.run()
    assert e.value.step == "poweroff"


# ---------------------------------------------------------------- recipe properties

def test_recipe_hash_changes_with_the_recipe_and_is_stable():
    a = P.recipe_hash(P.openindiana_recipe(PUBKEY))
    assert a == P.recipe_hash(P.openindiana_recipe(PUBKEY))
    assert a != P.recipe_hash(P.openindiana_recipe(PUBKEY, kmem_flags=0xf))
    assert a != P.recipe_hash(P.openindiana_recipe(PUBKEY.replace("B3p0", "B3p1")))
    assert a == P.recipe_hash(P.openindiana_recipe(PUBKEY, accel="tcg"))   # timeouts are not part of it
    assert len(a) == 64
    assert P.recipe_hash(P.omnios_recipe()) != P.recipe_hash(P.omnios_recipe(kmem_flags=0xf))


def test_every_console_line_fits_the_canonical_limit():
    P.check_line_lengths(P.openindiana_recipe(PUBKEY, kmem_flags=0xf))
    with pytest.raises(ValueError):
        P.openindiana_recipe("ssh-ed25519 " + "A" * 300)


def test_bad_public_key_is_refused():
    with pytest.raises(ValueError):
        P.openindiana_recipe("ssh-ed25519 AAAA' ; rm -rf / ; '")


def test_omnios_recipe_uses_omnios_packages_and_no_console_login():
    steps = P.omnios_recipe(kmem_flags=0)
    sends = [s.send for s in steps]
    assert "pkg install --accept developer/gcc14 developer/build/gnu-make system/header" in sends
    assert not any("set-publisher" in s for s in sends)
    assert [s.name for s in steps if s.console_only] == ["wait-boot", "wait-login", "reboot"]


class _R:
    def __init__(self, status, stdout="", stderr=""):
        self.status, self.stdout, self.stderr = status, stdout, stderr


def test_ssh_provisioner_runs_the_command_rows():
    ran = []

    class FakeSSH:
        def run(self, cmd, timeout=60):
            ran.append(cmd)
            return _R(4 if cmd.startswith("pkg install") else 0)

        def close(self):
            pass

    exits = []
    p = P.SSHProvisioner(lambda: FakeSSH(), P.omnios_recipe(), host_actions={"verify-ssh": lambda: None},
                         wait_exit=lambda t: exits.append(t) or 0)
    p.run()
    assert ran[0].startswith("zpool online -e rpool")
    assert ran[-1].startswith("init 5")
    assert "bootadm update-archive" in ran
    assert exits


# ---------------------------------------------------------------- recovery: system maintenance mode

MAINT_CUTS = {
    "openindiana-hipster-2025.12-sparc-qemu-niagara-verbose-boot-maintenance-01.txt":
        [("Enter user name for system maintenance (control-d to bypass):", r"root\n"),
         ("Enter root password (control-d to bypass):", r"\n"),
         ("root@openindiana:~#", None)],
    "illumos-aarch64-odroidc2-netboot-maintenance-01.txt":
        [("Enter user name for system maintenance (control-d to bypass):", r"root\n"),
         ("Enter root password (control-d to bypass): ", r"\n"),
         ("root@meson:~# ", None)],
    "illumos-riscv64-hifive-netboot-maintenance-01.txt":
        [("Enter user name for system maintenance (control-d to bypass):", r"root\n"),
         ("Enter root password (control-d to bypass): ", r"\n"),
         ("root@sifive:~# ", None)],
}
FAILED_SVC = "svc:/system/filesystem/usr:default"
SVCS = f"{FAILED_SVC} (read/write usr)\r\n State: maintenance since Oct 25 07:18:20 2020\r\n"
CLEARED = f"cleared {FAILED_SVC}\r\n"


def maintenance_tail(name: str) -> str:
    """The transcript's own maintenance announcement and sulogin user prompt (replayed on a second boot)."""
    text = transcript(name)
    start = text.index("Requesting System Maintenance Mode")
    end = text.index("(control-d to bypass):", start) + len("(control-d to bypass):")
    return text[start:end] + " "


class SuloginShell(ScriptedShell):
    """ScriptedShell whose `reboot` comes back to maintenance mode again (``maint_boots`` times)."""

    def __init__(self, answers, again: str, maint_boots: int = 1) -> None:
        super().__init__(answers)
        self.again = again
        self.maint_boots = maint_boots

    def line(self, line: str) -> str:
        if self.state == "sulogin-user":
            self.lines.append(line)
            self.state = "sulogin-pw"
            return line + "\r\nEnter root password (control-d to bypass): "
        if self.state == "sulogin-pw":
            self.lines.append(line)
            self.state = "shell"
            return ("\r\nsingle-user privilege assigned to root on /dev/console.\r\n"
                    "Entering System Maintenance Mode\r\n\r\n" + self.prompt)
        if line == "reboot" and self.maint_boots > 0:
            self.maint_boots -= 1
            self.lines.append(line)
            self.state = "sulogin-user"
            return ("reboot\r\nsyncing file systems... done\r\nrebooting...\r\n"
                    "SunOS Release 5.11 Version illumos 64-bit\r\n" + self.again)
        return super().line(line)


@pytest.mark.parametrize("name", sorted(MAINT_CUTS))
def test_maintenance_at_first_boot_is_cleared_and_rebooted_once_then_provisioning_goes_on(name):
    """Golden transcripts: log in at sulogin (root, empty password), keep `svcs -xv`, clear the
    failed service, reboot once; the next boot reaches `console login:` and the recipe completes."""
    segs = cut(transcript(name), *MAINT_CUTS[name])[:-1]
    shell = ScriptedShell([(r"^svcs -xv$", SVCS, 0), (r"^svcs -H -o state,fmri", CLEARED, 0)] + ANSWERS)
    c = FakeConsole(segs, shell)
    steps = P.openindiana_recipe(PUBKEY)
    p = provisioner(c, steps, host_actions={"verify-ssh": lambda: None})
    p.run()
    assert c.sent.startswith("root\n\n")                               # sulogin: root, empty password
    assert shell.commands[:2] == ["svcs -xv", P.CLEAR_MAINTENANCE]
    i = shell.lines.index("reboot")
    assert P.CLEAR_MAINTENANCE in shell.lines[i - 1]                    # cleared, then rebooted
    assert shell.lines.count("reboot") == 1                             # once
    assert p.recoveries == [f"system maintenance mode at wait-login: cleared {FAILED_SVC} and rebooted"]
    assert FAILED_SVC in p.maintenance_diag[0]
    assert p.done == [s.name for s in steps if not s.optional]          # the whole recipe ran after it
    assert shell.lines[-1] == "init 5"
    assert any("system maintenance mode; recovering" in l for l in p.logs)


@pytest.mark.parametrize("name", sorted(MAINT_CUTS))
def test_maintenance_again_after_the_reboot_fails_with_both_diagnoses(name):
    segs = cut(transcript(name), *MAINT_CUTS[name])[:-1]
    shell = SuloginShell([(r"^svcs -xv$", SVCS, 0), (r"^svcs -H -o state,fmri", CLEARED, 0)] + ANSWERS,
                         maintenance_tail(name))
    c = FakeConsole(segs, shell)
    p = provisioner(c, P.openindiana_recipe(PUBKEY), host_actions={"verify-ssh": lambda: None})
    with pytest.raises(P.ProvisionError) as e:
        p.run()
    err = e.value
    msg = str(err)
    assert err.step == "wait-login"
    assert f"maintenance mode (a boot service failed) again after system maintenance mode at wait-login: " \
           f"cleared {FAILED_SVC} and rebooted" in msg
    assert "--- svcs -xv (boot 1) ---" in msg and msg.count(FAILED_SVC) >= 3
    assert shell.lines.count("reboot") == 1                              # rebooted once, not twice
    assert shell.commands == ["svcs -xv", P.CLEAR_MAINTENANCE, "svcs -xv"]
    assert "Requesting System Maintenance Mode" in err.tail


def test_maintenance_with_root_refused_at_sulogin_is_bypassed_with_control_d():
    """Real boot up to the sulogin prompt; the refusal and the later login prompt are scripted."""
    name = "illumos-aarch64-odroidc2-netboot-maintenance-01.txt"
    head = cut(transcript(name), ("Enter user name for system maintenance (control-d to bypass): ", None))[0]
    segs = [head,
            Seg("root\nEnter root password (control-d to bypass): ", r"root\n"),
            Seg("\nLogin incorrect\nEnter user name for system maintenance (control-d to bypass): ", r"\n"),
            Seg("\nmeson console login: ", r"\x04")]
    c = FakeConsole(segs)
    p = provisioner(c, P.login_steps()[:2])
    p.run()
    assert c.sent == "root\n\n\x04"
    assert p.done == ["wait-boot", "wait-login"]
    assert len(p.recoveries) == 1 and "bypassed with control-d" in p.recoveries[0]
    assert "refused" in p.recoveries[0]


def test_omnios_maintenance_never_tries_a_root_console_login_and_bypasses_with_control_d():
    """OmniOS: cloud-init ran `passwd -N root`; the console fallback is control-d, then SSH with the key."""
    name = "illumos-aarch64-odroidc2-netboot-maintenance-01.txt"
    head = cut(transcript(name), ("Enter user name for system maintenance (control-d to bypass): ", None))[0]
    c = FakeConsole([head, Seg("\nHostname: omnios\n\nomnios console login: ", r"\x04")])
    steps = [s for s in P.omnios_recipe() if s.console_only and not s.optional]
    p = provisioner(c, steps, console_login=False)
    p.run()
    assert c.sent == "\x04"                                              # no "root", no password
    assert p.done == ["wait-boot", "wait-login"]
    assert "bypassed with control-d" in p.recoveries[0] and "passwd -N" in p.recoveries[0]


def test_omnios_maintenance_twice_fails_saying_why_there_is_no_console_login():
    name = "illumos-aarch64-odroidc2-netboot-maintenance-01.txt"
    head = cut(transcript(name), ("Enter user name for system maintenance (control-d to bypass): ", None))[0]
    c = FakeConsole([head, Seg("\n" + maintenance_tail(name), r"\x04")])
    steps = [s for s in P.omnios_recipe() if s.console_only and not s.optional]
    p = provisioner(c, steps, console_login=False)
    with pytest.raises(P.ProvisionError) as e:
        p.run()
    assert e.value.step == "wait-login"
    assert "passwd -N" in str(e.value) and "no console login tried" in str(e.value)
    assert "again after" in str(e.value)
    assert c.sent == "\x04"


# ---------------------------------------------------------------- recovery: disk and NIC fallbacks

def test_silent_console_is_a_disk_the_firmware_cannot_boot():
    """SeaBIOS prints on VGA, not on ttya: nothing at all on the serial line means no bootable disk."""
    c = FakeConsole([])
    p = provisioner(c, P.login_steps(boot_timeout=600))
    with pytest.raises(P.NeedFallback) as e:
        p.run()
    assert e.value.kind == "disk" and e.value.step == "wait-boot"
    assert c.clock == 200                                               # first_output: a third of 600
    assert "nothing on the serial console within 200 s" in str(e.value)


def test_kernel_that_cannot_mount_root_asks_for_the_disk_fallback():
    """Real boot up to the kernel banner, then (scripted) illumos vfs_mountroot()'s root mount failure."""
    name = "illumos-riscv64-hifive-netboot-maintenance-01.txt"
    text = transcript(name)
    head = text[:text.index("WARNING: Cannot mount /system/boot")]
    tail = ("NOTICE: spa_import_rootpool: error 5\n"
            "Cannot mount root on /pci@0,0/pci1af4,2@4/blkdev@0,0:b fstype zfs\n\n"
            "panic[cpu0]/thread=fffffffffbc3e000: vfs_mountroot: cannot mount root\n")
    c = FakeConsole([Seg(head), Seg(tail, delay=30)])
    p = provisioner(c, P.openindiana_recipe(PUBKEY))
    with pytest.raises(P.NeedFallback) as e:
        p.run()
    assert e.value.kind == "disk" and e.value.step == "wait-login"
    assert "Cannot mount root on /pci@0,0/pci1af4,2@4/blkdev@0,0:b" in str(e.value)
    assert p.done == ["wait-boot"]


NIC_IF = r"^L=\$\(dladm show-phys -p -o link \| head -1\); test -n"
NIC_LINK = r"^L=\$\(dladm show-phys -p -o link \| head -1\); for i in"


def test_no_nic_after_login_asks_for_the_nic_fallback():
    shell = ScriptedShell([(NIC_IF, "DDIH-NO-NIC\r\n", 3)] + ANSWERS)
    c = FakeConsole(sdboot_segments(), shell)
    p = provisioner(c, P.openindiana_recipe(PUBKEY))
    with pytest.raises(P.NeedFallback) as e:
        p.run()
    assert e.value.kind == "nic" and e.value.step == "nic-create-if"
    assert "no usable network link" in str(e.value)
    assert not any(x.startswith("ipadm create-addr") for x in shell.commands)   # stopped there


def test_link_that_never_comes_up_asks_for_the_nic_fallback():
    out = "LINK         MEDIA                STATE      SPEED  DUPLEX    DEVICE\r\n" \
          "vioif0       Ethernet             down       0      unknown   vioif0\r\nDDIH-NO-LINK\r\n"
    shell = ScriptedShell([(NIC_LINK, out, 1)] + ANSWERS)
    c = FakeConsole(sdboot_segments(), shell)
    p = provisioner(c, P.openindiana_recipe(PUBKEY))
    with pytest.raises(P.NeedFallback) as e:
        p.run()
    assert e.value.kind == "nic" and e.value.step == "nic-link"
    assert "vioif0       Ethernet             down" in str(e.value)


def test_a_nic_step_failing_for_another_reason_is_not_a_fallback():
    shell = ScriptedShell([(NIC_IF, "ipadm: cannot create interface vioif0: Operation not supported\r\n", 1)]
                          + ANSWERS)
    c = FakeConsole(sdboot_segments(), shell)
    p = provisioner(c, P.openindiana_recipe(PUBKEY))
    with pytest.raises(P.ProvisionError) as e:
        p.run()
    assert not isinstance(e.value, P.NeedFallback)
    assert e.value.step == "nic-create-if" and "exited with status 1" in str(e.value)


def test_ssh_provisioner_lets_a_fallback_from_a_host_action_through():
    def no_banner():
        raise P.NeedFallback("nic", "verify-ssh", ["banner"], "no SSH banner")
    p = P.SSHProvisioner(lambda: None, P.omnios_recipe(), host_actions={"verify-ssh": no_banner})
    with pytest.raises(P.NeedFallback) as e:
        p.run()
    assert e.value.kind == "nic"
