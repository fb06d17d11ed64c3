"""2-D transforms between point sets (src -> dst), least-squares fitting and RANSAC.

Kinds (see :data:`KINDS`):

* ``"shift"``: ``dst = src + t``;
* ``"affine"`` / ``"poly1"``: ``dst = A src + t`` (same model; ``affine`` is the usual name,
  ``poly1`` the polynomial family's first member);
* ``"poly2"``, ``"poly3"``: bivariate polynomials of total degree 2 and 3;
* ``"tps"``: thin-plate spline (affine part + radial basis ``r^2 log r`` on the fit's points),
  interpolating by default, smoothing with ``tps_regularization > 0``.

Coordinates are normalised (centred on the mean, scaled to unit RMS radius) on both sides
before fitting, so polynomial fits are well conditioned for coordinates in the 10^4 px range.
Points are ``(N, 2) float64`` ``(x, y)`` in any frame (pixels or map units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KINDS: tuple[str, ...] = ("shift", "affine", "poly1", "poly2", "poly3", "tps")
_MIN_POINTS = {"shift": 1, "affine": 3, "poly1": 3, "poly2": 6, "poly3": 10, "tps": 3}
_DEGREE = {"affine": 1, "poly1": 1, "poly2": 2, "poly3": 3, "tps": 1}
_COND_LIMIT = 1e10  # design matrices worse than this are "degenerate"
_TPS_SOLVE_TOL = 1e-7  # max residual of the solved TPS system, normalised dst units
_APPLY_CHUNK = 65536  # points per chunk when evaluating a transform
_APPLY_KERNEL_BUDGET = 1 << 21  # TPS: entries of the (chunk, K) kernel per chunk (~16 MB)


def min_points(kind: str) -> int:
    """Smallest number of point pairs that determines a transform of ``kind``."""
    _check_kind(kind)
    return _MIN_POINTS[kind]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown transform kind {kind!r}; choose one of {KINDS}")


def _monomials(xy_n: np.ndarray, degree: int) -> np.ndarray:
    """Design matrix ``(N, M)`` of ``x^i y^j``, ``i + j <= degree``, ordered by total degree."""
    x, y = xy_n[:, 0], xy_n[:, 1]
    cols = [x ** (d - j) * y**j for d in range(degree + 1) for j in range(d + 1)]
    return np.stack(cols, axis=1)


def _tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Thin-plate kernel ``U(r) = r^2 log r`` between ``a (N, 2)`` and ``b (K, 2)``."""
    r2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = 0.5 * r2 * np.log(r2)
    u[r2 == 0.0] = 0.0
    return u


def _normalisation(xy: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Centre ``(2,)`` and scale (RMS radius, 1 when the points coincide) of a point set."""
    centre = np.average(xy, axis=0, weights=weights)
    scale = float(np.sqrt(np.average(((xy - centre) ** 2).sum(axis=1), weights=weights)))
    return centre, (scale if scale > 0 and np.isfinite(scale) else 1.0)


@dataclass
class Transform:
    """A fitted 2-D transform; evaluate it with :meth:`apply`.

    Attributes:
        kind: one of :data:`KINDS`.
        coeffs: ``(M, 2)`` polynomial coefficients mapping normalised src to normalised dst
            (``shift``: ``(1, 2)`` translation in dst units, centres 0 and scales 1).
        src_centre: ``(2,)`` normalisation centre of src.
        src_scale: normalisation scale of src.
        dst_centre: ``(2,)`` normalisation centre of dst.
        dst_scale: normalisation scale of dst.
        control_n: ``(K, 2)`` normalised src control points (``tps`` only).
        tps_weights: ``(K, 2)`` radial-basis weights (``tps`` only).
        tps_regularization: smoothing used in the fit (``tps`` only, 0 = interpolating).
    """

    kind: str
    coeffs: np.ndarray
    src_centre: np.ndarray = field(default_factory=lambda: np.zeros(2))
    src_scale: float = 1.0
    dst_centre: np.ndarray = field(default_factory=lambda: np.zeros(2))
    dst_scale: float = 1.0
    control_n: np.ndarray | None = None
    tps_weights: np.ndarray | None = None
    tps_regularization: float = 0.0

    def __post_init__(self) -> None:
        """Validate the kind and coerce the parameters to float arrays."""
        _check_kind(self.kind)
        self.coeffs = np.asarray(self.coeffs, dtype=np.float64).reshape(-1, 2)
        self.src_centre = np.asarray(self.src_centre, dtype=np.float64).reshape(2)
        self.dst_centre = np.asarray(self.dst_centre, dtype=np.float64).reshape(2)
        if self.kind == "tps" and (self.control_n is None or self.tps_weights is None):
            raise ValueError("a 'tps' transform needs control_n and tps_weights")

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """Map points ``xy (N, 2)`` from the src frame to the dst frame, ``(N, 2) float64``."""
        pts = _as_points(xy, "xy")
        if self.kind == "shift":
            return pts + self.coeffs[0]
        out = np.empty_like(pts)
        chunk = _APPLY_CHUNK
        if self.control_n is not None:  # the kernel's temporaries grow with K: bound them
            chunk = max(1, min(chunk, _APPLY_KERNEL_BUDGET // max(len(self.control_n), 1)))
        for start in range(0, len(pts), chunk):
            xy_n = (pts[start : start + chunk] - self.src_centre) / self.src_scale
            val = _monomials(xy_n, _DEGREE[self.kind]) @ self.coeffs
            if self.control_n is not None and self.tps_weights is not None:  # tps
                val += _tps_kernel(xy_n, self.control_n) @ self.tps_weights
            out[start : start + chunk] = val * self.dst_scale + self.dst_centre
        return out

    def affine_matrix(self) -> np.ndarray:
        """The ``(2, 3)`` matrix ``[A | t]`` (dst = A src + t) of a shift/affine/poly1."""
        if self.kind == "shift":
            return np.column_stack([np.eye(2), self.coeffs[0]])
        if self.kind not in ("affine", "poly1"):
            raise ValueError(f"a {self.kind!r} transform has no affine matrix")
        c = self.coeffs  # rows: 1, x, y of the normalised src
        a = (self.dst_scale / self.src_scale) * c[1:3].T
        t = self.dst_scale * c[0] + self.dst_centre - a @ self.src_centre
        return np.column_stack([a, t])

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (lists and floats only); inverse of :meth:`from_dict`."""
        d: dict[str, Any] = {
            "kind": self.kind,
            "coeffs": np.asarray(self.coeffs, dtype=float).tolist(),
            "src_centre": np.asarray(self.src_centre, dtype=float).tolist(),
            "src_scale": float(self.src_scale),
            "dst_centre": np.asarray(self.dst_centre, dtype=float).tolist(),
            "dst_scale": float(self.dst_scale),
        }
        if self.kind == "tps":
            d["control_n"] = np.asarray(self.control_n, dtype=float).tolist()
            d["tps_weights"] = np.asarray(self.tps_weights, dtype=float).tolist()
            d["tps_regularization"] = float(self.tps_regularization)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transform:
        """Rebuild a transform written by :meth:`to_dict`."""
        kind = d.get("kind")
        _check_kind(str(kind))
        tps = kind == "tps"
        return cls(
            kind=str(kind),
            coeffs=np.asarray(d["coeffs"], dtype=np.float64).reshape(-1, 2),
            src_centre=np.asarray(d["src_centre"], dtype=np.float64).reshape(2),
            src_scale=float(d["src_scale"]),
            dst_centre=np.asarray(d["dst_centre"], dtype=np.float64).reshape(2),
            dst_scale=float(d["dst_scale"]),
            control_n=np.asarray(d["control_n"], dtype=np.float64).reshape(-1, 2) if tps else None,
            tps_weights=np.asarray(d["tps_weights"], dtype=np.float64).reshape(-1, 2)
            if tps
            else None,
            tps_regularization=float(d.get("tps_regularization", 0.0)),
        )


def _as_points(xy: np.ndarray, name: str) -> np.ndarray:
    pts = np.asarray(xy, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) of (x, y) points, got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError(f"{name} contains NaN or Inf; drop those points before fitting")
    return pts


def _check_pairs(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    s, d = _as_points(src, "src"), _as_points(dst, "dst")
    if len(s) != len(d):
        raise ValueError(f"src and dst must pair up, got {len(s)} and {len(d)} points")
    if weights is None:
        return s, d, None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(s),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(
            f"weights must be {len(s)} finite non-negative values with a positive sum, got "
            f"shape {w.shape}"
        )
    return s, d, w


def _solve_poly(design: np.ndarray, rhs: np.ndarray, kind: str, n: int) -> np.ndarray:
    """Least squares with a conditioning check that names the fix."""
    sv = np.linalg.svd(design, compute_uv=False)
    if sv[-1] <= sv[0] / _COND_LIMIT:
        raise ValueError(
            f"degenerate point configuration for a {kind!r} transform ({n} points): the points "
            f"are collinear, coincident or too clustered; a {kind!r} needs at least "
            f"{_MIN_POINTS[kind]} well-spread points (not all on one line), or use a simpler kind"
        )
    return np.linalg.lstsq(design, rhs, rcond=None)[0]


def fit_transform(
    src: np.ndarray,
    dst: np.ndarray,
    kind: str,
    weights: np.ndarray | None = None,
    tps_regularization: float = 0.0,
) -> Transform:
    """Least-squares fit of a ``kind`` transform mapping ``src`` onto ``dst``.

    Args:
        src: ``(N, 2) float64`` source points ``(x, y)``.
        dst: ``(N, 2) float64`` destination points, paired with ``src``.
        kind: one of :data:`KINDS`.
        weights: optional ``(N,)`` non-negative weights (e.g. match confidences). For ``tps``
            they scale the per-point smoothing (``tps_regularization / w``) and have no effect
            when interpolating.
        tps_regularization: ``tps`` smoothing in normalised units (0 = exact interpolation).

    Returns:
        The fitted :class:`Transform`.

    Raises:
        ValueError: too few points (the message says how many are needed), a degenerate
            (collinear/coincident) configuration, or malformed inputs.
    """
    _check_kind(kind)
    s, d, w = _check_pairs(src, dst, weights)
    n_used = len(s) if w is None else int((w > 0).sum())
    if n_used < _MIN_POINTS[kind]:
        raise ValueError(
            f"a {kind!r} transform needs at least {_MIN_POINTS[kind]} point pairs (with "
            f"positive weight), got {n_used}; add tie points or choose a simpler kind"
        )
    if kind == "shift":
        t = np.average(d - s, axis=0, weights=w)
        return Transform(kind, coeffs=t.reshape(1, 2))
    sc, ss = _normalisation(s, w)
    dc, ds = _normalisation(d, w)
    s_n, d_n = (s - sc) / ss, (d - dc) / ds
    if kind == "tps":
        return _fit_tps(s_n, d_n, w, float(tps_regularization), (sc, ss, dc, ds))
    design = _monomials(s_n, _DEGREE[kind])
    sw = np.ones(len(s)) if w is None else np.sqrt(w)
    coeffs = _solve_poly(design * sw[:, None], d_n * sw[:, None], kind, n_used)
    return Transform(kind, coeffs, sc, ss, dc, ds)


def _fit_tps(
    s_n: np.ndarray,
    d_n: np.ndarray,
    w: np.ndarray | None,
    lam: float,
    norm: tuple[np.ndarray, float, np.ndarray, float],
) -> Transform:
    """Solve the TPS system ``[[K + lam/w I, P], [P^T, 0]] [W; a] = [d; 0]``."""
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"tps_regularization must be finite and >= 0, got {lam}")
    if w is not None:  # zero-weight points carry no information
        keep = w > 0
        s_n, d_n, w = s_n[keep], d_n[keep], w[keep]
    n = len(s_n)
    p = _monomials(s_n, 1)
    _solve_poly(p, d_n, "tps", n)  # collinearity check of the affine part
    if lam == 0.0 and len(np.unique(np.round(s_n, 12), axis=0)) < n:
        raise ValueError(
            "an interpolating 'tps' cannot fit duplicate src points; remove duplicates or set "
            "tps_regularization > 0"
        )
    ridge = None if lam == 0 else lam / (np.ones(n) if w is None else w)
    system = _tps_system(s_n, ridge)
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = d_n
    sol = np.linalg.solve(system, rhs)
    # Near-duplicate src points with different dst make the system so ill-conditioned that
    # its solution no longer satisfies it: the spline then misses its own control points (by
    # 380 px for a pair 1e-6 px apart), where an exact duplicate is refused above.
    if np.abs(system @ sol - rhs).max() > _TPS_SOLVE_TOL * max(1.0, float(np.abs(d_n).max())):
        raise ValueError(
            "the 'tps' system is numerically singular: some src points nearly coincide; "
            "merge or remove near-duplicate tie points, or set tps_regularization > 0"
        )
    sc, ss, dc, ds = norm
    return Transform("tps", sol[n:], sc, ss, dc, ds, s_n.copy(), sol[:n], lam)


def _tps_system(s_n: np.ndarray, ridge: np.ndarray | None = None) -> np.ndarray:
    """The TPS matrix ``[[K + diag(ridge), P], [P^T, 0]]`` of normalised control points."""
    n = len(s_n)
    k = _tps_kernel(s_n, s_n)
    if ridge is not None:
        k[np.diag_indices(n)] += ridge
    p = _monomials(s_n, 1)
    system = np.zeros((n + 3, n + 3))
    system[:n, :n], system[:n, n:], system[n:, :n] = k, p, p.T
    return system


def loo_residuals(src: np.ndarray, dst: np.ndarray, kind: str) -> np.ndarray:
    """Leave-one-out residuals ``(N, 2)``: each point's ``fit_without_it(src) - dst``.

    The fit is the unweighted ``kind`` fit on these pairs. Closed forms, one fit and no
    refits: the hat matrix for the polynomial kinds (``e_i / (1 - h_ii)``), Rippa's formula
    for the interpolating thin-plate spline (``c_i / (M^-1)_ii``), whose own residuals are 0
    by construction. A point that alone
    determines the fit (``h_ii = 1``) gets NaN.
    """
    s, d, _ = _check_pairs(src, dst, None)
    transform = fit_transform(s, d, kind)
    n = len(s)
    if kind == "shift":
        if n < 2:
            return np.full((n, 2), np.nan)
        return (transform.apply(s) - d) * n / (n - 1)
    s_n = (s - transform.src_centre) / transform.src_scale
    if kind == "tps":
        inv = np.linalg.inv(_tps_system(s_n))
        rhs = np.zeros((n + 3, 2))
        rhs[:n] = (d - transform.dst_centre) / transform.dst_scale
        coef = inv @ rhs
        diag = np.diag(inv)[:n, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            loo = np.where(np.abs(diag) > 1e-12, -coef[:n] / diag, np.nan)  # fit - observed
        return loo * transform.dst_scale
    design = _monomials(s_n, _DEGREE[kind])
    q, _ = np.linalg.qr(design)
    h = (q**2).sum(axis=1)[:, None]
    resid = transform.apply(s) - d
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(1.0 - h > 1e-9, resid / (1.0 - h), np.nan)


def prediction_error(src: np.ndarray, dst: np.ndarray, kind: str, xy: np.ndarray) -> np.ndarray:
    """Predicted standard error ``(M,)`` of the unweighted ``kind`` fit of src -> dst at ``xy``.

    The least-squares parameters' covariance, propagated to each point of ``xy (M, 2)`` (src
    frame): ``sigma * sqrt(2 h(xy))`` with ``h(xy) = m^T (X^T X)^-1 m`` the leverage of the
    point's monomials ``m`` in the normalised design ``X`` of ``src``, and ``sigma^2 =
    RSS / (2 (N - M))`` the residuals' variance per coordinate (``M`` parameters per
    coordinate). It is the root mean square length of ``fit(xy) - truth(xy)`` over the
    noise, in dst units, for an unbiased model. Where the points only just determine the fit
    (on a line, on two crossing lines, bunched in a corner), ``h`` is large away from them:
    the fit there is set by the noise off that layout, which its residuals do not show.

    Returns:
        ``(M,) float64``; NaN for ``tps`` (an interpolating spline leaves no residual to
        estimate ``sigma`` from: judge it by :func:`loo_residuals`) and when ``N <= M``.
    """
    s, d, _ = _check_pairs(src, dst, None)
    pts = _as_points(xy, "xy")
    transform = fit_transform(s, d, kind)
    n_par = 1 if kind == "shift" else (_DEGREE[kind] + 1) * (_DEGREE[kind] + 2) // 2
    if kind == "tps" or len(s) <= n_par:
        return np.full(len(pts), np.nan)
    sigma = math.sqrt(float(((transform.apply(s) - d) ** 2).sum()) / (2 * (len(s) - n_par)))
    if kind == "shift":
        return np.full(len(pts), sigma * math.sqrt(2.0 / len(s)))
    degree = _DEGREE[kind]
    design = _monomials((s - transform.src_centre) / transform.src_scale, degree)
    at = _monomials((pts - transform.src_centre) / transform.src_scale, degree)
    _, sv, vt = np.linalg.svd(design, full_matrices=False)  # (X^T X)^-1 = V S^-2 V^T
    lev = ((at @ vt.T / sv) ** 2).sum(axis=1)
    return sigma * np.sqrt(2.0 * lev)


def residuals(transform: Transform, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Euclidean distances ``(N,) float64`` between ``transform(src)`` and ``dst``."""
    s, d, _ = _check_pairs(src, dst, None)
    return np.hypot(*(transform.apply(s) - d).T)


@dataclass
class RansacResult:
    """Outcome of :func:`ransac`.

    Attributes:
        transform: final least-squares fit on the inliers. Its ``kind`` is the sampling model
            (``"affine"``) when there were too few inliers to fit the requested higher kind, and
            an identity ``"shift"`` when no hypothesis had any support (``ok`` is then False).
        inliers: ``(N,) bool``, residual below the threshold under ``transform``.
        residuals: ``(N,) float64`` residuals of all points under ``transform``.
        rmse_px: root mean square residual of the inliers (``inf`` without inliers).
        n_iterations: hypotheses drawn.
        ok: the requested kind was fitted and at least ``min_inliers`` inliers were found.
    """

    transform: Transform
    inliers: np.ndarray
    residuals: np.ndarray
    rmse_px: float
    n_iterations: int
    ok: bool = True


def _affine_hypotheses(src: np.ndarray, dst: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Exact affines ``(B, 2, 3)`` through point triples ``idx (B, 3)``; NaN when collinear."""
    a = np.concatenate([src[idx], np.ones(idx.shape + (1,))], axis=2)  # (B, 3, 3)
    b = dst[idx]  # (B, 3, 2)
    span = np.abs(src[idx] - src[idx][:, :1]).max(axis=(1, 2)) + 1e-300
    det = np.linalg.det(a) / span**2
    ok = np.abs(det) > 1e-6
    out = np.full((len(idx), 2, 3), np.nan)
    if ok.any():
        out[ok] = np.linalg.solve(a[ok], b[ok]).transpose(0, 2, 1)
    return out


def _sample(rng: np.random.Generator, n: int, m: int, count: int) -> np.ndarray:
    """``count`` minimal samples of ``m`` distinct indices from ``range(n)``, ``(count, m)``."""
    if n <= 64:
        return np.argsort(rng.random((count, n)), axis=1)[:, :m]
    return _sample_big(rng, n, m, count)


def _sample_big(rng: np.random.Generator, n: int, m: int, count: int) -> np.ndarray:
    idx = rng.integers(0, n, size=(count, m))
    for _ in range(100):  # redraw rows with repeated indices
        srt = np.sort(idx, axis=1)
        bad = (np.diff(srt, axis=1) == 0).any(axis=1)
        if not bad.any():
            break
        idx[bad] = rng.integers(0, n, size=(int(bad.sum()), m))
    return idx


def _search(
    src: np.ndarray,
    dst: np.ndarray,
    kind: str,
    threshold: float,
    rng: np.random.Generator,
    max_iterations: int,
    confidence: float,
) -> tuple[np.ndarray, int]:
    """MSAC search with an adaptive number of hypotheses; returns (inlier mask, iterations)."""
    n, m = len(src), (1 if kind == "shift" else 3)
    best_cost, best_inl = np.inf, np.zeros(n, dtype=bool)
    needed, drawn, chunk = max_iterations, 0, 64
    while drawn < min(needed, max_iterations):
        count = min(chunk, max_iterations - drawn)
        idx = _sample(rng, n, m, count)
        drawn += count
        if kind == "shift":
            pred = src[None] + (dst[idx[:, 0]] - src[idx[:, 0]])[:, None, :]
        else:
            h = _affine_hypotheses(src, dst, idx)
            pred = np.einsum("bij,nj->bni", h[:, :, :2], src) + h[:, None, :, 2]
        r2 = ((pred - dst[None]) ** 2).sum(axis=2)
        r2 = np.where(np.isnan(r2), np.inf, r2)
        cost = np.minimum(r2, threshold**2).sum(axis=1)
        b = int(np.argmin(cost))
        if cost[b] < best_cost:
            best_cost, best_inl = float(cost[b]), r2[b] < threshold**2
            frac = best_inl.mean()
            if frac >= 1.0:
                needed = drawn
            elif frac > 0:
                denom = math.log1p(-(frac**m))
                needed = math.ceil(math.log1p(-confidence) / denom) if denom < 0 else needed
    return best_inl, drawn


def _refine(
    src: np.ndarray,
    dst: np.ndarray,
    kind: str,
    inliers: np.ndarray,
    threshold: float,
    weights: np.ndarray | None,
) -> tuple[Transform, np.ndarray]:
    """Least-squares refit on the inliers, re-evaluated until the set is stable (<= 10 fits)."""
    tf = fit_transform(
        src[inliers], dst[inliers], kind, None if weights is None else weights[inliers]
    )
    for _ in range(9):
        new = residuals(tf, src, dst) < threshold
        if (new == inliers).all() or new.sum() < _MIN_POINTS[kind]:
            break
        try:
            tf_new = fit_transform(
                src[new], dst[new], kind, None if weights is None else weights[new]
            )
        except ValueError:  # the new set is degenerate: keep the last good fit
            break
        tf, inliers = tf_new, new
    return tf, inliers


def ransac(
    src: np.ndarray,
    dst: np.ndarray,
    kind: str,
    threshold_px: float,
    rng: np.random.Generator,
    max_iterations: int = 2000,
    confidence: float = 0.999,
    min_inliers: int | None = None,
    weights: np.ndarray | None = None,
) -> RansacResult:
    """Robust fit of a ``kind`` transform with RANSAC (MSAC scoring, adaptive iterations).

    Minimal samples are drawn for a shift (1 pair) or an affine (3 pairs); for ``poly1`` the
    affine search is used directly, for ``poly2``/``poly3``/``tps`` the affine inliers are
    refitted with the requested kind and re-checked against the threshold. The final model is
    a least-squares fit on the inliers, after which the inliers are re-evaluated.

    Args:
        src: ``(N, 2) float64`` source points.
        dst: ``(N, 2) float64`` destination points, paired with ``src``.
        kind: one of :data:`KINDS`.
        threshold_px: inlier residual threshold, in dst units (> 0).
        rng: random generator; the result is a deterministic function of its state.
        max_iterations: upper bound on the number of hypotheses.
        confidence: probability of drawing at least one all-inlier sample (0 < c < 1).
        min_inliers: inliers needed for ``result.ok`` (default ``min_points(kind)``).
        weights: optional ``(N,)`` non-negative weights for the least-squares refits.

    Returns:
        A :class:`RansacResult`; returned even with few inliers (check ``ok``/``inliers``).

    Raises:
        ValueError: fewer points than ``kind`` needs, or invalid arguments.
    """
    _check_kind(kind)
    s, d, w = _check_pairs(src, dst, weights)
    need = max(_MIN_POINTS[kind], 1 if kind == "shift" else 3)
    if len(s) < need:
        raise ValueError(
            f"RANSAC for a {kind!r} transform needs at least {need} point pairs, got {len(s)}; "
            "detect more keypoints, lower the confidence filter, or choose a simpler kind"
        )
    if not (np.isfinite(threshold_px) and threshold_px > 0):
        raise ValueError(f"threshold_px must be a positive number, got {threshold_px}")
    if not 0 < confidence < 1 or max_iterations < 1:
        raise ValueError("need 0 < confidence < 1 and max_iterations >= 1")
    base = "shift" if kind == "shift" else "affine"
    # Centre both sets (translation only, thresholds unchanged) for well-conditioned samples.
    inl, n_iter = _search(
        s - s.mean(axis=0), d - d.mean(axis=0), base, threshold_px, rng, max_iterations, confidence
    )
    min_in = _MIN_POINTS[kind] if min_inliers is None else int(min_inliers)
    fitted = "none"
    tf = Transform("shift", np.zeros((1, 2)))  # identity when no hypothesis had support
    if inl.sum() >= _MIN_POINTS[base]:
        try:
            tf, inl = _refine(s, d, base, inl, threshold_px, w)
            fitted = base
        except ValueError:  # e.g. every inlier has zero weight: report failure, not raise
            pass
        if fitted == base and kind != base and inl.sum() >= _MIN_POINTS[kind]:
            try:
                tf, inl = _refine(s, d, kind, inl, threshold_px, w)
                fitted = kind
            except ValueError:  # degenerate for the higher kind: keep the affine
                pass
    res = residuals(tf, s, d)
    inl = res < threshold_px
    rmse = float(np.sqrt(np.mean(res[inl] ** 2))) if inl.any() else float("inf")
    ok = fitted == kind and int(inl.sum()) >= min_in
    return RansacResult(tf, inl.astype(bool), res, rmse, n_iter, ok)
