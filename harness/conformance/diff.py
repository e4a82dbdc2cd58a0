"""`ddi-harness report diff PREVIOUS.json CURRENT.json`: what changed since the last run.

A nightly job is worth what it says in the morning: what broke, what got fixed, what changed
underneath.  Divergences are matched by trace, step and signature (the op and the field that
differs, not the values, which move with the allocator), never by position in the list, so a
new trace or a reordered corpus does not show as churn.  A divergence that went away because
its trace no longer ran is "no longer checked", not "fixed".  Merged shard reports (``report
merge``) have the same shape and diff the same way.

Exit status: 1 only when something new diverged; 0 otherwise (fixed, unchanged, or only
changes underneath); 2 for a file that is not a run.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# manifest keys whose change is news: what ran, on what, built from what
WATCHED = ("target", "model", "guest_kernel", "guest_kernel_package", "guest_kernels", "image_key", "gate_commit",
           "gate_dir", "accelerator", "accelerators", "harness_version", "seed", "fault", "destructive",
           "kmem_flags")


class DiffError(ValueError):
    """A file that is not a run.json; the message names it and the fix."""


@dataclass(frozen=True, order=True)
class Key:
    trace: str
    step: int
    op: str
    field: str

    def __str__(self) -> str:
        return f"{self.trace} step {self.step}: {self.op}: {self.field}"


@dataclass
class RunDiff:
    new: list[dict[str, Any]] = field(default_factory=list)          # diverges now, did not before
    fixed: list[dict[str, Any]] = field(default_factory=list)        # diverged before, its trace ran clean now
    still: list[dict[str, Any]] = field(default_factory=list)        # diverges in both
    unchecked: list[dict[str, Any]] = field(default_factory=list)    # diverged before, its trace did not run now
    departures_new: list[dict[str, Any]] = field(default_factory=list)
    departures_gone: list[dict[str, Any]] = field(default_factory=list)
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # manifest key -> (before, after)
    runs: tuple[dict[str, Any], dict[str, Any]] = ({}, {})           # steps, traces, divergences of each

    @property
    def exit_status(self) -> int:
        return 1 if self.new else 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["changed"] = {k: {"before": a, "after": b} for k, (a, b) in self.changed.items()}
        d["exit_status"] = self.exit_status
        return d


def load(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        doc = json.loads(p.read_bytes().decode("utf-8"))
        doc["manifest"], doc["traces"]
    except OSError as e:
        raise DiffError(f"{p}: cannot read it ({e.strerror}); give a run.json written by `ddi-harness run`") from None
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise DiffError(f"{p}: not a run.json; give the run.json that `ddi-harness run` or `report merge` "
                        "wrote") from None
    return doc


def _key(d: dict[str, Any], what: str) -> Key:
    text = d[what]
    return Key(d["trace"], int(d["step"]), d["call"].split("(", 1)[0], text.split(":", 1)[0])


def _ran(doc: dict[str, Any]) -> set[str]:
    return {t["name"] for t in doc["traces"] if not t.get("skipped")}


def _facts(doc: dict[str, Any]) -> dict[str, Any]:
    man = dict(doc["manifest"])
    shas = man.get("sources_sha256") or {}
    if shas:  # the illumos-gate target: which vmem.c, whatever tree it came from
        man["vmem.c"] = next((v for k, v in shas.items() if k.endswith("vmem.c")), None)
    return man


def diff(before: dict[str, Any], after: dict[str, Any]) -> RunDiff:
    """What changed from run ``before`` to run ``after`` (run.json documents)."""
    out = RunDiff()
    prev = {_key(d, "mismatch"): d for d in before.get("divergences", [])}
    now = {_key(d, "mismatch"): d for d in after.get("divergences", [])}
    ran_now = _ran(after)
    for k in sorted(now):
        (out.still if k in prev else out.new).append({"signature": str(k), **now[k]})
    for k in sorted(set(prev) - set(now)):
        (out.fixed if k.trace in ran_now else out.unchecked).append({"signature": str(k), **prev[k]})
    pdep = {_key(d, "departure"): d for d in before.get("departures", [])}
    ndep = {_key(d, "departure"): d for d in after.get("departures", [])}
    out.departures_new = [{"signature": str(k), **ndep[k]} for k in sorted(set(ndep) - set(pdep))]
    out.departures_gone = [{"signature": str(k), **pdep[k]} for k in sorted(set(pdep) - set(ndep))
                           if k.trace in ran_now]
    a, b = _facts(before), _facts(after)
    for key in (*WATCHED, "vmem.c"):
        if a.get(key) != b.get(key) and (a.get(key) is not None or b.get(key) is not None):
            out.changed[key] = (a.get(key), b.get(key))
    out.runs = tuple({"traces run": len(_ran(d)), "steps": d.get("steps", 0),
                      "divergences": len(d.get("divergences", [])), "started": d["manifest"].get("started")}
                     for d in (before, after))
    return out


def _line(d: dict[str, Any]) -> str:
    return f"{d['trace']} step {d['step']}: {d['call']}: {d['mismatch'] if 'mismatch' in d else d['departure']}"


def text(r: RunDiff, markdown: bool = False) -> str:
    """The diff for a person: a terminal (``markdown=False``) or a CI job summary."""
    b, a = r.runs
    head = ("NEW DIVERGENCES" if r.new else "no new divergence") + \
        f": {len(r.new)} new, {len(r.fixed)} fixed, {len(r.still)} still there"
    if r.unchecked:
        head += f", {len(r.unchecked)} no longer checked"
    out: list[str] = []
    if markdown:
        icon = ":x:" if r.new else ":white_check_mark:"
        out += ["## ddi-harness: what changed since the last run", "", f"{icon} **{head}**", "",
                "| | before | now |", "|---|---|---|"]
        for k in ("traces run", "steps", "divergences", "started"):
            out.append(f"| {k} | {b.get(k)} | {a.get(k)} |")
        for k, (x, y) in r.changed.items():
            out.append(f"| **{k}** changed | `{x}` | `{y}` |")
    else:
        out += [head, f"  runs: {b.get('traces run')} -> {a.get('traces run')} traces, {b.get('steps')} -> "
                f"{a.get('steps')} steps, {b.get('divergences')} -> {a.get('divergences')} divergences"]
        for k, (x, y) in r.changed.items():
            out.append(f"  changed underneath: {k}: {x} -> {y}")
    sections = [("New divergences", r.new), ("Fixed", r.fixed), ("Still diverging", r.still),
                ("No longer checked (the trace did not run)", r.unchecked),
                ("Departures from the manual pages that appeared", r.departures_new),
                ("Departures that went", r.departures_gone)]
    for title, items in sections:
        if not items:
            continue
        if markdown:
            out += ["", f"### {title} ({len(items)})", ""]
            out += [f"- `{_line(d)}`" for d in items[:50]]
            if len(items) > 50:
                out.append(f"- ... and {len(items) - 50} more (see diff.json)")
        else:
            out.append(f"{title} ({len(items)}):")
            out += [f"  {_line(d)}" for d in items[:50]]
    return "\n".join(out) + "\n"


def diff_command(args: argparse.Namespace) -> int:
    if len(args.runs) != 2:
        print(f"error: report diff takes two run.json files, PREVIOUS and CURRENT (got {len(args.runs)})",
              file=sys.stderr)
        return 2
    try:
        r = diff(load(args.runs[0]), load(args.runs[1]))
    except DiffError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r.to_json(), indent=1))
    else:
        sys.stdout.write(text(r, markdown=args.markdown))
    return r.exit_status
