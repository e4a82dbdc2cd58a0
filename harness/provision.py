"""Provisioning an illumos cloud image: the serial-console state machine.

An illumos cloud image boots to ``console login:`` on ttya with no network,
no swap, a small rpool and no compiler (README.md, "illumos guests (OpenIndiana,
OmniOS)"; the same image is prepared by the public peer
github.com/anyvm-org/openindiana-builder, hooks/vm_postBuild.sh and
hooks/host_enableNetwork.py).
This module turns it into a test base, once, over the serial console:

* the *recipe* is a data table of :class:`Step` rows.  Each row has a name,
  what it sends, what it waits for (regexes), a timeout, and the handlers for
  known interrupting prompts (:data:`INTERRUPTS`: system maintenance mode,
  ``panic[cpu..]``, kmdb, an unexpected ``Password:``/``login:``/yes-no
  prompt);
* :class:`ConsoleProvisioner` executes the table on anything with the
  pexpect-like interface of :class:`harness.console.Console` (``send``,
  ``sendline``, ``wait_for``, ``tail``), so it is tested by replaying recorded
  transcripts;
* :class:`SSHProvisioner` executes the command rows of the same table over
  SSH (the OmniOS route: cloud-init NoCloud gives SSH, images/omnios.yaml);
* :func:`recipe_hash` is the sha256 of the rendered recipe: a changed recipe
  changes the base image key, so the image is provisioned again.

Every step logs what it waits for; a step that gets stuck raises
:class:`ProvisionError` naming the step, what it waited for and the last 20
console lines.

Console commands follow the serial-console practice of public peers (the
enter-enter-wait login of anyvm-org/openindiana-builder, the per-command
``echo <marker>-$?-`` of Mno-hime/os-autoinst-distri-openindiana lib/utils.pm,
a widened tty): each command is sent as one line, wrapped in begin/end
markers built from a fresh nonce (the echoed command line never contains the
assembled marker), and the exit status travels in the end marker.  Lines
are typed in small chunks with a short pause, and every line stays below the
illumos canonical line limit (:data:`MAX_LINE`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, Sequence

from harness.console import ConsoleClosed, ConsoleError, ConsoleTimeout

RECIPE_VERSION = 1
"""Bump when the provisioning semantics change in a way the rendered text does not show."""

MAX_LINE = 240
"""Longest line typed on the console (illumos ldterm canonical input holds 256 bytes)."""

TAIL_LINES = 20
Log = Callable[[str], None]

# ------------------------------------------------------------------ prompts
# Recorded transcripts strip trailing blanks, so every prompt's final blank is optional.

LOGIN_SEEN = r"console login:"             # the prompt, possibly followed by syslog noise
LOGIN_PROMPT = r"console login: ?$"        # the prompt as the last thing on the console
PASSWORD_PROMPT = r"[Pp]assword: ?$"
ROOT_SHELL = r"# ?$"
USER_SHELL = r"\$ ?$"
LOGIN_INCORRECT = r"Login incorrect"
SHELL_PROMPT = "DDIH-PROV# "
SHELL_PROMPT_RE = r"DDIH-PROV# ?$"
# the PS1 assignment never contains the prompt text itself (see the prompt step)
SET_PROMPT = ("stty rows 40 columns 200; PS1=\"DDIH-PROV\"'# '; export PS1; unset PROMPT_COMMAND; "
              "__hb(){ printf '__B_%s\\n' \"$1\"; }; __he(){ printf '__H_%s:%d\\n' \"$1\" \"$2\"; }")
"""Widen the tty (``stty rows 40 columns 200``), set a prompt whose text the command line never contains, and define
the marker functions (__hb: begin marker, __he: end marker with the exit status)."""

MAINT_USER = r"Enter user name for system maintenance \(control-d to bypass\): ?"
MAINT_PASSWORD = r"(?:Enter root password|Root password for system maintenance) \(control-d to bypass\): ?"
MAINT_OLD = r"\(or give root password for system maintenance\): ?"
PANIC = r"panic\[cpu\d+\]/thread=[0-9a-fA-F]+:[^\r\n]*"
# the kernel found no root disk: the disk model's driver is missing or the pool is not on the disk it
# expects (illumos vfs_mountroot(): "cannot mount root path", "vfs_mountroot: cannot mount root")
NO_ROOT_DISK = (r"panic\[cpu\d+\]/thread=[0-9a-fA-F]+:[^\r\n]*cannot mount root[^\r\n]*"
                r"|Cannot mount root on [^\r\n]*")
# the first signs of a boot on ttya (loader, kernel banner, SMF); "console login:" is matched
# without consuming it, so the next step still sees the prompt
BOOT_SIGN = (r"Loading unix|Booting\.\.\.|SunOS Release \d|Version illumos-|Hostname: "
             r"|(?=\S* ?console login:)")
NO_NIC = "DDIH-NO-NIC"
NO_LINK = "DDIH-NO-LINK"
CLEAR_MAINTENANCE = ("svcs -H -o state,fmri | awk '$1==\"maintenance\"{print $2}' | "
                     "while read s; do svcadm clear $s && echo cleared $s; done")
"""Clear every service in maintenance (svcadm(8) clear), naming each one."""
ROOT_LOCKED_NOTE = ("OmniOS's cloud-init locks root's password (`passwd -N`, omniosorg/cloud-init "
                    "cloudinit/distros/illumos.py lock_passwd), so there is no console login to fall "
                    "back to: only the SSH key works")
KMDB = r"\[\d+\]> ?$"
POWEROFF_FAILED = r"Press any key to reboot"

# ------------------------------------------------------------------ steps


@dataclass(frozen=True)
class Handler:
    """What to do when ``pattern`` appears while a step waits.

    action: ``done`` (the step succeeded), ``send`` (send ``text`` and keep
    waiting, at most ``limit`` times), ``maintenance`` (system maintenance
    mode, see :meth:`ConsoleProvisioner._maintenance`), ``panic`` (the guest
    panicked), ``fallback`` (the device model does not work: ``text`` is
    ``disk`` or ``nic``, raised as :class:`NeedFallback`) or ``fail`` (an
    unexpected prompt; ``text`` describes it).
    """

    name: str
    pattern: str
    action: str
    text: str = ""
    limit: int = 1


INTERRUPTS: tuple[Handler, ...] = (
    Handler("panic", PANIC, "panic"),
    Handler("maintenance", MAINT_USER, "maintenance"),
    Handler("maintenance-password", MAINT_PASSWORD, "maintenance"),
    Handler("maintenance-old-sulogin", MAINT_OLD, "maintenance"),
    Handler("kmdb", KMDB, "fail", "the kernel debugger (kmdb) prompt"),
)
"""Prompts that may interrupt any step (checked after the step's own handlers)."""

COMMAND_INTERRUPTS: tuple[Handler, ...] = (
    Handler("login-prompt", LOGIN_PROMPT, "fail", "a `console login:` prompt: the shell exited"),
    Handler("password-prompt", PASSWORD_PROMPT, "fail", "a `Password:` prompt"),
    Handler("yes-no", r"\((?:y/n|yes/no)\)\?? ?$|\[[yY]/[nN]\]\?? ?$", "fail", "a yes/no question"),
    Handler("more", r"--More--", "fail", "a pager (`--More--`)"),
)
"""Prompts a marker-wrapped command must never run into."""


@dataclass(frozen=True)
class Step:
    """One row of the recipe.

    kind:
      ``wait``     send ``send`` (if any) and wait for one of ``handlers``;
      ``command``  a shell command (console: marker-wrapped; SSH: ssh.run);
                   succeeds when its exit status is in ``ok_status``;
      ``host``     a host-side action (``host_actions[name]()``), e.g. the SSH check;
      ``poweroff`` send ``send`` and wait for the console to close (QEMU exits).
    ``settle`` seconds are waited after sending and before matching (slow getty).
    ``recover_if``/``recover``: when a command fails and its output matches
    ``recover_if``, run the steps named in ``recover`` then retry it once.
    ``capture``: a regex whose first group (or whole match) of the output is
    kept in ``results[name]``.
    ``console_only``: not run by the SSH provisioner.
    ``fallback_if``/``fallback``: when a command fails and its output matches
    ``fallback_if``, raise :class:`NeedFallback` (``fallback``: ``disk`` or
    ``nic``): the target boots again with the manifest's fallback model.
    ``timeout_fallback``: the same when a wait step times out.
    """

    name: str
    kind: str
    send: str = ""
    handlers: tuple[Handler, ...] = ()
    timeout: float = 60.0
    ok_status: tuple[int, ...] = (0,)
    settle: float = 0.0
    recover_if: str | None = None
    recover: tuple[str, ...] = ()
    capture: str | None = None
    console_only: bool = False
    optional: bool = False     # recovery-only steps: skipped in the normal flow
    fallback_if: str | None = None
    fallback: str = ""
    timeout_fallback: str = ""

    def waits_for(self) -> list[str]:
        if self.kind == "command":
            return ["__H_<nonce>:<status> (end marker)", f"status in {list(self.ok_status)}"]
        if self.kind == "poweroff":
            return ["the console to close (QEMU exits)"]
        if self.kind == "host":
            return ["host action"]
        return [h.pattern for h in self.handlers if h.action == "done"]


def marker_line(command: str, nonce: str, functions: bool = True) -> str:
    """The console line that runs ``command`` between a begin and an end marker.

    ``functions``: use the __hb/__he functions defined by the set-prompt step
    (short lines); otherwise spell the printf calls out (e.g. in a sulogin shell).
    """
    if functions:
        return f"__hb {nonce}; ( {command} ); __he {nonce} $?"
    return f"printf '__B_%s\\n' {nonce}; ( {command} ); printf '__H_%s:%d\\n' {nonce} $?"


def check_line_lengths(steps: Sequence[Step]) -> None:
    """Every console line of the recipe (marker-wrapped) fits in :data:`MAX_LINE`."""
    for s in steps:
        if s.console_only or s.kind != "command":
            lines = [l for l in s.send.split("\n")]
        else:
            lines = [marker_line(s.send, "0" * 8)]
        for line in lines:
            if len(line) > MAX_LINE:
                raise ValueError(f"step {s.name}: console line of {len(line)} characters exceeds "
                                 f"{MAX_LINE}: {line[:60]!r}...")


def _cmd(name: str, command: str, timeout: float = 120.0, **kw) -> Step:
    return Step(name, "command", send=command, timeout=timeout, **kw)


def boot_steps(boot_timeout: float = 600.0, first_output: float | None = None) -> list[Step]:
    """Wait for the first sign of a boot on ttya, then for ``console login:``.

    A console that stays silent for ``first_output`` seconds (SeaBIOS found
    nothing to boot: it prints on VGA, not on the serial line) or a kernel
    that cannot mount its root is a disk the guest cannot use: NeedFallback("disk").
    """
    first = first_output if first_output is not None else min(boot_timeout, max(120.0, boot_timeout / 3))
    no_disk = Handler("no-root-disk", NO_ROOT_DISK, "fallback", "disk")
    return [
        Step("wait-boot", "wait", timeout=first, console_only=True, timeout_fallback="disk",
             handlers=(no_disk, Handler("boot", BOOT_SIGN, "done"))),
        Step("wait-login", "wait", timeout=boot_timeout, console_only=True,
             handlers=(no_disk, Handler("login", LOGIN_SEEN, "done"))),
    ]


def login_steps(boot_timeout: float = 600.0, settle: float = 20.0,
                first_output: float | None = None) -> list[Step]:
    """Boot to ``console login:``, log in as root (empty password), set a known prompt."""
    return boot_steps(boot_timeout, first_output) + [
        # two enters, let getty settle (slow consoles merge early enters into the user name),
        # then the prompt must be the last thing
        Step("settle-getty", "wait", send="\n\n", settle=settle, timeout=120, console_only=True,
             handlers=(Handler("login-prompt", LOGIN_PROMPT, "done"),)),
        Step("login", "wait", send="root\n", timeout=120, console_only=True,
             handlers=(Handler("password", PASSWORD_PROMPT, "send", "\n", limit=1),
                       Handler("root-shell", ROOT_SHELL, "done"),
                       Handler("login-incorrect", LOGIN_INCORRECT, "fail",
                               "`Login incorrect`: root with an empty password was refused"),
                       Handler("user-shell", USER_SHELL, "fail",
                               "a non-root shell prompt (`$`): the login is not root"))),
        Step("set-prompt", "wait", send=SET_PROMPT + "\n", timeout=60, console_only=True,
             handlers=(Handler("prompt", SHELL_PROMPT_RE, "done"),)),
    ]


def _etc_system(kmem_flags: int) -> str:
    cmd = "echo 'set halt_on_panic=1' >> /etc/system"
    if kmem_flags:
        cmd += f"; echo 'set kmem_flags=0x{kmem_flags:x}' >> /etc/system"
    return cmd


def _tail_steps(kmem_flags: int, timeout_scale: float) -> list[Step]:
    """/etc/system, boot archive, sync, poweroff (both distributions)."""
    return [
        _cmd("etc-system", _etc_system(kmem_flags), 60),
        _cmd("update-boot-archive", "bootadm update-archive", 300 * timeout_scale),
        _cmd("sync", "sync; sync", 120),
        Step("poweroff", "poweroff", send="init 5\n", timeout=600 * timeout_scale,
             handlers=(Handler("halted-without-poweroff", POWEROFF_FAILED, "fail",
                               "`Press any key to reboot`: the guest halted but did not power off"),)),
    ]


PKG_CONSTRAINT = r"(?i)constraint|incorporat|no matching version|not available|could not be installed"


def _pkg_steps(packages: str, timeout_scale: float) -> list[Step]:
    return [
        _cmd("pkg-install", f"pkg install --accept {packages}", 3600 * timeout_scale,
             ok_status=(0, 4), recover_if=PKG_CONSTRAINT, recover=("pkg-update", "reboot")),
        # recovery only (a constraint or incorporation error): update the image, reboot into
        # the new BE, retry; pkg(1): exit status 4 means nothing to do
        _cmd("pkg-update", "pkg update --accept", 3600 * timeout_scale, ok_status=(0, 4), optional=True),
        Step("reboot", "wait", send="reboot\n", timeout=900 * timeout_scale, optional=True,
             console_only=True, handlers=(Handler("login", LOGIN_SEEN, "done"),)),
        _cmd("verify-toolchain",
             "gcc --version && gmake --version && test -f /usr/include/sys/sunddi.h", 60),
    ]


def _check_pubkey(pubkey: str) -> str:
    pubkey = pubkey.strip()
    if not re.fullmatch(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+( [\w.@+-]+)?", pubkey):
        raise ValueError(f"not a single-line OpenSSH public key: {pubkey[:40]!r}...")
    return pubkey


HOST_KEY_CMD = ("for i in 1 2 3 4 5 6 7 8 9 10; do test -f /etc/ssh/ssh_host_ed25519_key.pub && break; "
                "sleep 3; done; cat /etc/ssh/ssh_host_ed25519_key.pub")
HOST_KEY_RE = r"(ssh-ed25519 [A-Za-z0-9+/=]+)"


def openindiana_recipe(ssh_pubkey: str, kmem_flags: int = 0, *, accel: str = "kvm",
                       swap: str = "4g") -> list[Step]:
    """The OpenIndiana cloud-image recipe (README.md, "illumos guests"), over the serial console."""
    pub = _check_pubkey(ssh_pubkey)
    scale = 3.0 if accel == "tcg" else 1.0
    steps = login_steps(boot_timeout=1800 if accel == "tcg" else 600)
    steps += [
        # network: slirp's fixed addresses (10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3)
        # no link at all: the NIC model has no driver in the image -> boot again with the fallback
        _cmd("nic-create-if",
             f"L=$(dladm show-phys -p -o link | head -1); test -n \"$L\" || {{ echo {NO_NIC}; exit 3; }}; "
             "ipadm show-if $L >/dev/null 2>&1 || ipadm create-if $L", 60,
             fallback_if=NO_NIC, fallback="nic"),
        # the link must come up (vioif/e1000g report up; unknown is accepted)
        _cmd("nic-link",
             "L=$(dladm show-phys -p -o link | head -1); for i in 1 2 3 4 5 6 7 8 9 10; do "
             "dladm show-phys -p -o state $L | egrep -q 'up|unknown' && exit 0; sleep 3; done; "
             f"dladm show-phys; echo {NO_LINK}; exit 1", 90, fallback_if=NO_LINK, fallback="nic"),
        _cmd("nic-address",
             "L=$(dladm show-phys -p -o link | head -1); ipadm show-addr $L/v4 >/dev/null 2>&1 || "
             "ipadm create-addr -T static -a 10.0.2.15/24 $L/v4", 60),
        _cmd("default-route",
             "route -p add default 10.0.2.2 || netstat -rn | grep -q '^default  *10\\.0\\.2\\.2'", 60),
        _cmd("dns",
             "echo 'nameserver 10.0.2.3' > /etc/resolv.conf; cp /etc/nsswitch.dns /etc/nsswitch.conf", 30),
        # SSH for root with our key only, in root's home directory (~root: where sshd looks)
        _cmd("ssh-dir", "mkdir -p ~root/.ssh && chmod 700 ~root/.ssh", 30),
        _cmd("ssh-key", f"echo '{pub}' > ~root/.ssh/authorized_keys && chmod 600 ~root/.ssh/authorized_keys", 30),
        _cmd("permit-root-login",
             "grep -q '^PermitRootLogin' /etc/ssh/sshd_config && "
             "sed -i 's/^PermitRootLogin.*/PermitRootLogin without-password/' /etc/ssh/sshd_config || "
             "echo 'PermitRootLogin without-password' >> /etc/ssh/sshd_config", 30),
        _cmd("sshd", "svcadm enable -r svc:/network/ssh:default; svcadm restart svc:/network/ssh:default", 60),
        _cmd("host-key", HOST_KEY_CMD, 90, capture=HOST_KEY_RE),
        # packages
        _cmd("publisher-https",
             "pkg set-publisher -g https://pkg.openindiana.org/hipster/ "
             "-G http://pkg.openindiana.org/hipster/ openindiana.org", 300 * scale),
        # disk
        _cmd("grow-rpool",
             "zpool online -e rpool $(zpool status rpool | awk '/c[0-9]+t[0-9]+d[0-9]+/{print $1; exit}')",
             120 * scale),
        _cmd("swap",
             f"zfs create -V {swap} rpool/swap && swap -a /dev/zvol/dsk/rpool/swap && "
             "printf '/dev/zvol/dsk/rpool/swap\\t-\\t-\\tswap\\t-\\tno\\t-\\n' >> /etc/vfstab", 120 * scale),
    ]
    steps += _pkg_steps("developer/gcc-14 developer/build/gnu-make system/header", scale)
    steps.append(Step("verify-ssh", "host", timeout=300 * scale))
    steps += _tail_steps(kmem_flags, scale)
    check_line_lengths(steps)
    return steps


def omnios_recipe(kmem_flags: int = 0, *, accel: str = "kvm", swap: str = "4g") -> list[Step]:
    """The OmniOS recipe (README.md, "illumos guests"): cloud-init has done network, SSH key and sshd; the rest over SSH."""
    scale = 3.0 if accel == "tcg" else 1.0
    steps = [
        # console-login is printed only after cloud-init:final (it is an optional_all dependent
        # of it: github.com/omniosorg/cloud-init, branch illumos, smf/cloud-init.xml)
        *boot_steps(1800 if accel == "tcg" else 600),
        Step("verify-ssh", "host", timeout=300 * scale),
        _cmd("grow-rpool",
             "zpool online -e rpool $(zpool status rpool | awk '/c[0-9]+t[0-9]+d[0-9]+/{print $1; exit}')",
             120 * scale),
        _cmd("swap",
             f"zfs create -V {swap} rpool/swap && swap -a /dev/zvol/dsk/rpool/swap && "
             "printf '/dev/zvol/dsk/rpool/swap\\t-\\t-\\tswap\\t-\\tno\\t-\\n' >> /etc/vfstab", 120 * scale),
    ]
    steps += _pkg_steps("developer/gcc14 developer/build/gnu-make system/header", scale)
    steps += _tail_steps(kmem_flags, scale)
    return steps


def render_recipe(steps: Sequence[Step], extra: dict | None = None) -> str:
    """The recipe as text: what each step sends and accepts (timeouts excluded)."""
    lines = [f"ddi-harness provisioning recipe v{RECIPE_VERSION}"]
    for k, v in sorted((extra or {}).items()):
        lines.append(f"# {k}={v}")
    for s in steps:
        parts = [s.name, s.kind, repr(s.send)]
        if s.kind == "command":
            parts.append("ok=" + ",".join(map(str, s.ok_status)))
        if s.recover:
            parts.append(f"recover={','.join(s.recover)} if {s.recover_if}")
        if s.optional:
            parts.append("optional")
        if s.fallback:
            parts.append(f"fallback={s.fallback} if {s.fallback_if}")
        lines.append(" | ".join(parts))
    return "\n".join(lines) + "\n"


def recipe_hash(steps: Sequence[Step], extra: dict | None = None) -> str:
    """sha256 of the rendered recipe: a changed recipe gives another base image."""
    return hashlib.sha256(render_recipe(steps, extra).encode()).hexdigest()


# ------------------------------------------------------------------ errors


class ProvisionError(Exception):
    """A provisioning step failed or got stuck."""

    def __init__(self, step: str, waited_for: Iterable[str], why: str, tail: str = "",
                 details: str = "") -> None:
        self.step = step
        self.waited_for = list(waited_for)
        self.why = why
        self.tail = tail
        self.closed = False
        msg = [f"provisioning step {step!r} failed: {why}"]
        if self.waited_for:
            msg.append("  waiting for: " + " | ".join(self.waited_for))
        if details.strip():
            msg.append(details.rstrip())
        if tail.strip():
            msg.append(f"--- last {TAIL_LINES} console lines ---\n{tail}")
        super().__init__("\n".join(msg))


class NeedFallback(ProvisionError):
    """The first boot found no usable disk (``kind == "disk"``) or NIC (``"nic"``):
    the target boots a fresh overlay again with the manifest's fallback model."""

    def __init__(self, kind: str, step: str, waited_for: Iterable[str], why: str, tail: str = "",
                 details: str = "") -> None:
        self.kind = kind
        self.detail = why
        super().__init__(step, waited_for, f"no usable {'disk' if kind == 'disk' else 'network link'}: {why}",
                         tail, details)


class ConsoleLike(Protocol):
    def send(self, text: str) -> None: ...
    def sendline(self, text: str = "") -> None: ...
    def wait_for(self, pattern, timeout: float = 60): ...
    def tail(self, lines: int = 30) -> str: ...


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")


def clean(text: str) -> str:
    """Console text without ANSI escapes and carriage returns."""
    return _ANSI.sub("", text).replace("\r", "")


# ------------------------------------------------------------------ console runner


class ConsoleProvisioner:
    """Runs a recipe on a serial console (a harness.console.Console or a replaying fake)."""

    def __init__(self, console: ConsoleLike, steps: Sequence[Step], *, log: Log = lambda s: None,
                 host_actions: dict[str, Callable[[], None]] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 nonce: Callable[[], str] = lambda: secrets.token_hex(4),
                 wait_exit: Callable[[float], int | None] | None = None,
                 chunk: int = 32, chunk_delay: float = 0.03,
                 maintenance: str = "recover", console_login: bool = True,
                 maintenance_recoveries: int = 1) -> None:
        self.console = console
        self.steps = list(steps)
        self.by_name = {s.name: s for s in self.steps}
        self.log = log
        self.host_actions = host_actions or {}
        self.sleep = sleep
        self.nonce = nonce
        self.wait_exit = wait_exit
        self.chunk = chunk
        self.chunk_delay = chunk_delay
        # "recover": the first time, log in at sulogin, keep `svcs -xv`, clear the failed services and
        # reboot (no console login: control-d); the next time diagnose and fail.
        # "diagnose": log in, capture `svcs -xv`, fail; "fail": fail at once
        self.maintenance = maintenance
        self.console_login = console_login     # False: root cannot log in on the console (OmniOS)
        self.maintenance_recoveries = maintenance_recoveries
        self.recoveries: list[str] = []        # what was recovered, for the log and the facts
        self.maintenance_diag: list[str] = []  # `svcs -xv` of earlier maintenance boots
        self.results: dict[str, str] = {}   # step name -> captured text
        self.outputs: dict[str, str] = {}   # step name -> command output
        self.done: list[str] = []           # names of steps that completed, in order

    # -- plumbing ----------------------------------------------------------
    def _tail(self) -> str:
        try:
            return clean(self.console.tail(TAIL_LINES))
        except Exception:
            return ""

    def _type(self, text: str) -> None:
        """Send ``text`` in small chunks (slow UARTs merge or drop fast input)."""
        for i in range(0, len(text), self.chunk):
            self.console.send(text[i:i + self.chunk])
            if self.chunk_delay:
                self.sleep(self.chunk_delay)

    def _wait(self, step: Step, handlers: Sequence[Handler], timeout: float,
              waited: list[str] | None = None):
        """Wait for the first of ``handlers``; returns (handler, match)."""
        names = {f"h{i}": h for i, h in enumerate(handlers)}
        pattern = re.compile("|".join(f"(?P<{k}>{h.pattern})" for k, h in names.items()))
        if waited is None:
            waited = [h.pattern for h in handlers if h.action in ("done", "send")] or \
                [h.pattern for h in handlers]
        try:
            m = self.console.wait_for(pattern, timeout=timeout)
        except ConsoleTimeout:
            raise ProvisionError(step.name, waited, f"nothing expected appeared within {timeout:.0f} s",
                                 self._tail()) from None
        except ConsoleClosed:
            err = ProvisionError(step.name, waited, "the console closed: QEMU exited", self._tail())
            err.closed = True
            raise err from None
        key = next(k for k, v in m.groupdict().items() if v is not None and k in names)
        return names[key], m

    def _interrupt(self, step: Step, h: Handler, m: re.Match, waited: list[str]) -> None:
        """A handler whose action is not done/send: never returns."""
        if h.action == "panic":
            raise ProvisionError(step.name, waited, f"the guest panicked: {clean(m.group(0)).strip()}",
                                 self._tail())
        if h.action == "fallback":
            raise NeedFallback(h.text, step.name, waited, clean(m.group(0)).strip(), self._tail())
        if h.action == "maintenance":
            self._maintenance(step, waited, h)
        raise ProvisionError(step.name, waited, f"unexpected prompt: {h.text or h.name}", self._tail())

    def _maintenance(self, step: Step, waited: list[str], h: Handler | None = None) -> None:
        """System maintenance mode: a service failed at boot (fail fast: svc.startd(8)).

        With ``maintenance="diagnose"`` (and after a recovery) log in at the
        sulogin prompt (root, empty password) and run ``svcs -xv`` so the error
        says which service.  Never raises for a console without a root login:
        it says why instead.
        """
        tail = self._tail()
        details = ""
        if self.maintenance in ("diagnose", "recover"):
            if not self.console_login:
                details = f"(no console login tried: {ROOT_LOCKED_NOTE})"
            else:
                try:
                    details = self._maintenance_login(h)
                except (ProvisionError, ConsoleError) as e:
                    details = f"(could not log in for diagnostics: {str(e).splitlines()[0]})"
        again = ""
        if self.recoveries:
            again = (" again after " + "; ".join(self.recoveries))
        parts = [f"--- svcs -xv (boot {i + 1}) ---\n{d}" for i, d in enumerate(self.maintenance_diag)]
        if details:
            parts.append("--- svcs -xv ---\n" + details)
        raise ProvisionError(step.name, waited,
                             f"the guest entered system maintenance mode (a boot service failed){again}; "
                             "the image is unusable as it is", tail, "\n".join(parts))

    def _sulogin(self, h: Handler | None) -> None:
        """Log in at the sulogin prompt as root with the empty password; raises if refused."""
        probe = Step("maintenance-login", "wait")
        if h is None or h.name == "maintenance":        # the user-name prompt
            self._type("root\n")
        else:                                           # already the password prompt
            self._type("\n")
        refused = (Handler("refused", LOGIN_INCORRECT, "done"), Handler("user-again", MAINT_USER, "done"))
        h2, _ = self._wait(probe, (Handler("password", MAINT_PASSWORD, "send"),
                                   Handler("root-shell", ROOT_SHELL, "done")) + refused, 60)
        if h2.name == "password":
            self._type("\n")
            h2, _ = self._wait(probe, (Handler("root-shell", ROOT_SHELL, "done"),) + refused, 60)
        if h2.name == "refused":
            # sulogin asks for the user name again right after `Login incorrect`: consume it
            try:
                self._wait(probe, (Handler("user-again", MAINT_USER, "done"),), 10)
            except ProvisionError:
                pass
        if h2.name != "root-shell":
            raise ProvisionError(probe.name, [ROOT_SHELL], "root with an empty password was refused at "
                                 "the system maintenance prompt", self._tail())

    def _maintenance_login(self, h: Handler | None = None) -> str:
        self._sulogin(h)
        status, out = self._marker_run(Step("maintenance-svcs", "command", send="svcs -xv", timeout=120),
                                       interrupts=False, functions=False)
        return out

    def _recover_maintenance(self, step: Step, h: Handler) -> None:
        """The recipes that boot these images unattended: log in at sulogin, clear what failed,
        reboot once (or, with no root login on the console, control-d to bypass)."""
        n = len(self.recoveries) + 1
        self.log(f"provision: {step.name}: system maintenance mode; recovering (attempt {n})")
        how = ""
        if self.console_login:
            try:
                self._sulogin(h)
            except (ProvisionError, ConsoleError) as e:
                how = f"no root shell at sulogin ({str(e).splitlines()[0]})"
            else:
                _, diag = self._marker_run(Step("maintenance-svcs", "command", send="svcs -xv", timeout=120),
                                           interrupts=False, functions=False)
                self.maintenance_diag.append(diag)
                _, cleared = self._marker_run(Step("maintenance-clear", "command", send=CLEAR_MAINTENANCE,
                                                   timeout=120), interrupts=False, functions=False)
                names = re.findall(r"cleared (\S+)", cleared)
                note = (f"system maintenance mode at {step.name}: cleared "
                        f"{', '.join(names) if names else 'no service'} and rebooted")
                self.recoveries.append(note)
                self.log(f"provision: {note}")
                self._type("reboot\n")
                return
        else:
            how = f"no console login ({ROOT_LOCKED_NOTE})"
        note = f"system maintenance mode at {step.name}: {how}; bypassed with control-d"
        self.recoveries.append(note)
        self.log(f"provision: {note}")
        self._type("\x04")

    # -- steps -------------------------------------------------------------
    def run(self) -> dict[str, str]:
        """Run every non-optional step in order; returns the captured results."""
        for step in self.steps:
            if not step.optional:
                self.run_step(step)
        return self.results

    def run_step(self, step: Step) -> None:
        self.log(f"provision: {step.name}: waiting for {' | '.join(step.waits_for())} "
                 f"(timeout {step.timeout:.0f} s)")
        t0 = time.monotonic()
        if step.kind == "wait":
            self._wait_step(step)
        elif step.kind == "command":
            self._command_step(step)
        elif step.kind == "host":
            self._host_step(step)
        elif step.kind == "poweroff":
            self._poweroff_step(step)
        else:
            raise ValueError(f"unknown step kind {step.kind!r}")
        self.done.append(step.name)
        self.log(f"provision: {step.name}: done in {time.monotonic() - t0:.1f} s")

    def _wait_step(self, step: Step) -> None:
        if step.send:
            self._type(step.send)
        if step.settle:
            self.sleep(step.settle)
        handlers = list(step.handlers) + list(INTERRUPTS)
        waited = [h.pattern for h in step.handlers if h.action in ("done", "send")]
        sent: dict[str, int] = {}
        while True:
            try:
                h, m = self._wait(step, handlers, step.timeout)
            except ProvisionError as e:
                if step.timeout_fallback and not e.closed and "within" in e.why:
                    raise NeedFallback(step.timeout_fallback, step.name, waited,
                                       f"nothing on the serial console within {step.timeout:.0f} s "
                                       "(the firmware found nothing it could boot)", self._tail()) from None
                raise
            if h.action == "done":
                return
            if h.action == "send":
                sent[h.name] = sent.get(h.name, 0) + 1
                if sent[h.name] > h.limit:
                    raise ProvisionError(step.name, waited,
                                         f"prompt {h.name!r} came back after the answer was sent "
                                         f"{h.limit} time(s)", self._tail())
                self._type(h.text)
                continue
            if (h.action == "maintenance" and self.maintenance == "recover"
                    and len(self.recoveries) < self.maintenance_recoveries):
                self._recover_maintenance(step, h)
                continue
            self._interrupt(step, h, m, waited)

    def _marker_run(self, step: Step, interrupts: bool = True, functions: bool = True) -> tuple[int, str]:
        nonce = self.nonce()
        line = marker_line(step.send, nonce, functions)
        self._type(line + "\n")
        extra = (list(INTERRUPTS) + list(COMMAND_INTERRUPTS)) if interrupts else []
        waited = [f"__H_{nonce}:<status>"]
        h, m = self._wait(step, [Handler("begin", rf"__B_{nonce}\r?\n", "done")] + extra, step.timeout,
                          waited)
        if h.action != "done":
            self._interrupt(step, h, m, waited)
        h, m = self._wait(step, [Handler("end", rf"__H_{nonce}:(?P<status>\d+)\r?\n", "done")] + extra,
                          step.timeout, waited)
        if h.action != "done":
            self._interrupt(step, h, m, waited)
        before = _before(self.console, m)
        return int(m.group("status")), clean(before).strip("\n")

    def _command_step(self, step: Step, retried: bool = False) -> None:
        status, out = self._marker_run(step)
        self.outputs[step.name] = out
        if status not in step.ok_status:
            if step.fallback and step.fallback_if and re.search(step.fallback_if, out):
                raise NeedFallback(step.fallback, step.name, [f"exit status in {list(step.ok_status)}"],
                                   f"`{step.send}` exited with status {status}", self._tail(),
                                   "--- output ---\n" + "\n".join(out.splitlines()[-30:]))
            if step.recover and not retried and step.recover_if and re.search(step.recover_if, out):
                self.log(f"provision: {step.name}: exit {status}; recovering with {', '.join(step.recover)}")
                for name in step.recover:
                    rec = self.by_name[name]
                    self.run_step(rec)
                    if rec.name == "reboot":
                        for again in ("settle-getty", "login", "set-prompt"):
                            self.run_step(self.by_name[again])
                return self._command_step(step, retried=True)
            raise ProvisionError(step.name, [f"exit status in {list(step.ok_status)}"],
                                 f"`{step.send}` exited with status {status}", self._tail(),
                                 "--- output ---\n" + "\n".join(out.splitlines()[-30:]))
        if step.capture:
            cm = re.search(step.capture, out)
            if not cm:
                raise ProvisionError(step.name, [step.capture], "the output did not contain what the "
                                     "step captures", self._tail(), "--- output ---\n" + out[-2000:])
            self.results[step.name] = cm.group(1) if cm.groups() else cm.group(0)

    def _host_step(self, step: Step) -> None:
        fn = self.host_actions.get(step.name)
        if fn is None:
            self.log(f"provision: {step.name}: no host action given, skipped")
            return
        try:
            fn()
        except ProvisionError:
            raise
        except Exception as e:
            raise ProvisionError(step.name, step.waits_for(), f"{type(e).__name__}: {e}",
                                 self._tail()) from None

    def _poweroff_step(self, step: Step) -> None:
        self._type(step.send)
        handlers = list(step.handlers) + list(INTERRUPTS)
        waited = step.waits_for()
        never = Handler("never", r"(?!x)x", "done")
        try:
            h, m = self._wait(step, handlers + [never], step.timeout)
        except ProvisionError as e:
            if getattr(e, "closed", False):
                if self.wait_exit is not None and self.wait_exit(60) is None:
                    raise ProvisionError(step.name, waited, "the console closed but QEMU is still running",
                                         self._tail()) from None
                return
            raise
        self._interrupt(step, h, m, waited)


def _before(console, m: re.Match) -> str:
    """The text between the previous match and ``m`` (pexpect's ``before``)."""
    b = getattr(console, "before", None)
    if b is None:
        spawn = getattr(console, "spawn", None)
        b = getattr(spawn, "before", "") if spawn is not None else ""
    return b or ""


# ------------------------------------------------------------------ SSH runner


class SSHProvisioner:
    """Runs the command and host rows of a recipe over SSH (harness.ssh.SSH-like ``run``)."""

    def __init__(self, ssh_factory: Callable[[], object], steps: Sequence[Step], *, log: Log = lambda s: None,
                 host_actions: dict[str, Callable[[], None]] | None = None,
                 console_tail: Callable[[], str] = lambda: "",
                 wait_exit: Callable[[float], int | None] | None = None) -> None:
        self.ssh_factory = ssh_factory
        self.ssh = None
        self.steps = [s for s in steps if not s.console_only]
        self.by_name = {s.name: s for s in steps}
        self.log = log
        self.host_actions = host_actions or {}
        self.console_tail = console_tail
        self.wait_exit = wait_exit
        self.results: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.done: list[str] = []

    def _conn(self):
        if self.ssh is None:
            self.ssh = self.ssh_factory()
        return self.ssh

    def run(self) -> dict[str, str]:
        for step in self.steps:
            if not step.optional:
                self.run_step(step)
        return self.results

    def run_step(self, step: Step, retried: bool = False) -> None:
        self.log(f"provision (ssh): {step.name}: waiting for {' | '.join(step.waits_for())} "
                 f"(timeout {step.timeout:.0f} s)")
        if step.kind == "host":
            fn = self.host_actions.get(step.name)
            if fn is not None:
                try:
                    fn()
                except ProvisionError:
                    raise
                except Exception as e:
                    raise ProvisionError(step.name, step.waits_for(), f"{type(e).__name__}: {e}",
                                         self.console_tail()) from None
        elif step.kind == "command":
            try:
                r = self._conn().run(step.send, timeout=step.timeout)
            except Exception as e:
                raise ProvisionError(step.name, step.waits_for(), f"{type(e).__name__}: {e}",
                                     self.console_tail()) from None
            out = (r.stdout + r.stderr)
            self.outputs[step.name] = out
            if r.status not in step.ok_status:
                if step.recover and not retried and step.recover_if and re.search(step.recover_if, out):
                    for name in step.recover:
                        rec = self.by_name[name]
                        if rec.name == "reboot":
                            self._reboot(rec)
                        else:
                            self.run_step(rec)
                    return self.run_step(step, retried=True)
                raise ProvisionError(step.name, [f"exit status in {list(step.ok_status)}"],
                                     f"`{step.send}` exited with status {r.status}", self.console_tail(),
                                     "--- output ---\n" + "\n".join(out.splitlines()[-30:]))
            if step.capture:
                cm = re.search(step.capture, out)
                if cm:
                    self.results[step.name] = cm.group(1) if cm.groups() else cm.group(0)
        elif step.kind == "poweroff":
            try:
                self._conn().run(step.send.strip() + " </dev/null >/dev/null 2>&1 &", timeout=30)
            except Exception:
                pass   # the connection may drop as the guest goes down
            self._close()
            if self.wait_exit is not None and self.wait_exit(step.timeout) is None:
                raise ProvisionError(step.name, step.waits_for(), f"QEMU did not exit within "
                                     f"{step.timeout:.0f} s of `{step.send.strip()}`", self.console_tail())
        self.done.append(step.name)

    def _reboot(self, step: Step) -> None:
        try:
            self._conn().run("reboot </dev/null >/dev/null 2>&1 &", timeout=30)
        except Exception:
            pass
        self._close()
        fn = self.host_actions.get("reconnect")
        if fn is not None:
            fn()

    def _close(self) -> None:
        if self.ssh is not None:
            try:
                self.ssh.close()
            except Exception:
                pass
            self.ssh = None
