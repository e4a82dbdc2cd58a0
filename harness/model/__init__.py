"""Reference models: pure Python, no I/O.  ``build(name, config)`` makes one.

The one registry of models: their names are written here and nowhere else.
Kept free of imports at package level, so naming a model loads none.
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
MODEL_NAMES = tuple(MODELS)


def build(name: str, config: "ModelConfig | None" = None) -> "Model":
    from harness.model.base import ModelConfig

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    module, cls = MODELS[name]
    return getattr(importlib.import_module(module), cls)(config or ModelConfig())
