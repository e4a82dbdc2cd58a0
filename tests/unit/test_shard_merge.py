"""Sharding splits the corpus exactly; merging shard reports gives one report."""

from pathlib import Path

import pytest

from harness.conformance.live import parse_shard, select_traces
from harness.conformance.merge import merge
from harness.conformance.runner import RunSummary, StepRecord, TraceRecord, write_json
from harness.conformance.traces import TraceError
from harness.options import RunOptions


def args(**kw):
    return RunOptions(regressions=None, **kw)


def test_shards_partition_the_corpus():
    everything, _ = select_traces(args())
    parts = [select_traces(args(shard=f"{i}/4"))[0] for i in range(1, 5)]
    names = [t.name for p in parts for t in p]
    assert sorted(names) == sorted(t.name for t in everything) and len(names) == len(set(names))
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


@pytest.mark.parametrize("bad", ["3", "0/2", "3/2", "a/b"])
def test_bad_shard_is_refused_with_the_fix(bad):
    with pytest.raises(TraceError, match="--shard"):
        parse_shard(bad)


def run_json(path: Path, names: list[str], diverge: str | None = None, shard: str = "1/2"):
    recs = []
    for n in names:
        mm = ["value: predicted 1, observed 2"] if n == diverge else []
        recs.append(TraceRecord(n, "x.yaml", 0.1, steps=[StepRecord(1, "rmalloc", "rmalloc(m, 1)",
                                                                    {"kind": "value", "value": 1},
                                                                    {"kind": "value", "value": 2 if mm else 1},
                                                                    mismatches=mm)]))
    write_json(path, RunSummary(traces=recs, seconds=1.0),
               {"target": "linux", "model": "linux", "accelerator": "tcg", "guest_kernel": "k", "shard": shard})


def test_merge_combines_traces_and_divergences(tmp_path):
    run_json(tmp_path / "a.json", ["t1", "t3"], shard="1/2")
    run_json(tmp_path / "b.json", ["t2", "t4"], diverge="t4", shard="2/2")
    summary, man = merge([tmp_path / "a.json", tmp_path / "b.json"])
    assert [t.name for t in summary.traces] == ["t1", "t2", "t3", "t4"]
    assert summary.divergences == [{"trace": "t4", "step": 1, "call": "rmalloc(m, 1)",
                                    "mismatch": "value: predicted 1, observed 2"}]
    assert man["shards"] == ["1/2", "2/2"] and man["accelerators"] == ["tcg"]
