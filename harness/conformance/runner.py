"""Run traces on a live target, step by step against the target's model.

Every trace runs on fresh driver state (its own ddictl process and open
file).  Each observed result is compared with the model's prediction; a
mismatch is a divergence.  Results are appended to ``results.jsonl`` as they
come, so a killed run still leaves a readable partial record; the JSON and
JUnit reports are written at the end.
"""

from __future__ import annotations

import json
import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable
from xml.etree import ElementTree as ET

from harness import __version__
from harness.conformance.compare import Mismatch, check_expect, compare
from harness.model import build
from harness.model.base import ModelConfig
from harness.targets.base import Target, UnloadResult
from harness.trace import Result, ResultKind, Trace


@dataclass
class StepRecord:
    index: int
    op: str
    call: str
    predicted: dict[str, Any]
    observed: dict[str, Any] | None
    mismatches: list[str] = field(default_factory=list)
    expect_failures: list[str] = field(default_factory=list)
    documented: dict[str, Any] | None = None  # what the manual pages allow here
    departures: list[str] = field(default_factory=list)  # observed result outside that envelope

    def to_dict(self) -> dict[str, Any]:
        # dataclasses.asdict deep-copies every nested dict: too slow per step
        return dict(self.__dict__)


@dataclass
class TraceRecord:
    name: str
    source: str
    seconds: float
    steps: list[StepRecord] = field(default_factory=list)
    end: str = "completed"
    skipped: str | None = None
    definition: dict[str, Any] | None = None  # the trace itself, so a run can be replayed

    def to_dict(self, steps: bool = True) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["steps"] = [s.to_dict() for s in self.steps] if steps else None
        return d

    @property
    def first_divergence(self) -> StepRecord | None:
        return next((s for s in self.steps if s.mismatches or s.expect_failures), None)


@dataclass
class RunSummary:
    traces: list[TraceRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def divergences(self) -> list[dict[str, Any]]:
        out = []
        for t in self.traces:
            for s in t.steps:
                for m in s.mismatches + s.expect_failures:
                    out.append({"trace": t.name, "step": s.index, "call": s.call, "mismatch": m})
        return out

    @property
    def steps(self) -> int:
        return sum(len(t.steps) for t in self.traces)

    @property
    def departures(self) -> list[dict[str, Any]]:
        """Contract departures: known when the exact model predicted them too."""
        out = []
        for t in self.traces:
            for s in t.steps:
                for d in s.departures:
                    out.append({"trace": t.name, "step": s.index, "call": s.call, "departure": d,
                                "known": not s.mismatches})
        return out


class Sink:
    """results.jsonl, appended line by line; shared safely by parallel guests."""

    def __init__(self, out_dir: Path | None, append: bool = False) -> None:
        self.lock = threading.Lock()
        self.file = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / "results.jsonl"
            if append and path.exists():
                _drop_torn_tail(path)
            self.file = open(path, "a" if append else "w", buffering=1)

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        if self.file:
            line = json.dumps({"type": kind, **data}) + "\n"
            with self.lock:
                self.file.write(line)

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None


def run_conformance(target: Target, traces: list[Trace], *, destructive: bool = False,
                    budget_ms: int = 2000, out_dir: Path | None = None,
                    on_trace: Callable[[TraceRecord], None] = lambda t: None,
                    run_budget_s: float | None = None, done: dict[str, TraceRecord] | None = None,
                    append: bool = False, sink: Sink | None = None) -> RunSummary:
    """Run every trace; results go to ``out_dir/results.jsonl`` step by step as they come.

    ``done`` holds traces a resumed run already finished (they are not run
    again); ``run_budget_s`` bounds the whole run: traces not started in time
    are recorded as skipped, so a nightly run always ends and says why.
    """
    summary = RunSummary()
    own_sink = sink is None
    sink = sink or Sink(out_dir, append)
    emit = sink.emit
    t_run = time.monotonic()

    def skip_reason(trace: Trace) -> str | None:
        pinned = trace.config.get("destructive")
        if run_budget_s is not None and time.monotonic() - t_run > run_budget_s:
            return f"run budget of {run_budget_s:.0f} s exhausted"
        other = sorted({s.spec.family for s in trace.steps} - target.families)
        if other:
            return f"the {target.name} target does not run {', '.join(other)} ops"
        debug = bool(trace.config.get("debug", False))
        if target.debug_kernel is not None and debug != target.debug_kernel:
            return ("written for a DEBUG kernel" if debug else "written for a non-DEBUG kernel") + \
                f" (the {target.name} kernel is {'' if target.debug_kernel else 'not '}one)"
        if trace.destructive and not destructive:
            return "destructive (use --destructive)"
        if pinned is not None and pinned != destructive:
            return f"needs the driver with destructive={int(pinned)}"
        return None

    def finish(rec: TraceRecord, trace: Trace) -> None:
        rec.definition = trace.to_yaml_dict()
        records[trace.name] = rec
        emit("trace", rec.to_dict(steps=False))  # its steps went out as "step" lines
        on_trace(rec)

    records: dict[str, TraceRecord] = dict(done or {})
    try:
        todo = []
        for trace in traces:
            if trace.name in records:
                continue
            why = skip_reason(trace)
            if why:
                finish(TraceRecord(trace.name, trace.source, 0.0, skipped=why), trace)
            else:
                todo.append(trace)
        # stream many traces per driver session where the target can (it goes one at a time in
        # destructive mode: panics are expected there, each pinned to its step)
        stream = target.run_many(todo, budget_ms) if target.streaming else \
            ((t, target.run_trace(t, budget_ms)) for t in todo)
        for trace, observed in stream:
            if run_budget_s is not None and time.monotonic() - t_run > run_budget_s:
                break
            rec = run_one(target, trace, destructive, budget_ms, observed=observed,
                          on_step=lambda sr, name=trace.name: emit("step", {"trace": name, **sr.to_dict()}))
            finish(rec, trace)
        for trace in todo:
            if trace.name not in records:
                finish(TraceRecord(trace.name, trace.source, 0.0,
                                   skipped=f"run budget of {run_budget_s:.0f} s exhausted"), trace)
        summary.traces = [records[t.name] for t in traces]
    finally:
        summary.seconds = time.monotonic() - t_run
        if own_sink:
            sink.close()
    return summary


@dataclass
class Job:
    """One guest of a parallel run: its target (closed; its facts stay readable) and how it ended."""

    target: Target
    unload: UnloadResult | None = None  # None: the job never reached the end of its traces
    error: str | None = None


def run_parallel(make_target: Callable[[int], Target], jobs: int, traces: list[Trace], *,
                 destructive: bool = False, budget_ms: int = 2000, out_dir: Path | None = None,
                 on_trace: Callable[[TraceRecord], None] = lambda t: None,
                 run_budget_s: float | None = None, done: dict[str, TraceRecord] | None = None,
                 append: bool = False, chunk: int = 40,
                 log: Callable[[str], None] = lambda s: None) -> tuple[RunSummary, list[Job]]:
    """``jobs`` guests, each in its own thread for its whole life (QEMU dies with the
    thread that started it), taking chunks of traces from one queue.  Returns the
    summary and each job, in the order they started."""
    sink = Sink(out_dir, append)
    lock = threading.Lock()
    queue = [t for t in traces if not (done and t.name in done)]
    records: dict[str, TraceRecord] = dict(done or {})
    finished: list[Job] = []
    errors: list[str] = []
    t0 = time.monotonic()

    def worker(i: int) -> None:
        job = Job(make_target(i))
        target = job.target
        with lock:
            finished.append(job)
        try:
            target.prepare()
            target.boot()
            while True:
                with lock:
                    part, queue[:] = queue[:chunk], queue[chunk:]
                if not part:
                    break
                left = None if run_budget_s is None else max(0.0, run_budget_s - (time.monotonic() - t0))
                summary = run_conformance(target, part, destructive=destructive, budget_ms=budget_ms,
                                          on_trace=on_trace, run_budget_s=left, sink=sink)
                with lock:
                    records.update({r.name: r for r in summary.traces})
            job.unload = target.unload()
        except Exception as e:  # a job that cannot run leaves its traces to the others
            job.error = f"{type(e).__name__}: {e}"
            with lock:
                errors.append(f"job {i}: {job.error}")
            log(f"job {i} failed: {e}")
        finally:
            try:
                target.close()
            except Exception:
                pass

    threads = [threading.Thread(target=worker, args=(i,), name=f"ddih-job-{i}") for i in range(jobs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    sink.close()
    missing = [t for t in traces if t.name not in records]
    for t in missing:
        records[t.name] = TraceRecord(t.name, t.source, 0.0, skipped="no guest could run it: "
                                      + ("; ".join(errors) or "unknown"), definition=t.to_yaml_dict())
    summary = RunSummary(traces=[records[t.name] for t in traces], seconds=time.monotonic() - t0)
    return summary, finished


def _drop_torn_tail(path: Path) -> None:
    """A run killed mid-write leaves a partial last line: cut it, so appending starts a new line."""
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)


def load_partial(out_dir: Path) -> dict[str, TraceRecord]:
    """The finished traces of an interrupted run (its results.jsonl; a torn last line is ignored)."""
    done: dict[str, TraceRecord] = {}
    steps: dict[str, list[StepRecord]] = {}
    path = out_dir / "results.jsonl"
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line being written when the run was killed
        kind = rec.pop("type", None)
        if kind == "step":
            got = steps.setdefault(rec.pop("trace"), [])
            if rec.get("index") == 1:
                got.clear()  # the trace ran again (a resumed run): its earlier steps are void
            got.append(StepRecord(**rec))
        elif kind == "trace":
            rec.pop("steps", None)
            # a trace line follows all its step lines; a rerun's earlier steps are replaced
            done[rec["name"]] = TraceRecord(steps=steps.pop(rec["name"], []), **rec)
    return done


def run_one(target: Target, trace: Trace, destructive: bool, budget_ms: int,
            on_step: Callable[[StepRecord], None] = lambda s: None,
            observed: list[Result] | None = None) -> TraceRecord:
    t0 = time.monotonic()
    if observed is None:
        observed = target.run_trace(trace, budget_ms)
    model = build(target.model_name, ModelConfig(destructive=destructive).with_trace(trace))
    documented = build("documented", ModelConfig().with_trace(trace))
    rec = TraceRecord(trace.name, trace.source, 0.0)
    for i, step in enumerate(trace.steps):
        predicted = model.step(step)
        allowed = documented.step(step)
        if predicted.state is None and "map" in step.args and step.op != "rmfreemap":
            predicted.state = model.state(step.args["map"])
        obs = observed[i] if i < len(observed) else None
        if obs is not None and obs.layout is not None and predicted.layout is None and "map" in step.args:
            predicted.layout = model.layout(step.args["map"])  # compared only where the kernel gave one
        sr = StepRecord(i + 1, step.op, step.call_text(), predicted.to_json(),
                        obs.to_json() if obs else None)
        sr.documented = allowed.to_json()
        if obs is not None:
            sr.departures = [str(m) for m in departures(step, allowed, obs)]
        if obs is None:
            sr.mismatches.append("no result: the guest stopped before this step")
        else:
            sr.mismatches = [str(m) for m in diverges(predicted, obs, step.op, target.unobservable)]
            exp = step.expect.get(target.model_name)
            if exp is not None:
                sr.expect_failures = [f"expect_{target.model_name} {m}" for m in check_expect(exp, obs)]
        if obs is not None and obs.kind is ResultKind.HANG and predicted.kind not in (ResultKind.HANG, ResultKind.UNDEFINED):
            sr.mismatches.append(f"unexpected hang: {obs.note or f'killed after {budget_ms / 1000:g} s in step {i + 1}'}")
        rec.steps.append(sr)
        on_step(sr)
        if obs is None or obs.terminal or predicted.terminal:
            if predicted.kind is ResultKind.UNDEFINED:
                rec.end = "undefined"  # the model's domain ends here: nothing after it is compared
            else:
                rec.end = obs.kind.value if obs is not None and obs.terminal else \
                    ("no result" if obs is None else "completed")
            break
    rec.seconds = round(time.monotonic() - t0, 3)
    return rec


def diverges(predicted: Result, observed: Result, op: str = "",
             unobservable: frozenset | set = frozenset()) -> list[Mismatch]:
    """Exact comparison; a predicted attribute the kernel did not report is a mismatch too.

    ``unobservable`` holds (op, field) pairs a target cannot observe (the
    illumos driver cannot see which kmem cache served a buffer): those are
    not compared, and the report shows only what was checked.
    """
    out = compare(predicted, observed)
    if (op, "value") in unobservable and observed.value is None:
        out = [m for m in out if m.field != "value"]
    for key in predicted.attrs:
        if key != "align" and key not in observed.attrs and predicted.kind == observed.kind:
            out.append(Mismatch(key, predicted.attrs[key], "not reported"))
    if predicted.kind == observed.kind and "align" in predicted.attrs and "offset" not in observed.attrs:
        out.append(Mismatch("align", predicted.attrs["align"], "offset not reported"))
    return out


def departures(step, allowed: Result, observed: Result) -> list[Mismatch]:
    """Where an observation leaves what the manual pages allow (the documented envelope).

    The documented model's result is read as an envelope: a kmem value is a
    minimum (at least the requested size), alignment is a guarantee, and a
    warning or panic the pages never mention is a departure.  Kernel
    pointers, counters and notes are not part of any contract.
    """
    if allowed.kind != observed.kind:
        if observed.kind is ResultKind.NULL and allowed.attrs.get("may_fail"):
            return []
        return [Mismatch("kind", allowed.short(), observed.short())]
    out: list[Mismatch] = []
    if allowed.value is not None and observed.value is not None:
        if step.spec.family == "kmem":
            if observed.value < allowed.value:
                out.append(Mismatch("value", f">= {allowed.value}", observed.value))
        elif observed.value != allowed.value:
            out.append(Mismatch("value", allowed.value, observed.value))
    narrowed = Result(allowed.kind, attrs={k: v for k, v in allowed.attrs.items()
                                           if k in ("align", "zeroed", "coherent")})
    out += [m for m in compare(narrowed, observed) if m.field != "kind"]
    extra = [w for w in observed.warnings if w not in allowed.warnings]
    if extra:
        out.append(Mismatch("warnings", list(allowed.warnings), extra))
    return out


# ---------------------------------------------------------------- reports

def manifest(target: Target, traces_arg: list[str], destructive: bool, argv: list[str]) -> dict[str, Any]:
    facts = asdict(target.facts)
    return {"harness_version": __version__, "target": target.name, "model": target.model_name,
            "destructive": destructive, "traces": traces_arg, "command": argv,
            "host": platform.node(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **facts}


def write_json(path: Path, summary: RunSummary, man: dict[str, Any]) -> None:
    doc = {"manifest": man, "accelerator": man.get("accelerator"), "guest_kernel": man.get("guest_kernel"),
           "seconds": round(summary.seconds, 2), "steps": summary.steps,
           "divergences": summary.divergences, "departures": summary.departures,
           "traces": [t.to_dict() for t in summary.traces]}
    path.write_text(json.dumps(doc, indent=1))


def write_junit(path: Path, summary: RunSummary, man: dict[str, Any]) -> None:
    suite = ET.Element("testsuite", name=f"ddi-harness.{man['target']}",
                       tests=str(len(summary.traces)),
                       failures=str(sum(1 for t in summary.traces if t.first_divergence)),
                       skipped=str(sum(1 for t in summary.traces if t.skipped)),
                       time=f"{summary.seconds:.2f}")
    props = ET.SubElement(suite, "properties")
    for key in ("accelerator", "guest_kernel", "target", "harness_version"):
        ET.SubElement(props, "property", name=key, value=str(man.get(key, "")))
    for t in summary.traces:
        case = ET.SubElement(suite, "testcase", classname=f"{man['target']}.{Path(t.source).parent.name}",
                             name=t.name, time=f"{t.seconds:.3f}")
        if t.skipped:
            ET.SubElement(case, "skipped", message=t.skipped)
            continue
        d = t.first_divergence
        if d is not None:
            msgs = d.mismatches + d.expect_failures
            fail = ET.SubElement(case, "failure", message=f"step {d.index}: {d.call}: {msgs[0]}")
            fail.text = "\n".join(f"step {s.index}: {s.call} -> {_short(s.observed)}  predicted {_short(s.predicted)}"
                                  for s in t.steps)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def _short(r: dict[str, Any] | None) -> str:
    if r is None:
        return "(none)"
    return Result.from_json(r).short()
