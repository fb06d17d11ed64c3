"""RANSAC and geometry on constructed ground truth: confidence, structure, scale, conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from sar_optical_matcher.core import classical, correlation
from sar_optical_matcher.core.geotransform import box_outline, map_to_pixel, pixel_to_map
from sar_optical_matcher.core.transforms import fit_transform, ransac

A = np.array([[1.01, 0.02], [-0.015, 0.99]])
T_XY = np.array([12.3, -7.7])


def _affine(p: np.ndarray) -> np.ndarray:
    return p @ A.T + T_XY


@pytest.mark.parametrize(("confidence", "expected"), [(0.999, 896), (0.99, 576)])
def test_ransac_draws_what_the_confidence_needs(confidence: float, expected: int) -> None:
    # 80 % outliers: an all-inlier triple has probability 0.2^3, so confidence c needs
    # log(1 - c) / log(1 - 0.008) hypotheses (860 and 573), drawn in chunks of 64.
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 2000, (200, 2))
    dst = _affine(src)
    outlier = np.arange(200) >= 40
    dst[outlier] = rng.uniform(0, 2000, (160, 2))
    needed = math.ceil(math.log(1 - confidence) / math.log(1 - 0.2**3))
    res = ransac(src, dst, "affine", 2.0, np.random.default_rng(1), confidence=confidence)
    assert res.n_iterations == expected == 64 * math.ceil(needed / 64)
    np.testing.assert_array_equal(res.inliers, ~outlier)
    np.testing.assert_allclose(res.transform.affine_matrix(), np.column_stack([A, T_XY]))


def test_ransac_takes_the_larger_of_two_consistent_structures() -> None:
    # A repeated structure: 30 % of the matches agree on the truth moved by 50 px.
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 2000, (200, 2))
    dst = _affine(src) + rng.normal(0, 0.5, src.shape)
    dst[80:140] += [50.0, 0.0]
    dst[140:] = rng.uniform(0, 2000, (60, 2))
    res = ransac(src, dst, "affine", 3.0, np.random.default_rng(0))
    assert res.ok
    np.testing.assert_array_equal(np.flatnonzero(res.inliers), np.arange(80))


@pytest.mark.parametrize("kind", ["shift", "affine", "poly2", "poly3", "tps"])
def test_fits_at_utm_coordinates_equal_the_fits_at_the_origin(kind: str) -> None:
    # Map coordinates as points (northings ~5e6): normalisation makes the fit translation
    # equivariant, to far below a pixel.
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 2000, (80, 2))
    dst = _affine(src) + rng.normal(0, 0.3, src.shape)
    dst[60:] += rng.uniform(20, 200, (20, 2))
    query = rng.uniform(0, 2000, (50, 2))
    utm = np.array([512345.0, 5123456.0])
    near = ransac(src, dst, kind, 2.0, np.random.default_rng(0))
    far = ransac(src + utm, dst + utm, kind, 2.0, np.random.default_rng(0))
    assert near.ok and far.ok
    np.testing.assert_array_equal(far.inliers, near.inliers)
    np.testing.assert_allclose(
        far.transform.apply(query + utm) - utm, near.transform.apply(query), atol=1e-6
    )
    fitted = fit_transform(src[:60] + utm, dst[:60] + utm, kind)
    np.testing.assert_allclose(
        fitted.apply(query + utm) - utm,
        fit_transform(src[:60], dst[:60], kind).apply(query),
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "gt",
    [
        (500000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0),  # north-up
        (500000.0, 10.0, 0.0, 5000000.0, 0.0, 10.0),  # south-up
        (500000.0, 9.8, 1.7, 5000000.0, 1.7, -9.8),  # rotated
        (15.0, 1e-4, 0.0, 48.0, 0.0, -1e-4),  # geographic degrees
    ],
)
def test_geotransform_round_trip_and_pixel_centres(gt: tuple[float, ...]) -> None:
    rng = np.random.default_rng(0)
    px = rng.uniform(-100, 3000, (50, 2))
    xy_map = pixel_to_map(gt, px)
    expected = np.column_stack(
        [gt[0] + px[:, 0] * gt[1] + px[:, 1] * gt[2], gt[3] + px[:, 0] * gt[4] + px[:, 1] * gt[5]]
    )
    np.testing.assert_array_equal(xy_map, expected)
    np.testing.assert_allclose(map_to_pixel(gt, xy_map), px, atol=1e-8)
    # pixel [row 2, col 5]: its corner is (5, 2), its centre (5.5, 2.5)
    centre = pixel_to_map(gt, [5.5, 2.5])[0]
    corners = pixel_to_map(gt, [[5, 2], [6, 2], [5, 3], [6, 3]])
    np.testing.assert_allclose(centre, corners.mean(axis=0), rtol=0, atol=1e-9)


def test_classical_maps_share_the_learned_maps_orientation() -> None:
    # map[dy, dx]: the template is region[dy:dy + T, dx:dx + T], for the learned path's cosine
    # maps (codes = the pixels themselves, k = T) and every classical peer alike.
    rng = np.random.default_rng(4)
    region = ndimage.gaussian_filter(rng.normal(size=(72, 80)), 1.0)  # rectangular
    dy, dx = 5, 19
    template = region[dy : dy + 40, dx : dx + 40].copy()
    learned = correlation.window_cosine_maps(template[None, None], region[None, None])[0]
    assert np.unravel_index(int(learned.argmax()), learned.shape) == (dy, dx)
    for name, fn in classical.METHODS.items():
        cmap = fn(template, region)
        assert cmap.shape == learned.shape, name
        assert np.unravel_index(int(cmap.argmax()), cmap.shape) == (dy, dx), name


def test_box_outline_walks_each_edge_corner_to_corner() -> None:
    """The one densified outline of a box (footprints, overlap grids, GCP windows)."""
    pts = box_outline((2.0, -1.0, 6.0, 3.0), 5)
    assert pts.shape == (20, 2)
    np.testing.assert_array_equal(pts[:5, 1], -1.0)  # top
    np.testing.assert_array_equal(pts[5:10, 1], 3.0)  # bottom
    np.testing.assert_array_equal(pts[10:15, 0], 2.0)  # left
    np.testing.assert_array_equal(pts[15:, 0], 6.0)  # right
    np.testing.assert_allclose(pts[:5, 0], [2, 3, 4, 5, 6])
    np.testing.assert_allclose(pts[10:15, 1], [-1, 0, 1, 2, 3])
