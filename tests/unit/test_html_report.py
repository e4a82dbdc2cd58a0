"""The HTML report: self-contained, divergences highlighted, the cross-model table."""

from harness.conformance.html import render
from harness.conformance.traces import load_traces
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "harness" / "traces"


def doc_with_divergence():
    step = lambda i, pred, obs, mm: {"index": i, "op": "rmalloc", "call": f"rmalloc(m, {i})", "predicted": pred,
                                     "observed": obs, "mismatches": mm, "expect_failures": [],
                                     "documented": {"kind": "value", "value": 1}, "departures": []}
    return {"manifest": {"target": "linux", "model": "linux", "guest_kernel": "6.1.0-56-amd64",
                         "accelerator": "tcg"},
            "steps": 2, "divergences": [{"trace": "t1", "step": 2, "call": "rmalloc(m, 2)",
                                          "mismatch": "value: predicted 3, observed 4"}],
            "departures": [],
            "traces": [{"name": "t1", "source": "x", "seconds": 0.1, "end": "completed", "skipped": None,
                        "steps": [step(1, {"kind": "value", "value": 1}, {"kind": "value", "value": 1}, []),
                                  step(2, {"kind": "value", "value": 3}, {"kind": "value", "value": 4},
                                       ["value: predicted 3, observed 4"])]},
                       {"name": "t2", "source": "x", "seconds": 0, "end": "", "skipped": "destructive",
                        "steps": []}]}


def test_divergence_is_highlighted_and_its_trace_open():
    page = render(doc_with_divergence())
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page
    assert "<tr class='first'><td>2</td>" in page
    assert "<details open><summary><span class='bad'>DIVERGES</span> t1" in page
    assert "value: predicted 3, observed 4" in page
    assert "t2: skipped (destructive)" in page
    assert "accelerator</td><td>tcg" in page


def test_cross_model_table_marks_departures_from_the_manual_pages():
    r1 = [t for t in load_traces([CORPUS / "rmap"]) if t.name.startswith("R1-")]
    page = render(doc_with_divergence(), r1)
    assert "documented vs illumos vs linux" in page
    # step 4, rmalloc(m, 150): documented first fit 1000; illumos and linux 0 (no merging across spans)
    row = page.split("rmalloc(m, 150)</td>")[1].split("</tr>")[0]
    assert row.count("class='c dep'") == 2 and ">1000<" in row


def test_a_panic_shows_the_kernels_console_excerpt_and_the_note_as_prose():
    doc = doc_with_divergence()
    doc["traces"][0]["steps"][1]["observed"] = {
        "kind": "panic", "message": "kernel BUG at lib/genalloc.c:255!",
        "excerpt": "[ 5.5] kernel BUG at lib/genalloc.c:255!\n[ 5.6] invalid opcode: 0000 [#1]"}
    page = render(doc)
    assert "step 2: console excerpt:</div><pre>[ 5.5] kernel BUG at lib/genalloc.c:255!" in page
    assert "console excerpt:</div><pre>lockstep" not in page


def test_a_divergence_is_explained_root_cause_first():
    doc = doc_with_divergence()
    t1 = doc["traces"][0]
    t1["definition"] = {"name": "t1", "about": "two allocations from a fresh map"}
    # one off-by-one and its consequences: the same step's counters, then three later steps
    doc["divergences"] = [{"trace": "t1", "step": 2, "call": "rmalloc(m, 2)", "mismatch": "value: predicted 3, observed 4"},
                          {"trace": "t1", "step": 2, "call": "rmalloc(m, 2)", "mismatch": "state.avail: predicted 7, observed 6"}] + \
        [{"trace": "t1", "step": i, "call": f"rmalloc(m, {i})", "mismatch": "value: predicted 1, observed 2"} for i in (3, 4, 5)]
    doc["manifest"]["fault"] = "rmfree_off_by_one"
    doc["manifest"]["regressions_written"] = ["regressions/t1-min.yaml"]
    page = render(doc)
    assert "Faults injected on purpose in this run: rmfree_off_by_one" in page
    assert "two allocations from a fresh map" in page and "kept as <code>regressions/t1-min.yaml</code>" in page
    table = page.split("<h2>Divergences</h2>")[1].split("</table>")[0]
    assert table.count("<tr class='div'>") == 1  # one row per root cause, not one per mismatch
    assert "step 2: <code>rmalloc(m, 2)</code><br>value: predicted 3, observed 4<br>state.avail" in table
    assert "3 later mismatches in 3 steps" in table


def test_the_shrink_signature_says_what_differs_without_contradiction():
    from harness.conformance.runner import StepRecord, TraceRecord
    from harness.conformance.shrink import signature

    rec = TraceRecord("t", "s", 0.0, steps=[StepRecord(1, "rmfree", "rmfree(m, 1, 1)", {"kind": "ok"}, {"kind": "ok"},
                                                       mismatches=["state.avail: predicted 10, observed 9"])])
    sig = signature(rec)
    assert str(sig) == "rmfree: state.avail: predicted 10, observed 9"
    other = TraceRecord("u", "s", 0.0, steps=[StepRecord(3, "rmfree", "rmfree(m, 5, 7)", {"kind": "ok"}, {"kind": "ok"},
                                                         mismatches=["state.avail: predicted 3, observed 2"])])
    assert signature(other) == sig  # the same divergence while shrinking, whatever the values


def test_an_interrupted_run_summary_says_what_happened():
    import io

    from rich.console import Console

    from harness.conformance.live import print_summary
    from harness.conformance.runner import RunSummary
    from harness.targets.base import UnloadResult

    buf = io.StringIO()
    man = {"target": "linux", "model": "linux", "interrupted": True,
           "driver_unload": UnloadResult(False, -1, "interrupted (Ctrl-C) before the driver was unloaded").describe()}
    print_summary(Console(file=buf, width=200), RunSummary(), man, Path("r.json"), Path("j.xml"), Path("r.html"))
    text = buf.getvalue()
    assert "recorded before the interrupt" in text and "0 steps/s" not in text
    assert "not unloaded: interrupted (Ctrl-C)" in text and "outstanding=-1" not in text
