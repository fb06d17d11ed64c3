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
