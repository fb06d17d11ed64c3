"""Synthetic SAR/optical GeoTIFF pairs with a known ground truth (GDAL side of core.synthetic).

:func:`make_georeferenced_pair` is :func:`core.synthetic.make_pair` with the CRS conversion done
by GDAL/PROJ (so the SAR may be stored in another CRS than the optical), and
:func:`write_pair` writes ``<stem>_optical.tif``, ``<stem>_sar.tif`` and ``<stem>_truth.json``.
The global ``gdal.UseExceptions`` state is left as it is (QGIS and other plugins share it).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from osgeo import gdal, osr

from .core.synthetic import SyntheticPair, Truth, make_pair

SAR_DTYPES = ("float32", "uint16", "uint8", "db")
OPTICAL_DTYPES = ("uint16", "float32")
UINT16_AMPLITUDE_SCALE = 1e-3  # amplitude = DN * scale (DN 0 = nodata)
UINT8_DB_RANGE = (-30.0, 5.0)  # display rendering: dB range mapped to DN 1..255 (0 = nodata)


def _known_epsg(code: int) -> bool:
    """Whether GDAL's database has EPSG ``code`` (quietly, exceptions mode or not)."""
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        return osr.SpatialReference().ImportFromEPSG(code) == 0
    except RuntimeError:
        return False
    finally:
        gdal.PopErrorHandler()


def _srs(epsg: int) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(int(epsg))
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def osr_transform(src_epsg: int, dst_epsg: int) -> Callable[[np.ndarray], np.ndarray]:
    """A PROJ coordinate transform ``(N, 2) (x, y) in src -> (N, 2) (x, y) in dst``."""
    ct = osr.CoordinateTransformation(_srs(src_epsg), _srs(dst_epsg))

    def transform(xy: np.ndarray) -> np.ndarray:
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return np.asarray(ct.TransformPoints(pts.tolist()), dtype=np.float64)[:, :2]

    return transform


def make_georeferenced_pair(
    size_px: int,
    rng: np.random.Generator,
    *,
    sar_crs_epsg: int | None = None,
    optical_epsg: int = 32633,
    **kwargs: Any,
) -> SyntheticPair:
    """:func:`core.synthetic.make_pair` with any SAR CRS (e.g. EPSG:3857, another UTM zone).

    Args:
        size_px: side of the optical image in pixels.
        rng: random generator (seeded: identical pairs).
        sar_crs_epsg: EPSG code of the SAR file's CRS; None for the optical CRS.
        optical_epsg: EPSG code of the optical CRS (metric, projected).
        **kwargs: the other keyword arguments of ``make_pair``.
    """
    for code in (optical_epsg, sar_crs_epsg):
        if code is not None and not _known_epsg(int(code)):
            raise ValueError(f"EPSG:{code} is not a coordinate system GDAL knows")
    transform = None
    if sar_crs_epsg is not None and int(sar_crs_epsg) != int(optical_epsg):
        transform = osr_transform(optical_epsg, int(sar_crs_epsg))
    return make_pair(
        size_px,
        rng,
        optical_epsg=optical_epsg,
        sar_crs_epsg=sar_crs_epsg,
        crs_transform=transform,
        **kwargs,
    )


def _sar_intensity(pair: SyntheticPair) -> np.ndarray:
    sar = pair.sar.astype(np.float64)
    if pair.sar_output == "amplitude":
        return sar**2
    if pair.sar_output == "db":
        return 10.0 ** (sar / 10.0)
    return sar


def encode_sar(intensity: np.ndarray, sar_dtype: str) -> tuple[np.ndarray, float, dict[str, Any]]:
    """SAR intensity to the stored pixel values.

    Args:
        intensity: (H, W) linear intensity, NaN where no data.
        sar_dtype: ``"float32"`` (amplitude), ``"uint16"`` (amplitude / 1e-3, 0 nodata),
            ``"uint8"`` (display: dB in [-30, 5] to 1..255, 0 nodata) or ``"db"`` (float32 dB).

    Returns:
        (values, nodata, encoding description for truth.json).
    """
    if sar_dtype not in SAR_DTYPES:
        raise ValueError(f"sar_dtype must be one of {SAR_DTYPES}, not {sar_dtype!r}")
    valid = np.isfinite(intensity)
    safe = np.where(valid, np.maximum(intensity, 1e-10), 1.0)
    if sar_dtype == "float32":
        out = np.where(valid, np.sqrt(safe), np.nan).astype(np.float32)
        return out, float("nan"), {"unit": "amplitude", "scale": 1.0}
    if sar_dtype == "db":
        out = np.where(valid, 10.0 * np.log10(safe), np.nan).astype(np.float32)
        return out, float("nan"), {"unit": "db"}
    if sar_dtype == "uint16":
        dn = np.clip(np.rint(np.sqrt(safe) / UINT16_AMPLITUDE_SCALE), 1, 65535)
        return (
            np.where(valid, dn, 0).astype(np.uint16),
            0.0,
            {
                "unit": "amplitude",
                "scale": UINT16_AMPLITUDE_SCALE,
            },
        )
    lo, hi = UINT8_DB_RANGE
    dn = np.clip(np.rint(1 + (10.0 * np.log10(safe) - lo) / (hi - lo) * 254), 1, 255)
    return (
        np.where(valid, dn, 0).astype(np.uint8),
        0.0,
        {"unit": "db_display", "db_range": [lo, hi]},
    )


_GDAL_TYPES = {
    np.dtype(np.uint8): gdal.GDT_Byte,
    np.dtype(np.uint16): gdal.GDT_UInt16,
    np.dtype(np.float32): gdal.GDT_Float32,
}


def write_geotiff(
    path: str | Path,
    bands: np.ndarray,
    geotransform: tuple[float, ...],
    epsg: int,
    nodata: float | None = None,
) -> Path:
    """Write a (B, H, W) or (H, W) array as a GeoTIFF, atomically (temp name, then rename)."""
    path = Path(path)
    data = bands[None] if bands.ndim == 2 else bands
    if data.dtype not in _GDAL_TYPES:
        raise ValueError(f"dtype {data.dtype} not supported: use uint8, uint16 or float32")
    tmp = path.with_name(f".{path.name}.tmp")
    ds = gdal.GetDriverByName("GTiff").Create(
        str(tmp), data.shape[2], data.shape[1], data.shape[0], _GDAL_TYPES[data.dtype],
        options=["COMPRESS=DEFLATE", "TILED=YES"],
    )  # fmt: skip
    if ds is None:
        raise ValueError(f"GDAL cannot create {tmp}: is the folder writable?")
    ds.SetGeoTransform(tuple(float(v) for v in geotransform))
    ds.SetProjection(_srs(epsg).ExportToWkt())
    for i, band in enumerate(data, start=1):
        b = ds.GetRasterBand(i)
        if nodata is not None:
            b.SetNoDataValue(nodata)
        b.WriteArray(band)
    ds.FlushCache()
    ds = None
    os.replace(tmp, path)
    return path


def write_pair(
    pair: SyntheticPair,
    out_dir: str | Path,
    stem: str = "pair",
    sar_dtype: str = "float32",
    optical_dtype: str = "uint16",
) -> dict[str, Path]:
    """Write a pair as GeoTIFFs (CRS + geotransform) and its truth as JSON.

    Args:
        pair: from :func:`make_georeferenced_pair` or ``core.synthetic.make_pair``.
        out_dir: output folder (created).
        stem: file name prefix.
        sar_dtype: see :func:`encode_sar`.
        optical_dtype: ``"uint16"`` (reflectance x 10000) or ``"float32"`` (reflectance).

    Returns:
        ``{"optical": path, "sar": path, "truth": path}``.
    """
    if optical_dtype not in OPTICAL_DTYPES:
        raise ValueError(f"optical_dtype must be one of {OPTICAL_DTYPES}, not {optical_dtype!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth = pair.truth
    rgb = np.moveaxis(pair.optical, -1, 0)
    if optical_dtype == "uint16":
        rgb = np.clip(np.rint(rgb * 10000.0), 0, 65535).astype(np.uint16)
    paths = {
        "optical": write_geotiff(
            out / f"{stem}_optical.tif", rgb.astype(rgb.dtype), truth.optical_gt, truth.optical_epsg
        )
    }
    values, nodata, encoding = encode_sar(_sar_intensity(pair), sar_dtype)
    paths["sar"] = write_geotiff(
        out / f"{stem}_sar.tif", values, truth.sar_gt, truth.sar_epsg, nodata
    )
    meta = dict(truth.meta, sar_encoding=dict(encoding, dtype=sar_dtype))
    meta["optical_encoding"] = {
        "dtype": optical_dtype,
        "scale": 1e-4 if optical_dtype == "uint16" else 1.0,
    }
    meta["files"] = {k: p.name for k, p in paths.items()}
    text = dataclasses.replace(truth, meta=meta).to_json()
    truth_path = out / f"{stem}_truth.json"
    tmp = truth_path.with_name(f".{truth_path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, truth_path)
    paths["truth"] = truth_path
    return paths


def read_truth(path: str | Path) -> Truth:
    """The :class:`Truth` of a ``<stem>_truth.json`` written by :func:`write_pair`."""
    return Truth.from_json(Path(path).read_text(encoding="utf-8"))
