"""Random op sequences, reproducible from a seed and valid by construction.

Each generated trace exercises one family.  Without ``misuse`` every step is
a legal call (frees match earlier allocations exactly, exports stay inside
their buffers), so any divergence is the model's or the kernel's, never the
generator's.  The generator tracks what is outstanding itself, from the
arguments it chose, without asking any model: the same trace checks every
model.
"""

from __future__ import annotations

import random
from typing import Any

from harness.conformance.traces import Trace, _parse_step, parse_trace

FAMILIES = ("rmap", "umem", "kmem")
PAGE = 4096


PROFILES = ("basic", "corners")


def generate(count: int, seed: int, families: tuple[str, ...] = FAMILIES, steps: int = 24,
             misuse: bool = False, profile: str = "basic") -> list[Trace]:
    """``count`` traces, cycling through ``families``; trace i uses seed (seed, i).

    ``profile`` ``corners`` makes resource-map traces only, aimed at the corners of vmem
    (see ``_rmap_corners``); ``families`` is then ignored.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown generator profile {profile!r}: use one of {', '.join(PROFILES)}")
    if profile == "corners":
        families = ("rmap",)
    out = []
    for i in range(count):
        family = families[i % len(families)]
        rng = random.Random(f"{seed}:{i}")
        make = _rmap_corners if profile == "corners" else {"rmap": _rmap, "umem": _umem, "kmem": _kmem}[family]
        body = make(rng, steps, misuse)
        tag = "corners" if profile == "corners" else family
        out.append(parse_trace({"name": f"gen-{tag}-s{seed}-{i}",
                                "about": f"generated: seed {seed}, trace {i}, {profile} {family}",
                                "steps": body}, source=f"<generated seed={seed}>"))
    return out


def _rmap(rng: random.Random, n: int, misuse: bool) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [{"op": rng.choice(["rmallocmap", "rmallocmap_wait"]), "map": "m",
                                    "mapsize": rng.choice([0, 1, 12, 64])}]
    # spans: disjoint, sometimes address-adjacent (the no-merge rule), sizes across classes
    spans: list[tuple[int, int]] = []
    base = rng.randint(1, 5000)
    for _ in range(rng.randint(1, 3)):
        size = rng.choice([rng.randint(1, 64), rng.randint(65, 1100), rng.randint(1100, 70000)])
        spans.append((base, size))
        steps.append({"op": "rmfree", "map": "m", "size": size, "index": base})
        base += size + rng.choice([0, 0, rng.randint(1, 5000)])
    live: list[tuple[int, int]] = []  # (step number of the rmalloc, size): indices are results
    total = sum(s for _, s in spans)
    while len(steps) < n:
        r = rng.random()
        if r < 0.55:
            size = rng.choice([rng.randint(1, 8), rng.randint(1, 300), rng.randint(1, max(2, total // 2))])
            steps.append({"op": "rmalloc", "map": "m", "size": size})
        elif r < 0.62:
            size = rng.randint(1, 10 * max(1, total))
            steps.append({"op": "rmalloc", "map": "m", "size": size})  # often fails: counts fail
        elif r < 0.66 and misuse:
            steps.append({"op": "rmfree", "map": "m", "size": rng.randint(0, 50), "index": rng.randint(0, base)})
        else:
            # return a whole span's worth or add a new one: frees of allocations need their
            # results, which only the run knows, so generated traces free by re-initialising
            # fresh, disjoint ranges instead
            size = rng.randint(1, 2000)
            steps.append({"op": "rmfree", "map": "m", "size": size, "index": base})
            spans.append((base, size))
            total += size
            base += size + rng.choice([0, rng.randint(1, 100)])
    del live
    return steps


U64 = 1 << 64


def _boundary(rng: random.Random, hi: int = 20) -> int:
    """A size at a power-of-two class boundary: 2^k - 1, 2^k or 2^k + 1 (at least 1)."""
    return max(1, (1 << rng.randint(0, hi)) + rng.choice((-1, 0, 1)))


def _rmap_corners(rng: random.Random, n: int, misuse: bool) -> list[dict[str, Any]]:
    """Resource-map traces aimed at vmem's corners: several sleepers on one map (every
    freelist insertion wakes them all), spans near 2^64 and wrapping past it, overlapping and
    address-adjacent spans, sizes at class boundaries, and frees of earlier allocations.

    Frees of earlier allocations need their indices, which only a run knows; the generator
    asks the illumos model for them (raw kernel semantics).  That keeps a trace legal when the
    model is right, and when it is wrong the trace diverges at the allocation whose index the
    model got wrong -- before the free that used it -- so the first divergence still names the
    model's mistake.  New spans are never inside an existing one (that rmfree would be a free
    of units never allocated); with ``misuse`` some frees are partial or stray.
    """
    from harness.model import build
    from harness.model.base import ModelConfig
    from harness.trace import ResultKind

    model = build("illumos", ModelConfig(destructive=True))
    steps: list[dict[str, Any]] = []
    live: list[tuple[str, int, int]] = []  # (map, index, size) allocated and not freed
    spans: dict[str, list[tuple[int, int]]] = {}  # map -> [start, start + size) (unwrapped)
    waiters: dict[str, str] = {}  # waiter -> map, still to be joined
    k = 0

    def add(step: dict[str, Any]) -> Any:
        steps.append(step)
        return model.step(_parse_step(step, "<generator>", len(steps)))

    def inside(m: str, base: int, size: int) -> bool:
        """vmem_contains(): some span holds the range, in vmem's wrapping arithmetic."""
        last = (base + size - 1) % U64
        return any(base >= a and last <= (b - 1) % U64 for a, b in spans[m])

    def new_span(m: str, base: int, size: int) -> None:
        size = max(1, size)
        base %= U64
        if base == 0 and rng.random() < 0.9:
            base = 1  # vmem_add(.., 0, ..) panics: only now and then
        if inside(m, base, size):
            base = max((b for _, b in spans[m] if b < U64 >> 1), default=1) + rng.choice([0, 1, rng.randint(2, 500)])
        if base >= U64 or inside(m, base, size):
            return
        spans[m].append((base, base + size))
        add({"op": "rmfree", "map": m, "size": size, "index": base})

    maps = ["m"] if rng.random() < 0.7 else ["m", "n"]
    for m in maps:
        spans[m] = []
        add({"op": "rmallocmap", "map": m, "mapsize": rng.choice([0, 1, 12])})
    for m in maps:  # the first spans: ordinary, near the top of the address space, at 0 or 1
        for _ in range(rng.randint(1, 3)):
            kind = rng.random()
            size = rng.choice([_boundary(rng, 12), rng.randint(1, 300), _boundary(rng, 18)])
            if kind < 0.15:  # ends exactly at 2^64, or wraps past it
                base = U64 - size - rng.choice([0, 0, rng.randint(1, 64), -rng.randint(1, size)])
            elif kind < 0.22:
                base = rng.choice([0, 1])
            else:
                base = rng.choice([rng.randint(1, 5000), _boundary(rng, 30)])
            new_span(m, base, size)
    while len(steps) < n:
        m = rng.choice(maps)
        r = rng.random()
        if r < 0.40:
            size = rng.choice([_boundary(rng, 10), rng.randint(1, 64), _boundary(rng, 16)])
            vm = model.rmap.maps.get(m)
            failed = vm.fail if vm is not None else 0
            res = add({"op": "rmalloc", "map": m, "size": size})
            # rmalloc returns 0 both for a failure and for a success at address 0: fail tells
            if res.kind is ResultKind.VALUE and vm is not None and vm.fail == failed:
                live.append((m, res.value, size))
        elif r < 0.52 and len(waiters) < 4:
            name = f"w{k}"
            k += 1
            add({"op": "rmalloc_wait", "map": m, "size": rng.choice([_boundary(rng, 8), rng.randint(1, 40)]),
                 "waiter": name})
            waiters[name] = m
        elif r < 0.80 and live:
            mm, index, size = live.pop(rng.randrange(len(live)))
            if misuse and rng.random() < 0.2:
                size = rng.randint(1, size)  # a partial free: vmem panics "wrong size"
            add({"op": "rmfree", "map": mm, "size": size, "index": index})
        elif r < 0.93:
            # a new span: after the others (sometimes address-adjacent), or overlapping the
            # end of one (two spans then hold the same addresses; vmem never merges spans)
            size = rng.choice([_boundary(rng, 12), rng.randint(1, 2000)])
            low = [(a, b) for a, b in spans[m] if b < U64 >> 1]
            if low and rng.random() < 0.4:
                a, b = rng.choice(low)
                base = rng.randint(a, b - 1) if b - a > 1 else a
                size = max(size, b - base + 1)  # reaches past the end: not contained
            else:
                base = max((b for _, b in low), default=1) + rng.choice([0, 0, rng.randint(1, 1 << 20)])
            new_span(m, base, size)
        elif misuse:
            add({"op": "rmfree", "map": m, "size": rng.randint(0, 50), "index": rng.randint(0, 1 << 20)})
    # collect every waiter: a still-sleeping one is a hang that ends the trace, so those that
    # the model says are satisfied go first
    asleep = {w for w, wt in model.rmap.waiters.items() if wt.result is None}
    for w in sorted(waiters, key=lambda w: (w in asleep, w)):
        steps.append({"op": "join", "waiter": w})
    return steps


def _umem(rng: random.Random, n: int, misuse: bool) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    bufs: dict[str, int] = {}
    k = 0
    while len(steps) < n:
        r = rng.random()
        if r < 0.4 or not bufs:
            name = f"b{k}"
            k += 1
            size = rng.choice([0, rng.randint(1, PAGE), rng.randint(1, 6 * PAGE), rng.randint(1, 40) * PAGE])
            flags = rng.choice([["DDI_UMEM_SLEEP"], ["DDI_UMEM_NOSLEEP"], ["DDI_UMEM_PAGEABLE"],
                                ["DDI_UMEM_SLEEP"]])
            steps.append({"op": "umem_alloc", "buf": name, "size": size, "flags": flags})
            if size:
                bufs[name] = (size + PAGE - 1) // PAGE * PAGE
        elif r < 0.8:
            name = rng.choice(sorted(bufs))
            pages = bufs[name] // PAGE
            off_pages = rng.randint(0, pages - 1)
            length = rng.randint(1, pages - off_pages) * PAGE
            step = {"op": "umem_export", "buf": name, "off": off_pages * PAGE, "len": length}
            if rng.random() < 0.2:
                step["prot"] = ["PROT_READ"]
            steps.append(step)
        else:
            name = rng.choice(sorted(bufs))
            steps.append({"op": "umem_free", "buf": name})
            del bufs[name]
    return steps


def _kmem(rng: random.Random, n: int, misuse: bool) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    bufs: dict[str, int] = {}
    k = 0
    while len(steps) < n:
        if rng.random() < 0.6 or not bufs:
            name = f"k{k}"
            k += 1
            size = rng.choice([rng.randint(1, 64), rng.randint(1, 512), rng.randint(1, 4096),
                               rng.randint(4097, 131072), rng.randint(131073, 1 << 20)])
            op = rng.choice(["kmem_alloc", "kmem_zalloc"])
            flags = rng.choice([["KM_SLEEP"], ["KM_NOSLEEP"], ["KM_PUSHPAGE"], ["KM_NOSLEEP", "KM_NORMALPRI"]])
            steps.append({"op": op, "buf": name, "size": size, "flags": flags})
            bufs[name] = size
        else:
            name = rng.choice(sorted(bufs))
            size = bufs.pop(name)
            if misuse and rng.random() < 0.3:
                size = rng.randint(0, 2 * size)
            steps.append({"op": "kmem_free", "buf": name, "size": size})
    return steps
