"""QGIS Georeferencer ``.points`` files: writer and reader (no QGIS import).

Layout, as written by QGIS 3.x (``QgsGCPList::saveGcps``) and read by ``loadGcps``::

    #CRS: <WKT of the destination (map) CRS>
    mapX,mapY,sourceX,sourceY,enable,dX,dY,residual
    500123.5,4100456.25,10.5,-20.5,1,0.12,-0.03,0.1237

* ``mapX, mapY``: destination coordinates in the ``#CRS``;
* ``sourceX, sourceY``: the point on the *source* raster in the Georeferencer's source-layer
  coordinates. For a raster **without** georeference these are ``(column, -line)`` (QGIS shows
  such a raster with y up, so rows are negative). For a raster **with** a georeference (every
  raster this plugin writes GCPs for) they are that raster's own layer coordinates, which QGIS
  turns back into pixels with ``col = (x - gt[0]) / gt[1]``, ``line = (gt[3] - y) / gt[5]``
  (``QgsRasterChangeCoords::toColumnLine``; rotation terms are ignored). :func:`source_from_pixels`
  and :func:`pixels_from_source` implement exactly that pair, so the Georeferencer finds the
  same pixels we matched.
* ``enable`` 1/0, residuals ``dX, dY`` and their norm ``residual``. QGIS writes its own fit's
  residuals there, in *source* pixels (the destination point taken back through the inverse
  transform, minus the GCP's source pixel; map units if so configured), and never reads them
  back: on loading it refits and recomputes them. The Register algorithm writes its fit's
  residuals, ``transform(source) - destination`` in *optical* (destination) pixels, the same
  figures as its tie-point layer and report; they are informative only.

Checked against QGIS 3.22.16 (``QgsGCPList::saveGcps`` / ``loadGcps``: ``sourceX, sourceY`` are
stored as is; ``QgsGeorefTransform::updateParametersFromGcps`` turns them into pixels with
``QgsRasterChangeCoords::getPixelCoords`` when the raster has a geotransform).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sar_optical_matcher.core.files import write_text_atomic

HEADER = "mapX,mapY,sourceX,sourceY,enable,dX,dY,residual"
CRS_PREFIX = "#CRS: "


@dataclass(frozen=True)
class GcpTable:
    """Ground control points as stored in a ``.points`` file.

    Attributes:
        map_xy: (N, 2) float64, destination (map) coordinates in ``crs_wkt``.
        source_xy: (N, 2) float64, source-layer coordinates as written in the file (see module
            docstring; convert with :func:`pixels_from_source`).
        enabled: (N,) bool, whether each GCP is used.
        residual_xy: (N, 2) float64, residuals dX, dY (0 when unknown; see module docstring
            for their units).
        crs_wkt: WKT of the destination CRS, or ``None`` when the file has no ``#CRS`` line.
    """

    map_xy: np.ndarray
    source_xy: np.ndarray
    enabled: np.ndarray
    residual_xy: np.ndarray
    crs_wkt: str | None = None

    def __len__(self) -> int:
        return int(self.map_xy.shape[0])


def _check_gt(geotransform: Sequence[float] | None) -> None:
    if geotransform is None:
        return
    if len(geotransform) != 6 or geotransform[1] == 0 or geotransform[5] == 0:
        raise ValueError(
            f"geotransform must be 6 numbers with non-zero pixel sizes gt[1], gt[5], got "
            f"{tuple(geotransform)}; pass None for a raster without georeference"
        )


def _as_xy(xy: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(xy, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) as (x, y), got {arr.shape}")
    return arr


def source_from_pixels(
    xy_px: np.ndarray, geotransform: Sequence[float] | None = None
) -> np.ndarray:
    """Source-raster pixel coordinates to the Georeferencer's source-layer coordinates.

    Args:
        xy_px: (N, 2) float64, (x, y) pixels of the source raster (corner = 0, centre = +0.5).
        geotransform: the source raster's GDAL geotransform, or ``None`` if it has none.

    Returns:
        (N, 2) float64: ``(gt[0] + x gt[1], gt[3] + y gt[5])`` or ``(x, -y)`` without one.
    """
    xy = _as_xy(xy_px, "xy_px")
    _check_gt(geotransform)
    if geotransform is None:
        return np.column_stack([xy[:, 0], -xy[:, 1]])
    gt = geotransform
    return np.column_stack([gt[0] + xy[:, 0] * gt[1], gt[3] + xy[:, 1] * gt[5]])


def pixels_from_source(
    source_xy: np.ndarray, geotransform: Sequence[float] | None = None
) -> np.ndarray:
    """Inverse of :func:`source_from_pixels`: (N, 2) source-layer coords to (x, y) pixels."""
    src = _as_xy(source_xy, "source_xy")
    _check_gt(geotransform)
    if geotransform is None:
        return np.column_stack([src[:, 0], -src[:, 1]])
    gt = geotransform
    return np.column_stack([(src[:, 0] - gt[0]) / gt[1], (src[:, 1] - gt[3]) / gt[5]])


def _fmt(value: float) -> str:
    # repr round-trips float64 exactly and never uses locale separators
    return repr(float(value))


def format_points(table: GcpTable) -> str:
    """The text of a ``.points`` file for ``table`` (see module docstring)."""
    lines = []
    if table.crs_wkt:
        lines.append(CRS_PREFIX + " ".join(table.crs_wkt.split()))
    lines.append(HEADER)
    for i in range(len(table)):
        dx, dy = (float(v) for v in table.residual_xy[i])
        lines.append(
            ",".join(
                [
                    _fmt(table.map_xy[i, 0]),
                    _fmt(table.map_xy[i, 1]),
                    _fmt(table.source_xy[i, 0]),
                    _fmt(table.source_xy[i, 1]),
                    "1" if table.enabled[i] else "0",
                    _fmt(dx),
                    _fmt(dy),
                    _fmt(math.hypot(dx, dy)),
                ]
            )
        )
    return "\n".join(lines) + "\n"


def make_table(
    map_xy: np.ndarray,
    source_xy: np.ndarray,
    crs_wkt: str | None,
    enabled: np.ndarray | None = None,
    residual_xy: np.ndarray | None = None,
) -> GcpTable:
    """Build and validate a :class:`GcpTable` (shapes (N, 2), (N, 2), (N,), (N, 2))."""
    m = _as_xy(map_xy, "map_xy")
    s = _as_xy(source_xy, "source_xy")
    n = m.shape[0]
    if s.shape[0] != n:
        raise ValueError(f"map_xy has {n} points but source_xy has {s.shape[0]}; pair them 1:1")
    en = np.ones(n, bool) if enabled is None else np.asarray(enabled, dtype=bool).reshape(-1)
    res = np.zeros((n, 2)) if residual_xy is None else _as_xy(residual_xy, "residual_xy")
    if en.shape[0] != n or res.shape[0] != n:
        raise ValueError("enabled and residual_xy must have one entry per GCP")
    if not (np.isfinite(m).all() and np.isfinite(s).all()):
        raise ValueError("GCP coordinates must be finite; drop NaN/Inf points before writing")
    res = np.nan_to_num(res, nan=0.0, posinf=0.0, neginf=0.0)
    return GcpTable(m, s, en, res, crs_wkt or None)


def write_points(path: str | os.PathLike[str], table: GcpTable) -> Path:
    """Write ``table`` to ``path`` atomically (temporary name in the same folder, then rename).

    Returns:
        The written path.
    """
    return write_text_atomic(path, format_points(table), newline="\n")


def read_points(path: str | os.PathLike[str]) -> GcpTable:
    """Read a ``.points`` file (current comma format, optional ``#CRS`` line, header row).

    A UTF-8 byte-order mark (a file saved by Excel or Notepad) is skipped, as QGIS does.

    Raises:
        ValueError: with the line number when a row is malformed.
    """
    text = Path(path).read_text(encoding="utf-8-sig")
    rows = text.splitlines()
    crs, first = None, 1
    if rows and rows[0].startswith(CRS_PREFIX.strip()):
        crs = rows[0].split(":", 1)[1].strip() or None
        rows, first = rows[1:], 2
    data = []
    for number, line in enumerate(rows, start=first):
        line = line.strip()
        if not line or line.startswith("#") or line.lower().startswith("mapx"):
            continue
        parts = line.split(",") if "," in line else line.split("\t")
        try:
            values = [float(v) for v in parts[:8]]
        except ValueError as exc:
            raise ValueError(f"{path}: malformed GCP at line {number}: {line!r}") from exc
        if len(values) < 4:
            raise ValueError(f"{path}: line {number} needs at least mapX,mapY,sourceX,sourceY")
        values += [1.0, 0.0, 0.0, 0.0][len(values) - 4 :]
        data.append(values)
    arr = np.asarray(data, dtype=np.float64).reshape(-1, 8)
    return GcpTable(arr[:, 0:2], arr[:, 2:4], arr[:, 4] != 0, arr[:, 5:7], crs)
