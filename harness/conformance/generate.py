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

from harness.conformance.traces import Trace, parse_trace

FAMILIES = ("rmap", "umem", "kmem")
PAGE = 4096


def generate(count: int, seed: int, families: tuple[str, ...] = FAMILIES, steps: int = 24,
             misuse: bool = False) -> list[Trace]:
    """``count`` traces, cycling through ``families``; trace i uses seed (seed, i)."""
    out = []
    for i in range(count):
        family = families[i % len(families)]
        rng = random.Random(f"{seed}:{i}")
        body = {"rmap": _rmap, "umem": _umem, "kmem": _kmem}[family](rng, steps, misuse)
        out.append(parse_trace({"name": f"gen-{family}-s{seed}-{i}",
                                "about": f"generated: seed {seed}, trace {i}, family {family}",
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
