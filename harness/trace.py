"""The vocabulary every layer shares: steps, traces, expectations and results.

This module sits at the bottom with ``ops``: the models, the op protocol, the
targets and the conformance engine all speak it, and it imports nothing of
theirs.  Loading traces from YAML (and validating them) is
``harness.conformance.traces``; this module only defines what a trace *is*.

Results.  Every executed step yields exactly one ``Result``; its kind is one
of ``ResultKind`` (fixed by DESIGN.md):

    value   the routine returned an integer (an rmalloc index, an allocation's
            usable size, ...)
    null    the routine returned NULL
    ok      a void routine returned, or a handle-returning routine gave a
            non-NULL handle (handles are never shown: they are kernel pointers)
    error   the driver refused the request with an errno
    panic   the kernel panicked (``message`` holds the panic text, ``excerpt``
            the console lines around it)
    hang    the step did not return within its budget
    undefined  (models only) the step leaves the model's domain: it cannot say
            what the kernel does, and says so rather than guess; nothing from
            here on is compared, and the trace ends for the model

``attrs`` carries observations that are not the return value but can be
checked from outside: ``align`` (the guaranteed alignment: the observed
address offset must be a multiple of it), ``zeroed``, ``type`` (umem cookie
type), ``cookie_size``, ``coherent`` (user and kernel see the same pages).
``state`` is the map's counters after the step when the model was asked for
them.  ``note`` is prose for people: nothing compares or branches on it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

from harness.ops import FLAG_TABLES, OPS, OpSpec

__all__ = ["ResultKind", "KINDS", "TERMINAL_KINDS", "Result", "Seg", "Layout", "LAYOUT_LISTED", "Expect", "Step",
           "Trace"]


class ResultKind(enum.StrEnum):
    """What a step came to.  A ``str`` subclass, so JSON and ddictl lines carry the plain word."""

    VALUE = "value"
    NULL = "null"
    OK = "ok"
    ERROR = "error"
    PANIC = "panic"
    HANG = "hang"
    UNDEFINED = "undefined"

    @property
    def terminal(self) -> bool:
        """A panic, a hang or the end of the model's domain ends the trace."""
        return self in (ResultKind.PANIC, ResultKind.HANG, ResultKind.UNDEFINED)


KINDS = tuple(k.value for k in ResultKind)
TERMINAL_KINDS = (ResultKind.PANIC.value, ResultKind.HANG.value, ResultKind.UNDEFINED.value)
_KIND = {k.value: k for k in ResultKind}


LAYOUT_LISTED = 64  # a layout lists at most this many segments, and counts them all


@dataclass(frozen=True, slots=True)
class Seg:
    """One piece of a resource map, in the map's own units (never a kernel address).

    ``kind``: ``span`` (an illumos span, a Linux gen_pool chunk), ``alloc`` or ``free``;
    ``flist``: for a free illumos segment, the vmem freelist it sits on (highbit(size) - 1).
    """

    kind: str
    start: int
    size: int
    flist: int | None = None

    def wire(self) -> str:
        t = {"span": "s", "alloc": "a"}.get(self.kind) or ("f" if self.flist is None else f"f{self.flist}")
        return f"{t}:{self.start}+{self.size}"

    @classmethod
    def from_wire(cls, text: str) -> "Seg":
        t, _, rest = text.partition(":")
        start, plus, size = rest.partition("+")
        if not plus or not start.isdigit() or not size.isdigit():
            raise ValueError(f"segment {text!r} is not TYPE:START+SIZE")
        if t == "s":
            return cls("span", int(start), int(size))
        if t == "a":
            return cls("alloc", int(start), int(size))
        if t == "f" or (t[:1] == "f" and t[1:].isdigit()):
            return cls("free", int(start), int(size), int(t[1:]) if len(t) > 1 else None)
        raise ValueError(f"segment {text!r}: type {t!r} is not s, a, f or f<k>")


_LAYOUT_RE = re.compile(r"(?:[saf]\d*:\d+\+\d+(?:,[saf]\d*:\d+\+\d+)*)?")


class Layout:
    """A map's whole layout after a step: spans (chunks) in list order, each followed by its
    segments in address order; the first LAYOUT_LISTED are listed, ``total`` counts them all.

    Kept as its wire text (``TOTAL:SEG,...``), which is what is compared step after step; the
    segments are parsed only when someone looks at them (a difference, a picture), because
    parsing 64 segments per step would cost more than the rest of the check.
    """

    __slots__ = ("total", "_body", "_segs")

    def __init__(self, total: int, segs: tuple[Seg, ...] | None = None, *, body: str | None = None) -> None:
        self.total = total
        self._segs = tuple(segs) if segs is not None else None
        self._body = body if body is not None else ",".join(s.wire() for s in self._segs or ())

    @property
    def segs(self) -> tuple[Seg, ...]:
        if self._segs is None:
            self._segs = tuple(Seg.from_wire(t) for t in self._body.split(",")) if self._body else ()
        return self._segs

    def wire(self) -> str:
        return f"{self.total}:{self._body}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and self.total == other.total and self._body == other._body

    def __hash__(self) -> int:
        return hash((self.total, self._body))

    def __repr__(self) -> str:
        return f"Layout({self.wire()!r})"

    @classmethod
    def from_wire(cls, text: str) -> "Layout":
        total, colon, body = text.partition(":")
        if not colon or not total.isdigit() or not _LAYOUT_RE.fullmatch(body):
            raise ValueError(f"layout {text[:60]!r} is not TOTAL:TYPE:START+SIZE,...")
        listed = body.count(",") + 1 if body else 0
        n = int(total)
        if listed > LAYOUT_LISTED or listed > n or (listed < n and listed != LAYOUT_LISTED):
            raise ValueError(f"layout {text[:60]!r}: {listed} segments listed of {total}")
        for t in body.split(",") if body else ():
            if t[0] in "sa" and t[1] != ":":
                raise ValueError(f"segment {t!r}: type {t.split(':')[0]!r} is not s, a, f or f<k>")
        return cls(n, body=body)

    def difference(self, other: "Layout") -> tuple[str, str] | None:
        """Where two layouts first part: (this side, the other side), each naming the segment
        by its number in the walk; None when they agree."""
        if self == other:
            return None
        for i, (a, b) in enumerate(zip(self.segs, other.segs)):
            if a != b:
                return f"segment {i + 1} {a.wire()}", f"segment {i + 1} {b.wire()}"
        n = min(len(self.segs), len(other.segs))
        if len(self.segs) != len(other.segs):
            mine = self.segs[n].wire() if len(self.segs) > n else "(none)"
            theirs = other.segs[n].wire() if len(other.segs) > n else "(none)"
            return f"segment {n + 1} {mine}", f"segment {n + 1} {theirs}"
        return f"{self.total} segments", f"{other.total} segments"


@dataclass(slots=True)
class Result:
    kind: ResultKind
    value: int | None = None
    message: str | None = None
    warnings: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    state: dict[str, int] | None = None
    excerpt: str | None = None  # console lines around a panic (the kernel's own text)
    layout: Layout | None = None  # the map's whole layout after the step, when asked for

    def __post_init__(self) -> None:
        if self.kind.__class__ is ResultKind:
            return
        kind = _KIND.get(self.kind)
        if kind is None:
            raise ValueError(f"unknown result kind {self.kind!r}; expected one of {KINDS}")
        self.kind = kind

    @property
    def terminal(self) -> bool:
        """A panic or a hang ends the trace."""
        return self.kind.terminal

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape: kind, then value/message/warnings when present."""
        out: dict[str, Any] = {"kind": self.kind.value}
        if self.value is not None:
            out["value"] = self.value
        if self.message is not None:
            out["message"] = self.message
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if self.attrs:
            out["attrs"] = dict(self.attrs)
        if self.state is not None:
            out["state"] = dict(self.state)
        if self.note:
            out["note"] = self.note
        if self.excerpt:
            out["excerpt"] = self.excerpt
        if self.layout is not None:
            out["layout"] = self.layout.wire()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Result":
        return cls(
            kind=data["kind"],
            value=data.get("value"),
            message=data.get("message"),
            warnings=tuple(data.get("warnings", ())),
            attrs=dict(data.get("attrs", {})),
            note=data.get("note"),
            state=data.get("state"),
            excerpt=data.get("excerpt"),
            layout=Layout.from_wire(data["layout"]) if data.get("layout") is not None else None,
        )

    def short(self) -> str:
        """One human-readable token, e.g. ``1100``, ``NULL``, ``panic: ...``."""
        k = self.kind
        if k is ResultKind.VALUE:
            text = str(self.value)
        elif k is ResultKind.NULL:
            text = "NULL"
        elif k is ResultKind.OK:
            text = "ok"
        elif k is ResultKind.ERROR:
            text = f"error {self.message or self.value}"
        elif k is ResultKind.PANIC:
            text = f"PANIC {self.message}"
        elif k is ResultKind.UNDEFINED:
            text = "undefined (outside the model)"
        else:
            text = "hang"
        if self.attrs:
            text += " " + " ".join(f"{k}={_fmt(v)}" for k, v in sorted(self.attrs.items()))
        return text


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) and v in (0x100, 0x200, 0x400, 0x800):
        return hex(v)  # cookie types (0x100, 0x200, 0x800) read better in hex
    return str(v)


@dataclass(frozen=True)
class Expect:
    """What a step should produce; only the fields given are checked."""

    kind: str | None = None
    value: int | None = None
    message: str | None = None
    warnings: tuple[str, ...] | None = None
    attrs: dict[str, Any] | None = None
    state: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Step:
    op: str
    args: dict[str, Any]
    expect: dict[str, Expect] = field(default_factory=dict)  # model name -> expectation

    @property
    def spec(self) -> OpSpec:
        return OPS[self.op]

    def flags(self, arg: str) -> int:
        spec = self.spec.arg_map[arg]
        bits = 0
        for n in self.args[arg]:
            bits |= FLAG_TABLES[spec.flag_table][n]
        return bits

    def call_text(self) -> str:
        """The step as a C-like call: ``rmalloc(m, 150)``."""
        parts = []
        for a in self.spec.args:
            v = self.args.get(a.name)
            if a.kind == "flags":
                parts.append("|".join(v) if v else "0")
            elif v is None and not a.required:
                continue
            elif a.kind == "name" and v is None:
                parts.append("NULL")
            else:
                parts.append(str(v).lower() if isinstance(v, bool) else str(v))
        return f"{self.op}({', '.join(parts)})"

    def to_yaml_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op": self.op}
        for a in self.spec.args:
            if a.name in self.args and (a.required or self.args[a.name] != a.default):
                v = self.args[a.name]
                d[a.name] = list(v) if isinstance(v, tuple) else v
        for model, e in self.expect.items():
            d["expect" if model == "illumos" else f"expect_{model}"] = e.to_json()
        return d


@dataclass(frozen=True)
class Trace:
    name: str
    steps: tuple[Step, ...]
    about: str = ""
    destructive: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def to_yaml_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.about:
            d["about"] = self.about
        if self.destructive:
            d["destructive"] = True
        if self.config:
            d["config"] = dict(self.config)
        d["steps"] = [s.to_yaml_dict() for s in self.steps]
        return d
