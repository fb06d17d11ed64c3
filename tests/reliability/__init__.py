"""Shared helpers of the reliability tests (issue 7): odd rasters, the pipeline, clean refusals.

The rasters are tiny (<= 384 px) and built from :func:`tests.processing.write_pair`, whose
truth ``A`` (SAR px -> optical px) lets every test check positions numerically. The twin model
of ``tests.model_fixtures`` (template 64, search 96, +/-16 px) is the matcher; its confidence is
uncalibrated, so the tests use ``CONFIDENCE_THRESHOLD`` 0 like ``tests/processing``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.processing import EPSG, MATCH_PARAMS, Pair


def srs_wkt(epsg: int) -> str:
    """WKT of an EPSG code."""
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(int(epsg))
    return srs.ExportToWkt()


def write_raster(
    path: Path,
    arr: np.ndarray,
    gt: tuple[float, ...] | None = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0),
    epsg: int | None = EPSG,
    nodata: float | None = None,
) -> Path:
    """Write (H, W) or (B, H, W) ``arr`` as a GeoTIFF; ``gt``/``epsg`` None: left unset."""
    from osgeo import gdal

    data = arr[None] if arr.ndim == 2 else arr
    types = {
        np.dtype(np.uint8): gdal.GDT_Byte,
        np.dtype(np.float32): gdal.GDT_Float32,
        np.dtype(np.complex64): gdal.GDT_CFloat32,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = gdal.GetDriverByName("GTiff").Create(
        str(path), data.shape[2], data.shape[1], data.shape[0], types[data.dtype]
    )
    if gt is not None:
        ds.SetGeoTransform(gt)
    if epsg is not None:
        ds.SetProjection(srs_wkt(epsg))
    for i, plane in enumerate(data, start=1):
        if nodata is not None:
            ds.GetRasterBand(i).SetNoDataValue(nodata)
        ds.GetRasterBand(i).WriteArray(plane)
    ds = None
    return path


def read_array(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """(H, W) float32 band 1 and the geotransform of a raster."""
    from osgeo import gdal

    ds = gdal.Open(str(path))
    return ds.GetRasterBand(1).ReadAsArray().astype(np.float32), ds.GetGeoTransform()


def rewrite(src: Path, dst: Path, edit: Callable[[np.ndarray], np.ndarray], **kw: Any) -> Path:
    """Copy raster ``src`` to ``dst`` (same georeference), band 1 passed through ``edit``."""
    from osgeo import gdal

    ds = gdal.Open(str(src))
    arr, gt = read_array(src)
    nodata = ds.GetRasterBand(1).GetNoDataValue()
    kw.setdefault("gt", gt)
    kw.setdefault("nodata", nodata)
    return write_raster(dst, edit(arr).astype(np.float32), **kw)


def warp_to_epsg(src: Path, dst: Path, epsg: int) -> Path:
    """Reproject ``src`` into EPSG ``epsg`` with GDAL (cubic), keeping roughly its resolution."""
    from osgeo import gdal

    ds = gdal.Warp(
        str(dst), str(src), dstSRS=f"EPSG:{epsg}", resampleAlg="cubic", dstNodata=-9999.0,
        errorThreshold=0.0,
    )  # fmt: skip
    assert ds is not None, gdal.GetLastErrorMsg()
    ds = None
    return dst


def to_crs(xy: np.ndarray, src_epsg: int, dst_epsg: int) -> np.ndarray:
    """(N, 2) map (x, y) from one EPSG code to another (x = easting/longitude)."""
    from sar_optical_matcher import rasters

    pts = np.asarray(xy, np.float64)
    return rasters.transform_points(pts, srs_wkt(src_epsg), srs_wkt(dst_epsg))


def px_to_map(gt: tuple[float, ...], xy_px: np.ndarray) -> np.ndarray:
    """(N, 2) pixels -> (N, 2) map coordinates with a GDAL geotransform."""
    from sar_optical_matcher import registration as reg

    return reg.pixel_to_map(gt, xy_px)


def map_to_px(gt: tuple[float, ...], xy_map: np.ndarray) -> np.ndarray:
    """(N, 2) map coordinates -> (N, 2) pixels with a GDAL geotransform."""
    from sar_optical_matcher import registration as reg

    return reg.map_to_pixel(gt, xy_map)


def true_sar_px(pair: Pair, opt_utm_px: np.ndarray) -> np.ndarray:
    """Where the content at optical (UTM grid) pixels lies in ``pair.sar`` pixels (truth)."""
    a = pair.a
    return (np.asarray(opt_utm_px, np.float64) - a[:, 2]) @ np.linalg.inv(a[:, :2]).T


def files_under(folder: Path) -> list[str]:
    """Relative paths of every file under ``folder`` (sorted), hidden ones included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def run_refused(
    alg_id: str, params: dict[str, Any], out: Path, *patterns: str, feedback: Any = None
) -> str:
    """``processing.run`` must raise QgsProcessingException matching every regex of ``patterns``
    (case-insensitive) and leave ``out`` without any file; returns the message."""
    import re

    import processing
    from qgis.core import QgsProcessingException

    before = files_under(out) if out.exists() else []
    with pytest.raises(QgsProcessingException) as err:
        processing.run(f"sarmatcher:{alg_id}", params, feedback=feedback)
    text = str(err.value)
    for pattern in patterns:
        assert re.search(pattern, text, re.IGNORECASE | re.DOTALL), (pattern, text)
    after = files_under(out) if out.exists() else []
    assert after == before, f"partial outputs left behind: {sorted(set(after) - set(before))}"
    return text


def outputs(out: Path, alg: str) -> dict[str, str]:
    """File output parameters of ``alg`` pointing into ``out``."""
    if alg == "detectkeypoints":
        return {"OUTPUT": str(out / "kp.gpkg")}
    if alg == "computecorrespondence":
        return {"MATCHES": str(out / "m.gpkg"), "OUTPUT_MAPS": str(out / "maps")}
    return {
        "OUTPUT": str(out / "reg.tif"),
        "OUTPUT_GCP": str(out / "reg.points"),
        "OUTPUT_REPORT": str(out / "reg.html"),
        "OUTPUT_TIEPOINTS": str(out / "tp.gpkg"),
        "RESIDUAL_THRESHOLD": 1.5,
    }


def alg_params(alg: str, optical: Path, sar: Path, model: Path, out: Path, **kw: Any) -> dict:
    """Complete parameters of ``alg`` with all file outputs in ``out``; ``kw`` overrides."""
    if alg == "detectkeypoints":
        base: dict[str, Any] = {"INPUT": str(optical), "MIN_DISTANCE": 24, "BORDER": 56}
    else:
        base = {"SAR": str(sar), "OPTICAL": str(optical), "MODEL": str(model), **MATCH_PARAMS}
    return {**base, **outputs(out, alg), **kw}
