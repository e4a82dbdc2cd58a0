"""illumos ddi_umem_alloc / ddi_umem_free / devmap export (usr/src/uts/common/vm/seg_dev.c:
ddi_umem_alloc(), ddi_umem_free(), devmap_umem_setup(); ddi_umem_alloc(9F), devmap_umem_setup(9F)).

What can be checked from outside: NULL or not, the cookie's rounded size and
type, page alignment, zero fill, and the mmap(2) outcome of an export
(errno, or a mapping whose pages user space and kernel share).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.model import outcome as R
from harness.model.outcome import Result
from harness.ops import DEVMAP_FLAGS, PAGESIZE, PROT_FLAGS, UMEM_FLAGS, U64

KMEM_PAGEABLE = 0x100
KMEM_NON_PAGEABLE = 0x200
UMEM_TRASH = 0x800

NOSLEEP = UMEM_FLAGS["DDI_UMEM_NOSLEEP"]
PAGEABLE = UMEM_FLAGS["DDI_UMEM_PAGEABLE"]
TRASH = UMEM_FLAGS["DDI_UMEM_TRASH"]
MAPPING_INVALID = DEVMAP_FLAGS["DEVMAP_MAPPING_INVALID"]
ALLOW_REMAP = DEVMAP_FLAGS["DEVMAP_ALLOW_REMAP"]
PROT_READ, PROT_WRITE, PROT_USER = PROT_FLAGS["PROT_READ"], PROT_FLAGS["PROT_WRITE"], PROT_FLAGS["PROT_USER"]
USER_VA_LIMIT = 1 << 47  # larger mmap(2) lengths cannot fit in a user address space


@dataclass
class Cookie:
    size: int
    type: int
    maps: int = 0  # live user mappings (the driver's devmap callbacks count them)


def page_round(size: int) -> int:
    """ptob(btopr(size)) with unsigned 64-bit wrap-around."""
    return (size + PAGESIZE - 1) & ~(PAGESIZE - 1) & (U64 - 1)


class UmemState:
    def __init__(self, mem_limit: int) -> None:
        self.mem_limit = mem_limit
        self.cookies: dict[str, Cookie | None] = {}

    def alloc(self, name: str, size: int, flags: int) -> Result:
        length = page_round(size)
        if length == 0:
            self.cookies[name] = None
            why = "size 0" if size == 0 else "the page rounding of the size overflows"
            return Result("null", note=f"{why}: NULL and no cookie")
        if flags & PAGEABLE:
            kind = KMEM_PAGEABLE
        elif flags & TRASH:
            self.cookies[name] = Cookie(length, UMEM_TRASH)
            return Result("null", attrs={"type": UMEM_TRASH, "cookie_size": length},
                          note="DDI_UMEM_TRASH returns NULL with a live cookie")
        else:
            kind = KMEM_NON_PAGEABLE
        if length > self.mem_limit:
            if flags & NOSLEEP:
                self.cookies[name] = None
                return R.null()
            return R.hang(note="a sleeping allocation larger than kernel memory never returns")
        self.cookies[name] = Cookie(length, kind)
        return R.value(length, align=PAGESIZE, zeroed=True, type=kind)

    def free(self, name: str | None, guarded: bool = False) -> Result:
        """ddi_umem_free.  ``guarded``: the driver refuses a cookie a process still maps."""
        if name is not None:
            cookie = self.cookies.get(name)
            if guarded and cookie is not None and cookie.maps:
                return R.error("EBUSY", note=f"{cookie.maps} mapping(s) of the buffer are live: a later "
                                             "fault would use the freed cookie (the driver counts them "
                                             "with devmap callbacks)")
            self.cookies.pop(name, None)
        return R.ok()

    def export(self, name: str, off: int, length: int, maxprot: int, flags: int, prot: int,
               mapping: str, maplen: int | None, setup_twice: bool) -> Result:
        """mmap(2) of an export: devmap_setup -> our devmap(9E) -> devmap_umem_setup."""
        user_len = page_round(length)
        if user_len == 0:
            return R.error("EINVAL", note="mmap(2) of length 0")
        if user_len > USER_VA_LIMIT:
            return R.error("ENOMEM", note="no room in the user address space")
        cookie = self.cookies.get(name)
        if not _setup_ok(cookie, off, length, maxprot, flags, prot, setup_twice):
            return R.error("ENXIO", note="devmap_umem_setup failed, devmap(9E) returned nonzero: "
                                         "devmap_setup turns any nonzero return into ENXIO")
        map_len = user_len if maplen is None else maplen
        if map_len == 0:
            return R.error("ENXIO", note="*maplen 0 maps nothing: devmap_setup calls devmap(9E) again at "
                                         "the same offset and the driver fails it (the kernel would loop)")
        if map_len % PAGESIZE:
            return R.error("EINVAL", note="*maplen is not a multiple of the page size")
        if mapping == "private":
            return R.error("EINVAL", note="MAP_PRIVATE without a devmap_access callback")
        assert cookie is not None
        if mapping == "shared-kept" and not flags & MAPPING_INVALID:
            cookie.maps += 1  # the mapping stays (a cookie-less handle is not counted)
        if flags & MAPPING_INVALID or cookie.type == UMEM_TRASH:
            return R.ok()  # nothing a kernel-side check could compare
        if prot & (PROT_READ | PROT_WRITE) == PROT_READ | PROT_WRITE:
            return R.ok(coherent=True)
        return R.ok()

    @staticmethod
    def export_is_cookieless(flags: int) -> bool:
        """MAPPING_INVALID with ALLOW_REMAP: devmap_umem_setup succeeds without setting a cookie."""
        return bool(flags & MAPPING_INVALID and flags & ALLOW_REMAP)

    def export_is_unsafe(self, off: int, length: int) -> bool:
        """Mappings that reach outside the buffer (negative or wrapping koff)."""
        return off < 0 or off + length >= U64


def _setup_ok(cookie: Cookie | None, off: int, length: int, maxprot: int, flags: int,
              prot: int, setup_twice: bool) -> bool:
    if cookie is None:
        return False
    if (off + length) % U64 > cookie.size:  # unsigned, unrounded, wrapping
        return False
    if setup_twice:  # DEVMAP_SETUP_DONE on the second call
        return False
    dh_prot = prot | PROT_USER  # mmap(2) adds PROT_USER to the user's protection
    if dh_prot & maxprot != dh_prot:
        return False
    if flags & MAPPING_INVALID and not flags & ALLOW_REMAP:
        return False
    return True
