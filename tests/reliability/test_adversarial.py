"""Never a silent wrong registration: adversarial pairs are refused, true pairs still register.

Each adversarial pair is one where matching cannot work (unrelated scenes, noise, a SAR of
another place, shuffled blocks, content scaled / rotated / mirrored against its georeference,
a misregistration beyond the search range, a textureless optical). Every pair is matched once
with the twin model, then fitted with several transforms and residual thresholds: each fit
must be refused, or (where the pair has a content truth) agree with the truth. Measured with
the twin model: 0 false registrations over 23 pairs x 8 fits; before edge peaks were excluded
(see ``TiePoints.usable``), 5 fits of 3 pairs (other_place_202, noise_smooth, flat_optical) were
silent wrong registrations at the default 3 px threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from sar_optical_matcher import rasters
from sar_optical_matcher import registration as reg
from tests.processing import (  # noqa: F401
    OPT_GT,
    provider_fixture,
    twin_model_fixture,
    write_pair,
)
from tests.reliability import alg_params, read_array, rewrite, run_refused

HALF = 16  # the twin model's search range: (96 - 64) / 2
FITS = [(kind, thr) for kind in ("shift", "affine", "poly2", "tps") for thr in (1.5, 3.0)]
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
#: (optical path, SAR path, content truth SAR px -> optical px or None)
Built = tuple[Path, Path, "np.ndarray | None"]


def _sar_gt(a: np.ndarray) -> tuple[float, ...]:
    """SAR geotransform that is exact when the SAR content is the world through ``a``."""
    g = OPT_GT
    return (g[0] + g[1] * a[0, 2], g[1] * a[0, 0], g[1] * a[0, 1],
            g[3] + g[5] * a[1, 2], g[5] * a[1, 0], g[5] * a[1, 1])  # fmt: skip


def _rotation(deg: float, centre: float = 192.0) -> np.ndarray:
    t = np.deg2rad(deg)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return np.column_stack([r, centre - r @ [centre, centre]])


def unrelated(folder: Path, seed: int) -> Built:
    """The SAR shows another random world, radiometrically consistent with the optical."""
    p = write_pair(folder, seed=seed, unrelated=True)
    return p.optical, p.sar, None


def other_place(folder: Path, seed: int) -> Built:
    """A complete pair's SAR of one place with the optical of another place."""
    a = write_pair(folder / "a", seed=seed)
    b = write_pair(folder / "b", seed=seed + 1000)
    return a.optical, b.sar, None


def noise_sar(folder: Path, seed: int, kind: str) -> Built:
    """The SAR is pure noise (dB Gaussian, linear speckle, smooth blobs) or constant + noise."""
    p = write_pair(folder, seed=seed)
    rng = np.random.default_rng(seed)
    shape = (p.size, p.size)
    values = {
        "gauss": lambda: rng.normal(-15.0, 3.0, shape),
        "speckle": lambda: rng.exponential(0.05, shape),
        "smooth": lambda: ndimage.gaussian_filter(rng.normal(0, 1, shape), 4) * 20 - 15,
        "constant_small": lambda: -15.0 + rng.normal(0, 0.01, shape),
        "constant_big": lambda: -15.0 + rng.normal(0, 1.0, shape),
    }[kind]()
    return p.optical, rewrite(p.sar, folder / f"sar_{kind}.tif", lambda _: values), None


def realistic_other(folder: Path, seed: int) -> Built:
    """A realistic SAR (speckle, layover, dB) of another scene, placed over the optical."""
    from sar_optical_matcher.synthetic import make_georeferenced_pair

    p = write_pair(folder, seed=seed)
    other = make_georeferenced_pair(400, np.random.default_rng(seed), looks=4.0)
    sar = np.asarray(other.sar, np.float32)[: p.size, : p.size]
    sar = np.where(np.isfinite(sar), sar, np.nanmean(sar))
    return p.optical, rewrite(p.sar, folder / "sar_real.tif", lambda _: sar, nodata=None), None


def shuffled(folder: Path, seed: int, block: int) -> Built:
    """The SAR is the optical's own content (dB-like) with its blocks shuffled."""
    p = write_pair(folder, seed=seed, a=IDENTITY, shift_px=(0.0, 0.0))
    opt, _ = read_array(p.optical)
    n = p.size // block
    tiles = opt.reshape(n, block, n, block).swapaxes(1, 2).reshape(n * n, block, block)
    order = np.random.default_rng(seed).permutation(n * n)
    mixed = tiles[order].reshape(n, n, block, block).swapaxes(1, 2).reshape(p.size, p.size)
    sar = 3.0 * mixed / 255.0 - 18.0
    return p.optical, rewrite(p.sar, folder / "sar_shuffled.tif", lambda _: sar), None


def content_warped(folder: Path, seed: int, a: np.ndarray) -> Built:
    """The SAR content is the world through ``a``, but georeferenced as if aligned."""
    p = write_pair(folder, seed=seed, a=a, shift_px=(0.0, 0.0))
    arr, _ = read_array(p.sar)
    return p.optical, rewrite(p.sar, folder / "sar_w.tif", lambda _: arr, gt=_sar_gt(IDENTITY)), a


def beyond_search_range(folder: Path, seed: int) -> Built:
    """The SAR georeference is off by ~53 px, more than the model's +/-16 px."""
    p = write_pair(folder, seed=seed, shift_px=(40.0, -35.0))
    return p.optical, p.sar, p.a


def flat_optical(folder: Path, seed: int) -> Built:
    """A textureless optical (grey + faint noise) against a real SAR."""
    p = write_pair(folder, seed=seed)
    rng = np.random.default_rng(seed)
    opt = rewrite(p.optical, folder / "opt_flat.tif", lambda a: 128 + rng.normal(0, 2, a.shape))
    return opt, p.sar, None


ADVERSARIAL: dict[str, Callable[[Path], Built]] = {
    **{f"unrelated_{s}": (lambda f, s=s: unrelated(f, s)) for s in (101, 102, 103, 104, 105)},
    **{f"other_place_{s}": (lambda f, s=s: other_place(f, s)) for s in (201, 202)},
    **{f"noise_{k}": (lambda f, k=k: noise_sar(f, 7, k)) for k in ("gauss", "speckle", "smooth")},
    **{f"{k}": (lambda f, k=k: noise_sar(f, 8, k)) for k in ("constant_small", "constant_big")},
    **{f"realistic_other_{s}": (lambda f, s=s: realistic_other(f, s)) for s in (301, 302)},
    **{f"shuffled_{b}": (lambda f, b=b: shuffled(f, 9, b)) for b in (16, 32)},
    "scale_x2": lambda f: content_warped(f, 10, np.array([[2.0, 0, -192], [0, 2.0, -192]])),
    "scale_x0.5": lambda f: content_warped(f, 11, np.array([[0.5, 0, 96], [0, 0.5, 96]])),
    "rotated_90": lambda f: content_warped(f, 12, _rotation(90)),
    "rotated_25": lambda f: content_warped(f, 13, _rotation(25)),
    "mirrored": lambda f: content_warped(f, 14, np.array([[-1.0, 0, 384], [0, 1.0, 0]])),
    "beyond_search_range": lambda f: beyond_search_range(f, 15),
    "flat_optical": lambda f: flat_optical(f, 16),
}


@pytest.fixture(name="matcher", scope="module")
def matcher_fixture(twin_model: Path):
    """The twin model, loaded once for the module."""
    return reg.load_matcher(_match_settings(twin_model))


def _match_settings(model: Path) -> reg.MatchSettings:
    return reg.MatchSettings(
        model_path=str(model), template_size=64, search_size=96, confidence_threshold=0.0,
        batch_size=32,
    )  # fmt: skip


def _ties(optical_path: Path, sar_path: Path, matcher, model: Path) -> reg.TiePoints:
    """Detect (spacing 24 px) and match with the twin model, as the Register algorithm does."""
    optical, sar = rasters.open_raster(optical_path), rasters.open_raster(sar_path)
    kps = reg.detect_keypoints_tiled(optical, reg.DetectSettings(min_distance_px=24, border_px=56))
    result = reg.compute_matches(optical, 1, sar, 1, kps.xy_px, matcher, _match_settings(model))
    return reg.TiePoints.from_records(result.records)


def _transform_error(
    fit: reg.FitResult, truth: np.ndarray, ties: reg.TiePoints | None = None
) -> float:
    """Largest |fitted - true| optical position, pixels.

    Over the image interior, or, given ``ties``, over the box the fit's inliers span: a
    polynomial or spline is only determined where it has tie points, and judging it by its
    extrapolation 100 px beyond them tests the extrapolation, not the registration.
    """
    lo, hi = np.array([60.0, 60.0]), np.array([320.0, 320.0])
    if ties is not None:
        src = ties.src_px[fit.inliers]
        lo, hi = src.min(axis=0), src.max(axis=0)
    axes = [np.linspace(lo[k], hi[k], 6) for k in range(2)]
    grid = np.stack(np.meshgrid(*axes), -1).reshape(-1, 2)
    return float(np.abs(fit.transform.apply(grid) - (grid @ truth[:, :2].T + truth[:, 2])).max())


def _false_registrations(ties: reg.TiePoints, truth: np.ndarray | None) -> list[str]:
    """Fits that were accepted and do not agree with the truth (within 3 px)."""
    false = []
    for kind, thr in FITS:
        try:
            fit = reg.fit_tie_points(ties, kind, thr, 8, np.random.default_rng(0), half_range=HALF)
        except reg.RegistrationError as exc:
            assert str(exc).startswith("Registration refused"), exc
            continue
        err = np.inf if truth is None else _transform_error(fit, truth)
        if err > 3.0:
            false.append(f"{kind}/{thr}: {int(fit.inliers.sum())} inliers, error {err:.1f} px")
    return false


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_adversarial_pair_is_never_registered_wrongly(
    case: str, matcher, twin_model: Path, tmp_path: Path
) -> None:
    optical, sar, truth = ADVERSARIAL[case](tmp_path)
    ties = _ties(optical, sar, matcher, twin_model)
    assert len(ties.accepted) >= 10, "the case must give the fit something to chew on"
    assert _false_registrations(ties, truth) == []


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_true_pairs_still_register(seed: int, matcher, twin_model: Path, tmp_path: Path) -> None:
    pair = write_pair(tmp_path, seed=seed)
    ties = _ties(pair.optical, pair.sar, matcher, twin_model)
    for kind, thr in FITS:
        fit = reg.fit_tie_points(ties, kind, thr, 8, np.random.default_rng(0), half_range=HALF)
        # a shift cannot model the 1.5 % scale of the truth; a TPS follows its inliers' noise;
        # a quadratic through inliers allowed `thr` px of residual can bend by about `thr` at
        # the corners of its data (measured 2.2 px at thr 3 with the weak twin model)
        tolerance = {"shift": 4.5, "tps": 4.0, "poly2": max(2.0, thr)}.get(kind, 2.0)
        assert _transform_error(fit, pair.a, ties) < tolerance, (kind, thr)
        assert fit.extra["log10_nfa"] < -10 and fit.extra["inlier_ratio"] > 0.3


# --- the refusal criteria, one at a time, on tie points with a known answer ----------------------


def _random_ties(rng: np.random.Generator, n: int) -> reg.TiePoints:
    """``n`` keypoints on a 300 px image whose matches peak uniformly inside +/-HALF px."""
    dst = rng.uniform(40, 340, (n, 2))
    shift = rng.uniform(-HALF + 1, HALF - 1, (n, 2))
    return reg.TiePoints(dst + shift, dst, np.ones(n, bool), np.arange(n), shift)


def test_chance_agreement_is_refused_by_the_significance_test() -> None:
    """10 exact inliers hidden among 400 random matches: enough in number, not significant."""
    rng = np.random.default_rng(0)
    ties = _random_ties(rng, 400)
    ties.src_px[:10] = ties.dst_px[:10] + 2.0  # a consistent shift by (2, 2) for 10 matches
    ties.shift_px[:10] = -2.0
    with pytest.raises(reg.RegistrationError, match="could be chance agreement"):
        reg.fit_tie_points(ties, "shift", 1.0, 8, np.random.default_rng(0), half_range=HALF)
    # the same 10 among 20 are significant (and 50 % agree): registered, shift exact
    small = reg.TiePoints(ties.src_px[:20], ties.dst_px[:20], ties.accepted[:20], ties.ids[:20],
                          ties.shift_px[:20])  # fmt: skip
    fit = reg.fit_tie_points(small, "shift", 1.0, 8, np.random.default_rng(0), half_range=HALF)
    assert fit.inliers[:10].all() and fit.inliers.sum() <= 11
    np.testing.assert_allclose(fit.transform.apply([[0.0, 0.0]]), [[-2.0, -2.0]], atol=1e-9)


def test_log10_nfa_matches_a_hand_computation() -> None:
    # n=20, k=10, shift (m=1), threshold 3 px, half range 16: p = pi 9 / 31^2
    p = np.pi * 9 / 31**2
    from math import comb, log10

    expected = log10(19) + log10(comb(20, 10)) + log10(comb(10, 1)) + 9 * log10(p)
    assert reg.log10_nfa(20, 10, 1, 3.0, 16) == pytest.approx(expected, rel=1e-12)
    assert reg.log10_nfa(20, 1, 1, 3.0, 16) == np.inf  # no redundancy: no evidence


def test_low_inlier_ratio_is_refused() -> None:
    """30 inliers among 400 (7.5 %) are significant but below the 10 % floor."""
    rng = np.random.default_rng(1)
    ties = _random_ties(rng, 400)
    ties.src_px[:30] = ties.dst_px[:30] + 2.0
    ties.shift_px[:30] = -2.0
    with pytest.raises(reg.RegistrationError, match=r"only 3\d of 400 usable matches \([78] %\)"):
        reg.fit_tie_points(ties, "shift", 1.0, 8, np.random.default_rng(0), half_range=HALF)


def test_collinear_inliers_are_refused_for_an_affine() -> None:
    """Inliers all on one road (a line): an affine would be extrapolated across the image."""
    rng = np.random.default_rng(2)
    ties = _random_ties(rng, 40)
    t = np.linspace(40, 340, 16)
    ties.dst_px[:16] = np.column_stack([t, 0.5 * t + 20])
    ties.src_px[:16] = ties.dst_px[:16] + 1.0
    ties.shift_px[:16] = -1.0
    with pytest.raises(reg.RegistrationError, match="lie on a line or in a small cluster"):
        reg.fit_tie_points(ties, "affine", 1.0, 8, np.random.default_rng(0), half_range=HALF)
    fit = reg.fit_tie_points(ties, "shift", 1.0, 8, np.random.default_rng(0), half_range=HALF)
    assert fit.inliers[:16].all()  # a shift needs no spread


def test_edge_peaks_are_no_evidence() -> None:
    """20 matches all peaking at the map's corner fit one shift exactly, yet prove nothing."""
    rng = np.random.default_rng(3)
    ties = _random_ties(rng, 30)
    ties.shift_px[:20] = (-HALF, -HALF)
    ties.src_px[:20] = ties.dst_px[:20] + HALF
    assert ties.usable(HALF).sum() == 10
    with pytest.raises(reg.RegistrationError, match=r"only \d confident"):
        reg.fit_tie_points(ties, "shift", 1.5, 8, np.random.default_rng(0), half_range=HALF)


# --- through processing.run ---------------------------------------------------------------------


@pytest.mark.parametrize("case", ["other_place_202", "noise_smooth", "flat_optical"])
def test_register_algorithm_refuses_and_writes_nothing(
    case: str, provider, twin_model: Path, tmp_path: Path
) -> None:
    """The pairs that were silently registered at the default threshold before the fix."""
    optical, sar, _ = ADVERSARIAL[case](tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    params = alg_params("registersartooptical", optical, sar, twin_model, out)
    for kind in (0, 1):  # shift, affine at the default RESIDUAL_THRESHOLD 3 px
        run_refused(
            "registersartooptical", {**params, "TRANSFORM": kind, "RESIDUAL_THRESHOLD": 3.0},
            out, "Registration refused", "No output raster was written",
        )  # fmt: skip
