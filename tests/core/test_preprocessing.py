"""Preprocessing: dtype/scale independence, nodata handling, SAR scale detection."""

from __future__ import annotations

import numpy as np
import pytest

from sar_optical_matcher.core.preprocessing import (
    PreprocessSpec,
    preprocess,
    resolve_sar_scale,
    sar_to_db,
    stretch_unit,
    valid_fraction,
)

SAR = PreprocessSpec("sar", mean=0.5, std=0.2)
OPT = PreprocessSpec("optical", mean=0.45, std=0.15)


def test_stretch_maps_percentiles_to_unit_range() -> None:
    x = np.arange(10000, dtype=np.float32).reshape(100, 100)
    u = stretch_unit(x, 2.0, 98.0)
    assert u.min() == 0.0 and u.max() == 1.0
    assert np.isclose(np.median(u), 0.5, atol=1e-3)


def test_constant_and_empty_patches() -> None:
    assert np.all(stretch_unit(np.full((8, 8), 7.0), 2, 98) == 0.5)
    assert np.all(np.isnan(stretch_unit(np.full((8, 8), np.nan), 2, 98)))


def test_amplitude_intensity_and_db_give_the_same_input() -> None:
    rng = np.random.default_rng(0)
    amplitude = rng.gamma(4.0, 0.25, size=(64, 64)).astype(np.float32) ** 0.5
    a = preprocess(amplitude, SAR, sar_scale="linear")
    i = preprocess(amplitude**2, SAR, sar_scale="linear")
    d = preprocess(sar_to_db(amplitude**2), SAR, sar_scale="db")
    np.testing.assert_allclose(a, i, atol=1e-4)
    np.testing.assert_allclose(a, d, atol=1e-4)


def test_optical_dtype_independence() -> None:
    rng = np.random.default_rng(1)
    base = rng.random((64, 64))
    u8 = (base * 255).astype(np.uint8)
    u16 = u8.astype(np.uint16) * 257
    np.testing.assert_allclose(preprocess(u8, OPT), preprocess(u16, OPT), atol=1e-5)


def test_invalid_pixels_become_the_mean_and_do_not_shift_the_stretch() -> None:
    x = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    y = x.copy()
    y[:8] = np.nan
    y[8:10] = 1e6
    valid = np.ones_like(y, dtype=bool)
    valid[8:10] = False  # nodata value
    out = preprocess(y, OPT, valid=valid)
    assert np.all(out[:10] == 0.0)
    assert np.isfinite(out).all()
    ref = preprocess(x[10:], OPT)
    np.testing.assert_allclose(out[10:], ref, atol=1e-5)


@pytest.mark.parametrize("spec", [OPT, SAR])
def test_a_numeric_mask_band_means_the_same_as_a_bool_mask(spec: PreprocessSpec) -> None:
    # A GDAL mask band is uint8 0/255: ``uint8 & bool`` stayed uint8 and indexed rows 0 and 1
    # instead of masking, so 3712 of the 4096 outputs were wrong (rows 2.. left at 0).
    rng = np.random.default_rng(0)
    x = rng.uniform(1.0, 100.0, size=(64, 64)).astype(np.float32)
    valid = np.ones(x.shape, dtype=bool)
    valid[:8] = False
    want = preprocess(x, spec, valid=valid)
    for mask in (valid.astype(np.uint8) * 255, valid.astype(np.uint8)):
        np.testing.assert_array_equal(preprocess(x, spec, valid=mask), want)
        np.testing.assert_array_equal(np.isnan(stretch_unit(x, 2.0, 98.0, mask)), ~valid)
        assert valid_fraction(x, mask) == 0.875
    with pytest.raises(ValueError, match="valid mask shape"):
        stretch_unit(x, 2.0, 98.0, valid[:10])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([0, 10, 255], dtype=np.uint8), "db"),
        (np.array([-25.0, -3.0], dtype=np.float32), "db"),
        (np.array([0.01, 0.5, 3.0], dtype=np.float32), "linear"),
        (np.array([10, 4000], dtype=np.uint16), "linear"),
        # calibrated intensity with 0.3 % noise-subtracted negatives (was "db": any negative)
        (np.r_[np.full(997, 0.05), np.full(3, -0.001)].astype(np.float32), "linear"),
        (np.r_[np.full(980, 0.05), np.full(20, -0.001)].astype(np.float32), "db"),  # 2 %
        (np.r_[np.full(995, 2.0), np.full(5, -0.5)].astype(np.float32), "linear"),
        (np.array([0.5, 3.0, -12.0], dtype=np.float32), "db"),  # a third negative
    ],
)
def test_auto_scale(values: np.ndarray, expected: str) -> None:
    assert resolve_sar_scale(values, "auto") == expected


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sar_scale"):
        resolve_sar_scale(np.zeros(3), "decibel")
    with pytest.raises(ValueError, match="2-D"):
        preprocess(np.zeros((2, 2, 2)), OPT)
    with pytest.raises(ValueError, match="modality"):
        PreprocessSpec("radar")
