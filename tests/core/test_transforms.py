import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sar_optical_matcher.core.transforms import (
    KINDS,
    Transform,
    fit_transform,
    loo_residuals,
    min_points,
    prediction_error,
    ransac,
    residuals,
)


def _random_affine(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    theta = rng.uniform(-0.3, 0.3)
    scale = rng.uniform(0.8, 1.25, size=2)
    shear = rng.uniform(-0.1, 0.1)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    a = rot @ np.array([[scale[0], shear], [0.0, scale[1]]])
    return a, rng.uniform(-500, 500, size=2)


def _truth(kind: str, rng: np.random.Generator):
    """A random ground-truth mapping of the given kind (a plain function of (N, 2) points)."""
    a, t = _random_affine(rng)
    if kind == "shift":
        return lambda p: p + t
    if kind in ("affine", "poly1", "tps"):  # a TPS reproduces affines exactly
        return lambda p: p @ a.T + t
    degree = int(kind[-1])
    c = rng.normal(size=(degree + 1, degree + 1, 2)) * 5.0  # px of distortion per term

    def poly(p: np.ndarray) -> np.ndarray:
        u = (p - 2000.0) / 2000.0
        out = p @ a.T + t
        for i in range(degree + 1):
            for j in range(degree + 1 - i):
                if i + j >= 2:
                    out = out + (u[:, :1] ** i * u[:, 1:] ** j) * c[i, j]
        return out

    return poly


@pytest.mark.parametrize("kind", KINDS)
def test_fit_recovers_known_transform_exactly(kind: str) -> None:
    rng = np.random.default_rng(7)
    truth = _truth(kind, rng)
    src = rng.uniform(0, 4000, size=(40, 2))
    tf = fit_transform(src, truth(src), kind)
    held_out = rng.uniform(0, 4000, size=(200, 2))
    assert tf.kind == kind
    assert np.abs(tf.apply(held_out) - truth(held_out)).max() < 1e-6
    assert residuals(tf, src, truth(src)).max() < 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_to_dict_round_trips_through_json(kind: str) -> None:
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 1000, size=(30, 2))
    dst = src + rng.normal(0, 2.0, size=src.shape)  # a non-smooth field: TPS bends for real
    tf = fit_transform(src, dst, kind)
    back = Transform.from_dict(json.loads(json.dumps(tf.to_dict())))
    pts = rng.uniform(-100, 1100, size=(50, 2))
    np.testing.assert_array_equal(back.apply(pts), tf.apply(pts))


def test_tps_interpolates_and_regularisation_smooths() -> None:
    rng = np.random.default_rng(4)
    src = rng.uniform(0, 1000, size=(25, 2))
    dst = src + rng.normal(0, 3.0, size=src.shape)
    exact = fit_transform(src, dst, "tps")
    assert residuals(exact, src, dst).max() < 1e-8
    affine = fit_transform(src, dst, "affine")
    # Smoothing moves the TPS monotonically towards the affine least-squares fit.
    gaps = [
        np.abs(
            fit_transform(src, dst, "tps", tps_regularization=lam).apply(src) - affine.apply(src)
        ).max()
        for lam in (0.0, 1.0, 100.0, 1e5)
    ]
    assert gaps[0] > 3.0
    assert all(g1 > g2 for g1, g2 in zip(gaps, gaps[1:]))
    assert gaps[-1] < 0.01


def test_tps_refuses_near_duplicate_points_it_cannot_pass_through() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 1000, size=(10, 2))
    dst = src + rng.normal(0, 1.0, size=src.shape)
    src[5] = src[3] + 1e-2  # close but resolvable: the spline still interpolates
    assert residuals(fit_transform(src, dst, "tps"), src, dst).max() < 1e-4
    src[5] = src[3] + 1e-6  # was fitted silently, missing its own control points by 381 px
    with pytest.raises(ValueError, match="nearly coincide"):
        fit_transform(src, dst, "tps")
    smooth = fit_transform(src, dst, "tps", tps_regularization=0.1)
    assert np.isfinite(smooth.apply(src)).all()


def test_tps_evaluation_memory_is_bounded_for_many_control_points() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 5000, size=(300, 2))
    tf = fit_transform(src, src + rng.normal(0, 1.0, size=src.shape), "tps")
    pts = rng.uniform(0, 5000, size=(40000, 2))
    tracemalloc.start()
    try:
        got = tf.apply(pts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6  # 51 MB; 290 MB with 65536-row chunks whatever K
    np.testing.assert_allclose(got[:5], tf.apply(pts[:5]), atol=1e-9)


def test_affine_matrix_and_min_points() -> None:
    rng = np.random.default_rng(5)
    a, t = _random_affine(rng)
    src = rng.uniform(0, 3000, size=(10, 2))
    for kind in ("affine", "poly1"):
        np.testing.assert_allclose(
            fit_transform(src, src @ a.T + t, kind).affine_matrix(),
            np.column_stack([a, t]),
            atol=1e-8,
        )
    assert [min_points(k) for k in KINDS] == [1, 3, 3, 6, 10, 3]
    with pytest.raises(ValueError, match="no affine matrix"):
        fit_transform(src, src, "poly2").affine_matrix()


def test_weights_downweight_a_bad_point() -> None:
    rng = np.random.default_rng(6)
    a, t = _random_affine(rng)
    src = rng.uniform(0, 1000, size=(12, 2))
    dst = src @ a.T + t
    dst[0] += 100.0
    w = np.ones(12)
    w[0] = 0.0
    tf = fit_transform(src, dst, "affine", weights=w)
    assert residuals(tf, src[1:], dst[1:]).max() < 1e-8
    assert residuals(tf, src[:1], dst[:1])[0] == pytest.approx(100 * np.sqrt(2), abs=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_too_few_points_says_how_many_are_needed(kind: str) -> None:
    n = min_points(kind) - 1
    pts = np.random.default_rng(0).uniform(0, 100, size=(n, 2))
    with pytest.raises(ValueError, match=f"at least {min_points(kind)}"):
        fit_transform(pts, pts, kind)
    with pytest.raises(ValueError, match="at least"):
        ransac(pts, pts, kind, 1.0, np.random.default_rng(0))


def test_degenerate_and_malformed_inputs_raise() -> None:
    line = np.column_stack([np.arange(10.0), 2 * np.arange(10.0)])
    for kind in ("affine", "poly2", "tps"):
        with pytest.raises(ValueError, match="collinear"):
            fit_transform(line, line, kind)
    pts = np.random.default_rng(0).uniform(0, 10, size=(5, 2))
    with pytest.raises(ValueError, match="pair up"):
        fit_transform(pts, pts[:4], "affine")
    bad = pts.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_transform(bad, pts, "affine")
    with pytest.raises(ValueError, match="unknown transform kind"):
        fit_transform(pts, pts, "homography")
    with pytest.raises(ValueError, match="duplicate"):
        fit_transform(np.vstack([pts, pts[:1]]), np.vstack([pts, pts[:1] + 1]), "tps")


def _outlier_problem(rng: np.random.Generator, n: int, outlier_frac: float, noise: float):
    a, t = _random_affine(rng)
    src = rng.uniform(0, 4000, size=(n, 2))
    dst = src @ a.T + t + rng.normal(0, noise, size=(n, 2))
    outlier = np.zeros(n, dtype=bool)
    outlier[rng.choice(n, int(round(outlier_frac * n)), replace=False)] = True
    angle = rng.uniform(0, 2 * np.pi, outlier.sum())
    dst[outlier] += rng.uniform(30, 400, outlier.sum())[:, None] * np.column_stack(
        [np.cos(angle), np.sin(angle)]
    )
    return src, dst, outlier, (a, t)


@pytest.mark.parametrize("kind", ["affine", "poly1", "poly2", "tps", "shift"])
def test_ransac_rejects_40_percent_gross_outliers(kind: str) -> None:
    rng = np.random.default_rng(11)
    src, dst, outlier, (a, t) = _outlier_problem(rng, 150, 0.4, noise=0.3)
    if kind == "shift":
        dst = np.where(outlier[:, None], dst, src + t + (dst - src @ a.T - t))
    res = ransac(src, dst, kind, threshold_px=2.0, rng=np.random.default_rng(0))
    assert res.ok and res.transform.kind == kind
    np.testing.assert_array_equal(res.inliers, ~outlier)
    assert res.inliers.dtype == bool
    grid = rng.uniform(0, 4000, size=(100, 2))
    truth = grid + t if kind == "shift" else grid @ a.T + t
    if kind != "tps":  # an interpolating TPS follows the 0.3 px noise between points
        assert np.abs(res.transform.apply(grid) - truth).max() < 0.1
    assert res.rmse_px == pytest.approx(np.sqrt(np.mean(res.residuals[res.inliers] ** 2)))
    assert res.rmse_px < 0.6


def test_ransac_poly2_grows_beyond_the_affine_consensus() -> None:
    # A 10 px quadratic distortion: an affine explains only a patch of the image within 1.5 px,
    # the poly2 refit on that patch must extend the inlier set to every true match.
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 4000, size=(200, 2))
    u = (src - 2000) / 2000
    bend = np.column_stack(
        [12 * u[:, 0] ** 2 + 6 * u[:, 0] * u[:, 1], 5 * u[:, 0] ** 2 - 10 * u[:, 1] ** 2]
    )
    dst = src * 1.01 + [50, -30] + bend + rng.normal(0, 0.2, size=src.shape)
    outlier = rng.random(200) < 0.3
    dst[outlier] += rng.uniform(30, 300, size=(outlier.sum(), 2))
    affine = ransac(src, dst, "affine", 1.5, np.random.default_rng(1))
    assert affine.inliers.sum() < 0.5 * (~outlier).sum()
    res = ransac(src, dst, "poly2", 1.5, np.random.default_rng(1))
    assert res.ok and res.transform.kind == "poly2"
    np.testing.assert_array_equal(res.inliers, ~outlier)
    assert res.rmse_px < 0.35


def test_ransac_is_deterministic_given_the_seed() -> None:
    src, dst, _, _ = _outlier_problem(np.random.default_rng(2), 80, 0.5, noise=0.5)
    runs = [ransac(src, dst, "affine", 1.5, np.random.default_rng(42)) for _ in range(2)]
    assert runs[0].n_iterations == runs[1].n_iterations
    np.testing.assert_array_equal(runs[0].inliers, runs[1].inliers)
    assert runs[0].transform.to_dict() == runs[1].transform.to_dict()


def test_ransac_reports_too_few_inliers_instead_of_raising() -> None:
    rng = np.random.default_rng(9)
    src = rng.uniform(0, 1000, size=(20, 2))
    dst = rng.uniform(0, 1000, size=(20, 2))  # unrelated points: no consensus
    res = ransac(src, dst, "poly3", 1.0, rng, min_inliers=8)
    assert not res.ok
    assert res.inliers.sum() < 8
    assert res.n_iterations == 2000


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_inliers=st.integers(12, 60),
    outlier_frac=st.floats(0.0, 0.4),
)
def test_property_ransac_recovers_random_affines(
    seed: int, n_inliers: int, outlier_frac: float
) -> None:
    rng = np.random.default_rng(seed)
    n_out = int(outlier_frac * n_inliers / (1 - outlier_frac))
    src, dst, outlier, (a, t) = _outlier_problem(
        rng, n_inliers + n_out, n_out / (n_inliers + n_out), 0.0
    )
    res = ransac(src, dst, "affine", 1.0, rng)
    np.testing.assert_array_equal(res.inliers, ~outlier)
    np.testing.assert_allclose(res.transform.affine_matrix(), np.column_stack([a, t]), atol=1e-6)


def test_ransac_on_collinear_points_fails_softly() -> None:
    src = np.column_stack([np.arange(20.0), 3 * np.arange(20.0)])
    res = ransac(src, src + 5, "affine", 1.0, np.random.default_rng(0))
    assert not res.ok and res.transform.kind == "shift"  # identity: no affine hypothesis
    assert res.inliers.dtype == bool and res.residuals.shape == (20,)
    shift = ransac(src, src + 5, "shift", 1.0, np.random.default_rng(0))
    assert shift.ok and shift.inliers.all() and shift.rmse_px < 1e-12


@pytest.mark.parametrize("kind", ["shift", "affine", "poly1", "poly2", "poly3", "tps"])
def test_leave_one_out_residuals_equal_refits_without_each_point(kind: str) -> None:
    """The closed forms (hat matrix, Rippa's formula for the spline) against N refits; the
    spline's own residuals are 0, its leave-one-out ones are not."""
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 300, (25, 2))
    bend = 0.002 * (src[:, :1] - 150) ** 2 / 100 * np.array([1.0, 0.5])
    dst = src @ np.array([[1.01, 0.02], [-0.01, 0.99]]).T + [3, -2] + bend
    dst += rng.normal(0, 0.3, dst.shape)
    fitted = fit_transform(src, dst, kind)
    loo = loo_residuals(src, dst, kind)
    brute = np.array([
        fit_transform(np.delete(src, i, 0), np.delete(dst, i, 0), kind).apply(src[i : i + 1])[0]
        - dst[i]
        for i in range(len(src))
    ])  # fmt: skip
    np.testing.assert_allclose(loo, brute, atol=1e-9)
    own = np.sqrt((residuals(fitted, src, dst) ** 2).mean())
    held = np.sqrt((loo**2).sum(axis=1).mean())
    assert held > own  # always: a point's own fit is closer to it
    if kind == "tps":
        assert own < 1e-9 and held > 0.3  # noise 0.3 px per axis


def _layout(name: str, rng: np.random.Generator) -> np.ndarray:
    """Tie point layouts over a 1000 px overlap: spread, two crossing lines (3 px off them)."""
    if name == "spread":
        return rng.uniform(64, 936, (40, 2))
    t = np.linspace(64, 936, 20)
    return np.vstack(
        [
            np.column_stack([t, 500 + rng.normal(0, 3, 20)]),
            np.column_stack([500 + rng.normal(0, 3, 20), t]),
        ]
    )


@pytest.mark.parametrize(("layout", "kind"), [("spread", "poly3"), ("cross", "poly2")])
def test_prediction_error_is_the_true_error_of_the_fit_over_the_noise(layout, kind) -> None:
    """Monte-Carlo truth: 200 noisy draws on one layout. The predicted standard error at the
    grid's worst point is the root mean square of the true error there (0.97-1.05 measured),
    and the true largest error over the grid is of the order of the largest prediction."""
    rng = np.random.default_rng(0)
    a, t = _random_affine(rng)
    src = _layout(layout, rng)
    g = np.linspace(64, 936, 16)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    errors, predicted = [], []
    for _ in range(200):
        dst = src @ a.T + t + rng.normal(0, 0.3, src.shape)
        fit = fit_transform(src, dst, kind)
        errors.append(np.hypot(*(fit.apply(grid) - (grid @ a.T + t)).T))
        predicted.append(prediction_error(src, dst, kind, grid))
    err, pred = np.array(errors), np.array(predicted)
    worst = int(np.argmax(pred.mean(axis=0)))
    assert np.sqrt(np.mean(err[:, worst] ** 2)) / pred[:, worst].mean() == pytest.approx(
        1, abs=0.15
    )
    ratio = err.max(axis=1) / pred.max(axis=1)
    assert 0.6 < np.median(ratio) < 1.5
    # the crossing lines' fit is wrong by 20 px between them, 50 times the noise
    assert (pred.max(axis=1).mean() > 15) == (layout == "cross")


def test_prediction_error_of_a_shift_and_of_a_spline() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 500, (25, 2))
    dst = src + [3.0, -2.0] + rng.normal(0, 0.5, src.shape)
    shift = fit_transform(src, dst, "shift")
    sigma = np.sqrt(((shift.apply(src) - dst) ** 2).sum() / (2 * 24))
    np.testing.assert_allclose(
        prediction_error(src, dst, "shift", src[:3]), sigma * np.sqrt(2 / 25)
    )
    # an affine at its own points: sigma sqrt(2 h_ii), the hat matrix's diagonal
    affine = prediction_error(src, dst, "affine", src)
    x = np.column_stack([np.ones(25), src])
    hat = np.einsum("ij,jk,ik->i", x, np.linalg.inv(x.T @ x), x)
    aff = fit_transform(src, dst, "affine")
    sigma_a = np.sqrt(((aff.apply(src) - dst) ** 2).sum() / (2 * 22))
    np.testing.assert_allclose(affine, sigma_a * np.sqrt(2 * hat))
    assert np.isnan(prediction_error(src, dst, "tps", src[:2])).all()
