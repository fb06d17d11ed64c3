"""Peak analysis of correspondence maps, and the match confidence derived from it.

A correspondence map ``cmap (h, w)`` holds the cosine similarity of the optical template's
descriptor with the SAR descriptor at every window offset (``cmap[dy, dx]``, see
``core.__init__``). The paper (Hughes & Schmitt 2019, sec. 5) observes that correct matches
give a single Gaussian-like peak while failed ones are multi-modal or random; the features
below measure exactly that, and a logistic :class:`ConfidenceModel` turns them into a
probability-like confidence in [0, 1] (hand-set default, calibrated later on data).

All positions are in map index units: ``x`` = column (dx), ``y`` = row (dy), no +0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

FEATURE_NAMES: tuple[str, ...] = ("score", "log_ratio", "log1p_spread_px", "peak_zscore")


@dataclass(frozen=True)
class PeakStats:
    """Peak statistics of one correspondence map.

    Attributes:
        x_px: column of the maximum (first one in row-major order on ties).
        y_px: row of the maximum.
        subpixel_x_px: refined column (quadratic fit), within +-0.5 of ``x_px``.
        subpixel_y_px: refined row, within +-0.5 of ``y_px``.
        score: map value at the maximum (cosine similarity).
        second_score: highest value farther than the exclusion radius from the peak.
        ratio: peak-to-second-peak ratio of similarities mapped to [0, 1], >= 1; for cosine
            maps ``(1 + score) / (1 + second_score)`` (cosines clipped to [-1, 1]).
        spread_px: RMS distance to the peak of the region connected to it that lies above
            half-way between the map's median and its peak.
        peak_zscore: ``(score - mean) / std`` of the map (0 for a constant map).
        confidence: probability-like match confidence in [0, 1].
    """

    x_px: int
    y_px: int
    subpixel_x_px: float
    subpixel_y_px: float
    score: float
    second_score: float
    ratio: float
    spread_px: float
    peak_zscore: float
    confidence: float


def _stable_sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


@dataclass(frozen=True)
class ConfidenceModel:
    """Logistic model ``sigmoid(bias + features @ weights)`` over :data:`FEATURE_NAMES`.

    Attributes:
        weights: one weight per feature.
        bias: intercept.
        feature_names: the features, in column order (must match :func:`map_features`).
    """

    weights: tuple[float, ...]
    bias: float
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def __post_init__(self) -> None:
        """Validate the parameters."""
        if len(self.weights) != len(self.feature_names):
            raise ValueError(
                f"{len(self.weights)} weights for {len(self.feature_names)} features "
                f"{self.feature_names}; give one weight per feature"
            )
        if not np.isfinite(list(self.weights) + [self.bias]).all():
            raise ValueError("confidence model weights and bias must be finite")

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Confidence ``(N,)`` in [0, 1] of features ``(N, k)`` (or one row ``(k,)``)."""
        f = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if f.shape[1] != len(self.weights):
            raise ValueError(f"features must have {len(self.weights)} columns, got {f.shape}")
        return _stable_sigmoid(self.bias + f @ np.asarray(self.weights, dtype=np.float64))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, e.g. for ``contract.training["confidence_model"]``."""
        return {
            "kind": "logistic",
            "feature_names": list(self.feature_names),
            "weights": [float(w) for w in self.weights],
            "bias": float(self.bias),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConfidenceModel:
        """Rebuild a model written by :meth:`to_dict`; ``ValueError`` says what is wrong."""
        if not isinstance(d, dict) or "weights" not in d or "bias" not in d:
            raise ValueError(
                f"confidence model must be an object with 'weights' and 'bias', got {d!r}"
            )
        if d.get("kind", "logistic") != "logistic":
            raise ValueError(f"unsupported confidence model kind {d.get('kind')!r}")
        names = tuple(str(n) for n in d.get("feature_names", FEATURE_NAMES))
        if names != FEATURE_NAMES:
            raise ValueError(
                f"confidence model uses features {names}, this version computes "
                f"{FEATURE_NAMES}; recalibrate it with fit_confidence_model"
            )
        try:
            return cls(tuple(float(w) for w in d["weights"]), float(d["bias"]), names)
        except TypeError as exc:
            raise ValueError(f"confidence model weights and bias must be numbers: {exc}") from exc


#: Hand-set before calibration: a sharp single peak (ratio well above 1, high z-score, small
#: spread) scores high; two similar peaks (log ratio ~ 0), noise and flat maps score low.
DEFAULT_CONFIDENCE_MODEL = ConfidenceModel(weights=(2.0, 30.0, -1.0, 0.1), bias=-5.0)


def _check_maps(maps: np.ndarray, ndim: int) -> np.ndarray:
    m = np.asarray(maps, dtype=np.float64)
    shape_txt = "(h, w)" if ndim == 2 else "(N, h, w)"
    if m.ndim != ndim:
        raise ValueError(f"correspondence map(s) must have shape {shape_txt}, got {m.shape}")
    if m.shape[-1] < 3 or m.shape[-2] < 3:
        raise ValueError(f"correspondence maps must be at least 3x3, got {m.shape[-2:]}")
    bad = ~np.isfinite(m)
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise ValueError(
            f"correspondence map contains {int(bad.sum())} NaN/Inf value(s), first at index "
            f"{where}; mask invalid offsets with a finite low value (e.g. -1) instead"
        )
    return m


def _subpixel_1d(left: float, centre: float, right: float) -> float:
    """Vertex offset of the parabola through three samples, clamped to [-0.5, 0.5]."""
    denom = left - 2.0 * centre + right
    if denom >= 0:  # not a strict maximum (flat or convex): no refinement
        return 0.0
    return float(np.clip(0.5 * (left - right) / denom, -0.5, 0.5))


def refine_peak(m: np.ndarray, y: int, x: int) -> tuple[float, float]:
    """Refine the peak with a 2-D quadratic on the 3x3 neighbourhood (1-D fits at edges).

    The one sub-pixel step of the project: the plugin's matches and training's validation
    (``training.evaluate.subpixel_peak``) both take it. Returns ``(x, y)``.
    """
    h, w = m.shape
    if 0 < y < h - 1 and 0 < x < w - 1:
        p = m[y - 1 : y + 2, x - 1 : x + 2]
        gx, gy = (p[1, 2] - p[1, 0]) / 2.0, (p[2, 1] - p[0, 1]) / 2.0
        hxx, hyy = p[1, 2] - 2 * p[1, 1] + p[1, 0], p[2, 1] - 2 * p[1, 1] + p[0, 1]
        hxy = (p[2, 2] - p[2, 0] - p[0, 2] + p[0, 0]) / 4.0
        det = hxx * hyy - hxy**2
        if hxx < 0 and det > 0:  # negative definite Hessian: a true 2-D maximum
            dx = -(hyy * gx - hxy * gy) / det
            dy = -(hxx * gy - hxy * gx) / det
            if abs(dx) <= 0.5 and abs(dy) <= 0.5:
                return float(x + dx), float(y + dy)
    dx = _subpixel_1d(m[y, x - 1], m[y, x], m[y, x + 1]) if 0 < x < w - 1 else 0.0
    dy = _subpixel_1d(m[y - 1, x], m[y, x], m[y + 1, x]) if 0 < y < h - 1 else 0.0
    return float(x + dx), float(y + dy)


def _spread(m: np.ndarray, y: int, x: int, median: float) -> float:
    """RMS distance to the peak of the connected region above half-way median -> peak."""
    level = median + 0.5 * (m[y, x] - median)
    labels, _ = ndimage.label(m >= level)
    rows, cols = np.nonzero(labels == labels[y, x])
    return float(np.sqrt(np.mean((rows - y) ** 2 + (cols - x) ** 2)))


def _second_scores(m: np.ndarray, ys: np.ndarray, xs: np.ndarray, radius: float) -> np.ndarray:
    """Highest value of each map outside a disc of ``radius`` around its peak ``(N,)``."""
    n, h, w = m.shape
    rr = (np.arange(h)[None, :] - ys[:, None]) ** 2  # (N, h)
    cc = (np.arange(w)[None, :] - xs[:, None]) ** 2  # (N, w)
    inside = (rr[:, :, None] + cc[:, None, :]) <= radius**2
    masked = np.where(inside, -np.inf, m)
    second = masked.reshape(n, -1).max(axis=1)
    # A map entirely inside the exclusion disc has no second peak: use its minimum.
    return np.where(np.isfinite(second), second, m.reshape(n, -1).min(axis=1))


def _similarities(
    flat: np.ndarray, score: np.ndarray, second: np.ndarray, rng: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Peak and second-peak values mapped to [0, 1] through ``rng`` (None: per-map range)."""
    if rng is None:
        lo, hi = flat.min(axis=1), flat.max(axis=1)
    else:
        lo, hi = np.full(len(flat), float(rng[0])), np.full(len(flat), float(rng[1]))
        if not (np.isfinite(lo[0]) and np.isfinite(hi[0]) and hi[0] > lo[0]):
            raise ValueError(f"similarity_range must be finite (low, high), low < high, got {rng}")
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.clip((score - lo) / span, 0, 1), np.clip((second - lo) / span, 0, 1)


def analyse_maps(
    maps: np.ndarray,
    exclusion_radius_px: int = 4,
    confidence_model: ConfidenceModel | None = None,
    similarity_range: tuple[float, float] | None = (-1.0, 1.0),
) -> list[PeakStats]:
    """Peak statistics and confidence of a stack of correspondence maps.

    Args:
        maps: ``(N, h, w)`` finite correspondence maps, ``h, w >= 3``.
        exclusion_radius_px: radius (map pixels) around the peak ignored when looking for the
            second peak.
        confidence_model: model for ``confidence`` (default :data:`DEFAULT_CONFIDENCE_MODEL`).
        similarity_range: ``(low, high)`` of the map's values, mapped linearly to [0, 1] (and
            clipped) for the ratio; the default suits cosine maps. ``None`` uses each map's own
            min..max, for maps of other units (mutual information, negative SSD).

    Returns:
        One :class:`PeakStats` per map.

    Raises:
        ValueError: wrong shape, a map smaller than 3x3, NaN/Inf values, negative radius.
    """
    m = _check_maps(maps, 3)
    if exclusion_radius_px < 0:
        raise ValueError(f"exclusion_radius_px must be >= 0, got {exclusion_radius_px}")
    model = DEFAULT_CONFIDENCE_MODEL if confidence_model is None else confidence_model
    n, h, w = m.shape
    if n == 0:
        return []
    flat = m.reshape(n, -1)
    ys, xs = np.divmod(flat.argmax(axis=1), w)
    score = flat[np.arange(n), ys * w + xs]
    second = _second_scores(m, ys, xs, float(exclusion_radius_px))
    s1, s2 = _similarities(flat, score, second, similarity_range)
    ratio = np.maximum((s1 + 1e-6) / (s2 + 1e-6), 1.0)
    std = flat.std(axis=1)
    varies = std > 1e-9 * (1.0 + np.abs(score))  # rounding makes constant maps' std ~1e-17
    zscore = np.where(varies, (score - flat.mean(axis=1)) / np.where(varies, std, 1.0), 0.0)
    median = np.median(flat, axis=1)
    spread = np.array([_spread(m[i], ys[i], xs[i], median[i]) for i in range(n)])
    feats = np.column_stack([score, np.log(ratio), np.log1p(spread), zscore])
    conf = model.predict(feats)
    out = []
    for i in range(n):
        sx, sy = refine_peak(m[i], int(ys[i]), int(xs[i]))
        out.append(
            PeakStats(
                int(xs[i]),
                int(ys[i]),
                sx,
                sy,
                float(score[i]),
                float(second[i]),
                float(ratio[i]),
                float(spread[i]),
                float(zscore[i]),
                float(conf[i]),
            )  # fmt: skip
        )
    return out


def analyse_map(
    cmap: np.ndarray,
    exclusion_radius_px: int = 4,
    confidence_model: ConfidenceModel | None = None,
    similarity_range: tuple[float, float] | None = (-1.0, 1.0),
) -> PeakStats:
    """Peak statistics and confidence of one correspondence map ``cmap (h, w)``.

    See :func:`analyse_maps` for the arguments and errors.
    """
    m = _check_maps(cmap, 2)
    return analyse_maps(m[None], exclusion_radius_px, confidence_model, similarity_range)[0]


def map_features(stats_or_maps: Sequence[PeakStats] | np.ndarray) -> np.ndarray:
    """Feature matrix ``(N, 4)`` over :data:`FEATURE_NAMES` for a confidence model.

    Args:
        stats_or_maps: a sequence of :class:`PeakStats`, one map ``(h, w)`` or maps
            ``(N, h, w)`` (analysed with the default exclusion radius).

    Returns:
        ``(N, 4) float64``: score, log ratio, log(1 + spread_px), peak z-score.
    """
    if isinstance(stats_or_maps, np.ndarray):
        maps = stats_or_maps[None] if stats_or_maps.ndim == 2 else stats_or_maps
        stats: Sequence[PeakStats] = analyse_maps(maps)
    else:
        stats = stats_or_maps
    rows = [(s.score, np.log(s.ratio), np.log1p(s.spread_px), s.peak_zscore) for s in stats]
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURE_NAMES))


def _check_labels(scores: np.ndarray, correct: np.ndarray, name: str) -> tuple[np.ndarray, ...]:
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(correct)
    if c.dtype != bool and not np.isin(c, (0, 1)).all():
        raise ValueError("correct must be booleans (or 0/1), one per match")
    c = c.astype(bool)
    if len(s) != len(c) or c.ndim != 1 or not np.isfinite(s).all():
        raise ValueError(
            f"{name} and correct must be finite and of equal length N, got shapes {s.shape} and "
            f"{c.shape}"
        )
    return s, c


def fit_confidence_model(
    features: np.ndarray, correct: np.ndarray, l2: float = 1e-2
) -> ConfidenceModel:
    """Fit a logistic :class:`ConfidenceModel` by Newton's method (IRLS), deterministically.

    Features are standardised internally (the penalty acts on standardised weights) and the
    result is folded back into weights on the raw features.

    Args:
        features: ``(N, 4) float64`` from :func:`map_features`.
        correct: ``(N,) bool``, whether each match was correct.
        l2: ridge penalty on the standardised weights (> 0 keeps separable data finite).

    Returns:
        The fitted model.

    Raises:
        ValueError: malformed inputs, or only correct (or only wrong) examples.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != len(FEATURE_NAMES):
        raise ValueError(f"features must be (N, {len(FEATURE_NAMES)}), got {f.shape}")
    _, c = _check_labels(f[:, 0], correct, "features")
    if not np.isfinite(f).all() or c.all() or not c.any() or l2 < 0:
        raise ValueError(
            "need finite features, l2 >= 0, and both correct and wrong matches to calibrate "
            f"(got {int(c.sum())} correct of {len(c)})"
        )
    mu, sd = f.mean(axis=0), f.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    x = np.column_stack([np.ones(len(f)), (f - mu) / sd])
    beta = np.zeros(x.shape[1])
    beta[0] = np.log(c.mean() / (1 - c.mean()))
    penalty = np.full(x.shape[1], l2 * len(f))
    penalty[0] = 1e-9 * len(f)

    def loss(b: np.ndarray) -> float:
        z = x @ b
        return float(np.sum(np.logaddexp(0.0, z) - c * z) + 0.5 * np.sum(penalty * b * b))

    for _ in range(100):
        p = _stable_sigmoid(x @ beta)
        grad = x.T @ (p - c) + penalty * beta
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-12)
        step = np.linalg.solve(hess, grad)
        current, t = loss(beta), 1.0
        while t > 1e-6 and loss(beta - t * step) > current:  # damped Newton: never go uphill
            t *= 0.5
        beta = beta - t * step
        if np.abs(t * step).max() < 1e-10:
            break
    weights = beta[1:] / sd
    return ConfidenceModel(tuple(weights.tolist()), float(beta[0] - weights @ mu))


def ranking_auc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """ROC AUC: the probability that a correct match outranks a wrong one (ties count 1/2).

    Raises:
        ValueError: without at least one correct and one wrong match.
    """
    s, c = _check_labels(confidence, correct, "confidence")
    n_pos, n_neg = int(c.sum()), int((~c).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs correct and wrong matches, got {n_pos} and {n_neg}")
    ranks = rankdata(s)
    return float((ranks[c].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def precision_at_thresholds(
    confidence: np.ndarray, correct: np.ndarray, thresholds: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and kept fraction of the matches with ``confidence >= t``, per threshold.

    Returns:
        ``(precision, kept_fraction)``, each ``(T,) float64``; precision is NaN where no
        match is kept.
    """
    s, c = _check_labels(confidence, correct, "confidence")
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    kept = s[None, :] >= t[:, None]  # (T, N)
    n_kept = kept.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_kept > 0, (kept & c[None]).sum(axis=1) / n_kept, np.nan)
    frac = n_kept / len(s) if len(s) else np.zeros(len(t))
    return precision.astype(np.float64), np.asarray(frac, dtype=np.float64)
