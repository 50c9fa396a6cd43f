"""Plot primitives for the run report as plain SVG strings: a frame with data
coordinates, text, rectangles, points, ticks, axes and legends. Every piece of
text goes through `html.escape`."""
from __future__ import annotations

import html
import math

import numpy as np

WIDTH = 960            # px, every plot (10 in at 96 dpi)
FONT = 11              # px, tick labels; axis labels are a pixel larger


def fmt_number(v: float) -> str:
    """A coordinate, to a tenth of a pixel."""
    return f"{v:.1f}".replace(".0", "") if abs(v) < 1e6 else f"{v:.0f}"


class Frame:
    """A plot area: its pixel box and the linear maps from data to pixels."""

    def __init__(self, left: float, top: float, width: float, height: float,
                 xlim: tuple[float, float], ylim: tuple[float, float]):
        self.left, self.top, self.width, self.height = left, top, width, height
        self.xlim, self.ylim = xlim, ylim

    def x(self, v):
        x0, x1 = self.xlim
        return self.left + (np.asarray(v, float) - x0) * (self.width / (x1 - x0))

    def y(self, v):
        y0, y1 = self.ylim
        return self.top + self.height - (np.asarray(v, float) - y0) * (self.height / (y1 - y0))


def svg(anchor: str, title: str, width: float, height: float, parts: list[str]) -> str:
    e = html.escape
    w, h = fmt_number(width), fmt_number(height)
    return (f"<svg id='plot-{anchor}' width='{w}' height='{h}' viewBox='0 0 {w} {h}' role='img' "
            f"aria-label='{e(title)}' font-family='sans-serif' font-size='{FONT}'>"
            f"<title>{e(title)}</title><rect width='{w}' height='{h}' fill='#fff'/>" + "".join(parts) + "</svg>")


def text(x: float, y: float, s: str, anchor: str = "start", size: int | None = None, color: str | None = None,
          rotate: bool = False, cls: str = "") -> str:
    """Text vertically centred on y (rotated a quarter turn, reading upwards, if `rotate`)."""
    attrs = f" text-anchor='{anchor}'" if anchor != "start" else ""
    attrs += f" font-size='{size}'" if size else ""
    attrs += f" style='fill:{color}'" if color else ""
    attrs += f" class='{cls}'" if cls else ""
    if rotate:
        attrs += f" transform='rotate(-90 {fmt_number(x)} {fmt_number(y)})'"
    return f"<text x='{fmt_number(x)}' y='{fmt_number(y)}' dy='0.35em'{attrs}>{html.escape(s)}</text>"


def rect(x: float, y: float, w: float, h: float, fill: str, cls: str = "", n: int | None = None,
          tip: str = "", stroke: bool = False) -> str:
    """A bar; `n` (the rows it stands for) and `tip` (a tooltip) are optional."""
    attrs = f" class='{cls}'" if cls else ""
    attrs += f" data-n='{n}'" if n is not None else ""
    attrs += " stroke='#fff' stroke-width='0.8'" if stroke else ""
    tail = f"><title>{html.escape(tip)}</title></rect>" if tip else "/>"
    return (f"<rect x='{fmt_number(x)}' y='{fmt_number(y)}' width='{fmt_number(max(w, 0.0))}' height='{fmt_number(max(h, 0.0))}' "
            f"fill='{fill}'{attrs}{tail}")


def tick_values(lo: float, hi: float, n: int = 6, integer: bool = False) -> tuple[list[float], float]:
    """Round tick values inside [lo, hi] at most n + 1 of them, and their step."""
    span = hi - lo
    if not span > 0:
        return [lo], 1.0
    mag = 10.0 ** math.floor(math.log10(span / n))
    step = 10 * mag
    for m in (1, 2, 2.5, 5, 10):
        if span / (m * mag) <= n and not (integer and m * mag < 1):
            step = m * mag
            break
    step = max(step, 1.0) if integer else step
    first = math.ceil(lo / step - 1e-9)
    ticks = [(first + k) * step for k in range(int(math.floor(hi / step + 1e-9)) - first + 1)]
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks], step


def tick_label(v: float, step: float) -> str:
    decimals = next((d for d in range(7) if abs(round(step, d) - step) <= 1e-9 * step), 6)
    return f"{v:,.{decimals}f}"


def axes(f: Frame, xlabel: str, ylabel: str = "", xticks: bool = True, yticks: bool = True,
          integer_y: bool = False) -> list[str]:
    """The frame's box, tick marks and labels on the bottom and left, axis labels."""
    out = [f"<rect x='{fmt_number(f.left)}' y='{fmt_number(f.top)}' width='{fmt_number(f.width)}' height='{fmt_number(f.height)}' "
           f"fill='none' stroke='#333' stroke-width='0.8'/>"]
    bottom = f.top + f.height
    if xticks:
        ticks, step = tick_values(*f.xlim)
        for t in ticks:
            x = float(f.x(t))
            out.append(f"<line x1='{fmt_number(x)}' y1='{fmt_number(bottom)}' x2='{fmt_number(x)}' y2='{fmt_number(bottom + 4)}' stroke='#333'/>")
            out.append(text(x, bottom + 12, tick_label(t, step), anchor="middle", cls="tick"))
    if yticks:
        ticks, step = tick_values(*f.ylim, integer=integer_y)
        for t in ticks:
            y = float(f.y(t))
            out.append(f"<line x1='{fmt_number(f.left - 4)}' y1='{fmt_number(y)}' x2='{fmt_number(f.left)}' y2='{fmt_number(y)}' stroke='#333'/>")
            out.append(text(f.left - 6, y, tick_label(t, step), anchor="end", cls="tick"))
    out.append(text(f.left + f.width / 2, bottom + 30, xlabel, anchor="middle", size=FONT + 1))
    if ylabel:
        out.append(text(f.left - 46, f.top + f.height / 2, ylabel, anchor="middle", size=FONT + 1, rotate=True))
    return out


def category_axis(f: Frame, labels: list[str], colors: list[str | None]) -> list[str]:
    """Tick marks and labels on the left of a horizontal bar chart, one per row (row i centred at y = i)."""
    out = []
    for i, (label, color) in enumerate(zip(labels, colors)):
        y = float(f.y(i))
        out.append(f"<line x1='{fmt_number(f.left - 4)}' y1='{fmt_number(y)}' x2='{fmt_number(f.left)}' y2='{fmt_number(y)}' stroke='#333'/>")
        out.append(text(f.left - 6, y, label, anchor="end", color=color, cls="tick"))
    return out


def legend(x: float, y: float, items: list[tuple[str, str]], title: str = "") -> list[str]:
    """A row of coloured swatches with their labels, starting at (x, y)."""
    out = ["<g class='legend'>"]
    if title:
        out.append(text(x, y, title + ":"))
        x += text_width(title + ":") + 10
    for label, color in items:
        out.append(f"<rect x='{fmt_number(x)}' y='{fmt_number(y - 5)}' width='18' height='10' fill='{color}'/>")
        out.append(text(x + 23, y, label))
        x += 23 + text_width(label) + 18
    out.append("</g>")
    return out


def text_width(s: str, size: int = FONT) -> float:
    """Roughly how wide a text is in a sans-serif font, to keep labels inside the plot."""
    return 0.6 * size * len(s)


def bar_xmax(values: np.ndarray, labels: list[str], width: float) -> float:
    """The right end of a bar chart's x axis: room for the longest bar plus its label (and 5 % more)."""
    xmax = float(np.max(values, initial=0.0)) * 1.05 or 1.0
    for v, label in zip(values, labels):
        room = width - text_width(label) - 8
        if room > width / 3 and v > 0:
            xmax = max(xmax, float(v) * width / room)
    return xmax


def points(f: Frame, xy: np.ndarray, color: str, label: str, radius: float = 2.5, alpha: float = 0.6) -> list[str]:
    """A scatter of rows as dots. Rows that land on the same half pixel are drawn as one dot standing for all of
    them (`data-n`), as opaque as that many dots of opacity `alpha` on top of each other: the same picture as
    one dot per row, for a fraction of the page size (a snapshot has tens of thousands of rows on a few hundred
    distinct spots)."""
    xy = xy[np.isfinite(xy).all(axis=1)]
    if not len(xy):
        return []
    px = np.column_stack([f.x(xy[:, 0]), f.y(xy[:, 1])])
    half = np.round(px * 2).astype(np.int64)  # half pixels, inside the SVG so not negative
    spots, counts = np.unique((half[:, 0] << 20) | half[:, 1], return_counts=True)
    opacity = 1 - (1 - alpha) ** counts
    e = html.escape(label)
    return [f"<circle class='mark point' data-surface='{e}' data-n='{n}' cx='{fmt_number((k >> 20) / 2)}' "
            f"cy='{fmt_number((k & 0xFFFFF) / 2)}' r='{radius}' fill='{color}' fill-opacity='{o:.3f}'/>"
            for k, n, o in zip(spots.tolist(), counts.tolist(), opacity.tolist())]
