"""Evaluation harness: known-offset samples from co-registered pairs, any matcher, metrics.

A :class:`Sample` is an optical template (T x T) and a SAR search region (S x S) cut from one
co-registered :class:`~training.sources.PairRecord` such that the template truly lies at the
window offset ``true_offset_xy_px`` = (dx, dy) of the region (the map coordinates of
``core.__init__``: ``map[dy, dx]`` compares the template with ``region[dy:dy+T, dx:dx+T]``).
Every method (the learned ONNX matcher, the classical peers of ``core.classical``) runs on the
same samples through one interface, a *batch map function*::

    map_fn(templates (B, T, T) raw, regions (B, S, S) raw, sar_scales list[str]) -> (B, m, m)

and the peak of each map is compared with the truth. numpy only (no torch, no matplotlib); the
CLI and the figures (paper Figs. 4 and 5) are in ``scripts/evaluate.py``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from sar_optical_matcher.core import classical, peaks
from sar_optical_matcher.core.correlation import box_sums
from sar_optical_matcher.core.preprocessing import PreprocessSpec, preprocess
from training.sources import PairRecord

BatchMapFn = Callable[[np.ndarray, np.ndarray, Sequence[str]], np.ndarray]
WITHIN_PX: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0)
DEFAULT_SAR_SPEC = PreprocessSpec("sar", mean=0.5, std=0.2)
DEFAULT_OPTICAL_SPEC = PreprocessSpec("optical", mean=0.45, std=0.15)
#: Confidence thresholds of the precision / kept curves (0, 0.05, ..., 0.95).
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(
    float(t) for t in np.round(np.arange(0.0, 1.0, 0.05), 2)
)


@dataclass
class Sample:
    """One evaluation case with a known answer.

    Attributes:
        template: (T, T) float32 raw optical pixels; NaN where invalid.
        region: (S, S) float32 raw SAR pixels; NaN where invalid.
        true_offset_xy_px: (dx, dy) window offset of the template in the region, map coordinates.
        sensor: SAR sensor of the record.
        scene: scene key of the record.
        sar_scale: ``"linear"`` or ``"db"``.
        record: name of the source record.
        region_origin_xy_px: (x, y) of the region's top-left pixel in the record.
        rotation_deg: rotation applied to the template around its centre (counter-clockwise
            in (row, col) index space: output (r, c) samples the record at
            ``centre + scale * [[cos, -sin], [sin, cos]] @ (r - c0, c - c0)``).
        scale: scale applied to the template around its centre (> 1 zooms out).
    """

    template: np.ndarray
    region: np.ndarray
    true_offset_xy_px: tuple[float, float]
    sensor: str
    scene: str
    sar_scale: str
    record: str
    region_origin_xy_px: tuple[int, int] = (0, 0)
    rotation_deg: float = 0.0
    scale: float = 1.0


def _offset_range(
    origin: int, bias: float, half_extent: float, size: int, template: int, search: int
) -> tuple[float, float]:
    """Offsets d in [0, S - T] keeping the (rotated) template cut inside the record (1 axis).

    The template centre in record index coordinates is ``origin + d - bias + (T - 1) / 2``; all
    sample points lie within ``half_extent`` of it and must stay in ``[0, size - 1]``.
    """
    centre0 = origin - bias + (template - 1) / 2.0
    lo = max(0.0, half_extent - centre0)
    hi = min(float(search - template), size - 1 - half_extent - centre0)
    return lo, hi


def _cut_template(
    image: np.ndarray, centre_rc: tuple[float, float], size: int, angle_rad: float, scale: float
) -> np.ndarray:
    """(size, size) float32 cut of ``image`` around ``centre_rc`` (index coordinates).

    Integer positions without rotation/scale are sliced exactly; anything else is resampled
    bilinearly with ``scipy.ndimage.affine_transform`` (output index o maps to input
    ``centre + scale * R(angle) (o - (size - 1) / 2)``).
    """
    c_out = (size - 1) / 2.0
    r0, c0 = centre_rc[0] - c_out, centre_rc[1] - c_out
    if angle_rad == 0.0 and scale == 1.0 and float(r0).is_integer() and float(c0).is_integer():
        return image[int(r0) : int(r0) + size, int(c0) : int(c0) + size].astype(np.float32)
    cos, sin = np.cos(angle_rad) * scale, np.sin(angle_rad) * scale
    matrix = np.array([[cos, -sin], [sin, cos]])
    offset = np.asarray(centre_rc) - matrix @ np.array([c_out, c_out])
    out = ndimage.affine_transform(
        image.astype(np.float64), matrix, offset, output_shape=(size, size), order=1, cval=np.nan
    )
    return out.astype(np.float32)


#: A search region is drawn where at least this share of its pixels is valid (optical and SAR
#: data), as the plugin skips keypoints below its MIN_VALID fraction (0.9).
MIN_VALID_FRACTION = 0.9


def _region_origin(rec: PairRecord, search: int, rng: np.random.Generator) -> tuple[int, int]:
    """(row, col) of a uniformly drawn S x S search region with enough valid pixels.

    The first draw is kept when the region is at least ``MIN_VALID_FRACTION`` valid (always so
    for records without invalid pixels, whose samples are therefore unchanged); otherwise the
    origin is drawn uniformly among all the qualifying ones (exact, from an integral image).

    Raises:
        ValueError: no such region (a pair whose rasters barely or do not overlap).
    """
    h, w = rec.sar.shape
    sy, sx = int(rng.integers(0, h - search + 1)), int(rng.integers(0, w - search + 1))
    if rec.valid is None or rec.valid.all():
        return sy, sx
    ok = np.asarray(rec.valid, bool)
    if ok[sy : sy + search, sx : sx + search].mean() >= MIN_VALID_FRACTION:
        return sy, sx
    counts = box_sums(ok, search, search)  # whole counts: exact in float64
    rows, cols = np.nonzero(counts >= MIN_VALID_FRACTION * search * search)
    if len(rows):
        pick = int(rng.integers(0, len(rows)))
        return int(rows[pick]), int(cols[pick])
    share = float(ok.mean())
    raise ValueError(
        f"{rec.name}: no {search}x{search} px search region found with >= "
        f"{MIN_VALID_FRACTION:.0%} valid pixels ({share:.0%} of the pair is valid: optical and SAR "
        "data overlap there); check that the two rasters cover the same area, or drop the pair"
    )


#: Draws of one sample before a record is given up because every template falls on nodata.
MAX_TEMPLATE_DRAWS = 50


def _sample_one(
    rec: PairRecord,
    template: int,
    search: int,
    rng: np.random.Generator,
    max_rotation_deg: float,
    max_scale: float,
    subpixel: bool,
) -> Sample:
    """Draw one sample from ``rec`` (see :func:`make_samples`).

    Its template, too, must be at least ``MIN_VALID_FRACTION`` valid, as the plugin skips a
    keypoint whose template or search region is not (``nodata_optical``); such a draw is
    drawn again. A record without invalid pixels keeps its first draw, so its samples are
    unchanged.

    Raises:
        ValueError: no valid template in ``MAX_TEMPLATE_DRAWS`` draws.
    """
    args = (rec, template, search, rng, max_rotation_deg, max_scale, subpixel)
    for _ in range(MAX_TEMPLATE_DRAWS):
        sample = _draw_one(*args)
        if rec.valid is None or np.isfinite(sample.template).mean() >= MIN_VALID_FRACTION:
            return sample
    share = float(np.mean(np.asarray(rec.valid)))
    raise ValueError(
        f"{rec.name}: no {template}x{template} px template with >= {MIN_VALID_FRACTION:.0%} "
        f"valid pixels in {MAX_TEMPLATE_DRAWS} draws ({share:.0%} of the "
        "pair is valid: optical and SAR data overlap there); drop the pair or use a smaller "
        "template"
    )


def _draw_one(
    rec: PairRecord,
    template: int,
    search: int,
    rng: np.random.Generator,
    max_rotation_deg: float,
    max_scale: float,
    subpixel: bool,
) -> Sample:
    """One draw of a sample from ``rec``; :func:`_sample_one` checks its template."""
    h, w = rec.sar.shape
    sy, sx = _region_origin(rec, search, rng)
    angle = float(rng.uniform(-max_rotation_deg, max_rotation_deg)) if max_rotation_deg else 0.0
    scale = float(rng.uniform(1.0 - max_scale, 1.0 + max_scale)) if max_scale else 1.0
    rad = np.deg2rad(angle)
    half = scale * (template - 1) / 2.0 * (abs(np.cos(rad)) + abs(np.sin(rad)))
    offset = []
    for origin, bias, size in ((sx, rec.offset_xy_px[0], w), (sy, rec.offset_xy_px[1], h)):
        lo, hi = _offset_range(origin, bias, half, size, template, search)
        if not subpixel:
            lo, hi = float(np.ceil(lo - 1e-9)), float(np.floor(hi + 1e-9))
        if hi < lo:
            raise ValueError(
                f"{rec.name}: no offset keeps a {template}px template (rotation {angle:.1f} deg, "
                f"scale {scale:.2f}, bias {rec.offset_xy_px}) inside the {h}x{w} record; use "
                "a smaller template, rotation or scale"
            )
        offset.append(
            float(rng.uniform(lo, hi)) if subpixel else float(rng.integers(int(lo), int(hi) + 1))
        )
    dx, dy = offset
    # The SAR shows a ground point at its optical position + offset_xy_px, so the optical
    # content of SAR window (sx + dx, sy + dy) lies at (sx + dx, sy + dy) - offset_xy_px.
    centre = (
        sy + dy - rec.offset_xy_px[1] + (template - 1) / 2.0,
        sx + dx - rec.offset_xy_px[0] + (template - 1) / 2.0,
    )
    optical = rec.optical if rec.valid is None else np.where(rec.valid, rec.optical, np.nan)
    sar = rec.sar if rec.valid is None else np.where(rec.valid, rec.sar, np.nan)
    return Sample(
        template=_cut_template(optical, centre, template, rad, scale),
        region=np.asarray(sar[sy : sy + search, sx : sx + search], dtype=np.float32),
        true_offset_xy_px=(dx, dy),
        sensor=rec.sensor,
        scene=rec.scene,
        sar_scale=rec.sar_scale,
        record=rec.name,
        region_origin_xy_px=(sx, sy),
        rotation_deg=angle,
        scale=scale,
    )


def make_samples(
    records: Sequence[PairRecord],
    n_per_record: int,
    template: int = 128,
    search: int = 256,
    *,
    rng: np.random.Generator,
    max_rotation_deg: float = 0.0,
    max_scale: float = 0.0,
    subpixel: bool = False,
) -> list[Sample]:
    """Cut known-offset template/search pairs from co-registered records.

    Per sample: an S x S SAR search region at a uniform position inside the record (the whole
    record when it is S x S, e.g. 3MOS tiles); a true window offset (dx, dy) uniform over
    [0, S - T] (integers, or continuous with ``subpixel``), restricted where needed so that the
    optical template, corrected by the record's ``offset_xy_px`` and rotated/scaled, stays
    inside the record; the optical T x T template cut at the true position. Region and
    template are each at least ``MIN_VALID_FRACTION`` valid (drawn again where not).

    Args:
        records: co-registered pairs, each at least S x S.
        n_per_record: samples drawn from each record (>= 1).
        template: template side T.
        search: search region side S (>= T).
        rng: random generator (all randomness comes from it).
        max_rotation_deg: template rotation drawn uniformly in [-max, max] degrees.
        max_scale: template scale drawn uniformly in [1 - max, 1 + max] (0 <= max < 0.5).
        subpixel: draw continuous offsets (the template is then resampled bilinearly).

    Returns:
        ``len(records) * n_per_record`` samples, record by record.
    """
    if n_per_record < 1 or not 2 <= template <= search:
        raise ValueError(
            f"need n_per_record >= 1 and 2 <= template <= search, got {n_per_record}, "
            f"{template}, {search}"
        )
    if not (0.0 <= max_rotation_deg <= 45.0 and 0.0 <= max_scale < 0.5):
        raise ValueError("max_rotation_deg must be in [0, 45] and max_scale in [0, 0.5)")
    samples = []
    for rec in records:
        if min(rec.sar.shape) < search:
            raise ValueError(
                f"record {rec.name} is {rec.sar.shape[0]}x{rec.sar.shape[1]} px, smaller than "
                f"the {search}px search region; drop it or use a smaller search size"
            )
        for _ in range(n_per_record):
            samples.append(
                _sample_one(rec, template, search, rng, max_rotation_deg, max_scale, subpixel)
            )
    return samples


def repeated_samples(samples: Sequence[Sample]) -> str | None:
    """The warning that some samples repeat an earlier one exactly, or None when none do.

    A pair whose search region barely exceeds the template offers few positions (a 250 px
    template in a 256 px region: 7 x 7 offsets); more ``n_per_record`` draws than that repeat
    samples, which the figures then count as if they were independent.
    """
    seen: set[tuple[Any, ...]] = set()
    repeats: dict[str, int] = {}
    for s in samples:
        key = (s.record, s.region_origin_xy_px, s.true_offset_xy_px, s.rotation_deg, s.scale)
        if key in seen:
            repeats[s.record] = repeats.get(s.record, 0) + 1
        seen.add(key)
    if not repeats:
        return None
    worst = max(repeats, key=lambda r: repeats[r])
    return (
        f"{sum(repeats.values())} of {len(samples)} samples repeat an earlier sample of the "
        f"same pair exactly ({len(repeats)} pairs; {worst}: {repeats[worst]}), and the figures "
        "count each again: these pairs offer fewer distinct positions than samples are drawn. "
        "Draw fewer samples a pair, or use a search region larger than the template by more"
    )


def classical_map_fn(
    method: str | classical.MapFn,
    sar_spec: PreprocessSpec = DEFAULT_SAR_SPEC,
    optical_spec: PreprocessSpec = DEFAULT_OPTICAL_SPEC,
) -> BatchMapFn:
    """Batch map function of a classical peer on the same preprocessed inputs as the model.

    Args:
        method: a key of ``core.classical.METHODS`` or a map function.
        sar_spec: SAR preprocessing (dB conversion of linear data, stretch over the region).
        optical_spec: optical preprocessing (stretch over the template).

    Returns:
        ``map_fn(templates, regions, sar_scales) -> (B, m, m) float32``.
    """
    if isinstance(method, str):
        if method not in classical.METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {sorted(classical.METHODS)}")
        method = classical.METHODS[method]
    fn = method

    def run(templates: np.ndarray, regions: np.ndarray, sar_scales: Sequence[str]) -> np.ndarray:
        return np.stack(
            [
                fn(preprocess(t, optical_spec), preprocess(r, sar_spec, sar_scale=s))
                for t, r, s in zip(templates, regions, sar_scales)
            ]
        )

    return run


def learned_map_fn(matcher: Any, batch_size: int = 8) -> BatchMapFn:
    """Batch map function of an ONNX model (``model.runtime.OnnxMatcher``, dense maps).

    Templates and regions are preprocessed with the contract's specs (SAR over the region,
    optical over the template), then ``matcher.correspondence_maps(..., method="dense")``
    gives the cosine maps.

    Args:
        matcher: an ``OnnxMatcher`` (anything with ``.contract`` and ``.correspondence_maps``).
        batch_size: regions per onnxruntime call.
    """
    contract = matcher.contract
    t_size, s_size = contract.template_size, contract.search_size

    def run(templates: np.ndarray, regions: np.ndarray, sar_scales: Sequence[str]) -> np.ndarray:
        if templates.shape[-1] != t_size or regions.shape[-1] != s_size:
            raise ValueError(
                f"model {contract.name} expects {t_size}px templates and {s_size}px regions, "
                f"the samples have {templates.shape[-1]} and {regions.shape[-1]}; cut the "
                "samples with the model's sizes"
            )
        t = np.stack([preprocess(x, contract.optical) for x in templates])
        r = np.stack(
            [preprocess(x, contract.sar, sar_scale=s) for x, s in zip(regions, sar_scales)]
        )
        return matcher.correspondence_maps(t, r, method="dense", batch_size=batch_size)

    return run


@dataclass
class Predictions:
    """Peak of each sample's map, with the truth and the timing.

    Attributes:
        method: method name.
        pred_offset_xy_px: (N, 2) float64 sub-pixel peak (dx, dy) in map coordinates.
        true_offset_xy_px: (N, 2) float64 true offset.
        error_px: (N,) float64 Euclidean error.
        features: (N, k) float64 map features (``core.peaks.map_features``).
        confidence: (N,) float64 confidence in [0, 1].
        elapsed_s: wall time of maps + peak analysis.
        sensors: (N,) sensor per sample.
        scenes: (N,) scene per sample.
        maps: (K, m, m) float32 maps of K samples spread evenly over the set (for the figure).
        map_indices: (K,) the sample index of each kept map.
    """

    method: str
    pred_offset_xy_px: np.ndarray
    true_offset_xy_px: np.ndarray
    error_px: np.ndarray
    features: np.ndarray
    confidence: np.ndarray
    elapsed_s: float
    sensors: list[str]
    scenes: list[str]
    maps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    map_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def run_method(
    samples: Sequence[Sample],
    map_fn: BatchMapFn,
    batch: int = 8,
    *,
    name: str = "method",
    keep_maps: int = 0,
    confidence_model: Any = None,
    exclusion_radius_px: int = 4,
    similarity_range: tuple[float, float] | None = (-1.0, 1.0),
) -> Predictions:
    """Run one method on all samples and locate each map's peak.

    Args:
        samples: evaluation samples (all with the same T and S).
        map_fn: batch map function (see module docstring).
        batch: samples per call of ``map_fn``.
        name: method name recorded in the result.
        keep_maps: keep the maps of this many samples, spread evenly over ``samples`` (so
            that a figure shows several records and scenes, not the first record only).
        confidence_model: ``core.peaks.ConfidenceModel`` (None: the default model).
        exclusion_radius_px: second-peak exclusion radius for the peak analysis.
        similarity_range: the maps' value range for the peak analysis (the default suits
            cosine maps; a classical peer's is ``core.classical.SIMILARITY_RANGE[name]``, None
            for maps without a fixed range: each map's own min..max).

    Returns:
        The predictions, errors and timing.
    """
    if not samples or batch < 1:
        raise ValueError("need at least one sample and batch >= 1")
    preds: list[tuple[float, float]] = []
    feats: list[np.ndarray] = []
    conf: list[float] = []
    kept: list[np.ndarray] = []
    keep = np.unique(np.linspace(0, len(samples) - 1, min(keep_maps, len(samples))).round())
    keep = keep.astype(np.int64) if keep_maps > 0 else np.zeros(0, np.int64)
    start = time.perf_counter()
    for i in range(0, len(samples), batch):
        chunk = samples[i : i + batch]
        maps = map_fn(
            np.stack([s.template for s in chunk]),
            np.stack([s.region for s in chunk]),
            [s.sar_scale for s in chunk],
        )
        stats = peaks.analyse_maps(
            np.asarray(maps, np.float32), exclusion_radius_px, confidence_model, similarity_range
        )
        preds += [(st.subpixel_x_px, st.subpixel_y_px) for st in stats]
        conf += [st.confidence for st in stats]
        feats.append(peaks.map_features(stats))
        kept += [maps[j - i] for j in keep if i <= j < i + len(chunk)]
    elapsed = time.perf_counter() - start
    pred = np.asarray(preds, dtype=np.float64)
    true = np.asarray([s.true_offset_xy_px for s in samples], dtype=np.float64)
    m = samples[0].region.shape[0] - samples[0].template.shape[0] + 1
    return Predictions(
        method=name,
        pred_offset_xy_px=pred,
        true_offset_xy_px=true,
        error_px=np.hypot(*(pred - true).T),
        features=np.concatenate(feats, axis=0),
        confidence=np.asarray(conf, dtype=np.float64),
        elapsed_s=elapsed,
        sensors=[s.sensor for s in samples],
        scenes=[s.scene for s in samples],
        maps=np.asarray(kept, np.float32) if kept else np.zeros((0, m, m), np.float32),
        map_indices=keep,
    )


def error_metrics(error_px: np.ndarray) -> dict[str, float]:
    """Accuracy figures of a set of pixel errors.

    Args:
        error_px: (N,) non-negative errors.

    Returns:
        ``n``, ``mean_px``, ``median_px``, ``p1_px`` (1st percentile, the paper's Fig. 4 line)
        and ``within_{1,2,3,5}px`` (share of errors <= the radius).
    """
    e = np.asarray(error_px, dtype=np.float64).ravel()
    if e.size == 0:
        raise ValueError("error_metrics needs at least one error")
    out = {
        "n": int(e.size),
        "mean_px": float(e.mean()),
        "median_px": float(np.median(e)),
        "p1_px": float(np.percentile(e, 1)),
    }
    for r in WITHIN_PX:
        out[f"within_{r:g}px"] = float((e <= r).mean())
    return out


def confidence_metrics(
    confidence: np.ndarray,
    correct: np.ndarray,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """Ranking AUC and precision / kept share of accepted matches per confidence threshold."""
    conf = np.asarray(confidence, np.float64)
    ok = np.asarray(correct, bool)
    precision, kept = peaks.precision_at_thresholds(conf, ok, np.asarray(thresholds, np.float64))
    auc = peaks.ranking_auc(conf, ok) if 0 < ok.sum() < ok.size else float("nan")
    return {
        "auc": float(auc),
        "thresholds": [float(t) for t in thresholds],
        "precision": [float(p) for p in precision],
        "kept": [float(k) for k in kept],
    }


def cross_validated_confidence(
    features: np.ndarray, correct: np.ndarray, folds: int = 2, seed: int = 0
) -> np.ndarray:
    """Out-of-fold confidence of a logistic model fitted on the other folds.

    Gives every method (whose map values need not be cosines) a calibrated confidence without
    testing on the training data. Folds whose training part holds a single class predict that
    part's share of correct matches.

    Args:
        features: (N, k) float64 from ``core.peaks.map_features``.
        correct: (N,) bool.
        folds: number of folds (>= 2).
        seed: seed of the fold assignment.

    Returns:
        (N,) float64 confidence in [0, 1].
    """
    f, ok = np.asarray(features, np.float64), np.asarray(correct, bool)
    if folds < 2 or len(f) != len(ok):
        raise ValueError("need folds >= 2 and one correct flag per feature row")
    fold = np.random.default_rng(seed).permutation(len(f)) % folds
    out = np.empty(len(f))
    for k in range(folds):
        train, test = fold != k, fold == k
        labels = ok[train]
        if labels.all() or not labels.any():
            out[test] = float(labels.mean()) if labels.size else 0.5
            continue
        out[test] = peaks.fit_confidence_model(f[train], labels).predict(f[test])
    return out


def summarise(
    pred: Predictions,
    correct_px: float = 3.0,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """All figures of one method: overall, per sensor, per scene, speed, confidence.

    ``confidence`` uses the model's confidence (the one given to :func:`run_method`);
    ``confidence_cv`` a logistic model calibrated on this method's own maps by 2-fold
    cross-validation, comparable across methods whose maps are not cosines. Both give the
    precision and kept share at each of ``thresholds`` (include the one that
    :func:`markdown_table` is to report).
    """
    correct = pred.error_px <= correct_px
    groups: dict[str, dict[str, Any]] = {}
    for key, labels in (("per_sensor", pred.sensors), ("per_scene", pred.scenes)):
        arr = np.asarray(labels)
        groups[key] = {g: error_metrics(pred.error_px[arr == g]) for g in sorted(set(labels))}
    return {
        "method": pred.method,
        **error_metrics(pred.error_px),
        "matches_per_s": float(len(pred.error_px) / max(pred.elapsed_s, 1e-9)),
        "elapsed_s": float(pred.elapsed_s),
        "correct_px": float(correct_px),
        "confidence": confidence_metrics(pred.confidence, correct, thresholds),
        "confidence_cv": confidence_metrics(
            cross_validated_confidence(pred.features, correct), correct, thresholds
        ),
        **groups,
    }


def fmt_figure(value: float | None, spec: str) -> str:
    """Format a figure; NaN or None (undefined: precision with nothing accepted) becomes "-".

    results.json stores such a figure as null.
    """
    return "-" if value is None or np.isnan(value) else format(value, spec)


def markdown_table(summaries: Sequence[dict[str, Any]], threshold: float = 0.5) -> str:
    """Side-by-side table of the methods' figures (one row per method).

    Args:
        summaries: outputs of :func:`summarise`, on the same samples.
        threshold: confidence threshold reported in the "accepted" columns; it must be one of
            the summaries' thresholds (``summarise(..., thresholds=...)``).

    Returns:
        A GitHub markdown table.

    Raises:
        ValueError: ``threshold`` is not among a summary's thresholds (the figures of a
            neighbouring threshold would be shown under its label).
    """
    head = (
        "| method | n | mean px | median px | 1-pct px | <=1 px | <=2 px | <=3 px | <=5 px "
        f"| matches/s | AUC | AUC (cv) | precision @{threshold:g} | kept @{threshold:g} |"
    )
    lines = [head, "|" + "---|" * 14]
    for s in summaries:
        conf = s["confidence"]
        grid = np.asarray(conf["thresholds"], np.float64)
        i = int(np.argmin(np.abs(grid - threshold)))
        if not abs(grid[i] - threshold) <= 1e-9:
            raise ValueError(
                f"confidence threshold {threshold:g} is not among the thresholds of "
                f"{s['method']}'s summary (nearest {grid[i]:g}); pass it to "
                "summarise(thresholds=...)"
            )
        lines.append(
            f"| {s['method']} | {s['n']} | {s['mean_px']:.1f} | {s['median_px']:.1f} "
            f"| {s['p1_px']:.2f} | {s['within_1px']:.1%} | {s['within_2px']:.1%} "
            f"| {s['within_3px']:.1%} | {s['within_5px']:.1%} | {s['matches_per_s']:.1f} "
            f"| {fmt_figure(conf['auc'], '.2f')} | {fmt_figure(s['confidence_cv']['auc'], '.2f')} "
            f"| {fmt_figure(conf['precision'][i], '.1%')} | {conf['kept'][i]:.1%} |"
        )
    return "\n".join(lines) + "\n"


def _peak_distance(a: Predictions, b: Predictions) -> np.ndarray:
    """(N,) distance between two methods' predicted offsets, after checking the samples match."""
    if a.true_offset_xy_px.shape != b.true_offset_xy_px.shape or not np.allclose(
        a.true_offset_xy_px, b.true_offset_xy_px
    ):
        raise ValueError(
            f"{a.method} and {b.method} were not run on the same samples; run both methods "
            "in one evaluation"
        )
    return np.hypot(*(a.pred_offset_xy_px - b.pred_offset_xy_px).T)


def _share_within(error_px: np.ndarray, radius_px: float) -> float:
    """Share of ``error_px`` within ``radius_px``; NaN for no errors."""
    return float(np.mean(error_px <= radius_px)) if error_px.size else float("nan")


def agreement(
    a: Predictions,
    b: Predictions,
    radii_px: Sequence[float] = (1.0, 2.0, 3.0),
    correct_px: float = 3.0,
    loose_px: float = 5.0,
) -> list[dict[str, Any]]:
    """How often two methods agree, and how often ``a`` is right where they do.

    Two independent methods (the learned matcher and CFOG) that put the peak at the same
    offset are rarely both wrong at the same place by chance, so the share of such agreed
    matches that the ground truth scores wrong measures the truth (or a failure both share,
    such as a straight line both lock onto), not either method; it bounds what a confidence
    that judges match quality can reach against that truth.

    Args:
        a: predictions of the method whose correctness is scored.
        b: predictions of the other method, on the same samples.
        radii_px: agreement radii (distance between the two predicted offsets).
        correct_px: radius of a correct match, as in :func:`summarise`.
        loose_px: a second, looser correctness radius.

    Returns:
        One dict per radius: ``radius_px``, ``n_agree``, ``kept`` (share of all samples),
        ``precision`` (share of the agreed matches of ``a`` within ``correct_px``; NaN when
        none agree), ``precision_loose`` (within ``loose_px``) and ``per_scene``
        (``{scene: [n_agree, precision]}``).

    Raises:
        ValueError: the predictions are not of the same samples.
    """
    dist = _peak_distance(a, b)
    scenes = np.asarray(a.scenes)
    out = []
    for r in radii_px:
        agree = dist <= r
        per_scene = {}
        for s in sorted(set(a.scenes)):
            k = agree & (scenes == s)
            per_scene[str(s)] = [int(k.sum()), _share_within(a.error_px[k], correct_px)]
        out.append(
            {
                "radius_px": float(r),
                "n_agree": int(agree.sum()),
                "kept": float(agree.mean()),
                "precision": _share_within(a.error_px[agree], correct_px),
                "precision_loose": _share_within(a.error_px[agree], loose_px),
                "per_scene": per_scene,
            }
        )
    return out


def agreement_table(
    rows: Sequence[dict[str, Any]], a: str, b: str, correct_px: float = 3.0, loose_px: float = 5.0
) -> str:
    """Markdown table of :func:`agreement` rows."""
    lines = [
        f"Agreement of {a} and {b} (matches where both put the peak within r px of each other):",
        "",
        f"| r px | agreed | kept | {a} within {correct_px:g} px | {a} within {loose_px:g} px "
        "| per scene: agreed / within |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        scenes = ", ".join(
            f"{s} {n} / {fmt_figure(p, '.0%')}" for s, (n, p) in row["per_scene"].items()
        )
        lines.append(
            f"| {row['radius_px']:g} | {row['n_agree']} | {row['kept']:.1%} "
            f"| {fmt_figure(row['precision'], '.1%')} "
            f"| {fmt_figure(row['precision_loose'], '.1%')} "
            f"| {scenes} |"
        )
    return "\n".join(lines) + "\n"


def agreed_residuals(
    a: Predictions,
    b: Predictions,
    groups: Sequence[str],
    agree_px: float = 1.0,
    min_agreed: int = 2,
) -> list[dict[str, Any]]:
    """Per group (e.g. tile), the residual ``prediction - truth`` of the agreed matches.

    Several windows of one tile on which two independent methods agree to ``agree_px`` and
    that share one residual (small ``spread_px``) measure that tile's registration error: a
    wrong peak would not repeat at the same offset for different templates.

    Args:
        a: predictions of one method (the residuals are its own).
        b: predictions of the other method, on the same samples.
        groups: one group name per sample (``Sample.record`` for tiles).
        agree_px: agreement radius between the two predicted offsets.
        min_agreed: groups with fewer agreed matches are left out.

    Returns:
        One dict per group with at least ``min_agreed`` agreed matches, in group order:
        ``group``, ``n_agreed``, ``residual_xy_px`` (mean), ``residual_px`` (its length) and
        ``spread_px`` (largest distance of a residual from the mean).

    Raises:
        ValueError: ``groups`` does not have one entry per sample, or ``a`` and ``b`` were not
            run on the same samples.
    """
    if len(groups) != len(a.error_px):
        raise ValueError(f"{len(groups)} groups for {len(a.error_px)} samples; give one each")
    agree = _peak_distance(a, b) <= agree_px
    residual = a.pred_offset_xy_px - a.true_offset_xy_px
    names = np.asarray(groups)
    out = []
    for g in sorted(set(groups)):
        r = residual[agree & (names == g)]
        if len(r) < min_agreed:
            continue
        mean = r.mean(axis=0)
        out.append(
            {
                "group": str(g),
                "n_agreed": int(len(r)),
                "residual_xy_px": [float(mean[0]), float(mean[1])],
                "residual_px": float(np.hypot(*mean)),
                "spread_px": float(np.hypot(*(r - mean).T).max()),
            }
        )
    return out
