"""Where the sources ddi-harness builds at run time live: the checkout, or the installed package.

``kmod/`` (the drivers, the illumos-gate shim), ``guest/`` (ddictl, ddifuzz, libddih),
``images/`` (the image manifests) and ``examples/`` stay at the top of the repository, where
DESIGN.md puts them; pyproject.toml maps them into the wheel as ``harness/sources/<name>``.
Running from a checkout (in place, or an editable install) uses the top-level directories, so
an edit is seen at once; an installed wheel uses its own copy, from any directory.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent
_TOP = _PKG.parent


def source(name: str) -> Path:
    """The directory ``name`` (kmod, guest, images or examples)."""
    top = _TOP / name
    if (_TOP / "pyproject.toml").is_file() and top.is_dir():
        return top
    return _PKG / "sources" / name


KMOD = source("kmod")
GUEST = source("guest")
LIBDDIH = GUEST / "libddih"
IMAGES = source("images")
EXAMPLES = source("examples")
