"""Trace loading and validation: every malformed trace fails before anything runs,
naming the file, the step and the fix."""

from pathlib import Path

import pytest

from harness.conformance.traces import TraceError, dump_trace, load_trace_file, load_traces, parse_trace
from harness.ops import OPS

CORPUS = Path(__file__).resolve().parents[2] / "harness" / "traces"


def write(tmp_path, text, name="t.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(tmp_path, text):
    with pytest.raises(TraceError) as ei:
        load_trace_file(write(tmp_path, text))
    return ei.value


def test_seed_example_from_design_loads(tmp_path):
    t = load_trace_file(write(tmp_path, """
name: seed-rmalloc-example
about: rmalloc(9F) example 1 - a 12-unit map initialised by rmfree
steps:
  - {op: rmallocmap, map: m, mapsize: 12}
  - {op: rmfree, map: m, size: 12, index: 1}
  - {op: rmalloc, map: m, size: 3, expect: 1}
"""))[0]
    assert [s.op for s in t.steps] == ["rmallocmap", "rmfree", "rmalloc"]
    assert t.steps[2].expect["illumos"].value == 1
    assert t.steps[1].args == {"map": "m", "size": 12, "index": 1}


@pytest.mark.parametrize("step, problem, fix", [
    ("{op: rmfrob, map: m}", "unknown op 'rmfrob'", "use one of"),
    ("{op: rmalloc, map: m}", "missing argument 'size'", "add `size:"),
    ("{op: rmalloc, map: m, size: 3, index: 4}", "takes no argument 'index'", "rmalloc takes: map, size"),
    ("{op: rmalloc, map: m, size: three}", "must be an integer", "integer"),
    ("{op: rmalloc, map: m, size: -1}", "outside 0..2^64-1", "value >= 0"),
    ("{op: rmalloc, map: q, size: 1}", "map 'q' is not defined", "rmallocmap"),
    ("{op: rmallocmap, map: m, mapsize: 3}", "already defined at step 1", "its own name"),
    ("{op: kmem_alloc, buf: b, size: 8, flags: [KM_SNOOZE]}", "unknown flag 'KM_SNOOZE'", "KM_SLEEP"),
    ("{op: rmalloc, map: m, size: 1, expect: {kind: maybe}}", "is not a result kind", "value"),
    ("{op: umem_export, buf: m, len: 4096}", "'m' is a map, not a buf", "umem_alloc"),
])
def test_malformed_step_names_file_step_and_fix(tmp_path, step, problem, fix):
    err = error_of(tmp_path, f"name: bad\nsteps:\n  - {{op: rmallocmap, map: m, mapsize: 1}}\n  - {step}\n")
    msg = str(err)
    assert "t.yaml" in msg and "step 2" in msg, msg
    assert problem in msg, msg
    assert fix in msg, msg


def test_use_after_free_is_rejected_but_kmem_double_free_is_allowed(tmp_path):
    err = error_of(tmp_path, """name: uaf
steps:
  - {op: rmallocmap, map: m, mapsize: 1}
  - {op: rmfreemap, map: m}
  - {op: rmalloc, map: m, size: 1}
""")
    assert err.step == 3 and "released at step 2" in str(err)
    t = load_trace_file(write(tmp_path, """name: dfree
steps:
  - {op: kmem_alloc, buf: b, size: 8, flags: [KM_SLEEP]}
  - {op: kmem_free, buf: b, size: 8}
  - {op: kmem_free, buf: b, size: 8}
""", "d.yaml"))[0]
    assert len(t.steps) == 3


def test_wrong_family_buffer_is_rejected(tmp_path):
    err = error_of(tmp_path, """name: fam
steps:
  - {op: kmem_alloc, buf: b, size: 8, flags: [KM_SLEEP]}
  - {op: umem_free, buf: b}
""")
    assert err.step == 2 and "not from the umem family" in str(err)


def test_trace_level_errors(tmp_path):
    assert "no `name`" in str(error_of(tmp_path, "steps: [{op: rmallocmap, map: m, mapsize: 1}]"))
    assert "`steps` is missing" in str(error_of(tmp_path, "name: x\n"))
    assert "not valid YAML at line 3" in str(error_of(tmp_path, "name: x\nsteps: [\n"))
    assert "unknown config key" in str(error_of(tmp_path, "name: x\nconfig: {turbo: 1}\nsteps: [{op: rmallocmap, map: m, mapsize: 1}]"))


def test_duplicate_trace_names_across_files(tmp_path):
    write(tmp_path, "name: same\nsteps: [{op: rmallocmap, map: m, mapsize: 1}]", "a.yaml")
    write(tmp_path, "name: same\nsteps: [{op: rmallocmap, map: m, mapsize: 1}]", "b.yaml")
    with pytest.raises(TraceError, match="also used in"):
        load_traces([tmp_path])


def test_yaml_off_is_an_argument_not_a_boolean(tmp_path):
    t = load_trace_file(write(tmp_path, """name: off
steps:
  - {op: umem_alloc, buf: c, size: 8192, flags: DDI_UMEM_SLEEP}
  - {op: umem_export, buf: c, off: 4096, len: 4096, prot: "PROT_READ|PROT_WRITE"}
"""))[0]
    step = t.steps[1]
    assert step.args["off"] == 4096
    assert step.flags("prot") == 0x3 and step.flags("maxprot") == 0xF
    assert step.args["mapping"] == "shared"


def test_flags_forms_agree(tmp_path):
    t = load_trace_file(write(tmp_path, """name: fl
steps:
  - {op: umem_alloc, buf: a, size: 1, flags: [DDI_UMEM_NOSLEEP, DDI_UMEM_PAGEABLE]}
  - {op: umem_alloc, buf: b, size: 1, flags: "DDI_UMEM_NOSLEEP|DDI_UMEM_PAGEABLE"}
  - {op: umem_alloc, buf: c, size: 1, flags: []}
"""))[0]
    assert [s.flags("flags") for s in t.steps] == [3, 3, 0]


def test_corpus_is_valid_and_round_trips():
    traces = load_traces([CORPUS])
    assert len(traces) > 50
    families = {s.spec.family for t in traces for s in t.steps}
    assert families == {"rmap", "umem", "kmem"}
    for t in traces[:10]:
        again = parse_trace(__import__("yaml").safe_load(dump_trace(t)))
        assert again.steps == t.steps


def test_every_op_is_documented():
    for spec in OPS.values():
        assert spec.doc and spec.routine
