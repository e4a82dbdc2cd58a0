"""Panic, oops, BUG and warning recognisers for console text, per guest OS.

The recognisers are a data table (in the manner of syzkaller's pkg/report):
each row is (kind, regex, title).  A console line is first reduced to its
message text (Linux: the text after the last ``[ sec.usec]`` printk
timestamp, so messages printed right after a shell prompt are still seen;
illumos: the text after a syslog ``[ID n facility.level]`` prefix), then the
regexes are matched at the start of that text.  Titles drop run-specific
noise (addresses, PIDs, offsets) so the same failure gets the same title.

Kinds: ``panic`` (the kernel stopped), ``oops`` (a trap/oops report that
leads to a panic or kills the task), ``bug`` (the kernel detected a bug:
BUG:, kernel BUG at, kmem allocator reports) and ``warning`` (WARN, cmn_err
WARNING, allocation failure reports: the kernel carries on).

The table is tested against golden console logs in tests/data/console/,
one file per case with the expected findings in ``<case>.expected``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

KINDS = ("panic", "oops", "bug", "warning")
FATAL_KINDS = ("panic", "oops", "bug")
EXCERPT_LINES = 12


@dataclass(frozen=True)
class Finding:
    kind: str          # "panic" | "oops" | "bug" | "warning" | "dump" | "reboot"
    title: str         # stable one-line title, e.g. "Kernel panic - not syncing: Fatal exception"
    line: int          # 1-based line number in the scanned text
    excerpt: str       # the matching line and the lines after it
    message: str = ""  # the kernel's own message (panic string, warning text)

    def __str__(self) -> str:
        return f"{self.kind}: {self.title}"


TitleFn = Callable[[re.Match, list[str], int], "tuple[str, str] | str"]


@dataclass(frozen=True)
class Recogniser:
    kind: str
    pattern: re.Pattern
    title: str | TitleFn   # str: a format over the named groups; fn(match, messages, index)
    consumes_next: int = 0  # lines after the match this report may absorb (see kmem)


def _r(kind: str, pattern: str, title: str | TitleFn, consumes_next: int = 0) -> Recogniser:
    return Recogniser(kind, re.compile(pattern), title, consumes_next)


# --------------------------------------------------------------------------
# Linux

def _linux_warning(m: re.Match, msgs: list[str], i: int) -> tuple[str, str]:
    func = re.sub(r"\+0x[0-9a-f]+/0x[0-9a-f]+", "", m.group("func")).strip()
    return f"WARNING at {m.group('file')} {func}", m.group(0)


LINUX: tuple[Recogniser, ...] = (
    _r("panic", r"^Kernel panic - not syncing: (?P<msg>.*?)\s*$",
       lambda m, msgs, i: (f"Kernel panic - not syncing: {m.group('msg')}", m.group("msg"))),
    _r("bug", r"^kernel BUG at (?P<where>\S+?)!?\s*$", "kernel BUG at {where}!"),
    _r("bug", r"^BUG: kernel NULL pointer dereference", "BUG: kernel NULL pointer dereference"),
    _r("bug", r"^BUG: unable to handle page fault for address", "BUG: unable to handle page fault"),
    _r("bug", r"^BUG: scheduling while atomic", "BUG: scheduling while atomic"),
    _r("bug", r"^BUG: (?P<msg>.*?)\s*$",
       lambda m, msgs, i: "BUG: " + re.sub(r"\s*(,\s*address:|\bat addr(ess)?)\s*\S+.*$", "",
                                         m.group("msg"))),
    _r("oops", r"^Oops: (?P<code>[0-9a-f]+) \[#(?P<n>\d+)\]", "Oops: {code} [#{n}]"),
    _r("oops", r"^invalid opcode: (?P<code>[0-9a-f]+) \[#(?P<n>\d+)\]", "invalid opcode: {code} [#{n}]"),
    _r("oops", r"^general protection fault(?P<why>[^:]*)", "general protection fault{why}"),
    _r("warning", r"^WARNING: CPU: \d+ PID: \d+ at (?P<file>\S+) (?P<func>.*?)\s*$", _linux_warning),
    _r("warning", r"^Trying to vfree\(\) nonexistent vm area", "Trying to vfree() nonexistent vm area"),
    _r("warning", r"^(?:\S+: )?vmalloc error: (?P<msg>.*?)(?:, mode:.*)?$", "vmalloc error: {msg}"),
    _r("warning", r"^(?:\S+: )?page allocation failure: (?P<order>order:\d+)(?:, (?P<mode>mode:\S+?))?(?:,|$)",
       lambda m, msgs, i: "page allocation failure: " + ", ".join(
           g for g in (m.group("order"), m.group("mode")) if g)),
)

_LINUX_TS = re.compile(r"\[\s*\d+\.\d+\]\s?")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _linux_message(line: str) -> str:
    line = _ANSI.sub("", line).rstrip("\r")
    parts = _LINUX_TS.split(line)
    text = parts[-1] if len(parts) > 1 else line
    return re.sub(r"^<\d>", "", text).strip()


# --------------------------------------------------------------------------
# illumos

_BAD_TRAP_NOISE = re.compile(r"\s+(rp|addr)=[0-9a-fx]+")


def _bad_trap_title(text: str) -> str:
    return _BAD_TRAP_NOISE.sub("", text).strip()


def _illumos_panic(m: re.Match, msgs: list[str], i: int) -> tuple[str, str]:
    msg = m.group("msg").strip()
    if not msg:   # e.g. a trap: the message follows on the next non-empty line
        for nxt in msgs[i + 1:i + 4]:
            if nxt.strip():
                msg = nxt.strip()
                break
    title = _bad_trap_title(msg) if msg.startswith("BAD TRAP:") else msg
    return title, msg


KMEM_REASONS = (
    "buffer modified after being freed",
    "redzone violation",
    "invalid free",
    "duplicate free",
    "boundary tag corrupted",
    "bufctl corrupted",
    "buffer freed to wrong cache",
    "bad free",
    "kernel heap corruption detected",
)
_KMEM_REASON = re.compile(r"^(?P<reason>" + "|".join(re.escape(r) for r in KMEM_REASONS) + r")")


def _kmem_title(m: re.Match, msgs: list[str], i: int) -> str:
    rest = m.group("rest").strip()
    if rest:
        return f"kernel memory allocator: {rest}"
    for nxt in msgs[i + 1:i + 6]:
        r = _KMEM_REASON.match(nxt.strip())
        if r:
            return f"kernel memory allocator: {r.group('reason')}"
    return "kernel memory allocator"


ILLUMOS: tuple[Recogniser, ...] = (
    _r("panic", r"^panic\[cpu\d+\]/thread=[0-9a-f]+:\s*(?P<msg>.*)$", _illumos_panic),
    _r("oops", r"^BAD TRAP: .*$", lambda m, msgs, i: (_bad_trap_title(m.group(0)), m.group(0))),
    _r("bug", r"^kernel memory allocator:\s*(?P<rest>.*)$", _kmem_title, consumes_next=5),
    _r("bug", r"^(?P<reason>" + "|".join(re.escape(r) for r in KMEM_REASONS if r != "kernel heap corruption detected") + r")\b",
       "kernel memory allocator: {reason}"),
    _r("warning", r"^WARNING: (?P<msg>.*?)\s*$",
       lambda m, msgs, i: (f"WARNING: {m.group('msg')}", m.group("msg"))),
    # what follows a panic: the crash dump and the reboot (not fatal by themselves)
    _r("dump", r"^dumping to (?P<dev>\S+), offset \d+, content: (?P<what>.*?)\s*$", "dumping to {dev}"),
    _r("dump", r"^skipping system dump - (?P<why>.*?)\s*$", "skipping system dump - {why}"),
    _r("reboot", r"^rebooting\.\.\.\s*$", "rebooting..."),
)

_SYSLOG = re.compile(r"^.*?\[ID \d+ [\w.]+\]\s?")
_SYSLOG_ESC = re.compile(r"^(#0\d\d)+")


def _illumos_message(line: str) -> str:
    line = _ANSI.sub("", line).rstrip("\r")
    line = _SYSLOG.sub("", line)
    return _SYSLOG_ESC.sub("", line).strip()


TABLES: dict[str, tuple[tuple[Recogniser, ...], Callable[[str], str]]] = {
    "linux": (LINUX, _linux_message),
    "illumos": (ILLUMOS, _illumos_message),
}
ALIASES = {"openindiana": "illumos", "omnios": "illumos", "smartos": "illumos",
           "solaris": "illumos"}


def scan(text: str, os: str) -> list[Finding]:
    """All findings in ``text`` (console output of a guest running ``os``), in order."""
    key = ALIASES.get(os, os)
    if key not in TABLES:
        raise ValueError(f"no recognisers for OS {os!r} (known: {', '.join(TABLES)})")
    table, message_of = TABLES[key]
    lines = text.replace("\r\n", "\n").split("\n")
    msgs = [message_of(l) for l in lines]
    findings: list[Finding] = []
    consumed: set[int] = set()
    for i, msg in enumerate(msgs):
        if not msg or i in consumed:
            continue
        for rec in table:
            m = rec.pattern.match(msg)
            if not m:
                continue
            if callable(rec.title):
                t = rec.title(m, msgs, i)
                title, message = (t if isinstance(t, tuple) else (t, msg))
            else:
                title, message = rec.title.format(**{k: (v or "") for k, v in m.groupdict().items()}), msg
            if rec.consumes_next:
                for j in range(i + 1, min(i + 1 + rec.consumes_next, len(msgs))):
                    if _KMEM_REASON.match(msgs[j]):
                        consumed.add(j)
                        break
            excerpt = "\n".join(l.rstrip("\r") for l in lines[i:i + EXCERPT_LINES]).rstrip("\n")
            findings.append(Finding(rec.kind, title, i + 1, excerpt, message))
            break
    return findings


def first_fatal(findings: Iterable[Finding]) -> Finding | None:
    """The first panic/oops/bug finding (warnings are not fatal), or None."""
    for f in findings:
        if f.kind in FATAL_KINDS:
            return f
    return None


def panic_message(findings: Iterable[Finding]) -> str | None:
    """The kernel's panic string, if a panic was found (else the first fatal title)."""
    findings = list(findings)
    for f in findings:
        if f.kind == "panic":
            return f.message or f.title
    f = first_fatal(findings)
    return f.title if f else None
