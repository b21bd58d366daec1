"""Tiny inline-SVG charts for the HTML report (no plotting dependency)."""

from __future__ import annotations

import html
import math


def _esc(s: object) -> str:
    return html.escape(str(s))


def bar_chart(labels: list[str], values: list[float], title: str, width: int = 640, unit: str = "") -> str:
    """Horizontal bars, one per label."""
    if not values:
        return f"<p><em>{_esc(title)}: no data</em></p>"
    row_h, left, right = 22, 190, 80
    h = row_h * len(values) + 30
    top = max(values) or 1
    parts = [f'<svg width="{width}" height="{h}" role="img" aria-label="{_esc(title)}">',
             f'<text x="0" y="14" font-weight="bold">{_esc(title)}</text>']
    for i, (lab, v) in enumerate(zip(labels, values)):
        y = 24 + i * row_h
        w = (width - left - right) * (v / top)
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" font-size="12">{_esc(lab)[:28]}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{row_h - 6}" fill="#4a7ab5"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + 14}" font-size="12">{v:,.0f}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(values: list[float], title: str, bins: int = 20, width: int = 640, height: int = 180,
              log_x: bool = False) -> str:
    """Vertical-bar histogram of `values`."""
    vals = [math.log10(v + 1) if log_x else v for v in values if v is not None]
    if not vals:
        return f"<p><em>{_esc(title)}: no data</em></p>"
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    counts = [0] * bins
    for v in vals:
        counts[min(int((v - lo) / span * bins), bins - 1)] += 1
    top = max(counts)
    bw = (width - 40) / bins
    parts = [f'<svg width="{width}" height="{height + 40}" role="img" aria-label="{_esc(title)}">',
             f'<text x="0" y="14" font-weight="bold">{_esc(title)} (n={len(vals):,})</text>']
    for i, c in enumerate(counts):
        bh = (height - 20) * c / top
        parts.append(f'<rect x="{20 + i * bw:.1f}" y="{height - bh + 10:.1f}" width="{bw - 1:.1f}" '
                     f'height="{bh:.1f}" fill="#6aa36f"><title>{c}</title></rect>')
    fmt = (lambda x: f"{10 ** x - 1:,.0f}") if log_x else (lambda x: f"{x:,.2f}")
    parts.append(f'<text x="20" y="{height + 28}" font-size="11">{fmt(lo)}</text>')
    parts.append(f'<text x="{width - 20}" y="{height + 28}" font-size="11" text-anchor="end">{fmt(hi)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def line_chart(xs: list[float], ys: list[float | None], title: str, width: int = 640, height: int = 180,
               x_label: str = "rows generated") -> str:
    """One line of (x, y) points; points whose y is None are left out."""
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if not pts:
        return f"<p><em>{_esc(title)}: no data</em></p>"
    x_lo, x_hi = min(x for x, _ in pts), max(x for x, _ in pts)
    y_lo, y_hi = min(0.0, min(y for _, y in pts)) + 0.0, max(y for _, y in pts) + 0.0  # + 0.0: no "-0" label
    xs_span, ys_span = (x_hi - x_lo) or 1.0, (y_hi - y_lo) or 1.0
    left, top, plot_w, plot_h = 60, 22, width - 80, height - 40

    def at(x: float, y: float) -> str:
        return f"{left + plot_w * (x - x_lo) / xs_span:.1f},{top + plot_h * (1 - (y - y_lo) / ys_span):.1f}"

    parts = [f'<svg width="{width}" height="{height + 20}" role="img" aria-label="{_esc(title)}">',
             f'<text x="0" y="14" font-weight="bold">{_esc(title)}</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#999"/>',
             f'<polyline fill="none" stroke="#b5584a" stroke-width="2" points="{" ".join(at(x, y) for x, y in pts)}"/>']
    for x, y in pts:
        cx, cy = at(x, y).split(",")
        parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="#b5584a"><title>{x:,.0f}: {y:,.3g}</title></circle>')
    parts.append(f'<text x="{left - 4}" y="{top + 4}" font-size="11" text-anchor="end">{y_hi:,.3g}</text>')
    parts.append(f'<text x="{left - 4}" y="{top + plot_h}" font-size="11" text-anchor="end">{y_lo:,.3g}</text>')
    parts.append(f'<text x="{left}" y="{top + plot_h + 16}" font-size="11">{x_lo:,.0f}</text>')
    parts.append(f'<text x="{left + plot_w}" y="{top + plot_h + 16}" font-size="11" text-anchor="end">'
                 f'{x_hi:,.0f} {_esc(x_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
