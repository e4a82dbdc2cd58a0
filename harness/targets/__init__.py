"""The one registry of targets: every target name is written here and nowhere else.

Adding a target is one class in one file (a ``harness.targets.base.Target``
with a ``from_options`` constructor) and one line in ``TARGETS``.  Everything
that lets a user pick a target -- the CLI's choices, run, replay, resume, the
pytest plugin, doctor, bench, fuzz -- reads this table, and everything that
builds one calls ``make_target``, which also refuses settings the target
cannot honour (a fault it cannot inject, a kmem_flags variant it cannot boot).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from harness.options import RunOptions
from harness.targets.base import TargetError

if TYPE_CHECKING:
    from harness.targets.base import Target

__all__ = ["TargetInfo", "TARGETS", "TARGET_NAMES", "target_info", "check_options", "effective", "make_target", "TargetError"]


@dataclass(frozen=True)
class TargetInfo:
    name: str
    cls: str            # "module:Class", imported only when the target is made
    model: str          # the model that predicts it (harness.model.MODELS)
    summary: str
    kmem_flags: bool = False  # boots a kmem_flags variant (--kmem-flags)
    guards: bool = True       # a driver that refuses misuse unless destructive; False: raw routines

    def load(self) -> "type[Target]":
        module, cls = self.cls.split(":")
        return getattr(importlib.import_module(module), cls)


TARGETS: dict[str, TargetInfo] = {t.name: t for t in (
    TargetInfo("linux", "harness.targets.linux:LinuxTarget", "linux",
               "a Debian kernel assembled offline from Debian packages, with the Linux port of the driver"),
    TargetInfo("openindiana", "harness.targets.illumos:IllumosTarget", "illumos",
               "OpenIndiana Hipster (illumos) from its cloud image", kmem_flags=True),
    TargetInfo("omnios", "harness.targets.illumos:IllumosTarget", "illumos",
               "OmniOS CE (illumos) from its cloud image", kmem_flags=True),
    TargetInfo("illumos-gate", "harness.targets.gate:GateTarget", "illumos",
               "no guest: the real illumos vmem.c + rmap.c compiled in user space with our shim "
               "(resource maps only; --gate DIR or $DDIH_ILLUMOS_GATE)", guards=False),
)}
TARGET_NAMES = tuple(TARGETS)


def target_info(name: str) -> TargetInfo:
    try:
        return TARGETS[name]
    except KeyError:
        raise TargetError(f"unknown target {name!r}: choose one of {', '.join(TARGET_NAMES)}") from None


def check_options(name: str, options: RunOptions) -> "type[Target]":
    """The target's class, after refusing settings it cannot honour (TargetError says which)."""
    info = target_info(name)
    cls = info.load()
    unknown = [f for f in options.fault_names if f not in cls.faults]
    if unknown:
        have = ", ".join(sorted(cls.faults)) if cls.faults else "none"
        raise TargetError(f"--fault {','.join(unknown)}: the {name} driver cannot inject that "
                          f"(faults it can inject: {have})")
    if options.kmem_flags and not info.kmem_flags:
        raise TargetError(f"--kmem-flags {options.kmem_flags:#x}: the {name} target has no kmem_flags "
                          "(it is an illumos setting: use --target openindiana or omnios)")
    return cls


def effective(options: RunOptions) -> RunOptions:
    """The options as the target runs them: a target without guards (the routines called raw,
    where a panic costs one runner process) always runs in destructive mode."""
    if not target_info(options.target).guards and not options.destructive:
        return options.replace(destructive=True)
    return options


def make_target(name: str, options: RunOptions, workdir: Path, *, log: Callable[[str], None] = lambda s: None,
                progress=None) -> "Target":
    """A target ready for ``prepare()``, configured from ``options``; TargetError for settings it
    cannot honour."""
    cls = check_options(name, options)
    return cls.from_options(name, options, Path(workdir), log=log, progress=progress)
