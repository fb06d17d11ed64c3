"""Window-cosine maps of code maps equal the brute-force cosine of every window's descriptor."""

from __future__ import annotations

import numpy as np
import pytest

from sar_optical_matcher.core.correlation import (
    box_sums,
    correlate_valid,
    normalised_descriptors,
    smooth_maps,
    window_cosine_maps,
)


def brute_force(t: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(B, C, k, k), (B, C, H, W) -> cosine of every flattened window block, by loops."""
    b, _, kh, kw = t.shape
    out = np.zeros((b, r.shape[2] - kh + 1, r.shape[3] - kw + 1))
    for i in range(b):
        a = t[i].ravel().astype(np.float64)
        for y in range(out.shape[1]):
            for x in range(out.shape[2]):
                w = r[i, :, y : y + kh, x : x + kw].ravel().astype(np.float64)
                out[i, y, x] = a @ w / (np.linalg.norm(a) * np.linalg.norm(w))
    return out


@pytest.mark.parametrize("k", [1, 3, 7])
def test_equals_brute_force_cosine(k: int) -> None:
    rng = np.random.default_rng(k)
    region = rng.normal(size=(2, 5, 20, 23)).astype(np.float32)
    template = rng.normal(size=(2, 5, k, k)).astype(np.float32)
    got = window_cosine_maps(template, region)
    assert got.shape == (2, 20 - k + 1, 23 - k + 1) and got.dtype == np.float32
    np.testing.assert_allclose(got, brute_force(template, region), atol=2e-6)


def test_a_copied_block_scores_one_at_its_offset_only() -> None:
    rng = np.random.default_rng(0)
    region = rng.normal(size=(1, 4, 40, 40)).astype(np.float32)
    template = region[:, :, 11:27, 5:21].copy()  # k = 16 block at (x, y) = (5, 11)
    cmap = window_cosine_maps(template, region)[0]
    assert np.unravel_index(cmap.argmax(), cmap.shape) == (11, 5)
    assert cmap[11, 5] == pytest.approx(1.0, abs=1e-6)
    cmap[11, 5] = 0
    assert cmap.max() < 0.5  # white codes: every other window is nearly orthogonal


def test_zero_codes_score_zero_and_scale_does_not_matter() -> None:
    rng = np.random.default_rng(1)
    region = rng.normal(size=(1, 3, 30, 30)).astype(np.float32)
    region[:, :, :12, :] = 0.0  # e.g. nodata: a window of zero codes has no direction
    template = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    cmap = window_cosine_maps(template, region)[0]
    assert np.all(cmap[:5] == 0.0) and np.all(np.abs(cmap[5:]) > 0)
    np.testing.assert_allclose(window_cosine_maps(template * 1e3, region * 1e-3)[0], cmap,
                               atol=1e-5)  # fmt: skip
    assert np.all(window_cosine_maps(np.zeros_like(template), region) == 0.0)


def test_zero_code_windows_score_zero_wherever_they_lie() -> None:
    # Zero codes at the end of the region: the integral image's rounding residue there is not
    # an exact zero and once scored FFT noise as cosines of about +-0.3 (every seed).
    rng = np.random.default_rng(1)
    template = rng.normal(size=(1, 16, 8, 8)).astype(np.float32)
    region = (rng.normal(size=(1, 16, 40, 40)) * 30).astype(np.float32)
    region[:, :, 20:, 20:] = 0.0
    cmap = window_cosine_maps(template, region)[0]
    assert np.all(cmap[20:, 20:] == 0.0)
    np.testing.assert_allclose(cmap[:13], brute_force(template, region[:, :, :20])[0], atol=2e-6)


def test_descriptors_and_helpers() -> None:
    codes = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    codes[1] = 0
    d = normalised_descriptors(codes)
    assert d.shape == (2, 12)
    np.testing.assert_allclose(np.linalg.norm(d[0]), 1.0, rtol=1e-6)
    assert np.all(d[1] == 0)
    img = np.arange(20.0).reshape(4, 5)
    assert box_sums(img, 2, 3)[1, 2] == img[1:3, 2:5].sum()
    np.testing.assert_allclose(correlate_valid(img, np.ones((2, 3))), box_sums(img, 2, 3))


def test_shape_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="same batch size B and channels C"):
        window_cosine_maps(np.zeros((1, 3, 2, 2)), np.zeros((1, 4, 9, 9)))
    with pytest.raises(ValueError, match="must fit inside"):
        window_cosine_maps(np.zeros((1, 3, 12, 12)), np.zeros((1, 3, 9, 9)))


def test_smoothing_lets_a_broad_peak_beat_a_lone_spike() -> None:
    """The case smoothing is for: a 1-window spike tops a broad ridge on the raw map."""
    yy, xx = np.mgrid[:129, :129]
    ridge = 0.6 * np.exp(-((xx - 40.0) ** 2 + (yy - 90.0) ** 2) / (2 * 2.0**2))
    rng = np.random.default_rng(0)
    raw = (ridge + 0.02 * rng.normal(size=ridge.shape)).astype(np.float32)
    raw[20, 100] = 0.7  # one window, no neighbour agrees
    assert np.unravel_index(raw.argmax(), raw.shape) == (20, 100)
    smooth = smooth_maps(raw, 1.0)
    assert smooth.shape == raw.shape and smooth.dtype == np.float32
    y, x = np.unravel_index(smooth.argmax(), smooth.shape)
    assert abs(y - 90) <= 1 and abs(x - 40) <= 1
    assert smooth[20, 100] < 0.2  # the spike is spread over its neighbours


def test_smoothing_keeps_maps_batched_independent_and_edges_unbiased() -> None:
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(3, 33, 33)).astype(np.float32)
    np.testing.assert_array_equal(smooth_maps(maps, 0.0), maps)  # 0: the raw map
    batch = smooth_maps(maps, 1.5)
    for i in range(3):  # no bleeding between the maps of a batch
        np.testing.assert_allclose(batch[i], smooth_maps(maps[i], 1.5), atol=1e-6)
    flat = np.full((9, 9), 0.4, np.float32)  # nearest-value borders: a constant map stays put
    np.testing.assert_allclose(smooth_maps(flat, 2.0), 0.4, atol=1e-6)
    edge = np.zeros((21, 21), np.float32)
    edge[0, 0] = 1.0  # a peak in the corner of the search range stays in the corner
    assert np.unravel_index(smooth_maps(edge, 1.0).argmax(), edge.shape) == (0, 0)


@pytest.mark.parametrize("sigma", [-1.0, float("nan"), float("inf")])
def test_smoothing_rejects_bad_sigma(sigma: float) -> None:
    with pytest.raises(ValueError, match="sigma_px must be a finite number >= 0"):
        smooth_maps(np.zeros((5, 5), np.float32), sigma)


def test_smoothing_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(H, W\) or \(B, H, W\)"):
        smooth_maps(np.zeros(5, np.float32), 1.0)
