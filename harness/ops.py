"""The operation language: every op a trace may use, its arguments and flags.

This table is the single definition shared by the trace loader, the models,
the wire protocol to guest/ddictl and the generator.  Adding an op means one
row here plus its semantics in each model.

Argument kinds:
  name      a trace object (map, buffer, waiter); ``creates`` says which
            argument brings a new object into existence
  uint      integer in [0, 2^64)
  int       signed 64-bit integer (devmap offsets are a signed offset_t)
  flags     flag names from the op's family, as a list or "A|B"; [] is 0
  choice    one of a fixed set of strings
  bool      true/false
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

U64 = 1 << 64
PAGESIZE = 4096

UMEM_FLAGS = {
    "DDI_UMEM_SLEEP": 0x0,
    "DDI_UMEM_NOSLEEP": 0x1,
    "DDI_UMEM_PAGEABLE": 0x2,
    "DDI_UMEM_TRASH": 0x4,
}
KM_FLAGS = {
    "KM_SLEEP": 0x0,
    "KM_NOSLEEP": 0x1,
    "KM_PUSHPAGE": 0x4,
    "KM_NORMALPRI": 0x8,
}
# sys/ddidevmap.h
DEVMAP_FLAGS = {
    "DEVMAP_MAPPING_INVALID": 0x01,
    "DEVMAP_ALLOW_REMAP": 0x02,
    "DEVMAP_USE_PAGESIZE": 0x04,
}
# sys/mman.h on illumos; PROT_USER is illumos-only and ignored by the Linux port
PROT_FLAGS = {
    "PROT_NONE": 0x0,
    "PROT_READ": 0x1,
    "PROT_WRITE": 0x2,
    "PROT_EXEC": 0x4,
    "PROT_USER": 0x8,
    "PROT_ALL": 0xF,
}

FLAG_TABLES = {"umem": UMEM_FLAGS, "kmem": KM_FLAGS, "devmap": DEVMAP_FLAGS, "prot": PROT_FLAGS}


@dataclass(frozen=True)
class Arg:
    name: str
    kind: str  # name | uint | int | flags | choice | bool
    required: bool = True
    default: Any = None
    flag_table: str | None = None  # for kind == "flags"
    choices: tuple[str, ...] = ()
    obj: str | None = None  # for kind == "name": "map" | "buf" | "waiter"
    nullable: bool = False  # a name argument that may be null (pass NULL)
    doc: str = ""


@dataclass(frozen=True)
class OpSpec:
    name: str
    family: str  # rmap | umem | kmem
    routine: str  # the kernel routine, for reports
    args: tuple[Arg, ...]
    creates: str | None = None  # name of the argument that defines a new object
    frees: str | None = None  # name of the argument whose object is released
    doc: str = ""
    arg_map: dict[str, Arg] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "arg_map", {a.name: a for a in self.args})


def _map(**kw: Any) -> Arg:
    return Arg("map", "name", obj="map", **kw)


def _buf(**kw: Any) -> Arg:
    return Arg("buf", "name", obj="buf", **kw)


OPS: dict[str, OpSpec] = {}


def _op(spec: OpSpec) -> None:
    OPS[spec.name] = spec


_op(OpSpec("rmallocmap", "rmap", "rmallocmap(mapsize)",
           (_map(), Arg("mapsize", "uint", doc="entries the manual page promises; illumos ignores it")),
           creates="map", doc="create a resource map (NOSLEEP)"))
_op(OpSpec("rmallocmap_wait", "rmap", "rmallocmap_wait(mapsize)",
           (_map(), Arg("mapsize", "uint")), creates="map",
           doc="create a resource map, sleeping for the map structure if needed"))
_op(OpSpec("rmalloc", "rmap", "rmalloc(map, size)",
           (_map(), Arg("size", "uint")), doc="allocate size units; 0 means failure"))
_op(OpSpec("rmalloc_wait", "rmap", "rmalloc_wait(map, size)",
           (_map(), Arg("size", "uint"),
            Arg("waiter", "name", required=False, obj="waiter",
                doc="run the call in the background under this name; collect it with join")),
           doc="allocate size units, sleeping until space appears"))
_op(OpSpec("join", "rmap", "(wait for a background rmalloc_wait)",
           (Arg("waiter", "name", obj="waiter"),), frees="waiter",
           doc="the result of a background rmalloc_wait, or hang if it is still blocked"))
_op(OpSpec("rmfree", "rmap", "rmfree(map, size, index)",
           (_map(), Arg("size", "uint"), Arg("index", "uint")),
           doc="free an allocation, or add [index, index+size) to the map"))
_op(OpSpec("rmfreemap", "rmap", "rmfreemap(map)", (_map(),), frees="map",
           doc="destroy the map"))

_op(OpSpec("umem_alloc", "umem", "ddi_umem_alloc(size, flags, &cookie)",
           (_buf(), Arg("size", "uint"), Arg("flags", "flags", flag_table="umem")),
           creates="buf",
           doc="allocate exportable pages; value = the cookie's rounded size"))
_op(OpSpec("umem_free", "umem", "ddi_umem_free(cookie)", (_buf(nullable=True),), frees="buf",
           doc="free the cookie (buf: null passes a NULL cookie)"))
_op(OpSpec("umem_export", "umem", "devmap_umem_setup(...) + mmap(2)",
           (_buf(),
            Arg("off", "int", required=False, default=0,
                doc="koff given to devmap_umem_setup"),
            Arg("len", "uint", doc="len given to devmap_umem_setup; user space maps it rounded up to pages"),
            Arg("maxprot", "flags", required=False, default=("PROT_ALL",), flag_table="prot",
                doc="maxprot given to devmap_umem_setup"),
            Arg("flags", "flags", required=False, default=(), flag_table="devmap",
                doc="devmap_umem_setup flags"),
            Arg("prot", "flags", required=False, default=("PROT_READ", "PROT_WRITE"), flag_table="prot",
                doc="protection user space asks mmap(2) for"),
            Arg("mapping", "choice", required=False, default="shared",
                choices=("shared", "private", "shared-kept"),
                doc="MAP_SHARED or MAP_PRIVATE; shared-kept is MAP_SHARED and the mapping stays "
                    "in place after the step (until the trace ends), so later steps run while "
                    "the buffer is mapped"),
            Arg("maplen", "uint", required=False, default=None,
                doc="override the *maplen the driver's devmap(9E) reports"),
            Arg("setup_twice", "bool", required=False, default=False,
                doc="call devmap_umem_setup a second time on the same handle")),
           doc="export the buffer through devmap and mmap it; ok means mapped, and "
               "user-space and kernel writes are checked both ways"))

_op(OpSpec("kmem_alloc", "kmem", "kmem_alloc(size, flags)",
           (_buf(), Arg("size", "uint"), Arg("flags", "flags", flag_table="kmem")),
           creates="buf", doc="allocate kernel memory; value = the usable size (cache chunk)"))
_op(OpSpec("kmem_zalloc", "kmem", "kmem_zalloc(size, flags)",
           (_buf(), Arg("size", "uint"), Arg("flags", "flags", flag_table="kmem")),
           creates="buf", doc="allocate zero-filled kernel memory"))
_op(OpSpec("kmem_free", "kmem", "kmem_free(buf, size)",
           (_buf(nullable=True), Arg("size", "uint")), frees="buf",
           doc="free kernel memory; size should match the allocation (buf: null passes NULL)"))


def flag_value(table: str, names: tuple[str, ...]) -> int:
    bits = 0
    for n in names:
        bits |= FLAG_TABLES[table][n]
    return bits


def families() -> list[str]:
    return sorted({s.family for s in OPS.values()})
