"""Validation matching accuracy: dense correspondence maps of held-out pairs with known offsets.

For each pair the optical T x T template is encoded once and the S x S SAR search region densely
(``training.models.DenseEncoder``, every one of the (S - T + 1)^2 windows, exactly as the paper's
sliding window); the correspondence map is the cosine similarity of the codes
(``losses.window_cosine``). Its peak, refined to subpixel
by a parabola through the peak and its two neighbours on each axis, is compared with the true
window corner ``PatchSet.true_xy_px``.
"""

from __future__ import annotations

import numpy as np
import torch

from sar_optical_matcher.core.peaks import refine_peak
from sar_optical_matcher.core.preprocessing import PreprocessSpec
from training.data import PatchSet, standardise
from training.losses import window_cosine
from training.models import DenseEncoder, Matcher


def subpixel_peak(cmap: np.ndarray) -> np.ndarray:
    """(x, y) float64 of the maximum of a (H, W) map, refined as the plugin refines it.

    The plugin's step (``core.peaks.refine_peak``: a 2-D quadratic on the 3 x 3 neighbourhood,
    1-D parabolas at the border or where the 2-D fit is no maximum), so that validation scores
    the positions the plugin returns. (Up to plugin 0.3.2's models, validation refined each
    axis by its own parabola: up to 0.36 px apart on held-out samples.)
    """
    if cmap.ndim != 2 or cmap.size == 0:
        raise ValueError(f"subpixel_peak expects a non-empty 2-D map, got {cmap.shape}")
    r, c = np.unravel_index(int(np.argmax(cmap)), cmap.shape)
    return np.asarray(refine_peak(np.asarray(cmap, np.float64), int(r), int(c)), np.float64)


@torch.no_grad()
def correspondence_maps(
    matcher: Matcher,
    ps: PatchSet,
    index: np.ndarray,
    specs: tuple[PreprocessSpec, PreprocessSpec],
    device: torch.device,
) -> np.ndarray:
    """(N, S - T + 1, S - T + 1) float32 cosine maps of the pairs ``index`` (eval mode)."""
    was_training = matcher.training
    matcher.eval()
    try:
        sar = torch.from_numpy(standardise(ps.sar[index], specs[0]))[:, None].to(device)
        opt = torch.from_numpy(standardise(ps.optical[index], specs[1]))[:, None].to(device)
        z_o = matcher.optical.encoder(opt)
        dense = DenseEncoder(matcher.sar.encoder)(sar)
        return window_cosine(z_o, dense).float().cpu().numpy()
    finally:
        matcher.train(was_training)


def matching_accuracy(
    matcher: Matcher,
    ps: PatchSet,
    specs: tuple[PreprocessSpec, PreprocessSpec],
    device: torch.device,
    max_pairs: int = 200,
    batch_size: int = 8,
) -> dict[str, float]:
    """Matching accuracy on (up to ``max_pairs`` evenly spread) pairs of ``ps``.

    Returns:
        ``n``, ``acc_1_3px`` (share of pairs whose peak is within 1/3 px of the truth),
        ``acc_1px``, ``acc_3px``, ``median_err_px`` and ``mean_err_px``; NaN when ``ps`` is empty.
    """
    n = min(len(ps), max_pairs)
    if n == 0:
        nan = float("nan")
        return {
            "n": 0.0,
            "acc_1_3px": nan,
            "acc_1px": nan,
            "acc_3px": nan,
            "median_err_px": nan,
            "mean_err_px": nan,
        }
    index = np.unique(np.linspace(0, len(ps) - 1, n).round().astype(np.int64))
    errors = []
    for start in range(0, len(index), batch_size):
        chunk = index[start : start + batch_size]
        maps = correspondence_maps(matcher, ps, chunk, specs, device)
        for cmap, truth in zip(maps, ps.true_xy_px[chunk]):
            errors.append(float(np.hypot(*(subpixel_peak(cmap) - truth))))
    err = np.asarray(errors)
    return {
        "n": float(len(err)),
        "acc_1_3px": float((err <= 1 / 3).mean()),
        "acc_1px": float((err <= 1.0).mean()),
        "acc_3px": float((err <= 3.0).mean()),
        "median_err_px": float(np.median(err)),
        "mean_err_px": float(err.mean()),
    }
