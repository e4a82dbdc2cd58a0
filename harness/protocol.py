"""The line protocol spoken to guest/ddictl (kmod/README.md, "ddictl line protocol").

The harness never talks ioctl itself.  It turns each trace step into one text
line, ``OP key=value ...``, sends it to ddictl in the guest, and reads back one
result line per op::

    kind=<value|null|ok|error|panic|hang> [value=N] [errno=NAME] [offset=N]
    [zeroed=0|1] [type=0xN] [cookie_size=N] [coherent=0|1] [avail=N] [total=N]
    [mem_total=N mem_inuse=N alloc=N free=N fail=N wait=N contains=N]

``encode`` and ``decode`` are pure functions; both reject anything they cannot
represent exactly (``ProtocolError``), so a garbled console line never turns
into a plausible-looking result.

Encoding rules: every argument of the op (harness/ops.py) is written, in the
op's argument order; flags as ``0x``-hex numbers (``Step.flags``); names as
is; ``None`` as ``-``; bools as ``0``/``1``; integers in decimal (a negative
``off`` as a signed decimal).

Decoding rules: ``errno`` becomes ``Result.message``; ``offset``, ``zeroed``,
``type``, ``cookie_size`` and ``coherent`` become ``Result.attrs`` (``offset``
keeps its name: the comparator checks it against the model's ``align``;
``zeroed``/``coherent`` are bools); ``avail`` and ``total`` together, and the
seven vmem kstat counters of an rmap arena (``VMEM_KEYS``, reported by the
illumos port only, all seven together) become ``Result.state``; a line may
carry either group or both.
"""

from __future__ import annotations

import re
from typing import Any

from harness.ops import FLAG_TABLES, U64
from harness.trace import KINDS, Layout, Result, ResultKind, Step

__all__ = ["ProtocolError", "encode", "decode", "format_result", "CONTROL_RESET", "CONTROL_LAYOUT_ON",
           "CONTROL_LAYOUT_OFF", "control_budget", "RESULT_KEYS", "VMEM_KEYS"]

CONTROL_RESET = "reset"
# The vmem kstat counters of an rmap arena (illumos port), in ddictl's order.
VMEM_KEYS = ("mem_total", "mem_inuse", "alloc", "free", "fail", "wait", "contains")
# Result keys in the order ddictl prints them.
RESULT_KEYS = ("kind", "value", "errno", "offset", "zeroed", "type", "cookie_size",
               "coherent", "avail", "total") + VMEM_KEYS + ("layout",)
# The control lines that turn the per-step layout of resource maps on and off.
CONTROL_LAYOUT_ON = "layout=on"
CONTROL_LAYOUT_OFF = "layout=off"

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_ERRNO_RE = re.compile(r"^E[A-Z0-9]+$")
_DEC_RE = re.compile(r"^(0|[1-9][0-9]*)$")
_HEX_RE = re.compile(r"^0x[0-9a-fA-F]+$")


class ProtocolError(ValueError):
    """A step that cannot be encoded, or a line that is not a valid result."""


def control_budget(ms: int) -> str:
    """The control line that sets ddictl's per-op time budget."""
    if isinstance(ms, bool) or not isinstance(ms, int) or not 1 <= ms <= 86_400_000:
        raise ProtocolError(f"budget_ms must be an integer in 1..86400000, got {ms!r}")
    return f"budget_ms={ms}"


# ------------------------------------------------------------------ encode


def encode(step: Step) -> str:
    """One ddictl input line for a step, e.g. ``rmalloc map=m size=150``."""
    spec = step.spec
    parts = [step.op]
    for arg in spec.args:
        v = step.args.get(arg.name, arg.default)
        parts.append(f"{arg.name}={_encode_arg(step, arg.name, arg.kind, v)}")
    return " ".join(parts)


def _encode_arg(step: Step, name: str, kind: str, v: Any) -> str:
    where = f"{step.op} argument {name!r}"
    if kind == "flags":
        table = FLAG_TABLES[step.spec.arg_map[name].flag_table or ""]
        names = () if v is None else v
        if isinstance(names, str):
            names = tuple(n.strip() for n in names.split("|") if n.strip())
        bits = 0
        for n in names:
            if n not in table:
                raise ProtocolError(f"{where}: unknown flag {n!r}")
            bits |= table[n]
        return hex(bits)
    if v is None:
        return "-"
    if kind == "name":
        if not isinstance(v, str) or not _NAME_RE.match(v):
            raise ProtocolError(f"{where}: {v!r} is not an object name")
        return v
    if kind == "bool":
        if not isinstance(v, bool):
            raise ProtocolError(f"{where}: {v!r} is not a bool")
        return "1" if v else "0"
    if kind == "uint":
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < U64:
            raise ProtocolError(f"{where}: {v!r} is not an unsigned 64-bit integer")
        return str(v)
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int) or not -(1 << 63) <= v < (1 << 63):
            raise ProtocolError(f"{where}: {v!r} is not a signed 64-bit integer")
        return str(v)
    if kind == "choice":
        if not isinstance(v, str) or not v or any(c.isspace() or c == "=" for c in v):
            raise ProtocolError(f"{where}: {v!r} cannot be sent")
        return v
    raise ProtocolError(f"{where}: unknown argument kind {kind!r}")


# ------------------------------------------------------------------ decode


def _uint(key: str, text: str, line: str) -> int:
    if text.isascii() and text.isdigit() and (text[0] != "0" or len(text) == 1):  # _DEC_RE, faster
        v = int(text, 10)
    elif _HEX_RE.match(text):
        v = int(text, 16)
    else:
        raise ProtocolError(f"{key}={text!r} is not an unsigned integer in {line!r}")
    if v >= U64:
        raise ProtocolError(f"{key}={text} exceeds 64 bits in {line!r}")
    return v


def _bit(key: str, text: str, line: str) -> bool:
    if text not in ("0", "1"):
        raise ProtocolError(f"{key}={text!r} must be 0 or 1 in {line!r}")
    return text == "1"


def decode(line: str) -> Result:
    """Parse one ddictl result line into a Result.  Raises ProtocolError."""
    if not isinstance(line, str):
        raise ProtocolError(f"a result line must be text, got {type(line).__name__}")
    text = line.strip()
    if not text:
        raise ProtocolError("empty result line")
    fields: dict[str, str] = {}
    for tok in text.split():
        key, eq, val = tok.partition("=")
        if not eq or not key or not val:
            raise ProtocolError(f"token {tok!r} is not key=value in {line!r}")
        if key not in RESULT_KEYS:
            raise ProtocolError(f"unknown result key {key!r} in {line!r}")
        if key in fields:
            raise ProtocolError(f"duplicate result key {key!r} in {line!r}")
        fields[key] = val
    kind = fields.get("kind")
    if kind is None:
        raise ProtocolError(f"no kind= in {line!r}")
    if kind not in KINDS:
        raise ProtocolError(f"unknown kind {kind!r} in {line!r}")

    value: int | None = None
    if "value" in fields:
        if kind != "value":
            raise ProtocolError(f"value= with kind={kind} in {line!r}")
        value = _uint("value", fields["value"], line)
    # kind=value without value= is legal: a routine returned non-NULL but the
    # driver cannot observe the number (the kmem cache on illumos)

    message: str | None = None
    if "errno" in fields:
        if kind != "error":
            raise ProtocolError(f"errno= with kind={kind} in {line!r}")
        if not _ERRNO_RE.match(fields["errno"]):
            raise ProtocolError(f"errno={fields['errno']!r} is not an errno name in {line!r}")
        message = fields["errno"]
    elif kind == "error":
        raise ProtocolError(f"kind=error without errno= in {line!r}")

    attrs: dict[str, Any] = {}
    if "offset" in fields:
        attrs["offset"] = _uint("offset", fields["offset"], line)
    if "zeroed" in fields:
        attrs["zeroed"] = _bit("zeroed", fields["zeroed"], line)
    if "type" in fields:
        if not _HEX_RE.match(fields["type"]) and not _DEC_RE.match(fields["type"]):
            raise ProtocolError(f"type={fields['type']!r} is not a number in {line!r}")
        attrs["type"] = _uint("type", fields["type"], line)
    if "cookie_size" in fields:
        attrs["cookie_size"] = _uint("cookie_size", fields["cookie_size"], line)
    if "coherent" in fields:
        attrs["coherent"] = _bit("coherent", fields["coherent"], line)

    state: dict[str, int] | None = None
    if ("avail" in fields) != ("total" in fields):
        raise ProtocolError(f"avail= and total= must come together in {line!r}")
    if "avail" in fields:
        state = {"avail": _uint("avail", fields["avail"], line),
                 "total": _uint("total", fields["total"], line)}
    present = [k for k in VMEM_KEYS if k in fields]
    if present and len(present) != len(VMEM_KEYS):
        missing = ", ".join(k for k in VMEM_KEYS if k not in fields)
        raise ProtocolError(f"the vmem counters must come together (missing {missing}) in {line!r}")
    if present:
        state = dict(state or {})
        for k in VMEM_KEYS:
            state[k] = _uint(k, fields[k], line)

    layout = None
    if "layout" in fields:
        try:
            layout = Layout.from_wire(fields["layout"])
        except ValueError as e:
            raise ProtocolError(f"{e} in {line!r}") from None

    return Result(kind=kind, value=value, message=message, attrs=attrs, state=state, layout=layout)


def format_result(result: Result) -> str:
    """The ddictl line for a Result (the inverse of ``decode``; used by tests and fakes)."""
    parts = [f"kind={result.kind}"]
    if result.value is not None:
        parts.append(f"value={result.value}")
    if result.kind is ResultKind.ERROR and result.message is not None:
        parts.append(f"errno={result.message}")
    a = result.attrs
    if "offset" in a:
        parts.append(f"offset={int(a['offset'])}")
    if "zeroed" in a:
        parts.append(f"zeroed={int(bool(a['zeroed']))}")
    if "type" in a:
        parts.append(f"type={int(a['type']):#x}")
    if "cookie_size" in a:
        parts.append(f"cookie_size={int(a['cookie_size'])}")
    if "coherent" in a:
        parts.append(f"coherent={int(bool(a['coherent']))}")
    st = result.state
    if st is not None:
        if "avail" in st or "total" in st:
            parts.append(f"avail={st['avail']} total={st['total']}")
        if any(k in st for k in VMEM_KEYS):
            parts.extend(f"{k}={st[k]}" for k in VMEM_KEYS)
    if result.layout is not None:
        parts.append(f"layout={result.layout.wire()}")
    return " ".join(parts)
