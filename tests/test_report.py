"""The HTML registration report: its figures are the fit's, user strings are escaped, and
rendering it leaves matplotlib as it found it (inside QGIS other code uses pyplot too)."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from sar_optical_matcher import report as rep

ROOT = Path(__file__).resolve().parent.parent


def _cells(text: str) -> dict[str, str]:
    """Summary key -> printed value (the first table of the page)."""
    table = text.split("<table>", 2)[1]
    pairs = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", table)
    return {html.unescape(k): html.unescape(v) for k, v in pairs}


def _tie_rows(text: str) -> list[list[str]]:
    table = text.split("<table>")[2]
    return [re.findall(r"<td>(.*?)</td>", r) for r in re.findall(r"<tr>(<td>.*?)</tr>", table)]


def test_user_strings_are_escaped() -> None:
    name = 'a<b>&"c".tif'
    data = rep.ReportData(
        title=f"registration of {name}",
        summary={"SAR raster": f"/data/{name}", f"key {name}": 1},
        tie_points=np.zeros((0, 4)),
        inliers=np.zeros(0, bool),
        notes=[f"note on {name}"],
    )
    text = rep.render_html(data)
    escaped = html.escape(name)
    assert escaped == "a&lt;b&gt;&amp;&quot;c&quot;.tif"
    assert text.count(escaped) == 5  # <title>, <h1>, summary key and value, note
    assert "<b>" not in text and name not in text
    assert _cells(text)["SAR raster"] == f"/data/{name}"


def test_small_map_unit_figures_are_not_rounded_to_zero() -> None:
    # 0.7 px on a 9e-5 degree grid (EPSG:4326): "0.000" hid the figure entirely
    data = rep.ReportData(
        "R",
        {"RMSE (optical px)": 0.7123, "RMSE (map units)": 0.7123 * 8.983e-5, "zero": 0.0},
        np.zeros((0, 4)),
        np.zeros(0, bool),
    )
    cells = _cells(rep.render_html(data))
    assert cells["RMSE (optical px)"] == "0.712"
    assert cells["RMSE (map units)"] == "6.4e-05"
    assert cells["zero"] == "0.000"


def test_tie_point_rows_carry_their_ids() -> None:
    tp = np.array([[10.0, 20.0, 0.1, -0.2], [30.0, 40.0, 3.0, 4.0], [50.0, 60.0, 0.0, 0.5]])
    data = rep.ReportData("R", {}, tp, np.array([True, False, True]), ids=[3, 7, 12])
    rows = _tie_rows(rep.render_html(data))
    assert [r[0] for r in rows] == ["3", "7", "12"]
    assert rows[1] == ["7", "30.000", "40.000", "3.000", "4.000", "5.000", "no"]
    with pytest.raises(ValueError, match="one each"):
        rep.render_html(rep.ReportData("R", {}, tp, np.ones(3, bool), ids=[1, 2]))


def test_residual_arrows_point_the_way_the_residual_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A residual of +2 rows (the fit puts the point lower in the image) is an arrow pointing
    down the inverted-y image axes; it pointed up."""
    pytest.importorskip("matplotlib")
    figures: list[Any] = []
    monkeypatch.setattr(rep, "_png_uri", lambda fig: figures.append(fig) or "data:,")
    tp = np.array([[100.0, 100.0, 0.0, 2.0], [200.0, 150.0, 1.5, 0.0]])
    rep.render_html(rep.ReportData("R", {}, tp, np.array([True, True])))
    ax = figures[0].axes[0]
    quiver = ax.collections[0]
    tail = ax.transData.transform(np.column_stack([quiver.X, quiver.Y]))
    tip = ax.transData.transform(np.column_stack([quiver.X + quiver.U, quiver.Y + quiver.V]))
    down, right = tip - tail  # display coordinates: y grows upwards on screen
    assert down[1] < 0 and abs(down[0]) < 1e-6
    assert right[0] > 0 and abs(right[1]) < 1e-6


def test_rendering_leaves_pyplot_alone() -> None:
    """matplotlib.use("Agg") switched pyplot's backend and closed every open figure of the
    session (QGIS's Python console, other plugins). Run in a fresh interpreter."""
    pytest.importorskip("matplotlib")
    script = (
        "import matplotlib\n"
        "matplotlib.use('svg')\n"
        "import matplotlib.pyplot as plt\n"
        "import numpy as np\n"
        "from sar_optical_matcher import report as rep\n"
        "fig = plt.figure()\n"
        "tp = np.array([[10.0, 10.0, 0.5, 0.5], [50.0, 50.0, -0.2, 0.1]])\n"
        "text = rep.render_html(rep.ReportData('t', {}, tp, np.array([True, False])))\n"
        "assert text.count('data:image/png;base64,') == 1\n"
        "print(plt.get_fignums(), matplotlib.get_backend())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": ""}
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["[1]", "svg"]


def test_register_report_prints_the_fit_figures() -> None:
    """report_data + render_html: every figure equals the fit's (here on a degree grid)."""
    pytest.importorskip("qgis.core")
    from sar_optical_matcher.processing.register import report_data

    rng = np.random.default_rng(5)
    n = 12
    inliers = np.arange(n) >= 3
    resid = rng.normal(0, 0.5, (n, 2))
    rmse = float(np.sqrt(np.mean(np.sum(resid[inliers] ** 2, axis=1))))
    fit = SimpleNamespace(
        kind="tps",
        inliers=inliers,
        n_accepted=11,
        rmse_px=rmse,
        loo_rmse_px=rmse * 1.3,
        residual_xy_px=resid,
        extra={"extrapolated_share": 0.375},
    )
    ties = SimpleNamespace(
        accepted=np.arange(n) >= 1, ids=np.arange(n), dst_px=rng.uniform(0, 500, (n, 2))
    )
    records = [SimpleNamespace(id=i, confidence=0.9) for i in range(n)]
    s = SimpleNamespace(
        correspondence=SimpleNamespace(
            sar_path="/d/s.tif", optical_path="/d/o.tif", match=SimpleNamespace(model_path="")
        ),
        residual_threshold_px=1.5,
        seed=0,
    )
    optical = SimpleNamespace(geotransform=(10.0, 9e-5, 0.0, 50.0, 0.0, -9e-5))
    data = report_data(s, ties, fit, SimpleNamespace(records=records, maps=None), optical)
    text = rep.render_html(data)
    cells = _cells(text)
    assert float(cells["RMSE (optical px)"]) == pytest.approx(rmse, abs=5e-4)
    assert float(cells["leave-one-out RMSE (optical px)"]) == pytest.approx(rmse * 1.3, abs=5e-4)
    assert float(cells["RMSE (map units)"]) == pytest.approx(rmse * 9e-5, rel=5e-3)
    assert int(cells["RANSAC inliers"]) == int(inliers.sum()) == 9
    assert int(cells["accepted matches"]) == 11
    assert float(cells["overlap outside the inliers' hull (extrapolated)"]) == 0.375
    rows = _tie_rows(text)
    assert [r[-1] for r in rows].count("yes") == 9
    res_px = np.array([float(r[5]) for r in rows])
    np.testing.assert_allclose(res_px, np.hypot(resid[:, 0], resid[:, 1]), atol=5e-4)


def test_map_unit_rmse_uses_the_pixel_shape_and_ids_reach_the_table() -> None:
    """On 10 x 30 m pixels residuals of 1 px in x and 1 px in y are 10 and 30 m: RMSE
    sqrt((100 + 900) / 2) = 22.4 m, where RMSE (1 px) x pixel width (hypot(gt1, gt4)) said 10 m.
    The table's # column carries the tie points' ids, not row numbers."""
    pytest.importorskip("qgis.core")
    from sar_optical_matcher.processing.register import map_unit_rmse, report_data

    fit = SimpleNamespace(
        kind="tps",
        inliers=np.array([True, True, False]),
        n_accepted=3,
        rmse_px=1.0,
        loo_rmse_px=1.0,
        residual_xy_px=np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]),
        extra={},
    )
    gt = (0.0, 10.0, 0.0, 0.0, 0.0, -30.0)
    assert map_unit_rmse(fit, gt) == pytest.approx(np.sqrt((100 + 900) / 2))
    rot = (0.0, 6.0, 8.0, 0.0, 8.0, -6.0)  # rotated square 10 m pixels: = RMSE x 10
    assert map_unit_rmse(fit, rot) == pytest.approx(10.0 * np.sqrt(1.0))
    ties = SimpleNamespace(
        accepted=np.ones(3, bool),
        ids=np.array([4, 7, 9]),
        dst_px=np.array([[1.0, 1.0], [np.nan, np.nan], [3.0, 3.0]]),
    )
    s = SimpleNamespace(
        correspondence=SimpleNamespace(
            sar_path="s.tif", optical_path="o.tif", match=SimpleNamespace(model_path="")
        ),
        residual_threshold_px=1.5,
        seed=0,
    )
    records = [SimpleNamespace(id=i, confidence=0.9) for i in (4, 7, 9)]
    data = report_data(
        s, ties, fit, SimpleNamespace(records=records, maps=None), SimpleNamespace(geotransform=gt)
    )
    assert data.summary["RMSE (map units)"] == pytest.approx(np.sqrt(500.0))
    assert [r[0] for r in _tie_rows(rep.render_html(data))] == ["4", "9"]
