"""Self-contained HTML report of a registration (no QGIS import; matplotlib optional).

Everything is inside the one file: figures are PNGs embedded as base64 ``data:`` URIs. When
matplotlib is missing (it is optional in some QGIS installs) the report degrades to tables and
a note saying what to install.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sar_optical_matcher.core.files import write_text_atomic


@dataclass
class ReportData:
    """What the report shows.

    Attributes:
        title: page title.
        summary: ordered key -> value pairs shown in the summary table (RMSE, inliers, ...).
        tie_points: (N, 4) float64, (opt_x_px, opt_y_px, residual_x_px, residual_y_px).
        inliers: (N,) bool, RANSAC inlier flags of ``tie_points``.
        maps: up to a few (id, (M, M) float32 correspondence map) pairs to show as images.
        notes: free text paragraphs (warnings, provenance).
        ids: (N,) tie-point ids shown in the table's ``#`` column (the ids the maps and the
            tie-point layer carry); ``None`` numbers the rows 0..N-1.
    """

    title: str
    summary: Mapping[str, Any]
    tie_points: np.ndarray
    inliers: np.ndarray
    maps: Sequence[tuple[int, np.ndarray]] = field(default_factory=list)
    notes: Sequence[str] = field(default_factory=list)
    ids: Sequence[int] | None = None


def _png_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(data: ReportData) -> list[tuple[str, str]]:
    """(caption, data URI) of each figure; empty list when matplotlib is not installed."""
    try:
        # a bare Figure renders to PNG on its own: no matplotlib.use(), which inside QGIS would
        # switch pyplot's backend for every other user of it and close their open figures
        from matplotlib import figure as mpl_figure
    except ImportError:
        return []
    Figure = mpl_figure.Figure  # noqa: N806 - the class
    out = []
    tp, inl = data.tie_points, np.asarray(data.inliers, bool)
    if len(tp):
        fig = Figure(figsize=(8, 4))
        ax1, ax2 = fig.subplots(1, 2)
        scale = 10.0
        for mask, colour, label in ((inl, "tab:green", "inlier"), (~inl, "tab:red", "outlier")):
            if mask.any():
                ax1.quiver(
                    tp[mask, 0],
                    tp[mask, 1],
                    tp[mask, 2] * scale,
                    tp[mask, 3] * scale,  # rows grow downwards, as on the inverted y axis
                    color=colour,
                    angles="xy",
                    scale_units="xy",
                    scale=1,
                    label=label,
                )
                ax2.scatter(tp[mask, 2], tp[mask, 3], s=12, c=colour, label=label)
        ax1.invert_yaxis()
        ax1.set_title(f"residuals x{scale:g} at tie points (optical px)")
        ax1.set_aspect("equal", adjustable="datalim")
        ax2.axhline(0, color="grey", lw=0.5)
        ax2.axvline(0, color="grey", lw=0.5)
        ax2.set_xlabel("residual x (px)")
        ax2.set_ylabel("residual y (px)")
        ax2.legend(loc="best", fontsize=8)
        out.append(("Residuals", _png_uri(fig)))
    for ident, cmap in list(data.maps)[:6]:
        fig = Figure(figsize=(3, 3))
        ax = fig.subplots()
        ax.imshow(np.asarray(cmap, np.float32), cmap="viridis")
        ax.set_title(f"correspondence map, point {ident}", fontsize=8)
        out.append((f"Correspondence map {ident}", _png_uri(fig)))
    return out


def _number(value: float, small: bool) -> str:
    """Three decimals, or with ``small`` three significant digits below 0.01.

    Map units in degrees: a 0.7 px RMSE on a 1e-4 degree grid is 7e-05, not 0.000.
    """
    v = float(value)
    if small and v != 0 and abs(v) < 0.01:
        return f"{v:.3g}"
    return f"{v:.3f}"


def _table(
    rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None, small: bool = False
) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return _number(float(v), small)
        return html.escape(str(v)).replace("\n", "<br>")

    parts = ["<table>"]
    if header:
        parts.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    parts += ["<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows]
    parts.append("</table>")
    return "\n".join(parts)


def render_html(data: ReportData) -> str:
    """The complete HTML page for ``data``."""
    title = html.escape(data.title)
    summary = _table(list(data.summary.items()), small=True)
    body = [f"<h1>{title}</h1>", "<h2>Summary</h2>", summary]
    body += [f"<p>{html.escape(n)}</p>" for n in data.notes]
    tp = np.asarray(data.tie_points, np.float64).reshape(-1, 4)
    ids = range(len(tp)) if data.ids is None else [int(i) for i in data.ids]
    if len(ids) != len(tp):
        raise ValueError(f"ids has {len(ids)} entries for {len(tp)} tie points; give one each")
    figures = _figures(data)
    if figures:
        for caption, uri in figures:
            body.append(
                f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    else:
        body.append(
            "<p><em>matplotlib is not installed: plots are omitted "
            "(pip install matplotlib to get them).</em></p>"
        )
    rows = [
        (i, x, y, rx, ry, float(np.hypot(rx, ry)), "yes" if ok else "no")
        for i, (x, y, rx, ry), ok in zip(ids, tp, np.asarray(data.inliers, bool))
    ]
    body += [
        "<h2>Tie points</h2>",
        _table(rows, ["#", "opt x px", "opt y px", "res x px", "res y px", "res px", "inlier"]),
    ]
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}"
        "figure{display:inline-block;margin:4px}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(path: str | os.PathLike[str], data: ReportData) -> Path:
    """Write the report atomically (temporary name in the same folder, then rename)."""
    return write_text_atomic(path, render_html(data))
