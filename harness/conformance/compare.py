"""Comparing results: a step's ``expect`` against a model, and a model against a kernel.

One rule set for both.  Fields a prediction does not give are not checked.
``align`` is a guarantee: the observed ``offset`` must be a multiple of it.
Predicted messages and warnings may hold ``<name>`` placeholders for kernel
pointers; observed warnings may include more lines than predicted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.model.outcome import message_matches
from harness.trace import Expect, Result, ResultKind


@dataclass(frozen=True)
class Mismatch:
    field: str
    predicted: Any
    observed: Any

    def __str__(self) -> str:
        return f"{self.field}: predicted {self.predicted!r}, observed {self.observed!r}"


def check_expect(expect: Expect, result: Result) -> list[Mismatch]:
    """Where a model's (or kernel's) result breaks a trace's ``expect``."""
    predicted = Result(
        kind=expect.kind or result.kind,
        value=expect.value,
        message=expect.message,
        warnings=expect.warnings or (),
        attrs=expect.attrs or {},
        state=expect.state,
    )
    out = compare(predicted, result, strict_warnings=expect.warnings is not None)
    if expect.kind is None:
        out = [m for m in out if m.field != "kind"]
    return out


def compare(predicted: Result, observed: Result, strict_warnings: bool = True) -> list[Mismatch]:
    """Every field where an observation departs from a prediction.

    A prediction of ``undefined`` (outside the model's domain) admits any observation.
    """
    out: list[Mismatch] = []
    if predicted.kind is ResultKind.UNDEFINED:
        return out
    if predicted.kind != observed.kind:
        return [Mismatch("kind", predicted.short(), observed.short())]
    if predicted.value is not None and predicted.value != observed.value:
        out.append(Mismatch("value", predicted.value, observed.value))
    if predicted.message is not None and not message_matches(predicted.message, observed.message):
        out.append(Mismatch("message", predicted.message, observed.message))
    for key, want in predicted.attrs.items():
        if key == "align":
            off = observed.attrs.get("offset")
            if off is not None and off % want:
                out.append(Mismatch("align", f"offset multiple of {want}", f"offset {off}"))
            continue
        if key in observed.attrs and observed.attrs[key] != want:
            out.append(Mismatch(key, want, observed.attrs[key]))
    if strict_warnings:
        for w in predicted.warnings:
            if not any(message_matches(w, o) for o in observed.warnings):
                out.append(Mismatch("warnings", w, list(observed.warnings)))
    if predicted.state and observed.state is not None:
        for key, want in predicted.state.items():
            if key in observed.state and observed.state[key] != want:
                out.append(Mismatch(f"state.{key}", want, observed.state[key]))
    if predicted.layout is not None and observed.layout is not None:
        # the whole map: two maps can agree on every value and counter and still differ here
        where = predicted.layout.difference(observed.layout)
        if where is not None:
            out.append(Mismatch("layout", *where))
    return out
