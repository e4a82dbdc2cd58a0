"""One registry of targets, typed run options, and the one interface callers use."""

from __future__ import annotations

import json

import pytest

from harness.options import RunOptions
from harness.targets import TARGET_NAMES, TARGETS, TargetError, check_options, make_target
from harness.targets.base import GuestTarget, Target, UnloadResult


def test_every_registered_target_is_a_target_with_a_known_model(tmp_path):
    from harness.model import MODEL_NAMES

    for name in TARGET_NAMES:
        t = make_target(name, RunOptions(target=name), tmp_path / name)
        assert isinstance(t, Target) and t.name == name
        assert t.model_name == TARGETS[name].model and t.model_name in MODEL_NAMES
        assert t.facts.target == name


def test_capabilities_are_declared_not_probed():
    from harness.targets.illumos import IllumosTarget
    from harness.targets.linux import LinuxTarget

    assert issubclass(LinuxTarget, GuestTarget) and issubclass(IllumosTarget, GuestTarget)
    assert LinuxTarget.streaming and "rmfree_off_by_one" in LinuxTarget.faults
    assert not IllumosTarget.faults
    assert ("kmem_alloc", "value") in IllumosTarget.unobservable and not LinuxTarget.unobservable


def test_settings_a_target_cannot_honour_are_refused_with_the_alternatives(tmp_path):
    with pytest.raises(TargetError, match="faults it can inject: .*rmfree_off_by_one"):
        check_options("linux", RunOptions(fault="bogus"))
    with pytest.raises(TargetError, match="cannot inject that .*none"):
        check_options("openindiana", RunOptions(target="openindiana", fault="rmfree_off_by_one"))
    with pytest.raises(TargetError, match="kmem_flags"):
        check_options("linux", RunOptions(kmem_flags=0xF))
    with pytest.raises(TargetError, match="unknown target 'bsd'.*linux"):
        make_target("bsd", RunOptions(), tmp_path)
    assert check_options("omnios", RunOptions(kmem_flags=0xF)).__name__ == "IllumosTarget"


def test_run_options_round_trip_through_json():
    o = RunOptions(target="linux", traces=("a", "b"), fault="umem_not_zeroed", jobs=2, shrink=False,
                   run_budget=12.5)
    back = RunOptions.from_json(json.loads(json.dumps(o.to_json())))
    assert back == o and back.fault_names == ("umem_not_zeroed",)
    assert RunOptions.from_json({"target": "omnios", "from_a_later_version": 1}).target == "omnios"
    with pytest.raises(Exception):
        o.jobs = 3  # frozen


def test_start_json_stores_the_options(tmp_path):
    from harness.conformance.live import resume_state, save_start
    from harness.conformance.traces import parse_trace

    t = parse_trace({"name": "t", "steps": [{"op": "rmallocmap", "map": "m", "mapsize": 1}]})
    o = RunOptions(budget_ms=1234, seed=9, out="elsewhere")
    save_start(tmp_path, o, [t], ["p"])
    assert json.loads((tmp_path / "start.json").read_text())["options"] == o.to_json()
    back, traces, paths = resume_state(tmp_path)
    assert back == o.replace(out=str(tmp_path)) and [x.name for x in traces] == ["t"] and paths == ["p"]


def test_unload_result_says_what_happened():
    assert UnloadResult(True, 0).describe() == "ok, nothing outstanding"
    assert "3 objects" in UnloadResult(True, 3).describe()
    assert UnloadResult(False, -1, "interrupted (Ctrl-C)").describe() == "not unloaded: interrupted (Ctrl-C)"
