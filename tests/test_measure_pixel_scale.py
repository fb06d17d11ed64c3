"""scripts/measure_pixel_scale.py: zoomed records keep their truth; the CLI measures rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scripts import measure_pixel_scale as mps
from training import sources


def test_zoomed_record_scales_images_mask_and_known_offset() -> None:
    rec = sources.load_synthetic(1, 64, seed=1)[0]
    rec = dataclasses.replace(rec, valid=np.ones(rec.sar.shape, bool), offset_xy_px=(2.0, -1.0))
    big = mps.zoomed(rec, 2.0)
    assert big.sar.shape == big.optical.shape == big.valid.shape == (128, 128)
    assert big.offset_xy_px == (4.0, -2.0) and big.sar.dtype == np.float32
    # the same picture, twice as large
    corr = np.corrcoef(big.optical[::2, ::2].ravel(), rec.optical.ravel())[0, 1]
    assert corr > 0.95 and abs(big.optical.mean() - rec.optical.mean()) < 0.02 * rec.optical.std()


def test_cli_measures_one_row_per_zoom_in_the_data_pixels(capsys) -> None:
    rows = mps.main(["--data", "synthetic:1:512", "--zoom", "1", "1.5", "--samples-per-pair", "6"])
    assert [r["zoom"] for r in rows] == [1.0, 1.5] and all(r["n"] == 6 for r in rows)
    assert rows[0]["within"] >= 5 / 6 and rows[0]["median_px"] < 1.0  # unseen synthetic: solved
    assert "| 1.5 | 6 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        mps.main(["--data", "synthetic:1:512", "--zoom", "0.5"])


def test_gdal_pair_is_georeferenced_with_a_finer_optical(tmp_path) -> None:
    from osgeo import gdal

    rec = sources.load_synthetic(1, 64, seed=2)[0]
    opt, sar = mps.gdal_pair(rec, 2.0, tmp_path)
    o, s = gdal.Open(str(opt)), gdal.Open(str(sar))
    assert (o.RasterXSize, s.RasterXSize) == (128, 64)
    assert o.GetGeoTransform()[1] == mps.SAR_PIXEL_M / 2
    assert s.GetGeoTransform()[1] == mps.SAR_PIXEL_M
    assert o.GetGeoTransform()[0] == s.GetGeoTransform()[0]  # the same ground
    np.testing.assert_allclose(s.ReadAsArray(), rec.sar, rtol=1e-6)
    # GDAL's 2x2 block means of the finer optical give the record's optical back, nearly
    blocks = o.ReadAsArray().reshape(64, 2, 64, 2).mean(axis=(1, 3))
    assert np.corrcoef(blocks[2:-2, 2:-2].ravel(), rec.optical[2:-2, 2:-2].ravel())[0, 1] > 0.98
    with pytest.raises(ValueError, match="known offset"):
        mps.gdal_pair(dataclasses.replace(rec, offset_xy_px=(2.0, 0.0)), 2.0, tmp_path)


def test_cli_through_gdal_compares_the_automatic_grid_with_the_optical_grid() -> None:
    rows = mps.main(["--data", "synthetic:1:512", "--zoom", "1", "2", "--samples-per-pair", "6",
                     "--through-gdal"])  # fmt: skip
    got = {(r["zoom"], r["grid"]): r for r in rows}
    assert set(got) == {(1.0, "optical"), (1.0, "automatic"), (2.0, "optical"), (2.0, "automatic")}
    assert got[2.0, "optical"]["grid_px_per_sar_px"] == 2.0
    assert got[2.0, "automatic"]["grid_px_per_sar_px"] == 1.0  # matched on the SAR's pixel size
    assert all(r["n"] == 6 for r in rows)
    assert got[1.0, "automatic"]["within"] == got[1.0, "optical"]["within"] >= 5 / 6
    assert got[2.0, "automatic"]["within"] >= 5 / 6 and got[2.0, "automatic"]["median_px"] < 1.5
