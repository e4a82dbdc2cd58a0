"""Pictures of a resource map's layout: SVG strips for the HTML report, text for a terminal.

One row per span (an illumos span, a Linux gen_pool chunk), its segments drawn left to right in
address order with widths proportional to their sizes (never narrower than a few pixels, so a
one-unit segment in a million-unit span still shows).  Allocated segments are grey, free ones
green with their vmem freelist class written on them; the segment a step's rmalloc took is
outlined in orange; at a divergence the segments where model and kernel part are outlined in red.
"""

from __future__ import annotations

import html
from typing import Iterable

from harness.trace import Layout, Seg

WIDTH = 560          # pixels for the widest span row
ROW = 22             # row height
LABEL = 150          # room for the span's label on the left
MIN_W = 3            # a segment is never thinner than this
COLORS = {"alloc": "#9ca3af", "free": "#86efac"}


def rows(layout: Layout) -> list[tuple[Seg, list[Seg]]]:
    """The walk split into spans, each with its segments."""
    out: list[tuple[Seg, list[Seg]]] = []
    for s in layout.segs:
        if s.kind == "span":
            out.append((s, []))
        elif out:
            out[-1][1].append(s)
    return out


def _text(s: Seg) -> str:
    return f"{'free' if s.kind == 'free' else 'allocated'} {s.start}+{s.size}" + \
        (f" (freelist {s.flist})" if s.flist is not None else "")


def svg(layout: Layout, taken: int | None = None, marked: Iterable[Seg] = (), title: str = "") -> str:
    """One layout as an inline SVG.  ``taken``: the start of the segment the step allocated;
    ``marked``: segments to outline in red (where the other side differs)."""
    marked = set(marked)
    spans = rows(layout)
    if not spans:
        return "<span class='skip'>(empty map)</span>"
    widest = max(sp.size for sp, _ in spans) or 1
    height = ROW * len(spans) + (16 if title else 4) + (14 if layout.total > len(layout.segs) else 0)
    y0 = 16 if title else 2
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{LABEL + WIDTH + 4}' height='{height}' "
             f"font-family='ui-monospace,monospace' font-size='11'>"]
    if title:
        parts.append(f"<text x='0' y='11' font-weight='600'>{html.escape(title)}</text>")
    for r, (sp, segs) in enumerate(spans):
        y = y0 + r * ROW
        span_w = max(MIN_W * max(1, len(segs)), round(WIDTH * sp.size / widest))
        parts.append(f"<text x='0' y='{y + 14}'>span {sp.start}+{sp.size}</text>")
        parts.append(f"<rect x='{LABEL}' y='{y}' width='{span_w}' height='{ROW - 4}' fill='none' stroke='#444'/>")
        x = LABEL
        for i, s in enumerate(segs):
            w = max(MIN_W, round(span_w * s.size / sp.size)) if sp.size else MIN_W
            if i == len(segs) - 1:
                w = max(MIN_W, LABEL + span_w - x)  # the last one fills the row: no rounding gap
            stroke = "#dc2626" if s in marked else ("#ea580c" if taken is not None and s.kind == "alloc"
                                                    and s.start == taken else "#ffffff")
            sw = 3 if stroke != "#ffffff" else 1
            parts.append(f"<rect x='{x}' y='{y + 1}' width='{w}' height='{ROW - 6}' fill='{COLORS[s.kind]}' "
                         f"stroke='{stroke}' stroke-width='{sw}'><title>{html.escape(_text(s))}</title></rect>")
            if w >= 22:
                label = f"f{s.flist}" if s.flist is not None else ("" if s.kind == "alloc" else "f")
                label = f"{label} {s.start}" if w >= 60 else label
                parts.append(f"<text x='{x + 3}' y='{y + 13}'>{html.escape(label)}</text>")
            x += w
    if layout.total > len(layout.segs):
        parts.append(f"<text x='0' y='{height - 2}'>... {layout.total - len(layout.segs)} more segments</text>")
    parts.append("</svg>")
    return "".join(parts)


def side_by_side(model: Layout, kernel: Layout, taken: int | None = None) -> str:
    """Model and kernel layouts at a divergence, the segments where they differ outlined in red."""
    mine, theirs = set(model.segs), set(kernel.segs)
    return ("<div class='lay'>" + svg(model, taken, mine - theirs, "model") + "<br>" +
            svg(kernel, taken, theirs - mine, "kernel") + "</div>")


def text(layout: Layout, taken: int | None = None) -> list[str]:
    """The layout for a terminal: one line per span, ``[a 1+3] [f3 4+9]``, the taken one marked ``*``."""
    out = []
    for sp, segs in rows(layout):
        cells = []
        for s in segs:
            t = "a" if s.kind == "alloc" else (f"f{s.flist}" if s.flist is not None else "f")
            mark = "*" if taken is not None and s.kind == "alloc" and s.start == taken else ""
            cells.append(f"[{mark}{t} {s.start}+{s.size}]")
        out.append(f"span {sp.start}+{sp.size}: " + " ".join(cells))
    if layout.total > len(layout.segs):
        out.append(f"... {layout.total - len(layout.segs)} more segments")
    return out or ["(empty map)"]
