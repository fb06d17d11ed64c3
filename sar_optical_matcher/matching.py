"""The Compute correspondence engine: optical keypoints -> SAR matches with peak statistics.

For every keypoint an optical template (T x T, centred on it) is compared with every window of
a SAR search region (S x S, same centre) that is first resampled onto the OPTICAL pixel grid
from the two georeferences (any CRS / pixel size). With ``grid_scale`` k > 1 both are resampled
onto the optical grid with k times larger pixels (e.g. the SAR's pixel size when the optical
is much finer), so the model sees the scale it was trained at; records stay in optical pixels.
The correspondence map's peak gives the shift ``(dx, dy)``: the template content is found at
keypoint + (dx, dy) in the SAR-on-optical-grid image, i.e. where the SAR's current georeference
puts it ((0, 0) = already aligned).

Streaming: rasters are read window by window, ``batch_size`` keypoints at a time; memory is
bounded by the batch (plus the maps when ``keep_maps``), never by the raster size.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sar_optical_matcher.core.peaks import ConfidenceModel, analyse_maps
from sar_optical_matcher.core.preprocessing import SAR_SCALES, preprocess
from sar_optical_matcher.model.runtime import METHODS, Canceled, OnnxMatcher
from sar_optical_matcher.rasters import (
    RasterInfo,
    band_sample_grid,
    linear_sar_evidence,
    map_to_pixel,
    pixel_to_map,
    raster_sar_scale,
    read_on_grid,
    read_window,
    scaled_grid,
    transform_points,
)

__all__ = ["Canceled", "MatchRecord", "MatchResult", "db_scale_warning", "match_keypoints"]

NAN = float("nan")

#: Least share of valid pixels of an optical template or SAR search region for a keypoint to be
#: matched (under it: ``nodata_optical`` / ``nodata_sar``). Detection uses it too
#: (``registration.sar_coverage``), so that keypoints are not spent where matching skips them.
MIN_VALID_FRACTION = 0.9


@dataclass
class MatchRecord:
    """One keypoint's match (pixel coordinates follow ``core.__init__``).

    Attributes:
        id: index of the keypoint in the input.
        opt_x_px: keypoint column in the optical raster.
        opt_y_px: keypoint row in the optical raster.
        dx_px: sub-pixel shift (optical pixels): the template content is found at
            ``opt + (dx, dy)`` in the SAR resampled onto the optical grid; (0, 0) = aligned.
        dy_px: see ``dx_px``.
        sar_x_px: the matched point in the SAR raster's own pixel grid (column).
        sar_y_px: the matched point in the SAR raster's own pixel grid (row).
        opt_x_map: keypoint in the optical CRS.
        opt_y_map: keypoint in the optical CRS.
        sar_x_map: matched point in the SAR CRS.
        sar_y_map: matched point in the SAR CRS.
        score: peak cosine similarity.
        second_score: best cosine outside the peak's exclusion radius.
        ratio: peak-to-second-peak ratio (>= 1).
        spread_px: RMS extent of the peak, optical pixels (the map's, in matching-grid pixels,
            times ``grid_scale``, as ``dx_px``).
        confidence: match confidence in [0, 1]; NaN (NULL in a layer) for a skipped keypoint,
            like the other figures of its match (it was 0, which read as a measured one).
        accepted: ``status == "ok"`` and ``confidence >= confidence_threshold``.
        status: ``"ok"`` or why the keypoint was skipped (``"nodata_optical"``,
            ``"nodata_sar"``, ``"constant_optical"``, ``"constant_sar"``; constant means
            constant after the contract's percentile stretch, which at 2-98 % also flattens a
            patch that is one value but for under 2 % of its pixels above and 2 % below it).
    """

    id: int
    opt_x_px: float
    opt_y_px: float
    dx_px: float = NAN
    dy_px: float = NAN
    sar_x_px: float = NAN
    sar_y_px: float = NAN
    opt_x_map: float = NAN
    opt_y_map: float = NAN
    sar_x_map: float = NAN
    sar_y_map: float = NAN
    score: float = NAN
    second_score: float = NAN
    ratio: float = NAN
    spread_px: float = NAN
    confidence: float = NAN
    accepted: bool = False
    status: str = "ok"


@dataclass
class MatchResult:
    """All records, in keypoint order, and optionally the (N, m, m) maps (NaN where skipped).

    ``warnings``: what the caller should tell the user about the inputs (e.g.
    :func:`db_scale_warning`), also given to ``match_keypoints``'s ``warn`` as they arise.
    """

    records: list[MatchRecord]
    template_size: int
    search_size: int
    maps: np.ndarray | None = None
    sar_scale: str = "auto"
    counts: dict[str, int] = field(default_factory=dict)
    grid_scale: float = 1.0
    warnings: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> list[MatchRecord]:
        """The accepted records."""
        return [r for r in self.records if r.accepted]


def _check_args(
    optical: RasterInfo, optical_band: int, sar: RasterInfo, sar_band: int, keypoints: np.ndarray,
    sar_scale: str, method: str, batch_size: int, min_valid_fraction: float,
) -> np.ndarray:  # fmt: skip
    optical.check_band(optical_band, role="OPTICAL")
    sar.check_band(sar_band)
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.size == 0:
        return kp.reshape(0, 2)
    if kp.ndim != 2 or kp.shape[1] != 2 or not np.isfinite(kp).all():
        raise ValueError(
            f"keypoints must be a finite (N, 2) array of optical pixel (x, y), got {kp.shape}"
        )
    if sar_scale not in SAR_SCALES:
        raise ValueError(f"sar_scale must be one of {SAR_SCALES}, not {sar_scale!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise ValueError(f"min_valid_fraction must be in [0, 1], got {min_valid_fraction}")
    return kp


#: Share of negative values above which a SAR band cannot be linear amplitude/intensity
#: (a noise-subtracted linear band has a few negative pixels; a dB band mostly negative ones).
LINEAR_MAX_NEGATIVE = 0.5


def _check_linear(sar: RasterInfo, band: int, grid: np.ndarray | None = None) -> None:
    """Refuse ``sar_scale="linear"`` for a band whose values are mostly negative (dB data).

    Linear values are floored at 1e-6 before the dB conversion: a dB band taken as linear
    became -60 dB almost everywhere, and 5 of 6 keypoints were skipped as ``constant_sar``
    (a misleading reason) while the sixth matched noise.
    """
    sample = band_sample_grid(sar, band) if grid is None else grid
    values = sample[np.isfinite(sample)]
    share = float((values < 0).mean()) if values.size else 0.0
    if share > LINEAR_MAX_NEGATIVE:
        raise ValueError(
            f"SAR_SCALE is linear, but {share:.0%} of the SAR band {band}'s values are negative "
            f"(min {float(values.min()):.4g}): linear amplitude or intensity is never negative, "
            "so these look like dB; choose dB or auto for SAR_SCALE"
        )


def db_scale_warning(sar: RasterInfo, band: int, grid: np.ndarray | None = None) -> str | None:
    """The warning for ``sar_scale="db"`` on a band that looks linear, or None.

    dB values are used as they are; linear amplitude or intensity taken as dB skips the log
    conversion and matches worse, with no error to say so (``rasters.linear_sar_evidence``
    says what was seen). ``grid``: the band's ``rasters.band_sample_grid``, where read.
    """
    dtype = sar.dtypes[band - 1]
    evidence = linear_sar_evidence(band_sample_grid(sar, band) if grid is None else grid, dtype)
    if evidence is None:
        return None
    return (
        f"SAR_SCALE is dB, but SAR band {band} ({dtype}) looks like linear amplitude or "
        f"intensity: {evidence}. dB values are used as they are, without the log conversion "
        "linear values need, so matching is poorer: choose auto or linear for SAR_SCALE "
        "unless these really are dB values"
    )


#: Share of a SAR band's valid pixels that are exactly 0, most of them inside zero areas,
#: from which :func:`zero_fill_warning` speaks.
ZERO_FILL_SHARE = 0.01


def zero_fill_warning(sar: RasterInfo, band: int, grid: np.ndarray | None = None) -> str | None:
    """The warning for a SAR band without nodata whose zeros fill areas, or None.

    An undeclared no-data fill (a swath edge, a GRD product's frame, 0 outside the data) is
    matched as data: keypoints along its edge are spent on matches that peak on it (a linear
    SAR with a 0 triangle: 29 of 72 matches, said only as "matches peak on the edge of the
    search range ... check the rasters' georeferences"). Read on a coarse grid of the band
    (:func:`~sar_optical_matcher.rasters.band_sample_grid`): it speaks where at least
    :data:`ZERO_FILL_SHARE` of the valid pixels are 0 and most zeros have four zero
    neighbours (an area, not scattered dark pixels). ``grid``: that read, where done.
    """
    if sar.nodata[band - 1] is not None:
        return None
    if grid is None:
        grid = band_sample_grid(sar, band)
    valid = np.isfinite(grid)
    zero = valid & (grid == 0)
    count = int(zero.sum())
    if count < ZERO_FILL_SHARE * max(int(valid.sum()), 1) or count < 16:
        return None
    inner = zero[1:-1, 1:-1] & zero[:-2, 1:-1] & zero[2:, 1:-1] & zero[1:-1, :-2] & zero[1:-1, 2:]
    if int(inner.sum()) < 0.5 * count:
        return None
    name = Path(sar.path).name
    return (
        f"{count / valid.sum():.1%} of SAR band {band}'s pixels are exactly 0, in areas, and "
        f"{name} declares no nodata value: if they are a no-data fill (a swath edge, a GRD "
        "product's frame), they are matched as data and the keypoints along their edge are "
        "spent on it. Give the SAR its nodata value first "
        f"(gdal_edit.py -a_nodata 0 {shlex.quote(name)})"
    )


def _sar_scale_and_notes(sar: RasterInfo, band: int, sar_scale: str) -> tuple[str, list[str]]:
    """The SAR band's scale and the warnings about it.

    ``auto`` is decided once for the raster (the warp returns float32 regions); the warnings
    are :func:`db_scale_warning`'s and :func:`zero_fill_warning`'s.

    Raises:
        ValueError: ``linear`` for a band whose values are mostly negative (dB).
    """
    notes: list[str] = []
    grid = band_sample_grid(sar, band)  # one decimated read of the band for all of them
    if sar_scale == "auto":
        sar_scale = raster_sar_scale(sar, band, grid=grid)
    elif sar_scale == "linear":
        _check_linear(sar, band, grid)
    elif (note := db_scale_warning(sar, band, grid)) is not None:  # dB as the caller said
        notes.append(note)
    if (fill := zero_fill_warning(sar, band, grid)) is not None:
        notes.append(fill)
    return sar_scale, notes


def _confidence_model(matcher: OnnxMatcher) -> ConfidenceModel | None:
    raw = matcher.contract.training.get("confidence_model")
    return ConfidenceModel.from_dict(raw) if raw else None


def _usable(data: np.ndarray, valid: np.ndarray, min_fraction: float, what: str) -> str:
    """``"ok"`` or the reason a patch cannot be matched."""
    if valid.mean() < min_fraction or not valid.any():
        return f"nodata_{what}"
    values = data[valid]
    if float(values.max()) == float(values.min()):
        return f"constant_{what}"
    return "ok"


def _flat(patch: np.ndarray, valid: np.ndarray) -> bool:
    """Whether a preprocessed patch is one value on its valid pixels: nothing left to match.

    The percentile stretch also flattens a patch that is one value but for fewer than
    ``low_percentile`` % of its pixels below it and ``100 - high_percentile`` % above (a small
    object on calm water, a saturated cloud, an undeclared fill value): the model would see a
    constant input and the peak of its map would be noise.
    """
    values = patch[valid]
    return bool(values.size) and float(values.max()) == float(values.min())


def _read_pair(
    optical: RasterInfo, optical_band: int, sar: RasterInfo, sar_band: int,
    corner: tuple[int, int], t: int, s: int, min_fraction: float, sar_scale: str,
    matcher: OnnxMatcher, grid: RasterInfo | None = None, sar_resampling: str = "bilinear",
) -> tuple[str, np.ndarray | None, np.ndarray | None]:  # fmt: skip
    """Read and preprocess the template at ``corner`` and its search region.

    ``corner`` is in pixels of ``grid`` (None: the optical grid itself, read as stored).
    """
    tx0, ty0 = corner
    if grid is None:
        tpl, tpl_ok = read_window(optical, optical_band, tx0, ty0, t, t)
    else:
        tpl, tpl_ok = read_on_grid(optical, optical_band, grid, tx0, ty0, t, t, "average")
    status = _usable(tpl, tpl_ok, min_fraction, "optical")
    if status != "ok":
        return status, None, None
    c = matcher.contract
    tpl_pre = preprocess(tpl, c.optical, valid=tpl_ok)
    if _flat(tpl_pre, tpl_ok):
        return "constant_optical", None, None
    off = (s - t) // 2
    target = optical if grid is None else grid
    reg, reg_ok = read_on_grid(sar, sar_band, target, tx0 - off, ty0 - off, s, s, sar_resampling)
    status = _usable(reg, reg_ok, min_fraction, "sar")
    if status != "ok":
        return status, None, None
    reg_pre = preprocess(reg, c.sar, valid=reg_ok, sar_scale=sar_scale)
    if _flat(reg_pre, reg_ok):
        return "constant_sar", None, None
    return "ok", tpl_pre, reg_pre


def _locate(
    optical: RasterInfo, sar: RasterInfo, xy_opt_px: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optical pixels -> (optical map, SAR map, SAR pixel), each (N, 2)."""
    opt_map = pixel_to_map(optical, xy_opt_px)
    sar_map = transform_points(opt_map, optical.crs_wkt, sar.crs_wkt)
    return opt_map, sar_map, map_to_pixel(sar, sar_map)


def match_keypoints(
    optical: RasterInfo,
    optical_band: int,
    sar: RasterInfo,
    sar_band: int,
    keypoints_xy_px: np.ndarray,
    matcher: OnnxMatcher,
    sar_scale: str = "auto",
    method: str = "dense",
    batch_size: int = 4,
    min_valid_fraction: float = MIN_VALID_FRACTION,
    confidence_threshold: float = 0.5,
    keep_maps: bool = False,
    progress: Callable[[float], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
    grid_scale: float = 1.0,
    sar_resampling: str = "bilinear",
    warn: Callable[[str], None] | None = None,
) -> MatchResult:
    """Match optical keypoints in the SAR raster.

    Args:
        optical: the optical raster (its pixel grid, or that grid with ``grid_scale`` times
            larger pixels, is the matching grid).
        optical_band: 1-based optical band.
        sar: the SAR raster (any CRS / pixel size overlapping the optical).
        sar_band: 1-based SAR band.
        keypoints_xy_px: (N, 2) float, optical pixel (x, y) of the template centres.
        matcher: the loaded model.
        sar_scale: ``"auto"``, ``"linear"`` or ``"db"`` (``auto``: decided once for the SAR
            band, ``rasters.raster_sar_scale``: uint8 values, or more than 1 % negative ones,
            are dB / display data, anything else linear).
        method: ``"dense"`` or ``"per_window"`` (the paper's reference procedure).
        batch_size: keypoints read and matched at a time (bounds the memory).
        min_valid_fraction: skip a keypoint whose template or search region has fewer valid
            pixels than this.
        confidence_threshold: records with at least this confidence are ``accepted``.
        keep_maps: also return the (N, m, m) float32 correspondence maps.
        progress: called with the fraction done, 0..1 (as the rest of the pipeline).
        is_canceled: polled per batch; True raises :class:`Canceled`.
        grid_scale: matching-grid pixel size in optical pixels (>= 1; 1: the optical grid as
            stored). Templates are averaged onto it, the SAR resampled with ``sar_resampling``;
            keypoints, shifts and SAR positions of the records stay in optical pixels, and the
            maps' offsets are in matching-grid pixels.
        sar_resampling: GDAL resampling of the SAR onto the matching grid (``"bilinear"``;
            ``"average"`` when the SAR pixels are much smaller than the grid's).
        warn: called with each warning about the inputs before the matching starts
            (:func:`db_scale_warning`); the result's ``warnings`` holds them too.

    Returns:
        A :class:`MatchResult` with one record per keypoint, in input order.

    Raises:
        Canceled: ``is_canceled()`` returned True.
        ValueError: bad arguments (bands, keypoints shape, options).
    """
    kp = _check_args(optical, optical_band, sar, sar_band, keypoints_xy_px, sar_scale, method,
                     batch_size, min_valid_fraction)  # fmt: skip
    if not (math.isfinite(grid_scale) and grid_scale >= 1.0):
        raise ValueError(
            f"grid_scale must be >= 1 (matching-grid pixels in optical pixels), got {grid_scale}"
        )
    grid = None if grid_scale == 1.0 else scaled_grid(optical, grid_scale)
    t, s = matcher.contract.template_size, matcher.contract.search_size
    m, off = s - t + 1, (s - t) // 2
    sar_scale, notes = _sar_scale_and_notes(sar, sar_band, sar_scale)
    if warn is not None:
        for note in notes:
            warn(note)
    model = _confidence_model(matcher)
    maps_out = np.full((len(kp), m, m), np.nan, np.float32) if keep_maps else None
    records = []
    for start in range(0, len(kp), batch_size):
        if is_canceled is not None and is_canceled():
            raise Canceled("matching canceled")
        batch = kp[start : start + batch_size]
        on_grid = batch / grid_scale  # continuous pixel coordinates scale with the pixel size
        corners = [(math.floor(x - t / 2 + 0.5), math.floor(y - t / 2 + 0.5)) for x, y in on_grid]
        pairs = [_read_pair(optical, optical_band, sar, sar_band, c, t, s, min_valid_fraction,
                            sar_scale, matcher, grid, sar_resampling)
                 for c in corners]  # fmt: skip
        ready = [(i, tpl, reg) for i, (_, tpl, reg) in enumerate(pairs)
                 if tpl is not None and reg is not None]  # fmt: skip
        ok = [i for i, _, _ in ready]
        stats = []
        if ready:
            maps = matcher.correspondence_maps(
                np.stack([tpl for _, tpl, _ in ready]), np.stack([reg for _, _, reg in ready]),
                method=method, batch_size=len(ready), is_canceled=is_canceled,
            )  # fmt: skip
            stats = analyse_maps(maps, confidence_model=model)
            if maps_out is not None:
                maps_out[[start + i for i in ok]] = maps
        records += _records(optical, sar, batch, start, corners, pairs, ok, stats, t, off,
                            confidence_threshold, grid_scale)  # fmt: skip
        if progress is not None:
            progress(min(start + batch_size, len(kp)) / len(kp))
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    return MatchResult(records, t, s, maps_out, sar_scale, counts, grid_scale, notes)


def _records(
    optical: RasterInfo, sar: RasterInfo, batch: np.ndarray, start: int,
    corners: list[tuple[int, int]], pairs: list, ok: list[int], stats: list, t: int, off: int,
    threshold: float, grid_scale: float = 1.0,
) -> list[MatchRecord]:  # fmt: skip
    """Build the batch's records.

    The shift is measured from the template's own corner in matching-grid pixels and reported
    in optical pixels.
    """
    shift = np.full((len(batch), 2), np.nan)
    for i, st in zip(ok, stats):
        shift[i] = ((st.subpixel_x_px - off) * grid_scale, (st.subpixel_y_px - off) * grid_scale)
    opt_map = pixel_to_map(optical, batch)
    _, sar_map, sar_px = _locate(optical, sar, np.nan_to_num(batch + shift))
    by_index = dict(zip(ok, stats))
    out = []
    for i, (x, y) in enumerate(batch):
        rec = MatchRecord(start + i, float(x), float(y), opt_x_map=float(opt_map[i, 0]),
                          opt_y_map=float(opt_map[i, 1]), status=pairs[i][0])  # fmt: skip
        st = by_index.get(i)
        if st is not None:
            rec.dx_px, rec.dy_px = float(shift[i, 0]), float(shift[i, 1])
            rec.sar_x_px, rec.sar_y_px = float(sar_px[i, 0]), float(sar_px[i, 1])
            rec.sar_x_map, rec.sar_y_map = float(sar_map[i, 0]), float(sar_map[i, 1])
            rec.score, rec.second_score, rec.ratio = st.score, st.second_score, st.ratio
            # in optical pixels like every _px field of the record (the confidence was
            # computed, as calibrated, from the map's own spread in matching-grid pixels)
            rec.spread_px, rec.confidence = st.spread_px * grid_scale, st.confidence
            rec.accepted = bool(st.confidence >= threshold)
        out.append(rec)
    return out
