"""Classical peers: exactness against brute force, and each solves a synthetic case."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sar_optical_matcher.core import classical

T, S = 48, 96
TRUE_DXY = (29, 13)  # (dx, dy) window offset of the template in the region


def texture(rng: np.random.Generator, size: int = S) -> np.ndarray:
    """Multi-scale smooth random texture, roughly in [-3, 3]."""
    out = np.zeros((size, size))
    for sigma in (1.0, 2.5, 6.0):
        layer = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma)
        out += layer / layer.std()
    return out


def labels(rng: np.random.Generator, size: int = S, n: int = 40) -> np.ndarray:
    """Piecewise-constant map of n random Voronoi cells (integer labels 0..5)."""
    seeds = rng.uniform(0, size, size=(n, 2))
    yy, xx = np.mgrid[:size, :size]
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    return rng.integers(0, 6, size=n)[d.argmin(axis=-1)]


def cut(image: np.ndarray) -> np.ndarray:
    dx, dy = TRUE_DXY
    return image[dy : dy + T, dx : dx + T].copy()


def peak(cmap: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(np.argmax(cmap)), cmap.shape)
    return int(x), int(y)


def brute_force(template: np.ndarray, region: np.ndarray, score) -> np.ndarray:
    th, tw = template.shape
    h, w = region.shape[0] - th + 1, region.shape[1] - tw + 1
    return np.array(
        [[score(template, region[y : y + th, x : x + tw]) for x in range(w)] for y in range(h)]
    )


@pytest.mark.parametrize("name", sorted(classical.METHODS))
def test_smoke_shape_dtype_rectangular(name: str) -> None:
    rng = np.random.default_rng(0)
    region = texture(rng, 40)[:, :37]
    out = classical.METHODS[name](region[5:20, 3:14], region)
    assert out.shape == (40 - 15 + 1, 37 - 11 + 1)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert peak(out) == (3, 5)


@pytest.mark.parametrize("name", sorted(classical.METHODS))
def test_exception_bad_inputs(name: str) -> None:
    fn = classical.METHODS[name]
    with pytest.raises(ValueError, match="fit inside"):
        fn(np.zeros((10, 10)), np.zeros((8, 20)))
    with pytest.raises(ValueError, match="2-D"):
        fn(np.zeros((4, 4, 3)), np.zeros((8, 8)))
    bad = np.ones((8, 8))
    bad[2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fn(np.ones((4, 4)), bad)
    # Masked pixels were matched by their hidden values (-9999 here): all four peaks wrong.
    masked = np.ma.masked_array(np.where(np.isnan(bad), -9999.0, 1.0), np.isnan(bad))
    with pytest.raises(ValueError, match="masked"):
        fn(np.ones((4, 4)), masked)
    with pytest.raises(ValueError, match="masked"):
        fn(np.ma.masked_less(np.ones((4, 4)), 2.0), np.ones((8, 8)))
    unmasked = np.ma.masked_array(texture(np.random.default_rng(0), 12))
    np.testing.assert_array_equal(
        fn(unmasked[2:8, 3:9], unmasked), fn(unmasked.data[2:8, 3:9], unmasked.data)
    )


def test_ncc_equals_pearson_per_window() -> None:
    rng = np.random.default_rng(1)
    region = 1000.0 + 50.0 * texture(rng, 24)  # offset + gain: conditioning of the energies
    template = region[4:14, 7:19] + rng.normal(0, 5.0, (10, 12))
    ref = brute_force(template, region, lambda a, b: np.corrcoef(a.ravel(), b.ravel())[0, 1])
    np.testing.assert_allclose(classical.ncc_map(template, region), ref, atol=1e-5)


def test_ncc_affine_radiometry_and_inversion() -> None:
    rng = np.random.default_rng(2)
    img = texture(rng)
    template = cut(img)
    region = 3.0 * img + 10.0 + rng.normal(0, 0.3, img.shape)
    cmap = classical.ncc_map(template, region)
    assert peak(cmap) == TRUE_DXY
    assert cmap.max() > 0.95
    # A contrast inversion turns the match into the minimum: NCC is not multimodal.
    inverted = classical.ncc_map(template, -region)
    assert inverted[TRUE_DXY[1], TRUE_DXY[0]] < -0.95
    assert classical.ncc_map(np.ones((T, T)), region).max() == 0.0  # flat template scores 0


@pytest.mark.parametrize("scale", [1e-9, 1e-4, 1.0, 1e6])
def test_ncc_does_not_depend_on_the_units(scale: float) -> None:
    # The variance floor was absolute: values ~1e-9 scored 0 at every offset (max|diff| 1.0).
    rng = np.random.default_rng(2)
    img = texture(rng)
    template = cut(img) + rng.normal(0, 0.3, (T, T))
    ref = classical.ncc_map(template, img)
    cmap = classical.ncc_map(scale * template, scale * img + 5.0 * scale)
    np.testing.assert_allclose(cmap, ref, atol=1e-5)
    assert peak(cmap) == TRUE_DXY and cmap.max() > 0.9
    flat = np.full((S, S), scale * 7.1)  # constant up to the rounding of its mean
    assert not classical.ncc_map(scale * template, flat).any()
    assert not classical.ncc_map(np.full((T, T), 1e8 + scale), img).any()


def mi_reference(a: np.ndarray, b: np.ndarray, bins: int) -> float:
    joint = np.histogram2d(a.ravel(), b.ravel(), bins=(np.arange(bins + 1),) * 2)[0] / a.size
    pa, pb = joint.sum(axis=1), joint.sum(axis=0)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum())


def test_mutual_information_exact_against_histograms() -> None:
    rng = np.random.default_rng(3)
    region = texture(rng, 30)
    template = np.exp(region[6:20, 2:18]) + rng.normal(0, 0.1, (14, 16))
    bins = 8
    qt = classical._quantise(template, bins)
    qr = classical._quantise(region, bins)
    ref = brute_force(qt, qr, lambda a, b: mi_reference(a, b, bins))
    out = classical.mutual_information_map(template, region, bins=bins)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_mutual_information_solves_nonmonotonic_radiometry() -> None:
    rng = np.random.default_rng(4)
    lab = labels(rng)
    template = cut(lab * 40.0 + rng.normal(0, 4.0, lab.shape))
    lut = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 0.5])  # non-monotonic: inversions included
    region = lut[lab] * rng.gamma(4.0, 0.25, lab.shape)  # 4-look speckle
    cmap = classical.mutual_information_map(template, region)
    assert peak(cmap) == TRUE_DXY
    assert (cmap >= 0).all()


def test_phase_correlation_solves_noisy_copy() -> None:
    rng = np.random.default_rng(5)
    img = texture(rng)
    template = cut(img) + rng.normal(0, 0.5, (T, T))
    cmap = classical.phase_correlation_map(template, 2.0 * img - 1.0)
    assert peak(cmap) == TRUE_DXY
    yy, xx = np.mgrid[: cmap.shape[0], : cmap.shape[1]]
    far = np.hypot(xx - TRUE_DXY[0], yy - TRUE_DXY[1]) > 2
    assert cmap.max() > 2.5 * cmap[far].max()  # whitening: sharp peak (3.4x measured)
    with pytest.raises(ValueError, match="eps"):
        classical.phase_correlation_map(template, img, eps=0.0)


def test_cfog_features_invariant_to_contrast_inversion() -> None:
    rng = np.random.default_rng(6)
    img = texture(rng, 32)
    f = classical.cfog_features(img)
    assert f.shape == (9, 32, 32)
    np.testing.assert_allclose(np.sqrt((f * f).sum(axis=0)), 1.0, atol=1e-4)
    np.testing.assert_allclose(classical.cfog_features(-3.0 * img + 7.0), f, atol=1e-6)
    # A vertical edge (gradient along x) puts the most energy in the 0 deg channel.
    edge = np.zeros((16, 16))
    edge[:, 8:] = 1.0
    assert int(classical.cfog_features(edge)[:, 8, 8].argmax()) == 0


def test_cfog_equals_brute_force_ssd() -> None:
    rng = np.random.default_rng(7)
    region = texture(rng, 26)
    template = -region[3:15, 5:19]
    fr, ft = classical.cfog_features(region), classical.cfog_features(template)
    ref = -np.array(
        [
            [((fr[:, y : y + 12, x : x + 14] - ft) ** 2).sum() / ft[0].size for x in range(13)]
            for y in range(15)
        ]
    )
    np.testing.assert_allclose(classical.cfog_map(template, region), ref, atol=1e-5)


def test_cfog_solves_sar_like_case_where_ncc_fails() -> None:
    rng = np.random.default_rng(8)
    lab = labels(rng)
    optical = ndimage.gaussian_filter(lab * 30.0, 0.7) + rng.normal(0, 3.0, lab.shape)
    lut = np.array([6.0, 1.0, 9.0, 3.0, 7.0, 0.5])  # radiometry unrelated to the optical's
    sar = ndimage.gaussian_filter(lut[lab], 0.7) * rng.gamma(8.0, 1 / 8.0, lab.shape)
    template = cut(optical)
    assert peak(classical.cfog_map(template, sar)) == TRUE_DXY
    assert peak(classical.ncc_map(template, sar)) != TRUE_DXY
