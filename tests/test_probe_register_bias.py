"""scripts/probe_register_bias.py: Register recovers a known georeference shift exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_grid_keypoints_keep_templates_off_the_seams():
    from scripts.probe_register_bias import Case, grid_keypoints

    tiled = Case("t", np.zeros((768, 768), np.float32), np.zeros((768, 768), np.uint8), period=256)
    kp = grid_keypoints(tiled, 24.0)
    assert len(kp) == 100  # 10 columns x 10 rows survive of the 22 x 22 grid
    for v in (kp[:, 0], kp[:, 1]):
        m = np.mod(v, 256)  # template [v - 64, v + 64] +- 8 px inside one 256 px tile copy
        assert (m - 64 - 8 >= 0).all() and (m + 64 + 8 <= 256).all()
        assert (v - 128 >= 0).all() and (v + 128 <= 768).all()  # search region on the raster
    plain = Case("s", tiled.optical, tiled.sar)  # no seams: the whole grid
    assert len(grid_keypoints(plain, 24.0)) == 22 * 22


def test_geotransform_moves_the_sar_by_the_applied_pixels():
    from scripts.probe_register_bias import PIXEL_M, geotransform

    g0, g1 = geotransform((0.0, 0.0)), geotransform((3.0, -2.0))
    # SAR pixel (0, 0) lies where optical pixel (3, -2) lies: x right, y down
    assert (g1[0] - g0[0]) / PIXEL_M == 3.0
    assert (g1[3] - g0[3]) / -PIXEL_M == -2.0


@pytest.mark.slow
def test_synthetic_pair_is_registered_without_bias(tmp_path):
    """Truth exact by construction: d ~ 0, and the same for an integer and a sub-pixel shift."""
    out = tmp_path / "rows.json"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "probe_register_bias.py"), "--synthetic",
         "--synthetic-size", "512", "--applied", "3,-2", "--applied", "0.5,0.5",
         "--no-harness", "--spacing", "32", "--seed", "1", "--json", str(out),
         "--out", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    rows = json.loads(out.read_text())
    assert [tuple(r["applied"]) for r in rows] == [(3.0, -2.0), (0.5, 0.5)]
    for r in rows:
        assert r["n"] >= 30
        assert np.abs(r["d"]).max() < 0.25, r["d"]  # measured +0.04, -0.12 px (768 px, seed 0)
        assert np.allclose(r["warp_d"], r["d"], atol=0.05)  # the raster follows the fit
    # the applied shift is taken out exactly: what is left does not depend on it
    assert np.allclose(rows[0]["d"], rows[1]["d"], atol=0.1)
