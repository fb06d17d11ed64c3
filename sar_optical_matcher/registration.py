"""The registration pipeline, without QGIS: keypoints -> matching -> RANSAC -> fit -> GDAL warp.

The Processing algorithms are thin adapters over these functions (``Register SAR to optical``
calls them directly rather than running the other algorithms as child steps, so that one
cancellation callback and one progress bar cover the whole run and no intermediate layers are
written). Progress is a plain callback ``progress(fraction in [0, 1])``, cancellation a plain
``is_canceled() -> bool``.

Frames: tie points are fitted from SAR pixels (``src``) to optical pixels (``dst``), so the
residual threshold is in optical pixels whatever the CRSs; the warp then maps SAR pixels
straight to optical map coordinates through GCPs generated from the fitted transform.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sar_optical_matcher.core import keypoint_merge as kp_merge
from sar_optical_matcher.core import keypoints as kp
from sar_optical_matcher.core import transforms as tf
from sar_optical_matcher.core.files import (
    StagedOutputs,
    atomic_output,
    remove_with_sidecars,
    temporary_name,
)
from sar_optical_matcher.core.geotransform import (
    box_outline,
    map_to_pixel,
    pixel_to_map,
    points_in_box,
)
from sar_optical_matcher.core.tiling import iter_tiles

Progress = Callable[[float], None]
IsCanceled = Callable[[], bool]
TRANSFORM_KINDS = ("shift", "affine", "poly1", "poly2", "poly3", "tps")
RESAMPLINGS = ("near", "bilinear", "cubic", "cubicspline", "lanczos", "average")
DETECT_TILE_PX = 1024
#: Harris needs a little context around a tile; keypoints inside the halo belong to the neighbour.
DETECT_HALO_PX = 16
#: Redundancy required beyond the transform's minimal sample, so no exact fit counts as evidence.
EXTRA_INLIERS = 4
#: A-contrario test: largest log10 of the expected number of chance fits this good (NFA).
MAX_LOG10_NFA = -2.0
#: Fewest inliers as a fraction of the usable matches (accepted, peak inside the map).
MIN_INLIER_RATIO = 0.1
#: Inliers' minor-axis spread over the usable matches' minor-axis spread (not a line/cluster).
MIN_SPREAD_RATIO = 0.15


class RegistrationError(RuntimeError):
    """Registration refused (too few confident inliers, bad geometry); the message says why."""


class Canceled(RuntimeError):  # noqa: N818 - same name as matching.Canceled
    """The user canceled; partial outputs have been removed."""


def _check_canceled(is_canceled: IsCanceled | None) -> None:
    if is_canceled is not None and is_canceled():
        raise Canceled("canceled by the user")


# --- pixel <-> map ------------------------------------------------------------------------------


# --- keypoints, tile by tile ---------------------------------------------------------------------


@dataclass(frozen=True)
class DetectSettings:
    """Keypoint detection settings (see :func:`detect_keypoints_tiled`).

    Attributes:
        band: 1-based band of the optical raster.
        min_distance_px: minimum distance between keypoints (non-maximum suppression).
        max_count: maximum number of keypoints.
        border_px: keypoints keep this distance from the raster edges (so patches fit).
        extent_map: optional (xmin, ymin, xmax, ymax) in the raster's CRS to search in
            (exactly: on a rotated raster too).
        mask_wkt: optional polygons (WKT, raster CRS); keypoints only inside them.
        tile_px: tile edge used to read the raster.
        within_px: optional (x0, y0, x1, y1) pixel window keypoints must lie in, e.g. where a
            search region fits on the SAR footprint, so the budget of ``max_count`` is not spent
            where none does.
        spread: share in [0, 1] of ``max_count`` shared out over a grid of cells of the search
            window before the rest goes by strength (``core.keypoints.select_spread``); 0:
            strongest first. The Processing algorithms default to :data:`DEFAULT_SPREAD`.
        coverage: optional :class:`SarCoverage`: keypoints only where a search region of valid
            SAR data lies around them (:func:`sar_coverage`), not in the nodata corners of the
            footprint's bounding box.
    """

    band: int = 1
    min_distance_px: float = 128.0
    max_count: int = 500
    border_px: int = 128
    extent_map: tuple[float, float, float, float] | None = None
    mask_wkt: tuple[str, ...] | None = None
    tile_px: int = DETECT_TILE_PX
    within_px: tuple[float, float, float, float] | None = None
    spread: float = 0.0
    coverage: SarCoverage | None = None

    def __post_init__(self) -> None:
        """Validate ranges."""
        if not self.min_distance_px >= 1 or self.max_count < 1 or self.border_px < 0:  # NaN
            raise ValueError(
                "need min_distance_px >= 1, max_count >= 1 and border_px >= 0, got "
                f"{self.min_distance_px}, {self.max_count}, {self.border_px}"
            )
        kp.check_spread(self.spread, "SPREAD", "MAX_COUNT")


#: Default SPREAD of the Processing algorithms (see docs/performance.md, "Keypoint spread").
DEFAULT_SPREAD = 0.5
#: Share of a search-region-sized window of the coarse SAR validity grid that must be valid
#: (matching skips a region under 90 % valid as nodata_sar; the window is a little larger).
COVERAGE_MIN_VALID = 0.95


@dataclass(frozen=True, eq=False)
class SarCoverage:
    """Where a search region of valid SAR data fits around an optical pixel: a coarse grid.

    Attributes:
        x0: optical pixel x of the grid's left edge (may be negative).
        y0: optical pixel y of the grid's top edge.
        step_px: cell side in optical pixels.
        ok: (ny, nx) bool, True where a keypoint's search region is (nearly) all valid SAR
            (and, with a template, its optical template valid enough to be matched).
        sar_ok: (ny, nx) bool, the SAR's part of ``ok`` alone, where ``ok`` also holds the
            optical template's (None: ``ok`` is the SAR's): says which raster left no room.
    """

    x0: float
    y0: float
    step_px: float
    ok: np.ndarray
    sar_ok: np.ndarray | None = None

    def at(self, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(rows), len(cols)) bool at the optical pixel coordinates ``cols`` x ``rows``."""
        ny, nx = self.ok.shape
        j = np.floor((np.asarray(cols, np.float64) - self.x0) / self.step_px).astype(np.int64)
        i = np.floor((np.asarray(rows, np.float64) - self.y0) / self.step_px).astype(np.int64)
        jin, iin = (j >= 0) & (j < nx), (i >= 0) & (i < ny)
        out = self.ok[np.clip(i, 0, ny - 1)][:, np.clip(j, 0, nx - 1)]
        return out & iin[:, None] & jin[None, :]

    def any_in(self, box: tuple[float, float, float, float], sar_only: bool = False) -> bool:
        """Whether a True cell overlaps the optical pixel box ``(x0, y0, x1, y1)``.

        ``sar_only``: a True cell of the SAR's part (``sar_ok``) alone.
        """
        grid = self.sar_ok if sar_only and self.sar_ok is not None else self.ok
        ny, nx = grid.shape
        j0 = max(0, math.floor((box[0] - self.x0) / self.step_px))
        i0 = max(0, math.floor((box[1] - self.y0) / self.step_px))
        j1 = min(nx, math.ceil((box[2] - self.x0) / self.step_px))
        i1 = min(ny, math.ceil((box[3] - self.y0) / self.step_px))
        return bool(j1 > j0 and i1 > i0 and grid[i0:i1, j0:j1].any())

    def on_box(self, box: tuple[float, float, float, float], max_side: int = 512) -> np.ndarray:
        """(gy, gx) bool samples of :meth:`at` at the centres of a grid of cells over ``box``.

        Cells of about the coverage's step (at most ``max_side`` a side): the ``valid`` grid
        of ``core.keypoints.spread_grid``, so a spread's cells count only those with coverage.
        """
        x0, y0, x1, y1 = box
        gx = min(max_side, max(1, math.ceil((x1 - x0) / self.step_px)))
        gy = min(max_side, max(1, math.ceil((y1 - y0) / self.step_px)))
        return self.at(*kp.cell_centres(box, gx, gy))

    def bbox(self) -> tuple[float, float, float, float] | None:
        """(x0, y0, x1, y1) optical pixels around the True cells; None when there is none."""
        rows, cols = np.nonzero(self.ok)
        if len(rows) == 0:
            return None
        s = self.step_px
        return (self.x0 + cols.min() * s, self.y0 + rows.min() * s,
                self.x0 + (cols.max() + 1) * s, self.y0 + (rows.max() + 1) * s)  # fmt: skip


def sar_coverage(
    optical: Any, sar: Any, sar_band: int, search_size: int, grid_scale: float = 1.0,
    max_cells: int = 2048, optical_band: int | None = None, template_size: int = 0,
) -> SarCoverage:  # fmt: skip
    """Where on the optical grid a keypoint's SAR search region (and template) has valid data.

    The SAR's validity (nodata, mask or alpha band, outside the raster) is read decimated
    (``rasters.valid_on_grid``) onto a grid of cells of ~1/16 of the search region's half size
    (at most ``max_cells`` a side) over the SAR footprint's bounding box on the optical raster,
    reaching a search region beyond it, and a
    cell is kept where at least :data:`COVERAGE_MIN_VALID` of a search region's window around
    it (``search_size`` matching-grid pixels of ``grid_scale`` optical pixels, widened by the
    grid's and the read's cells) is valid. So a rotated footprint or a swath inside nodata
    triangles takes no keypoint in its bounding box's empty corners.

    With ``optical_band`` and a ``template_size`` (matching-grid pixels), a cell is also kept
    only where the optical template would pass matching's own rule,
    ``matching.MIN_VALID_FRACTION`` of its pixels valid (:func:`optical_template_ok`): Harris
    corners are strongest along an optical nodata edge (a scene's nodata triangle, a masked
    cloud), and 8 of 53 keypoints there were skipped as ``nodata_optical``.

    Raises:
        ValueError: nowhere does the SAR have valid data over a whole search region (or, with
            a template, nowhere does a valid optical template fit on it).
    """
    from scipy import ndimage

    from sar_optical_matcher import rasters

    # the grid covers the SAR footprint on the optical raster only: over the whole of a
    # 20,000 px optical its cells were 10 px, and a 130 px SAR chip a 96 px search region fits
    # in was refused (on a 2000 px optical: 3 px cells, kept)
    fx0, fy0, fx1, fy1 = rasters.footprint_overlap(optical, sar)
    if fx1 <= fx0 or fy1 <= fy0:
        fx0, fy0, fx1, fy1 = 0.0, 0.0, float(optical.width), float(optical.height)
    w, h = fx1 - fx0, fy1 - fy0
    half = float(grid_scale) * (search_size / 2.0 + 1.0)  # + the corner's rounding to grid px
    # cells of 1/16 of the half size: each side of the kept area is conservative by about two
    # cells and a read cell (1/8 refused a 128 px SAR footprint the 96 px search fits in)
    step = max(1.0, half / 16.0, (max(w, h) + 2.0 * half) / max_cells)
    pad = half + 3.0 * step
    nx, ny = math.ceil((w + 2 * pad) / step), math.ceil((h + 2 * pad) / step)
    gx0, gy0 = fx0 - pad, fy0 - pad
    valid, sar_cell = rasters.valid_on_grid(sar, sar_band, optical, (gx0, gy0), step, (ny, nx))
    ratio = rasters.pixel_size_ratio(optical, sar)  # one SAR pixel in optical pixels
    slack = sar_cell * (ratio if math.isfinite(ratio) else 1.0) + step
    r = math.ceil((half + slack) / step)
    share = ndimage.uniform_filter(valid.astype(np.float32), 2 * r + 1, mode="constant")
    ok = share >= COVERAGE_MIN_VALID - 1e-6
    if not ok.any():
        raise ValueError(
            f"no room for keypoints: nowhere on the optical raster does the SAR have valid data "
            f"over a whole search region ({search_size} x {search_size} px of {grid_scale:.2f} "
            f"optical px, {2 * half:.0f} optical px; {valid.mean():.0%} of the grid around the "
            "SAR footprint has valid SAR data); check the SAR's nodata value and mask band and "
            "the overlap, or use a model with a smaller search region"
        )
    sar_ok = None
    if optical_band is not None and template_size > 0:
        sar_ok = ok.copy()
        ok &= optical_template_ok(optical, optical_band, (gx0, gy0), step, ok.shape,
                                  template_size, grid_scale)  # fmt: skip
        if not ok.any():
            raise ValueError(
                f"no room for keypoints: nowhere where the SAR has valid data does the optical "
                f"band {optical_band} have a valid template ({template_size} x {template_size} "
                f"px of {grid_scale:.2f} optical px, at least "
                f"{_min_valid_fraction():.0%} of it valid); check the optical's nodata value "
                "and mask band and the overlap, or give a KEYPOINTS layer"
            )
    return SarCoverage(gx0, gy0, step, ok, sar_ok)


def _min_valid_fraction() -> float:
    from sar_optical_matcher import matching

    return matching.MIN_VALID_FRACTION


def optical_template_ok(
    optical: Any, band: int, origin_px: tuple[float, float], step: float,
    shape: tuple[int, int], template_size: int, grid_scale: float = 1.0,
) -> np.ndarray:  # fmt: skip
    """(ny, nx) bool: cells of a coarse grid where a keypoint's optical template passes matching.

    Matching skips a keypoint as ``nodata_optical`` when under ``matching.MIN_VALID_FRACTION``
    of its template (``template_size`` matching-grid pixels of ``grid_scale`` optical pixels a
    side, ``L`` optical px) is valid. The optical's validity (nodata, mask or alpha band, off
    the raster) is read decimated onto the grid (``rasters.valid_on_grid``, as the SAR
    coverage), and a cell is kept where the share of valid cells in a window of ``2 r + 1``
    cells around it is at least ``1 - (1 - MIN_VALID_FRACTION) (L / step)^2 / (2 r + 1)^2``:
    the window holds the template of any keypoint in the cell (its corner rounded to the grid,
    a read cell off), so its invalid cells, all taken to lie in the template, still leave it
    valid enough. On a fully valid raster every cell whose window stays on it is kept.
    """
    from scipy import ndimage

    from sar_optical_matcher import rasters

    valid, read_cell = rasters.valid_on_grid(optical, band, optical, origin_px, step, shape)
    side = float(grid_scale) * template_size  # the template in optical px
    r = math.ceil((side / 2.0 + grid_scale + step / 2.0 + read_cell) / step)
    n = 2 * r + 1
    share = ndimage.uniform_filter(valid.astype(np.float32), n, mode="constant")
    need = 1.0 - (1.0 - _min_valid_fraction()) * min(1.0, (side / step) ** 2 / n**2)
    return np.asarray(share >= need - 1e-6)


def search_window(info: Any, settings: DetectSettings) -> tuple[int, int, int, int]:
    """Pixel window (x0, y0, x1, y1) where keypoints may lie: border, extent, mask, raster edges."""
    b = settings.border_px
    if min(info.width, info.height) < 2:  # Harris takes a gradient along both axes
        raise ValueError(
            f"no room for keypoints: the {info.width} x {info.height} px raster has no corner to "
            "find (at least 2 px a side, and a search region around each keypoint to match); "
            "use a larger raster"
        )
    x0, y0, x1, y1 = b, b, info.width - b, info.height - b
    if settings.extent_map is not None:
        xmin, ymin, xmax, ymax = settings.extent_map
        corners = map_to_pixel(
            info.geotransform, [[xmin, ymin], [xmin, ymax], [xmax, ymin], [xmax, ymax]]
        )
        x0, y0 = max(x0, math.floor(corners[:, 0].min())), max(y0, math.floor(corners[:, 1].min()))
        x1, y1 = min(x1, math.ceil(corners[:, 0].max())), min(y1, math.ceil(corners[:, 1].max()))
    boxes = [settings.within_px]
    if settings.coverage is not None:
        boxes.append(settings.coverage.bbox())
    for box in boxes:
        if box is not None:
            wx0, wy0, wx1, wy1 = box
            x0, y0 = max(x0, math.ceil(wx0)), max(y0, math.ceil(wy0))
            x1, y1 = min(x1, math.floor(wx1)), min(y1, math.floor(wy1))
    if x1 <= x0 or y1 <= y0:
        footprint = settings.within_px is not None or settings.coverage is not None
        within = "; and the SAR footprint" if footprint else ""
        raise ValueError(
            f"no room for keypoints: the {info.width} x {info.height} px raster minus a border of "
            f"{b} px (and the extent, if given{within}) leaves nothing; use a larger raster, "
            "overlap or extent, or a smaller border"
        )
    cov = settings.coverage
    if cov is not None and not cov.any_in((x0, y0, x1, y1)):
        if cov.any_in((x0, y0, x1, y1), sar_only=True):
            raise ValueError(
                f"no room for keypoints: inside the border of {b} px (and the extent, if given) "
                "no optical template around a point with valid SAR data has enough valid "
                f"optical pixels ({_min_valid_fraction():.0%}; nodata, the optical's mask band, "
                "or off the optical); move EXTENT onto valid optical data, check the optical's "
                "nodata value, or give a KEYPOINTS layer"
            )
        raise ValueError(
            f"no room for keypoints: inside the border of {b} px (and the extent, if given) the "
            "SAR has no valid data over a whole search region anywhere (nodata, its mask band, "
            "or off the SAR); move EXTENT onto valid SAR data, check the SAR's nodata value, or "
            "give a KEYPOINTS layer"
        )
    mask = _mask_box(settings, info.geotransform)
    if mask is not None:  # a mask off the window is left to find no keypoint (and say so)
        mx0, my0 = max(x0, math.ceil(mask[0])), max(y0, math.ceil(mask[1]))
        mx1, my1 = min(x1, math.floor(mask[2])), min(y1, math.floor(mask[3]))
        if mx1 > mx0 and my1 > my0:
            x0, y0, x1, y1 = mx0, my0, mx1, my1
    return int(x0), int(y0), int(x1), int(y1)


def _mask_box(settings: DetectSettings, gt: Sequence[float]) -> tuple[float, ...] | None:
    """Pixel box (x0, y0, x1, y1) around the mask polygons; None without a mask.

    The search window keeps to it, so a spread's cells tile the mask, not the whole raster
    (a mask over a quarter of it got a quarter of the cells: 5 keypoints of 40 in its weak
    half where the same area as an EXTENT got 10).
    """
    if not settings.mask_wkt:
        return None
    from osgeo import ogr

    boxes = []
    for wkt in settings.mask_wkt:
        geom = ogr.CreateGeometryFromWkt(wkt)
        if geom is not None and not geom.IsEmpty():
            xmin, xmax, ymin, ymax = geom.GetEnvelope()
            boxes.append(map_to_pixel(gt, [[xmin, ymin], [xmin, ymax], [xmax, ymin], [xmax, ymax]]))
    if not boxes:
        return None
    px = np.concatenate(boxes)
    return (float(math.floor(px[:, 0].min())), float(math.floor(px[:, 1].min())),
            float(math.ceil(px[:, 0].max())), float(math.ceil(px[:, 1].max())))  # fmt: skip


def _mask_window(settings: DetectSettings, gt: Sequence[float], win: tuple[int, ...]) -> Any:
    """(h, w) bool: inside any mask polygon (all True without a mask)."""
    x0, y0, w, h = win
    if not settings.mask_wkt:
        return np.ones((h, w), bool)
    from osgeo import gdal, ogr, osr

    # polygons and window share the raster's CRS; one local CRS on both says so to GDAL,
    # which otherwise warned "Failed to fetch spatial reference on layer mask" on every tile
    same = osr.SpatialReference()
    same.SetLocalCS("raster CRS")
    ds = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Byte)
    origin = pixel_to_map(gt, [[x0, y0]])[0]
    ds.SetGeoTransform((origin[0], gt[1], gt[2], origin[1], gt[4], gt[5]))
    ds.SetProjection(same.ExportToWkt())
    src = ogr.GetDriverByName("Memory").CreateDataSource("")
    layer = src.CreateLayer("mask", srs=same)
    for wkt in settings.mask_wkt:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    gdal.RasterizeLayer(ds, [1], layer, burn_values=[1])
    return ds.ReadAsArray().astype(bool)


def detect_keypoints_tiled(
    info: Any,
    settings: DetectSettings,
    progress: Progress | None = None,
    is_canceled: IsCanceled | None = None,
) -> kp.Keypoints:
    """Harris keypoints of a raster read tile by tile (never the whole raster in memory).

    Each tile is read with a halo, keypoints are kept only in the tile's core and inside the
    search window (and ``settings.coverage``), and the tiles' keypoints are merged with a
    global non-maximum suppression. Every local maximum of the tiles enters
    the merge, so the result equals whole-image detection whatever the tile size (spread 0
    included, the response floor being the raster's strongest point's, not a tile's); the merge
    (``core.keypoint_merge.TileMerger``) drops the points that can no longer change it as the
    tiles come, so it holds about one row of tiles' maxima, not the raster's.

    Args:
        info: ``rasters.RasterInfo`` of the optical raster.
        settings: detection settings.
        progress: optional callback with the fraction done.
        is_canceled: optional callback; :class:`Canceled` is raised when it returns True.

    Returns:
        Keypoints with ``xy_px`` (N, 2) float64 in the raster's pixel frame, best first.
    """
    from sar_optical_matcher import rasters

    if not 1 <= settings.band <= info.band_count:
        raise ValueError(
            f"band {settings.band} does not exist: the raster has bands " f"1..{info.band_count}"
        )
    sx0, sy0, sx1, sy1 = search_window(info, settings)
    tiles = list(iter_tiles(sx1 - sx0, sy1 - sy0, settings.tile_px))
    boxes = [(sx0 + tx, sy0 + ty, sx0 + tx + tw, sy0 + ty + th) for tx, ty, tw, th in tiles]
    window = (sx0, sy0, sx1, sy1)
    # with a coverage, the spread's cells count only those where keypoints may lie
    valid = None if settings.coverage is None else settings.coverage.on_box(window)
    merger = kp_merge.TileMerger(boxes, settings.min_distance_px, settings.max_count,
                                 settings.spread, window, valid=valid)  # fmt: skip
    for i, (tx, ty, tw, th) in enumerate(tiles):
        _check_canceled(is_canceled)
        cx0, cy0 = sx0 + tx, sy0 + ty
        rx0, ry0 = max(0, cx0 - DETECT_HALO_PX), max(0, cy0 - DETECT_HALO_PX)
        rx1 = min(info.width, cx0 + tw + DETECT_HALO_PX)
        ry1 = min(info.height, cy0 + th + DETECT_HALO_PX)
        arr, valid = rasters.read_window(info, settings.band, rx0, ry0, rx1 - rx0, ry1 - ry0)
        # keypoints only in the tile's core (and the extent): the halo feeds the response but
        # takes none of the max_count budget
        cols = rx0 + np.arange(rx1 - rx0) + 0.5
        rows = ry0 + np.arange(ry1 - ry0) + 0.5
        core = ((rows >= cy0) & (rows < cy0 + th))[:, None] & ((cols >= cx0) & (cols < cx0 + tw))
        if settings.extent_map is not None:  # the search window is the extent's pixel bbox
            gx, gy = np.meshgrid(cols, rows)
            xy_all = np.column_stack([gx.ravel(), gy.ravel()])
            xy_map = pixel_to_map(info.geotransform, xy_all)
            core &= points_in_box(xy_map, settings.extent_map).reshape(core.shape)
        if settings.coverage is not None:
            core &= settings.coverage.at(cols, rows)
        core &= _mask_window(settings, info.geotransform, (rx0, ry0, rx1 - rx0, ry1 - ry0))
        # every local maximum: the global NMS, spread and response floor are exact (a tile's
        # own floor, 1 % of ITS strongest, let a low-contrast tile's weak corners through)
        k = kp.detect_keypoints(arr, max_count=core.size, min_distance_px=0.0, border_px=0,
                                valid=valid, min_response_rel=0.0, candidates=core)  # fmt: skip
        merger.add(kp.Keypoints(xy_px=k.xy_px + [rx0, ry0], response=k.response))
        if progress is not None:
            progress((i + 1) / len(tiles))
    return merger.result()


# --- fitting --------------------------------------------------------------------------------------


@dataclass
class TiePoints:
    """Tie points from matches: SAR pixel (src) -> optical pixel (dst).

    Attributes:
        src_px: (N, 2) float64, SAR (x, y) pixels.
        dst_px: (N, 2) float64, optical (x, y) pixels.
        accepted: (N,) bool, the matcher's confident-and-accepted flag.
        ids: (N,) int, match ids.
        shift_px: optional (N, 2) float64, the matches' (dx, dy) peak offsets in optical
            pixels; used to ignore peaks on the correspondence map's edge.
    """

    src_px: np.ndarray
    dst_px: np.ndarray
    accepted: np.ndarray
    ids: np.ndarray
    shift_px: np.ndarray | None = None

    @classmethod
    def from_records(cls, records: Sequence[Any]) -> TiePoints:
        """Build from ``matching.MatchRecord``s; non-finite positions are never accepted."""
        src = np.array([[r.sar_x_px, r.sar_y_px] for r in records], np.float64).reshape(-1, 2)
        dst = np.array([[r.opt_x_px, r.opt_y_px] for r in records], np.float64).reshape(-1, 2)
        ok = np.array([bool(r.accepted) for r in records], bool)
        ok &= np.isfinite(src).all(axis=1) & np.isfinite(dst).all(axis=1)
        shift = np.array([[r.dx_px, r.dy_px] for r in records], np.float64).reshape(-1, 2)
        return cls(src, dst, ok, np.array([int(r.id) for r in records], np.int64), shift)

    def usable(self, half_range: float, far_range: float | None = None) -> np.ndarray:
        """(N,) bool: accepted, and the peak not on the edge of the correspondence map.

        A peak on the map's edge (``dx`` or ``dy`` at the search range: ``-half_range`` or
        ``+far_range``, see :func:`on_map_edge`) is where unrelated content peaks most often
        and cannot be localised: it is no evidence.
        """
        ok = np.asarray(self.accepted, bool).copy()
        if self.shift_px is not None:
            ok &= ~on_map_edge(self.shift_px, half_range, far_range)
        return ok


def on_map_edge(shift_px: Any, half_range: float, far_range: float | None = None) -> np.ndarray:
    """(N,) bool: shifts ``(N, 2)`` whose peak lies on the correspondence map's edge.

    ``dx`` or ``dy`` below ``-(half_range - 0.5)`` or above ``far_range - 0.5``, the largest
    offsets inside the map (NaN: not on it). ``far_range`` (None: ``half_range``) is larger
    where the search and template sides differ by an odd number of pixels: the map then
    reaches one grid pixel farther on the positive side (offsets ``-h .. h + 1``). One rule
    for Register's tie points (:meth:`TiePoints.usable`) and Compute correspondence's matches.
    """
    shift = np.asarray(shift_px, np.float64).reshape(-1, 2)
    far = half_range if far_range is None else far_range
    with np.errstate(invalid="ignore"):
        return ((shift < -(half_range - 0.5)) | (shift > far - 0.5)).any(axis=1)


@dataclass
class FitResult:
    """Fitted transform and per-tie-point diagnostics.

    Attributes:
        transform: fitted SAR px -> optical px transform (``core.transforms.Transform``).
        kind: transform kind.
        inliers: (N,) bool over all tie points (False for non-accepted ones).
        residual_xy_px: (N, 2) float64, ``transform(src) - dst`` in optical pixels.
        rmse_px: RMSE of the inliers' residuals (0 by construction for a thin-plate spline,
            which passes through every inlier, as in QGIS's Georeferencer).
        n_accepted: accepted matches with a peak inside the map, given to RANSAC.
        extra: diagnostics: ``ransac_iterations``, ``log10_nfa``, ``inlier_ratio``,
            ``spread_ratio``, ``n_edge_peaks``; ``predicted_error_px`` once
            :func:`check_predicted_error` has judged the fit over the overlap.
        loo_residual_xy_px: (N, 2) leave-one-out residuals of the inliers (NaN elsewhere):
            each inlier's error under the fit made without it.
        loo_rmse_px: their RMSE, the honest check of a fit against points it did not see (and
            the only one for tps); it grows with needless complexity where ``rmse_px`` falls.
    """

    transform: Any
    kind: str
    inliers: np.ndarray
    residual_xy_px: np.ndarray
    rmse_px: float
    n_accepted: int
    extra: dict[str, Any] = field(default_factory=dict)
    loo_residual_xy_px: np.ndarray | None = None
    loo_rmse_px: float = float("nan")


def rms_length(vectors: Any) -> float:
    """Root mean square length of (N, 2) residual vectors (NaN for none): an RMSE."""
    v = np.asarray(vectors, np.float64).reshape(-1, 2)
    return float(np.sqrt(np.mean(np.sum(v**2, axis=1)))) if len(v) else float("nan")


def required_inliers(kind: str, min_inliers: int) -> int:
    """Inliers needed to trust a ``kind`` fit: the user's minimum and a redundant sample."""
    return max(int(min_inliers), tf.min_points(kind) + EXTRA_INLIERS)


def too_few_message(
    found: int, need: int, ties: TiePoints, kind: str, half_range: float, what: str = "inlier"
) -> str:
    """The refusal message: what was found (``what``: inlier or usable), needed, what to try."""
    counted = (
        f"only {found} confident inlier tie points were found"
        if what == "inlier"
        else f"only {found} usable matches (accepted, peak inside the map) were found"
    )
    return (
        f"Registration refused: {counted} "
        f"({int(ties.accepted.sum())} accepted matches of {len(ties.accepted)} keypoints), "
        f"{need} are needed for a '{kind}' transform. No output raster was written. Try: more "
        "keypoints (higher MAX_COUNT, lower MIN_DISTANCE), a lower CONFIDENCE_THRESHOLD, a larger "
        "RESIDUAL_THRESHOLD or a simpler TRANSFORM (shift/affine); a model with a larger search "
        f"region if the misregistration exceeds +/-{half_range:g} px; and check that the two "
        "rasters overlap and show the same place and bands."
    )


def log10_nfa(n: int, k: int, m: int, threshold_px: float, half_range: float) -> float:
    """log10 of the expected number of chance fits with ``k`` inliers among ``n`` matches.

    A-contrario null model (ORSA, Moisan & Stival 2004): each match's peak is uniform over the
    (2 * half_range - 1)^2 interior of the correspondence map, so it falls within
    ``threshold_px`` of any prediction with probability ``p <= pi t^2 / (2 h - 1)^2``;
    ``NFA = (n - m) C(n, k) C(k, m) p^(k - m)`` for a transform fixed by ``m`` points.
    """
    if k <= m or n <= m:
        return math.inf
    p = min(1.0, math.pi * threshold_px**2 / max(2 * half_range - 1, 1) ** 2)

    def log10_comb(a: int, b: int) -> float:
        return (math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)) / math.log(10)

    return math.log10(n - m) + log10_comb(n, k) + log10_comb(k, m) + (k - m) * math.log10(p)


def spread_ratio(src_in: np.ndarray, src_all: np.ndarray) -> float:
    """Robust minor-axis spread of the inliers over that of all usable points (>= 0).

    The spread is the median absolute deviation of the points along their covariance's minor
    axis, so one or two points off a line do not make a line of inliers look spread out.
    """

    def minor(xy: np.ndarray) -> float:
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        if len(xy) < 3:
            return 0.0
        axis = np.linalg.eigh(np.cov(xy.T))[1][:, 0]
        proj = (xy - np.median(xy, axis=0)) @ axis
        return float(np.median(np.abs(proj - np.median(proj))))

    ref = minor(src_all)
    return minor(src_in) / ref if ref > 0 else 0.0


def _weak_evidence(kind: str, usable: np.ndarray, inliers: np.ndarray,
                   stats: dict[str, Any], half_range: float) -> str | None:  # fmt: skip
    """Why ``inliers`` do not prove a registration (None when they do)."""
    k, n = int(inliers.sum()), int(usable.sum())
    advice = (
        " No output raster was written. Check that the two rasters show the same place and "
        "bands; try more keypoints, a higher CONFIDENCE_THRESHOLD (fewer, better matches), a "
        f"smaller RESIDUAL_THRESHOLD, or a model with a search range beyond +/-{half_range:g} px."
    )
    if stats["log10_nfa"] > MAX_LOG10_NFA:
        return (
            f"Registration refused: the {k} inliers among {n} usable matches could be chance "
            f"agreement (about 10^{stats['log10_nfa']:.1f} such fits are expected from random "
            f"matches, at most 10^{MAX_LOG10_NFA:.0f} is accepted).{advice}"
        )
    if stats["inlier_ratio"] < MIN_INLIER_RATIO:
        return (
            f"Registration refused: only {k} of {n} usable matches "
            f"({100 * stats['inlier_ratio']:.0f} %) agree on one '{kind}' transform, at least "
            f"{100 * MIN_INLIER_RATIO:.0f} % are needed.{advice}"
        )
    if kind != "shift" and stats["spread_ratio"] < MIN_SPREAD_RATIO:
        return (
            f"Registration refused: the {k} inliers lie on a line or in a small cluster (spread "
            f"{stats['spread_ratio']:.2f} of the matched area's, at least {MIN_SPREAD_RATIO} "
            f"needed), so a '{kind}' transform would be extrapolated; use TRANSFORM shift or "
            "add keypoints elsewhere (lower MIN_DISTANCE, higher MAX_COUNT)."
        )
    return None


def fit_tie_points(
    ties: TiePoints,
    kind: str,
    threshold_px: float,
    min_inliers: int,
    rng: np.random.Generator,
    half_range: float = 64,
    nominal_jacobian: np.ndarray | None = None,
    far_range: float | None = None,
) -> FitResult:
    """RANSAC on the usable tie points, then the final fit; refuse when evidence is thin.

    Usable tie points are accepted and peak inside the correspondence map (see
    :meth:`TiePoints.usable`). The fit is refused unless it has :func:`required_inliers`
    inliers, is statistically significant (:func:`log10_nfa` <= :data:`MAX_LOG10_NFA`), holds
    at least :data:`MIN_INLIER_RATIO` of the usable matches and, beyond a shift, its inliers
    are spread out (:func:`spread_ratio` >= :data:`MIN_SPREAD_RATIO`).

    Args:
        ties: the tie points.
        kind: one of :data:`TRANSFORM_KINDS`.
        threshold_px: RANSAC inlier threshold, optical pixels.
        min_inliers: the user's minimum number of inliers.
        rng: random generator of RANSAC.
        half_range: the matcher's search range (search - template) // 2, in optical pixels:
            matching on a grid of k optical pixels a pixel, ``(h - 0.5) k + 0.5`` for ``h``
            grid pixels (the largest interior offset plus 0.5; ``h`` itself for k = 1).
        nominal_jacobian: (2, 2) optical pixels per SAR pixel that the two georeferences
            imply (``rasters.pixel_jacobian``). A ``shift`` is a constant offset of the SAR's
            georeference: ``dst = J src + t`` with this ``J`` fixed and ``t`` fitted, so that
            it holds for a SAR of another pixel size, rotation or CRS (``dst = src + t`` there
            is a scaling error that grows across the raster). ``None``: the identity (one
            pixel grid). Ignored by the other kinds, which fit their linear part.
        far_range: the search range on the positive side, where it is larger (an odd
            search - template difference; None: ``half_range``; see :func:`on_map_edge`).

    Raises:
        RegistrationError: the evidence does not prove a registration; the message says why.
    """
    if kind not in TRANSFORM_KINDS:
        raise ValueError(f"transform kind must be one of {TRANSFORM_KINDS}, not {kind!r}")
    need = required_inliers(kind, min_inliers)
    usable = ties.usable(half_range, far_range)
    idx = np.flatnonzero(usable)
    if idx.size < need:
        raise RegistrationError(
            too_few_message(int(idx.size), need, ties, kind, half_range, what="usable")
        )
    jac = np.eye(2)
    if kind == "shift" and nominal_jacobian is not None:
        jac = np.asarray(nominal_jacobian, np.float64).reshape(2, 2)
        if not np.isfinite(jac).all() or abs(np.linalg.det(jac)) < 1e-12:
            raise ValueError(f"nominal_jacobian must be a finite invertible (2, 2), got {jac}")
    src_px = ties.src_px @ jac.T  # the SAR pixels as the georeferences put them on the optical
    result = tf.ransac(src_px[idx], ties.dst_px[idx], kind, threshold_px, rng, min_inliers=need)
    found = int(np.count_nonzero(result.inliers))
    if found >= need and result.transform.kind != kind:
        layout = "they lie in a degenerate layout (e.g. on a few lines or in a corner)"
        if kind == "tps":  # an interpolating spline cannot pass through two points at one place
            layout += " or two of them sit at the same SAR position (a spline through both is "
            layout += "not defined: detect keypoints farther apart, or drop duplicate KEYPOINTS)"
        raise RegistrationError(
            f"Registration refused: the {found} inlier tie points do not determine a '{kind}' "
            f"transform: {layout} for its terms. No output raster was written. Choose a simpler "
            f"TRANSFORM (the inliers fit a '{result.transform.kind}'), or keypoints spread over "
            "the overlap."
        )
    if not result.ok or found < need:
        raise RegistrationError(too_few_message(found, need, ties, kind, half_range))
    inliers = np.zeros(len(ties.accepted), bool)
    inliers[idx[np.asarray(result.inliers, bool)]] = True
    transform = result.transform
    if kind == "tps":  # RANSAC's last inlier test may add points the spline was not fitted on:
        # refit, so that it passes through exactly the inliers it reports (and the .points)
        transform = tf.fit_transform(ties.src_px[inliers], ties.dst_px[inliers], kind)
    if kind == "shift" and nominal_jacobian is not None:  # J then the shift: one affine [J | t]
        transform = tf.Transform("affine", np.vstack([transform.coeffs[0], jac.T]))
    stats = {
        "ransac_iterations": int(getattr(result, "n_iterations", 0)),
        "log10_nfa": log10_nfa(idx.size, found, tf.min_points(kind), threshold_px, half_range),
        "inlier_ratio": found / idx.size,
        "spread_ratio": spread_ratio(ties.src_px[inliers], ties.src_px[idx]),
        "n_edge_peaks": int((ties.accepted & ~usable).sum()),
    }
    why = _weak_evidence(kind, usable, inliers, stats, half_range)
    if why is not None:
        raise RegistrationError(why)
    resid = np.full(ties.src_px.shape, np.nan)
    finite = np.isfinite(ties.src_px).all(axis=1)
    resid[finite] = transform.apply(ties.src_px[finite]) - ties.dst_px[finite]
    rmse = rms_length(resid[inliers])
    loo = np.full(ties.src_px.shape, np.nan)
    loo[inliers] = tf.loo_residuals(src_px[inliers], ties.dst_px[inliers], kind)
    held = loo[inliers][np.isfinite(loo[inliers]).all(axis=1)]
    loo_rmse = rms_length(held)
    return FitResult(transform, kind, inliers, resid, rmse, int(idx.size), stats, loo, loo_rmse)


#: Kinds whose fit bends between and beyond the tie points (an affine one extrapolates straight).
BENDING_KINDS = ("poly2", "poly3", "tps")
#: Share of the overlap beyond the inliers' hull above which a bending fit is said extrapolated.
MAX_EXTRAPOLATED_SHARE = 0.3


def _inliers_affine(fit: FitResult, ties: TiePoints) -> Any:
    """The inliers' affine fit (SAR px -> optical px), or None when they do not determine one."""
    inl = np.asarray(fit.inliers, bool)
    try:
        return tf.fit_transform(ties.src_px[inl], ties.dst_px[inl], "affine")
    except ValueError:  # < 3 points or exactly on a line
        return None


def _overlap_grid(
    transform: Any,
    sar_size: tuple[int, int],
    optical_size: tuple[int, int],
    margin_px: float,
    n: int,
    window_by: Any = None,
) -> np.ndarray:
    """``(M, 2)`` SAR pixels of an ``n`` x ``n`` grid that ``transform`` maps onto the optical.

    Only points at least ``margin_px`` inside the optical raster's edges are kept. The grid
    is laid over the SAR pixels under that part of the optical raster, as an affine
    ``window_by`` (SAR px -> optical px) puts it, padded by 5 %: a SAR scene many times the
    optical raster's size is then sampled as finely as a crop of it (over the whole SAR, a
    25,000 px scene left no grid point, or one, on a 1024 px optical raster). ``None``: the
    whole SAR raster.
    """
    (sw, sh), (ow, oh) = sar_size, optical_size
    m = float(margin_px)
    x0, y0, x1, y1 = 0.0, 0.0, float(sw), float(sh)
    if window_by is not None and ow > 2 * m and oh > 2 * m:
        edge = box_outline((m, m, ow - m, oh - m), 9)
        a = window_by.affine_matrix()
        try:
            under = np.linalg.solve(a[:, :2], (edge - a[:, 2]).T).T
        except np.linalg.LinAlgError:  # a singular affine: keep the whole SAR raster
            under = np.full_like(edge, np.nan)
        if np.isfinite(under).all():
            lo, hi = under.min(axis=0), under.max(axis=0)
            pad = 0.05 * (hi - lo)
            x0, y0 = max(x0, lo[0] - pad[0]), max(y0, lo[1] - pad[1])
            x1, y1 = min(x1, hi[0] + pad[0]), min(y1, hi[1] + pad[1])
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 2))
    g = (np.arange(n) + 0.5) / n
    src = np.stack(np.meshgrid(x0 + g * (x1 - x0), y0 + g * (y1 - y0)), axis=-1).reshape(-1, 2)
    with np.errstate(all="ignore"):
        dst = transform.apply(src)
    on = (dst[:, 0] >= m) & (dst[:, 0] <= ow - m) & (dst[:, 1] >= m) & (dst[:, 1] <= oh - m)
    return src[on]


def extrapolated_share(
    fit: FitResult,
    ties: TiePoints,
    sar_size: tuple[int, int],
    optical_size: tuple[int, int],
    margin_px: float = 0.0,
    n: int = 64,
) -> float:
    """Share of the SAR-optical overlap outside the convex hull of the inlier tie points.

    The overlap is sampled on an ``n`` x ``n`` grid of SAR pixels that the fit maps onto the
    optical raster, at least ``margin_px`` from its edges (the keypoints' border, where no tie
    point can lie). A share of area: the grid's cells' centres, each standing for an equal area
    (the midpoint rule), not :func:`_output_grid`'s outline, which would weigh the overlap's
    edges, outside any hull, beyond their area (a hull of the left half: 0.518, not 0.500; 40
    tie points over 200-800 px of a 1000 px overlap: 0.568 for 0.524; the cell centres 0.500 and
    0.523). Keypoints taken strongest first (SPREAD 0), or kept to part of the scene by EXTENT
    or MASK, can all fall in one part of it; a polynomial or spline fit is then extrapolated
    over the rest (an 8000 px scene whose 500 keypoints all lay in its brighter half: poly3 1.5
    px and tps 3.8 px off in the other half, affine 0.2 px), which no tie-point residual shows.

    Returns:
        A share in [0, 1]; 1 when the inliers span no area (fewer than 3, or on a line).
    """
    from scipy.spatial import Delaunay, QhullError

    on = _overlap_grid(fit.transform, sar_size, optical_size, margin_px, n,
                       _inliers_affine(fit, ties))  # fmt: skip
    inliers = ties.src_px[np.asarray(fit.inliers, bool)]
    if not len(on):
        return 0.0
    try:
        inside = Delaunay(inliers).find_simplex(on) >= 0
    except (QhullError, ValueError):  # < 3 points, or all on a line
        return 1.0
    return float(1.0 - inside.mean())


#: How many times its predicted standard error (the largest over the overlap grid) a fit's true
#: largest error over the overlap is taken to be: a fit is refused when this times its predicted
#: error exceeds the residual threshold, the error the user accepts at a tie point. Measured
#: (``scripts/measure_predicted_error.py``, 4000 draws of seeds 0 / 1: 3758 / 3734 synthetic fits,
#: affine to poly3, 20-200 tie points well spread, on lines, in a corner or few per term, 0.3-1.5 px
#: of noise, 1000-4000 px overlaps; predicted and true out to the border's outline and corners),
#: true largest / predicted: 1.11 / 1.12 in the median, 1.57 / 1.59 at the 80th percentile, 2.1 at
#: the 95th (medians 1.0-1.15 whatever the inliers per term). With 1.5, 1.3 / 1.7 % of the fits
#: truly off by more than the threshold are accepted (none by more than twice it: 1.90 / 1.67 times
#: at worst) and 10 / 9 % of those within it refused (1.6 / 1.1 % of those within half of it); the
#: rule it replaced (refused above 10 x RMSE and above the threshold) accepted 18 / 20 % of them, up
#: to 9.4 / 7.0 times the threshold off. From 1.2 no factor accepts a fit off by twice the threshold
#: either (1.90 / 1.98 times at worst), at twice the false acceptances (58 / 71 of 2050 / 2084,
#: against 26 / 35) for 101 / 97 false refusals of 1708 / 1650 (against 178 / 150); counting a false
#: acceptance twice, 1.5 costs 230 / 220, 1.4 210 / 221, 1.3 205 / 231, 1.2 217 / 239: no factor is
#: the cheapest on both seeds, and 1.5 is kept. (On grids of cell centres, a cell short of the
#: outline: 1.15 / 1.16 in the median; none off by twice the threshold accepted from 1.3; 1.5
#: accepted 32 / 46, refused 154 / 141, cost 218 / 233.)
ERROR_BOUND_FACTOR = 1.5

#: Well-spread inliers' predicted error was at most 16 times their RMSE (a poly3 on 25+ random
#: points: 16.2 / 14.8 on seeds 0 / 1, 14.0 / 12.5 on grids of cell centres; affine 0.9, poly2 4.1 /
#: 5.8); beyond this many times a refused fit's layout is blamed (along two crossing lines: 23-6500
#: times), below it their noise.
LAYOUT_AMPLIFICATION = 20.0


def _overlap_mapping(fit: FitResult, ties: TiePoints) -> tuple[Any, Any]:
    """``(mapping, affine)`` of the overlap grids the fit's error is predicted on.

    The inliers' affine fit maps the overlap (it does not bend where the fit may); the fit
    itself does where they determine none (``affine`` is then None).
    """
    affine = _inliers_affine(fit, ties)
    return (fit.transform if affine is None else affine), affine


def _fit_overlap(
    fit: FitResult, ties: TiePoints, sar_size: tuple[int, int],
    optical_size: tuple[int, int], margin_px: float, n: int, mapping: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The inliers' (src, dst) and the overlap grid (SAR px) the fit's error is predicted on.

    The output inside ``margin_px`` of the optical's edges, as the inliers' affine fit (which
    does not bend where the fit may) places it, on :func:`_output_grid`: its outermost rows
    and columns on the margin's outline, corners included, where a poly2 or poly3 is most
    wrong. ``mapping``: ``_overlap_mapping(fit, ties)`` if at hand.
    """
    inl = np.asarray(fit.inliers, bool)
    src, dst = ties.src_px[inl], ties.dst_px[inl]
    overlap_by, affine = mapping if mapping is not None else _overlap_mapping(fit, ties)
    grid = _output_grid(affine, sar_size, optical_size, margin_px, n)
    if grid is not None and not len(grid):  # the margin leaves nothing: the whole output
        grid = _output_grid(affine, sar_size, optical_size, 0.0, n)
    if grid is None:  # no affine to place the output by: the fit's own grid of cell centres
        grid = _overlap_grid(overlap_by, sar_size, optical_size, margin_px, n, affine)
        if not len(grid):
            grid = _overlap_grid(overlap_by, sar_size, optical_size, 0.0, n, affine)
    return src, dst, grid


def _clip_to_box(poly: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The convex polygon ``poly`` ``(K, 2)`` (vertices in order) cut to ``box = (x0, y0, x1, y1)``.

    Sutherland-Hodgman against each side of the box in turn; ``(0, 2)`` when nothing is left.
    """
    for axis, limit, sign in ((0, box[0], 1.0), (0, box[2], -1.0), (1, box[1], 1.0),
                              (1, box[3], -1.0)):  # fmt: skip
        d = sign * (poly[:, axis] - limit)  # >= 0: on the kept side
        out = []
        for i in range(len(poly)):
            j = (i + 1) % len(poly)
            if d[i] >= 0:
                out.append(poly[i])
            if (d[i] >= 0) != (d[j] >= 0):  # the edge crosses the side: keep the crossing
                out.append(poly[i] + d[i] / (d[i] - d[j]) * (poly[j] - poly[i]))
        poly = np.asarray(out, np.float64).reshape(-1, 2)
    return poly


def _output_overlap(
    affine: Any, sar_size: tuple[int, int], optical_size: tuple[int, int], margin_px: float = 0.0
) -> np.ndarray | None:
    """``(K, 2)`` SAR-pixel vertices of the output pixels the SAR covers, as ``affine`` puts it.

    The output is the optical grid, its values the SAR's at the images of its pixel centres
    (0.5 to width - 0.5): those at least ``margin_px`` (0.5 at least: the outermost centres)
    inside the optical's edges, taken back into SAR pixels, cut to the SAR raster (0 to its
    width, its pixel edges). ``(0, 2)`` when the margin leaves no output; None when ``affine``
    is singular.
    """
    (sw, sh), (ow, oh), m = sar_size, optical_size, max(float(margin_px), 0.5)
    if ow - m < m or oh - m < m:
        return np.zeros((0, 2))
    corners = np.array([[m, m], [ow - m, m], [ow - m, oh - m], [m, oh - m]], np.float64)
    a = affine.affine_matrix()
    try:
        under = np.linalg.solve(a[:, :2], (corners - a[:, 2]).T).T
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(under).all():
        return None
    return _clip_to_box(under, (0.0, 0.0, float(sw), float(sh)))


def _output_grid(
    affine: Any, sar_size: tuple[int, int], optical_size: tuple[int, int], margin_px: float,
    n: int,
) -> np.ndarray | None:  # fmt: skip
    """``(M, 2)`` SAR pixels over :func:`_output_overlap` (``margin_px`` inside the optical).

    An ``n`` x ``n`` grid over the overlap's bounding box, its outermost rows and columns on
    the overlap's edges, kept where it maps onto that output, and ``n`` points along each of
    the overlap's edges, corners included: a grid of cell centres stopped up to a cell short
    of them, where an extrapolating poly2 or poly3 is most wrong. ``(0, 2)`` when the SAR
    covers none of that output; None when ``affine`` is None or singular.
    """
    poly = None if affine is None else _output_overlap(affine, sar_size, optical_size, margin_px)
    if poly is None or len(poly) < 3:
        return poly if poly is None else np.zeros((0, 2))
    (ow, oh), m = optical_size, max(float(margin_px), 0.5)
    t = np.linspace(0.0, 1.0, n)
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    grid = np.stack(np.meshgrid(lo[0] + t * (hi[0] - lo[0]), lo[1] + t * (hi[1] - lo[1])),
                    axis=-1).reshape(-1, 2)  # fmt: skip
    at, tol = affine.apply(grid), 1e-9 * max(ow, oh)  # the edges' own points kept
    on = ((at >= m - tol) & (at <= np.array([ow, oh]) - m + tol)).all(axis=1)
    edges = poly[:, None] + t[:, None] * (np.roll(poly, -1, axis=0) - poly)[:, None]
    return np.concatenate([grid[on], edges.reshape(-1, 2)])


def _band_grid(
    fit: FitResult, ties: TiePoints, sar_size: tuple[int, int],
    optical_size: tuple[int, int], margin_px: float, n: int, mapping: Any = None,
) -> np.ndarray:  # fmt: skip
    """``(M, 2)`` SAR pixels of the output within ``margin_px`` of the optical's edges.

    The whole output's :func:`_output_grid`, out to its outermost pixels and corners less
    those inside the margin: a poly2 or poly3 extrapolated there is most wrong at the
    outermost pixels and corners, which a grid of cell centres missed by up to a cell (a
    poly3 of 60 tie points 128-872 px into a 1000 px optical raster, on a SAR turned 0-45
    degrees: 1.22-1.26 px predicted on those, 1.35 px at the corner pixels; over the
    Monte Carlo's layouts 4 % more in the median, up to 9 %). ``mapping``:
    ``_overlap_mapping(fit, ties)`` if at hand.
    """
    by, affine = mapping if mapping is not None else _overlap_mapping(fit, ties)
    whole = _output_grid(affine, sar_size, optical_size, 0.0, n)
    if whole is None:  # no affine to place the output by: the fit's own grid over the SAR
        whole = _overlap_grid(by, sar_size, optical_size, 0.0, n, affine)
    (ow, oh), m = optical_size, float(margin_px)
    with np.errstate(all="ignore"):
        at = by.apply(whole)
    inner = (at[:, 0] >= m) & (at[:, 0] <= ow - m) & (at[:, 1] >= m) & (at[:, 1] <= oh - m)
    return whole[~inner]


def _max_error(kind: str, src: np.ndarray, dst: np.ndarray, grid: np.ndarray,
               residual_xy: np.ndarray | None = None) -> float:  # fmt: skip
    """Largest predicted standard error of the ``kind`` fit of src -> dst over ``grid``, px."""
    k = len(src)
    if kind == "tps" or k < 2 or not len(grid):
        return math.nan
    if kind == "shift" and residual_xy is not None:  # dst = J src + t, J fixed: t's error
        return math.sqrt(float(np.sum(residual_xy**2)) / (k * (k - 1)))
    try:
        return float(np.max(tf.prediction_error(src, dst, kind, grid)))
    except ValueError:  # degenerate for this kind
        return math.inf


def predicted_error(
    fit: FitResult,
    ties: TiePoints,
    sar_size: tuple[int, int],
    optical_size: tuple[int, int],
    margin_px: float = 0.0,
    n: int = 32,
) -> float:
    """Largest predicted standard error (optical px) of the fit over the SAR-optical overlap.

    The least-squares parameters' covariance on the inliers, scaled by their residuals and
    propagated to an ``n`` x ``n`` grid over the overlap (``core.transforms.prediction_error``;
    the output at least ``margin_px`` inside the optical's edges, as the inliers' affine places
    it, out to that outline and its corners: :func:`_output_grid`): how far the warp may be
    wrong between and beyond the tie points, which their residuals do not show. On synthetic tie
    points with 0.3-1.5 px of noise, the true largest error over the overlap was 1.11 times this
    figure in the median (5-95 %: 0.4-2.1 times; see :data:`ERROR_BOUND_FACTOR`), for affine,
    poly2 and poly3 fits of well-spread, crossing-line, one-line and corner-bunched layouts.

    Returns:
        Optical pixels; NaN for ``tps`` (no residuals to scale by: see ``loo_rmse_px``).
    """
    return _predicted(fit, ties, sar_size, optical_size, margin_px, n)[0]


def _predicted(
    fit: FitResult, ties: TiePoints, sar_size: tuple[int, int],
    optical_size: tuple[int, int], margin_px: float, n: int,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """:func:`predicted_error`, with the inliers' (src, dst) and the overlap grid it is on."""
    src, dst, grid = _fit_overlap(fit, ties, sar_size, optical_size, margin_px, n)
    inl = np.asarray(fit.inliers, bool)
    return _max_error(fit.kind, src, dst, grid, fit.residual_xy_px[inl]), src, dst, grid


#: Under this many inliers per term of a coordinate, a refused fit is said to have too few
#: (16 well-spread inliers of a poly3, 10 terms: 2-11 px predicted, 12-42 times the RMSE).
MIN_INLIERS_PER_TERM = 2.5


def _layout(src: np.ndarray, grid: np.ndarray, kind: str, amplification: float) -> str:
    """What is wrong with the inliers' layout (SAR px) over the overlap ``grid``, in words."""
    evals = np.linalg.eigvalsh(np.cov(src.T)) if len(src) > 2 else np.zeros(2)
    across = math.sqrt(max(float(evals[0]), 0.0) / max(float(evals[1]), 1e-300))
    if across < 0.1:
        return f"lie on nearly one line (spread across it {100 * across:.0f} % of that along it)"
    box = float(np.prod(np.ptp(src, axis=0)) / max(float(np.prod(np.ptp(grid, axis=0))), 1e-300))
    if box < 0.5:
        return (
            f"are bunched in one part of the overlap (their bounding box: {100 * box:.0f} % of it)"
        )
    terms = tf.min_points(kind)
    if len(src) < MIN_INLIERS_PER_TERM * terms:
        return (
            f"are too few for its {terms} terms per coordinate (at least "
            f"{math.ceil(MIN_INLIERS_PER_TERM * terms)} well-spread ones keep its error near the "
            "RMSE)"
        )
    if amplification > LAYOUT_AMPLIFICATION:
        return "lie along a few lines (e.g. two crossing roads), with too little spread off them"
    return (
        f"are spread over the overlap, but their residuals are too large for its {terms} terms "
        "per coordinate (the fit's error grows with its terms and falls with more, or better, "
        "tie points)"
    )


def _too_large(error_px: float, threshold_px: float) -> bool:
    """A predicted error whose likely largest true error exceeds ``threshold_px``."""
    return bool(ERROR_BOUND_FACTOR * error_px > threshold_px)


def _simpler_fix(
    kind: str, src: np.ndarray, dst: np.ndarray, grids: Sequence[np.ndarray], threshold_px: float
) -> str | None:
    """``TRANSFORM <kind> (predicted ...)`` for the first simpler kind passing on every grid."""
    for alt in {"poly3": ("poly2", "affine"), "poly2": ("affine",)}.get(kind, ()):
        errors = [_max_error(alt, src, dst, g) for g in grids if len(g)]
        if errors and all(math.isfinite(e) and not _too_large(e, threshold_px) for e in errors):
            return f"TRANSFORM {alt} (predicted {max(errors):.2g} px on these tie points)"
    return None


def check_predicted_error(
    fit: FitResult,
    ties: TiePoints,
    sar_size: tuple[int, int],
    optical_size: tuple[int, int],
    threshold_px: float,
    margin_px: float = 0.0,
) -> float:
    """:func:`predicted_error`, kept in ``fit.extra["predicted_error_px"]``; refuse it if too large.

    A fit is refused when :data:`ERROR_BOUND_FACTOR` times its predicted error exceeds
    ``threshold_px`` (the RANSAC threshold, the error the user accepts at a tie point): it is
    then likely wrong by more than that somewhere in the overlap, set by the scatter of too
    few or ill-placed tie points, not by the scene.

    Raises:
        RegistrationError: the message names the fit, the figures, the layout and the remedy.
    """
    err, src, dst, grid = _predicted(fit, ties, sar_size, optical_size, margin_px, 32)
    fit.extra["predicted_error_px"] = err
    if not _too_large(err, threshold_px):
        return err
    fix = _simpler_fix(fit.kind, src, dst, [grid], threshold_px) or "TRANSFORM shift"
    amplification = err / fit.rmse_px if fit.rmse_px > 0 else math.inf
    times = f"{amplification:.3g} times" if fit.rmse_px > 0 else "far beyond"
    layout = _layout(src, grid, fit.kind, amplification)
    raise RegistrationError(
        f"Registration refused: the '{fit.kind}' fit is predicted to be wrong by up to "
        f"{err:.3g} px (standard error) in the overlap, {times} its RMSE of "
        f"{fit.rmse_px:.2f} px at the tie points; its largest error there is likely "
        f"{ERROR_BOUND_FACTOR:g} times that, {ERROR_BOUND_FACTOR * err:.3g} px, beyond the "
        f"RESIDUAL_THRESHOLD of {threshold_px:g} px: its {len(src)} inliers {layout}, "
        "so between and beyond them the fit follows their noise. No output raster was "
        f"written. Use {fix}, or give more, better-spread keypoints (EXTENT and MASK over "
        "the whole overlap, a higher SPREAD or MAX_COUNT, a lower MIN_DISTANCE, or a "
        "KEYPOINTS layer over the whole overlap)."
    )


def check_border_band(
    fit: FitResult,
    ties: TiePoints,
    sar_size: tuple[int, int],
    optical_size: tuple[int, int],
    threshold_px: float,
    margin_px: float,
) -> str | None:
    """Judge the band within ``margin_px`` of the optical's edges, where no tie point lies.

    The output raster covers the band, but :func:`check_predicted_error` judges only inside
    ``margin_px``: in the band the fit is extrapolated (``scripts/measure_predicted_error.py``,
    192 px bands, 4000 draws each of seeds 0 / 1: a well-spread poly3's predicted error there
    was 1.8 times that inside in the median, 4.2 times at the 95th percentile; poly2 1.4 /
    2.2, affine 1.15 / 1.4; the true largest error there 1.26-1.36 times the prediction in
    the median). Its largest predicted standard error (:func:`_band_grid`: a 64 x 64 grid over
    the output's overlap with the SAR, out to its outermost pixels) is kept in
    ``fit.extra["predicted_error_band_px"]``. Of 162 / 185 accepted fits truly off by more
    than the threshold in the band, 103 / 123 were warned of, and 95 / 93 more that were not
    (the inside, and the truth, on grids of cell centres that stopped short of the edges:
    187 / 204, 124 / 140 and 100 / 94; the band's grid too: 119 / 135 warned, 82 / 77 not).

    Returns:
        A warning, naming the figures and what to do, when :data:`ERROR_BOUND_FACTOR` times
        it exceeds ``threshold_px`` (the band is then not refused: it is the output's edge);
        None otherwise.
    """
    inl = np.asarray(fit.inliers, bool)
    src, dst, mapping = ties.src_px[inl], ties.dst_px[inl], _overlap_mapping(fit, ties)
    band = _band_grid(fit, ties, sar_size, optical_size, margin_px, 64, mapping)
    err = _max_error(fit.kind, src, dst, band, fit.residual_xy_px[inl])
    fit.extra["predicted_error_band_px"] = err
    if not _too_large(err, threshold_px):
        return None
    # the inside's grid again (check_predicted_error's; < 1 ms): a simpler kind must pass both
    inner = _fit_overlap(fit, ties, sar_size, optical_size, margin_px, 32, mapping)[2]
    fix = _simpler_fix(fit.kind, src, dst, [inner, band], threshold_px)
    simpler = f"use {fix}, or " if fix else ""
    return (
        f"the border band (within {margin_px:g} px of the optical raster's edges, where no tie "
        f"point can lie) is extrapolated: there the '{fit.kind}' fit is predicted to be wrong "
        f"by up to {err:.3g} px (standard error; its largest error there likely "
        f"{ERROR_BOUND_FACTOR * err:.3g} px), beyond the RESIDUAL_THRESHOLD of "
        f"{threshold_px:g} px, against {fit.extra.get('predicted_error_px', math.nan):.3g} px "
        f"inside. The output was written; {simpler}clip it {margin_px:g} px inside the optical "
        "raster's edges (e.g. with Clip Raster by Extent)"
    )


# --- outputs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WarpSettings:
    """GDAL warp settings.

    Attributes:
        resampling: GDAL resampling name (see :data:`RESAMPLINGS`).
        pixel_size: output pixel size in optical map units; ``None``: the optical pixel size.
        creation_options: GDAL creation options of the output's format, e.g.
            ``("COMPRESS=DEFLATE",)``; ``None``: the format's defaults
            (``rasters.default_creation_options``: DEFLATE-compressed tiles for GeoTIFF).
            Either way :func:`warp_sar` adds what keeps a GeoPackage or JPEG 2000 lossless
            unless these set it (``rasters.lossless_creation_options``).
            Options the format does not declare are refused by :func:`warp_sar` (GDAL would
            only warn and write without them).
        nodata: output nodata value; ``None``: the SAR's nodata, else one no valid SAR pixel
            has (NaN for floats; 0, else the type's max or min, for integers;
            :func:`output_nodata`).
        grid_points: GCPs per axis sampled from a fitted polynomial (tps: its control points).
    """

    resampling: str = "bilinear"
    pixel_size: float | None = None
    creation_options: tuple[str, ...] | None = None
    nodata: float | None = None
    grid_points: int = 12

    def __post_init__(self) -> None:
        """Validate."""
        if self.resampling not in RESAMPLINGS:
            raise ValueError(f"resampling must be one of {RESAMPLINGS}, not {self.resampling!r}")
        if self.pixel_size is not None and not self.pixel_size > 0:
            raise ValueError(
                f"pixel_size must be > 0 (or None for the optical's), got " f"{self.pixel_size}"
            )


def gcp_grid(
    transform: Any,
    sar_width: int,
    sar_height: int,
    n: int,
    window: tuple[float, float, float, float] | None = None,
) -> tuple[Any, Any]:
    """(M, 2) SAR pixel grid (corners included) and its (M, 2) optical pixel images.

    ``window``: (x0, y0, x1, y1) SAR pixels the grid spans; None: the whole SAR raster.
    """
    x0, y0, x1, y1 = window if window is not None else (0.0, 0.0, sar_width, sar_height)
    gx, gy = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    src = np.column_stack([gx.ravel(), gy.ravel()])
    return src, transform.apply(src)


#: SAR pixels added around the part of the SAR that the fit maps onto the optical raster.
GCP_WINDOW_MARGIN_PX = 32


def _value_and_step_jacobian(transform: Any, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``transform`` at (N, 2) SAR pixels ``xy`` and its (N, 2, 2) one-pixel-step Jacobian.

    ``jac[i, :, j]`` is the optical-pixel step of one SAR pixel along SAR axis ``j`` (x =
    column, y = row) at point ``i``: a forward difference over one pixel.
    """
    f = transform.apply(xy)
    steps = [transform.apply(xy + d) - f for d in ([1.0, 0.0], [0.0, 1.0])]
    return f, np.stack(steps, axis=2)


def sar_window_on_optical(
    transform: Any, sar_width: int, sar_height: int, optical_width: float, optical_height: float
) -> tuple[float, float, float, float] | None:
    """SAR pixel window (x0, y0, x1, y1) that ``transform`` maps onto the optical raster.

    The optical outline is taken back into SAR pixels by Newton's method on the fitted
    transform, widened by :data:`GCP_WINDOW_MARGIN_PX` and clipped to the SAR. None when it
    does not converge or leaves no room (the caller then uses the whole SAR).

    A polynomial's GCPs belong there: GDAL fits the warp's inverse (optical -> SAR) to the
    GCPs by least squares, and the inverse of a polynomial is no polynomial. Over a SAR scene
    much larger than the optical tile, the fit extrapolated far from the tie points bent the
    grid so much that the inverse missed the fit by 1.1 px (SAR 8x the optical's side) to
    7.9 px (16x) on the optical tile.
    """
    edges = box_outline((0, 0, optical_width, optical_height), 17)
    xy = np.tile(np.asarray(transform.src_centre, np.float64), (len(edges), 1))
    with np.errstate(all="ignore"):
        for _ in range(20):
            f, jac = _value_and_step_jacobian(transform, xy)
            det = jac[:, 0, 0] * jac[:, 1, 1] - jac[:, 0, 1] * jac[:, 1, 0]
            if not (np.isfinite(det).all() and (np.abs(det) > 1e-12).all()):
                return None
            step = np.linalg.solve(jac, (edges - f)[:, :, None])[:, :, 0]
            xy = xy + step
            if np.abs(step).max() < 1e-3:
                break
        else:
            return None
    m = GCP_WINDOW_MARGIN_PX
    x0, y0 = max(float(xy[:, 0].min()) - m, 0.0), max(float(xy[:, 1].min()) - m, 0.0)
    x1 = min(float(xy[:, 0].max()) + m, float(sar_width))
    y1 = min(float(xy[:, 1].max()) + m, float(sar_height))
    return (x0, y0, x1, y1) if x1 - x0 > 1 and y1 - y0 > 1 else None


#: Output pixels around the output grid whose SAR pixels a warp kernel can still read
#: (lanczos reaches 3, an average the output pixel's own footprint).
SCAN_KERNEL_OUT_PX = 4


def scan_window(
    transform: Any,
    sar_width: int,
    sar_height: int,
    extent_px: tuple[float, float],
    src_px: Any,
    out_per_optical_px: Sequence[float],
) -> tuple[int, int, int, int] | None:
    """SAR pixels (x0, y0, x1, y1) a warp onto the output grid can read; None: the whole SAR.

    The output's outline (``extent_px``: its width and height in optical pixels, from the
    optical origin) taken back into SAR pixels (:func:`sar_window_on_optical`, with its
    margin), widened by :data:`SCAN_KERNEL_OUT_PX` output pixels at the largest SAR-pixel
    step per output pixel (:func:`_output_jacobian` at the centroid of ``src_px``, as
    :func:`warp_scales`; ``out_per_optical_px``: output pixels per optical pixel along x, y).
    A SAR scene much larger than the optical tile is scanned for the output nodata only where
    it can reach the output: its no-data frame outside was counted as valid zeros, and read.
    """
    win = sar_window_on_optical(transform, sar_width, sar_height, *extent_px)
    if win is None:
        return None
    inv = _inverse(_output_jacobian(transform, src_px, out_per_optical_px))
    if inv is None:
        return None
    pad = math.ceil(SCAN_KERNEL_OUT_PX * float(np.linalg.norm(inv, 2)))  # SAR px per out px
    x0, y0 = max(math.floor(win[0]) - pad, 0), max(math.floor(win[1]) - pad, 0)
    x1 = min(math.ceil(win[2]) + pad, sar_width)
    y1 = min(math.ceil(win[3]) + pad, sar_height)
    if (x0, y0, x1, y1) == (0, 0, sar_width, sar_height) or x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


#: Output pixels between the nodes of a thin-plate spline's geolocation arrays. The warp
#: interpolates the nodes bilinearly, which misses the spline most next to a control point
#: (the kernel ``r^2 log r`` bends sharply there): 0.23 / 0.09 / 0.03 px at most with 4 / 2 /
#: 1 px and the spline evaluated on every node (400^2 SAR, 80 noisy tie points).
TPS_NODE_SPACING_OUT_PX = 2.0
#: The spline is evaluated on every ``TPS_COARSE_FACTOR``-th node along each axis and on every
#: node near a control point; the other nodes interpolate it bilinearly.
TPS_COARSE_FACTOR = 4
#: Nodes around each control point (along each axis) where the spline is evaluated.
TPS_EXACT_RADIUS_NODES = 12
#: Most nodes per geolocation array (two Float64 arrays of 32 MB each).
TPS_MAX_NODES = 4_000_000
#: Most spline terms evaluated on the coarse nodes (nodes times control points).
TPS_MAX_NODE_TERMS = 1_000_000_000


def tps_geolocation(
    to_map: Callable[[np.ndarray], np.ndarray],
    control_px: np.ndarray,
    sar_width: int,
    sar_height: int,
    window: tuple[float, float, float, float] | None,
    sar_px_per_out_px: float,
) -> tuple[dict[str, str], np.ndarray, np.ndarray]:
    """GDAL geolocation arrays of a thin-plate spline: metadata, node map x, node map y.

    The metadata is the GEOLOCATION domain's, less the X/Y_DATASET names. The nodes are SAR pixels
    (corners, GDAL's default convention) every ``step`` pixels over ``window`` (None: the whole
    SAR), ``step`` about :data:`TPS_NODE_SPACING_OUT_PX` output pixels (wider beyond
    :data:`TPS_MAX_NODES` nodes or :data:`TPS_MAX_NODE_TERMS` terms). The spline is evaluated on a
    coarse subgrid and near each control point, interpolated between (:data:`TPS_COARSE_FACTOR`,
    :data:`TPS_EXACT_RADIUS_NODES`, a smaller radius where the nodes near the control points, times
    their number, would pass the terms left). GDAL inverts the bilinear interpolation between the
    nodes exactly, so the warp samples the SAR where the fitted spline puts each output pixel.
    ``gdal.Warp(tps=True)`` through the control points missed the spline by up to 0.31 px even with
    an exact transformer (GDAL fits the inverse, optical -> SAR, as a second spline through the same
    points, and the inverse of a spline is no spline), 1.22 px with its default approximate one
    (error threshold 0.125 px; 2000^2 px, 300 noisy tie points).

    Args:
        to_map: (N, 2) SAR pixels -> (N, 2) map coordinates through the fitted spline.
        control_px: (K, 2) the spline's control points in SAR pixels.
        sar_width: the SAR raster's width.
        sar_height: the SAR raster's height.
        window: (x0, y0, x1, y1) SAR pixels the arrays must cover (see
            :func:`sar_window_on_optical`); None: the whole SAR.
        sar_px_per_out_px: SAR pixels per output pixel (sets the node spacing).
    """
    x0, y0, x1, y1 = window if window is not None else (0.0, 0.0, sar_width, sar_height)
    x0, y0 = max(math.floor(x0), 0), max(math.floor(y0), 0)
    x1, y1 = min(math.ceil(x1), sar_width), min(math.ceil(y1), sar_height)
    m = TPS_COARSE_FACTOR
    step = max(int(round(TPS_NODE_SPACING_OUT_PX * sar_px_per_out_px)), 1)
    ctrl = np.asarray(control_px, np.float64).reshape(-1, 2)

    def shape(s: int) -> tuple[int, int]:  # the last node at or beyond the window's edge
        return max(math.ceil((y1 - y0) / s), 1) + 1, max(math.ceil((x1 - x0) / s), 1) + 1

    def coarse(n: int) -> int:
        return (n - 1 + m - 1) // m + 1

    def too_many(s: int) -> bool:
        ny, nx = shape(s)
        return ny * nx > TPS_MAX_NODES or coarse(ny) * coarse(nx) * len(ctrl) > TPS_MAX_NODE_TERMS

    while too_many(step):
        step += 1
    ny, nx = shape(step)
    cgx, cgy = np.meshgrid(x0 + step * m * np.arange(coarse(nx), dtype=np.float64),
                           y0 + step * m * np.arange(coarse(ny), dtype=np.float64))  # fmt: skip
    values = to_map(np.column_stack([cgx.ravel(), cgy.ravel()])).reshape(*cgx.shape, 2)
    for axis, n in ((0, ny), (1, nx)):  # bilinear: linear along rows, then along columns
        i = np.arange(n)
        j, f = i // m, (i % m) / m
        a = np.take(values, j, axis=axis)
        b = np.take(values, np.minimum(j + 1, values.shape[axis] - 1), axis=axis)
        f = f.reshape((-1, 1, 1) if axis == 0 else (1, -1, 1))
        values = a + f * (b - a)
    u = (ctrl - [x0, y0]) / step
    u = u[np.isfinite(u).all(axis=1)]

    def near_nodes(r: int) -> np.ndarray:  # nodes near a control point: the spline's own values
        near = np.zeros((ny, nx), bool)
        for cx, cy in u:
            near[max(math.floor(cy) - r, 0) : max(math.ceil(cy) + r + 1, 0),
                 max(math.floor(cx) - r, 0) : max(math.ceil(cx) + r + 1, 0)] = True  # fmt: skip
        return near

    # the near nodes share the budget with the coarse ones (1500 control points evaluated
    # 957 M terms there besides the coarse 94 M, 9.9 s): halve the radius until they fit
    left = TPS_MAX_NODE_TERMS - coarse(ny) * coarse(nx) * len(ctrl)
    r = TPS_EXACT_RADIUS_NODES
    near = near_nodes(r)
    while r > 0 and np.count_nonzero(near) * len(ctrl) > left:
        r //= 2
        near = near_nodes(r)
    if np.count_nonzero(near) * len(ctrl) > left:
        near[:] = False
    iy, ix = np.nonzero(near)
    if len(iy):
        values[iy, ix] = to_map(np.column_stack([x0 + step * ix, y0 + step * iy]).astype(float))
    meta = {"X_BAND": "1", "Y_BAND": "1", "PIXEL_OFFSET": str(x0), "LINE_OFFSET": str(y0),
            "PIXEL_STEP": str(step), "LINE_STEP": str(step),
            "GEOREFERENCING_CONVENTION": "TOP_LEFT_CORNER"}  # fmt: skip
    return meta, values[:, :, 0], values[:, :, 1]


def _output_jacobian(transform: Any, src_px: Any, out_per_optical_px: Sequence[float]) -> Any:
    """(2, 2) output pixels per SAR pixel of the fitted transform at the centroid of ``src_px``.

    Column ``j`` is the output-pixel step of one SAR pixel along SAR axis ``j``; may hold NaN
    or Inf where the transform does.
    """
    c = np.asarray(src_px, np.float64).reshape(-1, 2).mean(axis=0, keepdims=True)
    with np.errstate(all="ignore"):
        jac = _value_and_step_jacobian(transform, c)[1][0]  # d optical px / d SAR px
        return np.diag(np.asarray(out_per_optical_px, np.float64)) @ jac


def warp_scales(
    transform: Any, src_px: Any, out_per_optical_px: Sequence[float]
) -> tuple[float, float] | None:
    """GDAL's ``XSCALE`` / ``YSCALE`` for the fitted transform (None where it is singular).

    They are the destination pixels per SAR pixel along the output's axes, from the fit's
    Jacobian at the centroid of ``src_px`` (the GCPs' SAR pixels). Left to itself, GDAL takes
    them per chunk from the chunk's source window, whose bounding box on a rotated SAR is
    larger than the chunk: it took 1:1 as downsampling and widened the bilinear kernel, which
    blurred the output and moved it by up to 0.08 px at 4 degrees (median 0.03 px over an
    8000 px scene), a shift no tie point shows.

    Args:
        transform: the fitted SAR px -> optical px transform.
        src_px: (N, 2) SAR pixels the GCPs sample.
        out_per_optical_px: (2,) output pixels per optical pixel along x and y.
    """
    return _scales(_output_jacobian(transform, src_px, out_per_optical_px))


def _inverse(jac: np.ndarray) -> np.ndarray | None:
    """The inverse of a 2 x 2 Jacobian (SAR px per output px), None where it is singular."""
    with np.errstate(all="ignore"):
        if not np.isfinite(jac).all() or abs(np.linalg.det(jac)) < 1e-12:
            return None
        return np.linalg.inv(jac)


def _scales(jac: np.ndarray) -> tuple[float, float] | None:
    """Output pixels per SAR pixel along the output's x and y, from ``jac`` (d out / d SAR)."""
    inv = _inverse(jac)
    if inv is None:
        return None
    steps = np.linalg.norm(inv, axis=0)  # SAR px per output px, each axis
    return float(1.0 / steps[0]), float(1.0 / steps[1])


def out_per_optical(optical_gt: Sequence[float], out_gt: Sequence[float]) -> tuple[float, float]:
    """Output pixels per optical pixel along x and y (PIXEL_SIZE's grid against the optical's)."""
    g, o = optical_gt, out_gt
    return (math.hypot(g[1], g[4]) / math.hypot(o[1], o[4]),
            math.hypot(g[2], g[5]) / math.hypot(o[2], o[5]))  # fmt: skip


#: The largest shift, in SAR pixels, that a resampling kernel may add to the warp.
KERNEL_SHIFT_TOLERANCE_PX = 0.05
#: Output pixels per SAR pixel from which a misplaced widened kernel (:func:`kernel_shift`)
#: is used unwidened instead (``XSCALE`` / ``YSCALE`` 1: at most 10 % narrower than asked);
#: below it the warp is refused.
UNWIDENED_MIN_SCALE = 0.9

_KERNEL_SHIFTS: dict[tuple[str, float, float], tuple[float, float]] = {}


def kernel_shift(resampling: str, xscale: float = 0.5, yscale: float = 0.5) -> tuple[float, float]:
    """The shift (x, y, in SAR pixels) this GDAL's ``resampling`` warp adds at these scales.

    GDAL before 3.10 misplaced lanczos' widened kernel wherever the warp reduces the
    resolution (``XSCALE`` or ``YSCALE`` < 1; GDAL issue 11042), measured here by an offset
    that grows by about (1 - scale) SAR pixels per SAR pixel up to half a SAR pixel: a SAR
    registered onto a grid 0.5 % coarser came out 0.48 px off in the median, at twice its
    pixel size 0.50 px.
    It is measured, not assumed from a version: two 96 x 96 ramps (each pixel holds its
    centre's x, or y) are warped with ``resampling`` onto a grid of ``1 / xscale`` x
    ``1 / yscale`` pixels with these scales, and the median difference from each output
    centre's x and y is the shift (every kernel but ``near`` reproduces a ramp; ``near`` is
    not measured: (0, 0)). A failed probe gives (0, 0). One probe per kernel and scale (to 3
    decimals) a session.
    """
    from osgeo import gdal

    from sar_optical_matcher.rasters import gdal_try

    xs, ys = round(float(xscale), 3), round(float(yscale), 3)
    key = (resampling, xs, ys)
    if resampling == "near" or not (0.0 < xs and 0.0 < ys):
        return 0.0, 0.0
    if key not in _KERNEL_SHIFTS:
        n = 96
        mem = gdal.GetDriverByName("MEM")

        def probe() -> tuple[float, float]:
            src = mem.Create("", n, n, 2, gdal.GDT_Float32)
            src.SetGeoTransform((0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
            centres = np.arange(n, dtype=np.float32) + 0.5
            src.GetRasterBand(1).WriteArray(np.tile(centres, (n, 1)))
            src.GetRasterBand(2).WriteArray(np.tile(centres[:, None], (1, n)))
            w, h = max(math.ceil(n * xs), 8), max(math.ceil(n * ys), 8)
            dst = mem.Create("", w, h, 2, gdal.GDT_Float32)
            dst.SetGeoTransform((0.0, 1.0 / xs, 0.0, 0.0, 0.0, -1.0 / ys))
            if not gdal.Warp(dst, src, resampleAlg=resampling,
                             warpOptions=[f"XSCALE={xs}", f"YSCALE={ys}"]):  # fmt: skip
                raise RuntimeError("the probe warp failed")
            inner = (slice(h // 4, h - h // 4), slice(w // 4, w - w // 4))
            out_x = dst.GetRasterBand(1).ReadAsArray()[inner]
            out_y = dst.GetRasterBand(2).ReadAsArray()[inner]
            want_x = ((np.arange(w) + 0.5) / xs)[None, :][:, inner[1]]
            want_y = ((np.arange(h) + 0.5) / ys)[:, None][inner[0], :]
            return float(np.median(out_x - want_x)), float(np.median(out_y - want_y))

        shift, _ = gdal_try(probe)
        _KERNEL_SHIFTS[key] = shift if shift is not None else (0.0, 0.0)
    return _KERNEL_SHIFTS[key]


def kernel_scales(
    resampling: str, scales: Sequence[float], name: str
) -> tuple[tuple[float, float], str | None]:
    """The ``XSCALE`` / ``YSCALE`` to warp with, and a note where they were changed.

    ``scales``: output pixels per SAR pixel along the output's x and y (:func:`warp_scales`).
    Where the warp reduces the resolution (a scale < 1) and this GDAL misplaces the kernel's
    widened form (:func:`kernel_shift` at scale 0.5 beyond :data:`KERNEL_SHIFT_TOLERANCE_PX`:
    GDAL 3.6's lanczos), scales from :data:`UNWIDENED_MIN_SCALE` are raised to 1 (the kernel
    unwidened: placed right, 10 % narrower at most); below, the warp is refused.

    Raises:
        RegistrationError: a scale below :data:`UNWIDENED_MIN_SCALE` with a misplaced kernel.
    """
    from osgeo import gdal

    xs, ys = (float(v) for v in scales)
    if min(xs, ys) >= 1.0:
        return (xs, ys), None
    dx, dy = kernel_shift(resampling)
    if max(abs(dx), abs(dy)) <= KERNEL_SHIFT_TOLERANCE_PX:
        return (xs, ys), None
    why = (
        f"this GDAL ({gdal.__version__}) misplaces the {resampling} kernel where the warp reduces "
        f"the resolution (by ({dx:+.2f}, {dy:+.2f}) SAR pixels at half the resolution; GDAL "
        "issue 11042, mended in GDAL 3.10)"
    )
    if min(xs, ys) < UNWIDENED_MIN_SCALE:
        raise RegistrationError(
            f"RESAMPLING {resampling} would shift {name} by up to half a SAR pixel: {why}, and "
            f"here {1 / xs:.3g} x {1 / ys:.3g} SAR pixels make an output pixel. No output was "
            "written. Choose RESAMPLING cubic or average, or a PIXEL_SIZE no coarser than the "
            "SAR's pixels"
        )
    kept = (max(xs, 1.0), max(ys, 1.0))
    return kept, (
        f"{resampling} kernel used unwidened (XSCALE {kept[0]:.4g}, YSCALE {kept[1]:.4g} "
        f"instead of {xs:.4g}, {ys:.4g}): {why}"
    )


def _kernel_options(
    scales: tuple[float, float] | None,
    resampling: str,
    name: str,
    log: Callable[[str], None] | None,
) -> list[str]:
    """The warp options of :func:`warp_scales`' scales, as :func:`kernel_scales` keeps them.

    Its note goes to ``log``; a singular fit (None) has no options.
    """
    if scales is None:
        return []
    (xs, ys), note = kernel_scales(resampling, scales, name)
    if note is not None and log is not None:
        log(note)
    return [f"XSCALE={xs:.12g}", f"YSCALE={ys:.12g}"]


def georeferenced_scales(sar: Any, optical: Any, out_gt: Sequence[float]) -> tuple[float, float]:
    """Output pixels per SAR pixel along the output's x and y, from the two georeferences.

    What :func:`warp_scales` takes from the fit, known before any matching (the fit moves it
    by the misregistration's scale only): for checks said up front. NaN where the rasters
    do not overlap.
    """
    from sar_optical_matcher.rasters import pixel_jacobian

    per_optical = out_per_optical(optical.geotransform, out_gt)
    scales = _scales(np.diag(per_optical) @ pixel_jacobian(optical, sar))  # d out / d SAR px
    return scales if scales is not None else (math.nan, math.nan)


def map_units(info: Any) -> str:
    """What a raster's map units are, for a message about a size given in them."""
    return "degrees: the optical CRS is geographic" if info.is_geographic else "map units"


#: Most pixels of a registered raster (2^36: 64 GiB a Byte band): a PIXEL_SIZE of degrees given
#: for metres (1e-4 on a UTM optical) made 40,000,000^2 px, which failed only after the
#: matching, in GDAL ("File too large regarding tile size").
MAX_OUTPUT_PIXELS = 2**36


def output_grid(optical: Any, pixel_size: float | None) -> tuple[tuple[float, ...], int, int]:
    """Geotransform, width and height of the registered raster's grid.

    The optical grid itself, or with ``pixel_size`` the same origin and axes (a rotated grid
    stays rotated) with pixels of that side, covering the optical extent to the nearest whole
    pixel.

    Raises:
        ValueError: ``pixel_size`` is larger than the optical raster's width or height (e.g.
            metres given for a raster in degrees), where the output would be a single pixel,
            or so small that the output would pass :data:`MAX_OUTPUT_PIXELS` (degrees given
            for a raster in metres).
    """
    gt = optical.geotransform
    if pixel_size is None:
        return tuple(float(v) for v in gt), int(optical.width), int(optical.height)
    kx = pixel_size / math.hypot(gt[1], gt[4])  # column step, scaled to pixel_size
    ky = pixel_size / math.hypot(gt[2], gt[5])  # row step
    if optical.width < kx or optical.height < ky:
        raise ValueError(
            f"PIXEL_SIZE {pixel_size:g} is larger than the optical raster, "
            f"{optical.width * pixel_size / kx:.4g} x {optical.height * pixel_size / ky:.4g} "
            f"optical map units ({map_units(optical)}): the output would be one pixel; give it "
            "in the optical CRS's units, or 0 for the optical pixel size"
        )
    out_gt = (gt[0], gt[1] * kx, gt[2] * ky, gt[3], gt[4] * kx, gt[5] * ky)
    width, height = max(round(optical.width / kx), 1), max(round(optical.height / ky), 1)
    if width * height > MAX_OUTPUT_PIXELS:
        raise ValueError(
            f"PIXEL_SIZE {pixel_size:g} makes a {width:,} x {height:,} px output "
            f"({width * height:.3g} pixels, more than {MAX_OUTPUT_PIXELS:.3g}) of an optical "
            f"raster of {optical.width:,} x {optical.height:,} px, whose pixel is "
            f"{math.hypot(gt[1], gt[4]):.4g} optical map units ({map_units(optical)}) wide; "
            "give it in the optical CRS's units, or 0 for the optical pixel size"
        )
    return out_gt, width, height


def check_nodata_fits(nodata: float, gdal_type: int) -> None:
    """The output nodata must be storable in the SAR's data type.

    GDAL clamps an integer type's (-9999 in Byte: 0); a finite value beyond a float type's
    range becomes infinity as the band's nodata while the area outside the SAR is filled with
    the type's largest value, so no pixel reads as nodata (Float32, NODATA 1e39).
    """
    from osgeo import gdal, gdal_array

    dtype = gdal_array.GDALTypeCodeToNumericTypeCode(gdal_type)
    if dtype is None:
        return
    if np.issubdtype(dtype, np.floating):
        top = float(np.finfo(dtype).max)
        with np.errstate(over="ignore"):  # the type's rounding decides: -3.4028235e38 fits
            stored = float(np.array(nodata, np.float64).astype(dtype))
        if math.isfinite(nodata) and not math.isfinite(stored):
            raise RegistrationError(
                f"output nodata {nodata:g} cannot be stored in the SAR's "
                f"{gdal.GetDataTypeName(gdal_type)} data type (at most {top:.8g} in size); "
                f"choose a NODATA value in that range (e.g. {-top:.8g}), or leave it empty"
            )
        return
    if not np.issubdtype(dtype, np.integer):
        return
    info = np.iinfo(dtype)
    if not (float(nodata).is_integer() and info.min <= nodata <= info.max):
        raise RegistrationError(
            f"output nodata {nodata:g} cannot be stored in the SAR's "
            f"{gdal.GetDataTypeName(gdal_type)} data type ({info.min} to {info.max}); choose a "
            "NODATA value in that range, or convert the SAR raster to Float32 first"
        )


#: Pixels per read while scanning the SAR for values equal to the output nodata (16 MB of
#: Float32): strips of whole block rows, never the whole raster.
SCAN_PIXELS = 4 * 2**20


@dataclass(frozen=True)
class OutputNodata:
    """The output's nodata value, why it was chosen, and the valid SAR pixels it hides.

    Attributes:
        value: the nodata value written (NaN for a float SAR without one).
        note: one line for the log: the value and where it comes from.
        collisions: valid SAR pixels (over all bands) equal to ``value``.
        written_as: what the warp writes where its value is ``value`` on valid data
            (:func:`nodata_collision_value`): None, the nodata itself, so ``collisions`` make
            holes no reader can tell from the area outside the SAR (nearest resampling); or a
            value one step off, so they stay data with their values changed (GDAL 3.6's
            interpolating kernels on integer types).
        warning: what ``collisions`` > 0 means and how to avoid it, or that an integer SAR's
            zeros stay data under another nodata (they may be an undeclared no-data border);
            None otherwise.
    """

    value: float
    note: str
    collisions: int = 0
    warning: str | None = None
    written_as: float | None = None

    def said(self, log: Callable[[str], None] | None, warn: Callable[[str], None] | None) -> float:
        """Give ``log`` the note and ``warn`` the warning (where there is one); the value."""
        if log is not None:
            log(self.note)
        if self.warning is not None and warn is not None:
            warn(self.warning)
        return self.value


_COLLISION_VALUES: dict[tuple[int, float, str], float | None] = {}


def nodata_collision_value(gdal_type: int, nodata: float, resampling: str) -> float | None:
    """What this GDAL's warp writes for valid data whose warped value equals ``nodata``.

    None: ``nodata`` itself, a hole (GDAL 3.6, nearest resampling: the pixel is copied).
    Else the value written instead, one step off, so the pixel stays data (GDAL 3.6, the
    interpolating kernels on an integer type; other GDAL versions differ, see GDAL issue
    11711). It is measured, not assumed from a version: a 12 x 12 raster of ``gdal_type``
    filled with ``nodata``, no nodata of its own, is warped by (0.3, -0.2) pixels with
    ``resampling`` and ``dstNodata=nodata`` (a fractional shift, as any fitted transform has:
    an exact copy takes another path), and its centre read. A failed probe answers None (the
    harsher warning). One probe per (type, value, resampling) a session.
    """
    from osgeo import gdal

    from sar_optical_matcher.rasters import gdal_try

    key = (int(gdal_type), float(nodata), resampling)
    if key not in _COLLISION_VALUES:
        mem = gdal.GetDriverByName("MEM")

        def probe() -> float:
            src = mem.Create("", 12, 12, 1, gdal_type)
            src.SetGeoTransform((0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
            src.GetRasterBand(1).Fill(float(nodata))
            dst = mem.Create("", 12, 12, 1, gdal_type)
            dst.SetGeoTransform((0.3, 1.0, 0.0, -0.2, 0.0, -1.0))
            if not gdal.Warp(dst, src, resampleAlg=resampling, dstNodata=float(nodata),
                             warpOptions=["INIT_DEST=NO_DATA"]):  # fmt: skip
                raise RuntimeError("the probe warp failed")
            return float(np.real(dst.GetRasterBand(1).ReadAsArray(6, 6, 1, 1)[0, 0]))

        written, _ = gdal_try(probe)  # newer GDALs warn "Value 0 ... changed to 1": not ours
        _COLLISION_VALUES[key] = (
            None if written is None or written == float(nodata) else float(written)
        )
    return _COLLISION_VALUES[key]


_FORMAT_NODATA: dict[tuple[str, int], float | None] = {}


def format_nodata(driver: str, gdal_type: int) -> float | None:
    """The one nodata value ``driver`` stores for bands of ``gdal_type``; None: any value.

    GDAL 3.6's GeoPackage records -32768 as an Int16 raster's nodata whatever it is given
    (5000, 32767, the SAR's own 0), without a word, while the warp fills the area outside the
    SAR with the value given, which then reads as data; UInt16 and Float32 keep theirs. It is
    measured, not assumed: a 4 x 4 raster of ``gdal_type`` with nodata 1 is written in
    ``/vsimem/`` and read back (GeoPackage only; the other formats store what they are given).
    A failed probe answers None.
    """
    import uuid

    from osgeo import gdal

    from sar_optical_matcher.rasters import gdal_try

    key = (driver, int(gdal_type))
    if driver != "GPKG":
        return None
    if key not in _FORMAT_NODATA:
        path = f"/vsimem/nodata_{uuid.uuid4().hex}.gpkg"

        def probe() -> float | None:
            ds = gdal.GetDriverByName(driver).Create(path, 4, 4, 1, gdal_type,
                                                     ["RASTER_TABLE=probe"])  # fmt: skip
            if ds is None:  # a type the format does not hold (refused elsewhere)
                raise RuntimeError(f"{driver} cannot create {gdal_type}")
            ds.SetGeoTransform((0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
            ds.GetRasterBand(1).SetNoDataValue(1.0)
            ds.GetRasterBand(1).Fill(2.0)
            ds = None
            back = gdal.Open(path)  # held while its band is read (a band outliving it crashes)
            value = back.GetRasterBand(1).GetNoDataValue()
            back = None
            return value

        stored, _ = gdal_try(probe)
        gdal_try(lambda: gdal.Unlink(path))  # none where Create failed (an error under
        # gdal.UseExceptions, as QGIS 3.38+ sets it)
        _FORMAT_NODATA[key] = None if stored is None or stored == 1.0 else float(stored)
    return _FORMAT_NODATA[key]


def check_format_nodata(driver: str, gdal_type: int, nodata: float, name: str) -> None:
    """Raise :class:`RegistrationError` where ``driver`` would record another nodata."""
    from osgeo import gdal

    forced = format_nodata(driver, gdal_type)
    if forced is None or nodata == forced:
        return
    type_name = gdal.GetDataTypeName(gdal_type)
    raise RegistrationError(
        f"output nodata {nodata:g} cannot be stored in {name}: the {driver} format records "
        f"{forced:g} as the nodata of a {type_name} raster whatever it is given, so the area "
        f"outside the SAR, filled with {nodata:g}, would read as data; give NODATA "
        f"{forced:g}, leave it empty, or write a .tif"
    )


def _collision_effect(written_as: float | None, nodata: float, resampling: str, name: str) -> str:
    """What the output makes of valid SAR pixels equal to its nodata, for the warnings."""
    if written_as is None:
        return (
            f"wherever they fall on the output they are written as nodata, holes in {name} "
            "that no reader can tell from the area outside the SAR"
        )
    return (
        f"{name} keeps no holes for them: wherever the warped value would be {nodata:g}, "
        f"GDAL's {resampling} warp writes {written_as:g} instead, data one step off"
    )


def _scan_valid(
    ds: Any,
    value: float,
    is_canceled: IsCanceled | None = None,
    window: tuple[int, int, int, int] | None = None,
) -> tuple[int, int, float, float]:
    """``(equal, valid, min, max)`` over the valid pixels of every band of ``ds``.

    ``equal``: how many equal ``value`` compared in the band's type (as GDAL's nodata mask
    compares). Valid: not nodata, not excluded by a mask or alpha band, finite. Only the
    pixels of ``window`` (x0, y0, x1, y1; None: the whole raster) are read, in strips of
    :data:`SCAN_PIXELS` (whole block rows); ``is_canceled`` is checked before each.
    """
    from osgeo import gdal

    from sar_optical_matcher.rasters import CORRUPT_HINT, gdal_try

    equal, valid, lo, hi = 0, 0, math.inf, -math.inf
    x0, top, x1, bottom = window or (0, 0, ds.RasterXSize, ds.RasterYSize)
    width = x1 - x0
    for b in range(1, ds.RasterCount + 1):
        band = ds.GetRasterBand(b)
        block_h = max(int(band.GetBlockSize()[1]), 1)
        rows = max(SCAN_PIXELS // max(width, 1) // block_h, 1) * block_h
        masked = not band.GetMaskFlags() & gdal.GMF_ALL_VALID
        for y0 in range(top, bottom, rows):
            _check_canceled(is_canceled)
            h = min(rows, bottom - y0)
            data, errors = gdal_try(lambda: band.ReadAsArray(x0, y0, width, h))  # noqa: B023
            mask = None
            if data is not None and masked:
                mask, errors = gdal_try(
                    lambda: band.GetMaskBand().ReadAsArray(x0, y0, width, h)  # noqa: B023
                )
            if data is None or (masked and mask is None):
                raise RegistrationError(
                    f"reading the SAR raster failed: {'; '.join(errors)}; {CORRUPT_HINT}"
                )
            ok = mask > 0 if mask is not None else np.ones(data.shape, bool)
            if np.issubdtype(data.dtype, np.inexact):
                ok &= np.isfinite(data)
            values = data[ok]
            if values.size:
                valid += int(values.size)
                lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
                if not math.isnan(value):
                    equal += int(np.count_nonzero(values == np.array(value).astype(data.dtype)))
    return equal, valid, lo, hi


def _given_nodata(
    ds: Any,
    requested: float,
    label: str,
    forced: bool,
    name: str,
    resampling: str,
    is_canceled: IsCanceled | None,
    window: tuple[int, int, int, int] | None,
) -> OutputNodata:
    """:func:`output_nodata` for a value given (NODATA) or ``forced`` by the format."""
    from sar_optical_matcher.rasters import _numpy_dtype

    band = ds.GetRasterBand(1)
    dtype = np.dtype(_numpy_dtype(band.DataType))
    where = "" if window is None else " where it falls on the output"
    equal, valid, lo, hi = _scan_valid(ds, requested, is_canceled, window)
    note = f"output nodata {requested:g} ({label})"
    if not equal:
        return OutputNodata(float(requested), note)
    free = _free_integer(dtype, lo, hi) if np.issubdtype(dtype, np.integer) else None
    written_as = nodata_collision_value(band.DataType, requested, resampling)
    effect = _collision_effect(written_as, requested, resampling, name)
    if forced:
        advice = "Write a .tif instead, whose nodata can be one no SAR pixel has"
    else:
        advice = (
            "Set NODATA to a value no SAR pixel has"
            + (
                f" (e.g. {free}, outside its values {lo:g} to {hi:g}{where})"
                if free is not None
                else ""
            )
            + ", or leave it empty"
            + (
                " (the SAR's own nodata value)"
                if band.GetNoDataValue() is not None
                else " for one chosen so"
            )  # fmt: skip
        )
    warning = (
        f"{equal} valid SAR pixel values (of {valid}{where}) equal the output nodata "
        f"{requested:g} ({label}): {effect}. {advice}"
    )
    return OutputNodata(float(requested), note, equal, warning, written_as)


def output_nodata(
    ds: Any,
    requested: float | None,
    driver: str,
    name: str,
    resampling: str = "near",
    is_canceled: IsCanceled | None = None,
    window: tuple[int, int, int, int] | None = None,
) -> OutputNodata:
    """Choose the nodata value of the registered raster and count the valid pixels it hides.

    ``requested`` (the NODATA parameter) wins; its valid SAR pixels are counted and named in
    the warning. Else the SAR's own nodata value (its nodata pixels are no data: not scanned).
    Else one that no valid SAR pixel has: NaN for a float SAR (a GeoPackage cannot record it:
    the type's lowest value there), for an integer SAR 0 where no pixel is 0 (and, but for
    nearest resampling, its values are not both negative and positive), else the type's
    maximum or minimum where it lies outside the SAR's values (nearest and bilinear never
    produce it; where cubic or lanczos overshoot to it, GDAL 3.6 clamps and then writes it
    one step off, as any warped value equal to the nodata). An integer SAR spanning its whole
    type keeps 0, with the warning. The warnings say what the warp makes of the valid pixels
    equal to the nodata (holes, or values one step off), as :func:`nodata_collision_value`
    measures it.

    Args:
        ds: the SAR dataset (all bands are warped with one nodata value).
        requested: the user's nodata value, or None.
        driver: GDAL driver of the output.
        name: the output's file name, for the messages.
        resampling: the warp's (:data:`RESAMPLINGS`): all but ``near`` interpolate.
        is_canceled: checked between the strips of the scan.
        window: the SAR pixels (x0, y0, x1, y1) the warp can read (:func:`scan_window`); only
            they are scanned, counted and named "where it falls on the output" (None: the
            whole SAR).

    A format that records one nodata value only for the SAR's type (:func:`format_nodata`:
    a GeoPackage's Int16) gets that value, said as such.

    Raises:
        RegistrationError: ``requested`` cannot be stored in the SAR's data type, or the
            format records another nodata value for it.
    """
    from osgeo import gdal

    from sar_optical_matcher.rasters import _numpy_dtype

    band = ds.GetRasterBand(1)
    dtype = np.dtype(_numpy_dtype(band.DataType))
    type_name = gdal.GetDataTypeName(band.DataType)
    where = "" if window is None else " where it falls on the output"
    label = "NODATA"
    if requested is not None:
        check_nodata_fits(requested, band.DataType)
        check_format_nodata(driver, band.DataType, requested, name)
    forced = format_nodata(driver, band.DataType)
    if forced is not None:  # GPKG Int16: no other value is recorded
        requested, label = forced, f"the only nodata a {driver} {type_name} raster records"
    if requested is not None:
        return _given_nodata(ds, requested, label, forced is not None, name, resampling,
                             is_canceled, window)  # fmt: skip
    own = band.GetNoDataValue()
    if own is not None:
        return OutputNodata(float(own), f"output nodata {own:g} (the SAR's nodata value)")
    if np.issubdtype(dtype, np.floating):
        if driver == "GPKG":  # GDAL: "A NaN nodata value cannot be recorded" in a GeoPackage
            low = float(np.finfo(dtype).min)
            return OutputNodata(low, f"output nodata {low:.9g}: the SAR raster has no nodata "
                                f"value; the lowest {type_name} value (a GeoPackage cannot "
                                "record NaN)")  # fmt: skip
        return OutputNodata(math.nan, "output nodata NaN: the SAR raster has no nodata value, "
                            "and NaN is no valid pixel")  # fmt: skip
    if not np.issubdtype(dtype, np.integer):  # complex: GDAL compares the real part
        return OutputNodata(0.0, "output nodata 0: the SAR raster has no nodata value")
    zeros, valid, lo, hi = _scan_valid(ds, 0.0, is_canceled, window)
    # interpolation makes a 0 between negative and positive values (nearest: only copies)
    between = lo < 0 < hi and resampling != "near"
    none_zero = (
        f"output nodata 0: the SAR raster has no nodata value and none of its pixels{where} is 0"
    )
    if not zeros and not between:
        return OutputNodata(0.0, none_zero)
    free = _free_integer(dtype, lo, hi)
    if free is not None:
        why = (
            f"{zeros} of its pixels{where} are 0, kept as data"
            if zeros
            else f"{resampling} resampling makes 0s between its negative and positive values"
        )
        note = (
            f"output nodata {free}: the SAR raster has no nodata value and {why} ({free} lies "
            f"outside its values{where}, {lo:g} to {hi:g})"
        )
        border = None
        if zeros:  # valid dark pixels, or an undeclared no-data border: the file cannot say
            border = (
                f"{zeros} SAR pixel{'s' if zeros > 1 else ''}{where} "
                f"{'are' if zeros > 1 else 'is'} 0 and the SAR raster "
                f"declares no nodata value: kept as data in {name} (its nodata is {free}). If "
                "they are the SAR's no-data border (a swath edge, a GRD product's frame), that "
                "border now shows as black data: set NODATA to 0, or give the SAR its nodata "
                "first (gdal_edit.py -a_nodata 0)"
            )
        return OutputNodata(float(free), note, 0, border)
    if not zeros:  # a signed SAR over its whole type: no value is safe from interpolation
        return OutputNodata(0.0, none_zero)
    written_as = nodata_collision_value(band.DataType, 0.0, resampling)
    warning = (
        f"{zeros} valid SAR pixel values (of {valid}{where}) are 0, the output nodata: "
        f"{_collision_effect(written_as, 0.0, resampling, name)}. The SAR raster has no nodata "
        f"value and its {type_name} values{where} span the whole type ({lo:g} to {hi:g}), so no "
        "nodata value lies outside them. If its zeros are no data, set the SAR's nodata value to "
        "0; else convert the SAR to a wider type first (gdal_translate -ot Int32 or Float32)"
    )
    return OutputNodata(0.0, "output nodata 0: the SAR raster has no nodata value", zeros,
                        warning, written_as)  # fmt: skip


#: Kernels with negative lobes or a prefilter: an infinite pixel under them gives +inf, -inf
#: and NaN (inf - inf) around it. Nearest copies, bilinear and average only spread one sign.
RINGING_KERNELS = ("cubic", "cubicspline", "lanczos")


def infinite_pixels(
    ds: Any,
    is_canceled: IsCanceled | None = None,
    window: tuple[int, int, int, int] | None = None,
    inside: Callable[[np.ndarray], np.ndarray] | None = None,
) -> int:
    """How many valid pixels of a float ``ds`` (every band) are +inf or -inf; 0 for others.

    Valid: not nodata, not excluded by a mask or alpha band (a declared -inf nodata is not
    counted). A dB SAR holds -inf where the intensity was 0 (a swath edge, open water after
    thermal-noise removal). Read as :func:`_scan_valid` reads: ``window`` (x0, y0, x1, y1;
    None: the whole raster) in strips, ``is_canceled`` checked before each. ``inside``: only
    the pixels for whose centres ((N, 2) SAR pixel x, y) it returns True are counted.
    """
    from osgeo import gdal

    from sar_optical_matcher.rasters import CORRUPT_HINT, _numpy_dtype, gdal_try

    if not np.issubdtype(np.dtype(_numpy_dtype(ds.GetRasterBand(1).DataType)), np.floating):
        return 0
    count = 0
    x0, top, x1, bottom = window or (0, 0, ds.RasterXSize, ds.RasterYSize)
    width = x1 - x0
    for b in range(1, ds.RasterCount + 1):
        band = ds.GetRasterBand(b)
        block_h = max(int(band.GetBlockSize()[1]), 1)
        rows = max(SCAN_PIXELS // max(width, 1) // block_h, 1) * block_h
        masked = not band.GetMaskFlags() & gdal.GMF_ALL_VALID
        for y0 in range(top, bottom, rows):
            _check_canceled(is_canceled)
            h = min(rows, bottom - y0)
            data, errors = gdal_try(lambda: band.ReadAsArray(x0, y0, width, h))  # noqa: B023
            if data is None:
                raise RegistrationError(
                    f"reading the SAR raster failed: {'; '.join(errors)}; {CORRUPT_HINT}"
                )
            inf = np.isinf(data)
            if masked and inf.any():
                mask, errors = gdal_try(
                    lambda: band.GetMaskBand().ReadAsArray(x0, y0, width, h)  # noqa: B023
                )
                if mask is None:
                    raise RegistrationError(
                        f"reading the SAR raster failed: {'; '.join(errors)}; {CORRUPT_HINT}"
                    )
                inf &= mask > 0
            if inside is not None and inf.any():
                iy, ix = np.nonzero(inf)
                centres = np.column_stack([ix + x0 + 0.5, iy + y0 + 0.5]).astype(np.float64)
                count += int(np.count_nonzero(inside(centres)))
            else:
                count += int(inf.sum())
    return count


def check_infinite_pixels(
    ds: Any,
    resampling: str,
    name: str,
    is_canceled: IsCanceled | None = None,
    window: tuple[int, int, int, int] | None = None,
) -> None:
    """Refuse a ringing kernel (:data:`RINGING_KERNELS`) over a SAR holding +-inf pixels.

    Measured on a dB SAR with 53,519 -inf pixels (GDAL 3.6): cubic wrote 2,051 +inf pixels
    and 47,761 NaN holes, lanczos 4,049 and 49,286, with no word; bilinear none and none.

    Raises:
        RegistrationError: naming the count and the two ways out.
    """
    if resampling not in RINGING_KERNELS:
        return
    n = infinite_pixels(ds, is_canceled, window)
    if n:
        where = "" if window is None else " where it falls on the output"
        raise RegistrationError(_infinite_message(resampling, n, where, name))


def _infinite_message(resampling: str, n: int, where: str, name: str) -> str:
    return (
        f"RESAMPLING {resampling}: {n} valid SAR pixels{where} are infinite (-inf is the "
        f"dB of a zero intensity); a {resampling} kernel would spread them into {name} as "
        "+inf and -inf pixels around NaN holes. Use RESAMPLING bilinear (or near, "
        "average), or make them nodata first: gdal_calc.py -A sar.tif --allBands=A "
        '--calc="where(isfinite(A), A, nan)" --NoDataValue=nan --outfile=sar_finite.tif'
    )


#: :func:`check_infinite_pixels_up_front` counts the SAR pixels whose georeferenced position
#: lies this many search ranges inside the optical raster: the fit moves the georeference by
#: at most one search range at the tie points (a larger match is on the map's edge, unused).
UP_FRONT_RANGES = 2.0


def check_infinite_pixels_up_front(
    ds: Any,
    sar: Any,
    optical: Any,
    resampling: str,
    name: str,
    search_range_px: float,
    is_canceled: IsCanceled | None = None,
) -> None:
    """:func:`check_infinite_pixels` said before any matching, where the answer is sure.

    Counts the valid +-inf pixels of the SAR ``ds`` (``sar``: its RasterInfo) whose position
    by the two georeferences lies :data:`UP_FRONT_RANGES` ``search_range_px`` (optical pixels)
    or more inside the ``optical`` raster: any fit the matches allow warps those onto the
    output, so the refusal after the fit would come anyway, after the whole matching. The
    pixels nearer the edge are left to that check, which knows the fit's window.

    Raises:
        RegistrationError: as :func:`check_infinite_pixels`.
    """
    from sar_optical_matcher.rasters import footprint_overlap, pixels_between

    if resampling not in RINGING_KERNELS:
        return
    m = UP_FRONT_RANGES * max(float(search_range_px), 0.0)
    if 2 * m >= min(optical.width, optical.height):
        return
    x0, y0, x1, y1 = footprint_overlap(sar, optical)
    window = (math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))
    if window[2] <= window[0] or window[3] <= window[1]:
        return

    def inside(centres: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):  # NaN where PROJ fails: not inside
            return points_in_box(
                pixels_between(sar, optical, centres), (m, m, optical.width - m, optical.height - m)
            )

    n = infinite_pixels(ds, is_canceled, window, inside)
    if n:
        where = f" more than {m:.0f} optical pixels inside the optical raster"
        raise RegistrationError(_infinite_message(resampling, n, where, name))


def _free_integer(dtype: np.dtype, lo: float, hi: float) -> int | None:
    """The type's maximum, else minimum, where it lies outside ``[lo, hi]``; else None."""
    info = np.iinfo(dtype)
    for value in (info.max, info.min):
        if not lo <= value <= hi:
            return int(value)
    return None


def _copy_descriptions(src: Any, dst: Any, nodata: float) -> None:
    """Metadata, band descriptions, colour interpretation/table, scale/offset: as gdalwarp."""
    dst.SetMetadata(src.GetMetadata() or {})
    for b in range(1, src.RasterCount + 1):
        sb, db = src.GetRasterBand(b), dst.GetRasterBand(b)
        db.SetNoDataValue(float(nodata))
        db.SetDescription(sb.GetDescription())
        db.SetMetadata(sb.GetMetadata() or {})
        db.SetColorInterpretation(sb.GetColorInterpretation())
        if sb.GetColorTable() is not None:
            db.SetColorTable(sb.GetColorTable())
        if sb.GetScale() not in (None, 1.0) or sb.GetOffset() not in (None, 0.0):
            db.SetScale(sb.GetScale() or 1.0)
            db.SetOffset(sb.GetOffset() or 0.0)


def _write_tps_geolocation(
    vrt: Any,
    transform: Any,
    src_px: np.ndarray,
    sar: Any,
    optical: Any,
    per_optical: tuple[float, float],
    name: str,
    is_canceled: IsCanceled | None = None,
    crs_wkt: str | None = None,
) -> list[str]:
    """Give ``vrt`` the spline's geolocation arrays; return their /vsimem/ files to unlink.

    ``crs_wkt``: the GCPs' CRS (default the optical's; a :class:`FitFrame`'s, the SAR's).

    ``vrt``: the SAR with GCPs at the spline's control points ``src_px`` (see
    :func:`tps_geolocation`). ``is_canceled`` is checked before each chunk of nodes.
    """
    import uuid

    from osgeo import gdal

    from sar_optical_matcher.rasters import gdal_try

    with np.errstate(all="ignore"):  # out px^2 per SAR px^2
        det = abs(float(np.linalg.det(_output_jacobian(transform, src_px, per_optical))))
    sar_per_out = 1.0 / math.sqrt(det) if math.isfinite(det) and det > 1e-12 else 1.0
    window = sar_window_on_optical(transform, sar.width, sar.height, optical.width, optical.height)
    # GDAL's forward spline through the control points is the fit's (the interpolating
    # spline through its own values) and 4x faster than numpy's: it evaluates the nodes
    tps_forward, errors = gdal_try(lambda: gdal.Transformer(vrt, None, ["METHOD=GCP_TPS"]))

    def to_map(xy: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(xy), 65536):  # 65536 nodes x 1000 control points: about 0.6 s
            _check_canceled(is_canceled)
            points, ok = tps_forward.TransformPoints(0, xy[i : i + 65536].tolist())
            if not all(ok):
                raise RegistrationError(
                    f"GDAL's thin-plate spline could not be evaluated over the SAR for "
                    f"{name}; use another TRANSFORM (poly2, poly3 or affine)"
                )
            out.append(np.asarray(points, np.float64)[:, :2])
        return np.concatenate(out)

    if tps_forward is None:
        raise RegistrationError(
            f"GDAL could not set up the thin-plate spline for {name}: "
            f"{'; '.join(e for e in errors if e) or gdal.GetLastErrorMsg()}; use another "
            "TRANSFORM (poly2, poly3 or affine)"
        )

    meta, map_x, map_y = tps_geolocation(to_map, src_px, sar.width, sar.height, window, sar_per_out)
    tps_forward = None
    geoloc_files: list[str] = []
    try:
        for axis, arr in (("X", map_x), ("Y", map_y)):
            path = f"/vsimem/sarmatcher_geoloc_{uuid.uuid4().hex}_{axis.lower()}.tif"
            geoloc_files.append(path)
            mem = gdal.GetDriverByName("GTiff").Create(
                path, arr.shape[1], arr.shape[0], 1, gdal.GDT_Float64
            )
            mem.GetRasterBand(1).WriteArray(arr)
            mem = None
            meta[f"{axis}_DATASET"] = path
    except BaseException:
        for path in geoloc_files:
            gdal.Unlink(path)
        raise
    vrt.SetMetadata({**meta, "SRS": crs_wkt or optical.crs_wkt}, "GEOLOCATION")
    return geoloc_files


@dataclass(frozen=True)
class FitFrame:
    """Where Register fits across two CRSs (:func:`fit_frame`): the SAR's CRS, optical scale.

    The pixel mapping between an optical and a SAR grid of two CRSs (UTM and EPSG:4326 or
    3857) is no affine: the best one misses it by 0.4-0.5 px over 1024 px and 1.5-2 px over
    2048 px (helper-73). A shift/affine/poly fitted between the pixel grids carried that, which
    neither its RMSE nor its predicted error showed (the ``make demo`` pair: up to 2.04 px
    true error, 0.34 px fitted here). Frame pixels ``v = L(N(p))``: ``N`` takes optical pixels
    to SAR pixels through the two georeferences (exact, PROJ), ``L`` is the affine SAR px ->
    optical px closest to ``N``'s inverse over the overlap, so frame pixels are optical pixels
    up to that departure and the SAR's own geometry is exactly affine in them.

    Attributes:
        linear: (2, 3) ``L``, SAR px -> frame px.
        geotransform: frame px -> SAR map coordinates (GDAL order), for the warp's GCPs.
        crs_wkt: the SAR's CRS, the GCPs' SRS; GDAL then reprojects exactly onto the output.
        departure_px: how far the pixel mapping departs from ``L`` over the overlap, at most.
    """

    linear: np.ndarray
    geotransform: tuple[float, ...]
    departure_px: float
    optical: Any
    sar: Any

    @property
    def crs_wkt(self) -> str:
        """The GCPs' SRS: the SAR's CRS."""
        return str(self.sar.crs_wkt)

    def to_frame(self, optical_px: Any) -> np.ndarray:
        """(N, 2) optical pixels -> (N, 2) frame pixels."""
        from sar_optical_matcher.rasters import pixels_between

        sar_px = pixels_between(self.optical, self.sar, np.asarray(optical_px, np.float64))
        return sar_px @ self.linear[:, :2].T + self.linear[:, 2]


#: Below this departure (optical px) of the pixel mapping from an affine, Register fits between
#: the pixel grids as before (one CRS: 0 up to rounding).
FRAME_MIN_DEPARTURE_PX = 0.01


def fit_frame(optical: Any, sar: Any, samples: int = 33) -> FitFrame | None:
    """The frame to fit in when the two grids' pixel mapping is no affine; None when it is.

    Sampled on a ``samples`` x ``samples`` grid over the SAR's footprint on the optical.
    """
    from sar_optical_matcher.rasters import footprint_overlap, pixels_between

    x0, y0, x1, y1 = footprint_overlap(optical, sar)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    gx, gy = np.meshgrid(np.linspace(x0, x1, samples), np.linspace(y0, y1, samples))
    p = np.column_stack([gx.ravel(), gy.ravel()])
    n = pixels_between(optical, sar, p)
    ok = np.isfinite(n).all(axis=1)
    if ok.sum() < 3:
        return None
    design = np.column_stack([n[ok], np.ones(int(ok.sum()))])
    coef, *_ = np.linalg.lstsq(design, p[ok], rcond=None)  # (3, 2): SAR px -> optical px
    linear = coef.T
    departure = float(np.hypot(*(design @ coef - p[ok]).T).max())
    if departure < FRAME_MIN_DEPARTURE_PX:
        return None
    # frame px v -> SAR px s = A^-1 (v - b) -> SAR map g(s)
    inv = np.linalg.inv(linear[:, :2])
    g = sar.geotransform
    g_lin = np.array([[g[1], g[2]], [g[4], g[5]]])
    lin = g_lin @ inv
    off = g_lin @ (-inv @ linear[:, 2]) + np.array([g[0], g[3]])
    gt = (float(off[0]), float(lin[0, 0]), float(lin[0, 1]),
          float(off[1]), float(lin[1, 0]), float(lin[1, 1]))  # fmt: skip
    return FitFrame(linear, gt, departure, optical, sar)


def warp_sar(
    sar: Any,
    optical: Any,
    fit: FitResult,
    out_path: str | os.PathLike[str],
    settings: WarpSettings,
    is_canceled: IsCanceled | None = None,
    progress: Progress | None = None,
    final_name: str | None = None,
    log: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    frame: FitFrame | None = None,
) -> Path:
    """Warp every band of the SAR raster onto the optical grid through the fitted transform.

    ``frame``: ``fit`` maps SAR pixels to that frame's pixels (:func:`fit_frame`), not the
    optical's; the GCPs then lie in the SAR's CRS and GDAL reprojects them exactly.

    GCPs (SAR pixel -> optical map coordinate) are given to ``gdal.Warp`` with the matching
    model: sampled from the fitted transform on a grid for polynomial order 1 (shift/affine/
    poly1), 2 and 3 (poly2/poly3), exact for these kinds (over the part of the SAR that falls
    on the optical raster, :func:`sar_window_on_optical`). A thin-plate spline is warped
    through geolocation arrays of the fitted spline itself (:func:`tps_geolocation`), within
    0.1 px of it; GDAL's own TPS transformer inverts it as a second spline (0.3 px off, 1.2 px
    with its approximate transformer). The
    output is the optical grid (:func:`output_grid`; rotated grids included) in the optical
    CRS, in the format of ``out_path``'s extension (``rasters.output_driver``), lossless
    unless the creation options ask otherwise (``rasters.lossless_creation_options``: GDAL
    writes a Byte GeoPackage as JPEG tiles, a JPEG 2000 at quality 25); written atomically.

    ``final_name``: the name the file will have once a caller's staging renames ``out_path``
    (messages, a GeoPackage's table name); default ``out_path``'s own.

    The output's nodata value is :func:`output_nodata`'s, over the SAR pixels the warp can
    read (:func:`scan_window`): ``log`` gets its line, ``warn`` the warning when valid SAR
    pixels equal it (they become nodata).

    Raises:
        RegistrationError: the nodata value does not fit the SAR's data type or the format's
            (:func:`format_nodata`), the resampling kernel would be misplaced
            (:func:`kernel_scales`) or would ring over infinite SAR pixels
            (:func:`check_infinite_pixels`), or GDAL fails.
        ValueError: ``out_path``'s extension is not an output format, the format cannot
            store the SAR's data type or number of bands as one raster or the optical's
            rotated grid, the SAR's bands differ in data type, a creation option or its value
            is not one of the format's, or the output grid is too large
            (:func:`output_grid`).
        Canceled: ``is_canceled`` returned True.
    """
    from osgeo import gdal

    from sar_optical_matcher.rasters import (
        WARP_MEMORY_BYTES,
        can_create,
        check_band_types,
        check_output,
        check_output_grid,
        default_creation_options,
        gdal_cache_limit,
        gdal_try,
        lossless_creation_options,
        output_driver,
    )

    name = final_name or Path(out_path).name
    driver = output_driver(Path(out_path))
    check_band_types(sar)
    order = {"shift": 1, "affine": 1, "poly1": 1, "poly2": 2, "poly3": 3}.get(fit.kind)
    if order is None:  # tps: GCPs at the fit's own control points (the inliers), which the
        # .points file holds too; GDAL's forward spline through them is the fit's, and it
        # evaluates the geolocation arrays the warp goes through (tps_geolocation)
        t = fit.transform
        src_px = np.asarray(t.control_n) * t.src_scale + t.src_centre
        dst_px = t.apply(src_px)
    else:  # a polynomial is exact through any grid of enough points
        n = max(settings.grid_points, order + 2)
        window = sar_window_on_optical(
            fit.transform, sar.width, sar.height, optical.width, optical.height
        )
        src_px, dst_px = gcp_grid(fit.transform, sar.width, sar.height, n, window)
    gcp_gt, gcp_crs = (
        (optical.geotransform, optical.crs_wkt)
        if frame is None
        else (frame.geotransform, frame.crs_wkt)
    )
    dst_map = pixel_to_map(gcp_gt, dst_px)
    gcps = [
        gdal.GCP(float(mx), float(my), 0.0, float(px), float(py))
        for (mx, my), (px, py) in zip(dst_map, src_px)
    ]
    vrt = gdal.Translate("", sar.path, format="VRT", GCPs=gcps, outputSRS=gcp_crs)
    first = vrt.GetRasterBand(1)
    if settings.nodata is not None:  # said before the format's checks, as it always was
        check_nodata_fits(settings.nodata, first.DataType)
    gdal_type = gdal.GetDataTypeName(first.DataType)
    check_output(driver, gdal_type, settings.creation_options, name, vrt.RasterCount)
    out_gt, width, height = output_grid(optical, settings.pixel_size)
    check_output_grid(driver, out_gt, name)
    per_optical = out_per_optical(optical.geotransform, out_gt)
    read = scan_window(fit.transform, sar.width, sar.height,
                       (width / per_optical[0], height / per_optical[1]), src_px,
                       per_optical)  # fmt: skip
    check_infinite_pixels(vrt, settings.resampling, name, is_canceled, read)
    nodata = output_nodata(
        vrt, settings.nodata, driver, name, settings.resampling, is_canceled, read
    ).said(log, warn)
    options = list(lossless_creation_options(driver, gdal_type, (
        default_creation_options(driver)
        if settings.creation_options is None
        else settings.creation_options
    )))  # fmt: skip
    scales = _kernel_options(
        warp_scales(fit.transform, src_px, per_optical), settings.resampling, name, log
    )
    geoloc_files = (
        _write_tps_geolocation(
            vrt, fit.transform, src_px, sar, optical, per_optical, name, is_canceled, gcp_crs
        )
        if order is None
        else []
    )
    if driver == "GPKG" and not any(o.upper().startswith("RASTER_TABLE=") for o in options):
        options.append(f"RASTER_TABLE={Path(name).stem}")  # not the temporary file's name

    def gdal_call(what: str, call: Callable[[], Any], hint: str = "") -> Any:
        """``call()`` under GDAL's error handler, its failure as one RegistrationError.

        A None/0 result or, with ``gdal.UseExceptions()``, a RuntimeError: both give the same
        message and hint; a cancel is :class:`Canceled`.
        """
        out, errors = gdal_try(call)
        _check_canceled(is_canceled)
        if out is None or out is False or out == 0:
            text = "; ".join(dict.fromkeys(e for e in errors if e)) or gdal.GetLastErrorMsg()
            raise RegistrationError(f"GDAL could not {what} {name}: {text}{hint}")
        return out

    def callback(done: float, _msg: Any, _data: Any) -> int:
        if progress is not None:
            progress(done)
        return 0 if (is_canceled is not None and is_canceled()) else 1

    def warp_into(path: Path, fmt: str, create_options: list[str]) -> None:
        ds = None
        try:
            ds = gdal_call(
                f"create ({fmt})",
                lambda: gdal.GetDriverByName(fmt).Create(
                    str(path), width, height, vrt.RasterCount, first.DataType, create_options
                ),
            )
            ds.SetGeoTransform(out_gt)
            ds.SetProjection(optical.crs_wkt)
            _copy_descriptions(vrt, ds, nodata)  # what gdalwarp keeps of the source
            compressed = any(o.upper().startswith("COMPRESS=") for o in create_options)
            gdal_call(
                "warp the SAR raster into",
                lambda: gdal.Warp(
                    ds,
                    vrt,
                    resampleAlg=settings.resampling,
                    polynomialOrder=order,
                    geoloc=order is None,
                    errorThreshold=0.0,  # exact: the approximate one missed poly2/3 by 0.05 px
                    dstNodata=nodata,
                    warpOptions=["INIT_DEST=NO_DATA", *scales]
                    + (["OPTIMIZE_SIZE=TRUE"] if compressed else []),
                    warpMemoryLimit=WARP_MEMORY_BYTES,
                    callback=callback,
                ),
            )
            ds.FlushCache()
        finally:
            ds = None  # closed before the file is renamed or removed

    try:
        with gdal_cache_limit(), atomic_output(out_path) as tmp:
            if can_create(driver):
                warp_into(tmp, driver, options)
            else:  # CreateCopy-only formats (PNG, JPEG, JP2): warp to a GeoTIFF, then copy
                staging = temporary_name(tmp.with_suffix(".tif"))
                try:
                    warp_into(staging, "GTiff", ["TILED=YES", "BIGTIFF=IF_SAFER"])
                    copy = gdal_call(
                        f"write ({driver})",
                        lambda: gdal.GetDriverByName(driver).CreateCopy(
                            str(tmp), gdal.Open(str(staging)), options=options
                        ),
                        "; write a .tif instead",
                    )
                    copy.FlushCache()
                    copy = None
                finally:  # best effort: a staging file still open must not hide the error
                    remove_with_sidecars(staging, strict=False)
    finally:
        for path in geoloc_files:
            gdal.Unlink(path)
    return Path(out_path)


def write_map_rasters(
    folder: str | os.PathLike[str],
    records: Sequence[Any],
    maps: Any,
    optical: Any,
    search_size: int,
    template_size: int,
    grid_scale: float = 1.0,
    stage: StagedOutputs | None = None,
) -> list[Path]:
    """Write each correspondence map as a small GeoTIFF on the optical grid of its offsets.

    Map pixel (j, i) is the window offset (j, i) in the search region, in matching-grid pixels
    (``grid_scale`` optical pixels each); its centre is placed at the optical position
    ``keypoint + k (j - c, i - c)`` px with ``c = (S - T) // 2`` (matching's offset origin) and
    ``k = grid_scale``, so the peak sits where the SAR content of the keypoint was found. Each
    map is written atomically; with ``stage`` they are only staged, and appear when the caller
    commits it (with its other outputs).
    """
    from osgeo import gdal

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)  # the folder output exists, maps or not
    c = float((search_size - template_size) // 2)  # matching's offset origin (odd S - T too)
    by_id = {int(r.id): r for r in records}
    written = []
    for ident, cmap in iter_maps(maps, records):
        rec = by_id.get(ident)
        if rec is None or cmap is None:
            continue
        arr = np.asarray(cmap, np.float32)
        gt, k = optical.geotransform, float(grid_scale)
        corner = [[rec.opt_x_px - (c + 0.5) * k, rec.opt_y_px - (c + 0.5) * k]]
        origin = pixel_to_map(gt, corner)[0]
        out = folder / f"map_{ident:05d}.tif"
        with contextlib.ExitStack() as scope:
            tmp = stage.path(out) if stage is not None else scope.enter_context(atomic_output(out))
            ds = gdal.GetDriverByName("GTiff").Create(
                str(tmp), arr.shape[1], arr.shape[0], 1, gdal.GDT_Float32
            )
            try:
                ds.SetGeoTransform(
                    (origin[0], gt[1] * k, gt[2] * k, origin[1], gt[4] * k, gt[5] * k)
                )
                ds.SetProjection(optical.crs_wkt)
                ds.GetRasterBand(1).WriteArray(arr)
            finally:
                ds = None  # closed before the file is renamed or removed (Windows)
        written.append(out)
    return written


def iter_maps(maps: Any, records: Sequence[Any]) -> Iterator[tuple[int, Any]]:
    """(record id, (m, m) map) pairs of the maps that were computed.

    Args:
        maps: ``MatchResult.maps``: (N, m, m) float32 in record order (NaN where skipped), or
            ``None``.
        records: the N match records.
    """
    if maps is None:
        return
    for rec, cmap in zip(records, maps):
        if np.isfinite(cmap).any():
            yield int(rec.id), cmap


# --- matching -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchSettings:
    """Matching settings (see ``matching.match_keypoints``).

    Attributes:
        model_path: ONNX model file; ``None``: the model shipped with the plugin.
        template_size: expected template size T (must equal the model contract's).
        search_size: expected search size S (must equal the model contract's).
        sar_scale: ``"auto"``, ``"linear"`` or ``"db"``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        batch_size: keypoints per batch (cancellation is checked per batch).
        confidence_threshold: matches below it are not accepted.
        keep_maps: return the correspondence maps.
        match_pixel_size: pixel size of the matching grid in optical map units; 0: automatic
            (:func:`matching_grid`: the optical grid, or the SAR's pixel size where that is
            more than 1.5x the optical's).
    """

    model_path: str | None = None
    template_size: int = 128
    search_size: int = 256
    sar_scale: str = "auto"
    device: str = "auto"
    batch_size: int = 4
    confidence_threshold: float = 0.5
    keep_maps: bool = False
    match_pixel_size: float = 0.0


#: SAR/optical pixel-size ratio beyond which the automatic matching grid leaves the optical grid
#: (and a SAR this much finer than the grid is averaged onto it instead of bilinearly sampled).
PIXEL_RATIO_AUTO = 1.5


@dataclass(frozen=True)
class MatchingGrid:
    """Where matching runs (see ``matching.match_keypoints``'s ``grid_scale``).

    Attributes:
        scale: matching-grid pixel size in optical pixels (1: the optical grid).
        sar_resampling: GDAL resampling of the SAR onto that grid.
        pixel_ratio: SAR pixel size / optical pixel size (NaN without overlap).
        note: what was decided and why, for the log ("" when the grid is the optical one).
        warning: True when ``note`` is a warning (the chosen grid costs accuracy).
    """

    scale: float
    sar_resampling: str
    pixel_ratio: float
    note: str = ""
    warning: bool = False


def matching_grid(optical: Any, sar: Any, match_pixel_size: float = 0.0) -> MatchingGrid:
    """The matching grid for a raster pair.

    The shipped model was trained on pairs of one pixel size (3.5-12.5 m). Matching on the
    optical grid when the SAR pixel is much larger upsamples the SAR and shows the model
    structures larger than it learned (docs/results.md: at 2x, half the matches within 3 px
    are lost), so the automatic grid (``match_pixel_size`` 0) takes the SAR's pixel size
    there. A SAR much finer than the grid is averaged onto it (multilooked), not sampled.

    Raises:
        ValueError: ``match_pixel_size`` negative, not finite, or finer than the optical pixel.
    """
    from sar_optical_matcher import rasters

    size = float(match_pixel_size)
    if not math.isfinite(size) or size < 0:
        raise ValueError(f"MATCH_PIXEL_SIZE must be 0 (automatic) or positive, got {size!r}")
    ratio = rasters.pixel_size_ratio(optical, sar)
    gt = optical.geotransform
    opt_size = math.hypot(gt[1], gt[4])
    if size > 0:
        scale = size / opt_size
        if scale < 1.0 - 1e-9:
            raise ValueError(
                f"MATCH_PIXEL_SIZE {size:g} is finer than the optical pixel ({opt_size:.4g} "
                "optical map units): matching cannot run on a grid finer than the optical "
                "raster; use 0 (automatic) or at least the optical pixel size"
            )
        scale = max(scale, 1.0)
    else:
        scale = ratio if math.isfinite(ratio) and ratio > PIXEL_RATIO_AUTO else 1.0
    if not math.isfinite(ratio):
        return MatchingGrid(scale, "bilinear", ratio)
    # a non-square optical pixel is given by both steps (the ratio is of pixel sides, sqrt of
    # the areas); MATCH_PIXEL_SIZE and the suggestion below stay in units of the column step
    opt_y = math.hypot(gt[2], gt[5])
    square = abs(opt_y - opt_size) <= 1e-6 * opt_size

    def steps(factor: float) -> str:
        side = f"{opt_size * factor:.4g}"
        return side if square else f"{side} x {opt_y * factor:.4g} (column x row step)"

    sar_side = math.sqrt(opt_size * opt_y) * ratio
    sizes = f"SAR {sar_side:.4g}, optical {steps(1.0)} optical map units a pixel"
    grid_size = steps(scale)
    sar_vs_grid = ratio / scale
    resampling = "average" if sar_vs_grid < 1.0 / PIXEL_RATIO_AUTO else "bilinear"
    if sar_vs_grid > PIXEL_RATIO_AUTO:
        return MatchingGrid(scale, resampling, ratio, (
            f"the SAR pixel is {sar_vs_grid:.1f}x the matching-grid pixel ({sizes}; grid "
            f"{grid_size}): the SAR is upsampled and the model sees structures "
            f"{sar_vs_grid:.1f}x larger than the pairs it was trained on, which costs accuracy "
            "(docs/results.md: 2x halves the matches within 3 px). Set MATCH_PIXEL_SIZE to 0 "
            f"(automatic) or to the SAR pixel size, {opt_size * ratio:.4g}"
            + ("" if square else f" (counted along the column step: a grid of {steps(ratio)})")
        ), True)  # fmt: skip
    parts = []
    if scale > 1.0:
        how = "automatic" if size == 0 else "MATCH_PIXEL_SIZE"
        parts.append(
            f"matching on a grid of {grid_size} optical map units a pixel ({how}; {sizes}), "
            f"{scale:.2f}x the optical pixel: the optical templates are averaged onto it; "
            "positions are reported in optical pixels"
        )
    if resampling == "average":
        parts.append(
            f"the SAR pixel is {1.0 / sar_vs_grid:.1f}x smaller than the matching-grid pixel "
            f"({sizes}): the SAR is averaged onto the grid (multilooked)"
        )
    return MatchingGrid(scale, resampling, ratio, "; ".join(parts))


def load_matcher(settings: MatchSettings, log: Callable[[str], None] | None = None) -> Any:
    """Open the model and check its sizes against the settings (ValueError when they differ)."""
    from sar_optical_matcher.model import runtime

    path = settings.model_path or runtime.default_model_path()
    matcher = runtime.OnnxMatcher(path, device=settings.device, log=log)
    c = matcher.contract
    if (c.template_size, c.search_size) != (settings.template_size, settings.search_size):
        raise ValueError(
            f"the model {Path(path).name} works with template {c.template_size} px and search "
            f"region {c.search_size} px, but TEMPLATE_SIZE={settings.template_size} and "
            f"SEARCH_SIZE={settings.search_size} were given; set them to {c.template_size} and "
            f"{c.search_size} or choose a model trained for the sizes you want"
        )
    return matcher


def compute_matches(
    optical: Any,
    optical_band: int,
    sar: Any,
    sar_band: int,
    keypoints_xy_px: np.ndarray,
    matcher: Any,
    settings: MatchSettings,
    progress: Progress | None = None,
    is_canceled: IsCanceled | None = None,
    grid: MatchingGrid | None = None,
    warn: Callable[[str], None] | None = None,
) -> Any:
    """Run ``matching.match_keypoints``; its ``Canceled`` becomes this module's :class:`Canceled`.

    ``grid``: the pair's :func:`matching_grid` when the caller has it already (None: decided
    here from ``settings.match_pixel_size``). ``warn``: given the warnings about the inputs
    (``matching.db_scale_warning``) before the matching starts.

    Returns:
        ``matching.MatchResult`` (records, maps).
    """
    from sar_optical_matcher import matching

    if grid is None:
        grid = matching_grid(optical, sar, settings.match_pixel_size)
    xy = np.asarray(keypoints_xy_px, np.float64).reshape(-1, 2)
    if len(xy) == 0:
        raise RegistrationError(
            "there are no keypoints to match: the optical raster may be constant, all nodata, "
            "or smaller than the search region plus border; use a textured area, a smaller "
            "MIN_DISTANCE/BORDER, or give a KEYPOINTS layer"
        )
    try:
        return matching.match_keypoints(
            optical,
            optical_band,
            sar,
            sar_band,
            xy,
            matcher,
            sar_scale=settings.sar_scale,
            batch_size=settings.batch_size,
            confidence_threshold=settings.confidence_threshold,
            keep_maps=settings.keep_maps,
            progress=progress,
            is_canceled=is_canceled,
            grid_scale=grid.scale,
            sar_resampling=grid.sar_resampling,
            warn=warn,
        )
    except matching.Canceled as exc:
        raise Canceled("canceled by the user") from exc
