"""harness/protocol.py: step -> ddictl line, ddictl line -> Result."""

from __future__ import annotations

import pytest

from harness.conformance.traces import Step, parse_trace
from harness.model.outcome import Result
from harness.protocol import ProtocolError, control_budget, decode, encode, format_result


def steps(*docs):
    return parse_trace({"name": "t", "steps": list(docs)}).steps


def test_encode_rmap_ops():
    s = steps({"op": "rmallocmap", "map": "m", "mapsize": 12},
              {"op": "rmfree", "map": "m", "size": 12, "index": 1},
              {"op": "rmalloc", "map": "m", "size": 3},
              {"op": "rmalloc_wait", "map": "m", "size": 5},
              {"op": "rmalloc_wait", "map": "m", "size": 5, "waiter": "w"},
              {"op": "join", "waiter": "w"},
              {"op": "rmfreemap", "map": "m"})
    assert [encode(x) for x in s] == [
        "rmallocmap map=m mapsize=12",
        "rmfree map=m size=12 index=1",
        "rmalloc map=m size=3",
        "rmalloc_wait map=m size=5 waiter=-",
        "rmalloc_wait map=m size=5 waiter=w",
        "join waiter=w",
        "rmfreemap map=m",
    ]


def test_encode_flags_null_bool_negative():
    s = steps({"op": "umem_alloc", "buf": "b", "size": 5000, "flags": ["DDI_UMEM_NOSLEEP", "DDI_UMEM_PAGEABLE"]},
              {"op": "umem_export", "buf": "b", "off": -4096, "len": 8192, "maxprot": "PROT_READ|PROT_WRITE",
               "flags": ["DEVMAP_MAPPING_INVALID"], "mapping": "private", "setup_twice": True},
              {"op": "umem_export", "buf": "b", "len": 100, "maplen": 8192},
              {"op": "umem_free", "buf": None},
              {"op": "kmem_alloc", "buf": "k", "size": 2**64 - 1, "flags": []},
              {"op": "kmem_free", "buf": None, "size": 0})
    assert [encode(x) for x in s] == [
        "umem_alloc buf=b size=5000 flags=0x3",
        "umem_export buf=b off=-4096 len=8192 maxprot=0x3 flags=0x1 prot=0x3 mapping=private maplen=- setup_twice=1",
        "umem_export buf=b off=0 len=100 maxprot=0xf flags=0x0 prot=0x3 mapping=shared maplen=8192 setup_twice=0",
        "umem_free buf=-",
        "kmem_alloc buf=k size=18446744073709551615 flags=0x0",
        "kmem_free buf=- size=0",
    ]


def test_encode_every_token_is_key_value():
    s = steps({"op": "umem_alloc", "buf": "b", "size": 1, "flags": []},
              {"op": "umem_export", "buf": "b", "len": 4096})
    for line in map(encode, s):
        op, *rest = line.split(" ")
        assert "=" not in op and all(t.count("=") == 1 and not t.endswith("=") for t in rest)


def test_encode_rejects_unrepresentable():
    with pytest.raises(ProtocolError):
        encode(Step("rmalloc", {"map": "bad name", "size": 1}))
    with pytest.raises(ProtocolError):
        encode(Step("rmalloc", {"map": "m", "size": -1}))
    with pytest.raises(ProtocolError):
        encode(Step("rmalloc", {"map": "m", "size": 1 << 64}))
    with pytest.raises(ProtocolError):
        encode(Step("kmem_alloc", {"buf": "b", "size": 1, "flags": ("NOT_A_FLAG",)}))
    with pytest.raises(ProtocolError):
        encode(Step("umem_export", {"buf": "b", "off": 1 << 63, "len": 1, "maxprot": (), "flags": (),
                                    "prot": (), "mapping": "shared", "maplen": None, "setup_twice": False}))


@pytest.mark.parametrize("line,expected", [
    ("kind=value value=1100 avail=100 total=200",
     Result("value", value=1100, state={"avail": 100, "total": 200})),
    ("kind=ok avail=0 total=0", Result("ok", state={"avail": 0, "total": 0})),
    ("kind=null", Result("null")),
    ("kind=error errno=EBUSY avail=0 total=12",
     Result("error", message="EBUSY", state={"avail": 0, "total": 12})),
    ("kind=error errno=ENOTSUP", Result("error", message="ENOTSUP")),
    ("kind=value value=8192 offset=0 zeroed=1 type=0x200 cookie_size=8192",
     Result("value", value=8192, attrs={"offset": 0, "zeroed": True, "type": 0x200, "cookie_size": 8192})),
    ("kind=value value=128 offset=2048 zeroed=0",
     Result("value", value=128, attrs={"offset": 2048, "zeroed": False})),
    ("kind=ok coherent=1", Result("ok", attrs={"coherent": True})),
    ("kind=ok coherent=0\r\n", Result("ok", attrs={"coherent": False})),
    ("kind=hang", Result("hang")),
    ("kind=value value=18446744073709551615", Result("value", value=2**64 - 1)),
    # the illumos port: an rmap arena's vmem kstat counters
    ("kind=value value=1 mem_total=12 mem_inuse=3 alloc=1 free=0 fail=0 wait=0 contains=1",
     Result("value", value=1, state={"mem_total": 12, "mem_inuse": 3, "alloc": 1, "free": 0,
                                      "fail": 0, "wait": 0, "contains": 1})),
    ("kind=error errno=EINVAL mem_total=0 mem_inuse=0 alloc=0 free=0 fail=2 wait=1 contains=0",
     Result("error", message="EINVAL", state={"mem_total": 0, "mem_inuse": 0, "alloc": 0, "free": 0,
                                               "fail": 2, "wait": 1, "contains": 0})),
    ("kind=ok avail=5 total=7 mem_total=7 mem_inuse=2 alloc=1 free=0 fail=0 wait=0 contains=3",
     Result("ok", state={"avail": 5, "total": 7, "mem_total": 7, "mem_inuse": 2, "alloc": 1,
                         "free": 0, "fail": 0, "wait": 0, "contains": 3})),
])
def test_decode(line, expected):
    got = decode(line)
    assert got == expected
    assert decode(format_result(got)) == got


@pytest.mark.parametrize("line", [
    "",
    "   ",
    "hello",
    "value=1",
    "kind=maybe",
    "kind=value value=",
    "kind=value value=-1",
    "kind=value value=1.5",
    "kind=value value=18446744073709551616",
    "kind=value value=1 value=2",
    "kind=ok value=3",
    "kind=error",
    "kind=error errno=einval",
    "kind=ok errno=EINVAL",
    "kind=ok coherent=2",
    "kind=value value=1 zeroed=yes",
    "kind=value value=1 avail=3",
    "kind=value value=1 total=3",
    "kind=value value=1 bogus=3",
    "kind=ok =1",
    "[ 4.40] kernel BUG at lib/genalloc.c:255!",
    "kind=value value=0x",
    "kind=ok mem_total=1",
    "kind=ok mem_total=1 mem_inuse=0 alloc=0 free=0 fail=0 wait=0",
    "kind=ok mem_total=1 mem_inuse=0 alloc=0 free=0 fail=0 wait=0 contains=-1",
    "kind=ok mem_total=1 mem_inuse=0 alloc=0 free=0 fail=0 wait=0 contains=x",
    "kind=ok mem_total=1 mem_total=1 mem_inuse=0 alloc=0 free=0 fail=0 wait=0 contains=0",
    "kind=ok mem_total=18446744073709551616 mem_inuse=0 alloc=0 free=0 fail=0 wait=0 contains=0",
    "kind=ok mem_total=1 mem_inuse=0 alloc=0 free=0 fail=0 wait=0 contains=0 avail=1",
])
def test_decode_rejects_garbage(line):
    with pytest.raises(ProtocolError):
        decode(line)


def test_decode_rejects_non_text():
    with pytest.raises(ProtocolError):
        decode(b"kind=ok")  # type: ignore[arg-type]


def test_round_trip_every_kind():
    for r in (Result("value", value=7, attrs={"offset": 16}, state={"avail": 1, "total": 2}),
              Result("null", attrs={"zeroed": True}), Result("ok"), Result("error", message="EACCES"),
              Result("hang")):
        assert decode(format_result(r)) == r


def test_control_budget():
    assert control_budget(2000) == "budget_ms=2000"
    for bad in (0, -1, True, "10", 10**9):
        with pytest.raises(ProtocolError):
            control_budget(bad)


def test_vmem_counters_round_trip_and_order():
    counters = {"mem_total": 200, "mem_inuse": 100, "alloc": 2, "free": 1, "fail": 1, "wait": 1,
                "contains": 4}
    r = Result("value", value=1100, state=dict(counters))
    line = format_result(r)
    assert line == ("kind=value value=1100 mem_total=200 mem_inuse=100 alloc=2 free=1 fail=1 "
                    "wait=1 contains=4")
    assert decode(line) == r
    both = Result("ok", state={"avail": 1, "total": 2, **counters})
    assert decode(format_result(both)) == both


def test_value_the_driver_cannot_observe():
    """illumos kmem: non-NULL, but the cache (the value) is not observable from a driver."""
    r = decode("kind=value offset=64 zeroed=1")
    assert r.kind == "value" and r.value is None and r.attrs == {"offset": 64, "zeroed": True}
