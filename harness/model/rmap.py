"""illumos rmap.c: six wrappers over vmem (usr/src/uts/common/os/rmap.c; rmalloc(9F), rmallocmap(9F)).

rmallocmap ignores mapsize; rmalloc/rmalloc_wait are vmem_alloc NOSLEEP/SLEEP;
rmfree frees when vmem_contains says the range lies in one span and adds a
new span otherwise; rmfreemap warns about leaked units.

``fail`` counts allocations that failed (vmem_xalloc() found nothing), never a
success at address 0 -- possible once a span wraps past 2^64 -- though rmalloc
returns 0 for both.

Sleepers (vmem_xalloc(), vmem_freelist_insert()): rmalloc_wait with nothing to
fit counts ``wait`` and sleeps in cv_wait on the arena's cv.  Every freelist
insertion broadcasts that cv, waking *every* sleeper of the arena.  When the
thread that inserted lets go of the arena, the woken sleepers run one at a
time in the order they went to sleep; each retries with the vmem_xalloc()
search (not the instant fit) and either takes its segment (a carve that
re-inserts a remainder broadcasts again, waking whoever sleeps by then) or
counts ``wait`` once more and goes back to sleep, at the end of the queue.
A foreground sleeper that nothing can satisfy is a hang; a background one
(``waiter:``) is collected by ``join``.  The 15 s vmem_update broadcast is not
modelled: it only adds to ``wait`` with the passage of time.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.model import outcome as R
from harness.model.outcome import Result
from harness.model.vmem import Vmem, VmemPanic


@dataclass(eq=False)
class Waiter:
    map_name: str
    size: int
    ticket: int = 0            # sleep order
    result: int | None = None  # the index once satisfied
    state: dict[str, int] | None = None  # the map's counters when rmalloc_wait returned


class RmapState:
    """All maps and background waiters of one trace."""

    def __init__(self, debug: bool = False) -> None:
        self.debug = debug
        self.maps: dict[str, Vmem] = {}
        self.waiters: dict[str, Waiter] = {}
        self.woken: list[Waiter] = []  # woken by a broadcast, not yet run (every arena's)
        self.tickets = 0

    # Each method returns the Result and raises VmemPanic for a panic.

    def rmallocmap(self, name: str) -> Result:
        vm = Vmem("rmap", f"<{name}>", debug=self.debug)
        vm.woken = self.woken  # one queue: sleepers run in sleep order whichever arena woke them
        self.maps[name] = vm
        return R.ok()

    def _map(self, name: str) -> Vmem:
        vm = self.maps[name]
        vm.check_defined()
        return vm

    def rmalloc(self, name: str, size: int) -> Result:
        vm = self._map(name)
        addr = vm.try_alloc(size)
        if addr is None:
            vm.fail += 1  # kmem_reap() runs too: a system-wide side effect
            return R.value(0)
        return R.value(addr)

    def _sleep(self, vm: Vmem, w: Waiter) -> None:
        vm.wait += 1
        self.tickets += 1
        w.ticket = self.tickets
        vm.sleeping.append(w)

    def rmalloc_wait(self, name: str, size: int, waiter: str | None) -> Result:
        vm = self._map(name)
        addr = vm.try_alloc(size)
        w = Waiter(name, size, result=addr)
        if addr is not None:
            w.state = vm.counters()
        if waiter is not None:
            self.waiters[waiter] = w
            if addr is None:
                self._sleep(vm, w)
            return R.ok()
        if addr is not None:
            return R.value(addr)
        vm.wait += 1
        return R.hang(note=f"no free segment of {size} units can appear: cv_wait never returns")

    def settle(self) -> None:
        """Run every woken sleeper, oldest first, until all have returned or sleep again."""
        while self.woken:
            w = min(self.woken, key=lambda x: x.ticket)
            self.woken.remove(w)
            vm = self.maps.get(w.map_name)
            if vm is None:  # the map was destroyed under it (destructive misuse)
                continue
            vm.check_defined()
            try:
                addr = vm.xalloc(w.size)
            except VmemPanic:  # size 0 cannot be asleep: it panics at once
                continue
            if addr is None:
                self._sleep(vm, w)
            else:
                w.result = addr
                w.state = vm.counters()

    def check_rmfree(self, name: str, size: int, index: int, any_order: bool = False) -> bool:
        """Raise VmemPanic if rmfree would panic; return True for the free branch.

        vmem_contains counts in ``contains``; the caller decides whether to go on.
        ``any_order`` (the driver's guard): a free also counts as a panic when it
        would panic under *some* order of the hash chain at ``index``.  The chain
        holds same-start segments newest first only until vmem_hash_rescale
        (vmem_update, every 15 s) reverses it, so a free is safe for sure only
        when every allocated segment starting at ``index`` has ``size``.
        """
        vm = self._map(name)
        if vm.contains_range(index, size):
            vm.check_free(index, size)
            if any_order:
                for seg in vm.hash.get(index, ()):
                    if seg.size != size:
                        raise VmemPanic(
                            f"vmem_hash_delete({vm.ptr}, {index:x}, {size}): wrong size (expect {seg.size}) "
                            "once vmem_hash_rescale has reversed the chain of same-start segments")
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
        self._map(name)
        vm = self.maps.pop(name)
        leaked = vm.mem_inuse
        if leaked:
            return Result("ok", warnings=(f"WARNING: vmem_destroy('rmap'): leaked {leaked} bytes",),
                          note="the units leak; the map is destroyed anyway")
        return R.ok()

    def join(self, waiter: str) -> Result:
        w = self.waiters.pop(waiter)
        if w.result is not None:
            r = R.value(w.result)
            r.state = w.state
            return r
        return R.hang(note=f"rmalloc_wait({w.map_name}, {w.size}) is still asleep")

    def sleepers(self, map_name: str) -> bool:
        return any(w.map_name == map_name and w.result is None for w in self.waiters.values())
