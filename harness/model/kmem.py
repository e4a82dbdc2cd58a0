"""illumos kmem_alloc / kmem_zalloc / kmem_free (usr/src/uts/common/os/kmem.c; kmem_alloc(9F)).

Routing by size: 29 small caches (1..4096), 17 big caches (4097..131072),
then the page-quantum oversize vmem arena.  A cache's alignment is PAGESIZE
for multiples of PAGESIZE, 64 for multiples of 64, else 8.  kmem_free routes
by the size it is given, so a wrong size can reach another cache (silent on
kmem_flags 0, a "kernel memory allocator" report and a panic with debug
flags) or the oversize arena (a vmem_hash_delete panic).

The newer tree is modelled (zero-size logic of tsoome @1f70d10).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.model import outcome as R
from harness.model.outcome import Result
from harness.ops import KM_FLAGS, PAGESIZE, U64

SMALL = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
         448, 512, 640, 768, 896, 1152, 1344, 1600, 2048, 2688, 4096)
BIG = (8192, 12288, 16384, 24576, 32768, 40960, 49152, 57344, 65536, 73728, 81920, 90112,
       98304, 106496, 114688, 122880, 131072)
MAX_CACHED = 131072
KM_NOSLEEP = KM_FLAGS["KM_NOSLEEP"]
KMF_AUDIT, KMF_DEADBEEF, KMF_REDZONE = 0x1, 0x2, 0x4
KMF_BUFTAG = KMF_DEADBEEF | KMF_REDZONE
OVERSIZE = "<kmem_oversize>"


def cache_for(size: int) -> int | None:
    """The kmem_alloc_<N> cache for a size, or None for 0 and oversize."""
    if size == 0 or size > MAX_CACHED:
        return None
    for n in SMALL if size <= 4096 else BIG:
        if n >= size:
            return n
    raise AssertionError(size)


def cache_align(n: int) -> int:
    if n % PAGESIZE == 0:
        return PAGESIZE
    if n % 64 == 0:
        return 64
    return 8


@dataclass
class Buffer:
    size: int  # the size asked for
    cache: int | None  # None: oversize
    freed: bool = False


class KmemState:
    def __init__(self, kmem_flags: int, debug: bool, mem_limit: int) -> None:
        self.kmem_flags = kmem_flags
        self.debug = debug
        self.mem_limit = mem_limit
        self.bufs: dict[str, Buffer | None] = {}

    def alloc(self, name: str, size: int, flags: int, zero: bool) -> Result:
        routine = "kmem_zalloc" if zero else "kmem_alloc"
        if size == 0:
            self.bufs[name] = None
            if flags != 0:
                return R.null()
            warnings = ()
            if self.debug:  # kmem_warn_zerosized defaults to 1 on DEBUG kernels
                warnings = ("WARNING: kmem_alloc(): sleeping allocation with size of 0; "
                            "see kmem_zerosized_log for details",)
            return Result("null", warnings=warnings, note=f"{routine}(0, KM_SLEEP) is logged in kmem_zerosized_log")
        n = cache_for(size)
        if n is not None:
            self.bufs[name] = Buffer(size, n)
            attrs = {"align": cache_align(n)}
            if zero:
                attrs["zeroed"] = True
            return R.value(n, **attrs)
        # oversize: vmem_alloc(kmem_oversize_arena, size, flags & KM_VMFLAGS)
        if size > U64 - PAGESIZE:  # P2ROUNDUP(size, PAGESIZE) wraps
            self.bufs[name] = None
            if flags & KM_NOSLEEP:
                return Result("null", note="the page rounding overflows; NOSLEEP returns NULL")
            return R.panic("vmem_xalloc(): size overflow")
        if size > self.mem_limit:
            self.bufs[name] = None
            if flags & KM_NOSLEEP:
                return R.null()
            return R.hang(note="KM_SLEEP waits for memory that can never be free")
        self.bufs[name] = Buffer(size, None)
        extent = (size + PAGESIZE - 1) & ~(PAGESIZE - 1)
        attrs = {"align": PAGESIZE}
        if zero:
            attrs["zeroed"] = True
        return R.value(extent, **attrs)

    def free(self, name: str | None, size: int) -> tuple[Result, bool]:
        """The outcome of kmem_free and whether it corrupts the heap silently."""
        buf = self.bufs.get(name) if name is not None else None
        ptr = f"<{name}>" if name is not None else "0"
        free_cache = cache_for(size)
        if free_cache is None:  # size 0 or oversize: vmem_free on the oversize arena
            if buf is None and size == 0:
                return R.ok(), False
            if buf is None:
                return R.panic(f"vmem_hash_delete({OVERSIZE}, 0, {size}): bad free"), False
            if buf.cache is not None or buf.freed:
                return R.panic(f"vmem_hash_delete({OVERSIZE}, {ptr}, {size}): bad free"), False
            if buf.size != size:
                return R.panic(f"vmem_hash_delete({OVERSIZE}, {ptr}, {size}): wrong size (expect {buf.size})"), False
            buf.freed = True
            return R.ok(), False
        # cache branch: kmem_cache_free(kmem_alloc_<free_cache>, buf)
        if not self.kmem_flags & KMF_BUFTAG:
            if buf is None:
                return Result("ok", note=f"NULL goes into a kmem_alloc_{free_cache} magazine: "
                                         "a later allocation of that class can return NULL"), True
            wrong = buf.freed or buf.cache != free_cache
            why = ("freed twice: the buffer is queued twice" if buf.freed else
                   f"buffer from {_name(buf.cache)} freed to kmem_alloc_{free_cache}" if wrong else "")
            buf.freed = True
            if wrong:
                return Result("ok", note=f"no checks with kmem_flags 0: {why} (silent heap corruption)"), True
            return R.ok(), False
        if buf is None:
            return Result("panic", note="NULL freed to a debug cache: a fault reading its buftag "
                                        "(message not predicted)"), False
        return self._debug_free(buf, ptr, size, free_cache), False

    def _debug_free(self, buf: Buffer, ptr: str, size: int, free_cache: int) -> Result:
        """kmem_cache_free_debug() + kmem_error() with KMF_BUFTAG (usr/src/uts/common/os/kmem.c)."""
        cache_name = f"kmem_alloc_{free_cache}"
        if buf.cache is None:
            lines = ["kernel memory allocator: invalid free: buffer not in cache"]
        elif buf.cache != free_cache:
            lines = ["kernel memory allocator: buffer freed to wrong cache",
                     f"buffer was allocated from {_name(buf.cache)},",
                     f"caller attempting free to {cache_name}."]
        elif buf.freed:
            lines = ["kernel memory allocator: duplicate free: buffer freed twice"]
        elif buf.size != size:
            lines = [f"kernel memory allocator: bad free: free size ({size}) != alloc size ({buf.size})"]
        else:
            buf.freed = True
            return R.ok()
        if buf.cache is not None:
            lines.append(f"buffer={ptr}  bufctl=<bufctl>  cache: {cache_name}")
            if self.kmem_flags & KMF_AUDIT:
                lines.append(f"previous transaction on buffer {ptr}:")
        return R.panic("kernel heap corruption detected", warnings=tuple(lines))


def _name(cache: int | None) -> str:
    return f"kmem_alloc_{cache}" if cache else "kmem_oversize"
