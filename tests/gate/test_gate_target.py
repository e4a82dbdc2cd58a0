"""The illumos-gate target: the real vmem.c + rmap.c against the illumos model, on every run.

The corpus and 2,000 generated corner-case traces run with zero divergences; three planted
faults in copies of vmem.c each fail a run, are named by their symptom and shrink to at most 5
steps; bad inputs get errors that name the input and the fix.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.conformance.generate import generate
from harness.conformance.runner import run_conformance
from harness.conformance.shrink import keep, shrink, signature
from harness.conformance.traces import load_traces
from harness.options import RunOptions
from harness.targets import TargetError, make_target
from harness.targets.gate import SOURCES
from tests.browser import chromium
from tests.browser import dom as browser_dom
from tests.gate.conftest import mutated_tree

CORPUS = Path(__file__).resolve().parents[2] / "harness" / "traces"


def gate_target(tree: Path, work: Path, debug: bool = False):
    t = make_target("illumos-gate", RunOptions(target="illumos-gate", gate=str(tree), gate_debug=debug), work)
    t.prepare()
    t.boot()
    return t


@pytest.fixture(scope="module")
def target(gate_tree, tmp_path_factory):
    return gate_target(gate_tree, tmp_path_factory.mktemp("gate"))


def test_the_corpus_runs_against_the_real_code_with_zero_divergences(target):
    traces = load_traces([CORPUS])
    summary = run_conformance(target, traces, destructive=True)
    assert summary.divergences == []
    ran = [t for t in summary.traces if not t.skipped]
    assert len(ran) >= 40 and summary.steps > 2000
    # resource maps only: the others are skipped, and say why
    skipped = {t.skipped for t in summary.traces if t.skipped}
    assert any("does not run" in s and ("kmem" in s or "umem" in s) for s in skipped), skipped
    ends = {t.name: t.end for t in ran}
    assert ends["R38-free-segment-at-zero"] == "undefined"
    assert ends["R31-double-free"] == "panic"  # the real vmem panicked, as predicted
    # the kernel's own counters were compared after every step
    assert all(s.observed.get("state") for t in ran for s in t.steps if s.op == "rmalloc" and s.observed["kind"] == "value")


def test_2000_generated_corner_traces_agree(target):
    traces = generate(2000, 20261130, profile="corners")
    summary = run_conformance(target, traces, destructive=True)
    assert summary.divergences == [], summary.divergences[:3]
    steps = [s for t in summary.traces for s in t.steps]
    ops = collections.Counter(s.op for s in steps)
    assert ops["join"] > 1000 and ops["rmalloc_wait"] > 1000 and ops["rmfree"] > 5000
    # the corners were reached: one broadcast waking several sleepers, spans at the top of the
    # address space, frees of earlier allocations that merged back
    woke_many = sum(1 for t in summary.traces for a, b in zip(t.steps, t.steps[1:])
                    if a.observed and b.observed and a.observed.get("state") and b.observed.get("state")
                    and b.observed["state"]["wait"] - a.observed["state"]["wait"] >= 2)
    assert woke_many > 50
    assert sum(1 for t in traces for s in t.steps if s.op == "rmfree" and s.args["index"] > 1 << 63) > 100
    assert sum(1 for s in steps if s.op == "rmfree" and s.observed and
               s.observed.get("state", {}).get("free", 0) > 0) > 1000
    assert collections.Counter(t.end for t in summary.traces)["completed"] > 1800


MUTATIONS = [
    # name, vmem.c text, its mutation, the symptom (the first diverging field)
    ("freelist-insert-at-tail",
     "\tVMEM_INSERT(vprev, vsp, k);\n\n\tcv_broadcast",
     "\tVMEM_INSERT(((vmem_seg_t *)&vmp->vm_freelist[highbit(VS_SIZE(vsp))])->vs_kprev, vsp, k);"
     "\n\n\tcv_broadcast",
     "value"),
    ("instant-fit-rounds-down",
     "\t\telse if ((hb = highbit(size)) < VMEM_FREELISTS)\n"
     "\t\t\tflist = lowbit(P2ALIGN(vmp->vm_freemap, 1UL << hb));",
     "\t\telse if ((hb = highbit(size)) < VMEM_FREELISTS)\n"
     "\t\t\tflist = lowbit(P2ALIGN(vmp->vm_freemap, 1UL << (hb - 1)));",
     "value"),
    ("vmem-contains-off-by-one",
     "if (start >= vsp->vs_start && end - 1 <= vsp->vs_end - 1)",
     "if (start >= vsp->vs_start && end <= vsp->vs_end - 1)",
     "kind"),
]


@pytest.mark.parametrize("name, old, new, symptom", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_a_planted_fault_in_vmem_c_is_caught_named_and_shrunk(gate_tree, target, tmp_path, name, old, new,
                                                               symptom):
    mutant = gate_target(mutated_tree(gate_tree, tmp_path / "gate", old, new), tmp_path / "work")
    traces = [t for t in load_traces([CORPUS / "rmap"])]
    summary = run_conformance(mutant, traces, destructive=True)
    diverged = [t for t in summary.traces if t.first_divergence]
    assert diverged, f"{name}: the run did not fail"
    first = diverged[0]
    sig = signature(first)
    assert sig.field == symptom, f"{name}: symptom {sig}"
    by_name = {t.name: t for t in traces}
    res = shrink(mutant, by_name[first.name], first, destructive=True, budget_ms=2000)
    assert res is not None and len(res.minimal.steps) <= 5, res and res.minimal.steps
    kept = load_traces([keep(res, tmp_path / "regressions")])[0]
    assert signature(run_conformance(mutant, [kept], destructive=True).traces[0]) == sig
    # the unmodified vmem.c passes the kept regression
    assert run_conformance(target, [kept], destructive=True).divergences == []


def test_a_debug_build_runs_with_asserts_live(gate_tree, tmp_path):
    t = gate_target(gate_tree, tmp_path, debug=True)
    assert t.facts.gate_debug
    traces = [t_ for t_ in load_traces([CORPUS / "rmap"]) if t_.config.get("debug")]
    assert traces, "the corpus has traces for a DEBUG kernel"
    summary = run_conformance(t, traces, destructive=True)
    assert summary.divergences == []


# ------------------------------------------------------------------ errors that name the fix

def test_a_directory_without_the_sources_names_it_and_the_fix(tmp_path):
    t = make_target("illumos-gate", RunOptions(target="illumos-gate", gate=str(tmp_path)), tmp_path / "w")
    with pytest.raises(TargetError) as e:
        t.prepare()
    msg = str(e.value)
    assert f"--gate {tmp_path}" in msg and SOURCES[0] in msg and "usr/src" in msg


def test_no_gate_at_all_says_how_to_give_one(tmp_path, monkeypatch):
    from harness import fetch

    monkeypatch.delenv("DDIH_ILLUMOS_GATE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pinned = fetch.load_gate_manifest()  # as shipped, but from a server that is not there
    monkeypatch.setattr(fetch, "load_gate_manifest", lambda path=None: fetch.GateManifest(
        pinned.commit, "http://127.0.0.1:9/{commit}/{path}", pinned.files))
    t = make_target("illumos-gate", RunOptions(target="illumos-gate"), tmp_path / "w")
    with pytest.raises(TargetError, match="--gate DIR.*DDIH_ILLUMOS_GATE"):
        t.prepare()


def test_a_vmem_c_that_does_not_compile_shows_the_compilers_first_errors(gate_tree, tmp_path):
    tree = mutated_tree(gate_tree, tmp_path / "gate", "vmem_contains(vmem_t *vmp, void *vaddr, size_t size)\n{",
                        "vmem_contains(vmem_t *vmp, void *vaddr, size_t size)\n{ this is not C;")
    t = make_target("illumos-gate", RunOptions(target="illumos-gate", gate=str(tree)), tmp_path / "w")
    with pytest.raises(TargetError) as e:
        t.prepare()
    msg = str(e.value)
    assert "did not compile" in msg and "vmem.c" in msg and "error" in msg and str(tree) in msg


def test_the_command_line_run_records_what_it_checked(gate_tree, tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "harness", "run", "--target", "illumos-gate", "--gate", str(gate_tree),
                        "--match", "R5-", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    man = json.loads((out / "run.json").read_text())["manifest"]
    assert man["target"] == "illumos-gate" and man["model"] == "illumos"
    assert man["gate_dir"] == str(gate_tree)
    assert set(man["sources_sha256"]) == set(SOURCES) and all(len(v) == 64 for v in man["sources_sha256"].values())
    assert man["destructive"] is True  # no guards: the routines are called raw


def test_the_pytest_plugin_runs_users_tests_on_the_real_vmem(gate_tree, tmp_path):
    (tmp_path / "test_mine.py").write_text(
        "def test_manpage_example(ddi_driver):\n"
        "    out = ddi_driver.check([{'op': 'rmallocmap', 'map': 'm', 'mapsize': 12},\n"
        "                            {'op': 'rmfree', 'map': 'm', 'size': 12, 'index': 1},\n"
        "                            {'op': 'rmalloc', 'map': 'm', 'size': 3},\n"
        "                            {'op': 'rmalloc', 'map': 'm', 'size': 20}])\n"
        "    assert out.values[-2:] == [1, 0]\n")
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ddi-target",
                        "illumos-gate", "test_mine.py"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "DDIH_ILLUMOS_GATE": str(gate_tree)})
    assert p.returncode == 0 and "1 passed" in p.stdout, p.stdout + p.stderr
    assert "illumos-gate guest, kernel illumos-gate vmem.c" in p.stdout


def test_replay_reruns_a_recorded_run_on_the_same_tree(gate_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("DDIH_ILLUMOS_GATE", str(gate_tree))
    first = subprocess.run([sys.executable, "-m", "harness", "run", "--target", "illumos-gate", "--generate", "20",
                            "--seed", "4", "--out", str(tmp_path / "a")], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    monkeypatch.delenv("DDIH_ILLUMOS_GATE")  # the recorded tree is used, however it was found
    again = subprocess.run([sys.executable, "-m", "harness", "replay", str(tmp_path / "a" / "run.json"), "--out",
                            str(tmp_path / "b")], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    a, b = (json.loads((tmp_path / d / "run.json").read_text()) for d in "ab")
    assert [t["name"] for t in a["traces"]] == [t["name"] for t in b["traces"]] and len(a["traces"]) == 20
    assert b["manifest"]["gate_dir"] == str(gate_tree) and b["steps"] == a["steps"]


# ------------------------------------------------------------------ the layout verdict

LAYOUT_ONLY = ("vmem_xfree-no-coalescing-with-previous",
               "\tvprev = vsp->vs_aprev;\n\tif (vprev->vs_type == VMEM_FREE) {",
               "\tvprev = vsp->vs_aprev;\n\tif (0 && vprev->vs_type == VMEM_FREE) {")


def test_a_fault_that_only_the_layout_shows_is_caught_there_shrunk_and_drawn(gate_tree, target, tmp_path):
    """vmem_xfree that never merges with the free segment before it: every value and counter
    still agrees at the step that frees, only the map's layout differs -- the layout verdict names
    that step, shrinking keeps it, and the HTML report draws model and kernel side by side."""
    from harness.conformance.html import render
    from harness.conformance.runner import manifest, write_json

    name, old, new = LAYOUT_ONLY
    mutant = gate_target(mutated_tree(gate_tree, tmp_path / "gate", old, new), tmp_path / "work")
    assert mutant.layout and mutant.reports_layout
    traces = load_traces([CORPUS / "rmap"])
    summary = run_conformance(mutant, traces, destructive=True)
    diverged = [t for t in summary.traces if t.first_divergence]
    assert diverged
    first = diverged[0]
    d = first.first_divergence
    assert (d.mismatches + d.expect_failures)[0].startswith("layout:"), d.mismatches
    assert d.op == "rmfree" and d.predicted["kind"] == d.observed["kind"] == "ok"
    assert d.predicted["state"] == d.observed["state"]  # the counters agree: only the layout tells
    sig = signature(first)
    res = shrink(mutant, {t.name: t for t in traces}[first.name], first, destructive=True, budget_ms=2000)
    # six steps is the least this fault needs: a map, a span, two allocations, and two frees (the
    # second frees a segment whose predecessor is free: the merge the mutant skips)
    assert res is not None and len(res.minimal.steps) <= 6 and res.signature.field == "layout"
    assert [s.op for s in res.minimal.steps].count("rmfree") >= 3
    assert signature(run_conformance(mutant, [res.minimal], destructive=True).traces[0]) == sig
    # the HTML shows both layouts at the divergence, the differing segments marked
    write_json(tmp_path / "run.json", summary, manifest(mutant, ["rmap"], True, ["test"]))
    page = render(json.loads((tmp_path / "run.json").read_text()))
    cell = page.split(f"DIVERGES</span> {first.name}")[1].split("</details>")[0]
    assert "<svg" in cell and ">model</text>" in cell and ">kernel</text>" in cell and "#dc2626" in cell
    # ... and a real browser draws them (headless Chromium: the DOM and a screenshot)
    html_file = tmp_path / "report.html"
    html_file.write_text(page)
    page_dom = browser_dom(html_file, tmp_path)
    assert page_dom.count("<svg") >= 2 and ">kernel</text>" in page_dom
    shot = tmp_path / "layout.png"
    chromium(html_file, tmp_path, "--window-size=1400,1600", f"--screenshot={shot}")
    assert shot.stat().st_size > 20000  # a drawn page, not a blank one
    # with layouts off, the same run sees nothing at that step
    off = gate_target(tmp_path / "gate", tmp_path / "work-off")
    off.layout = False
    again = run_conformance(off, [t for t in traces if t.name == first.name], destructive=True)
    d_off = again.traces[0].first_divergence
    assert d_off is None or d_off.index > d.index
