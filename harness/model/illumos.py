"""The illumos model: exact predictions for a non-DEBUG (or DEBUG) illumos kernel.

One mechanism for the driver's guards: every op first computes its raw
kernel outcome without changing state when that outcome is a panic or a
silent heap corruption.  With ``destructive`` the misuse goes through (the
kernel panics, the trace ends); without it the driver refuses the request
with EINVAL and nothing changes.
"""

from __future__ import annotations

from harness.trace import LAYOUT_LISTED, Layout, Step
from harness.model import outcome as R
from harness.model.base import ModelConfig
from harness.model.kmem import KmemState
from harness.model.outcome import Result, ResultKind
from harness.model.rmap import RmapState
from harness.model.umem import UmemState
from harness.model.vmem import VmemPanic, VmemUndefined
from harness.ops import U64


RMAP_OPS = frozenset(("rmallocmap", "rmallocmap_wait", "rmalloc", "rmalloc_wait", "rmfree",
                      "rmfreemap", "join"))


def refused(why: str) -> Result:
    return R.error("EINVAL", note=f"the driver refuses misuse outside destructive mode: {why}")


class IllumosModel:
    name = "illumos"

    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config = config or ModelConfig()
        self.rmap = RmapState(self.config.debug)
        self.umem = UmemState(self.config.mem_limit)
        self.kmem = KmemState(self.config.kmem_flags, self.config.debug, self.config.mem_limit)

    def state(self, map_name: str) -> dict[str, int] | None:
        vm = self.rmap.maps.get(map_name)
        return vm.counters() if vm is not None else None

    def layout(self, map_name: str) -> Layout | None:
        vm = self.rmap.maps.get(map_name)
        if vm is None or vm.undefined is not None:
            return None  # gone, or outside what the model follows
        total, _, body = vm.layout_wire(LAYOUT_LISTED).partition(":")
        return Layout(int(total), body=body)

    def step(self, step: Step) -> Result:
        a = step.args
        op = step.op
        if op in RMAP_OPS:
            try:
                result = self._rmap(op, a)
                self.rmap.settle()  # woken sleepers run before anyone reads the counters
            except VmemUndefined as u:
                return R.undefined(str(u))
            except VmemPanic as p:
                if self.config.destructive:
                    result = R.panic(str(p))
                else:
                    if op == "rmfree":  # the driver refuses before rmfree's vmem_contains runs
                        rm_map = self.rmap.maps[a["map"]]
                        rm_map.contains -= 1
                    result = refused(str(p))
            return result
        if op.startswith("umem"):
            if op == "umem_alloc":
                return self.umem.alloc(a["buf"], a["size"], step.flags("flags"))
            if op == "umem_free":
                return self.umem.free(a["buf"], guarded=not self.config.destructive)
            if not self.config.destructive and self.umem.export_is_unsafe(a["off"], a["len"]):
                return refused("a negative or wrapping offset maps memory outside the buffer")
            if not self.config.destructive and self.umem.export_is_cookieless(step.flags("flags")):
                return refused("DEVMAP_MAPPING_INVALID|DEVMAP_ALLOW_REMAP sets up a handle without a "
                               "cookie: the first access panics")
            return self.umem.export(a["buf"], a["off"], a["len"], step.flags("maxprot"),
                                    step.flags("flags"), step.flags("prot"), a["mapping"],
                                    a["maplen"], a["setup_twice"])
        if op in ("kmem_alloc", "kmem_zalloc"):
            result = self.kmem.alloc(a["buf"], a["size"], step.flags("flags"), op == "kmem_zalloc")
            if result.kind is ResultKind.PANIC and not self.config.destructive:
                return refused(result.message or "")
            return result
        return self._kmem_free(a["buf"], a["size"])

    def _rmap(self, op: str, a: dict) -> Result:
        rm = self.rmap
        if op == "rmalloc":
            return rm.rmalloc(a["map"], a["size"])
        if op in ("rmallocmap", "rmallocmap_wait"):
            return rm.rmallocmap(a["map"])
        if op == "rmalloc_wait":
            return rm.rmalloc_wait(a["map"], a["size"], a.get("waiter"))
        if op == "rmfree":
            # the driver decides from its own record, whatever the hash-chain order
            contained = rm.check_rmfree(a["map"], a["size"], a["index"], any_order=not self.config.destructive)
            if not contained and not self.config.destructive and a["index"] + a["size"] > U64:
                rm.maps[a["map"]].contains -= 1
                return refused("a span that wraps past 2^64 puts a free segment at 0 (undefined)")
            return rm.rmfree(a["map"], a["size"], a["index"], contained)
        if op == "rmfreemap":
            if not self.config.destructive and rm.sleepers(a["map"]):
                return R.error("EBUSY", note="a thread is asleep in rmalloc_wait on this map")
            return rm.rmfreemap(a["map"])
        if op == "join":
            return rm.join(a["waiter"])
        raise AssertionError(op)

    def _kmem_free(self, name: str | None, size: int) -> Result:
        buf = self.kmem.bufs.get(name) if name else None
        if not self.config.destructive and buf is not None and buf.freed:
            return R.error("EBADF", note="the buffer's handle was released by the first kmem_free")
        if not self.config.destructive:
            # probe on a copy of the one buffer record: the guard must not change state
            buf = self.kmem.bufs.get(name) if name else None
            saved = None if buf is None else (buf.freed,)
            result, corrupts = self.kmem.free(name, size)
            if result.kind is ResultKind.PANIC or corrupts:
                if buf is not None and saved is not None:
                    buf.freed = saved[0]
                return refused(result.message or result.note or "heap corruption")
            return result
        result, _ = self.kmem.free(name, size)
        return result
