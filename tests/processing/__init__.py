"""Shared test data for the registration pipeline and the Processing algorithms.

:func:`write_pair` renders one textured "world" and samples it twice: the optical raster on a
north-up UTM grid, and a "SAR" raster through a known affine ``A`` (SAR px -> optical px) with
a radiometric change (a dB-like affine of the optical values, so the twin model of
``tests.model_fixtures`` matches it) and noise. The SAR georeference written to the file is
deliberately wrong by ``shift_px`` optical pixels, as real SAR geocoding is.

The twin model is a weak matcher (random weights): on these pairs about 40 % of its matches
are within 1 px and its confidence is uncalibrated (~0.01), so the algorithm tests use
CONFIDENCE_THRESHOLD 0 and enough keypoints (spacing 24 px) for RANSAC to find >= 8 inliers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

EPSG = 32633
OPT_GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)
#: SAR px -> optical px: 1.5 % scale, ~0.6 degree rotation, offset.
TRUE_A = np.array([[1.012, -0.010, 4.0], [0.011, 1.008, -3.0]])
#: error of the SAR's written georeference, optical pixels (within the twin model's +/-16 px)
SHIFT_PX = (6.0, -5.0)


#: Parameters shared by the algorithm runs (sizes of the twin model, dense keypoints).
MATCH_PARAMS: dict[str, Any] = {
    "TEMPLATE_SIZE": 64,
    "SEARCH_SIZE": 96,
    "MIN_DISTANCE": 24,
    "BORDER": 56,
    "CONFIDENCE_THRESHOLD": 0.0,
}


@dataclass(frozen=True)
class Pair:
    """Paths and truth of one synthetic pair."""

    optical: Path
    sar: Path
    a: np.ndarray  # (2, 3) SAR px -> optical px
    size: int

    def sar_to_optical(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) SAR pixels -> (N, 2) optical pixels (truth)."""
        return np.asarray(xy, np.float64) @ self.a[:, :2].T + self.a[:, 2]


def world_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) float32 in ~[0, 1]: multi-scale texture with corners (fields, roads)."""
    img = ndimage.gaussian_filter(rng.normal(size=(size, size)), 6) * 4
    img += ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.5)
    for _ in range(size // 6):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(6, 30, 2)
        img[y : y + h, x : x + w] += rng.uniform(-1.5, 1.5)
    img -= img.min()
    return (img / img.max()).astype(np.float32)


def _sample(world: np.ndarray, xy_world: np.ndarray) -> np.ndarray:
    """Bicubic sample of ``world`` at continuous (x, y) positions (corner = 0)."""
    coords = [xy_world[..., 1] - 0.5, xy_world[..., 0] - 0.5]
    return ndimage.map_coordinates(world, coords, order=3, mode="reflect").astype(np.float32)


def _write(path: Path, arr: np.ndarray, gt: tuple, nodata: float | None = None) -> Path:
    from osgeo import gdal, osr

    dtype = gdal.GDT_Byte if arr.dtype == np.uint8 else gdal.GDT_Float32
    ds = gdal.GetDriverByName("GTiff").Create(str(path), arr.shape[1], arr.shape[0], 1, dtype)
    ds.SetGeoTransform(gt)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    ds.SetProjection(srs.ExportToWkt())
    band = ds.GetRasterBand(1)
    if nodata is not None:
        band.SetNoDataValue(nodata)
    band.WriteArray(arr)
    ds = None
    return path


def write_pair(
    folder: Path,
    seed: int = 0,
    size: int = 384,
    a: np.ndarray = TRUE_A,
    shift_px: tuple[float, float] = SHIFT_PX,
    unrelated: bool = False,
    noise: float = 0.01,
) -> Pair:
    """Write ``optical.tif`` (uint8) and ``sar.tif`` (float32, dB-like) into ``folder``.

    With ``unrelated=True`` the SAR shows another random world (matching cannot work).
    """
    rng = np.random.default_rng(seed)
    margin = 48
    world = world_texture(rng, size + 2 * margin)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    pix = np.stack([xx, yy], axis=-1)
    optical = _sample(world, pix + margin)
    opt_of_sar = pix @ a[:, :2].T + a[:, 2]
    sar_world = world_texture(rng, size + 2 * margin) if unrelated else world
    sar = 3.0 * _sample(sar_world, opt_of_sar + margin) - 18.0
    sar += rng.normal(0, noise, sar.shape).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    opt_path = _write(
        folder / "optical.tif", np.clip(optical * 255, 0, 255).astype(np.uint8), OPT_GT
    )
    # true SAR geotransform = optical gt o A, then offset by shift_px optical pixels
    g = OPT_GT
    sar_gt = (
        g[0] + g[1] * (a[0, 2] + shift_px[0]),
        g[1] * a[0, 0],
        g[1] * a[0, 1],
        g[3] + g[5] * (a[1, 2] + shift_px[1]),
        g[5] * a[1, 0],
        g[5] * a[1, 1],
    )
    sar_path = _write(folder / "sar.tif", sar.astype(np.float32), sar_gt, nodata=-9999.0)
    return Pair(opt_path, sar_path, np.asarray(a, np.float64), size)


# --- fixtures and runners shared by the algorithm tests --------------------------------------


_PROVIDERS: list = []


def write_rotated(path: Path, src: Path, angle_deg: float = 10.0) -> tuple[float, ...]:
    """``src``'s pixels on a 10 m grid rotated by ``angle_deg``; returns its geotransform."""
    import math

    from osgeo import gdal

    c, s = 10 * math.cos(math.radians(angle_deg)), 10 * math.sin(math.radians(angle_deg))
    gt = (500000.0, c, s, 4100000.0, s, -c)
    ds = gdal.Translate(str(path), str(src))
    ds.SetGeoTransform(gt)
    ds = None
    return gt


def write_band_stack(path: Path, sources: list[tuple[Path, int]]) -> Path:
    """A VRT of band 1 of each source, in the given GDAL types, on the first's grid (which may
    be rotated: ``gdalbuildvrt`` refuses that)."""
    from osgeo import gdal

    first = gdal.Open(str(sources[0][0]))
    ds = gdal.GetDriverByName("VRT").Create(str(path), first.RasterXSize, first.RasterYSize, 0)
    ds.SetGeoTransform(first.GetGeoTransform())
    ds.SetProjection(first.GetProjection())
    for src, gdal_type in sources:
        ds.AddBand(gdal_type)
        ds.GetRasterBand(ds.RasterCount).SetMetadataItem(
            "source_0",
            f"<SimpleSource><SourceFilename>{src}</SourceFilename><SourceBand>1</SourceBand>"
            "</SimpleSource>",
            "new_vrt_sources",
        )
    ds = first = None
    return path


@pytest.fixture(name="provider")
def provider_fixture(qgis_processing: None):
    """The plugin's provider, registered once in the test QGIS application."""
    from qgis.core import QgsApplication

    from sar_optical_matcher.processing.provider import SarOpticalMatcherProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("sarmatcher") is None:
        _PROVIDERS.append(SarOpticalMatcherProvider())  # keep the Python object alive
        registry.addProvider(_PROVIDERS[-1])
    return registry.providerById("sarmatcher")


@pytest.fixture(name="twin_model", scope="session")
def twin_model_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny twin ONNX model (template 64, search 96): same encoder for both modalities."""
    from tests.model_fixtures import make_twin_model

    return make_twin_model(tmp_path_factory.mktemp("twin") / "twin.onnx")


@pytest.fixture(name="synthetic_pair", scope="session")
def synthetic_pair_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    """The default synthetic pair (384 px)."""
    return write_pair(tmp_path_factory.mktemp("pair"))


def run_cli(env: dict[str, str], alg_id: str, params: dict[str, object]) -> dict:
    """Run ``qgis_process run <alg_id> --json -- K=V ...``; return the parsed JSON results."""
    import json
    import subprocess

    from tests.conftest import qgis_process_command

    args = [*qgis_process_command(), "--json", "run", f"sarmatcher:{alg_id}", "--"]
    args += [f"{k}={v}" for k, v in params.items()]
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"qgis_process failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    start = run.stdout.find("{")
    return json.loads(run.stdout[start:])
