"""The settings of a run, typed: what `ddi-harness run` was asked to do.

``RunOptions`` replaces argparse's Namespace everywhere below ``cli.py``: the
CLI builds one, ``replay`` builds one from a recorded manifest, ``--resume``
reads one back from ``start.json`` (which stores exactly ``to_json()``), and
the pytest plugin, bench and fuzz build their own.  It is frozen: a run's
settings do not change under it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["RunOptions"]


@dataclass(frozen=True)
class RunOptions:
    target: str = "linux"
    traces: tuple[str, ...] = ()          # trace files/directories; empty: the bundled corpus
    match: str | None = None              # only traces whose name contains this
    out: str = "out"
    json: str | None = None               # default OUT/run.json
    junit: str | None = None              # default OUT/junit.xml
    html: str | None = None               # default OUT/report.html
    destructive: bool = False
    budget_ms: int = 2000                 # per-op budget before a step is a hang
    accel: str = "auto"                   # auto | kvm | tcg
    generate: int = 0                     # run N generated traces instead of the corpus
    seed: int = 1
    profile: str | None = None            # generator profile (basic | corners); None: the target's
    regressions: str | None = "regressions"  # kept regression traces, replayed first; None: none
    kmem_flags: int = 0                   # illumos: a debug-allocator variant of the base image
    fault: str = ""                       # linux: faults the driver injects on purpose
    jobs: int = 1
    shard: str | None = None              # I/N
    run_budget: float | None = None       # seconds for the whole run
    shrink: bool = True
    gate: str | None = None               # illumos-gate: the source tree (else $DDIH_ILLUMOS_GATE)
    gate_debug: bool = False              # illumos-gate: build with DEBUG (ASSERTs live)
    layout: bool = True                   # compare each resource map's whole layout after every step
    cold: bool = False                    # boot cold: do not start from the ready guest saved in the cache

    def replace(self, **changes: Any) -> "RunOptions":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["traces"] = list(self.traces)
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunOptions":
        """Read back ``to_json()``; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        if "traces" in kw:
            kw["traces"] = tuple(kw["traces"] or ())
        return cls(**kw)

    def problems(self) -> list[str]:
        """What is wrong with these options, each with its fix ("" when nothing)."""
        out = []
        if isinstance(self.budget_ms, bool) or not isinstance(self.budget_ms, int) or \
                not 1 <= self.budget_ms <= 86_400_000:
            out.append(f"--budget-ms {self.budget_ms}: an op needs a budget of 1 to 86400000 ms; "
                       "give e.g. --budget-ms 2000")
        if self.jobs < 1:
            out.append(f"--jobs {self.jobs}: at least one guest runs; give --jobs 1 or more")
        if self.generate < 0:
            out.append(f"--generate {self.generate}: give a positive number of traces")
        if self.run_budget is not None and not self.run_budget > 0:
            out.append(f"--run-budget {self.run_budget:g}: a run needs time to test anything; give seconds > 0")
        return out

    @property
    def fault_names(self) -> tuple[str, ...]:
        return tuple(f.strip() for f in self.fault.split(",") if f.strip())
