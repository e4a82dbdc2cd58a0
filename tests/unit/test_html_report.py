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
