"""Classical template matchers: the peers the learned matcher is measured against.

Every method has the signature of the learned matcher's correspondence map::

    method(template (T, T) float, region (S, S) float) -> (S - T + 1, S - T + 1) float32

with ``map[dy, dx]`` the similarity of the template with ``region[dy:dy + T, dx:dx + T]``
(window offset, see ``core.__init__``); higher is better. Rectangular inputs work as well
(``(th, tw)`` in ``(sh, sw)`` gives ``(sh - th + 1, sw - tw + 1)``). All maps are computed
exactly over all offsets with FFTs (``scipy.fft``), no sub-sampling.

* :func:`ncc_map` zero-mean normalised cross-correlation (Pearson r per window, in [-1, 1]).
* :func:`mutual_information_map` histogram mutual information (nats), exact joint histograms
  for every offset from FFT correlations of bin indicator images.
* :func:`phase_correlation_map` the normalised cross-power spectrum (phase-only correlation).
* :func:`cfog_map` CFOG (Ye et al. 2019, "Fast and robust matching for multimodal remote
  sensing image registration", IEEE TGRS 57(11)): channel features of orientated gradients,
  compared by SSD evaluated in the frequency domain; the map is the negative SSD.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from sar_optical_matcher.core.correlation import box_sums, correlate_valid

MapFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _check_pair(template: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a template/region pair and return both as float64."""
    # Masked pixels become NaN (refused below): np.asarray alone would match their hidden values.
    t = np.ma.filled(np.ma.asarray(template, dtype=np.float64), np.nan)
    r = np.ma.filled(np.ma.asarray(region, dtype=np.float64), np.nan)
    if t.ndim != 2 or r.ndim != 2:
        raise ValueError(
            f"template and region must be 2-D single-band arrays, got shapes {t.shape} and "
            f"{r.shape}; pass one band (e.g. luminance) of each image"
        )
    if t.shape[0] > r.shape[0] or t.shape[1] > r.shape[1] or min(t.shape) < 2:
        raise ValueError(
            f"template {t.shape} must be at least 2x2 and fit inside the region {r.shape}; "
            "use a larger search region or a smaller template"
        )
    if not (np.isfinite(t).all() and np.isfinite(r).all()):
        raise ValueError(
            "template and region must be finite and unmasked; replace NaN/nodata/masked "
            "pixels first (e.g. with the patch mean, as core.preprocessing.preprocess does)"
        )
    return t, r


def _centred_unit(a: np.ndarray) -> np.ndarray:
    """``a`` minus its mean, scaled to a largest magnitude of 1 (zeros when ``a`` is constant).

    Constant means constant up to the rounding of the mean (1e-12 of ``a``'s magnitude), so
    that a flat input with a large offset does not become unit-scaled rounding noise.
    """
    c = a - a.mean()
    peak = float(np.abs(c).max())
    if peak <= 1e-12 * float(np.abs(a).max()):
        return np.zeros_like(c)
    return c / peak


def ncc_map(template: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Zero-mean normalised cross-correlation of the template with every region window.

    Numerator by FFT correlation with the zero-mean template; window means and energies by
    integral images. Windows (or a template) without variance score 0. Both inputs are
    centred and scaled to a largest magnitude of 1 first, so that the map does not depend on
    their units or offsets.

    Args:
        template: (T_h, T_w) float.
        region: (S_h, S_w) float.

    Returns:
        (S_h - T_h + 1, S_w - T_w + 1) float32 Pearson correlation in [-1, 1].
    """
    t, r = _check_pair(template, region)
    # Centring conditions the integral-image energies; scaling makes the variance floor below
    # relative (it was absolute: data in small units, values ~1e-8, scored 0 everywhere).
    r, t0 = _centred_unit(r), _centred_unit(t)
    n = t.size
    num = correlate_valid(r, t0)
    s1 = box_sums(r, *t.shape)
    s2 = box_sums(r * r, *t.shape)
    var_r = np.maximum(s2 - s1 * s1 / n, 0.0)
    den = np.sqrt(var_r * float((t0 * t0).sum()))
    tiny = 1e-12 * n  # |r|, |t0| <= 1: below this is integral-image rounding residue
    out = np.where(den > tiny, num / np.maximum(den, tiny), 0.0)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def phase_correlation_map(
    template: np.ndarray, region: np.ndarray, eps: float = 1e-3
) -> np.ndarray:
    """Phase correlation: the inverse FFT of the normalised cross-power spectrum.

    The zero-mean template is zero-padded to the region size; ``R = F(r) conj(F(t)) /
    (|F(r) conj(F(t))| + eps * mean|.|)``; the real part of ``ifft(R)`` at the valid offsets
    is the map (circular shifts that wrap a window are not returned). ``eps`` regularises
    frequencies without energy.

    Limit: whitening weighs every frequency alike, including those that the template's
    zero-padded borders and the region's wrap-around edges dominate, so on smooth images the
    peak can miss even an exact copy. Measured on exact 48 px copies at every 4th offset of a
    96 px region of Gaussian-smoothed white noise: 536 of 676 missed for a smoothing sigma of
    2 px, none for 1 px or for a multi-scale texture. Windowing the template (Hann) and the
    region (Tukey) only moves the limit (sigma 2 px solved, 4 px still mostly missed).

    Args:
        template: (T_h, T_w) float.
        region: (S_h, S_w) float.
        eps: relative regularisation of the spectrum magnitude (> 0).

    Returns:
        (S_h - T_h + 1, S_w - T_w + 1) float32, sharp peak at the matching offset.
    """
    t, r = _check_pair(template, region)
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    sh, sw = r.shape
    th, tw = t.shape
    cross = sfft.rfft2(r - r.mean()) * np.conj(sfft.rfft2(t - t.mean(), s=(sh, sw)))
    mag = np.abs(cross)
    cross /= mag + eps * max(float(mag.mean()), 1e-300)
    full = sfft.irfft2(cross, s=(sh, sw))
    return full[: sh - th + 1, : sw - tw + 1].astype(np.float32)


def _quantise(image: np.ndarray, bins: int) -> np.ndarray:
    """Uniform bins between the 0.5 and 99.5 percentiles (outliers clipped): (H, W) int."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.intp)
    q = np.floor((image - lo) / (hi - lo) * bins)
    return np.clip(q, 0, bins - 1).astype(np.intp)


def _entropy_terms(counts: np.ndarray) -> np.ndarray:
    """Elementwise ``c log c`` with ``0 log 0 = 0``."""
    return np.where(counts > 0, counts * np.log(np.maximum(counts, 1.0)), 0.0)


def mutual_information_map(template: np.ndarray, region: np.ndarray, bins: int = 32) -> np.ndarray:
    """Histogram mutual information of the template with every region window (exact).

    Each image is quantised into ``bins`` uniform bins over its own robust range. The joint
    count ``H_ij(d)`` at offset d is the valid correlation of the indicator images
    ``[t == i]`` and ``[r == j]``, computed by FFT for all offsets at once and rounded to the
    exact integers; window marginals come from integral images. With n pixels per window,
    ``MI = log n + (sum_ij H log H - sum_i A_i log A_i - sum_j B_j log B_j) / n``.

    Args:
        template: (T_h, T_w) float.
        region: (S_h, S_w) float.
        bins: histogram bins per image (2..256; cost grows with ``bins**2``).

    Returns:
        (S_h - T_h + 1, S_w - T_w + 1) float32 mutual information in nats (>= 0).
    """
    t, r = _check_pair(template, region)
    if not 2 <= bins <= 256:
        raise ValueError(f"bins must be in 2..256, got {bins}")
    sh, sw = r.shape
    th, tw = t.shape
    n = t.size
    qt, qr = _quantise(t, bins), _quantise(r, bins)
    r_onehot = (qr[None] == np.arange(bins)[:, None, None]).astype(np.float32)
    # float32 FFTs: counts <= n stay within ~1e-3 of their integers (checked against float64
    # and brute-force histograms in the tests), so rounding recovers them exactly at half cost.
    fr = sfft.rfft2(r_onehot)  # (bins, S_h, S_w // 2 + 1) complex64
    joint_sum = np.zeros((sh - th + 1, sw - tw + 1))
    for i in np.unique(qt):
        ft = sfft.rfft2((qt == i).astype(np.float32), s=(sh, sw))
        h = sfft.irfft2(fr * np.conj(ft)[None], s=(sh, sw))[:, : sh - th + 1, : sw - tw + 1]
        joint_sum += _entropy_terms(np.rint(h).astype(np.float64)).sum(axis=0)
    region_sum = sum(_entropy_terms(np.rint(box_sums(r_onehot[j], th, tw))) for j in range(bins))
    template_sum = float(_entropy_terms(np.bincount(qt.ravel()).astype(np.float64)).sum())
    mi = np.log(n) + (joint_sum - region_sum - template_sum) / n
    return np.maximum(mi, 0.0).astype(np.float32)


def cfog_features(
    image: np.ndarray, n_orientations: int = 9, sigma_px: float = 0.8, eps: float = 1e-6
) -> np.ndarray:
    """CFOG descriptors of every pixel (Ye et al. 2019, section II).

    Choices, following the paper's description:
        * gradients ``g_x, g_y`` by central differences ([-1, 0, 1] / 2) inside, one-sided
          differences ([-1, 1]) on the first and last row and column (``np.gradient``);
        * ``n_orientations`` orientations ``theta_k = k * 180 deg / n`` over [0, 180) deg; the
          oriented gradient is ``|cos(theta) g_x + sin(theta) g_y|`` (absolute value, so that
          the gradient reversals between SAR and optical do not matter, and 180 deg periodic);
        * 3-D Gaussian smoothing: a 2-D Gaussian (``sigma_px``) per channel, then the kernel
          [1, 2, 1] / 4 along the orientations (circular, the orientations wrap at 180 deg);
        * per-pixel L2 normalisation across the channels (``eps`` avoids 0 / 0 on flat areas).

    Args:
        image: (H, W) float.
        n_orientations: number of orientation channels (>= 2).
        sigma_px: spatial Gaussian sigma in pixels (>= 0).
        eps: normalisation floor, absolute: the default suits images in unit range (as the
            evaluation's percentile stretch gives them); rescale images in other units first
            (at values ~1e-8 the features flatten).

    Returns:
        (n_orientations, H, W) float64 features, unit length per pixel where gradients exist.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 2:
        raise ValueError(f"cfog_features expects a 2-D image of at least 2x2, got {img.shape}")
    if n_orientations < 2 or sigma_px < 0:
        raise ValueError("need n_orientations >= 2 and sigma_px >= 0")
    gy, gx = np.gradient(img)
    theta = np.arange(n_orientations) * np.pi / n_orientations
    feats = np.abs(np.cos(theta)[:, None, None] * gx + np.sin(theta)[:, None, None] * gy)
    if sigma_px > 0:
        feats = ndimage.gaussian_filter(feats, sigma=(0.0, sigma_px, sigma_px), mode="nearest")
    feats = (np.roll(feats, 1, axis=0) + 2.0 * feats + np.roll(feats, -1, axis=0)) / 4.0
    norm = np.sqrt((feats * feats).sum(axis=0))
    return feats / (norm + eps)


def cfog_map(
    template: np.ndarray, region: np.ndarray, n_orientations: int = 9, sigma_px: float = 0.8
) -> np.ndarray:
    """CFOG matching: negative SSD of CFOG descriptors, evaluated in the frequency domain.

    ``SSD(d) = sum_window |D_r|^2 - 2 sum_c corr(D_r,c, D_t,c)(d) + sum |D_t|^2``: the first
    term by an integral image, the second by FFT correlations summed over the channels (the
    paper's fast SSD), the third is constant. Features are computed on the template and on
    the whole region separately (the template cannot see beyond its borders). The map is
    ``-SSD / n`` (n pixels per window), so it lies in [-2, 0] and higher is better.

    Args:
        template: (T_h, T_w) float.
        region: (S_h, S_w) float.
        n_orientations: orientation channels (paper: 9).
        sigma_px: spatial smoothing sigma (paper: small, here 0.8 px).

    Returns:
        (S_h - T_h + 1, S_w - T_w + 1) float32 negative mean squared descriptor distance.
    """
    t, r = _check_pair(template, region)
    ft = cfog_features(t, n_orientations, sigma_px)
    fr = cfog_features(r, n_orientations, sigma_px)
    th, tw = t.shape
    energy_r = box_sums((fr * fr).sum(axis=0), th, tw)
    cross = correlate_valid(fr, ft)
    ssd = energy_r - 2.0 * cross + float((ft * ft).sum())
    return (-np.maximum(ssd, 0.0) / t.size).astype(np.float32)


METHODS: dict[str, MapFn] = {
    "ncc": ncc_map,
    "mi": mutual_information_map,
    "phase": phase_correlation_map,
    "cfog": cfog_map,
}

#: Value range of each method's map for the peak analysis (``core.peaks.analyse_maps``'s
#: ``similarity_range``): NCC and phase correlation are bounded by [-1, 1] (a regularised
#: cross-power spectrum has every magnitude < 1); mutual information (nats) and the negative
#: SSD have no fixed range, so each map's own min..max is used (None). A fixed (-1, 1) squeezed
#: their peak-to-second ratio towards 1 (MI 1.00-1.08 instead of 1.01-1.52 on synthetic pairs).
SIMILARITY_RANGE: dict[str, tuple[float, float] | None] = {
    "ncc": (-1.0, 1.0),
    "mi": None,
    "phase": (-1.0, 1.0),
    "cfog": None,
}
