"""illumos rmap.c: six wrappers over vmem (usr/src/uts/common/os/rmap.c; rmalloc(9F), rmallocmap(9F)).

rmallocmap ignores mapsize; rmalloc/rmalloc_wait are vmem_alloc NOSLEEP/SLEEP;
rmfree frees when vmem_contains says the range lies in one span and adds a
new span otherwise; rmfreemap warns about leaked units.

Sleepers: rmalloc_wait with nothing to fit sleeps (``wait`` +1) and retries
after every freelist insertion in its arena (each insertion broadcasts the
arena cv).  A foreground sleeper that can never be satisfied is a hang; a
background one (``waiter:``) is retried after each later step and its
result collected by ``join``.  The 15 s vmem_update broadcast is not
modelled: it only adds to ``wait`` with the passage of time.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.model import outcome as R
from harness.model.outcome import Result
from harness.model.vmem import Vmem, VmemPanic


@dataclass
class Waiter:
    map_name: str
    size: int
    result: int | None = None  # the index once satisfied


class RmapState:
    """All maps and background waiters of one trace."""

    def __init__(self) -> None:
        self.maps: dict[str, Vmem] = {}
        self.waiters: dict[str, Waiter] = {}

    # Each method returns the Result and raises VmemPanic for a panic.

    def rmallocmap(self, name: str) -> Result:
        self.maps[name] = Vmem("rmap", f"<{name}>")
        return R.ok()

    def rmalloc(self, name: str, size: int) -> Result:
        vm = self.maps[name]
        addr = vm.try_alloc(size)
        if addr == 0:
            vm.fail += 1  # kmem_reap() runs too: a system-wide side effect
        return R.value(addr)

    def rmalloc_wait(self, name: str, size: int, waiter: str | None) -> Result:
        vm = self.maps[name]
        addr = vm.try_alloc(size)
        if waiter is not None:
            w = Waiter(name, size, addr or None)
            if not addr:
                vm.wait += 1
            self.waiters[waiter] = w
            return R.ok()
        if addr:
            return R.value(addr)
        vm.wait += 1
        return R.hang(note=f"no free segment of {size} units can appear: cv_wait never returns")

    def check_rmfree(self, name: str, size: int, index: int) -> bool:
        """Raise VmemPanic if rmfree would panic; return True for the free branch.

        vmem_contains counts in ``contains``; the caller decides whether to go on.
        """
        vm = self.maps[name]
        if vm.contains_range(index, size):
            vm.check_free(index, size)
            return True
        vm.check_add(index, size)
        return False

    def rmfree(self, name: str, size: int, index: int, contained: bool) -> Result:
        vm = self.maps[name]
        if contained:
            vm.free_range(index, size)
        else:
            vm.add(index, size)
        return R.ok()

    def rmfreemap(self, name: str) -> Result:
        vm = self.maps.pop(name)
        leaked = vm.mem_inuse
        if leaked:
            return Result("ok", warnings=(f"WARNING: vmem_destroy('rmap'): leaked {leaked} bytes",),
                          note="the units leak; the map is destroyed anyway")
        return R.ok()

    def join(self, waiter: str) -> Result:
        w = self.waiters.pop(waiter)
        if w.result is not None:
            return R.value(w.result)
        return R.hang(note=f"rmalloc_wait({w.map_name}, {w.size}) is still asleep")

    def wake(self, inserts_before: dict[str, int]) -> None:
        """Retry sleeping waiters of every arena that had a freelist insertion."""
        progress = True
        while progress:
            progress = False
            for w in self.waiters.values():
                if w.result is not None or w.map_name not in self.maps:
                    continue
                vm = self.maps[w.map_name]
                if vm.inserts == inserts_before.get(w.map_name, vm.inserts):
                    continue
                inserts_before[w.map_name] = vm.inserts
                try:
                    addr = vm.try_alloc(w.size)
                except VmemPanic:  # size 0 cannot be asleep: it panics at once
                    continue
                if addr:
                    w.result = addr
                    progress = True
                else:
                    vm.wait += 1

    def sleepers(self, map_name: str) -> bool:
        return any(w.map_name == map_name and w.result is None for w in self.waiters.values())

    def insert_counts(self) -> dict[str, int]:
        return {n: vm.inserts for n, vm in self.maps.items()}
