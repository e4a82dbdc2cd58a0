"""Generated traces: reproducible from a seed, valid by construction, runnable on every model."""

from harness.conformance.generate import generate
from harness.conformance.traces import dump_trace, parse_trace
from harness.model import build
from harness.model.base import ModelConfig, run_trace

import yaml


def test_same_seed_same_traces_other_seed_other_traces():
    a = generate(9, 5)
    b = generate(9, 5)
    c = generate(9, 6)
    assert [t.steps for t in a] == [t.steps for t in b]
    assert [t.steps for t in a] != [t.steps for t in c]
    assert [t.name for t in a][:3] == ["gen-rmap-s5-0", "gen-umem-s5-1", "gen-kmem-s5-2"]


def test_generated_traces_are_valid_and_round_trip():
    for t in generate(30, 3):
        assert len(t.steps) >= 20
        again = parse_trace(yaml.safe_load(dump_trace(t)))
        assert again.steps == t.steps


def test_valid_by_construction_means_no_misuse_in_any_model():
    for t in generate(60, 9):
        for name in ("illumos", "linux", "documented"):
            run = run_trace(build(name, ModelConfig(destructive=False)), t)
            kinds = {s.result.kind for s in run.steps}
            assert "panic" not in kinds, (t.name, name)
            # the only refusals are the Linux port's documented ones (TRASH is never generated)
            for s in run.steps:
                if s.result.kind == "error":
                    assert name == "linux" or s.step.op == "umem_export", (t.name, name, s.step.call_text(), s.result)


def test_misuse_is_only_generated_when_asked():
    clean = generate(30, 4)
    dirty = generate(30, 4, misuse=True)
    def bad(ts):
        n = 0
        for t in ts:
            run = run_trace(build("illumos", ModelConfig()), t)
            n += run.end == "panic"
        return n
    assert bad(clean) == 0 and bad(dirty) > 0
