import dataclasses
import json
from itertools import product

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sar_optical_matcher.core.peaks import (
    DEFAULT_CONFIDENCE_MODEL,
    FEATURE_NAMES,
    ConfidenceModel,
    analyse_map,
    analyse_maps,
    fit_confidence_model,
    map_features,
    precision_at_thresholds,
    ranking_auc,
)

YY, XX = np.mgrid[0:129, 0:129].astype(np.float64)


def gaussian(x0: float, y0: float, sigma: float, amplitude: float = 0.8) -> np.ndarray:
    return amplitude * np.exp(-((XX - x0) ** 2 + (YY - y0) ** 2) / (2 * sigma**2))


@pytest.mark.parametrize("sigma", [1.5, 2.5, 4.0])
def test_subpixel_gaussian_peak_recovered(sigma: float) -> None:
    rng = np.random.default_rng(int(sigma * 10))
    for x0, y0 in rng.uniform(10, 118, size=(20, 2)):
        s = analyse_map(gaussian(x0, y0, sigma) - 0.2)
        assert (s.x_px, s.y_px) == (round(x0), round(y0))
        assert abs(s.subpixel_x_px - x0) < 0.1
        assert abs(s.subpixel_y_px - y0) < 0.1


def test_single_sharp_peak_beats_multimodal_noise_and_flat_maps() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.02, size=(129, 129))
    sharp = analyse_map(gaussian(64.3, 60.7, 2.0) + noise)
    multi = analyse_map(gaussian(30, 30, 2.0) + gaussian(90, 95, 2.0, 0.78) + noise)
    random = analyse_map(rng.uniform(-0.2, 0.3, size=(129, 129)))
    flat = analyse_map(gaussian(64, 64, 40.0, 0.5))
    assert sharp.confidence > 0.9
    assert multi.confidence < 0.5 and random.confidence < 0.1 and flat.confidence < 0.1
    assert multi.ratio < 1.05 < sharp.ratio
    assert flat.spread_px > 10 * sharp.spread_px


def test_ratio_second_score_and_exclusion_radius() -> None:
    m = np.full((21, 21), -0.5)
    m[10, 10] = 0.8
    m[10, 14] = 0.6  # 4 px away: inside the default exclusion radius
    m[3, 10] = 0.2  # 7 px away
    s = analyse_map(m)
    assert s.second_score == pytest.approx(0.2)
    assert s.ratio == pytest.approx((1 + 0.8 + 2e-6) / (1 + 0.2 + 2e-6))
    assert analyse_map(m, exclusion_radius_px=3).second_score == pytest.approx(0.6)
    assert s.peak_zscore == pytest.approx((0.8 - m.mean()) / m.std())


def test_spread_tracks_peak_width() -> None:
    # Region above half height of a Gaussian is a disc of radius 1.1774 sigma: RMS 0.8326 sigma.
    for sigma in (3.0, 6.0, 10.0):
        s = analyse_map(gaussian(64, 64, sigma))
        assert s.spread_px == pytest.approx(0.8326 * sigma, rel=0.1)


def test_peak_on_the_edge_stays_within_half_a_pixel() -> None:
    s = analyse_map(gaussian(-0.4, 128.3, 3.0))
    assert (s.x_px, s.y_px) == (0, 128)
    assert s.subpixel_x_px == 0.0 and s.subpixel_y_px == 128.0


def test_analyse_maps_matches_single_map_analysis() -> None:
    rng = np.random.default_rng(1)
    maps = rng.uniform(-1, 1, size=(5, 17, 23))
    maps[2] = gaussian(40, 40, 3)[:17, 30:53]
    batch, single = analyse_maps(maps), [analyse_map(m) for m in maps]
    assert len(batch) == len(single) == 5
    for b, s in zip(batch, single):
        # same peaks; the float fields equal up to summation order (1e-17 seen on the logit)
        assert (b.x_px, b.y_px) == (s.x_px, s.y_px)
        assert dataclasses.astuple(b) == pytest.approx(dataclasses.astuple(s), rel=1e-12, abs=1e-12)
    assert analyse_maps(np.zeros((0, 9, 9))) == []


def test_invalid_maps_raise_helpful_errors() -> None:
    m = np.zeros((9, 9))
    m[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN/Inf.*\[2, 3\]"):
        analyse_map(m)
    with pytest.raises(ValueError, match="at least 3x3"):
        analyse_map(np.zeros((2, 9)))
    with pytest.raises(ValueError, match=r"shape \(h, w\)"):
        analyse_map(np.zeros(9))
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        analyse_maps(np.zeros((9, 9)))


def test_constant_map_is_handled() -> None:
    s = analyse_map(np.full((7, 7), 0.3))
    assert (s.x_px, s.y_px, s.ratio, s.peak_zscore) == (0, 0, 1.0, 0.0)
    assert 0.0 <= s.confidence < 0.05


def test_confidence_model_round_trip_and_validation() -> None:
    model = ConfidenceModel((0.5, 10.0, -2.0, 0.25), -1.5)
    back = ConfidenceModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert back == model
    f = np.array([[0.9, 0.3, 1.0, 8.0], [0.1, 0.0, 3.0, 1.0]])
    p = model.predict(f)
    expected = 1 / (1 + np.exp(-(-1.5 + f @ np.array(model.weights))))
    np.testing.assert_allclose(p, expected)
    assert model.predict(np.array([0.0, 1e4, 0.0, 0.0]))[0] == 1.0  # no overflow
    with pytest.raises(ValueError, match="recalibrate"):
        ConfidenceModel.from_dict({**model.to_dict(), "feature_names": ["a", "b", "c", "d"]})
    with pytest.raises(ValueError, match="one weight per feature"):
        ConfidenceModel((1.0,), 0.0)


def test_map_features_and_custom_model() -> None:
    maps = np.stack([gaussian(50, 60, 2.0), gaussian(30, 30, 2) + gaussian(90, 90, 2)])
    stats = analyse_maps(maps)
    f = map_features(stats)
    assert f.shape == (2, len(FEATURE_NAMES))
    np.testing.assert_array_equal(f, map_features(maps))
    np.testing.assert_allclose([s.confidence for s in stats], DEFAULT_CONFIDENCE_MODEL.predict(f))
    always = ConfidenceModel((0.0, 0.0, 0.0, 0.0), 50.0)
    assert analyse_map(maps[1], confidence_model=always).confidence == pytest.approx(1.0)


def test_fit_confidence_model_recovers_a_known_logistic_model() -> None:
    rng = np.random.default_rng(3)
    f = rng.normal(size=(20000, 4)) * [0.3, 0.1, 1.0, 3.0] + [0.5, 0.1, 1.5, 5.0]
    truth = ConfidenceModel((2.0, 10.0, -1.0, 0.3), -2.0)
    correct = rng.random(len(f)) < truth.predict(f)
    fitted = fit_confidence_model(f, correct, l2=1e-6)
    np.testing.assert_allclose(fitted.weights, truth.weights, rtol=0.2)
    assert fitted.bias == pytest.approx(truth.bias, abs=0.5)
    assert fit_confidence_model(f, correct) == fit_confidence_model(f, correct)  # deterministic
    separable = fit_confidence_model(f[:200], f[:200, 1] > 0.1)  # L2 keeps it finite
    assert ranking_auc(separable.predict(f[:200]), f[:200, 1] > 0.1) > 0.99
    assert np.isfinite(separable.weights).all()
    unpenalised = fit_confidence_model(f[:200], f[:200, 1] > 0.1, l2=0.0)  # damped: no blow-up
    assert np.isfinite(unpenalised.weights).all()
    with pytest.raises(ValueError, match="both correct and wrong"):
        fit_confidence_model(f[:10], np.ones(10, dtype=bool))


def test_ranking_auc() -> None:
    correct = np.array([True, True, False, False, True])
    assert ranking_auc(np.array([0.9, 0.8, 0.1, 0.2, 0.7]), correct) == 1.0
    assert ranking_auc(np.array([0.1, 0.2, 0.9, 0.8, 0.3]), correct) == 0.0
    assert ranking_auc(np.full(5, 0.5), correct) == 0.5
    rng = np.random.default_rng(0)
    conf, lab = rng.integers(0, 5, 60).astype(float), rng.random(60) < 0.4
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in product(conf[lab], conf[~lab])]
    assert ranking_auc(conf, lab) == pytest.approx(np.mean(pairs))
    with pytest.raises(ValueError, match="correct and wrong"):
        ranking_auc(np.ones(3), np.ones(3, dtype=bool))


def test_precision_at_thresholds() -> None:
    conf = np.array([0.9, 0.8, 0.6, 0.4, 0.2])
    correct = np.array([True, False, True, True, False])
    precision, kept = precision_at_thresholds(conf, correct, [0.0, 0.5, 0.85, 0.95])
    np.testing.assert_allclose(precision[:3], [3 / 5, 2 / 3, 1.0])
    assert np.isnan(precision[3])
    np.testing.assert_allclose(kept, [1.0, 0.6, 0.2, 0.0])


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    h=st.integers(3, 40),
    w=st.integers(3, 40),
    radius=st.integers(0, 6),
)
def test_property_random_maps(seed: int, h: int, w: int, radius: int) -> None:
    rng = np.random.default_rng(seed)
    m = rng.uniform(-1, 1, size=(h, w))
    s = analyse_map(m, exclusion_radius_px=radius)
    y, x = np.unravel_index(np.argmax(m), m.shape)
    assert (s.x_px, s.y_px) == (x, y)
    assert s.score == m.max() and s.second_score <= s.score
    assert 0.0 <= s.confidence <= 1.0
    assert s.ratio >= 1.0
    assert abs(s.subpixel_x_px - x) <= 0.5 and abs(s.subpixel_y_px - y) <= 0.5
    assert 0.0 <= s.spread_px <= np.hypot(h, w)


def test_similarity_range_for_non_cosine_maps() -> None:
    m = np.full((21, 21), -900.0)  # e.g. a negative SSD map
    m[10, 10], m[2, 2] = -100.0, -500.0
    cosine_units = analyse_map(m)  # everything clips to -1: no information in the ratio
    assert cosine_units.ratio == 1.0
    own = analyse_map(m, similarity_range=None)  # (-100 - -900) / (-500 - -900) = 2
    assert own.ratio == pytest.approx((1 + 1e-6) / (0.5 + 1e-6))
    explicit = analyse_map(m, similarity_range=(-900.0, -100.0))
    assert explicit.ratio == own.ratio
    with pytest.raises(ValueError, match="similarity_range"):
        analyse_map(m, similarity_range=(1.0, 1.0))
