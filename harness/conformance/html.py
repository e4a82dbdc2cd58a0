"""A self-contained HTML report: one file, no scripts or network, readable offline.

Sections: the run header (target, guest kernel, accelerator, counts), every
trace step by step (call, model, kernel, manual pages, console excerpt) with
the first divergence highlighted and divergent traces opened, and a
cross-model table: for every step of the corpus, what the documented,
illumos and linux models predict, with the cells that depart from the
documented contract marked.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Iterable

from harness.trace import Trace
from harness.model import build
from harness.model.base import ModelConfig
from harness.model.outcome import Result

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0} td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}
th{background:#f3f3f3;text-align:left} code,td.c{font-family:ui-monospace,monospace;font-size:12.5px}
tr.div td{background:#ffe3e3} tr.first td{background:#ffc4c4;font-weight:600}
td.dep{background:#fff4d6} td.same{color:#777}
.ok{color:#15803d;font-weight:600} .bad{color:#b91c1c;font-weight:600} .skip{color:#777}
details{margin:.3em 0} summary{cursor:pointer} pre{background:#f7f7f7;padding:.5em;white-space:pre-wrap}
.kv td:first-child{font-weight:600}
.lay svg{margin:2px 0}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _res(d: dict[str, Any] | None) -> str:
    if d is None:
        return "-"
    r = Result.from_json(d)
    text = r.short()
    if r.warnings:
        text += "\n" + "\n".join(r.warnings)
    if r.state:
        text += "\n" + " ".join(f"{k}={v}" for k, v in r.state.items())
    return text


def render(doc: dict[str, Any], traces: Iterable[Trace] = ()) -> str:
    """The HTML for a run.json document (and the traces, for the cross-model table)."""
    man = doc.get("manifest", {})
    runs = doc.get("traces", [])
    ran = [t for t in runs if not t.get("skipped")]
    bad = [t for t in ran if any(s["mismatches"] or s["expect_failures"] for s in t["steps"])]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>ddi-harness {_e(man.get('target'))}</title>"
           f"<style>{CSS}</style></head><body>",
           f"<h1>ddi-harness conformance run: {_e(man.get('target'))}</h1>",
           "<table class='kv'>"]
    for key, label in (("target", "target"), ("model", "model"), ("guest_kernel", "guest kernel"),
                       ("accelerator", "accelerator"), ("accelerator_reason", "why"),
                       ("boot_to_ready_s", "boot to ready (s)"), ("harness_version", "harness"),
                       ("seed", "seed"), ("started", "started")):
        if man.get(key) not in (None, "") and not (key == "boot_to_ready_s" and not man[key]):
            out.append(f"<tr><td>{label}</td><td>{_e(man[key])}</td></tr>")
    out.append(f"<tr><td>traces</td><td>{len(ran)} run, {len(runs) - len(ran)} skipped</td></tr>")
    out.append(f"<tr><td>steps</td><td>{doc.get('steps', 0)}</td></tr>")
    verdict = "<span class='bad'>" if bad else "<span class='ok'>"
    out.append(f"<tr><td>divergences</td><td>{verdict}{len(doc.get('divergences', []))} in {len(bad)} "
               f"traces</span></td></tr>")
    deps = doc.get("departures", [])
    out.append(f"<tr><td>contract departures</td><td>{len(deps)} steps "
               f"({sum(1 for d in deps if d.get('known'))} predicted by the model)</td></tr></table>")

    if man.get("fault"):
        out.append(f"<p class='bad'>Faults injected on purpose in this run: {_e(man['fault'])} "
                   "(the driver misbehaves so the harness can be seen catching it)</p>")
    if bad:
        kept = {Path(p).stem: p for p in man.get("regressions_written", [])}
        out.append("<h2>Divergences</h2><p>Each trace's first divergence is its root cause; the steps "
                   "after it that differ too are its consequences.</p>"
                   "<table><tr><th>trace</th><th>root cause</th><th>consequences</th></tr>")
        by_trace: dict[str, list[dict[str, Any]]] = {}
        for d in doc.get("divergences", []):
            by_trace.setdefault(d["trace"], []).append(d)
        for name, ds in by_trace.items():
            root = ds[0]
            rest = [d for d in ds[1:] if d["step"] != root["step"]]
            about = next((t.get("definition", {}) or {} for t in runs if t["name"] == name), {}).get("about", "")
            cause = (f"step {root['step']}: <code>{_e(root['call'])}</code><br>{_e(root['mismatch'])}"
                     + "".join(f"<br>{_e(d['mismatch'])}" for d in ds[1:] if d["step"] == root["step"]))
            extra = ""
            if about:
                extra += f"<br><span class='skip'>{_e(about)}</span>"
            if f"{name}-min" in kept:
                extra += f"<br>kept as <code>{_e(kept[name + '-min'])}</code>"
            conseq = ("none" if not rest else f"<details><summary>{len(rest)} later mismatches in "
                      f"{len({d['step'] for d in rest})} steps</summary>"
                      + "<br>".join(f"step {d['step']}: {_e(d['call'])}: {_e(d['mismatch'])}" for d in rest)
                      + "</details>")
            out.append(f"<tr class='div'><td>{_e(name)}{extra}</td><td class='c'>{cause}</td>"
                       f"<td class='c'>{conseq}</td></tr>")
        out.append("</table>")

    out.append("<h2>Traces, step by step</h2>")
    if any((s.get("observed") or {}).get("layout") is not None for t in runs for s in t.get("steps") or []):
        out.append("<p class='skip'>Layouts: one row per span (a Linux gen_pool chunk), segments in address "
                   "order, widths to scale; <span style='background:#9ca3af'>&nbsp;grey&nbsp;</span> allocated, "
                   "<span style='background:#86efac'>&nbsp;green&nbsp;</span> free (fN: on vmem freelist N), "
                   "outlined <b style='color:#ea580c'>orange</b>: the segment the step's rmalloc took, "
                   "<b style='color:#dc2626'>red</b>: where model and kernel part.</p>")
    for t in runs:
        if t.get("skipped"):
            out.append(f"<div class='skip'>{_e(t['name'])}: skipped ({_e(t['skipped'])})</div>")
            continue
        diverged = t in bad
        first = next((s["index"] for s in t["steps"] if s["mismatches"] or s["expect_failures"]), None)
        mark = "<span class='bad'>DIVERGES</span>" if diverged else "<span class='ok'>ok</span>"
        out.append(f"<details{' open' if diverged else ''}><summary>{mark} {_e(t['name'])} "
                   f"({len(t['steps'])} steps, {_e(t['end'])})</summary>")
        drawn = _drawn_steps(t["steps"], first)
        out.append("<table><tr><th>#</th><th>call</th><th>model</th><th>kernel</th><th>manual pages</th>"
                   "<th>verdict</th>" + ("<th>layout (kernel)</th>" if drawn else "") + "</tr>")
        for s in t["steps"]:
            cls = "first" if s["index"] == first else ("div" if s["mismatches"] or s["expect_failures"] else "")
            verdict = "; ".join(s["mismatches"] + s["expect_failures"]) or "ok"
            dep = "; ".join(s.get("departures", []))
            out.append(f"<tr class='{cls}'><td>{s['index']}</td><td class='c'>{_e(s['call'])}</td>"
                       f"<td class='c'>{_e(_res(s['predicted']))}</td><td class='c'>{_e(_res(s['observed']))}</td>"
                       f"<td class='c{' dep' if dep else ''}'>{_e(_res(s.get('documented')))}"
                       f"{'<br>departs: ' + _e(dep) if dep else ''}</td><td class='c'>{_e(verdict)}</td>"
                       + (f"<td>{_layout_cell(s)}</td>" if drawn else "") + "</tr>")
        out.append("</table>")
        for s in t["steps"]:
            obs = s.get("observed") or {}
            if obs.get("note"):
                out.append(f"<div>step {s['index']}: {_e(obs['note'])}</div>")
            if obs.get("excerpt"):
                out.append(f"<div>step {s['index']}: console excerpt:</div><pre>{_e(obs['excerpt'])}</pre>")
        out.append("</details>")

    traces = list(traces)
    if traces:
        out.append("<h2>Across models: documented vs illumos vs linux</h2>"
                   "<p>Every corpus step through the three models (no kernel). Yellow cells depart from "
                   "what the manual pages promise.</p>")
        out.append(cross_model_table(traces))
    out.append("</body></html>")
    return "\n".join(out)


MAX_DRAWN = 60  # a trace longer than this gets pictures only around its first divergence


def _drawn_steps(steps: list[dict[str, Any]], first: int | None) -> set[int]:
    """The steps whose layout is drawn: all of a short trace, else those near the divergence."""
    have = {s["index"] for s in steps if (s.get("observed") or {}).get("layout") is not None}
    if len(steps) <= MAX_DRAWN:
        return have
    return {i for i in have if first is not None and first - 2 <= i <= first + 1}


def _layout_cell(s: dict[str, Any]) -> str:
    from harness.conformance.layoutview import side_by_side, svg
    from harness.trace import Layout

    obs, pred = s.get("observed") or {}, s.get("predicted") or {}
    if obs.get("layout") is None:
        return ""
    kernel = Layout.from_wire(obs["layout"])
    taken = obs.get("value") if s["op"] in ("rmalloc", "rmalloc_wait") and obs.get("kind") == "value" else None
    if pred.get("layout") is not None and any(m.startswith("layout") for m in s["mismatches"]):
        return side_by_side(Layout.from_wire(pred["layout"]), kernel, taken)
    return svg(kernel, taken)


def cross_model_table(traces: list[Trace]) -> str:
    rows = ["<table><tr><th>trace</th><th>#</th><th>call</th><th>documented</th><th>illumos</th>"
            "<th>linux</th></tr>"]
    for t in traces:
        models = [build(n, ModelConfig().with_trace(t)) for n in ("documented", "illumos", "linux")]
        ended = [False, False, False]
        only_departures = len(t.steps) > 60  # long traces: just the steps where models part
        for i, step in enumerate(t.steps, 1):
            res: list[Result | None] = []
            for k, m in enumerate(models):
                if ended[k]:
                    res.append(None)
                    continue
                r = m.step(step)
                ended[k] = r.terminal
                res.append(r)
            doc = res[0]
            cells = []
            for k, r in enumerate(res):
                text = r.short() if r else "(trace ended)"
                dep = k > 0 and r is not None and doc is not None and (r.kind, r.value) != (doc.kind, doc.value)
                cells.append(f"<td class='c{' dep' if dep else ''}'>{_e(text)}</td>")
            if only_departures and "dep'" not in "".join(cells) and i > 1:
                continue
            rows.append(f"<tr><td>{_e(t.name) if i == 1 else ''}</td><td>{i}</td>"
                        f"<td class='c'>{_e(step.call_text())}</td>{''.join(cells)}</tr>")
            if all(ended):
                break
    rows.append("</table>")
    return "\n".join(rows)
