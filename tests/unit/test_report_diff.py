"""`report diff`: divergences new, fixed and still there, matched by signature; what changed underneath."""

from __future__ import annotations

import json

from harness.cli import main
from harness.conformance.diff import diff, text


def run_doc(divs=(), deps=(), ran=("a", "b", "c"), **man):
    return {"manifest": {"target": "linux", "guest_kernel": "6.1.0-56-amd64", "harness_version": "0.1.0",
                         "accelerator": "tcg", "seed": 1, **man},
            "steps": 10, "traces": [{"name": n, "steps": []} for n in ran],
            "divergences": [{"trace": t, "step": s, "call": c, "mismatch": m} for t, s, c, m in divs],
            "departures": [{"trace": t, "step": s, "call": c, "departure": d, "known": True} for t, s, c, d in deps]}


A = ("a", 3, "rmfree(m, 3, 1)", "state.avail: predicted 9, observed 8")
B = ("b", 2, "rmalloc(m, 5)", "value: predicted 1, observed 6")


def test_new_fixed_and_still_are_matched_by_signature_not_position():
    before = run_doc([A, B])
    # the same divergence in b with other values, a fixed, c new; order changed
    after = run_doc([("c", 1, "kmem_alloc(k, 64, KM_SLEEP)", "align: predicted 8, observed 4"),
                     ("b", 2, "rmalloc(m, 5)", "value: predicted 2, observed 7")])
    r = diff(before, after)
    assert [d["trace"] for d in r.new] == ["c"] and [d["trace"] for d in r.fixed] == ["a"]
    assert [d["trace"] for d in r.still] == ["b"] and r.exit_status == 1


def test_a_divergence_whose_trace_did_not_run_is_not_fixed():
    r = diff(run_doc([A]), run_doc([], ran=("b", "c")))
    assert r.fixed == [] and [d["trace"] for d in r.unchecked] == ["a"] and r.exit_status == 0
    assert "1 no longer checked" in text(r)


def test_only_something_new_fails():
    assert diff(run_doc([A]), run_doc([A])).exit_status == 0
    assert diff(run_doc([A]), run_doc([])).exit_status == 0
    assert diff(run_doc([]), run_doc([A])).exit_status == 1


def test_what_changed_underneath_and_the_departures():
    before = run_doc(deps=[("a", 1, "rmalloc(m, 1)", "value: predicted 0, observed 1")])
    after = run_doc(deps=[("b", 2, "rmalloc(m, 2)", "value: predicted 0, observed 3")], guest_kernel="6.1.0-57-amd64",
                    seed=2, gate_commit="367731f0")
    r = diff(before, after)
    assert r.changed["guest_kernel"] == ("6.1.0-56-amd64", "6.1.0-57-amd64")
    assert r.changed["seed"] == (1, 2) and r.changed["gate_commit"] == (None, "367731f0")
    assert "accelerator" not in r.changed
    assert [d["trace"] for d in r.departures_new] == ["b"] and [d["trace"] for d in r.departures_gone] == ["a"]
    md = text(r, markdown=True)
    assert "| **guest_kernel** changed | `6.1.0-56-amd64` | `6.1.0-57-amd64` |" in md
    assert "### Departures from the manual pages that appeared (1)" in md


def test_the_command_formats_and_exit_status(tmp_path, capsys):
    (tmp_path / "p.json").write_text(json.dumps(run_doc([A])))
    (tmp_path / "c.json").write_text(json.dumps(run_doc([A, B])))
    assert main(["report", "diff", str(tmp_path / "p.json"), str(tmp_path / "c.json")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("NEW DIVERGENCES: 1 new, 0 fixed, 1 still there")
    assert "b step 2: rmalloc(m, 5): value: predicted 1, observed 6" in out
    assert main(["report", "diff", "--json", str(tmp_path / "c.json"), str(tmp_path / "p.json")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["trace"] for d in doc["fixed"]] == ["b"] and doc["exit_status"] == 0
    (tmp_path / "junk.json").write_text("not json")
    assert main(["report", "diff", str(tmp_path / "junk.json"), str(tmp_path / "c.json")]) == 2
    assert "not a run.json" in capsys.readouterr().err
    assert main(["report", "diff", str(tmp_path / "c.json")]) == 2


def test_merged_shard_reports_diff_like_single_ones(tmp_path):
    from harness.conformance.merge import merge
    from harness.conformance.runner import write_json

    docs = []
    for night, divs in enumerate(([A], [A, B])):
        paths = []
        for i, names in enumerate((("a",), ("b", "c"))):
            d = run_doc([x for x in divs if x[0] in names], ran=names, shard=f"{i + 1}/2")
            for t in d["traces"]:
                t.update({"source": "s", "seconds": 0.0, "end": "completed", "skipped": None, "definition": None})
                t["steps"] = [{"index": x[1], "op": x[2].split("(")[0], "call": x[2], "predicted": {"kind": "ok"},
                               "observed": {"kind": "ok"}, "mismatches": [x[3]], "expect_failures": [],
                               "documented": None, "departures": []} for x in divs if x[0] == t["name"]]
            p = tmp_path / f"n{night}s{i}.json"
            p.write_text(json.dumps(d))
            paths.append(p)
        summary, man = merge(paths)
        out = tmp_path / f"merged{night}.json"
        write_json(out, summary, man)
        docs.append(json.loads(out.read_text()))
    r = diff(*docs)
    assert [d["trace"] for d in r.new] == ["b"] and [d["trace"] for d in r.still] == ["a"]
