"""Reference model of the LINUX PORT of the ddih driver (Debian 6.1.192-2).

Two layers, kept apart on purpose:

1. The raw kernel (Linux 6.1 as Debian builds it, 6.1.192-2): ``GenPool`` is
   lib/genalloc.c: gen_pool_create(0, -1), gen_pool_add_owner(),
   gen_pool_alloc_algo_owner() with gen_pool_first_fit() (first-fit bitmap,
   chunks newest-first), gen_pool_free_owner() (partial frees, BUG 505/508)
   and gen_pool_destroy() (BUG 255), with the allocated units of each chunk
   held as a sorted list of merged half-open intervals (bisect) instead of a
   bitmap; ``_Slab`` is the SLUB freelist-hardening check of mm/slub.c:
   set_freepointer() (BUG at mm/slub.c:419) and the large-kmalloc double free
   WARN of mm/slab_common.c: free_large_kmalloc(); ``ksize``/``kmalloc_align``
   are the size classes of mm/slab_common.c: kmalloc_slab() (size_index[],
   kmalloc_info[]) and kmalloc_large().
   Kernel failures are raised as ``KernelBug`` and become ``panic`` results.

2. The driver (kmod/README.md, "Linux port policy"): every refusal of the
   port is a named row of ``GUARDS`` (errno + why) and goes through
   ``LinuxModel._refuse``.  ``ModelConfig.destructive=True`` switches off the
   guards listed in ``DESTRUCTIVE_PASSTHROUGH`` (the ones whose only purpose is
   to stop a kernel BUG), so the raw layer is reached and BUGs.  The argument
   sanity guards (size 0, wrapping range, index 0, the 2^24 chunk cap, the
   4096-chunk limit, rmfreemap while a waiter sleeps, umem/kmem caps) stay on
   in both modes, exactly as kmod/linux/ddih.c does.  Tests may pass
   ``guards=()`` to get the bare kernel behaviour (what the requests the
   guards refuse would do in the kernel).

Results: see harness/model/outcome.py.  Every rmap result except rmfreemap,
panic and hang carries ``state={"avail": gen_pool_avail, "total":
gen_pool_size}`` of its map after the step.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Callable, Iterable

from harness.trace import LAYOUT_LISTED, Layout, Step
from harness.model.base import ModelConfig
from harness.model.outcome import Result
from harness.ops import DEVMAP_FLAGS, PROT_FLAGS, UMEM_FLAGS

M = 1 << 64
PAGE_SIZE = 4096
PAGE_SHIFT = 12

# ----------------------------------------------------------------- kernel facts

# file:line of every BUG/WARN site the model can predict, for Debian's
# linux-image-6.1.0-56-amd64 (6.1.192-2).  Another 6.1.y build may shift them:
# keep them in this one table.
KERNEL_SITES: dict[str, str] = {
    "gen_pool_destroy": "lib/genalloc.c:255",  # chunk with bits still set
    "gen_pool_free_range": "lib/genalloc.c:505",  # addr + size - 1 > chunk end
    "gen_pool_free_bits": "lib/genalloc.c:508",  # a unit to clear was not set
    "slub_double_free": "mm/slub.c:419",  # set_freepointer naive check
    "free_large_kmalloc": "mm/slab_common.c:904",  # WARN, once per boot
}

GENPOOL_CHUNK_HEADER = 56  # sizeof(struct gen_pool_chunk) on x86_64
KMALLOC_MAX_CACHE_SIZE = 8192
KMALLOC_MAX_SIZE = 4 << 20
ZERO_SIZE_PTR = 0x10

# driver constants (kmod/README.md, "Linux port policy")
RMAP_CHUNK_MAX = 1 << 24  # rmfree add branch: size > this -> E2BIG
RMAP_MAX_CHUNKS = 4096  # more than this many chunks in a map -> ENOSPC
UMEM_MAX = 64 << 20  # umem_alloc: size > this -> NULL
UMEM_TOTAL_MAX = 128 << 20  # driver-wide: live PAGE_ALIGN(size) past this -> NULL
KMEM_TOTAL_MAX = 64 << 20  # driver-wide: live ksize() past this -> NULL
RMAP_TOTAL_UNITS = 1 << 28  # driver-wide: units in live maps' chunks past this -> ENOMEM
UMEM_COOKIE_TYPE = 0x200  # default cookie type
UMEM_COOKIE_TYPE_PAGEABLE = 0x100


def kernel_bug(site: str) -> str:
    """The console line of a BUG() at a KERNEL_SITES entry."""
    return f"kernel BUG at {KERNEL_SITES[site]}!"


class KernelBug(Exception):
    """A BUG()/oops in the raw kernel layer.  The guest runs with oops=panic."""

    def __init__(self, site: str):
        self.site = site
        super().__init__(kernel_bug(site))


def page_align(n: int) -> int:
    return (n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def get_order(n: int) -> int:
    """The kernel's get_order(): smallest order with PAGE_SIZE << order >= n (n >= 1)."""
    return max(0, ((n - 1) >> PAGE_SHIFT).bit_length())


def ksize(n: int) -> int:
    """ksize(kmalloc(n)) on SLUB x86_64; 0 for size 0 and for > 4 MiB (NULL).

    The classes of mm/slab_common.c: kmalloc_slab() and kmalloc_size_roundup().
    """
    if n == 0 or n > KMALLOC_MAX_SIZE:
        return 0
    if n <= 8:
        return 8
    if n <= 16:
        return 16
    if n <= 32:
        return 32
    if n <= 64:
        return 64
    if n <= 96:
        return 96
    if n <= 128:
        return 128
    if n <= 192:
        return 192
    if n <= KMALLOC_MAX_CACHE_SIZE:
        return 1 << (n - 1).bit_length()  # kmalloc-256 .. kmalloc-8k: fls(n - 1)
    return PAGE_SIZE << get_order(n)  # large: buddy pages


def kmalloc_align(n: int) -> int:
    """The practical address alignment the driver observes (measured; ARCH_KMALLOC_MINALIGN guarantees 8)."""
    k = ksize(n)
    if k == 96:
        return 32  # guaranteed 8; objects sit at page base + i * 96
    if k == 192:
        return 64  # guaranteed 8; page base + i * 192
    return k  # natural for power-of-two classes and for large allocations


# ------------------------------------------------------------ gen_pool (raw)


class Chunk:
    """One gen_pool chunk.  Allocated units = merged, sorted, half-open intervals
    [starts[i], ends[i]) of offsets from ``start``; adjacent intervals are merged,
    so every gap between two intervals is at least one unit wide."""

    __slots__ = ("start", "end", "size", "avail", "starts", "ends")

    def __init__(self, start: int, size: int):
        self.start = start
        self.end = (start + size - 1) % M  # inclusive, wraps
        self.size = (self.end - self.start + 1) % M  # chunk_size()
        self.avail = size % M
        self.starts: list[int] = []
        self.ends: list[int] = []

    def contains(self, addr: int) -> bool:
        return self.start <= addr <= self.end

    def used(self) -> int:
        return sum(e - s for s, e in zip(self.starts, self.ends))

    def find_fit(self, n: int) -> int | None:
        """bitmap_find_next_zero_area(bits, chunk_size, 0, n, 0): lowest free run."""
        if n > self.size:
            return None
        prev = 0
        for s, e in zip(self.starts, self.ends):
            if s - prev >= n:
                return prev
            prev = e
        return prev if self.size - prev >= n else None

    def covered(self, off: int, n: int) -> bool:
        """Every unit of [off, off + n) is allocated (n >= 1)."""
        i = bisect_right(self.starts, off) - 1
        return i >= 0 and self.ends[i] >= off + n

    def mark(self, off: int, n: int) -> None:
        """Set [off, off + n), which lies in a gap."""
        end = off + n
        i = bisect_left(self.starts, off)
        left = i > 0 and self.ends[i - 1] == off
        right = i < len(self.starts) and self.starts[i] == end
        if left and right:
            self.ends[i - 1] = self.ends[i]
            del self.starts[i], self.ends[i]
        elif left:
            self.ends[i - 1] = end
        elif right:
            self.starts[i] = off
        else:
            self.starts.insert(i, off)
            self.ends.insert(i, end)

    def clear(self, off: int, n: int) -> None:
        """Clear [off, off + n), which covered() said is allocated."""
        i = bisect_right(self.starts, off) - 1
        s, e = self.starts[i], self.ends[i]
        end = off + n
        pieces = [(a, b) for a, b in ((s, off), (end, e)) if b > a]
        self.starts[i:i + 1] = [a for a, _ in pieces]
        self.ends[i:i + 1] = [b for _, b in pieces]


class GenPool:
    """gen_pool_create(0, -1) with gen_pool_first_fit (lib/genalloc.c)."""

    def __init__(self, mem_limit: int = 256 << 20):
        self.chunks: list[Chunk] = []  # oldest first; walks go newest-first (reversed)
        self.mem_limit = mem_limit  # bytes vzalloc can get for one chunk
        self._avail = 0  # running sums of chunk.avail / chunk_size (mod 2^64 on read)
        self._size = 0

    def newest_first(self) -> Iterable[Chunk]:
        return reversed(self.chunks)

    # gen_pool_avail / gen_pool_size
    def avail(self) -> int:
        return self._avail % M

    def size(self) -> int:
        return self._size % M

    def counters(self) -> dict[str, int]:
        return {"avail": self.avail(), "total": self.size()}

    def layout(self, listed: int = LAYOUT_LISTED) -> Layout:
        """Each chunk as the pool's list walks it (newest first: gen_pool_add puts a chunk at the
        head), then its runs of allocated and free units in address order."""
        out: list[str] = []
        total = 0
        for c in self.newest_first():
            runs: list[str] = []
            prev = 0
            for s, e in zip(c.starts, c.ends):
                if s > prev:
                    runs.append(f"f:{(c.start + prev) % M}+{s - prev}")
                runs.append(f"a:{(c.start + s) % M}+{e - s}")
                prev = e
            if c.size > prev:
                runs.append(f"f:{(c.start + prev) % M}+{c.size - prev}")
            total += 1 + len(runs)
            out.append(f"s:{c.start}+{c.size}")
            out.extend(runs)
        return Layout(total, body=",".join(out[:listed]))

    def has_addr(self, start: int, size: int) -> bool:
        end = (start + size - 1) % M
        return any(c.start <= start <= c.end and end <= c.end for c in self.newest_first())

    def add(self, addr: int, size: int) -> int:
        """gen_pool_add(pool, addr, size, -1): 0, or -12 when vzalloc fails."""
        longs = ((size + 63) % M) // 64  # BITS_TO_LONGS wraps for size > 2^64 - 64
        if GENPOOL_CHUNK_HEADER + 8 * longs > self.mem_limit:
            return -12
        c = Chunk(addr, size)
        self.chunks.append(c)
        self._avail += c.avail
        self._size += c.size
        return 0

    def _free_target(self, addr: int, size: int) -> tuple[Chunk | None, str | None]:
        """The chunk gen_pool_free would clear in, and the BUG site it would hit."""
        c = next((c for c in self.newest_first() if c.contains(addr)), None)
        if c is None:
            return None, "gen_pool_free_bits"  # BUG 518: unreachable after has_addr
        if (addr + size - 1) % M > c.end:
            return c, "gen_pool_free_range"
        if size > 0 and not c.covered(addr - c.start, size):
            return c, "gen_pool_free_bits"
        return c, None

    def free_would_bug(self, addr: int, size: int) -> str | None:
        return self._free_target(addr, size)[1]

    def free(self, addr: int, size: int) -> None:
        """gen_pool_free(pool, addr, size); raises KernelBug."""
        c, bug = self._free_target(addr, size)
        if bug is not None:
            raise KernelBug(bug)
        assert c is not None
        if size > 0:
            c.clear(addr - c.start, size)
            c.avail = (c.avail + size) % M
            self._avail += size

    def alloc(self, size: int) -> int:
        """gen_pool_alloc(pool, size): an address (which may be 0!) or 0.

        Not modelled: nbits >= 2^32 is truncated by the algorithm's unsigned
        int nr (lib/genalloc.c: gen_pool_first_fit()); reachable only through
        an overflowed chunk (size > 2^64 - 64 rounds to a 0-byte bitmap in
        gen_pool_add_owner()), which the port's 2^24 cap refuses.
        """
        if size == 0:
            return 0
        for c in self.newest_first():
            if size > c.avail:
                continue
            off = c.find_fit(size)
            if off is None:
                continue
            c.mark(off, size)
            c.avail = (c.avail - size) % M
            self._avail -= size
            return (c.start + off) % M
        return 0

    def destroy(self) -> None:
        """gen_pool_destroy(pool); raises KernelBug 255 if a chunk has bits set."""
        for c in self.newest_first():
            if c.starts:
                raise KernelBug("gen_pool_destroy")
        self.chunks.clear()
        self._avail = self._size = 0


# ----------------------------------------------------------- SLUB (raw)


class _Slab:
    """kmalloc/kfree pointer identities, enough for the double-free checks.

    Per kmalloc-N cache we keep the LIFO stack of our own freed objects on the
    (single) CPU's freelist: kfree of the object at its head is the hardened
    freelist's naive check, ``kernel BUG at mm/slub.c:419!``; kmalloc from
    that cache pops the head (the same pointer comes back: the freelist is LIFO).  An empty
    stack means the head is some object the trace never saw.  Large
    allocations (> 8192) freed twice warn once per boot and return.

    Not modelled: other kmalloc traffic between two ops (the driver's own
    ddih_obj / gen_pool / vm_struct objects live in kmalloc-64, vmalloc page
    arrays in small classes, and the guest's I/O path uses many classes), so
    only a second kfree directly after the first is a reliable prediction.
    """

    def __init__(self) -> None:
        self.next_ptr = 1
        self.freelists: dict[int, list[int]] = {}
        self.free_large: set[int] = set()
        self.warned_large = False

    def kmalloc(self, n: int) -> int | None:
        """Pointer identity for kmalloc(n): None for NULL, 0 for ZERO_SIZE_PTR."""
        if n == 0:
            return 0
        k = ksize(n)
        if k == 0:
            return None
        if k <= KMALLOC_MAX_CACHE_SIZE:
            fl = self.freelists.setdefault(k, [])
            if fl:
                return fl.pop()
        ptr = self.next_ptr
        self.next_ptr += 1
        self.free_large.discard(ptr)
        return ptr

    def kfree(self, ptr: int | None, k: int) -> tuple[str, ...]:
        """kfree(ptr) of an object of ksize k; returns console warnings, raises KernelBug."""
        if not ptr:  # NULL or ZERO_SIZE_PTR
            return ()
        if k <= KMALLOC_MAX_CACHE_SIZE:
            fl = self.freelists.setdefault(k, [])
            if fl and fl[-1] == ptr:
                raise KernelBug("slub_double_free")
            fl.append(ptr)
            return ()
        if ptr in self.free_large:
            if self.warned_large:
                return ()
            self.warned_large = True
            return (f"WARNING: CPU: <cpu> PID: <pid> at {KERNEL_SITES['free_large_kmalloc']} "
                    "free_large_kmalloc",)
        self.free_large.add(ptr)
        return ()


# ------------------------------------------------------------- driver policy


@dataclass(frozen=True)
class Guard:
    errno: str
    why: str


# Every refusal of the Linux port (kmod/README.md), in one table.
GUARDS: dict[str, Guard] = {
    "rmfree_size0": Guard("EINVAL", "rmfree size 0"),
    "rmfree_wrap": Guard("EINVAL", "rmfree range wraps past 2^64"),
    "rmfree_bug": Guard("EINVAL", "free branch: units not all allocated, or gen_pool_free would BUG"),
    "rmfree_index0": Guard("EINVAL", "add branch: index 0"),
    "rmfree_chunk_cap": Guard("E2BIG", "add branch: size > 2^24"),
    "rmfree_chunks": Guard("ENOSPC", "add branch: more than 4096 chunks in the map"),
    "rmalloc_wait_size0": Guard("EINVAL", "rmalloc_wait size 0"),
    "rmfreemap_waiters": Guard("EBUSY", "rmfreemap while an rmalloc_wait sleeps on the map"),
    "rmfreemap_busy": Guard("EBUSY", "rmfreemap with outstanding allocations (avail != size)"),
    "umem_trash": Guard("ENOTSUP", "DDI_UMEM_TRASH"),
    "kmem_double_free": Guard("EBADF", "second kmem_free of a handle"),
    "rmap_units_cap": Guard("ENOMEM", "add branch: the driver's cap on chunk units (2^28: 32 MiB of bitmap)"),
    "umem_total_cap": Guard("NULL", "the driver's cap on live umem (128 MiB)"),
    "kmem_total_cap": Guard("NULL", "the driver's cap on live kmem (64 MiB)"),
    "umem_mapped": Guard("EBUSY", "umem_free while a process still maps the buffer (VMAs counted by "
                                  "vm_operations open/close)"),
    "export_cookieless": Guard("EINVAL", "umem_export with DEVMAP_MAPPING_INVALID|DEVMAP_ALLOW_REMAP "
                                         "(on illumos a handle without a cookie: the first access panics)"),
}

# Guards that stop a kernel BUG, or keep the illumos guard policy where Linux would
# survive: off when ModelConfig.destructive.
DESTRUCTIVE_PASSTHROUGH = frozenset({"rmfree_bug", "rmfreemap_busy", "kmem_double_free", "umem_mapped",
                                     "export_cookieless"})

# ddi_umem_alloc flag handling order: True = DDI_UMEM_TRASH is refused before
# the size checks (size 0 / > 64 MiB -> NULL).
UMEM_TRASH_FIRST = True

_PROT_MASK = PROT_FLAGS["PROT_READ"] | PROT_FLAGS["PROT_WRITE"] | PROT_FLAGS["PROT_EXEC"]
_RW = PROT_FLAGS["PROT_READ"] | PROT_FLAGS["PROT_WRITE"]


@dataclass
class _Map:
    pool: GenPool
    live: bool = True


@dataclass
class _Waiter:
    map_name: str
    size: int
    result: Result | None = None  # None while blocked


@dataclass
class _Buf:
    """A trace buffer name.  Like guest/ddictl, a name whose creating op gave
    NULL (or an error) stands for handle 0, i.e. a NULL pointer, for ever."""

    family: str  # umem | kmem
    size: int  # requested size
    present: bool  # a real allocation (not NULL, not ZERO_SIZE_PTR)
    rounded: int = 0  # umem: PAGE_ALIGN(size); kmem: ksize
    ptr: int | None = None  # kmem pointer identity (0 = ZERO_SIZE_PTR, None = NULL)
    handle: bool = False  # the driver handed out a handle (else: handle 0 = NULL)
    handle_live: bool = False
    maps: int = 0  # umem: live VMAs (mapping: shared-kept leaves one in place)


class LinuxModel:
    """The Linux port of the ddih driver on Debian 6.1.192-2."""

    name = "linux"

    def __init__(self, config: ModelConfig, guards: Iterable[str] | None = None):
        self.config = config
        active = set(GUARDS) if guards is None else set(guards)
        unknown = active - set(GUARDS)
        if unknown:
            raise ValueError(f"unknown guard(s) {sorted(unknown)}")
        if config.destructive:
            active -= DESTRUCTIVE_PASSTHROUGH
        self.guards = frozenset(active)
        self.maps: dict[str, _Map] = {}
        self.waiters: dict[str, _Waiter] = {}  # insertion order = sleep order
        self.bufs: dict[str, _Buf] = {}
        self.slab = _Slab()
        self._ops: dict[str, Callable[[Step], Result]] = {
            "rmallocmap": self._rmallocmap,
            "rmallocmap_wait": self._rmallocmap,
            "rmalloc": self._rmalloc,
            "rmalloc_wait": self._rmalloc_wait,
            "join": self._join,
            "rmfree": self._rmfree,
            "rmfreemap": self._rmfreemap,
            "umem_alloc": self._umem_alloc,
            "umem_free": self._umem_free,
            "umem_export": self._umem_export,
            "kmem_alloc": self._kmem_alloc,
            "kmem_zalloc": self._kmem_alloc,
            "kmem_free": self._kmem_free,
        }

    # ---------------------------------------------------------------- API

    def step(self, step: Step) -> Result:
        handler = self._ops.get(step.op)
        if handler is None:
            raise ValueError(f"the linux model has no op {step.op!r}")
        try:
            return handler(step)
        except KernelBug as bug:
            return Result("panic", message=str(bug))

    def state(self, map_name: str) -> dict[str, int] | None:
        m = self.maps.get(map_name)
        if m is None or not m.live:
            return None
        return m.pool.counters()

    def layout(self, map_name: str) -> Layout | None:
        m = self.maps.get(map_name)
        if m is None or not m.live:
            return None
        return m.pool.layout()

    # ------------------------------------------------------------ helpers

    def _on(self, guard: str) -> bool:
        return guard in self.guards

    def _refuse(self, guard: str, pool: GenPool | None = None) -> Result:
        g = GUARDS[guard]
        return Result("error", message=g.errno, note=g.why,
                      state=pool.counters() if pool is not None else None)

    def _pool(self, step: Step) -> GenPool:
        return self.maps[step.args["map"]].pool

    # --------------------------------------------------------------- rmap

    def _rmallocmap(self, step: Step) -> Result:
        pool = GenPool(self.config.mem_limit)  # mapsize ignored
        self.maps[step.args["map"]] = _Map(pool)
        return Result("ok", state=pool.counters())

    def _rmalloc(self, step: Step) -> Result:
        pool = self._pool(step)
        return Result("value", value=pool.alloc(step.args["size"]), state=pool.counters())

    def _wait_attempt(self, pool: GenPool, size: int) -> Result | None:
        """One turn of the driver's rmalloc_wait loop; None = goes to sleep."""
        v = pool.alloc(size)
        if v != 0:
            return Result("value", value=v, state=pool.counters())
        return None

    def _rmalloc_wait(self, step: Step) -> Result:
        pool = self._pool(step)
        size = step.args["size"]
        if self._on("rmalloc_wait_size0") and size == 0:
            res: Result | None = self._refuse("rmalloc_wait_size0", pool)
        else:
            res = self._wait_attempt(pool, size)
        wname = step.args.get("waiter")
        if wname is None:
            return res if res is not None else Result(
                "hang", note=f"rmalloc_wait({size}) sleeps until an rmfree on this map")
        self.waiters[wname] = _Waiter(step.args["map"], size, res)
        return Result("ok", state=pool.counters())

    def _join(self, step: Step) -> Result:
        w = self.waiters.pop(step.args["waiter"])
        if w.result is None:
            return Result("hang", note=f"rmalloc_wait({w.size}) is still asleep")
        return w.result

    def _wake(self, map_name: str) -> None:
        """wake_up_interruptible: every sleeper on the map retries once, oldest first."""
        m = self.maps[map_name]
        for w in self.waiters.values():
            if w.result is None and w.map_name == map_name and m.live:
                w.result = self._wait_attempt(m.pool, w.size)

    def _rmfree(self, step: Step) -> Result:
        pool = self._pool(step)
        size, index = step.args["size"], step.args["index"]
        if self._on("rmfree_size0") and size == 0:
            return self._refuse("rmfree_size0", pool)
        if self._on("rmfree_wrap") and index + size > M:
            return self._refuse("rmfree_wrap", pool)
        if pool.has_addr(index, size):
            if self._on("rmfree_bug") and pool.free_would_bug(index, size):
                return self._refuse("rmfree_bug", pool)
            pool.free(index, size)  # may raise KernelBug (destructive)
        else:
            if self._on("rmfree_index0") and index == 0:
                return self._refuse("rmfree_index0", pool)
            if self._on("rmfree_chunk_cap") and size > RMAP_CHUNK_MAX:
                return self._refuse("rmfree_chunk_cap", pool)
            if self._on("rmfree_chunks") and len(pool.chunks) >= RMAP_MAX_CHUNKS:
                return self._refuse("rmfree_chunks", pool)
            if self._on("rmap_units_cap") and size + sum(
                    c.size for mp in self.maps.values() if mp.live for c in mp.pool.chunks) > RMAP_TOTAL_UNITS:
                return self._refuse("rmap_units_cap", pool)
            if pool.add(index, size) != 0:
                return Result("error", message="ENOMEM", note="gen_pool_add: vzalloc failed",
                              state=pool.counters())
        counters = pool.counters()  # read inside the ioctl, before sleepers run
        self._wake(step.args["map"])
        return Result("ok", state=counters)

    def _rmfreemap(self, step: Step) -> Result:
        name = step.args["map"]
        m = self.maps[name]
        if self._on("rmfreemap_waiters") and any(
                w.result is None and w.map_name == name for w in self.waiters.values()):
            return self._refuse("rmfreemap_waiters", m.pool)
        if self._on("rmfreemap_busy") and m.pool.avail() != m.pool.size():
            return self._refuse("rmfreemap_busy", m.pool)
        m.pool.destroy()  # may raise KernelBug 255 (destructive)
        m.live = False
        return Result("ok")

    def _live_bytes(self, kind: str) -> int:
        """What this trace's live buffers count against the driver-wide caps."""
        return sum(b.rounded or 0 for b in self.bufs.values() if b.family == kind and b.present)

    # --------------------------------------------------------------- umem

    def _umem_alloc(self, step: Step) -> Result:
        size, flags = step.args["size"], step.flags("flags")
        name = step.args["buf"]
        trash = self._on("umem_trash") and bool(flags & UMEM_FLAGS["DDI_UMEM_TRASH"])
        if trash and UMEM_TRASH_FIRST:
            self.bufs[name] = _Buf("umem", size, present=False)
            return self._refuse("umem_trash")
        if size == 0 or size > UMEM_MAX:  # vmalloc is not called
            self.bufs[name] = _Buf("umem", size, present=False)
            return Result("null")
        if trash:
            self.bufs[name] = _Buf("umem", size, present=False)
            return self._refuse("umem_trash")
        # SLEEP: vmalloc_user; NOSLEEP: GFP_NOWAIT vmalloc made mappable (both succeed
        # in an idle guest for <= 64 MiB); PAGEABLE: like the default, type 0x100.
        ctype = UMEM_COOKIE_TYPE_PAGEABLE if flags & UMEM_FLAGS["DDI_UMEM_PAGEABLE"] else UMEM_COOKIE_TYPE
        rounded = page_align(size)
        if self._on("umem_total_cap") and self._live_bytes("umem") + rounded > UMEM_TOTAL_MAX:
            self.bufs[name] = _Buf("umem", size, present=False)
            return Result("null", note="the driver's cap on live umem (128 MiB) would be passed")
        self.bufs[name] = _Buf("umem", size, present=True, rounded=rounded, handle=True, handle_live=True)
        return Result("value", value=rounded, attrs={"align": PAGE_SIZE, "zeroed": True, "type": ctype})

    def _umem_free(self, step: Step) -> Result:
        buf = self.bufs.get(step.args["buf"]) if step.args["buf"] is not None else None
        if buf is None or not buf.handle:
            return Result("ok")  # ddi_umem_free(NULL): no-op
        if not buf.handle_live:
            return Result("error", message="EBADF", note="the handle is gone")
        if self._on("umem_mapped") and buf.maps:
            return self._refuse("umem_mapped")
        buf.present = buf.handle_live = False  # vfree
        return Result("ok")

    def _umem_export(self, step: Step) -> Result:
        buf = self.bufs.get(step.args["buf"])
        off, length = step.args["off"], step.args["len"]
        maxprot = step.flags("maxprot") & _PROT_MASK  # PROT_USER is illumos-only
        prot = step.flags("prot") & _PROT_MASK
        dflags = step.flags("flags")
        maplen = step.args.get("maplen")
        einval = Result("error", message="EINVAL")
        if (self._on("export_cookieless") and dflags & DEVMAP_FLAGS["DEVMAP_MAPPING_INVALID"]
                and dflags & DEVMAP_FLAGS["DEVMAP_ALLOW_REMAP"]):
            return self._refuse("export_cookieless")  # the UMEM_EXPORT ioctl, before mmap
        if buf is None or not buf.present:
            return einval  # remap_vmalloc_range on NULL (LU9)
        if off < 0 or off % PAGE_SIZE:
            return einval
        if length == 0 or off + length > buf.rounded:
            return einval  # mmap(len 0) / past PAGE_ALIGN(size)
        if prot & ~maxprot:
            return Result("error", message="EACCES")
        if (dflags & DEVMAP_FLAGS["DEVMAP_MAPPING_INVALID"]
                and not dflags & DEVMAP_FLAGS["DEVMAP_ALLOW_REMAP"]):
            return einval
        if step.args.get("setup_twice"):
            return einval
        if maplen is not None and maplen % PAGE_SIZE:
            return einval
        mapping = step.args.get("mapping", "shared")
        if mapping == "shared-kept":
            buf.maps += 1  # ddictl leaves the VMA in place
        if prot & _RW != _RW or dflags & DEVMAP_FLAGS["DEVMAP_MAPPING_INVALID"]:
            return Result("ok")  # ddictl does not run the two-way coherence check
        return Result("ok", attrs={"coherent": mapping in ("shared", "shared-kept")})

    # --------------------------------------------------------------- kmem

    def _kmem_alloc(self, step: Step) -> Result:
        size = step.args["size"]
        name = step.args["buf"]
        # KM_SLEEP -> GFP_KERNEL, KM_NOSLEEP -> GFP_NOWAIT, KM_PUSHPAGE adds
        # __GFP_HIGH, all | __GFP_NOWARN: the same kmalloc-* caches, and every
        # size <= 4 MiB succeeds in an idle guest.  kmalloc returns zeroed memory
        # on Debian (init_on_alloc=1), kzalloc by definition.
        if (self._on("kmem_total_cap") and size <= KMALLOC_MAX_SIZE
                and self._live_bytes("kmem") + ksize(size) > KMEM_TOTAL_MAX):
            self.bufs[name] = _Buf("kmem", size, present=False)
            return Result("null", note="the driver's cap on live kmem (64 MiB) would be passed")
        ptr = self.slab.kmalloc(size)
        k = ksize(size)
        self.bufs[name] = _Buf("kmem", size, present=bool(ptr), rounded=k, ptr=ptr,
                               handle=ptr is not None, handle_live=ptr is not None)
        if ptr is None:
            return Result("null")
        if ptr == 0:
            return Result("value", value=0)  # ZERO_SIZE_PTR: ksize 0, never touched
        return Result("value", value=k, attrs={"align": kmalloc_align(size), "zeroed": True})

    def _kmem_free(self, step: Step) -> Result:
        name = step.args["buf"]
        if name is None:
            return Result("ok")  # kfree(NULL)
        buf = self.bufs[name]
        if not buf.handle:
            return Result("ok")  # the name stands for NULL: kfree(NULL)
        if not buf.handle_live:  # a tombstone
            if self._on("kmem_double_free"):
                return self._refuse("kmem_double_free")
        buf.handle_live = False
        buf.present = False
        warnings = self.slab.kfree(buf.ptr, buf.rounded)  # size is not passed: kfree has none
        return Result("ok", warnings=warnings)
