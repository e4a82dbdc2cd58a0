"""What every reference model provides, and the loop that runs a trace through one.

A model is a pure-Python state machine: ``step(step) -> Result``.  It never
does I/O and never invents kernel addresses.  Models are built per trace
(fresh kernel state) from a ModelConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from harness.trace import Layout, Step, Trace
from harness.model.outcome import Result


@dataclass(frozen=True)
class ModelConfig:
    """Kernel and driver settings that change predicted results.

    kmem_flags   illumos kmem_flags (0 on non-DEBUG kernels, 0xf on DEBUG)
    debug        a DEBUG kernel (extra warnings and assertions)
    destructive  the driver passes misuse through to the kernel.  False
                 models the driver's guards: requests that would panic (or
                 corrupt the heap) are refused with an errno instead.
    mem_limit    bytes of kernel memory a single allocation can get; larger
                 requests fail (NOSLEEP) or hang (SLEEP)
    """

    kmem_flags: int = 0
    debug: bool = False
    destructive: bool = True
    mem_limit: int = 256 << 20

    def with_trace(self, trace: Trace) -> "ModelConfig":
        """Apply a trace's ``config:`` block."""
        if not trace.config:
            return self
        fields: dict[str, Any] = dict(self.__dict__)
        fields.update(trace.config)
        return ModelConfig(**fields)


class Model(Protocol):
    name: str

    def step(self, step: Step) -> Result: ...

    def state(self, map_name: str) -> dict[str, int] | None: ...

    def layout(self, map_name: str) -> Layout | None:
        """The map's whole layout (harness.trace.Layout), or None where the model has none."""
        ...


ModelFactory = Callable[[ModelConfig], Model]


@dataclass
class StepRun:
    index: int  # 1-based
    step: Step
    result: Result


@dataclass
class TraceRun:
    trace: Trace
    model: str
    steps: list[StepRun] = field(default_factory=list)

    @property
    def end(self) -> str:
        """How the trace ended: completed, panic or hang."""
        if self.steps and self.steps[-1].result.terminal:
            return self.steps[-1].result.kind
        return "completed"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.trace.name,
            "model": self.model,
            "steps": [{"op": s.step.op, "result": s.result.to_json()} for s in self.steps],
            "end": self.end,
        }


def run_trace(model: Model, trace: Trace, with_state: bool = False, with_layout: bool = False) -> TraceRun:
    """Run every step in order; stop after a panic or a hang.  ``with_state`` / ``with_layout``
    attach the map's counters / whole layout after each resource-map step."""
    run = TraceRun(trace=trace, model=model.name)
    for i, step in enumerate(trace.steps, 1):
        result = model.step(step)
        if with_state and "map" in step.args and result.state is None:
            result.state = model.state(step.args["map"])
        if with_layout and "map" in step.args and result.layout is None:
            result.layout = model.layout(step.args["map"])
        run.steps.append(StepRun(i, step, result))
        if result.terminal:
            break
    return run
