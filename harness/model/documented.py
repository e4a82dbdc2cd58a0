"""What the manual pages promise (rmalloc(9F) family, ddi_umem_alloc(9F),
devmap_umem_setup(9F), devmap(9E), kmem_alloc(9F)), read as an SVR4-style
implementation.  It exists to show, step by step, where a real kernel departs
from its documentation.

Resource maps: ``mapsize`` slots.  A slot holds one free segment (address
ordered); at most ``mapsize`` allocations may be outstanding.  rmalloc is
first fit by address and returns 0 when nothing fits or the slots are
exhausted; rmfree merges with both neighbours, and a free that needs a new
slot when all are taken loses the space with the SVR4 warning.  Misuse the
pages call undefined ("must exactly match") is modelled as the SVR4 code
would take it: an ordinary free.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from harness.trace import Step
from harness.model import outcome as R
from harness.model.base import ModelConfig
from harness.model.outcome import Result
from harness.model.umem import page_round
from harness.ops import PAGESIZE, UMEM_FLAGS


@dataclass
class SvrMap:
    mapsize: int
    starts: list[int] = field(default_factory=list)  # free segments, sorted by address
    sizes: list[int] = field(default_factory=list)
    outstanding: int = 0

    def alloc(self, size: int) -> int:
        if size == 0 or self.outstanding >= self.mapsize:
            return 0
        for i, (s, n) in enumerate(zip(self.starts, self.sizes)):
            if n >= size:
                if n == size:
                    del self.starts[i], self.sizes[i]
                else:
                    self.starts[i] += size
                    self.sizes[i] -= size
                self.outstanding += 1
                return s
        return 0

    def free(self, size: int, index: int) -> str | None:
        """Return the overflow warning when the space is lost."""
        if self.outstanding:
            self.outstanding -= 1
        i = bisect.bisect_left(self.starts, index)
        merge_prev = i > 0 and self.starts[i - 1] + self.sizes[i - 1] == index
        merge_next = i < len(self.starts) and index + size == self.starts[i]
        if merge_prev and merge_next:
            self.sizes[i - 1] += size + self.sizes[i]
            del self.starts[i], self.sizes[i]
        elif merge_prev:
            self.sizes[i - 1] += size
        elif merge_next:
            self.starts[i] = index
            self.sizes[i] += size
        elif len(self.starts) >= self.mapsize:
            return f"WARNING: rmfree map overflow <m>. Lost {size} items at {index}"
        else:
            self.starts.insert(i, index)
            self.sizes.insert(i, size)
        return None

    def state(self) -> dict[str, int]:
        return {"free_slots": self.mapsize - len(self.starts), "free_units": sum(self.sizes),
                "outstanding": self.outstanding}


class DocumentedModel:
    name = "documented"

    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config = config or ModelConfig()
        self.maps: dict[str, SvrMap] = {}
        self.waiters: dict[str, tuple[str, int, int | None]] = {}
        self.cookies: dict[str, int] = {}

    def state(self, map_name: str) -> dict[str, int] | None:
        m = self.maps.get(map_name)
        return m.state() if m else None

    def layout(self, map_name: str) -> None:
        return None  # the manual pages say nothing of a layout

    def step(self, step: Step) -> Result:
        a, op = step.args, step.op
        if op in ("rmallocmap", "rmallocmap_wait"):
            self.maps[a["map"]] = SvrMap(a["mapsize"])
            return R.ok()
        if op == "rmalloc":
            return R.value(self.maps[a["map"]].alloc(a["size"]))
        if op == "rmalloc_wait":
            got = self.maps[a["map"]].alloc(a["size"])
            if a.get("waiter"):
                self.waiters[a["waiter"]] = (a["map"], a["size"], got or None)
                return R.ok()
            return R.value(got) if got else R.hang(note="waits for space that never comes")
        if op == "rmfree":
            m = self.maps[a["map"]]
            warning = m.free(a["size"], a["index"])
            self._wake(a["map"])
            if warning:
                return Result("ok", warnings=(warning.replace("<m>", f"<{a['map']}>"),))
            return R.ok()
        if op == "rmfreemap":
            del self.maps[a["map"]]
            return R.ok()
        if op == "join":
            _, size, got = self.waiters.pop(a["waiter"])
            return R.value(got) if got else R.hang()
        if op == "umem_alloc":
            length = page_round(a["size"])
            if a["size"] == 0 or length == 0:
                return R.null()
            self.cookies[a["buf"]] = length
            flags = step.flags("flags")
            note = "DDI_UMEM_TRASH is not documented" if flags & UMEM_FLAGS["DDI_UMEM_TRASH"] else None
            attrs = {"align": PAGESIZE, "zeroed": True}
            if flags & UMEM_FLAGS["DDI_UMEM_NOSLEEP"]:
                attrs["may_fail"] = True  # "DDI_UMEM_NOSLEEP ... may return NULL"
            return Result("value", value=length, attrs=attrs, note=note)
        if op == "umem_free":
            return R.ok()
        if op == "umem_export":
            size = self.cookies.get(a["buf"])
            off, length = a["off"], a["len"]
            if (size is None or step.flags("flags") != 0 or off < 0 or off % PAGESIZE
                    or length % PAGESIZE or length == 0 or off + length > size):
                return R.error("EINVAL", note="devmap(9E) should return EINVAL; mmap(2) gets EINVAL")
            if step.flags("prot") & ~step.flags("maxprot"):
                return R.error("EACCES")
            return R.ok(coherent=True) if a["mapping"] == "shared" else R.ok()
        if op in ("kmem_alloc", "kmem_zalloc"):
            if a["size"] == 0:
                return R.null()
            attrs = {"align": 8}
            if op == "kmem_zalloc":
                attrs["zeroed"] = True
            if step.flags("flags") & 1:  # KM_NOSLEEP "may fail and return NULL"
                attrs["may_fail"] = True
            return Result("value", value=a["size"], attrs=attrs)
        if op == "kmem_free":
            return R.ok()
        raise AssertionError(op)

    def _wake(self, map_name: str) -> None:
        m = self.maps[map_name]
        for w, (mn, size, got) in list(self.waiters.items()):
            if mn == map_name and got is None:
                got = m.alloc(size)
                if got:
                    self.waiters[w] = (mn, size, got)
