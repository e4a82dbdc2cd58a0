"""The op names of harness.ops.OPS are exactly the ops guest/ddictl.c accepts.

ddictl maps an op name to its handler in dispatch(), a chain of
``strcmp(op, "NAME") == 0`` tests; any other name is a protocol error
("unknown op").  The test parses that chain out of the C source, so an op
added to (or removed from) one side only fails here rather than in a guest.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.ops import OPS

ROOT = Path(__file__).resolve().parents[2]
DDICTL = ROOT / "guest" / "ddictl.c"

# Control lines of the line protocol: main() handles them before dispatch()
# and prints no result line for them, so they are not ops and are not in
# OPS.  Listed here so that they are excluded even if they ever move into
# dispatch(), and so that OPS never takes one of their names.
CONTROL_WORDS = frozenset({
    "reset",      # `reset': interrupt waiters, close and reopen the device
    "budget_ms",  # `budget_ms=N': the per-op time budget
    "layout",     # `layout=on|off': each resource map's whole layout after every step
})

_DISPATCH = re.compile(r"^dispatch\(struct line \*ln\)\n\{\n(?P<body>.*?)^\}",
                       re.MULTILINE | re.DOTALL)
_OP_TEST = re.compile(r'strcmp\(\s*op\s*,\s*"(?P<name>[A-Za-z0-9_]+)"\s*\)\s*==\s*0')


def ddictl_ops(source: str) -> set[str]:
    """The op names dispatch() in ddictl's source accepts, control words excluded."""
    m = _DISPATCH.search(source)
    assert m is not None, "dispatch() not found in guest/ddictl.c: update the parser"
    return {t["name"] for t in _OP_TEST.finditer(m["body"])} - CONTROL_WORDS


def test_parser_finds_the_op_table() -> None:
    ops = ddictl_ops(DDICTL.read_text())
    assert len(ops) > 10, f"parsed only {sorted(ops)} from dispatch(): update the parser"
    assert {"rmalloc", "umem_alloc", "kmem_free"} <= ops


def test_parser_sees_an_added_op_and_a_removed_one() -> None:
    """The check has teeth: an edit of dispatch() changes the parsed set."""
    text = DDICTL.read_text()
    added, n = re.subn(r'(\tif \(strcmp\(op, "rmallocmap"\) == 0\))',
                       '\tif (strcmp(op, "new_op") == 0)\n\t\top_new(ln);\n\telse\\1', text, count=1)
    assert n == 1
    assert ddictl_ops(added) == ddictl_ops(text) | {"new_op"}
    removed, n = re.subn(r'\telse if \(strcmp\(op, "kmem_zalloc"\) == 0\)\n[^\n]*\n', "", text, count=1)
    assert n == 1
    assert ddictl_ops(removed) == ddictl_ops(text) - {"kmem_zalloc"}


def test_ops_match_ddictl() -> None:
    ours = set(OPS)
    theirs = ddictl_ops(DDICTL.read_text())
    only_ops = sorted(ours - theirs)
    only_ddictl = sorted(theirs - ours)
    assert not only_ops, (f"ops in harness/ops.py OPS that guest/ddictl.c dispatch() does not "
                          f"accept (it would answer 'unknown op'): {only_ops}")
    assert not only_ddictl, (f"ops that guest/ddictl.c dispatch() accepts but harness/ops.py OPS "
                             f"lacks (no trace can use them): {only_ddictl}")


def test_control_words_are_not_ops() -> None:
    assert not CONTROL_WORDS & set(OPS), "a control word of ddictl is also an op name"
    text = (DDICTL.parent / "lineproto.h").read_text()
    # main() really treats them as control lines (else this list is stale)
    assert 'strcmp(ln->op, "reset") == 0' in text
    assert '"budget_ms="' in text
