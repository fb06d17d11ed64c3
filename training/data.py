"""Training data: patch pairs cut from co-registered scenes, statistics, batches, augmentation.

From :class:`training.sources.PairRecord` scenes (Hughes & Schmitt 2019, Sec. 4.1):

* an S x S (256) patch pair is cut around each Harris corner of the optical image (corners at
  least ``min_distance_px`` apart), plus optional random crops; a record that is itself S x S
  (e.g. a 3MOS tile) is one patch pair;
* the SAR patch is stretched to [0, 1] over the whole S x S search region and the optical patch
  over its central T x T template, with ``core.preprocessing.preprocess`` -- the very function
  inference uses (a spec with mean 0 and std 1 gives the [0, 1] stretch; standardising it with
  the training statistics afterwards equals ``preprocess`` with the final spec);
* positive pair: optical centre template and the SAR window at the centre shifted by the
  record's ``offset_xy_px`` (SAR content of optical pixel p is at SAR pixel p + offset);
  negative pair: the same template and a random SAR window at least ``negative_min_shift_px``
  away (Chebyshev) from the true one.

Arrays are kept in [0, 1] ("unit") form with NaN at invalid pixels; a batch is augmented in that
form, then standardised for the encoders; the reconstruction target is the unit image (the
decoders end in a ReLU). Memory: 4 (S^2 + T^2) bytes per pair, 320 KB at 256/128.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import json
import logging
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sar_optical_matcher.core.files import atomic_output
from sar_optical_matcher.core.keypoints import detect_keypoints
from sar_optical_matcher.core.preprocessing import PreprocessSpec, preprocess
from training.config import AugmentConfig, DataConfig
from training.sources import PairRecord, split_by_scene

log = logging.getLogger(__name__)


@dataclass
class PatchSet:
    """Cut and [0, 1]-stretched patch pairs.

    Attributes:
        sar: (N, S, S) float32 SAR search regions in [0, 1], NaN where invalid.
        optical: (N, T, T) float32 optical templates in [0, 1], NaN where invalid.
        true_xy_px: (N, 2) float64, (x, y) top-left of the SAR window that corresponds to the
            template, in search-region pixels ((S - T) / 2 + record offset).
        scenes: scene of each pair.
        names: identifier of each pair (record name and centre).
        optical_region: optional (N, S, S) float32 RAW optical luminance of the whole pair
            (NaN where invalid), for templates drawn anywhere in the pair (``random_windows``).
        offset_xy_px: (N, 2) float64 record offsets (true corner = template corner + offset).
        repeat: optional (N,) int64 times each pair is drawn per training epoch (the source
            spec's ``repeat``); None means once each.
    """

    sar: np.ndarray
    optical: np.ndarray
    true_xy_px: np.ndarray
    scenes: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    optical_region: np.ndarray | None = None
    offset_xy_px: np.ndarray | None = None
    repeat: np.ndarray | None = None

    def __len__(self) -> int:
        """Number of pairs."""
        return int(self.sar.shape[0])

    @property
    def search_size(self) -> int:
        """S."""
        return int(self.sar.shape[-1])

    @property
    def template_size(self) -> int:
        """T."""
        return int(self.optical.shape[-1])


def unit_spec(modality: str, cfg: DataConfig) -> PreprocessSpec:
    """A spec whose ``preprocess`` output is the plain [0, 1] stretch (mean 0, std 1)."""
    return PreprocessSpec(modality, cfg.low_percentile, cfg.high_percentile, mean=0.0, std=1.0)


def _stretch(patch: np.ndarray, spec: PreprocessSpec, valid: np.ndarray | None, scale: str):
    ok = np.isfinite(patch) if valid is None else valid & np.isfinite(patch)
    out = preprocess(patch, spec, valid, sar_scale=scale)
    out[~ok] = np.nan
    return out


def _centres(record: PairRecord, cfg: DataConfig, rng: np.random.Generator) -> list[tuple]:
    """Integer (col, row) centres of the S x S cuts of one record."""
    h, w = record.sar.shape
    s = cfg.search_size_px
    if (h, w) == (s, s):
        return [(s // 2, s // 2)]
    if h < s or w < s:
        return []  # named by build_patch_set with the other records that yield no pair
    # a keypoint's centre col + 0.5 at least s // 2 from each edge: cuts [col - s // 2, col +
    # s // 2) up to col = w - s // 2 - 1, one short of the last whole cut (kept as it is, so
    # the training centres of the shipped model do not move); a side of exactly s has no such
    # centre at all, so there the border is a pixel narrower and the centres are clamped
    tight = h == s or w == s
    xy = detect_keypoints(
        record.optical,
        cfg.max_keypoints_per_scene,
        cfg.min_distance_px,
        s // 2 - 1 if tight else s // 2,
        record.valid,
    )
    out = [(int(x), int(y)) for x, y in xy.xy_px]
    if tight:
        clamped = (
            (min(max(x, s // 2), w - s // 2), min(max(y, s // 2), h - s // 2)) for x, y in out
        )
        out = list(dict.fromkeys(clamped))
    for _ in range(cfg.random_crops_per_scene):
        out.append(
            (int(rng.integers(s // 2, w - s // 2 + 1)), int(rng.integers(s // 2, h - s // 2 + 1)))
        )
    return out


def _no_pair_reason(record: PairRecord, cfg: DataConfig, n_centres: int) -> str:
    """Why ``record`` yields no patch pair, given that ``n_centres`` cuts were tried."""
    h, w = record.sar.shape
    s = cfg.search_size_px
    if h < s or w < s:
        return f"{w}x{h} px is smaller than the {s} px search region (data.search_size_px)"
    if n_centres == 0:
        return (
            f"{w}x{h} px: no Harris corner {s // 2} px or more from its border, and "
            f"data.random_crops_per_scene is {cfg.random_crops_per_scene}"
        )
    return f"each of its {n_centres} cut(s) is more than half nodata"


def cut_record(record: PairRecord, cfg: DataConfig, rng: np.random.Generator) -> PatchSet:
    """Cut and stretch the patch pairs of one record (see module docstring)."""
    return _cut(record, cfg, rng)[0]


def _cut(
    record: PairRecord, cfg: DataConfig, rng: np.random.Generator
) -> tuple[PatchSet, str | None]:
    """:func:`cut_record` and, when it yields no pair, why not."""
    s, t = cfg.search_size_px, cfg.template_size_px
    sar_list, opt_list, region_list, names = [], [], [], []
    centres = _centres(record, cfg, rng)
    for cx, cy in centres:
        x0, y0 = cx - s // 2, cy - s // 2
        win = (slice(y0, y0 + s), slice(x0, x0 + s))
        valid = None if record.valid is None else record.valid[win]
        sar = _stretch(record.sar[win], unit_spec("sar", cfg), valid, record.sar_scale)
        c = (s - t) // 2
        tpl = (slice(c, c + t), slice(c, c + t))
        opt_valid = None if valid is None else valid[tpl]
        opt = _stretch(record.optical[win][tpl], unit_spec("optical", cfg), opt_valid, "db")
        if np.isnan(opt).mean() > 0.5 or np.isnan(sar).mean() > 0.5:
            continue  # mostly nodata: nothing to learn, nothing to match
        sar_list.append(sar)
        opt_list.append(opt)
        region = record.optical[win].astype(np.float32)
        region_list.append(region if valid is None else np.where(valid, region, np.nan))
        names.append(f"{record.name}@{cx},{cy}")
    n = len(names)
    offset = np.tile(np.asarray(record.offset_xy_px, dtype=np.float64), (n, 1)).reshape(n, 2)
    reason = None if n else _no_pair_reason(record, cfg, len(centres))
    patches = PatchSet(
        np.asarray(sar_list, dtype=np.float32).reshape(n, s, s),
        np.asarray(opt_list, dtype=np.float32).reshape(n, t, t),
        offset + (s - t) // 2,
        [record.scene] * n,
        names,
        np.asarray(region_list, dtype=np.float32).reshape(n, s, s),
        offset,
        np.full(n, record.repeat, dtype=np.int64),
    )
    return patches, reason


def draw_windows(offsets: np.ndarray, span: int, rng: np.random.Generator) -> np.ndarray:
    """(N, 2) int template corners in [0, span], uniform, whose true SAR corner fits too.

    Args:
        offsets: (N, 2) record offsets (true SAR corner = template corner + offset).
        span: S - T, the largest corner coordinate.
        rng: random generator.
    """
    lo = np.clip(np.ceil(-offsets), 0, span).astype(np.int64)
    hi = np.clip(np.floor(span - offsets), 0, span).astype(np.int64)
    return rng.integers(lo, hi + 1)


def optical_templates(
    ps: PatchSet, index: np.ndarray, corners: np.ndarray, cfg_unit: PreprocessSpec
) -> np.ndarray:
    """(B, T, T) [0, 1] templates cut from ``optical_region`` at ``corners`` and stretched."""
    if ps.optical_region is None:
        raise ValueError("this patch set has no optical regions; rebuild it (cache is stale)")
    t = ps.template_size
    out = np.empty((len(index), t, t), np.float32)
    for k, (i, (x, y)) in enumerate(zip(index, corners)):
        crop = ps.optical_region[i, y : y + t, x : x + t]
        out[k] = _stretch(crop, cfg_unit, np.isfinite(crop), "db")
    return out


def with_fixed_windows(ps: PatchSet, cfg: DataConfig, rng: np.random.Generator) -> PatchSet:
    """A copy whose templates sit at one random (seeded) window per pair: for val/test."""
    if len(ps) == 0 or ps.optical_region is None:
        return ps
    off = _offsets(ps)
    corners = draw_windows(off, ps.search_size - ps.template_size, rng)
    index = np.arange(len(ps))
    return dataclasses.replace(
        ps,
        optical=optical_templates(ps, index, corners, unit_spec("optical", cfg)),
        true_xy_px=corners + off,
    )


def repeat_pairs(ps: PatchSet, k: int) -> PatchSet:
    """``ps`` with every pair listed ``k`` times in a row (each copy then gets its own window)."""
    if k == 1 or len(ps) == 0:
        return ps

    def rep(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.repeat(a, k, axis=0)

    return PatchSet(
        np.repeat(ps.sar, k, axis=0),
        np.repeat(ps.optical, k, axis=0),
        np.repeat(ps.true_xy_px, k, axis=0),
        [s for s in ps.scenes for _ in range(k)],
        [f"{n}#{j}" for n in ps.names for j in range(k)],
        rep(ps.optical_region),
        rep(ps.offset_xy_px),
        rep(ps.repeat),
    )


def build_patch_set(
    records: list[PairRecord], cfg: DataConfig, rng: np.random.Generator
) -> PatchSet:
    """Cut all records into one :class:`PatchSet` (empty input gives an empty set).

    The records that yield no pair are named in one warning, with why.
    """
    return cut_records(records, cfg, rng)[0]


def cut_records(
    records: list[PairRecord], cfg: DataConfig, rng: np.random.Generator
) -> tuple[PatchSet, list[str]]:
    """:func:`build_patch_set` and the ``"<record name>: <why>"`` of each record yielding none."""
    cuts = [_cut(r, cfg, rng) for r in records]
    skipped = [f"{r.name}: {why}" for r, (_, why) in zip(records, cuts) if why is not None]
    if skipped:
        log.warning(
            "%d of %d records yield no patch pair and are skipped: %s",
            len(skipped),
            len(records),
            _first(skipped),
        )
    return _concat([p for p, _ in cuts], cfg), skipped


def _first(items: list[str], k: int = 5) -> str:
    """The first ``k`` items joined, and how many more."""
    more = f"; ... ({len(items) - k} more)" if len(items) > k else ""
    return "; ".join(items[:k]) + more


def _concat(parts: list[PatchSet], cfg: DataConfig) -> PatchSet:
    s, t = cfg.search_size_px, cfg.template_size_px
    if not parts:
        return PatchSet(
            np.zeros((0, s, s), np.float32),
            np.zeros((0, t, t), np.float32),
            np.zeros((0, 2)),
            optical_region=np.zeros((0, s, s), np.float32),
            offset_xy_px=np.zeros((0, 2)),
            repeat=np.zeros(0, np.int64),
        )
    return PatchSet(
        np.concatenate([p.sar for p in parts]),
        np.concatenate([p.optical for p in parts]),
        np.concatenate([p.true_xy_px for p in parts]),
        [x for p in parts for x in p.scenes],
        [x for p in parts for x in p.names],
        np.concatenate([p.optical_region for p in parts]),  # type: ignore[misc]
        np.concatenate([p.offset_xy_px for p in parts]),  # type: ignore[misc]
        np.concatenate([p.repeat for p in parts]),  # type: ignore[misc]
    )


def training_specs(train: PatchSet, cfg: DataConfig) -> tuple[PreprocessSpec, PreprocessSpec]:
    """(sar, optical) specs with the mean/std of the [0, 1] training patches (valid pixels)."""
    if len(train) == 0:
        raise ValueError("the training split has no patch pairs; add sources or scenes")

    def stats(a: np.ndarray) -> tuple[float, float]:
        v = a[np.isfinite(a)].astype(np.float64)
        return float(v.mean()), float(max(v.std(), 1e-3))

    (ms, ss), (mo, so) = stats(train.sar), stats(train.optical)
    lo, hi = cfg.low_percentile, cfg.high_percentile
    return PreprocessSpec("sar", lo, hi, ms, ss), PreprocessSpec("optical", lo, hi, mo, so)


def standardise(unit: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """[0, 1] patch -> encoder input, exactly as ``preprocess`` does (invalid pixels -> 0)."""
    return np.nan_to_num((unit - spec.mean) / spec.std, nan=0.0).astype(np.float32)


def negative_windows(
    true_xy_px: np.ndarray, span: int, min_shift: int, rng: np.random.Generator
) -> np.ndarray:
    """(N, 2) int random window corners in [0, span] at least ``min_shift`` from the true ones.

    Args:
        true_xy_px: (N, 2) float, true window corners (x, y).
        span: S - T, the largest corner coordinate.
        min_shift: minimum Chebyshev distance to the rounded true corner.
        rng: random generator.

    Raises:
        ValueError: some true corner has no window ``min_shift`` away within the span.
    """
    true_i = np.rint(true_xy_px).astype(np.int64)
    out = rng.integers(0, span + 1, size=true_i.shape)
    for _ in range(100):
        bad = np.abs(out - true_i).max(axis=1) < min_shift
        if not bad.any():
            return out
        out[bad] = rng.integers(0, span + 1, size=(int(bad.sum()), 2))
    # rare (a shift near half the span from a central window: few windows qualify): draw
    # uniformly among the ones that do, instead of failing a batch hours into a run
    grid = np.stack(np.meshgrid(np.arange(span + 1), np.arange(span + 1)), -1).reshape(-1, 2)
    for i in np.flatnonzero(np.abs(out - true_i).max(axis=1) < min_shift):
        ok = grid[np.abs(grid - true_i[i]).max(axis=1) >= min_shift]
        if not len(ok):
            raise ValueError(
                f"cannot place a negative {min_shift} px away from {true_i[i].tolist()} within "
                f"a {span} px span; lower data.negative_min_shift_px"
            )
        out[i] = ok[rng.integers(len(ok))]
    return out


def _augment(img: np.ndarray, flips: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Transpose, flip and scale a (B, H, W) batch of square images.

    ``flips`` (B, 3) bool [horizontal, vertical, transpose]: the transpose (rows <-> columns)
    comes first, then the flips; with all three the 8 rotations/reflections of the square
    occur. ``scale`` (B,) multiplies the intensities.
    """
    out = img.copy()
    if flips[:, 2].any():
        out[flips[:, 2]] = out[flips[:, 2]].transpose(0, 2, 1)
    out[flips[:, 0]] = out[flips[:, 0], :, ::-1]
    out[flips[:, 1]] = out[flips[:, 1], ::-1, :]
    return out * scale[:, None, None].astype(np.float32)


def _draw(n: int, aug: AugmentConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    flips = rng.random((n, 2)) < aug.flip_p
    # drawn only when enabled, so configs without it keep their random streams
    transpose = rng.random(n) < aug.transpose_p if aug.transpose_p > 0 else np.zeros(n, bool)
    flips = np.concatenate([flips, transpose[:, None]], axis=1)
    scale = np.where(rng.random(n) < aug.scale_p, rng.uniform(*aug.scale_range, n), 1.0)
    return flips, scale


@dataclass(frozen=True)
class Photometric:
    """Per-image contrast (gamma) and extra additive noise std of a (B, H, W) batch."""

    gamma: np.ndarray
    noise_std: np.ndarray

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``max(img, 0) ** gamma`` plus Gaussian noise of the per-image std (NaN stays NaN)."""
        out = np.maximum(img, 0.0) ** self.gamma[:, None, None]
        if self.noise_std.any():
            out = out + rng.normal(0.0, 1.0, img.shape) * self.noise_std[:, None, None]
        return out.astype(np.float32)


def _draw_photometric(
    n: int, aug: AugmentConfig, rng: np.random.Generator, noise_max: float
) -> Photometric | None:
    """Gamma and noise std of ``n`` images; None when both are off.

    Nothing is drawn then, so configs without them keep their random streams.
    """
    if aug.gamma_p <= 0 and noise_max <= 0:
        return None
    gamma = np.ones(n)
    if aug.gamma_p > 0:
        lo, hi = np.log(aug.gamma_range[0]), np.log(aug.gamma_range[1])
        gamma = np.where(rng.random(n) < aug.gamma_p, np.exp(rng.uniform(lo, hi, n)), 1.0)
    noise = rng.uniform(0.0, noise_max, n) if noise_max > 0 else np.zeros(n)
    return Photometric(gamma, noise)


@dataclass
class Batch:
    """Tensors of one batch: inputs standardised, targets in [0, 1], labels or None."""

    sar: torch.Tensor
    optical: torch.Tensor
    sar_target: torch.Tensor
    optical_target: torch.Tensor
    label: torch.Tensor | None
    sar_region: torch.Tensor | None = None
    region_true_xy: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        """Move to ``device``."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return Batch(
            self.sar.to(device),
            self.optical.to(device),
            self.sar_target.to(device),
            self.optical_target.to(device),
            move(self.label),
            move(self.sar_region),
            move(self.region_true_xy),
        )


def make_batch(
    ps: PatchSet,
    index: np.ndarray,
    label: np.ndarray | None,
    specs: tuple[PreprocessSpec, PreprocessSpec],
    aug: AugmentConfig,
    min_shift: int,
    rng: np.random.Generator,
    random_windows: bool = False,
    unit_optical: PreprocessSpec | None = None,
    dense_radius: int = 0,
) -> Batch:
    """Assemble one augmented batch.

    Args:
        ps: the patch set.
        index: (B,) int pair indices.
        label: (B,) 1 positive / 0 negative for a labelled batch (same flips and scale for both
            images of a pair); None for an unlabelled batch (true windows, independent
            augmentation per image).
        specs: (sar, optical) standardisation specs.
        aug: augmentation parameters.
        min_shift: minimum shift of negative windows.
        rng: random generator for negatives and augmentation.
        random_windows: draw each template anywhere in its pair (needs ``optical_region``);
            the positive SAR window moves with it.
        unit_optical: the optical [0, 1] stretch spec, required with ``random_windows``.
        dense_radius: r > 0 (labelled batches): also the (T + 2r)^2 SAR neighbourhood of each
            item's TRUE window, augmented like its window, and the true window's (x, y) in it,
            for ``losses.dense_contrastive_loss``.
    """
    if aug.zoom_p > 0:
        if not (random_windows and ps.optical_region is not None and unit_optical is not None):
            raise ValueError("augment.zoom_p > 0 needs random windows and optical regions")
        ps, index = zoomed_pairs(ps, index, _draw_zoom(len(index), aug, rng))
    t, span = ps.template_size, ps.search_size - ps.template_size
    if random_windows and ps.optical_region is not None and unit_optical is not None:
        off = _offsets(ps)[index]
        tpl = draw_windows(off, span, rng)
        true_xy = tpl + off
        opt = optical_templates(ps, index, tpl, unit_optical)
    else:
        true_xy = ps.true_xy_px[index]
        opt = ps.optical[index]
    corner = np.rint(true_xy).astype(np.int64)
    if label is not None:
        neg = negative_windows(true_xy, span, min_shift, rng)
        corner = np.where((label == 1)[:, None], corner, neg)
    corner = np.clip(corner, 0, span)
    sar = np.stack([ps.sar[i, y : y + t, x : x + t] for i, (x, y) in zip(index, corner)])
    flips_s, scale_s = _draw(len(index), aug, rng)
    flips_o, scale_o = (flips_s, scale_s) if label is not None else _draw(len(index), aug, rng)
    sar = _augment(sar, flips_s, scale_s)
    opt = _augment(opt, flips_o, scale_o)
    opt = opt + rng.normal(0.0, aug.optical_noise_std, opt.shape).astype(np.float32)
    photo_s = _draw_photometric(len(index), aug, rng, aug.sar_noise_std)
    photo_o = _draw_photometric(len(index), aug, rng, 0.0)
    if photo_s is not None:
        sar = photo_s.apply(sar, rng)
    if photo_o is not None:
        opt = photo_o.apply(opt, rng)

    def tensors(unit: np.ndarray, spec: PreprocessSpec) -> tuple[torch.Tensor, torch.Tensor]:
        target = np.nan_to_num(unit, nan=spec.mean)
        return (
            torch.from_numpy(standardise(unit, spec))[:, None],
            torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))[:, None],
        )

    (xs, ts), (xo, to) = tensors(sar, specs[0]), tensors(opt, specs[1])
    lab = None if label is None else torch.from_numpy(label.astype(np.float32))
    region_t: torch.Tensor | None = None
    rel_t: torch.Tensor | None = None
    if label is not None and dense_radius > 0:
        region, rel = _neighbourhoods(ps, index, true_xy, dense_radius, flips_s, scale_s)
        if photo_s is not None:  # the window's contrast; noise drawn afresh
            region = photo_s.apply(region, rng)
        region_t = torch.from_numpy(standardise(region, specs[0]))[:, None]
        rel_t = torch.from_numpy(rel)
    return Batch(xs, xo, ts, to, lab, region_t, rel_t)


def _draw_zoom(n: int, aug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """(n,) zoom factors: log-uniform in ``zoom_range`` with probability ``zoom_p``, else 1."""
    lo, hi = np.log(aug.zoom_range[0]), np.log(aug.zoom_range[1])
    return np.where(rng.random(n) < aug.zoom_p, np.exp(rng.uniform(lo, hi, n)), 1.0)


def _zoom_about_centre(img: np.ndarray, factor: float) -> np.ndarray:
    """A square image resampled bilinearly about its centre; NaN where it samples outside."""
    from scipy import ndimage

    if factor == 1.0:
        return img.astype(np.float32, copy=True)
    c = (img.shape[-1] - 1) / 2.0
    # output pixel o samples the input at c + (o - c) / factor
    return ndimage.affine_transform(
        img.astype(np.float32),
        np.diag([1.0 / factor, 1.0 / factor]),
        offset=c - c / factor,
        order=1,
        mode="constant",
        cval=np.nan,
    )


def zoomed_pairs(
    ps: PatchSet, index: np.ndarray, factors: np.ndarray
) -> tuple[PatchSet, np.ndarray]:
    """The pairs ``index`` of ``ps`` with both regions zoomed by ``factors`` about their centre.

    Both images of a pair are scaled alike, so they stay co-registered: the SAR content of
    optical pixel p is at p + offset before and at p' + factor * offset after (p' the zoomed
    position of p), so the offsets scale with the factor. Returns a patch set of the B pairs
    and ``arange(B)``. Bilinear, so a zoom in also blurs; pixels zoomed in from outside the
    pair are NaN (invalid), as nodata is.
    """
    if ps.optical_region is None:
        raise ValueError("zooming needs optical regions; rebuild the patch set (cache is stale)")
    sar = np.stack([_zoom_about_centre(ps.sar[i], f) for i, f in zip(index, factors)])
    opt = np.stack([_zoom_about_centre(ps.optical_region[i], f) for i, f in zip(index, factors)])
    off = _offsets(ps)[index] * factors[:, None]
    half = (ps.search_size - ps.template_size) // 2
    sub = dataclasses.replace(
        ps,
        sar=sar.astype(np.float32),
        optical=ps.optical[index],
        true_xy_px=off + half,
        scenes=[ps.scenes[i] for i in index] if ps.scenes else [],
        names=[ps.names[i] for i in index] if ps.names else [],
        optical_region=opt.astype(np.float32),
        offset_xy_px=off,
        repeat=None,
    )
    return sub, np.arange(len(index))


def _neighbourhoods(
    ps: PatchSet,
    index: np.ndarray,
    true_xy: np.ndarray,
    radius: int,
    flips: np.ndarray,
    scale: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(B, T + 2r, T + 2r) unit SAR regions around the true windows and the true (x, y) in them.

    The region is shifted where it would leave the search region, so the true window is not
    always at its centre; transposes and flips move the true position with the pixels.
    """
    t, span = ps.template_size, ps.search_size - ps.template_size
    size = t + 2 * radius
    if size > ps.search_size:
        raise ValueError(f"dense_negative_radius_px {radius} needs a search region >= {size} px")
    true_c = np.clip(np.rint(true_xy).astype(np.int64), 0, span)
    corner = np.clip(true_c - radius, 0, ps.search_size - size)
    rel = true_c - corner
    region = np.stack([ps.sar[i, y : y + size, x : x + size] for i, (x, y) in zip(index, corner)])
    region = _augment(region, flips, scale)
    rel = np.where(flips[:, 2:], rel[:, ::-1], rel)  # the transpose swaps x and y, first
    rel = np.where(flips[:, :2], 2 * radius - rel, rel)  # flips[:, 0] mirrors x, flips[:, 1] y
    return region, rel.astype(np.int64)


def _offsets(ps: PatchSet) -> np.ndarray:
    return np.zeros((len(ps), 2)) if ps.offset_xy_px is None else ps.offset_xy_px


@dataclass(frozen=True)
class BatchPlan:
    """One batch of an epoch: global pair indices and labels (None: unlabelled batch)."""

    index: np.ndarray
    label: np.ndarray | None

    def shard(self, rank: int, world_size: int) -> BatchPlan:
        """This rank's part of the global batch (like ``DistributedSampler``, strided)."""
        label = None if self.label is None else self.label[rank::world_size]
        return BatchPlan(self.index[rank::world_size], label)


def repeated(index: np.ndarray, repeat: np.ndarray | None) -> np.ndarray:
    """``index`` with each pair i listed ``repeat[i]`` times (unchanged when ``repeat`` is None).

    Applied after :func:`split_labelled`, so every copy of a pair is labelled or none is.
    """
    return index if repeat is None else np.repeat(index, repeat[index])


def split_labelled(n_pairs: int, ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, unlabelled) pair indices: ``round(ratio n)`` labelled, chosen by ``seed``."""
    perm = np.random.default_rng([seed, 101]).permutation(n_pairs)
    n_lab = int(round(ratio * n_pairs))
    return np.sort(perm[:n_lab]), np.sort(perm[n_lab:])


def epoch_plan(
    labelled: np.ndarray, unlabelled: np.ndarray, batch_size: int, seed: int, epoch: int
) -> list[BatchPlan]:
    """Batches of one epoch, alternating labelled / unlabelled, every batch full.

    The labelled stream holds each labelled pair twice (positive and negative); the smaller
    stream is oversampled (repeated permutations) to as many batches as the larger one needs,
    so both get ``ceil(max(2 L, U) / B)`` batches. The plan depends only on (seed, epoch), so
    a resumed run replays exactly the same batches.
    """
    rng = np.random.default_rng([seed, epoch, 7])
    lab_items = np.concatenate(
        [
            np.stack([labelled, np.ones_like(labelled)], 1),
            np.stack([labelled, np.zeros_like(labelled)], 1),
        ]
    )
    unl_items = np.stack([unlabelled, -np.ones_like(unlabelled)], 1)
    streams = [s for s in (lab_items, unl_items) if len(s)]
    if not streams:
        raise ValueError("no training pairs: both the labelled and unlabelled sets are empty")
    n_batches = -(-max(len(s) for s in streams) // batch_size)

    def cycle(items: np.ndarray) -> np.ndarray:
        reps = -(-n_batches * batch_size // len(items))
        order = np.concatenate([rng.permutation(len(items)) for _ in range(reps)])
        return items[order[: n_batches * batch_size]].reshape(n_batches, batch_size, 2)

    drawn = [cycle(s) for s in streams]
    plan = []
    for b in range(n_batches):
        for d in drawn:
            idx, lab = d[b, :, 0], d[b, :, 1]
            plan.append(BatchPlan(idx.copy(), None if lab[0] < 0 else lab.copy()))
    return plan


@dataclass
class Datasets:
    """Train/validation/test patch sets and the training-set preprocessing specs."""

    train: PatchSet
    val: PatchSet
    test: PatchSet
    sar_spec: PreprocessSpec
    optical_spec: PreprocessSpec
    sources: list[str]


_LOADERS = {
    "synthetic": "load_synthetic",
    "3mos": "load_3mos",
    "sen12": "load_sen12",
    "gdal": "load_gdal_pair",
}


def load_records(cfg: DataConfig) -> list[PairRecord]:
    """Load the records of every configured source with ``training.sources``' loaders.

    Every spec's options are checked against its loader's arguments before any source is
    loaded. A ``gdal`` spec gives one record (``load_gdal_pair``), the others a list.
    """
    calls = [_source_call(i, spec) for i, spec in enumerate(cfg.sources)]
    records: list[PairRecord] = []
    for i, (loader, opts, repeat) in enumerate(calls):
        try:
            loaded = loader(**opts)
        except ValueError as exc:  # the loader's own check of a value: say which source
            kind = cfg.sources[i].get("kind")
            raise ValueError(f"data.sources[{i}] (kind {kind}): {exc}") from None
        loaded = [loaded] if isinstance(loaded, PairRecord) else loaded
        records += [dataclasses.replace(r, repeat=repeat) for r in loaded]
    return records


def _source_call(i: int, spec: dict[str, Any]) -> tuple[Callable[..., Any], dict[str, Any], int]:
    """(loader, options, repeat) of ``data.sources[i]``; unknown or missing options named."""
    import inspect

    from training import sources as src

    opts = dict(spec)
    kind = opts.pop("kind", None)
    repeat = opts.pop("repeat", 1)
    if kind not in _LOADERS:
        raise ValueError(f"data source kind {kind!r} unknown; use one of {sorted(_LOADERS)}")
    loader = getattr(src, _LOADERS[kind])
    params = inspect.signature(loader).parameters
    unknown = sorted(set(opts) - set(params))
    missing = [n for n, p in params.items() if p.default is p.empty and n not in opts]
    if unknown or missing:
        what = f"unknown option(s) {unknown}" if unknown else f"missing option(s) {missing}"
        raise ValueError(
            f"data.sources[{i}] (kind {kind}): {what}; a {kind} source takes "
            f"{sorted(params)} (and repeat)"
        )
    hints = typing.get_type_hints(loader)
    for name, value in opts.items():
        if _option_type_ok(value, hints.get(name, Any)) is False:
            raise ValueError(
                f"data.sources[{i}] (kind {kind}): option {name} must be "
                f"{_type_words(hints[name])}, got {value!r}"
            )
    return loader, opts, repeat


def _option_type_ok(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` (read from YAML) fits a loader's annotation; None: not checked here.

    ``bool`` is not an ``int`` here, an ``int`` is a ``float``, a path is given as text, a
    sequence as a YAML list (its items checked), a mapping as a YAML mapping.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        answers = [_option_type_ok(value, a) for a in args]
        return True if True in answers else (None if None in answers else False)
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        items = [_option_type_ok(v, args[0]) for v in value] if args else []
        return False if False in items else True
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (str, Path):
        return isinstance(value, str)
    return None


def _type_words(hint: Any) -> str:
    """``int | None`` -> 'an integer or null', ``Sequence[str]`` -> 'a list of text'."""
    words = {int: "an integer", float: "a number", str: "text", Path: "a path", bool: "true/false",
             type(None): "null", dict: "a mapping"}  # fmt: skip
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type_words(a) for a in args))
    if origin in (list, tuple, collections.abc.Sequence):
        return f"a list of {_type_words(args[0])}" if args else "a list"
    if origin in (dict, collections.abc.Mapping):
        return "a mapping"
    return words.get(hint, getattr(hint, "__name__", str(hint)))


def split_records(
    records: list[PairRecord], cfg: DataConfig, seed: int
) -> tuple[list[PairRecord], list[PairRecord], list[PairRecord]]:
    """(train, val, test) records as training splits them (by scene, ``cfg``'s rules)."""
    return split_by_scene(
        records,
        tuple(cfg.split_fractions),
        seed,
        list(cfg.holdout_scenes),
        list(cfg.validation_scenes),
    )


def source_files_stamp(cfg: DataConfig) -> list[Any]:
    """Each source's files as ``[path, count, sha256 of their names, sizes and mtimes]``.

    Every text argument a source's loader is called with, its defaults included (a ``3mos``
    source without ``root`` reads ``../shared/data/3mos``), that names an existing file or
    folder is stamped: a ``gdal`` pair's two rasters, a ``3mos`` / ``sen12`` root, walked
    through linked folders (as the loaders read them); a GDAL virtual path (``/vsizip/a.zip/
    opt.tif``) by its archive. The patch cache was keyed by the config alone: a pair
    re-aligned in place (as the README advises for a misaligned pair) and trained again into
    the same ``--out`` trained on the old file's patches.
    """
    import inspect

    stamp: list[Any] = []
    for i, spec in enumerate(cfg.sources):
        values: dict[str, Any] = {k: v for k, v in spec.items() if k != "kind"}
        try:
            loader, opts, _ = _source_call(i, spec)
            bound = inspect.signature(loader).bind(**opts)
            bound.apply_defaults()
            values = dict(bound.arguments)
        except (ValueError, TypeError):  # load_records says what is wrong with the spec
            pass
        for value in values.values():
            path = _local_path(str(value)) if isinstance(value, (str, Path)) and value else None
            if path is None:
                continue  # "3mos" is a kind, even beside a folder of that name
            digest, count = hashlib.sha256(), 0
            for full, name in _files_under(path):
                try:
                    st = os.stat(full)
                    digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                except OSError:  # a broken link: stamped as such
                    digest.update(f"{name}\0missing\n".encode())
                count += 1
            stamp.append([os.path.abspath(path), count, digest.hexdigest()])
    return stamp


def _local_path(value: str) -> str | None:
    """The local file or folder ``value`` reads: itself, a GDAL virtual path's archive, or None.

    ``/vsizip//data/a.zip/opt.tif`` and ``/vsizip/data/a.zip/opt.tif`` read ``/data/a.zip`` and
    ``data/a.zip``; chained prefixes (``/vsigzip//vsizip/...``) are taken off in turn; a remote
    one (``/vsicurl/``) has no local file.
    """
    rest = value
    while rest.startswith("/vsi"):
        cut = rest.find("/", 1)
        if cut < 0:
            return None
        rest = rest[cut + 1 :].strip("{}")
    candidates = [rest] if rest == value else [rest, "/" + rest.lstrip("/")]
    for candidate in candidates:
        p = candidate
        while p and not os.path.exists(p):
            parent = os.path.dirname(p)
            if parent == p:
                break
            p = parent
        if p and os.path.exists(p) and (p == candidate or os.path.isfile(p)):
            return p
    return None


def _files_under(path: str) -> list[tuple[str, str]]:
    """``(full path, name relative to path)`` of a file, or of every file under a folder.

    Linked folders are followed, as the loaders' ``glob`` follows them (each real folder once,
    so a link loop ends).
    """
    if not os.path.isdir(path):
        return [(path, os.path.basename(path))]
    seen: set[str] = set()
    out = []
    for d, dirs, names in os.walk(path, followlinks=True):
        real = os.path.realpath(d)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        out += [(os.path.join(d, f), os.path.relpath(os.path.join(d, f), path)) for f in names]
    return sorted(out)


def build_datasets(
    cfg: DataConfig,
    seed: int,
    records: list[PairRecord] | None = None,
    cache_dir: str | Path | None = None,
) -> Datasets:
    """Load (or take) records, split by scene, cut patches, compute the training statistics.

    With ``cache_dir`` (and no ``records``), the result is stored as
    ``patches_<hash>.npz`` keyed by the data config, the seed and the source files' names,
    sizes and modification times (:func:`source_files_stamp`), and re-used by later calls
    (resume, evaluate, export, lr-find): rendering synthetic scenes is the slow part.
    """
    cache = None if cache_dir is None or records is not None else Path(cache_dir)
    stamp = [] if cache is None else source_files_stamp(cfg)
    key = hashlib.sha256(
        json.dumps([asdict(cfg), seed, stamp], sort_keys=True).encode()
    ).hexdigest()
    path = None if cache is None else cache / f"patches_{key[:16]}.npz"
    if path is not None and path.is_file():
        return _load_cached(path)
    if records is None:
        records = load_records(cfg)
    parts = split_records(records, cfg, seed)
    rng = np.random.default_rng([seed, 11])
    (train, skipped), (val, val_skipped), (test, _) = (
        cut_records(list(p), cfg, rng) for p in parts
    )
    if len(train) == 0:
        raise ValueError(_empty_training_message(parts, skipped, cfg))
    message = _empty_validation_scenes_message(parts[1], val, val_skipped, cfg)
    if message:
        raise ValueError(message)
    if cfg.random_windows:
        val = with_fixed_windows(
            repeat_pairs(val, cfg.val_windows_per_pair), cfg, np.random.default_rng([seed, 13])
        )
        test = with_fixed_windows(test, cfg, np.random.default_rng([seed, 17]))
    sar_spec, opt_spec = training_specs(train, cfg)
    names = sorted({f"{r.source}:{r.scene}" for r in records})
    data = Datasets(train, val, test, sar_spec, opt_spec, names)
    if path is not None:
        arrays = {
            f"{n}_{a}": getattr(getattr(data, n), a)
            for n in ("train", "val", "test")
            for a in (
                "sar",
                "optical",
                "true_xy_px",
                "scenes",
                "names",
                "optical_region",
                "offset_xy_px",
                "repeat",
            )
        }
        meta = json.dumps(
            {"sar": sar_spec.to_dict(), "optical": opt_spec.to_dict(), "sources": names}
        )
        # A temporary name of this process's own (DDP ranks may race), renamed on success;
        # an interrupted write leaves no half-written cache behind.
        with atomic_output(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(meta), **{k: np.asarray(v) for k, v in arrays.items()})
    return data


def _empty_training_message(
    parts: tuple[list[PairRecord], ...], skipped: list[str], cfg: DataConfig
) -> str:
    """Why the training split has no patch pair, and what to change."""
    if not parts[0]:
        n = sum(len(p) for p in parts)
        return (
            f"the training split has no records: all {n} went to validation/test "
            f"(data.split_fractions {list(cfg.split_fractions)}, holdout_scenes "
            f"{list(cfg.holdout_scenes)}, validation_scenes {list(cfg.validation_scenes)}); "
            "give the training split a share or free some scenes, or add sources"
        )
    return (
        f"the training split has no patch pairs: none of its {len(parts[0])} records yields "
        f"one ({_first(skipped, 3)}); use records at least data.search_size_px "
        f"({cfg.search_size_px} px) on a side, set data.random_crops_per_scene > 0 for "
        "records without corners, or give a smaller data.search_size_px / template_size_px"
    )


def _empty_validation_scenes_message(
    records: list[PairRecord], val: PatchSet, skipped: list[str], cfg: DataConfig
) -> str | None:
    """Which ``data.validation_scenes`` yield no validation pair, and why (None: all do).

    An error even where other scenes still give the split pairs: the best epoch would be
    selected on other scenes than the ones the config names (or on none).
    """
    have = set(val.scenes)
    empty = [scene for scene in cfg.validation_scenes if scene not in have]
    if not empty:
        return None
    names = {r.name for r in records if r.scene in empty}
    why = [x for x in skipped if x.split(": ", 1)[0] in names]
    others = sorted(have)
    selected = (
        f"the best epoch would be selected on {len(val)} pairs of the other scenes {others} "
        "only, not on the scenes named"
        if others
        else "no epoch would be selected (the validation split has no pair)"
    )
    return (
        f"data.validation_scenes {empty} yield no validation pair ({_first(why, 3)}): "
        f"{selected}; use records at least data.search_size_px ({cfg.search_size_px} px) on a "
        "side, set data.random_crops_per_scene > 0 for records without corners, give a smaller "
        "data.search_size_px / template_size_px, or remove the scenes from "
        "data.validation_scenes"
    )


def _load_cached(path: Path) -> Datasets:
    with np.load(path, allow_pickle=False) as z:
        sets = [
            PatchSet(
                z[f"{n}_sar"],
                z[f"{n}_optical"],
                z[f"{n}_true_xy_px"],
                [str(x) for x in z[f"{n}_scenes"]],
                [str(x) for x in z[f"{n}_names"]],
                z[f"{n}_optical_region"],
                z[f"{n}_offset_xy_px"],
                z[f"{n}_repeat"] if f"{n}_repeat" in z.files else None,  # older caches
            )
            for n in ("train", "val", "test")
        ]
        meta = json.loads(str(z["meta"]))
    train, val, test = sets
    return Datasets(
        train,
        val,
        test,
        PreprocessSpec(**meta["sar"]),
        PreprocessSpec(**meta["optical"]),
        list(meta["sources"]),
    )
