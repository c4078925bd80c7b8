"""A self-contained HTML drift report: one overlaid histogram per drifted feature, then every feature's scores.

Plain HTML and inline SVG, no script and no external file, so the report opens anywhere and can
be attached to a ticket as it is. Needs the `drift` extra (pandas, numpy).
"""

from __future__ import annotations

import html
from collections.abc import Hashable

import numpy as np
import pandas as pd

from producers.drift import DriftReport, FeatureDrift

WIDTH, HEIGHT, PAD = 560, 220, 36
COLOURS = {"reference": "#4C78A8", "current": "#F58518"}
BINS = 30


def render(report: DriftReport, reference: pd.DataFrame, current: pd.DataFrame, title: str = "Drift report") -> str:
    """The whole report as one HTML document."""
    drifted = [f for f in report.features if f.drifted]
    charts = "".join(
        _figure(f, reference[_column(reference, f.name)], current[_column(current, f.name)]) for f in drifted
    )
    verdict = f"{len(drifted)} of {len(report.features)} features drifted" if drifted else "no feature drifted"
    return _PAGE.format(
        title=html.escape(title),
        verdict=html.escape(verdict),
        rows=f"{report.rows_reference:,} reference rows, {report.rows_current:,} current rows",
        rule=html.escape(_rule(report)),
        charts=charts or "<p>Nothing to plot: no feature drifted.</p>",
        table=_table(report),
    )


def _column(frame: pd.DataFrame, name: str) -> Hashable:
    """The frame's column whose string form is `name` (reports name features as strings)."""
    return next(column for column in frame.columns if str(column) == name)


def _rule(report: DriftReport) -> str:
    t = report.thresholds
    return f"drifted when p < {t.alpha:.2g} ({t.correction} correction of {t.p_value:g}) or PSI ≥ {t.psi_threshold:g}"


def _figure(feature: FeatureDrift, reference: pd.Series, current: pd.Series) -> str:
    """One feature's overlaid histogram with its scores."""
    if feature.kind == "numeric":
        labels, ref, cur = _numeric_shares(reference, current)
    else:
        labels, ref, cur = _category_shares(reference, current)
    caption = f"{feature.name}: PSI {feature.psi:.3f}, p-value {feature.p_value:.3g} ({feature.kind})"
    return f"<figure><figcaption>{html.escape(caption)}</figcaption>{_svg(labels, ref, cur)}</figure>"


def _numeric_shares(reference: pd.Series, current: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    both = pd.concat([reference, current]).dropna().to_numpy(dtype=float)
    edges = np.histogram_bin_edges(both, bins=BINS)
    ref = np.histogram(reference.dropna().to_numpy(dtype=float), edges)[0]
    cur = np.histogram(current.dropna().to_numpy(dtype=float), edges)[0]
    labels = [f"{edges[0]:.3g}", f"{edges[-1]:.3g}"]
    return labels, ref / max(ref.sum(), 1), cur / max(cur.sum(), 1)


def _category_shares(reference: pd.Series, current: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    ref_counts = reference.dropna().astype(str).value_counts()
    cur_counts = current.dropna().astype(str).value_counts()
    categories = sorted(set(ref_counts.index) | set(cur_counts.index))[:BINS]
    ref = np.array([ref_counts.get(c, 0) for c in categories], dtype=float)
    cur = np.array([cur_counts.get(c, 0) for c in categories], dtype=float)
    return categories, ref / max(ref.sum(), 1), cur / max(cur.sum(), 1)


def _svg(labels: list[str], reference: np.ndarray, current: np.ndarray) -> str:
    """Bars of both shares over the same bins, the reference behind the current, both see-through."""
    top = max(float(reference.max(initial=0)), float(current.max(initial=0)), 1e-9)
    width = (WIDTH - 2 * PAD) / len(reference)
    bars = "".join(
        _bar(i, share, top, width, side)
        for side, shares in (("reference", reference), ("current", current))
        for i, share in enumerate(shares)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img">'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#333"/>'
        f"{bars}{_axis_labels(labels, width)}{_legend()}</svg>"
    )


def _bar(index: int, share: float, top: float, width: float, side: str) -> str:
    height = (HEIGHT - 2 * PAD) * share / top
    x, y = PAD + index * width, HEIGHT - PAD - height
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width - 1, 1):.1f}" height="{height:.1f}" '
        f'fill="{COLOURS[side]}" fill-opacity="0.55"><title>{side}: {share:.1%}</title></rect>'
    )


def _axis_labels(labels: list[str], width: float) -> str:
    if len(labels) == 2:  # a numeric range: its two ends
        left, right = (html.escape(label) for label in labels)
        return (
            f'<text x="{PAD}" y="{HEIGHT - PAD + 16}" font-size="11">{left}</text>'
            f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 16}" font-size="11" text-anchor="end">{right}</text>'
        )
    return "".join(
        f'<text x="{PAD + (i + 0.5) * width:.1f}" y="{HEIGHT - PAD + 16}" font-size="10" '
        f'text-anchor="middle">{html.escape(label[:12])}</text>'
        for i, label in enumerate(labels)
    )


def _legend() -> str:
    items = "".join(
        f'<rect x="{WIDTH - 170 + i * 85}" y="8" width="12" height="12" fill="{colour}" fill-opacity="0.55"/>'
        f'<text x="{WIDTH - 154 + i * 85}" y="18" font-size="12">{side}</text>'
        for i, (side, colour) in enumerate(COLOURS.items())
    )
    return items


def _table(report: DriftReport) -> str:
    rows = "".join(
        f"<tr class={'drifted' if f.drifted else 'calm'}><td>{html.escape(f.name)}</td><td>{f.kind}</td>"
        f"<td>{f.statistic:.4f}</td><td>{f.p_value:.3g}</td><td>{f.psi:.4f}</td>"
        f"<td>{'yes' if f.drifted else 'no'}</td><td>{f.nan_reference} / {f.nan_current}</td></tr>"
        for f in report.features
    )
    head = "<tr><th>feature</th><th>kind</th><th>statistic</th><th>p-value</th><th>PSI</th><th>drifted</th>"
    return f"<table>{head}<th>NaN ref / cur</th></tr>{rows}</table>"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }}
.meta {{ color: #555; margin: 2px 0; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 16px; margin: 16px 0; }}
figure {{ margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: 8px; }}
figcaption {{ font-weight: 600; margin-bottom: 4px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ddd; padding: 4px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
tr.drifted td {{ background: #fdecea; }}
</style></head>
<body>
<h1>{title}: {verdict}</h1>
<p class="meta">{rows}</p>
<p class="meta">{rule}</p>
<div class="charts">{charts}</div>
<h2>Every feature</h2>
{table}
</body></html>
"""
