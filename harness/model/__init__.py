"""Reference models: pure Python, no I/O.  ``build(name, config)`` makes one.

Kept free of imports at package level: the trace loader imports
harness.model.outcome, and the models import the trace loader.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.model.base import Model, ModelConfig

MODELS = {
    "illumos": ("harness.model.illumos", "IllumosModel"),
    "documented": ("harness.model.documented", "DocumentedModel"),
    "linux": ("harness.model.linux", "LinuxModel"),
}


def build(name: str, config: "ModelConfig | None" = None) -> "Model":
    from harness.model.base import ModelConfig

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    module, cls = MODELS[name]
    return getattr(importlib.import_module(module), cls)(config or ModelConfig())
