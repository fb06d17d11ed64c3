"""Correspondence maps from latent code maps: the cosine of every window's code (numpy only).

A model's encoders map an image to a *code map* (C, H - r + 1, W - r + 1): the latent code at
every position, r being the encoder's receptive field. The descriptor of a T x T window whose
top-left corner is (x, y) is the k x k block of the code map starting there, k = T - r + 1,
flattened to C k^2 numbers and L2-normalised (``model.contract``). Two cases share this one
definition:

* k = 1 (r = T): the paper's vector code, one C-vector per window; the map is a dot product
  of unit vectors per position;
* k > 1: a spatial code map; the cosine of the template's block with every window's block is
  a normalised cross-correlation, computed for all offsets at once with FFTs (numerator) and an
  integral image (the windows' energies), exactly and without looping over windows.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy import ndimage


def correlate_valid(region: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Valid cross-correlation of region stacks with kernel stacks, summed over the stack.

    Args:
        region: (C, S_h, S_w) or (S_h, S_w) float.
        kernels: (C, T_h, T_w) or (T_h, T_w) float, same C as ``region``.

    Returns:
        (S_h - T_h + 1, S_w - T_w + 1), ``out[dy, dx] = sum_c sum_ij region[c, dy + i, dx + j]
        * kernels[c, i, j]``; float32 for float32 inputs, else float64.
    """
    r = region[None] if region.ndim == 2 else region
    k = kernels[None] if kernels.ndim == 2 else kernels
    sh, sw = r.shape[-2:]
    th, tw = k.shape[-2:]
    # Circular correlation at size (S_h, S_w) is exact for offsets 0..S-T: no window wraps.
    fr = sfft.rfft2(r, s=(sh, sw))
    fk = sfft.rfft2(k, s=(sh, sw))
    full = sfft.irfft2((fr * np.conj(fk)).sum(axis=0), s=(sh, sw))
    return full[: sh - th + 1, : sw - tw + 1]


def box_sums(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Sums of every ``height x width`` window via an integral image.

    Args:
        image: (H, W) or (C, H, W) array.
        height: window height.
        width: window width.

    Returns:
        (..., H - height + 1, W - width + 1) float64 window sums (summed over C too for 3-D).
    """
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3:
        a = a.sum(axis=0)
    ii = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    ii[1:, 1:] = a.cumsum(axis=0).cumsum(axis=1)
    return ii[height:, width:] - ii[:-height, width:] - ii[height:, :-width] + ii[:-height, :-width]


def _check_codes(template_codes: np.ndarray, region_codes: np.ndarray) -> None:
    t, r = template_codes, region_codes
    if t.ndim != 4 or r.ndim != 4 or t.shape[:2] != r.shape[:2]:
        raise ValueError(
            f"template codes {t.shape} and region codes {r.shape} must be (B, C, k, k) and "
            "(B, C, H, W) with the same batch size B and channels C"
        )
    if t.shape[2] > r.shape[2] or t.shape[3] > r.shape[3] or min(t.shape[2:]) < 1:
        raise ValueError(
            f"template code block {t.shape[2:]} must fit inside the region code map "
            f"{r.shape[2:]}: the search region must be at least as large as the template"
        )


def window_cosine_maps(template_codes: np.ndarray, region_codes: np.ndarray) -> np.ndarray:
    """Cosine of each template's code with the code of every window of its region.

    Args:
        template_codes: (B, C, k, k) float, the code map of each T x T template (k = T - r + 1).
        region_codes: (B, C, H, W) float, the code map of each search region.

    Returns:
        (B, H - k + 1, W - k + 1) float32, ``out[b, dy, dx]`` = cosine of the flattened
        ``template_codes[b]`` and ``region_codes[b, :, dy:dy + k, dx:dx + k]``; 0 where either
        code is zero (no structure to compare).
    """
    t = np.asarray(template_codes)
    r = np.asarray(region_codes)
    _check_codes(t, r)
    b, _, kh, kw = t.shape
    mh, mw = r.shape[2] - kh + 1, r.shape[3] - kw + 1
    out = np.empty((b, mh, mw), np.float32)
    t64 = t.astype(np.float64)
    t_energy = (t64 * t64).sum(axis=(1, 2, 3))
    for i in range(b):
        ri = r[i].astype(np.float32)
        if kh == kw == 1:
            num = np.einsum("c,chw->hw", t64[i, :, 0, 0], ri.astype(np.float64))
        else:
            num = correlate_valid(ri, t[i].astype(np.float32)).astype(np.float64)
        energy = np.maximum(box_sums((ri.astype(np.float64) ** 2).sum(axis=0), kh, kw), 0.0)
        # The integral image leaves rounding residue (~1e-16 of the region's total energy) in
        # windows of zero codes, enough to pass the floor below and turn FFT noise into
        # cosines of +-0.5: find those windows exactly, by counting their non-zero positions.
        has_code = box_sums(np.any(ri != 0, axis=0), kh, kw) > 0.5
        den = np.sqrt(energy * t_energy[i])
        floor = 1e-9 * float(np.sqrt(energy.max(initial=0.0) * t_energy[i]))
        cos = np.where(has_code & (den > floor), num / np.maximum(den, 1e-300), 0.0)
        out[i] = np.clip(cos, -1.0, 1.0)
    return out


def normalised_descriptors(codes: np.ndarray) -> np.ndarray:
    """(B, C, k, k) window code maps -> (B, C k^2) unit descriptors (zero codes stay zero)."""
    flat = np.asarray(codes, dtype=np.float32).reshape(len(codes), -1)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.where(norm > 0, flat / np.maximum(norm, 1e-30), 0.0).astype(np.float32)


def smooth_maps(maps: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian smoothing of correspondence maps before their peak is taken.

    A learned cosine map carries pixel-scale noise around its peak: a lone window can top a
    broad ridge of a few pixels that several neighbouring windows agree on. A Gaussian of about
    one pixel lets the ridge win (docs/results.md: measured on validation, then held-out).

    Args:
        maps: (B, H, W) or (H, W) float maps.
        sigma_px: standard deviation in map pixels (= offset pixels); 0 returns the maps as
            they are (float32).

    Returns:
        float32 maps of the same shape; borders are extended with their nearest value, so the
        edges of the search range are not pulled down.
    """
    m = np.asarray(maps, dtype=np.float32)
    if m.ndim not in (2, 3):
        raise ValueError(f"maps must be (H, W) or (B, H, W), got shape {m.shape}")
    sigma = float(sigma_px)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma_px must be a finite number >= 0, got {sigma_px!r}")
    if sigma == 0:
        return m
    axes_sigma = (sigma, sigma) if m.ndim == 2 else (0.0, sigma, sigma)
    return ndimage.gaussian_filter(m, axes_sigma, mode="nearest").astype(np.float32, copy=False)
