"""QGIS-free logic of Compute correspondence (shared by Register SAR to optical).

The settings record, the overlap check, which keypoints are matched and the texts that say
why some or all were not: plain values in, plain values out, so that
``compute_correspondence`` stays a thin adapter between Processing parameters and these.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sar_optical_matcher import registration as reg

MATCH_FIELDS = (
    ("id", int),
    ("opt_x_px", float),
    ("opt_y_px", float),
    ("dx_px", float),
    ("dy_px", float),
    ("sar_x_px", float),
    ("sar_y_px", float),
    ("opt_x_map", float),
    ("opt_y_map", float),
    ("sar_x_map", float),
    ("sar_y_map", float),
    ("score", float),
    ("second_score", float),
    ("ratio", float),
    ("spread_px", float),
    ("confidence", float),
    ("accepted", bool),
    ("status", str),
)


@dataclass(frozen=True)
class CorrespondenceSettings:
    """Plain values of the matching parameters (shared by Register SAR to optical).

    Attributes:
        sar_path: SAR raster file.
        sar_band: 1-based SAR band.
        optical_path: optical raster file.
        optical_band: 1-based optical band.
        keypoints_map: (N, 2) float64 keypoints in the optical CRS, or ``None`` to detect them.
        detect: detection settings used when ``keypoints_map`` is ``None``.
        match: matching settings (model, sizes, scale, device, batch, confidence).
        maps_folder: folder for correspondence-map GeoTIFFs, or ``None``.
        masked: a MASK layer was given (``detect.mask_wkt`` may also hold a reprojected
            EXTENT's outline).
        keypoint_ids: (N,) int ids of ``keypoints_map`` (their indices in the whole
            KEYPOINTS layer, also for a selection), or ``None`` for 0, 1, ...
    """

    sar_path: str
    sar_band: int
    optical_path: str
    optical_band: int
    keypoints_map: np.ndarray | None
    detect: reg.DetectSettings
    match: reg.MatchSettings
    maps_folder: str | None = None
    masked: bool = False
    keypoint_ids: np.ndarray | None = None


def check_overlap(
    optical: Any, sar: Any, search_size: int, grid_scale: float = 1.0,
    match_pixel_size: float = 0.0,
) -> tuple[float, float, float, float]:  # fmt: skip
    """Raise unless the SAR footprint covers at least one search region of the matching grid.

    The matching grid has pixels of ``grid_scale`` optical pixels, set by ``match_pixel_size``
    (optical map units) where that is not 0 (automatic): a region that fits on the optical
    grid but not on that one is MATCH_PIXEL_SIZE's error (20, metres, for an optical in
    degrees was 196,282 optical px a grid pixel, and the rasters were blamed). Returns the
    footprint's bounding box in optical pixels (``rasters.footprint_overlap``).

    Raises:
        ValueError: the rasters do not overlap, or by less than one search region.
    """
    from sar_optical_matcher import rasters

    x0, y0, x1, y1 = rasters.footprint_overlap(optical, sar)
    w, h = int(x1 - x0), int(y1 - y0)
    needed = int(math.ceil(search_size * grid_scale))
    sizes = f"(OPTICAL {optical.width} x {optical.height} px, SAR {sar.width} x {sar.height} px)"
    if w <= 0 or h <= 0:
        raise ValueError(
            f"the SAR and optical rasters do not overlap {sizes}: no SAR pixel lies on the "
            "optical raster, so there is no search region to match in; choose two rasters of "
            "the same place/area and check that their CRSs are set correctly"
        )
    if min(w, h) < needed and match_pixel_size > 0 and min(w, h) >= search_size:
        optical_px = match_pixel_size / grid_scale  # matching_grid's scale, undone
        most = min(w, h) / search_size * optical_px
        raise ValueError(
            f"MATCH_PIXEL_SIZE {match_pixel_size:g} makes one search region {search_size} x "
            f"{search_size} matching-grid pixels of {grid_scale:.6g} optical px ({needed} optical "
            f"px a side), more than the {w} x {h} optical pixels the SAR and optical rasters "
            f"overlap by {sizes}. MATCH_PIXEL_SIZE is in optical map units "
            f"({reg.map_units(optical)}); the optical pixel is {optical_px:.4g}: "
            f"give a smaller one, at most {most:.4g} here, or 0 (automatic)"
        )
    if min(w, h) < needed:
        grid = "" if grid_scale == 1.0 else f" of {grid_scale:.2f}x optical pixels"
        raise ValueError(
            f"the SAR and optical rasters overlap by only {w} x {h} optical pixels {sizes}, "
            f"smaller than one search region ({search_size} x {search_size} px{grid}, "
            f"{needed} optical px); choose rasters that cover more of the same place/area, or "
            "a model with a smaller search region"
        )
    return x0, y0, x1, y1


def detection_on_sar(
    detect: reg.DetectSettings, optical: Any, sar: Any, sar_band: int, search_size: int,
    grid_scale: float, template_size: int = 0,
) -> reg.DetectSettings:  # fmt: skip
    """``detect`` limited to where a search region of valid SAR data lies around a keypoint.

    Not the footprint's bounding box shrunk by half a search region (before plugin 0.3.5): on
    a rotated SAR grid or a swath inside nodata triangles, 7-27 % of the keypoints fell in its
    corners, outside the SAR data, and were skipped as ``nodata_sar``
    (``registration.sar_coverage``). With a ``template_size`` (matching-grid pixels), also
    where the optical template (``detect.band``) is valid enough to be matched: along an
    optical nodata triangle 8 of 53 keypoints were skipped as ``nodata_optical``.
    """
    coverage = reg.sar_coverage(optical, sar, sar_band, search_size, grid_scale,
                                optical_band=detect.band, template_size=template_size)  # fmt: skip
    return dataclasses.replace(detect, coverage=coverage)


def select_layer_keypoints(
    xy_px: np.ndarray, width: int, height: int, filters: Sequence[tuple[str, np.ndarray]]
) -> tuple[np.ndarray, list[str]]:
    """Which of a layer's keypoints are matched, and the warnings about the others.

    Args:
        xy_px: (N, 2) float64 keypoints in optical pixels.
        width: optical raster width (px).
        height: optical raster height (px).
        filters: (name, (N,) bool wanted) pairs, e.g. ``("EXTENT", inside_extent)``, applied
            in order to the points on the raster.

    Returns:
        (ids, warnings): the (M,) int indices of the kept points; one warning per filter that
        left points out (and one for points off the raster).
    """
    inside = (
        (xy_px[:, 0] >= 0) & (xy_px[:, 0] < width) & (xy_px[:, 1] >= 0) & (xy_px[:, 1] < height)
    )
    warnings = []
    if not inside.all():
        warnings.append(
            f"{int((~inside).sum())} keypoints lie outside the optical raster and are skipped"
        )
    keep = inside.copy()
    for name, wanted in filters:
        if (keep & ~wanted).any():
            warnings.append(
                f"{int((keep & ~wanted).sum())} keypoints on the optical raster lie outside "
                f"{name} and are skipped"
            )
        keep &= wanted
    return np.flatnonzero(keep), warnings


def no_keypoints_message(from_layer: bool, masked: bool = False, layer_points: int = -1) -> str:
    """Why there is nothing to match, and what to do.

    ``layer_points``: how many points the KEYPOINTS layer has (0: an empty layer or selection).
    """
    if from_layer and layer_points == 0:
        return (
            "there are no keypoints to match: the KEYPOINTS layer has no points (an empty "
            "layer, or 'Selected features only' with no point selected); choose a layer with "
            "points, select some, or leave KEYPOINTS unset to detect keypoints"
        )
    if from_layer:
        return (
            "there are no keypoints to match: none of the KEYPOINTS layer's points lies on the "
            "optical raster (and inside EXTENT and MASK, where given); choose a layer that "
            "covers it, or leave KEYPOINTS unset to detect keypoints"
        )
    if masked:
        return (
            "there are no keypoints to match: no corner was found inside MASK (do its polygons "
            "overlap the optical raster where the SAR covers it, away from BORDER?); check the "
            "mask, leave it empty, or give a KEYPOINTS layer"
        )
    return (
        "there are no keypoints to match: no corner was found on the optical raster inside "
        "BORDER and EXTENT, where given, and where a search region of valid SAR data and a "
        "valid optical template lie around it (constant, all nodata or textureless there, or "
        "smaller than the search region plus BORDER); use a textured area, a smaller "
        "MIN_DISTANCE/BORDER, or give a KEYPOINTS layer"
    )


def edge_half_range(search_size: int, template_size: int, grid_scale: float = 1.0) -> float:
    """The ``half_range`` of ``registration.TiePoints.usable``, optical pixels.

    Peaks beyond ``half_range - 0.5 = (h - 0.5) k`` optical px, the largest offset inside the
    map for a search range of ``h = (S - T) // 2`` grid pixels of ``k`` optical px, are on its
    edge (in grid pixels, edge peaks of 2x-grid matches were taken for every match beyond half
    the range).
    """
    return ((search_size - template_size) // 2 - 0.5) * grid_scale + 0.5


def edge_far_range(search_size: int, template_size: int, grid_scale: float = 1.0) -> float:
    """The ``far_range`` of ``registration.TiePoints.usable``, optical pixels.

    The map's offsets run from ``-h`` to ``S - T - h`` grid pixels (``h = (S - T) // 2``):
    one more on the positive side where ``S - T`` is odd. Equal to :func:`edge_half_range`
    otherwise.
    """
    far = (search_size - template_size) - (search_size - template_size) // 2
    return (far - 0.5) * grid_scale + 0.5


def edge_peaks(records: Sequence[Any], search_size: int, template_size: int,
               grid_scale: float = 1.0) -> np.ndarray:  # fmt: skip
    """(N,) bool: matched records whose peak lies on the edge of the correspondence map.

    Register's rule (``registration.TiePoints.usable`` at :func:`edge_half_range`): the map's
    maximum is where the search range ends, so the shift is at least that large or the peak
    is noise, and it cannot be localised.
    """
    shift = [[r.dx_px, r.dy_px] for r in records]
    near = edge_half_range(search_size, template_size, grid_scale)
    return reg.on_map_edge(shift, near, edge_far_range(search_size, template_size, grid_scale))


def edge_peak_warning(n_edge: int, n_matched: int, search_size: int, template_size: int,
                      grid_scale: float = 1.0) -> str:  # fmt: skip
    """Why ``n_edge`` of ``n_matched`` matches were not accepted (:func:`edge_peaks`)."""
    half_px = (search_size - template_size) // 2 * grid_scale
    return (
        f"{n_edge} of {n_matched} matches peak on the edge of the search range (|dx_px| or "
        f"|dy_px| ~ {half_px:g} optical px) and are not accepted, whatever their confidence: "
        "the misregistration may exceed the range there, or the peak is noise; check the "
        "rasters' georeferences (a larger offset than the model can find?)"
    )


#: What each skip status of a match record means for the user.
SKIP_REASONS = {
    "nodata_optical": "the optical template has too few valid pixels",
    "nodata_sar": "the SAR raster has no valid data around the keypoint (nodata or outside it)",
    "constant_optical": "the optical template is (nearly) constant: one value after the "
    "2-98 % stretch",
    "constant_sar": "the SAR search region is (nearly) constant: one value after the 2-98 % "
    "stretch",
}


def skipped_text(counts: dict[str, int]) -> str:
    """``"nodata_sar: 12 (the SAR raster has ...)"`` for each skip status."""
    return "; ".join(f"{k}: {n} ({SKIP_REASONS.get(k, k)})" for k, n in sorted(counts.items()))


def empty_result(s: CorrespondenceSettings) -> Any:
    """A MatchResult without records, of the settings' template and search sizes."""
    from sar_optical_matcher import matching

    return matching.MatchResult([], s.match.template_size, s.match.search_size)
