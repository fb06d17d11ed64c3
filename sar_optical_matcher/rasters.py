"""GDAL windows in, numpy + georeference out; warping one raster onto another's pixel grid.

Everything here reads only the window it needs (never a full raster). Pixel convention of
``core.__init__``: ``(x, y)`` = (column, row), integer values are pixel corners, GDAL
geotransform ``x_map = gt[0] + x * gt[1] + y * gt[2]``, ``y_map = gt[3] + x * gt[4] + y * gt[5]``.
GDAL errors are collected and turned into ``ValueError`` with the GDAL text, under either
``gdal.UseExceptions`` state (:func:`gdal_try`); the global state is left as it is (QGIS and
other plugins share it; QGIS 3.38 and later turn exceptions on).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shlex
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from osgeo import gdal, osr

from sar_optical_matcher.core import geotransform
from sar_optical_matcher.core.files import atomic_output
from sar_optical_matcher.core.preprocessing import DB_NEGATIVE_SHARE

IDENTITY_GT = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
CORRUPT_HINT = (
    "the file may be truncated or corrupt: check it with `gdalinfo -checksum <file>`, then copy, "
    "download or export it again"
)
ASSIGN_CRS_HINT = (
    "assign one to the file: in QGIS with Raster > Projections > Assign Projection (a CRS set "
    "in Layer Properties stays in the project; the file is read without it), or with "
    "`gdal_edit.py -a_srs EPSG:<code> <file>`"
)


@dataclass(frozen=True)
class RasterInfo:
    """What the matcher needs to know about a georeferenced raster (no pixel data).

    Attributes:
        path: the GDAL dataset name (file path or GDAL connection string).
        width: columns.
        height: rows.
        band_count: number of bands.
        geotransform: GDAL 6-tuple (pixel -> map).
        crs_wkt: the CRS as WKT.
        is_geographic: True for a geographic CRS (degrees).
        dtypes: numpy dtype name of each band (``"uint8"``, ``"float32"``, ...).
        nodata: nodata value of each band, None where unset.
        gdal_types: GDAL data type name of each band (``"Byte"``, ``"CInt16"``, ...), as
            ``gdalinfo`` prints it.
    """

    path: str
    width: int
    height: int
    band_count: int
    geotransform: tuple[float, float, float, float, float, float]
    crs_wkt: str
    is_geographic: bool
    dtypes: tuple[str, ...]
    nodata: tuple[float | None, ...]
    gdal_types: tuple[str, ...] = ()

    def check_band(self, band: int, role: str = "SAR") -> None:
        """Raise ``ValueError`` unless ``1 <= band <= band_count`` and the band is real-valued.

        A complex band (a single-look complex SAR product) would lose its imaginary part when
        read as numbers, a silently wrong image; it is refused with the way to detect it.

        Args:
            band: 1-based band.
            role: what the raster was given as, for the complex-band error
                (:func:`complex_band_error`): ``"SAR"``, ``"OPTICAL"`` or ``"INPUT"``.
        """
        if not isinstance(band, (int, np.integer)) or not 1 <= band <= self.band_count:
            raise ValueError(
                f"band {band} does not exist: {Path(self.path).name} has {self.band_count} "
                f"band(s); choose 1..{self.band_count}"
            )
        dtype = self.dtypes[int(band) - 1] if len(self.dtypes) >= int(band) else ""
        if dtype.startswith("complex"):
            named = self.gdal_types[int(band) - 1] if len(self.gdal_types) >= int(band) else dtype
            raise complex_band_error(self.path, int(band), named, role)


def complex_band_error(path: str | Path, band: int, dtype: str, role: str = "SAR") -> ValueError:
    """The error for a complex band: what it is and how to turn it into a usable image.

    The amplitude is given as a ``gdal_calc.py`` command: a GDAL VRT's 'mod' pixel function
    without ``SourceTransferType`` reads the complex source as its real part (the matches of
    such a SAR were noise: 0 of 72 within 1 px, against 46 for the amplitude).

    Args:
        path: the raster.
        band: 1-based band.
        dtype: its type as ``gdalinfo`` prints it (``CFloat32``, ...).
        role: the parameter it was given for: ``"SAR"``, ``"OPTICAL"`` (an optical image is
            never complex: the wrong file) or ``"INPUT"`` (Detect keypoints' raster).
    """
    name = Path(str(path)).name
    amplitude = (
        f'`gdal_calc.py -A {shlex.quote(name)} --A_band={band} --calc="abs(A)" --type=Float32 '
        "--outfile=amplitude.tif`"
    )
    what = f"band {band} of {name} is complex ({dtype})"
    if role == "OPTICAL":
        return ValueError(
            f"{what}, but the OPTICAL raster is an optical image (reflectance or digital "
            "numbers, real-valued): a complex band is a SAR product (single-look complex), so "
            "the wrong file is given for OPTICAL. Choose the optical image there; a complex "
            "SAR belongs in SAR, once detected or turned into its amplitude (e.g. "
            f"{amplitude})"
        )
    if role == "INPUT":
        return ValueError(
            f"{what}: keypoints are detected on a real-valued image, usually the optical "
            "raster that Compute correspondence or Register then matches: choose it for "
            "INPUT. To detect on a complex SAR (single-look complex) raster already on a map "
            f"grid, take its amplitude first: {amplitude}"
        )
    return ValueError(
        f"{what}, e.g. a single-look complex (SLC) SAR "
        "product: the matcher needs a detected amplitude or intensity image on a map grid. "
        "Detect and geocode it first (SNAP: Calibration, TOPSAR Deburst, Multilook, Terrain "
        f"Correction); a complex raster already on a map grid: take its amplitude, {amplitude} "
        "(a GDAL VRT's 'mod' pixel function does it too, with "
        "<SourceTransferType>CFloat32</SourceTransferType>: without it, the real part only)"
    )


@contextlib.contextmanager
def gdal_errors() -> Iterator[list[str]]:
    """Silence GDAL's error printing and collect the messages instead."""
    messages: list[str] = []

    def handler(err_class: int, _num: int, msg: str) -> None:
        if err_class >= gdal.CE_Failure:
            messages.append(str(msg).strip())

    gdal.PushErrorHandler(handler)
    try:
        yield messages
    finally:
        gdal.PopErrorHandler()


@contextlib.contextmanager
def gdal_messages_dropped(*fragments: str) -> Iterator[list[str]]:
    """Drop GDAL's messages that contain one of ``fragments``; pass the others on.

    Yields the dropped messages. The others reach, when the block ends, the error handler
    that was there before (GDAL's printing, QGIS's log); with ``gdal.UseExceptions()`` on, a
    failure passed on would be raised instead of shown, so it is passed on as a warning.
    """
    dropped: list[str] = []
    kept: list[tuple[int, int, str]] = []

    def handler(err_class: int, number: int, msg: str) -> None:
        text = str(msg).strip()
        if any(f in text for f in fragments):
            dropped.append(text)
        else:
            kept.append((err_class, number, text))

    gdal.PushErrorHandler(handler)
    try:
        yield dropped
    finally:
        gdal.PopErrorHandler()
        raising = gdal.GetUseExceptions()
        for err_class, number, text in kept:
            failure = err_class >= gdal.CE_Failure
            gdal.Error(gdal.CE_Warning if failure and raising else min(err_class, gdal.CE_Failure),
                       number, text)  # fmt: skip


def gdal_try(call: Callable[[], Any]) -> tuple[Any, list[str]]:
    """``call()`` with GDAL's errors collected: ``(result, messages)``, result None on failure.

    The same under either ``gdal.UseExceptions`` state (QGIS 3.38 and later turn exceptions
    on for every plugin): a RuntimeError of GDAL's is a failure with its text as the message.
    """
    with gdal_errors() as errors:
        try:
            result = call()
        except RuntimeError as exc:
            errors.append(str(exc).strip())
            result = None
    return result, errors


def _open(path: str) -> gdal.Dataset:
    ds, errors = gdal_try(lambda: gdal.OpenEx(str(path), gdal.OF_RASTER | gdal.OF_READONLY))
    if ds is None:
        detail = "; ".join(errors) or "GDAL recognises no raster format"
        exists = "" if os.path.exists(str(path)) else " (the file does not exist)"
        raise ValueError(
            f"cannot open {path!r} as a raster{exists}: {detail}; choose a raster file GDAL can "
            "read (GeoTIFF, ...) and check that it is complete"
        )
    return ds


def dataset_files(path: str | Path) -> list[str]:
    """The files of raster dataset ``path``, as GDAL lists them (``GetFileList``).

    A file path is itself (and its side files); a connection string such as
    ``GPKG:<file>:<table>`` is its file, a VRT also the files it reads. ``[path]`` when GDAL
    cannot open it or lists nothing.
    """
    ds, _ = gdal_try(lambda: gdal.OpenEx(str(path), gdal.OF_RASTER | gdal.OF_READONLY))
    files = (ds.GetFileList() or []) if ds is not None else []
    return [str(f) for f in files] or [str(path)]


def open_raster(path: str | Path, band: int | None = None) -> RasterInfo:
    """Open a raster, check its georeference, and describe it.

    Args:
        path: file path or GDAL dataset name.
        band: optional 1-based band to check.

    Returns:
        The :class:`RasterInfo`.

    Raises:
        ValueError: as :func:`open_dataset`.
    """
    return open_dataset(path, band)[1]


def open_dataset(path: str | Path, band: int | None = None) -> tuple[gdal.Dataset, RasterInfo]:
    """:func:`open_raster`, also returning the open GDAL dataset (one header read for both).

    Args:
        path: file path or GDAL dataset name.
        band: optional 1-based band to check.

    Returns:
        ``(dataset, info)``; the caller owns the dataset.

    Raises:
        ValueError: not a raster / corrupt, no geotransform (or GCPs only), no CRS, or ``band``
            out of range; the message says how to fix it.
    """
    ds = _open(str(path))
    name = Path(str(path)).name
    gt = tuple(float(v) for v in ds.GetGeoTransform(can_return_null=True) or IDENTITY_GT)
    if gt == IDENTITY_GT or gt[1] * gt[5] - gt[2] * gt[4] == 0:
        if ds.GetGCPCount():
            raise ValueError(
                f"{name} is georeferenced by {ds.GetGCPCount()} GCPs only, not by a geotransform; "
                "warp it first (QGIS Raster > Projections > Warp, or `gdalwarp in.tif out.tif`)"
            )
        if ds.GetMetadata("RPC"):  # sensor geometry: "-a_ullr" would give it a wrong one
            raise ValueError(
                f"{name} is georeferenced by RPCs only (sensor geometry, no geotransform); "
                "orthorectify it first, e.g. `gdalwarp -rpc -to RPC_DEM=dem.tif -t_srs "
                "EPSG:<code> in.tif out.tif` (without a DEM the terrain's height is ignored)"
            )
        raise ValueError(
            f"{name} has no georeference (no geotransform, no GCPs): georeference it first, e.g. "
            "with the QGIS Georeferencer, or set its extent with `gdal_translate -a_ullr`"
        )
    wkt = ds.GetProjection() or ""
    srs = osr.SpatialReference()
    if not wkt or srs.ImportFromWkt(wkt) != 0:
        raise ValueError(f"{name} has no coordinate reference system (CRS); {ASSIGN_CRS_HINT}")
    bands = [ds.GetRasterBand(i + 1) for i in range(ds.RasterCount)]
    info = RasterInfo(
        path=str(path),
        width=ds.RasterXSize,
        height=ds.RasterYSize,
        band_count=ds.RasterCount,
        geotransform=gt,  # type: ignore[arg-type]
        crs_wkt=wkt,
        is_geographic=bool(srs.IsGeographic()),
        dtypes=tuple(_numpy_dtype(b.DataType) for b in bands),
        nodata=tuple(b.GetNoDataValue() for b in bands),
        gdal_types=tuple(gdal.GetDataTypeName(b.DataType) for b in bands),
    )
    if band is not None:
        info.check_band(band)
    return ds, info


def _numpy_dtype(gdal_type: int) -> str:
    from osgeo import gdal_array

    code = gdal_array.GDALTypeCodeToNumericTypeCode(gdal_type)
    return np.dtype(code).name if code is not None else "float64"


def _valid_mask(data: np.ndarray, nodata: float | None) -> np.ndarray:
    valid = np.isfinite(data)
    if nodata is not None and np.isfinite(nodata):
        valid &= data != np.float32(nodata)
    return valid


def _has_mask_band(rb: gdal.Band) -> bool:
    """Whether a band's validity is in a mask band (per-dataset mask or alpha), not nodata."""
    return not rb.GetMaskFlags() & (gdal.GMF_ALL_VALID | gdal.GMF_NODATA)


def _read_valid(
    info: RasterInfo, band: int, win: tuple[int, int, int, int], buf: tuple[int, int] | None = None
) -> np.ndarray:
    """float32 pixels of ``win = (x0, y0, w, h)`` inside the raster, NaN where not valid.

    ``buf``: read decimated to ``(width, height)`` (GDAL's overviews where there are).
    Invalid: nodata, NaN/Inf and pixels the band's mask band (alpha) excludes.
    """
    x0, y0, w, h = win
    bw, bh = buf if buf is not None else (w, h)
    ds = _open(info.path)  # keep a reference: the band dies with its dataset
    rb = ds.GetRasterBand(band)
    data, errors = gdal_try(lambda: rb.ReadAsArray(x0, y0, w, h, buf_xsize=bw, buf_ysize=bh))
    mask = None
    if data is not None and _has_mask_band(rb):
        mask, errors = gdal_try(
            lambda: rb.GetMaskBand().ReadAsArray(x0, y0, w, h, buf_xsize=bw, buf_ysize=bh)
        )
        data = data if mask is not None else None
    if data is None:
        raise ValueError(f"reading {info.path!r} failed: {'; '.join(errors)}; {CORRUPT_HINT}")
    data = data.astype(np.float32)
    valid = _valid_mask(data, info.nodata[band - 1])
    if mask is not None:
        valid &= mask > 0
    data[~valid] = np.nan
    return data


def read_window(
    info: RasterInfo, band: int, x0: int, y0: int, w: int, h: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read the pixel window ``[x0, x0 + w) x [y0, y0 + h)`` of one band.

    Args:
        info: the raster.
        band: 1-based band.
        x0: left column (may be outside the raster).
        y0: top row (may be outside the raster).
        w: width in pixels (> 0).
        h: height in pixels (> 0).

    Returns:
        ``(data, valid)``: (h, w) float32 with NaN for nodata, NaN/Inf and outside pixels; and
        the (h, w) bool mask of valid pixels.
    """
    info.check_band(band)
    if w <= 0 or h <= 0:
        raise ValueError(f"window size must be positive, got {w}x{h}")
    out = np.full((h, w), np.nan, np.float32)
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + w, info.width), min(y0 + h, info.height)
    if cx1 > cx0 and cy1 > cy0:
        data = _read_valid(info, band, (cx0, cy0, cx1 - cx0, cy1 - cy0))
        out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = data
    return out, np.isfinite(out)


def raster_sar_scale(
    info: RasterInfo, band: int, sample_px: int = 1024, grid: np.ndarray | None = None
) -> str:
    """``"db"`` or ``"linear"`` for a whole SAR band (``core.preprocessing``'s ``auto`` rule).

    8-bit data is taken as logarithmic; otherwise the rule runs on the band's valid, finite
    pixels read at most ``sample_px`` a side (GDAL's decimated read, overviews where there
    are; nothing is written beside the file): more than 1 % negative values mean dB. Decided
    once per raster so that every search region is converted alike: per region, a bright dB
    region with no negative value was log-converted a second time. ``grid``: the band's
    :func:`band_sample_grid`, where the caller has read it already.
    """
    from sar_optical_matcher.core.preprocessing import resolve_sar_scale

    info.check_band(band)
    if info.dtypes[band - 1] == "uint8":
        return "db"
    sample = band_sample_grid(info, band, sample_px) if grid is None else grid
    return resolve_sar_scale(sample[np.isfinite(sample)])


def band_sample_grid(info: RasterInfo, band: int, sample_px: int = 1024) -> np.ndarray:
    """(h, w) float32 pixels of ``band`` read at most ``sample_px`` a side, NaN where invalid."""
    info.check_band(band)
    k = max(1, math.ceil(max(info.width, info.height) / sample_px))
    buf = (max(1, info.width // k), max(1, info.height // k))
    return _read_valid(info, band, (0, 0, info.width, info.height), buf)


#: Thresholds of :func:`linear_sar_evidence`: at most this share of negative values, the 99th
#: percentile at least this many times the median and the 1st percentile, and at least this
#: correlation between the log mean and the log spread of 8 x 8 blocks.
LINEAR_EVIDENCE = {
    "negative": DB_NEGATIVE_SHARE,
    "p99_p50": 3.0,
    "p99_p1": 10.0,
    "speckle_r": 0.5,
}


def linear_sar_evidence(values: np.ndarray, dtype: str) -> str | None:
    """Why a SAR band given as dB looks linear (amplitude or intensity), or None.

    Fires only when all of these hold: not 8-bit (display data are logarithmic); no negative
    values (dB of sigma0 < 1 are negative); a long bright tail (99th percentile >= 3 x the
    median and >= 10 x the 1st percentile; dB data shifted positive or stretched to [0, 1]
    measured 1.5-1.9 and 2.3-6.2); and a spread that grows with the brightness, as speckle on
    linear values does (dB speckle has the same spread at every level: correlation of the log
    block mean and log block standard deviation 0.88-0.97 linear, -0.01-0.47 for dB shifted).

    Args:
        values: (h, w) float pixels, NaN where invalid (e.g. :func:`band_sample_grid`).
        dtype: numpy dtype name of the band.
    """
    lim = LINEAR_EVIDENCE
    v = values[np.isfinite(values)].astype(np.float64)
    if dtype in ("uint8", "int8") or v.size < 1024 or (v < 0).mean() > lim["negative"]:
        return None
    p1, p50, p99 = np.percentile(v, [1, 50, 99])
    if not (p50 > 0 and p99 >= lim["p99_p50"] * p50 and p99 >= lim["p99_p1"] * p1):
        return None
    k = 8
    h, w = (values.shape[0] // k) * k, (values.shape[1] // k) * k
    blocks = values[:h, :w].reshape(h // k, k, w // k, k).transpose(0, 2, 1, 3).reshape(-1, k * k)
    blocks = blocks[np.isfinite(blocks).all(axis=1)].astype(np.float64)
    mean, std = blocks.mean(axis=1), blocks.std(axis=1)
    keep = (mean > 0) & (std > 0)
    if keep.sum() < 16:
        return None
    r = float(np.corrcoef(np.log(mean[keep]), np.log(std[keep]))[0, 1])
    if not r >= lim["speckle_r"]:
        return None
    return (
        f"no negative value, median {p50:.4g}, 99th percentile {p99 / p50:.1f} x the median "
        f"and {p99 / p1 if p1 > 0 else float('inf'):.3g} x the 1st percentile, and a local "
        f"spread that grows with the brightness (correlation {r:.2f}), as speckle on linear "
        "values does"
    )


def _window_gt(gt: Sequence[float], x0: float, y0: float) -> tuple[float, ...]:
    return (gt[0] + x0 * gt[1] + y0 * gt[2], gt[1], gt[2], gt[3] + x0 * gt[4] + y0 * gt[5],
            gt[4], gt[5])  # fmt: skip


def read_on_grid(
    src: RasterInfo,
    band: int,
    dst: RasterInfo,
    x0: int,
    y0: int,
    w: int,
    h: int,
    resampling: str = "bilinear",
) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``src`` onto the window ``[x0, x0 + w) x [y0, y0 + h)`` of ``dst``'s pixel grid.

    Uses both georeferences (any CRS, pixel size or rotation; GDAL handles geographic CRSs).
    GDAL's warper reads only the source window it needs.

    Args:
        src: raster to resample (e.g. the SAR image).
        band: 1-based band of ``src``.
        dst: raster whose grid is the target (e.g. the optical image).
        x0: left column of the window in ``dst`` pixels.
        y0: top row of the window in ``dst`` pixels.
        w: window width in ``dst`` pixels.
        h: window height in ``dst`` pixels.
        resampling: GDAL resampling name (``"bilinear"``, ``"cubic"``, ``"near"``,
            ``"average"``, ...).

    Returns:
        ``(data, valid)``: (h, w) float32 with NaN where ``src`` has no valid data, and the
        (h, w) bool mask of valid pixels.
    """
    src.check_band(band)
    if w <= 0 or h <= 0:
        raise ValueError(f"window size must be positive, got {w}x{h}")
    dataset = _open(src.path)  # referenced until the warp is done (the VRT points into it)
    # an alpha band or per-dataset mask (an RGBA orthophoto's transparent part): warped along
    # as the last band, as alpha; a one-band VRT of the data band drops an alpha band
    masked = _has_mask_band(dataset.GetRasterBand(band))
    bands: list[int | str] = [band, f"mask,{band}"] if masked else [band]
    source = gdal.Translate("", dataset, format="VRT", bandList=bands)
    target = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Float32)
    target.SetGeoTransform(_window_gt(dst.geotransform, x0, y0))
    target.SetProjection(dst.crs_wkt)
    target.GetRasterBand(1).SetNoDataValue(float("nan"))
    target.GetRasterBand(1).Fill(float("nan"))
    nodata = src.nodata[band - 1]
    options = gdal.WarpOptions(
        resampleAlg=resampling,
        srcNodata=nodata if nodata is not None else None,
        dstNodata=float("nan"),
        errorThreshold=0.0,
        multithread=False,
        warpOptions=["INIT_DEST=NO_DATA"],
        srcAlpha=masked,
    )
    ok, errors = gdal_try(lambda: gdal.Warp(target, source, options=options))
    if not ok:
        raise ValueError(
            f"reading {src.path!r} onto the optical grid failed: {'; '.join(errors)[:300]}; "
            f"{CORRUPT_HINT}"
        )
    data = target.GetRasterBand(1).ReadAsArray().astype(np.float32)
    valid = np.isfinite(data)
    data[~valid] = np.nan
    return data, valid


def _srs(wkt: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    if srs.ImportFromWkt(wkt) != 0:
        raise ValueError(f"invalid CRS WKT: {wkt[:80]!r}")
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)  # (x=lon/easting, y=lat/northing)
    return srs


def transform_points(xy: ArrayLike, src_wkt: str, dst_wkt: str) -> np.ndarray:
    """Transform (N, 2) map points ``(x, y)`` (x = easting/longitude) between two CRSs.

    Returns:
        (N, 2) float64; rows GDAL/PROJ cannot transform are NaN.
    """
    pts = geotransform.as_points(xy, "xy")
    src, dst = _srs(src_wkt), _srs(dst_wkt)
    if len(pts) == 0 or src.IsSame(dst):
        return pts.copy()
    transform = osr.CoordinateTransformation(src, dst)
    with gdal_errors():
        try:
            out = np.array(transform.TransformPoints(pts.tolist()), dtype=np.float64)[:, :2]
        except RuntimeError:  # one bad point fails the batch under gdal.UseExceptions()
            out = np.array([_transform_one(transform, p) for p in pts])
    out[~np.isfinite(out).all(axis=1)] = np.nan
    return out


def _transform_one(transform: osr.CoordinateTransformation, p: np.ndarray) -> tuple[float, float]:
    try:
        x, y = transform.TransformPoint(float(p[0]), float(p[1]))[:2]
        return x, y
    except RuntimeError:
        return np.nan, np.nan


def pixel_to_map(info: RasterInfo, xy_px: ArrayLike) -> np.ndarray:
    """(N, 2) pixel ``(x, y)`` of ``info`` -> (N, 2) map coordinates in its CRS."""
    return geotransform.pixel_to_map(info.geotransform, xy_px)


def map_to_pixel(info: RasterInfo, xy_map: ArrayLike) -> np.ndarray:
    """(N, 2) map coordinates in ``info``'s CRS -> (N, 2) pixel ``(x, y)``."""
    return geotransform.map_to_pixel(info.geotransform, xy_map)


def pixels_between(src: RasterInfo, dst: RasterInfo, xy_px: ArrayLike) -> np.ndarray:
    """(N, 2) pixels ``(x, y)`` of ``src`` -> (N, 2) pixels of ``dst``, via both georeferences.

    Any two CRSs; rows PROJ cannot transform are NaN.
    """
    return map_to_pixel(dst, transform_points(pixel_to_map(src, xy_px), src.crs_wkt, dst.crs_wkt))


def footprint_overlap(a: RasterInfo, b: RasterInfo, samples: int = 21) -> tuple[float, ...]:
    """Bounding box of ``b``'s footprint in ``a``'s pixel grid, clipped to ``a``'s extent.

    The edges of ``b`` are densified (``samples`` points per edge) so curved outlines after
    reprojection are covered.

    Returns:
        ``(x0, y0, x1, y1)`` in ``a`` pixels with ``x1 >= x0``, ``y1 >= y0``; a zero width or
        height means the rasters do not overlap.
    """
    edges = geotransform.box_outline((0, 0, b.width, b.height), samples)
    xy = pixels_between(b, a, edges)
    xy = xy[np.isfinite(xy).all(axis=1)]
    if len(xy) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    x0, y0 = max(float(xy[:, 0].min()), 0.0), max(float(xy[:, 1].min()), 0.0)
    x1, y1 = min(float(xy[:, 0].max()), float(a.width)), min(float(xy[:, 1].max()), float(a.height))
    return (x0, y0, max(x0, x1), max(y0, y1))


def scaled_grid(info: RasterInfo, scale: float) -> RasterInfo:
    """The pixel grid of ``info`` with pixels ``scale`` times larger, same origin and axes.

    Continuous pixel coordinates map as ``x_scaled = x / scale``. The result describes a grid
    to resample onto (``read_on_grid``'s ``dst``), not a file to read windows from.
    """
    import dataclasses

    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"grid scale must be a positive number, got {scale!r}")
    gt = info.geotransform
    # whole coarse pixels only; a scale measured through the georeferences (3 * (1 + 1e-15))
    # must not drop the last one of an exact multiple
    return dataclasses.replace(
        info,
        width=max(int(math.floor(info.width / scale + 1e-6)), 1),
        height=max(int(math.floor(info.height / scale + 1e-6)), 1),
        geotransform=(gt[0], gt[1] * scale, gt[2] * scale, gt[3], gt[4] * scale, gt[5] * scale),
    )


def pixel_jacobian(optical: RasterInfo, sar: RasterInfo) -> np.ndarray:
    """(2, 2) derivative of optical pixels by SAR pixels, at the centre of their overlap.

    Measured through both georeferences (any CRS, pixel size or rotation): column ``j`` is the
    optical-pixel step of one SAR pixel along SAR axis ``j`` (x = column, y = row). The
    identity means the same pixel grid up to an offset; NaN where the rasters do not overlap.
    """
    x0, y0, x1, y1 = footprint_overlap(optical, sar)
    if x1 <= x0 or y1 <= y0:
        return np.full((2, 2), np.nan)
    centre = np.array([[(x0 + x1) / 2.0, (y0 + y1) / 2.0]])
    sar_px = pixels_between(optical, sar, centre)
    corners = sar_px + np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    opt_px = pixels_between(sar, optical, corners)
    return np.column_stack([opt_px[1] - opt_px[0], opt_px[2] - opt_px[0]])


#: Pixel side ratio (longer / shorter, on the ground) above which pixels count as non-square.
MAX_PIXEL_ASPECT = 1.5

#: Metres per degree of latitude (and of longitude at the equator), for the ground size of a
#: geographic raster's pixels.
METRES_PER_DEGREE = 111_320.0


def ground_pixel_size(info: RasterInfo) -> tuple[float, float, str]:
    """``(x, y, unit)``: the sides of one pixel along its column and row steps, on the ground.

    Map units for a projected CRS; metres for a geographic one, the longitude side scaled by
    the cosine of the latitude at the raster's centre (a pixel square in degrees is 2:1 on
    the ground at 60 degrees of latitude).
    """
    gt = info.geotransform
    x, y = math.hypot(gt[1], gt[4]), math.hypot(gt[2], gt[5])
    if not info.is_geographic:
        return x, y, "map units"
    lat = gt[3] + gt[4] * info.width / 2 + gt[5] * info.height / 2
    coslat = math.cos(math.radians(min(max(lat, -89.0), 89.0)))
    # the column and row steps of a north-up raster are along longitude and latitude
    return x * METRES_PER_DEGREE * coslat, y * METRES_PER_DEGREE, "m"


def pixel_aspect(info: RasterInfo) -> float:
    """Longer over shorter side of one pixel on the ground (1: square); see ground_pixel_size."""
    x, y, _ = ground_pixel_size(info)
    return max(x, y) / min(x, y) if min(x, y) > 0 else math.inf


def pixel_size_ratio(optical: RasterInfo, sar: RasterInfo) -> float:
    """Side of one SAR pixel in optical pixels, at the centre of the two rasters' overlap.

    Measured through both georeferences (any CRS): the SAR pixel there is mapped into the
    optical grid and the square root of its area is returned. 1 means the same pixel size;
    3 means a SAR pixel covers 3 x 3 optical pixels. NaN where the rasters do not overlap.
    """
    jac = pixel_jacobian(optical, sar)
    return float(np.sqrt(abs(np.linalg.det(jac)))) if np.isfinite(jac).all() else float("nan")


#: Output formats, by extension: single-file GDAL formats only, so that the file written under
#: a temporary name is the whole raster once renamed (GDAL's .aux.xml side file goes with it).
#: Formats with companion files named from the stem (.bil/.hdr, .sdat/.sgrd, .ers, .rst/.rdc,
#: ERDAS .img spill files) would be split by the rename; a VRT would point at temporary files.
OUTPUT_FORMATS = {
    "tif": "GTiff",
    "tiff": "GTiff",
    "gpkg": "GPKG",
    "nc": "netCDF",
    "png": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "jp2": "JP2OpenJPEG",
}


def output_driver(path: str | Path) -> str:
    """The GDAL driver that writes a raster named ``path``, chosen by its extension.

    No extension: GTiff. The formats are :data:`OUTPUT_FORMATS` that this GDAL build has.

    Raises:
        ValueError: the extension is not one of them; the message lists those there are.
    """
    ext = Path(path).suffix.lower().lstrip(".")
    driver = "GTiff" if ext == "" else OUTPUT_FORMATS.get(ext)
    if driver is not None and gdal.GetDriverByName(driver) is not None:
        return driver
    why = (
        "a virtual format that would only point at other files"
        if ext == "vrt"
        else "not a single-file raster format this plugin writes"
    )
    raise ValueError(
        f"cannot write a raster named {Path(path).name!r}: '.{ext}' is {why}; use .tif "
        f"(GeoTIFF) or one of .{', .'.join(output_extensions())}"
    )


def output_extensions() -> list[str]:
    """File extensions :func:`output_driver` writes here, ``tif`` first (QGIS's dialogs)."""
    return [e for e, d in OUTPUT_FORMATS.items() if gdal.GetDriverByName(d) is not None]


def check_output_type(driver: str, gdal_type: str, name: str) -> None:
    """Raise unless ``driver`` stores bands of ``gdal_type`` (e.g. PNG: Byte and UInt16 only).

    JPEG's UInt16 is 12-bit JPEG: GDAL clips every value above 4095 without a word, so it is
    refused too; so are JPEG 2000's Int32 and UInt32, which the JP2OpenJPEG driver lists but
    OpenJPEG cannot write (at most 31 bits: GDAL 3.6 failed only at the end of the warp).

    Args:
        driver: GDAL driver short name.
        gdal_type: GDAL data type name of the data to write (``"Float32"``, ...).
        name: the output's file name, for the message.
    """
    if driver == "JPEG" and gdal_type == "UInt16":
        raise ValueError(
            f"cannot write {name}: the JPEG format stores UInt16 bands as 12-bit JPEG, which "
            "clips every value above 4095; write a .tif instead (or .png, .jp2: 16-bit)"
        )
    if driver == "JP2OpenJPEG" and gdal_type in ("Int32", "UInt32"):
        raise ValueError(
            f"cannot write {name}: OpenJPEG writes JPEG 2000 bands of at most 31 bits, the SAR "
            f"raster is {gdal_type}; write a .tif instead (or convert the SAR to 16 bits)"
        )
    allowed = gdal.GetDriverByName(driver).GetMetadataItem(gdal.DMD_CREATIONDATATYPES) or ""
    if allowed and gdal_type not in allowed.split():
        raise ValueError(
            f"cannot write {name}: the {driver} format stores {', '.join(allowed.split())} "
            f"bands, the SAR raster is {gdal_type}; write a .tif instead (or convert the SAR)"
        )


#: The GeoTIFF creation options outputs get by default (Register: other formats get those of
#: them they know, :func:`default_creation_options`). BIGTIFF=IF_SAFER: a compressed GeoTIFF is
#: otherwise always a classic TIFF, and a warp whose compressed output passes 4 GB failed at
#: the end ("Maximum TIFF file size exceeded"); small outputs stay classic TIFFs.
DEFAULT_CREATION_OPTIONS = ("COMPRESS=DEFLATE", "TILED=YES", "BIGTIFF=IF_SAFER")


def creation_option_names(driver: str) -> set[str]:
    """The creation option names GDAL driver ``driver`` declares (upper case)."""
    import xml.etree.ElementTree as ET

    text = gdal.GetDriverByName(driver).GetMetadataItem(gdal.DMD_CREATIONOPTIONLIST) or ""
    if not text.strip():
        return set()
    return {o.get("name", "").upper() for o in ET.fromstring(text).iter("Option")} - {""}


def default_creation_options(driver: str) -> tuple[str, ...]:
    """:data:`DEFAULT_CREATION_OPTIONS` that ``driver`` knows (PNG, netCDF: none of them)."""
    known = creation_option_names(driver)
    return tuple(o for o in DEFAULT_CREATION_OPTIONS if o.split("=", 1)[0].upper() in known)


def lossless_creation_options(
    driver: str, gdal_type: str, options: Sequence[str]
) -> tuple[str, ...]:
    """``options`` plus what keeps ``driver`` lossless where GDAL's own default is lossy.

    - GeoPackage, Byte: ``TILE_FORMAT=PNG``. GDAL's ``AUTO`` stores every opaque tile as JPEG
      (quality 75): 44 % of a registered 3-band Byte SAR's pixels came back changed, by up
      to 242. UInt16 / Int16 / Float32 are gridded coverages, PNG and TIFF tiles under
      ``AUTO``: lossless, left alone (``TILE_FORMAT=PNG`` quantises Float32 to ``PRECISION``).
    - JPEG 2000 (OpenJPEG): ``REVERSIBLE=YES`` and ``QUALITY=100``, the 5/3 integer wavelet
      without rate control; GDAL's ``QUALITY=25`` changed every pixel of a UInt16 SAR (mean
      error 1,362, up to 7,869) and 99 % of a Byte one's. Both are needed: either alone is
      still lossy. The file is then about 4 times larger (a noise image: 0.49 MB against 0.11).

    An option the user gives wins: none of a format's additions is made when ``options``
    already sets any of their keys (``TILE_FORMAT=JPEG``, ``QUALITY=40``: lossy, as asked).
    JPEG stays lossy whatever its ``QUALITY`` (the user picked .jpg); GeoTIFF, PNG and netCDF
    are lossless unless a lossy ``COMPRESS`` is asked for.
    """
    if driver == "GPKG" and gdal_type == "Byte":
        extra: tuple[str, ...] = ("TILE_FORMAT=PNG",)
    elif driver == "JP2OpenJPEG":
        extra = ("REVERSIBLE=YES", "QUALITY=100")
    else:
        extra = ()
    given = {o.split("=", 1)[0].strip().upper() for o in options}
    if any(o.split("=", 1)[0] in given for o in extra):
        extra = ()
    return (*options, *extra)


def check_creation_options(driver: str, options: Sequence[str], name: str) -> None:
    """Raise unless every ``KEY=VALUE`` of ``options`` is a creation option of ``driver``.

    GDAL itself only warns about an option its driver does not know and writes the file
    without it (a ``COMPRESS`` given to a PNG is silently not applied).

    Args:
        driver: GDAL driver short name.
        options: ``KEY=VALUE`` strings.
        name: the output's file name, for the message.
    """
    known = creation_option_names(driver)
    bad = [o for o in options if "=" not in o or o.split("=", 1)[0].strip().upper() not in known]
    if bad:
        raise ValueError(
            f"{', '.join(bad)}: not creation option(s) of the {driver} format of {name} "
            f"(KEY=VALUE, separated by '|'); its options are {', '.join(sorted(known)) or 'none'}"
        )
    specs = creation_option_specs(driver)
    for option in options:
        key, value = (t.strip() for t in option.split("=", 1))
        kind, allowed = specs.get(key.upper(), ("", ()))
        why = _bad_option_value(kind, allowed, value)
        if why:
            raise ValueError(
                f"{option}: {why} for the {key.upper()} creation option of the {driver} format "
                f"of {name} (GDAL would ignore it and write the file without it)"
            )


#: How GDAL reads a boolean creation option's value.
_BOOLEAN_VALUES = {"YES", "NO", "TRUE", "FALSE", "ON", "OFF", "1", "0"}


def _bad_option_value(kind: str, allowed: Sequence[str], value: str) -> str:
    """Why ``value`` is no value of a creation option of type ``kind`` ('' where it is)."""
    if kind == "string-select" and allowed and value.upper() not in allowed:
        return f"{value!r} is not one of {', '.join(allowed)}"
    if kind == "boolean" and value.upper() not in _BOOLEAN_VALUES:
        return f"{value!r} is not YES or NO"
    number = {"int": int, "float": float}.get(kind)
    if number is not None:
        try:
            number(value)
        except ValueError:
            return f"{value!r} is not {'an integer' if kind == 'int' else 'a number'}"
    return ""


def creation_option_specs(driver: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each creation option of ``driver``: its declared type and values.

    The values (upper case, aliases included) are those of a ``string-select`` option; none
    for the other types.
    """
    import xml.etree.ElementTree as ET

    text = gdal.GetDriverByName(driver).GetMetadataItem(gdal.DMD_CREATIONOPTIONLIST) or ""
    if not text.strip():
        return {}
    specs: dict[str, tuple[str, tuple[str, ...]]] = {}
    for option in ET.fromstring(text).iter("Option"):
        values = []
        for v in option.iter("Value"):
            values += [(v.text or "").strip().upper(), (v.get("alias") or "").upper()]
        specs[option.get("name", "").upper()] = (
            option.get("type", ""),
            tuple(dict.fromkeys(v for v in values if v)),
        )
    return specs


def _max_bands(driver: str, gdal_type: str) -> tuple[int, ...] | None:
    """Band counts ``driver`` writes as one raster of ``gdal_type`` (None: any count)."""
    if driver == "GPKG":  # Byte: image tiles, RGB (a 2nd / 4th band is alpha, which the warp
        # cannot fill: "Destination dataset has 2 bands, but at least 3 are needed"; a grey band
        # reads back as RGBA, check_output_bands); a coverage of one band else
        return (3,) if gdal_type == "Byte" else (1,)
    if driver == "netCDF":  # each further band is a variable of its own: subdatasets
        return (1,)
    if driver == "PNG":
        return (1, 2, 3, 4)
    if driver == "JPEG":  # 4 bands are CMYK, read back as 3 RGB bands
        return (1, 3)
    return None


def check_output_bands(driver: str, gdal_type: str, band_count: int, name: str) -> None:
    """Raise unless ``driver`` stores ``band_count`` bands of ``gdal_type`` as one raster.

    GDAL fails at creation (GeoPackage: one band beyond Byte) or at the warp (GeoPackage: 2
    or 4 Byte bands, the last taken as alpha), changes them (JPEG: 4 bands become 3; GeoPackage:
    1 Byte band reads back as 4, GDAL 3.6 stores no band count and opens Byte tiles as RGBA
    unless told ``BAND_COUNT=1``, an open option QGIS does not pass) or writes a file that
    opens as no raster (netCDF: one variable a band).
    """
    allowed = _max_bands(driver, gdal_type)
    if allowed is None or band_count in allowed:
        return
    if driver == "GPKG" and gdal_type == "Byte" and band_count == 1:
        raise ValueError(
            f"cannot write {name}: the GPKG format stores a Byte band as image tiles, which "
            "GDAL and QGIS read back as 4 bands (the grey band 3 times and an alpha band); "
            "write a .tif instead, or convert the SAR to UInt16 or Float32 first for a "
            "one-band .gpkg (e.g. `gdal_translate -ot UInt16 sar.tif sar16.tif`)"
        )
    counts = " or ".join(str(n) for n in allowed)
    raise ValueError(
        f"cannot write {name}: the {driver} format stores {counts} band(s) of {gdal_type} as "
        f"one raster, the SAR raster has {band_count}; write a .tif instead (or keep one band "
        "of the SAR first, e.g. `gdal_translate -b 1 sar.tif sar_b1.tif`)"
    )


def check_output(
    driver: str,
    gdal_type: str,
    creation_options: Sequence[str] | None,
    name: str,
    band_count: int = 1,
) -> None:
    """Raise ``ValueError`` unless ``driver`` can write ``name`` as asked.

    Checks the SAR's data type (:func:`check_output_type`), its number of bands
    (:func:`check_output_bands`) and the creation options, where given
    (:func:`check_creation_options`; ``None``: the format's defaults).
    """
    check_output_type(driver, gdal_type, name)
    check_output_bands(driver, gdal_type, band_count, name)
    if creation_options is not None:
        check_creation_options(driver, creation_options, name)


def check_band_types(info: RasterInfo, role: str = "SAR") -> None:
    """Raise ``ValueError`` when the bands of ``info`` are not all of one data type.

    A raster is created with one type for all its bands, and the warp writes each band in
    it: a 3-band VRT of a Byte layover mask and two Float32 dB bands came out as 3 Byte bands,
    the dB values (-18.1 to -15.0) cut to 0 and 255 without a word.
    """
    types = list(info.gdal_types)
    if len(set(types)) <= 1:
        return
    listed = ", ".join(f"band {i} {t}" for i, t in enumerate(types, 1))
    wide = gdal.GetDataTypeName(
        functools.reduce(gdal.DataTypeUnion, (gdal.GetDataTypeByName(t) for t in types))
    )
    same = " ".join(f"-b {i}" for i, t in enumerate(types, 1) if t == types[-1])
    name = Path(info.path).name
    stem, src = Path(name).stem, shlex.quote(name)
    raise ValueError(
        f"the {role} raster {name} has bands of different data types ({listed}): its "
        "registered copy holds one type for all bands, and band 1's would cut the others' "
        f"values; keep the bands of one type (e.g. `gdal_translate {same} {src} "
        f"{shlex.quote(f'{stem}_{types[-1].lower()}.tif')}`) or convert it to {wide} first "
        f"(`gdal_translate -ot {wide} {src} {shlex.quote(f'{stem}_{wide.lower()}.tif')}`)"
    )


#: Formats that store only a north-up grid: GDAL writes a rotated geotransform into them
#: where no reader takes it (netCDF: north-up coordinate vectors; 94 px off at the far
#: corner of a grid rotated by 10 degrees) or fails at the warp (GeoPackage).
NORTH_UP_ONLY = ("netCDF", "GPKG")


def check_output_grid(
    driver: str, geotransform: Sequence[float], name: str, source: str = "optical raster"
) -> None:
    """Raise ``ValueError`` unless ``driver`` can hold a grid of ``geotransform``.

    :data:`NORTH_UP_ONLY` formats are refused for a rotated grid (``geotransform[2]`` or
    ``[4]`` not 0); GeoTIFF, PNG, JPEG and JPEG 2000 keep the rotation.
    """
    if driver not in NORTH_UP_ONLY or (geotransform[2] == 0 and geotransform[4] == 0):
        return
    angle = math.degrees(math.atan2(geotransform[4], geotransform[1]))
    raise ValueError(
        f"cannot write {name}: the {driver} format stores only north-up grids, and the "
        f"{source}'s grid, which the output takes, is rotated ({angle:.3g} degrees); write a "
        ".tif instead (GeoTIFF keeps the rotation), or warp the optical raster north-up first "
        "(gdalwarp optical.tif optical_north_up.tif)"
    )


def can_create(driver: str) -> bool:
    """Whether GDAL driver ``driver`` writes files with ``Create`` (else only ``CreateCopy``)."""
    return gdal.GetDriverByName(driver).GetMetadataItem(gdal.DCAP_CREATE) == "YES"


WARP_CACHE_BYTES = 256 * 2**20
WARP_MEMORY_BYTES = 64 * 2**20


_CACHE_LOCK = threading.Lock()
_CACHE_USERS = 0
_CACHE_SAVED = 0


@contextlib.contextmanager
def gdal_cache_limit(max_bytes: int = WARP_CACHE_BYTES) -> Iterator[None]:
    """Cap GDAL's block cache while a large warp runs, then restore the caller's setting.

    GDAL's default cache (5 % of RAM) fills up during a warp and made the peak memory grow with
    the raster size (+1.2 GB at 20,000^2 px); blocks are written once, so a small cache costs
    nothing. The limit is only ever lowered, never raised. The cache is process-wide and runs
    can overlap (QGIS batch mode, threads): the setting of the first run to enter is restored
    when the last one leaves.
    """
    global _CACHE_USERS, _CACHE_SAVED
    with _CACHE_LOCK:
        if _CACHE_USERS == 0:
            _CACHE_SAVED = gdal.GetCacheMax()
        _CACHE_USERS += 1
        gdal.SetCacheMax(min(gdal.GetCacheMax(), max_bytes))
    try:
        yield
    finally:
        with _CACHE_LOCK:
            _CACHE_USERS -= 1
            if _CACHE_USERS == 0:
                gdal.SetCacheMax(_CACHE_SAVED)


def write_raster_atomic(
    path: str | Path,
    array: np.ndarray,
    geotransform: Sequence[float],
    crs_wkt: str,
    nodata: float | None = None,
    creation_options: Sequence[str] = DEFAULT_CREATION_OPTIONS,
) -> Path:
    """Write a (H, W) or (B, H, W) array as a GeoTIFF, atomically (see :func:`atomic_output`)."""
    data = np.asarray(array)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ValueError(f"array must be (H, W) or (B, H, W), got shape {data.shape}")
    from osgeo import gdal_array

    gdal_type = gdal_array.NumericTypeCodeToGDALTypeCode(data.dtype)
    if gdal_type is None:
        raise ValueError(f"dtype {data.dtype} cannot be written to GeoTIFF; cast it first")
    with atomic_output(path) as tmp:
        with gdal_errors() as errors:
            ds = gdal.GetDriverByName("GTiff").Create(
                str(tmp), data.shape[2], data.shape[1], data.shape[0], gdal_type,
                options=list(creation_options),
            )  # fmt: skip
            if ds is None:
                raise ValueError(f"cannot create {path}: {'; '.join(errors)}")
            try:
                ds.SetGeoTransform(tuple(float(v) for v in geotransform))
                ds.SetProjection(crs_wkt)
                for i, plane in enumerate(data):
                    band = ds.GetRasterBand(i + 1)
                    if nodata is not None:
                        band.SetNoDataValue(float(nodata))
                    band.WriteArray(plane)
                ds.FlushCache()
            finally:
                # closed before the file is renamed or removed, also on an error: the
                # traceback would keep it open, and Windows removes no open file
                band = ds = None
        if errors:
            raise ValueError(f"writing {path} failed: {'; '.join(errors)}")
    return Path(path)


def valid_on_grid(
    src: RasterInfo,
    band: int,
    dst: RasterInfo,
    origin_px: tuple[float, float],
    step_px: float,
    shape: tuple[int, int],
    max_read_px: int = 2048,
) -> tuple[np.ndarray, float]:
    """Whether ``src`` has valid data at the centres of a coarse grid laid on ``dst``'s pixels.

    Cell ``(i, j)`` of the ``shape = (ny, nx)`` grid covers the ``dst`` pixels
    ``[x0 + j step, x0 + (j + 1) step) x [y0 + i step, y0 + (i + 1) step)``, ``origin_px =
    (x0, y0)`` (it may reach beyond ``dst``). The validity of ``src`` (nodata, NaN/Inf, the
    mask or alpha band) is read once, decimated through GDAL (GDAL's overviews where there
    are) to at most ``max_read_px`` a side and about half a cell, of the ``src`` window under
    the grid only, then warped onto the grid by nearest neighbour (any CRS, rotation).

    Returns:
        ``(valid, src_cell_px)``: the ``(ny, nx)`` bool grid, and the side of one decimated
        read cell in ``src`` pixels (how far off a validity edge may be, in ``src`` pixels).
    """
    src.check_band(band)
    ny, nx = (int(v) for v in shape)
    if nx < 1 or ny < 1 or not (math.isfinite(step_px) and step_px > 0):
        raise ValueError(f"need a grid of at least 1 x 1 cells of a positive step, got {shape}")
    x0, y0 = (float(v) for v in origin_px)
    outline = geotransform.box_outline((x0, y0, x0 + nx * step_px, y0 + ny * step_px), 33)
    under = pixels_between(dst, src, outline)
    under = under[np.isfinite(under).all(axis=1)]
    valid = np.zeros((ny, nx), bool)
    if len(under) == 0:
        return valid, 1.0
    wx0, wy0 = max(0, math.floor(under[:, 0].min())), max(0, math.floor(under[:, 1].min()))
    wx1 = min(src.width, math.ceil(under[:, 0].max()))
    wy1 = min(src.height, math.ceil(under[:, 1].max()))
    if wx1 <= wx0 or wy1 <= wy0:
        return valid, 1.0
    w, h = wx1 - wx0, wy1 - wy0
    ratio = pixel_size_ratio(dst, src)  # one src pixel in dst pixels
    half_cell = 0.5 * step_px / (ratio if math.isfinite(ratio) and ratio > 0 else 1.0)
    k = max(1.0, max(w, h) / max_read_px, half_cell)
    bw, bh = max(1, round(w / k)), max(1, round(h / k))
    read = np.isfinite(_read_valid(src, band, (wx0, wy0, w, h), (bw, bh))).astype(np.uint8)
    mem = gdal.GetDriverByName("MEM")
    source = mem.Create("", bw, bh, 1, gdal.GDT_Byte)
    g = _window_gt(src.geotransform, wx0, wy0)
    sx, sy = w / bw, h / bh
    source.SetGeoTransform((g[0], g[1] * sx, g[2] * sy, g[3], g[4] * sx, g[5] * sy))
    source.SetProjection(src.crs_wkt)
    source.GetRasterBand(1).WriteArray(read)
    target = mem.Create("", nx, ny, 1, gdal.GDT_Byte)
    g = _window_gt(dst.geotransform, x0, y0)
    target.SetGeoTransform((g[0], g[1] * step_px, g[2] * step_px, g[3], g[4] * step_px,
                            g[5] * step_px))  # fmt: skip
    target.SetProjection(dst.crs_wkt)
    target.GetRasterBand(1).Fill(0)
    options = gdal.WarpOptions(resampleAlg="near", multithread=False, warpOptions=["INIT_DEST=0"])
    ok, errors = gdal_try(lambda: gdal.Warp(target, source, options=options))
    if not ok:
        raise ValueError(f"mapping the validity of {src.path!r} failed: {'; '.join(errors)[:300]}")
    return target.GetRasterBand(1).ReadAsArray() > 0, float(max(sx, sy))
