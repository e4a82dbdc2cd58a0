"""A resource map's whole layout: the wire format, the models' walks, the verdict, the pictures."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.conformance.compare import compare
from harness.conformance.layoutview import side_by_side, svg, text
from harness.conformance.traces import parse_trace
from harness.model import build
from harness.model.base import ModelConfig
from harness.model.vmem import Vmem
from harness.protocol import ProtocolError, decode
from harness.trace import LAYOUT_LISTED, Layout, Result, Seg


def trace(*steps):
    return parse_trace({"name": "t", "steps": list(steps)})


MANPAGE = trace({"op": "rmallocmap", "map": "m", "mapsize": 12}, {"op": "rmfree", "map": "m", "size": 12, "index": 1},
                {"op": "rmalloc", "map": "m", "size": 3}, {"op": "rmalloc", "map": "m", "size": 3},
                {"op": "rmfree", "map": "m", "size": 3, "index": 1})


def layouts(model: str, t=MANPAGE) -> list[str]:
    m = build(model, ModelConfig())
    out = []
    for s in t.steps:
        m.step(s)
        lay = m.layout("m")
        out.append(lay.wire() if lay else None)
    return out


def test_the_illumos_walk_follows_vmem_the_linux_walk_gen_pool():
    assert layouts("illumos") == ["0:", "2:s:1+12,f3:1+12", "3:s:1+12,a:1+3,f3:4+9",
                                  "4:s:1+12,a:1+3,a:4+3,f2:7+6", "4:s:1+12,f1:1+3,a:4+3,f2:7+6"]
    assert layouts("linux") == ["0:", "2:s:1+12,f:1+12", "3:s:1+12,a:1+3,f:4+9", "3:s:1+12,a:1+6,f:7+6",
                                "4:s:1+12,f:1+3,a:4+3,f:7+6"]
    assert build("documented", ModelConfig()).layout("m") is None


def test_the_wire_format_round_trips_and_refuses_what_it_cannot_represent():
    line = "kind=value value=1 layout=3:s:1+12,a:1+3,f3:4+9"
    r = decode(line)
    assert r.layout == Layout(3, (Seg("span", 1, 12), Seg("alloc", 1, 3), Seg("free", 4, 9, 3)))
    assert Result.from_json(r.to_json()).layout == r.layout
    for bad in ("layout=x:s:1+2", "layout=2:q:1+2", "layout=1:s:1+2,a:1+1", "layout=3:s:1+2"):
        with pytest.raises(ProtocolError):
            decode("kind=ok " + bad)


def test_a_long_map_lists_64_segments_and_counts_them_all():
    vm = Vmem()
    for i in range(100):
        vm.add(1 + 10 * i, 10)
    total, segs = vm.layout()
    assert total == 200 and len(segs) == LAYOUT_LISTED
    lay = build("illumos", ModelConfig())
    for s in trace({"op": "rmallocmap", "map": "m", "mapsize": 1},
                   *({"op": "rmfree", "map": "m", "size": 10, "index": 1 + 10 * i} for i in range(40))).steps:
        lay.step(s)
    assert Layout.from_wire(lay.layout("m").wire()).total == 80


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["alloc", "free", "span"]), st.integers(1, 300)), max_size=60))
def test_the_walk_tiles_every_span_exactly(program):
    """Whatever happens, each span's segments start at the span, touch end to end and fill it,
    and the count matches the walk (the model's running count of segments is right)."""
    vm, live, base = Vmem(), [], 1
    for kind, size in program:
        if kind == "span":
            vm.add(base, size)
            base += size + (size % 3)
        elif kind == "alloc":
            a = vm.try_alloc(size)
            if a is not None:
                live.append((a, size))
        elif live:
            a, s = live.pop(size % len(live))
            vm.free_range(a, s)
    total, segs = vm.layout(listed=10 ** 9)
    assert total == len(segs)
    spans = [i for i, s in enumerate(segs) if s[0] == "span"]
    for i, j in zip(spans, spans[1:] + [len(segs)]):
        _, start, size, _ = segs[i]
        inner = segs[i + 1:j]
        assert inner and inner[0][1] == start
        assert all(a[1] + a[2] == b[1] for a, b in zip(inner, inner[1:]))
        assert sum(s[2] for s in inner) == size
        assert all(s[3] == s[2].bit_length() - 1 for s in inner if s[0] == "free")
        assert not any(a[0] == b[0] == "free" for a, b in zip(inner, inner[1:]))  # free neighbours merge


def test_the_layout_verdict_names_the_first_segment_where_they_part():
    a = Layout(3, (Seg("span", 1, 12), Seg("alloc", 1, 3), Seg("free", 4, 9, 3)))
    b = Layout(4, (Seg("span", 1, 12), Seg("alloc", 1, 3), Seg("free", 4, 3, 1), Seg("free", 7, 6, 2)))
    [m] = compare(Result("ok", layout=a), Result("ok", layout=b))
    assert m.field == "layout" and str(m) == "layout: predicted 'segment 3 f3:4+9', observed 'segment 3 f1:4+3'"
    assert compare(Result("ok", layout=a), Result("ok", layout=a)) == []
    assert compare(Result("ok", layout=a), Result("ok")) == []  # a kernel that gave none is not judged


def test_pictures_and_text():
    lay = Layout.from_wire("4:s:1+12,a:1+3,a:4+3,f2:7+6")
    picture = svg(lay, taken=4)
    assert picture.startswith("<svg") and picture.count("<rect") == 4 and "#ea580c" in picture  # the one taken
    assert "f2 7" not in picture or "f2" in picture
    other = Layout.from_wire("4:s:1+12,a:1+3,f1:4+3,f2:7+6")
    both = side_by_side(lay, other)
    assert both.count("#dc2626") == 2 and ">model</text>" in both and ">kernel</text>" in both
    assert text(lay, taken=4) == ["span 1+12: [a 1+3] [*a 4+3] [f2 7+6]"]
    assert text(Layout(0, ())) == ["(empty map)"]


def test_model_explain_prints_the_map_step_by_step(capsys):
    from pathlib import Path

    from harness.cli import main

    r1 = Path(__file__).resolve().parents[2] / "harness" / "traces" / "rmap" / "R01-no-coalescing-across-spans.yaml"
    assert main(["model", str(r1), "--explain"]) == 0
    out = capsys.readouterr().out
    step5 = out.split("   5  rmalloc(m, 100) -> 1100\n", 1)[1].split("\n   6 ", 1)[0]
    assert step5.splitlines() == ["        span 1000+100: [f6 1000+100]", "        span 1100+100: [*a 1100+100]"]
