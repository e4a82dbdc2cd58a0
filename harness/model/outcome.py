"""Result constructors for the models, and how a predicted message matches the kernel's.

The result vocabulary itself (``Result``, ``ResultKind``) lives at the bottom
of the package in ``harness.trace``; it is re-exported here for the models.

Kernel pointers are never predicted.  Where the kernel prints one inside a
message (a map pointer in a vmem panic, say) the model writes a placeholder
``<name>`` naming the trace object, and ``message_matches`` treats it as "any
hexadecimal number".
"""

from __future__ import annotations

import re
from typing import Any

from harness.trace import KINDS, TERMINAL_KINDS, Result, ResultKind

__all__ = ["KINDS", "TERMINAL_KINDS", "Result", "ResultKind", "value", "null", "ok", "error", "panic",
           "hang", "undefined", "message_pattern", "message_matches"]


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


def undefined(why: str) -> Result:
    """The model cannot predict this step (``why`` says which state it does not follow)."""
    return Result(ResultKind.UNDEFINED, note=why)


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
