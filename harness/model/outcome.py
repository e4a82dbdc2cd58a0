"""Step results: the one vocabulary shared by models, drivers and reports.

Every executed step yields exactly one Result.  The kinds are fixed by
DESIGN.md:

    value   the routine returned an integer (an rmalloc index, an allocation's
            usable size, ...)
    null    the routine returned NULL
    ok      a void routine returned, or a handle-returning routine gave a
            non-NULL handle (handles are never shown: they are kernel pointers)
    error   the driver refused the request with an errno
    panic   the kernel panicked (message holds the panic text)
    hang    the step did not return within its budget

Kernel pointers are never predicted.  Where the kernel prints one inside a
message (a map pointer in a vmem panic, say) the model writes a placeholder
``<name>`` naming the trace object, and ``message_matches`` treats it as "any
hexadecimal number".

``attrs`` carries observations that are not the return value but can be
checked from outside: ``align`` (the guaranteed alignment: the observed
address offset must be a multiple of it), ``zeroed``, ``type`` (umem cookie
type), ``cookie_size``, ``coherent`` (user and kernel see the same pages).
``state`` is the map's counters after the step when the model was asked for
them.  ``note`` is prose for people and is never compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

KINDS = ("value", "null", "ok", "error", "panic", "hang")
TERMINAL_KINDS = ("panic", "hang")


@dataclass(slots=True)
class Result:
    kind: str
    value: int | None = None
    message: str | None = None
    warnings: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    state: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown result kind {self.kind!r}; expected one of {KINDS}")

    @property
    def terminal(self) -> bool:
        """A panic or a hang ends the trace."""
        return self.kind in TERMINAL_KINDS

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape: kind, then value/message/warnings when present."""
        out: dict[str, Any] = {"kind": self.kind}
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
        )

    def short(self) -> str:
        """One human-readable token, e.g. ``1100``, ``NULL``, ``panic: ...``."""
        if self.kind == "value":
            text = str(self.value)
        elif self.kind == "null":
            text = "NULL"
        elif self.kind == "ok":
            text = "ok"
        elif self.kind == "error":
            text = f"error {self.message or self.value}"
        elif self.kind == "panic":
            text = f"PANIC {self.message}"
        else:
            text = "hang"
        if self.attrs:
            text += " " + " ".join(f"{k}={_fmt(v)}" for k, v in sorted(self.attrs.items()))
        return text


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) and k_is_hexish(v):
        return hex(v)
    return str(v)


def k_is_hexish(v: int) -> bool:
    # cookie types (0x100, 0x200, 0x800) read better in hex
    return v in (0x100, 0x200, 0x400, 0x800)


def value(v: int, **attrs: Any) -> Result:
    return Result("value", value=v, attrs=attrs)


def null(**attrs: Any) -> Result:
    return Result("null", attrs=attrs)


def ok(**attrs: Any) -> Result:
    return Result("ok", attrs=attrs)


def error(errno_name: str, note: str | None = None) -> Result:
    return Result("error", message=errno_name, note=note)


def panic(message: str, warnings: tuple[str, ...] = ()) -> Result:
    return Result("panic", message=message, warnings=warnings)


def hang(note: str | None = None) -> Result:
    return Result("hang", note=note)


_PLACEHOLDER = re.compile(r"<[^<>\s]+>")


def message_pattern(predicted: str) -> re.Pattern[str]:
    """Compile a predicted message into a regex: ``<name>`` matches a hex pointer
    (or another placeholder, when a model is checked against a trace's expect)."""
    parts = _PLACEHOLDER.split(predicted)
    return re.compile(r"(?:[0-9a-fA-Fx]+|<[^<>\s]+>)".join(re.escape(p) for p in parts))


def message_matches(predicted: str | None, observed: str | None) -> bool:
    """True when an observed kernel message is the predicted one.

    The observed text may carry the kernel's own prefix (``panic[cpu0]/...: ``)
    or trailing context; the predicted text must appear in it.
    """
    if predicted is None or observed is None:
        return predicted == observed
    return message_pattern(predicted).search(observed) is not None
