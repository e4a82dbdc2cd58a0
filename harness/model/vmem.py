"""illumos vmem, as the rmap wrappers configure it (usr/src/uts/common/os/vmem.c).

quantum 1, qcache_max 0, no import source (usr/src/uts/common/os/rmap.c: rmallocmap() calls
vmem_create("rmap", NULL, 0, 1, NULL, NULL, NULL, 0, ...)).  What matters for exact results:

* spans are appended in creation order and never merged, not even when
  address-adjacent (vmem_add(), vmem_span_create());
* 64 freelists by size class highbit(size)-1, each LIFO: an insert goes to
  the front (vmem_freelist_insert());
* vmem_alloc is instant fit: the front segment of the lowest non-empty class
  guaranteed to fit; failing that the xalloc scan takes the first fit, front
  to back, in the class just below (vmem_alloc(), vmem_xalloc());
* carving takes the front of the segment; the fast path leaves the segment
  in place on its freelist, the slow path re-inserts the remainder at the
  front of its (smaller) class (vmem_seg_alloc());
* vmem_free merges with the next then the previous free segment of the same
  span and inserts the result at the front (vmem_free(), vmem_xfree());
* the allocated-segment hash is LIFO per start address (duplicates only with
  overlapping spans).

Panics are raised as VmemPanic before any state changes, so a caller that
refuses misuse (the driver's guards) can probe an operation safely.
Freelists are insertion-ordered dicts: the last key is the front, which gives
O(1) insert, delete and "front" without walking lists.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

M = 1 << 64
MASK = M - 1
NLISTS = 64


class VmemPanic(Exception):
    """The kernel would panic with this message (placeholders for pointers)."""


class VmemUndefined(Exception):
    """vmem would reach a state the model does not predict (the message says which).

    A free segment that starts at address 0 (a span wrapping past 2^64, carved or
    freed so that a free piece begins at 0) looks like a freelist head to vmem:
    ``vmem_xalloc()`` skips it or jumps freelists, ``vmem_freelist_delete()`` of a
    neighbour clears a freemap bit, and one search can loop for ever with the arena
    lock held.  What follows depends on the neighbourhood in ways the model does not
    follow, so it says so instead of guessing.
    """


class Seg:
    __slots__ = ("start", "end", "free", "prev", "next", "span")

    def __init__(self, start: int, end: int, free: bool, span: "Span | None" = None) -> None:
        self.start = start
        self.end = end
        self.free = free
        self.prev: Seg | None = None  # address-ordered neighbours within the span
        self.next: Seg | None = None
        self.span = span  # the span it lies in (its first segment is span.head)

    @property
    def size(self) -> int:
        return (self.end - self.start) & MASK

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Seg({self.start}, {self.end}, {'FREE' if self.free else 'ALLOC'})"


@dataclass(eq=False)
class Span:
    start: int
    end: int  # exclusive, wraps to 0 at the top of the address space
    head: "Seg | None" = None  # its first segment: the walk of layout() starts there


def highbit(x: int) -> int:
    return x.bit_length()


def lowbit(x: int) -> int:
    return (x & -x).bit_length()


class Vmem:
    """One vmem arena with quantum 1 (an rmap resource map)."""

    def __init__(self, name: str = "rmap", ptr: str = "<m>", debug: bool = False) -> None:
        self.name = name
        self.debug = debug  # a DEBUG kernel: ASSERTs run, and some of them count
        self.ptr = ptr  # how the arena pointer appears in predicted messages
        self.spans: list[Span] = []
        self._starts: list[int] = []  # span index, see contains_range
        self._maxes: list[int] = []
        self.freelists: list[dict[Seg, None]] = [dict() for _ in range(NLISTS)]
        self.freemap = 0
        self.hash: dict[int, list[Seg]] = {}
        self.mem_total = 0
        self.mem_inuse = 0
        self.alloc = 0
        self.free = 0
        self.fail = 0
        self.wait = 0
        self.contains = 0
        self.inserts = 0  # freelist insertions: each one broadcasts the arena cv
        # rmalloc_wait sleepers (opaque to vmem), in sleep order; a freelist insertion
        # broadcasts vm_cv and moves them all to ``woken`` (shared with the caller)
        self.sleeping: list = []
        self.woken: list = []
        self.undefined: str | None = None  # why the next operation is outside the model
        self.nsegs = 0  # segments (free and allocated) in all spans, for layout()
    def check_defined(self) -> None:
        """Raise VmemUndefined when an earlier operation left the arena outside the model."""
        if self.undefined is not None:
            raise VmemUndefined(self.undefined)

    # ------------------------------------------------------------ freelists

    def _fl_insert(self, seg: Seg) -> None:
        if seg.start == 0 and self.undefined is None:
            # this operation completes as predicted; the next one on the arena cannot be
            self.undefined = ("a free segment starts at address 0, where vmem takes it for a freelist head "
                              "(vmem_xalloc(), vmem_freelist_delete())")
        i = ((seg.end - seg.start) & MASK).bit_length() - 1
        self.freelists[i][seg] = None
        self.freemap |= 1 << i
        self.inserts += 1
        if self.sleeping:  # vmem_freelist_insert(): cv_broadcast(&vmp->vm_cv)
            self.woken.extend(self.sleeping)
            self.sleeping.clear()

    def _fl_delete(self, seg: Seg) -> None:
        i = ((seg.end - seg.start) & MASK).bit_length() - 1
        fl = self.freelists[i]
        del fl[seg]
        if not fl:
            self.freemap &= ~(1 << i)

    # ------------------------------------------------------------ contains

    def contains_range(self, addr: int, size: int) -> bool:
        """vmem_contains: the whole range inside one span (wrapping arithmetic).

        The kernel walks the spans in creation order and stops at the first
        with ``addr >= start`` and ``addr+size-1 <= end-1`` (unsigned, wrapping).
        Only whether such a span exists matters, so an index answers it: span
        starts in sorted order with a running maximum of end-1.
        """
        self.contains += 1
        last = (addr + size - 1) & MASK
        k = bisect_right(self._starts, addr)
        return k > 0 and self._maxes[k - 1] >= last

    def _index_span(self, start: int, endm1: int) -> None:
        starts, maxes = self._starts, self._maxes
        k = bisect_right(starts, start)
        starts.insert(k, start)
        maxes.insert(k, max(endm1, maxes[k - 1]) if k else endm1)
        for j in range(k + 1, len(maxes)):  # prefix maxima are monotone: stop early
            if maxes[j] >= endm1:
                break
            maxes[j] = endm1

    # ------------------------------------------------------------ add

    def check_add(self, addr: int, size: int) -> None:
        if addr == 0 or size == 0:
            raise VmemPanic(f"vmem_add({self.ptr}, {addr:x}, {size}): bad arguments")

    def add(self, addr: int, size: int) -> None:
        self.check_add(addr, size)
        if self.debug:  # vmem_add(): ASSERT(!vmem_contains(vmp, vaddr, size)) counts in `contains`
            self.contains += 1
        end = (addr + size) & MASK
        span = Span(addr, end)
        self.spans.append(span)
        self._index_span(addr, (end - 1) & MASK)
        seg = Seg(addr, end, True, span)
        span.head = seg
        self.nsegs += 1
        self._fl_insert(seg)
        self.mem_total += size

    # ------------------------------------------------------------ alloc

    def _instant_list(self, size: int) -> int:
        """Index of the instant-fit freelist, or -1 to fall through to xalloc."""
        fm = self.freemap
        if size & (size - 1) == 0:  # ISP2, true for 0
            if size == 0:
                return -1
            cand = fm & -size & MASK
        else:
            h = highbit(size)
            if h >= NLISTS:
                return -1
            cand = fm & -(1 << h) & MASK
        return lowbit(cand) - 1

    def try_alloc(self, size: int) -> int | None:
        """One pass of vmem_alloc: the address, or None when nothing fits (0 is an address).

        Instant fit first (vmem_alloc()), then the vmem_xalloc() search.  size 0 panics;
        the caller counts fail/wait.
        """
        i = self._instant_list(size)
        if i >= 0:
            fl = self.freelists[i]
            return self._carve(next(reversed(fl)), size)
        return self.xalloc(size)

    def xalloc(self, size: int) -> int | None:
        """The vmem_xalloc() search (align 1, phase 0, nocross 0, no limits): the address or None.

        A sleeper woken by a broadcast retries with this search only: vmem_xalloc's loop
        goes back to ``do_alloc`` after cv_wait, never to the instant fit.
        """
        fm = self.freemap
        if size & (size - 1) == 0:
            start = (size.bit_length() - 1) if size else -1
        else:
            h = highbit(size)
            if h >= NLISTS or (fm >> h) == 0:
                h -= 1
            start = h
        if start >= 0:
            rest = fm >> start
            i = start
            while rest:
                if rest & 1:
                    for seg in reversed(self.freelists[i]):
                        if seg.size >= size:
                            return self._carve(seg, size)
                rest >>= 1
                i += 1
        if size == 0:
            raise VmemPanic("vmem_xalloc(): size == 0")
        return None

    def _carve(self, seg: Seg, size: int) -> int:
        addr = seg.start
        old = (seg.end - addr) & MASK
        rem = old - size
        if (old ^ rem) < (old & rem):  # P2SAMEHIGHBIT: the remainder stays in its class
            new = Seg(addr, (addr + size) & MASK, False, seg.span)
            new.prev, new.next = seg.prev, seg
            if seg.prev is not None:
                seg.prev.next = new
            else:
                seg.span.head = new
            seg.prev = new
            self.nsegs += 1
            seg.start = new.end
            self._hash_insert(new)
        else:
            self._fl_delete(seg)
            if rem:
                tail = Seg((addr + size) & MASK, seg.end, True, seg.span)
                self.nsegs += 1
                tail.prev, tail.next = seg, seg.next
                if seg.next is not None:
                    seg.next.prev = tail
                seg.next = tail
                seg.end = tail.start
                self._fl_insert(tail)
            seg.free = False
            self._hash_insert(seg)
        self.mem_inuse += size
        self.alloc += 1
        return addr

    def _hash_insert(self, seg: Seg) -> None:
        chain = self.hash.get(seg.start)
        if chain is None:
            self.hash[seg.start] = [seg]
        else:
            chain.append(seg)  # the last entry is found first (LIFO chain)

    # ------------------------------------------------------------ free

    def check_free(self, addr: int, size: int) -> None:
        chain = self.hash.get(addr)
        if not chain:
            raise VmemPanic(f"vmem_hash_delete({self.ptr}, {addr:x}, {size}): bad free")
        seg = chain[-1]
        if seg.size != size:
            raise VmemPanic(f"vmem_hash_delete({self.ptr}, {addr:x}, {size}): wrong size (expect {seg.size})")

    def free_range(self, addr: int, size: int) -> None:
        """vmem_free of a range check_free accepted."""
        chain = self.hash[addr]
        seg = chain.pop()
        if not chain:
            del self.hash[addr]
        self.free += 1
        self.mem_inuse -= size
        seg.free = True
        nxt = seg.next
        if nxt is not None and nxt.free:
            self._fl_delete(nxt)
            self.nsegs -= 1
            seg.end = nxt.end
            seg.next = nxt.next
            if nxt.next is not None:
                nxt.next.prev = seg
        prv = seg.prev
        if prv is not None and prv.free:
            self._fl_delete(prv)
            self.nsegs -= 1
            prv.end = seg.end
            prv.next = seg.next
            if seg.next is not None:
                seg.next.prev = prv
            seg = prv
        self._fl_insert(seg)

    # ------------------------------------------------------------ observation

    def counters(self) -> dict[str, int]:
        return {
            "mem_total": self.mem_total & MASK,
            "mem_inuse": self.mem_inuse & MASK,
            "alloc": self.alloc,
            "free": self.free,
            "fail": self.fail,
            "wait": self.wait,
            "contains": self.contains,
        }

    def layout(self, listed: int = 64) -> tuple[int, list[tuple[str, int, int, int | None]]]:
        """The arena's segment list as vmem walks it (vm_seg0 via vs_anext): each span in
        creation order, then its segments in address order.  The first ``listed`` entries as
        (kind, start, size, freelist), and how many there are in all."""
        out: list[tuple[str, int, int, int | None]] = []
        for span in self.spans:
            if len(out) >= listed:
                break
            out.append(("span", span.start, (span.end - span.start) & MASK, None))
            seg = span.head
            while seg is not None and len(out) < listed:
                size = (seg.end - seg.start) & MASK
                out.append(("free", seg.start, size, size.bit_length() - 1) if seg.free
                           else ("alloc", seg.start, size, None))
                seg = seg.next
        return len(self.spans) + self.nsegs, out

    def layout_wire(self, listed: int = 64) -> str:
        """``layout()`` as its wire text (``TOTAL:s:START+SIZE,a:...,fK:...``), built directly:
        it is compared after every step, so it must cost little."""
        out: list[str] = []
        n = 0
        for span in self.spans:
            if n >= listed:
                break
            out.append(f"s:{span.start}+{(span.end - span.start) & MASK}")
            n += 1
            seg = span.head
            while seg is not None and n < listed:
                size = (seg.end - seg.start) & MASK
                out.append(f"f{size.bit_length() - 1}:{seg.start}+{size}" if seg.free else f"a:{seg.start}+{size}")
                n += 1
                seg = seg.next
        return f"{len(self.spans) + self.nsegs}:" + ",".join(out)

    def free_segments(self) -> list[tuple[int, int]]:
        """Every free segment as (start, size), for property tests."""
        return [(s.start, s.size) for fl in self.freelists for s in fl]

    def largest_free(self) -> int:
        if not self.freemap:
            return 0
        top = self.freemap.bit_length() - 1
        return max(s.size for s in self.freelists[top])
