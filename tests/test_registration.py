"""The registration pipeline without QGIS: tiled keypoints, RANSAC fit, GDAL warp, report."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from sar_optical_matcher import registration as reg
from sar_optical_matcher import report as rep
from sar_optical_matcher.core import transforms as tf
from tests.processing import TRUE_A, Pair, write_band_stack, write_pair, write_rotated


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return write_pair(tmp_path_factory.mktemp("pair"))


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.model_fixtures import make_twin_model

    return make_twin_model(tmp_path_factory.mktemp("model") / "twin.onnx")


def _open(path: Path):
    from sar_optical_matcher import rasters

    return rasters.open_raster(str(path))


def _ties(rng: np.random.Generator, n: int, outlier_fraction: float, noise: float = 0.05):
    src = rng.uniform(0, 300, (n, 2))
    dst = src @ TRUE_A[:, :2].T + TRUE_A[:, 2] + rng.normal(0, noise, (n, 2))
    bad = rng.random(n) < outlier_fraction
    dst[bad] += rng.uniform(-40, 40, (int(bad.sum()), 2)) + 10 * np.sign(rng.normal(size=2))
    ties = reg.TiePoints(src, dst, np.ones(n, bool), np.arange(n))
    return ties, bad


def _true_ties(pair: Pair, n: int = 30) -> reg.TiePoints:
    src = np.random.default_rng(5).uniform(20, pair.size - 20, (n, 2))
    return reg.TiePoints(src, pair.sar_to_optical(src), np.ones(n, bool), np.arange(n))


# --- fitting ---------------------------------------------------------------------------------


def test_fit_recovers_affine_and_flags_outliers() -> None:
    rng = np.random.default_rng(0)
    ties, bad = _ties(rng, 60, 0.3)
    ties.accepted[:3] = False  # not accepted: never inliers, still get residuals
    fit = reg.fit_tie_points(ties, "affine", 1.0, 8, np.random.default_rng(1))
    assert not fit.inliers[:3].any()
    np.testing.assert_array_equal(fit.inliers[3:], ~bad[3:])
    grid = np.stack(np.meshgrid(np.linspace(0, 300, 5), np.linspace(0, 300, 5)), -1).reshape(-1, 2)
    truth = grid @ TRUE_A[:, :2].T + TRUE_A[:, 2]
    assert np.abs(fit.transform.apply(grid) - truth).max() < 0.1
    assert 0.03 < fit.rmse_px < 0.1
    assert np.isfinite(fit.residual_xy_px).all()


def test_shift_is_fitted_after_the_georeferences_pixel_mapping() -> None:
    """A shift of the SAR's georeference between grids of other pixel sizes (and rotation):
    ``dst = J src + t`` with the georeferences' ``J`` fixed. Without it (``dst = src + t``)
    these exact tie points were refused, only 1 of 40 within 1 px of one shift."""
    rng = np.random.default_rng(8)
    jac = np.array([[0.5, 0.02], [-0.02, 0.5]])  # 5 m SAR pixels, rotated, on a 10 m grid
    t = np.array([17.25, -6.5])
    src = rng.uniform(0, 600, (40, 2))
    dst = src @ jac.T + t + rng.normal(0, 0.05, (40, 2))
    ties = reg.TiePoints(src, dst, np.ones(40, bool), np.arange(40))
    fit = reg.fit_tie_points(ties, "shift", 1.0, 8, np.random.default_rng(0), nominal_jacobian=jac)
    assert fit.inliers.all() and fit.kind == "shift"
    np.testing.assert_allclose(fit.transform.affine_matrix(), np.column_stack([jac, t]), atol=0.03)
    assert 0.03 < fit.rmse_px < 0.1 and 0.03 < fit.loo_rmse_px < 0.1
    np.testing.assert_allclose(fit.residual_xy_px, fit.transform.apply(src) - dst)
    with pytest.raises(reg.RegistrationError):  # the shift of pixels alone
        reg.fit_tie_points(ties, "shift", 1.0, 8, np.random.default_rng(0))
    affine = reg.fit_tie_points(ties, "affine", 1.0, 8, np.random.default_rng(0),
                                nominal_jacobian=np.eye(2))  # fmt: skip
    np.testing.assert_allclose(affine.transform.affine_matrix()[:, :2], jac, atol=1e-3)
    with pytest.raises(ValueError, match="invertible"):
        reg.fit_tie_points(ties, "shift", 1.0, 8, np.random.default_rng(0),
                           nominal_jacobian=np.zeros((2, 2)))  # fmt: skip


def test_fit_is_reproducible_with_the_same_seed() -> None:
    ties, _ = _ties(np.random.default_rng(2), 40, 0.4)
    a = reg.fit_tie_points(ties, "poly2", 1.0, 8, np.random.default_rng(7))
    b = reg.fit_tie_points(ties, "poly2", 1.0, 8, np.random.default_rng(7))
    np.testing.assert_array_equal(a.inliers, b.inliers)
    assert a.rmse_px == b.rmse_px


def test_random_matches_are_refused_with_advice() -> None:
    rng = np.random.default_rng(3)
    ties = reg.TiePoints(
        rng.uniform(0, 300, (50, 2)), rng.uniform(0, 300, (50, 2)), np.ones(50, bool), np.arange(50)
    )
    with pytest.raises(reg.RegistrationError) as err:
        reg.fit_tie_points(ties, "affine", 3.0, 8, np.random.default_rng(0))
    text = str(err.value)
    assert "needed" in text and "8 are needed" in text
    for hint in ("MAX_COUNT", "CONFIDENCE_THRESHOLD", "overlap", "+/-64 px"):
        assert hint in text


def test_too_few_accepted_is_refused_before_ransac() -> None:
    ties, _ = _ties(np.random.default_rng(4), 12, 0.0)
    ties.accepted[5:] = False
    with pytest.raises(reg.RegistrationError, match="only 5 usable matches"):
        reg.fit_tie_points(ties, "affine", 3.0, 8, np.random.default_rng(0))


def test_required_inliers_has_redundancy() -> None:
    assert reg.required_inliers("affine", 1) == 7
    assert reg.required_inliers("poly3", 8) == 14
    assert reg.required_inliers("shift", 8) == 8


# --- keypoints ---------------------------------------------------------------------------------


def test_tiled_keypoints_agree_with_whole_image(pair: Pair) -> None:
    from sar_optical_matcher.core.keypoints import detect_keypoints

    info = _open(pair.optical)
    s = reg.DetectSettings(min_distance_px=24, max_count=200, border_px=40, tile_px=100)
    tiled = reg.detect_keypoints_tiled(info, s)
    from osgeo import gdal

    whole = detect_keypoints(
        gdal.Open(str(pair.optical)).ReadAsArray(), max_count=200, min_distance_px=24, border_px=40
    )
    assert len(tiled) >= 0.8 * len(whole) and len(tiled) > 20
    d = np.linalg.norm(tiled.xy_px[:, None] - whole.xy_px[None], axis=2)
    assert (d.min(axis=1) < 1e-9).mean() > 0.8  # most are the very same pixels
    spacing = np.linalg.norm(tiled.xy_px[:, None] - tiled.xy_px[None], axis=2)
    assert spacing[~np.eye(len(tiled), dtype=bool)].min() >= 24
    assert tiled.xy_px.min() >= 40 and tiled.xy_px.max() <= pair.size - 40


def test_keypoints_respect_mask_and_extent(pair: Pair) -> None:
    info = _open(pair.optical)
    gt = info.geotransform
    x_mid = gt[0] + gt[1] * 160
    mask = (
        f"POLYGON(({gt[0]} {gt[3]},{x_mid} {gt[3]},{x_mid} {gt[3] - 3200},"
        f"{gt[0]} {gt[3] - 3200},{gt[0]} {gt[3]}))",
    )
    s = reg.DetectSettings(min_distance_px=20, max_count=100, border_px=10, mask_wkt=mask)
    k = reg.detect_keypoints_tiled(info, s)
    assert len(k) > 5 and k.xy_px[:, 0].max() < 160
    ext = (gt[0] + 1000, gt[3] - 2000, gt[0] + 2500, gt[3] - 500)  # px x 100..250, y 50..200
    k = reg.detect_keypoints_tiled(
        info, reg.DetectSettings(min_distance_px=20, border_px=10, extent_map=ext)
    )
    assert len(k) > 5
    assert k.xy_px[:, 0].min() >= 100 and k.xy_px[:, 0].max() <= 250
    assert k.xy_px[:, 1].min() >= 50 and k.xy_px[:, 1].max() <= 200


def test_extent_is_exact_on_a_rotated_raster(pair: Pair, tmp_path: Path) -> None:
    """The extent's pixel bounding box is larger than the extent on a rotated grid: keypoints
    are kept only where their map position is inside it (one lay 21 m outside)."""
    gt0 = _open(pair.optical).geotransform
    c, s = 10.0 * np.cos(np.radians(30.0)), 10.0 * np.sin(np.radians(30.0))
    info = _open(_with_gt(pair.optical, tmp_path / "rot.tif", (gt0[0], c, s, gt0[3], s, -c)))
    centre = reg.pixel_to_map(info.geotransform, [[192.0, 192.0]])[0]
    ext = (centre[0] - 1000, centre[1] - 1000, centre[0] + 1000, centre[1] + 1000)
    k = reg.detect_keypoints_tiled(
        info, reg.DetectSettings(min_distance_px=12, border_px=10, extent_map=ext)
    )
    xy = reg.pixel_to_map(info.geotransform, k.xy_px)
    assert len(k) > 10
    assert (xy[:, 0] >= ext[0]).all() and (xy[:, 0] <= ext[2]).all()
    assert (xy[:, 1] >= ext[1]).all() and (xy[:, 1] <= ext[3]).all()
    inside = reg.DetectSettings(min_distance_px=12, border_px=10, within_px=(200, 0, 384, 150))
    k = reg.detect_keypoints_tiled(info, inside)
    assert len(k) > 5 and k.xy_px[:, 0].min() >= 200 and k.xy_px[:, 1].max() <= 150


@pytest.mark.parametrize("tile_px", [100, 4096])
def test_max_count_is_spent_inside_the_search_window(pair: Pair, tile_px: int) -> None:
    """The budget went to the strongest points of the tile's halo, border or outside the
    extent, which were dropped after: MAX_COUNT 5 gave 4, 10 gave 8, and 3 with an extent 0."""
    info = _open(pair.optical)
    every = reg.detect_keypoints_tiled(
        info, reg.DetectSettings(min_distance_px=24, border_px=56, tile_px=tile_px)
    )
    assert len(every) > 20
    for n in (1, 3, 5, 10):
        s = reg.DetectSettings(min_distance_px=24, border_px=56, max_count=n, tile_px=tile_px)
        k = reg.detect_keypoints_tiled(info, s)
        assert len(k) == n
        np.testing.assert_array_equal(k.xy_px, every.xy_px[:n])  # the n strongest
    gt = info.geotransform
    ext = (gt[0] + 1500, gt[3] - 2500, gt[0] + 2500, gt[3] - 1500)  # px 150..250
    inside = reg.detect_keypoints_tiled(
        info, reg.DetectSettings(min_distance_px=24, border_px=56, extent_map=ext, tile_px=tile_px)
    )
    assert len(inside) >= 4
    k = reg.detect_keypoints_tiled(
        info,
        reg.DetectSettings(
            min_distance_px=24, border_px=56, extent_map=ext, max_count=3, tile_px=tile_px
        ),
    )
    np.testing.assert_array_equal(k.xy_px, inside.xy_px[:3])


def test_no_room_for_keypoints_is_explained(pair: Pair) -> None:
    with pytest.raises(ValueError, match="smaller border"):
        reg.detect_keypoints_tiled(_open(pair.optical), reg.DetectSettings(border_px=200))


# --- warp ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["affine", "poly2", "tps"])
def test_warp_aligns_sar_with_optical(pair: Pair, tmp_path: Path, kind: str) -> None:
    from osgeo import gdal

    optical, sar = _open(pair.optical), _open(pair.sar)
    fit = reg.fit_tie_points(_true_ties(pair), kind, 0.5, 8, np.random.default_rng(0))
    out = reg.warp_sar(sar, optical, fit, tmp_path / "reg.tif", reg.WarpSettings())
    ds = gdal.Open(str(out))
    assert ds.GetGeoTransform() == pytest.approx(optical.geotransform)
    assert (ds.RasterXSize, ds.RasterYSize) == (optical.width, optical.height)
    warped = ds.ReadAsArray().astype(np.float64)[30:-30, 30:-30]
    ref = gdal.Open(str(pair.optical)).ReadAsArray().astype(np.float64)[30:-30, 30:-30]
    # the SAR is 3 * optical/255 - 18: undo the radiometry and compare pixel by pixel
    err = np.abs((warped + 18.0) / 3.0 * 255.0 - ref)
    assert np.median(err) < 2.5, np.median(err)
    assert [p.name for p in tmp_path.iterdir()] == ["reg.tif"], "temporary files left"


def test_warp_output_pixel_size_and_nodata(pair: Pair, tmp_path: Path) -> None:
    from osgeo import gdal

    optical, sar = _open(pair.optical), _open(pair.sar)
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    settings = reg.WarpSettings(pixel_size=20.0, nodata=-1.0, resampling="near")
    ds = gdal.Open(str(reg.warp_sar(sar, optical, fit, tmp_path / "r.tif", settings)))
    assert ds.GetGeoTransform()[1] == 20.0 and ds.RasterXSize == pair.size // 2
    assert ds.GetRasterBand(1).GetNoDataValue() == -1.0


@pytest.mark.parametrize("kind", ["poly2", "poly3"])
def test_polynomial_warp_of_a_sar_scene_much_larger_than_the_optical(
    tmp_path: Path, kind: str
) -> None:
    """A 128 px optical tile in the middle of a 1536 px SAR scene, tie points on the tile, a
    1 px bend across it: the warp must follow the fit on the tile. With the GCP grid over the
    whole scene, GDAL's least-squares inverse of the far-extrapolated polynomial missed it by
    3.0 px (median, 5.7 px max) while the fit's RMSE said 0."""
    from osgeo import gdal, osr

    from sar_optical_matcher import rasters

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    n, size, off = 128, 1536, 704

    def write(path: Path, side: int, x0: float, coords: bool) -> rasters.RasterInfo:
        ds = gdal.GetDriverByName("GTiff").Create(str(path), side, side, 2, gdal.GDT_Float32,
                                                  ["TILED=YES", "COMPRESS=DEFLATE"])  # fmt: skip
        ds.SetGeoTransform((500000.0 + x0, 10.0, 0.0, 4100000.0 - x0, 0.0, -10.0))
        ds.SetProjection(srs.ExportToWkt())
        if coords:  # band 1, 2: the SAR pixel's own (x, y), around the tile only (small file)
            lo, hi = off - 64, off + n + 64
            yy, xx = (np.mgrid[lo:hi, lo:hi] + 0.5).astype(np.float32)
            ds.GetRasterBand(1).WriteArray(xx, lo, lo)
            ds.GetRasterBand(2).WriteArray(yy, lo, lo)
        ds = None
        return rasters.open_raster(path)

    optical = write(tmp_path / "opt.tif", n, 0.0, False)
    sar = write(tmp_path / "sar.tif", size, -10.0 * off, True)

    def truth(s: np.ndarray) -> np.ndarray:
        u = (s - (off + n / 2)) / (n / 2)
        return s - off + np.column_stack([u[:, 0] ** 2, u[:, 0] * u[:, 1]])

    src = np.random.default_rng(0).uniform(off + 8, off + n - 8, (30, 2))
    ties = reg.TiePoints(src, truth(src), np.ones(30, bool), np.arange(30))
    fit = reg.fit_tie_points(ties, kind, 0.5, 8, np.random.default_rng(0))
    assert fit.rmse_px < 1e-6
    out = reg.warp_sar(sar, optical, fit, tmp_path / "w.tif", reg.WarpSettings())
    warped = gdal.Open(str(out)).ReadAsArray().astype(np.float64)
    sar_xy = np.column_stack([warped[0].ravel(), warped[1].ravel()])
    oy, ox = np.mgrid[0:n, 0:n] + 0.5
    err = np.linalg.norm(fit.transform.apply(sar_xy) - np.column_stack([ox.ravel(), oy.ravel()]),
                         axis=1).reshape(n, n)[4:-4, 4:-4]  # fmt: skip
    assert np.median(err) < 0.1 and err.max() < 0.2, (np.median(err), err.max())
    window = reg.sar_window_on_optical(fit.transform, size, size, n, n)
    assert window == pytest.approx((off - 32, off - 32, off + n + 32, off + n + 32), abs=1.5)


def test_a_pixel_size_beyond_the_optical_raster_is_refused(pair: Pair, tmp_path: Path) -> None:
    """PIXEL_SIZE 10 (metres meant) for an optical raster in degrees wrote a 1 x 1 px raster."""
    from osgeo import gdal

    optical = _open(pair.optical)
    deg = 9e-5
    geo = tmp_path / "geo.tif"
    gdal.Translate(str(geo), str(pair.optical), outputSRS="EPSG:4326",
                   outputBounds=[15.0, 37.0 - 384 * deg, 15.0 + 384 * deg, 37.0])  # fmt: skip
    with pytest.raises(ValueError, match=r"PIXEL_SIZE 10 is larger than the optical raster, "
                       r"0\.03456 x 0\.03456 optical map units \(degrees: the optical CRS is "
                       r"geographic\): the output would be one pixel"):  # fmt: skip
        reg.output_grid(_open(geo), 10.0)
    assert reg.output_grid(_open(geo), 2 * deg)[1:] == (192, 192)
    assert reg.output_grid(optical, 3840.0)[1:] == (1, 1)  # the whole raster: still allowed
    with pytest.raises(ValueError, match="PIXEL_SIZE 3850 is larger"):
        reg.output_grid(optical, 3850.0)
    # degrees given for a raster in metres: 38,400,000^2 px, which GDAL refused only at the
    # warp, after the matching ("File too large regarding tile size")
    with pytest.raises(ValueError, match=r"PIXEL_SIZE 0.0001 makes a 38,400,000 x 38,400,000 "
                       r"px output \(1.47e\+15 pixels, more than 6.87e\+10\) of an optical "
                       r"raster of 384 x 384 px, whose pixel is 10 optical map units \(map "
                       r"units\) wide"):  # fmt: skip
        reg.output_grid(optical, 1e-4)
    assert reg.output_grid(optical, 0.1)[1:] == (38400, 38400)  # 100x finer: still allowed


def _with_gt(src: Path, dst: Path, gt: tuple) -> Path:
    from osgeo import gdal

    gdal.Translate(str(dst), str(src), format="GTiff").SetGeoTransform(gt)
    return dst


@pytest.mark.parametrize("angle", [10.0, 90.0])
def test_warp_onto_a_rotated_optical_grid(pair: Pair, tmp_path: Path, angle: float) -> None:
    """The output is the optical's own grid, rotation included: its pixels are those of the
    north-up case (the fit is in pixels). GDAL's -tr from |gt[1]|, |gt[5]| made a 10 degree
    grid 452 px of 9.85 m for 384 px of 10 m, and failed at 90 degrees (gt[1] = gt[5] = 0)."""
    from osgeo import gdal

    optical, sar = _open(pair.optical), _open(pair.sar)
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    ref = gdal.Open(str(reg.warp_sar(sar, optical, fit, tmp_path / "up.tif", reg.WarpSettings())))
    gt0 = optical.geotransform
    c, s = gt0[1] * np.cos(np.radians(angle)), gt0[1] * np.sin(np.radians(angle))
    rot_gt = (gt0[0], c, s, gt0[3], s, -c)
    rotated = _open(_with_gt(pair.optical, tmp_path / "rot.tif", rot_gt))
    out = gdal.Open(str(reg.warp_sar(sar, rotated, fit, tmp_path / "r.tif", reg.WarpSettings())))
    assert out.GetGeoTransform() == pytest.approx(rot_gt)
    assert (out.RasterXSize, out.RasterYSize) == (optical.width, optical.height)
    a, b = ref.ReadAsArray().astype(float), out.ReadAsArray().astype(float)
    assert np.abs(a - b)[20:-20, 20:-20].max() < 1.0
    coarse = reg.warp_sar(sar, rotated, fit, tmp_path / "c.tif", reg.WarpSettings(pixel_size=20.0))
    cds = gdal.Open(str(coarse))
    assert cds.GetGeoTransform() == pytest.approx((gt0[0], 2 * c, 2 * s, gt0[3], 2 * s, -2 * c))
    assert (cds.RasterXSize, cds.RasterYSize) == (optical.width // 2, optical.height // 2)


@pytest.mark.parametrize("exceptions", [False, True])
def test_warp_writes_the_format_of_the_extension(
    pair: Pair, tmp_path: Path, exceptions: bool
) -> None:
    """The extension picks the GDAL format (it was always GeoTIFF, whatever the name), single-
    file formats only (companion files named from the stem, .bil/.hdr and the like, were split
    by the rename); CreateCopy-only formats go through a temporary GeoTIFF; a type the format
    cannot hold, a VRT or an unknown extension is refused before any warp; the same with
    gdal.UseExceptions() on; nothing but the outputs is left."""
    from osgeo import gdal

    was = gdal.GetUseExceptions()
    gdal.UseExceptions() if exceptions else gdal.DontUseExceptions()
    try:
        optical, sar = _open(pair.optical), _open(pair.sar)
        fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
        plain = reg.WarpSettings(creation_options=())
        ref = gdal.Open(str(reg.warp_sar(sar, optical, fit, tmp_path / "ref.tif", plain)))
        defaults = reg.WarpSettings()  # each format's own defaults
        tif = gdal.Open(str(reg.warp_sar(sar, optical, fit, tmp_path / "d.tif", defaults)))
        assert tif.GetMetadata("IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
        assert tif.GetRasterBand(1).GetBlockSize() == [256, 256]  # tiled
        tif = None
        # a GeoTIFF option to a GeoPackage: refused (GDAL would warn and write without it)
        with pytest.raises(ValueError, match=r"TILED=YES: not creation option\(s\) of the "
                           r"GPKG format of r\.gpkg .*its options are .*TILE_FORMAT"):  # fmt: skip
            reg.warp_sar(sar, optical, fit, tmp_path / "r.gpkg",
                         reg.WarpSettings(creation_options=("TILED=YES",)))  # fmt: skip
        for name, driver in (("r.gpkg", "GPKG"), ("r.nc", "netCDF")):
            ds = gdal.Open(str(reg.warp_sar(sar, optical, fit, tmp_path / name, defaults)))
            assert ds.GetDriver().ShortName == driver, name
            np.testing.assert_allclose(ds.ReadAsArray(), ref.ReadAsArray(), atol=1e-4)
            ds = None
        table = gdal.Info(str(tmp_path / "r.gpkg"))
        assert "partial" not in table and "r.gpkg" in table  # not the temporary name
        # PNG holds 8 and 16 bit only: said before the warp, with the way out
        with pytest.raises(
            ValueError,
            match=r"cannot write r\.png: the PNG format stores "
            r"Byte, UInt16 bands, the SAR raster is Float32; write a \.tif",
        ):
            reg.warp_sar(sar, optical, fit, tmp_path / "r.png", plain)
        byte_sar = tmp_path / "sar8.tif"
        gdal.Translate(str(byte_sar), str(pair.sar), outputType=gdal.GDT_Byte, scaleParams=[[]])
        sar8 = _open(byte_sar)
        ds = gdal.Open(str(reg.warp_sar(sar8, optical, fit, tmp_path / "r.png", plain)))
        ref8 = gdal.Open(str(reg.warp_sar(sar8, optical, fit, tmp_path / "r8.tif", plain)))
        assert ds.GetDriver().ShortName == "PNG"
        np.testing.assert_array_equal(ds.ReadAsArray(), ref8.ReadAsArray())
        assert ds.GetGeoTransform() == pytest.approx(optical.geotransform)
        ds = None
        for bad, why in (("r.vrt", "virtual format"), ("r.bil", "not a single-file"),
                         ("r.nosuchformat", "not a single-file")):  # fmt: skip
            with pytest.raises(ValueError, match=rf"cannot write a raster named .*{why}.*\.tif"):
                reg.warp_sar(sar, optical, fit, tmp_path / bad, reg.WarpSettings())
    finally:
        gdal.UseExceptions() if was else gdal.DontUseExceptions()
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".aux.xml"))
    assert left == ["d.tif", "r.gpkg", "r.nc", "r.png", "r8.tif", "ref.tif", "sar8.tif"]


def _noise_sar(pair: Pair, path: Path, gdal_type: str, bands: int) -> Path:
    """The SAR's georeference with random values (no smoothness a lossy codec could keep)."""
    from osgeo import gdal

    ds = gdal.Translate(str(path), str(pair.sar), bandList=[1] * bands, noData="none",
                        outputType=gdal.GetDataTypeByName(gdal_type))  # fmt: skip
    rng = np.random.default_rng(11)
    top = 255 if gdal_type == "Byte" else 60000
    for b in range(bands):
        data = rng.integers(1, top, (ds.RasterYSize, ds.RasterXSize), endpoint=True)
        ds.GetRasterBand(b + 1).WriteArray(data.astype(np.float32 if gdal_type == "Float32"
                                                       else np.int64))  # fmt: skip
    ds = None
    return path


def test_geopackage_and_jpeg2000_outputs_are_lossless_unless_asked(
    pair: Pair, tmp_path: Path
) -> None:
    """A 3-band Byte SAR registered to a .gpkg was stored as JPEG tiles (GDAL's TILE_FORMAT=
    AUTO: JPEG for every opaque tile): 44 % of its random values came back changed, by up to
    242, without a word. A .jp2 got OpenJPEG's QUALITY=25: a UInt16 one off by 1,362 on mean.
    Both now read back exactly what the GeoTIFF holds, also when other creation options are
    given; a TILE_FORMAT / QUALITY the user gives still wins."""
    from osgeo import gdal

    optical = _open(pair.optical)
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))

    def warped(sar: Path, name: str, options: tuple[str, ...] | None = None) -> np.ndarray:
        # one nodata for every format (without, a Float32 SAR gets NaN, in a GeoPackage its
        # lowest value); the noise is 1..top: no pixel is 0
        settings = reg.WarpSettings(resampling="near", creation_options=options, nodata=0.0)
        ds = gdal.Open(str(reg.warp_sar(_open(sar), optical, fit, tmp_path / name, settings)))
        data = ds.ReadAsArray().astype(np.float64)
        ds = None
        return data if data.ndim == 3 else data[None]

    cases = [("Byte", 3, "gpkg", ("BLOCKSIZE=128",), ("TILE_FORMAT=JPEG",)),
             ("UInt16", 1, "gpkg", None, None), ("Float32", 1, "gpkg", None, None)]  # fmt: skip
    if gdal.GetDriverByName("JP2OpenJPEG") is not None:
        cases += [("Byte", 3, "jp2", ("CODEC=JP2",), ("QUALITY=25",)),
                  ("UInt16", 1, "jp2", None, ("REVERSIBLE=NO",))]  # fmt: skip
    for gdal_type, bands, ext, other, lossy in cases:
        sar = _noise_sar(pair, tmp_path / f"n_{gdal_type}_{ext}.tif", gdal_type, bands)
        ref = warped(sar, f"ref_{gdal_type}_{ext}.tif")
        assert ref.std() > 0.25 * ref.max(), gdal_type  # noise, not a smooth field
        for options in (None, other):
            out = warped(sar, f"r_{gdal_type}.{ext}", options)[:bands]  # GPKG Byte: + alpha
            np.testing.assert_array_equal(out, ref, err_msg=f"{gdal_type} .{ext} {options}")
        if lossy is not None:  # what the user asks for is what is written
            off = np.abs(warped(sar, f"l_{gdal_type}.{ext}", lossy)[:bands] - ref)
            assert off.mean() > 0.02 * ref.max(), (gdal_type, ext, off.mean())


def test_warp_errors_and_cancel_read_the_same_with_gdal_exceptions(
    pair: Pair, tmp_path: Path
) -> None:
    """With gdal.UseExceptions() a cancel was a RuntimeError "User terminated" and GDAL's
    failures bare RuntimeErrors; now Canceled and RegistrationError naming the final file."""
    from osgeo import gdal

    optical, sar = _open(pair.optical), _open(pair.sar)
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    was = gdal.GetUseExceptions()
    gdal.UseExceptions()
    try:
        with pytest.raises(reg.Canceled):
            reg.warp_sar(sar, optical, fit, tmp_path / "c.tif", reg.WarpSettings(),
                         is_canceled=lambda: True)  # fmt: skip
        bad = reg.WarpSettings(creation_options=("TILED=YES", "BLOCKXSIZE=7"))
        with pytest.raises(reg.RegistrationError, match=r"GDAL could not create \(GTiff\) "
                           r"final\.tif: .*TileWidth"):  # fmt: skip
            reg.warp_sar(sar, optical, fit, tmp_path / "x.tif", bad, final_name="final.tif")
    finally:
        gdal.UseExceptions() if was else gdal.DontUseExceptions()
    assert list(tmp_path.iterdir()) == []


def test_warp_keeps_the_sar_metadata(pair: Pair, tmp_path: Path) -> None:
    """Dataset and band metadata, band descriptions and scale/offset survive, as with gdalwarp
    (a SAR product's polarisation and acquisition time are in them)."""
    from osgeo import gdal

    src = tmp_path / "sar_md.tif"
    ds = gdal.Translate(str(src), str(pair.sar))
    ds.SetMetadata({"POLARISATION": "VV", "ACQUISITION": "2026-11-30T05:41:00"})
    band = ds.GetRasterBand(1)
    band.SetDescription("Sigma0_VV")
    band.SetMetadata({"UNITS": "dB"})
    band.SetScale(0.5)
    band.SetOffset(-10.0)
    ds = band = None
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    out = reg.warp_sar(_open(src), _open(pair.optical), fit, tmp_path / "r.tif", reg.WarpSettings())
    ds = gdal.Open(str(out))
    assert ds.GetMetadata()["POLARISATION"] == "VV"
    assert ds.GetMetadata()["ACQUISITION"] == "2026-11-30T05:41:00"
    b = ds.GetRasterBand(1)
    assert b.GetDescription() == "Sigma0_VV" and b.GetMetadata()["UNITS"] == "dB"
    assert (b.GetScale(), b.GetOffset()) == (0.5, -10.0)


def test_warp_refuses_a_nodata_the_sar_type_cannot_hold(pair: Pair, tmp_path: Path) -> None:
    """A byte SAR and NODATA -9999: GDAL clamped it to 0 with a warning; now a clear error."""
    from osgeo import gdal

    optical = _open(pair.optical)
    byte_sar = tmp_path / "sar8.tif"
    gdal.Translate(str(byte_sar), str(pair.sar), outputType=gdal.GDT_Byte, scaleParams=[[]])
    sar = _open(byte_sar)
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    for bad in (-9999.0, 256.0, 0.5):
        with pytest.raises(reg.RegistrationError, match=r"cannot be stored in the SAR's Byte "
                           r"data type \(0 to 255\).*Float32"):  # fmt: skip
            reg.warp_sar(sar, optical, fit, tmp_path / "r.tif", reg.WarpSettings(nodata=bad))
    ds = gdal.Open(str(reg.warp_sar(sar, optical, fit, tmp_path / "r.tif",
                                    reg.WarpSettings(nodata=255.0))))  # fmt: skip
    assert ds.GetRasterBand(1).GetNoDataValue() == 255.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.tif", "sar8.tif"]
    # Float32: NODATA 1e39 became +inf as the band's nodata while the outside was filled with
    # 3.4e38, so no pixel read as nodata; the type's own extreme (as tools write it) stays
    float_sar = _open(pair.sar)
    assert gdal.Open(str(pair.sar)).GetRasterBand(1).DataType == gdal.GDT_Float32
    for bad in (1e39, -1e39, 1e300):
        with pytest.raises(reg.RegistrationError, match=r"cannot be stored in the SAR's Float32 "
                           r"data type \(at most 3.4028235e\+38 in size\)"):  # fmt: skip
            reg.warp_sar(float_sar, optical, fit, tmp_path / "f.tif", reg.WarpSettings(nodata=bad))
    assert not (tmp_path / "f.tif").exists()
    out = reg.warp_sar(float_sar, optical, fit, tmp_path / "f.tif",
                       reg.WarpSettings(nodata=-3.4028235e38, resampling="near"))  # fmt: skip
    values, valid, nodata = _warped(out)
    assert nodata == pytest.approx(-3.4028235e38, rel=1e-7)
    assert not valid.all() and (values[~valid] == np.float32(-3.4028235e38)).all()


def _sar_with_zeros(
    pair: Pair,
    path: Path,
    gdal_type: str,
    nodata: float | None = None,
    top: int = 200,
    bands: int = 1,
) -> tuple[Path, np.ndarray]:
    """The SAR's georeference, random values 0..top-1 (exact zeros among them), ``nodata``."""
    from osgeo import gdal

    ds = gdal.Translate(str(path), str(pair.sar), bandList=[1] * bands, noData="none",
                        outputType=gdal.GetDataTypeByName(gdal_type))  # fmt: skip
    data = np.random.default_rng(1).integers(0, top, (bands, ds.RasterYSize, ds.RasterXSize))
    for b in range(bands):
        band = ds.GetRasterBand(b + 1)
        band.WriteArray(data[b])
        if nodata is not None:
            band.SetNoDataValue(nodata)
    ds = band = None
    return path, data


def _warped(path: Path) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Values, validity (GDAL's mask band) and nodata value of a warped raster's band 1."""
    from osgeo import gdal

    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    return band.ReadAsArray(), band.GetMaskBand().ReadAsArray() > 0, band.GetNoDataValue()


@pytest.mark.parametrize(("gdal_type", "nodata"),
                         [("Byte", 255.0), ("UInt16", 65535.0), ("Int16", 32767.0),
                          ("Float32", math.nan)])  # fmt: skip
def test_a_sar_without_nodata_keeps_its_zero_pixels_as_data(
    pair: Pair, tmp_path: Path, gdal_type: str, nodata: float
) -> None:
    """A SAR raster with no nodata value whose valid pixels include exact zeros: the output's
    nodata was 0, and 733 of the 734 zeros (the one other is off the optical grid) became
    holes without a word (nearest resampling; any type). Now the nodata is one no SAR pixel
    has, said in the log, and every valid pixel is the warp's value: that of a warp with a
    nodata value the SAR cannot have (the values are 0..199)."""
    sar_path, data = _sar_with_zeros(pair, tmp_path / f"sar_{gdal_type}.tif", gdal_type)
    assert (data == 0).sum() == 734
    optical, sar = _open(pair.optical), _open(sar_path)
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    logged: list[str] = []
    warned: list[str] = []
    out = reg.warp_sar(sar, optical, fit, tmp_path / "r.tif", reg.WarpSettings(resampling="near"),
                       log=logged.append, warn=warned.append)  # fmt: skip
    ref = reg.warp_sar(sar, optical, fit, tmp_path / "ref.tif",
                       reg.WarpSettings(resampling="near", nodata=250.0))  # fmt: skip
    values, valid, out_nodata = _warped(out)
    ref_values, ref_valid, _ = _warped(ref)
    assert out_nodata == nodata or (math.isnan(nodata) and math.isnan(out_nodata))
    assert ref_valid.sum() == 146604 and ((ref_values == 0) & ref_valid).sum() == 733
    np.testing.assert_array_equal(valid, ref_valid)  # not one valid pixel lost
    np.testing.assert_array_equal(values[valid], ref_values[valid])
    if math.isnan(nodata):
        assert warned == []
        assert logged == ["output nodata NaN: the SAR raster has no nodata value, and NaN is no "
                          "valid pixel"]  # fmt: skip
    else:
        assert logged == [f"output nodata {nodata:g}: the SAR raster has no nodata value and 734 "
                          f"of its pixels are 0, kept as data ({nodata:g} lies outside its "
                          "values, 0 to 199)"]  # fmt: skip
        # the file cannot say whether its zeros are dark ground or an undeclared border
        assert len(warned) == 1 and warned[0].startswith(
            f"734 SAR pixels are 0 and the SAR raster declares no nodata value: kept as data in "
            f"r.tif (its nodata is {nodata:g}). If they are the SAR's no-data border"
        )
        assert warned[0].endswith("set NODATA to 0, or give the SAR its nodata first "
                                  "(gdal_edit.py -a_nodata 0)")  # fmt: skip


def test_the_default_nodata_of_a_sar_without_one() -> None:
    """Without zeros an integer SAR keeps 0 (the conventional border); a float SAR gets NaN,
    in a GeoPackage (which cannot record NaN) the type's lowest value; a signed SAR up to its
    type's maximum gets the minimum; one whose values are both negative and positive keeps 0
    only for nearest resampling (bilinear makes 0s between them)."""
    from osgeo import gdal_array

    def choose(arr: np.ndarray, driver: str = "GTiff", resampling: str = "near"):
        return reg.output_nodata(gdal_array.OpenArray(arr), None, driver, "r.tif", resampling)

    ones = np.ones((50, 60), np.uint16)
    assert choose(ones) == reg.OutputNodata(0.0, "output nodata 0: the SAR raster has no "
                                            "nodata value and none of its pixels is 0")  # fmt: skip
    assert choose(ones, resampling="cubic").value == 0.0
    assert math.isnan(choose(ones.astype(np.float32)).value)
    assert choose(ones.astype(np.float32), "GPKG").value == float(np.finfo(np.float32).min)
    signed = np.array([[0, 32767], [-5, 7]], np.int16)
    assert choose(signed).value == -32768.0 and choose(signed).collisions == 0
    assert choose(signed).warning.startswith("1 SAR pixel is 0 and ")  # kept as data
    assert choose(ones).warning is None
    straddling = np.array([[-3, 3], [-5, 7]], np.int16)
    assert choose(straddling).value == 0.0
    assert choose(straddling, resampling="bilinear").value == 32767.0
    assert "bilinear resampling makes 0s" in choose(straddling, resampling="bilinear").note


@pytest.mark.parametrize("resampling", ["near", "bilinear"])
def test_a_sar_using_every_value_of_its_type_is_warned_of_its_zeros(
    pair: Pair, tmp_path: Path, resampling: str
) -> None:
    """A Byte SAR without nodata using all of 0..255: no value outside its data exists, so
    the nodata stays 0; the warning names how many valid pixels that hides (the true count),
    what the warp makes of them and the way out. Nearest copies them into holes; GDAL 3.6's
    bilinear writes a warped 0 as 1 and leaves none (the warning said "holes" for both). Read
    in strips of 1000 pixels here (the scan never loads the raster)."""
    from osgeo import gdal

    sar_path, data = _sar_with_zeros(pair, tmp_path / "sar8.tif", "Byte", top=256, bands=2)
    optical, sar = _open(pair.optical), _open(sar_path)
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    warned: list[str] = []
    settings = reg.WarpSettings(resampling=resampling)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reg, "SCAN_PIXELS", 1000)
        out = reg.warp_sar(sar, optical, fit, tmp_path / "r.tif", settings, warn=warned.append)
    zeros = int((data == 0).sum())
    assert zeros == 1144 and data.size == 294912
    values, valid, nodata = _warped(out)
    assert nodata == 0.0
    # the footprint: the same grid and kernel over a SAR without a 0 or a 250
    ones, _ = _sar_with_zeros(pair, tmp_path / "ones.tif", "Byte", top=200)
    gdal.Translate(str(tmp_path / "ones1.tif"), str(ones), scaleParams=[[0, 199, 1, 200]])
    footprint = _warped(reg.warp_sar(_open(tmp_path / "ones1.tif"), optical, fit,
                                     tmp_path / "f.tif", settings))[1]  # fmt: skip
    written = reg.nodata_collision_value(gdal.GDT_Byte, 0.0, resampling)
    holes = int((footprint & ~valid).sum())
    if written is None:
        assert resampling == "near" and holes == 579  # the zeros of band 1 on the output grid
        effect = ("wherever they fall on the output they are written as nodata, holes in r.tif "
                  "that no reader can tell from the area outside the SAR")  # fmt: skip
    else:
        assert written == 1.0 and holes == 0 and np.array_equal(valid, footprint)
        effect = ("r.tif keeps no holes for them: wherever the warped value would be 0, GDAL's "
                  "bilinear warp writes 1 instead, data one step off")  # fmt: skip
    assert warned == [f"{zeros} valid SAR pixel values (of 294912) are 0, the output nodata: "
                      f"{effect}. The SAR raster has no nodata value and its Byte values span "
                      "the whole type (0 to 255), so no nodata value lies outside them. If its "
                      "zeros are no data, set the SAR's nodata value to 0; else convert the SAR "
                      "to a wider type first (gdal_translate -ot Int32 or Float32)"]  # fmt: skip


def test_a_given_nodata_among_valid_sar_pixels_is_warned_with_their_count(
    pair: Pair, tmp_path: Path
) -> None:
    """NODATA 5 given for a SAR whose valid pixels include 5s: they become holes, as asked,
    but said, with their true count (over both bands) and a value that would not collide; of
    a SAR with its own nodata value only its valid pixels are counted."""
    sar_path, data = _sar_with_zeros(pair, tmp_path / "sar16.tif", "UInt16", bands=2)
    optical = _open(pair.optical)
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    given = reg.WarpSettings(resampling="near", nodata=5.0)
    warned: list[str] = []
    out = reg.warp_sar(_open(sar_path), optical, fit, tmp_path / "r.tif", given,
                       warn=warned.append)  # fmt: skip
    fives = int((data == 5).sum())
    assert fives == 1379
    values, valid, nodata = _warped(out)
    assert nodata == 5.0 and ((values == 5) & ~valid).sum() > 0.95 * (data[0] == 5).sum()
    assert warned == [f"{fives} valid SAR pixel values (of 294912) equal the output nodata 5 "
                      "(NODATA): wherever they fall on the output they are written as nodata, "
                      "holes in r.tif that no reader can tell from the area outside the SAR. Set "
                      "NODATA to a value no SAR pixel has (e.g. 65535, outside its values 0 to "
                      "199), or leave it empty for one chosen so"]  # fmt: skip
    own, own_data = _sar_with_zeros(pair, tmp_path / "own.tif", "UInt16", nodata=3.0)
    warned.clear()
    reg.warp_sar(_open(own), optical, fit, tmp_path / "o.tif", given, warn=warned.append)
    own_fives = int((own_data == 5).sum())
    assert len(warned) == 1 and warned[0].startswith(
        f"{own_fives} valid SAR pixel values (of {int((own_data != 3).sum())}) equal"
    )
    assert warned[0].endswith("or leave it empty (the SAR's own nodata value)")
    warned.clear()
    reg.warp_sar(_open(own), optical, fit, tmp_path / "n.tif", reg.WarpSettings(nodata=250.0),
                 warn=warned.append)  # fmt: skip
    assert warned == []  # no pixel is 250


@pytest.mark.parametrize("resampling", ["near", "bilinear", "cubic", "average"])
def test_the_nodata_warning_says_what_the_warp_makes_of_the_pixels_equal_to_it(
    pair: Pair, tmp_path: Path, resampling: str
) -> None:
    """NODATA 5 for a UInt16 SAR whose valid pixels include 5s. The warning said "holes" for
    every kernel, but GDAL 3.6's interpolating kernels write a warped 5 as 4 and leave no
    hole; only nearest copies a 5 into a hole. What this GDAL does is probed
    (nodata_collision_value), said, and here checked on the output against a warp whose
    nodata no pixel has: holes exactly where it says holes, else the written value exactly
    where the warped value is 5; every other pixel unchanged."""
    from osgeo import gdal

    sar_path, data = _sar_with_zeros(pair, tmp_path / "sar16.tif", "UInt16")
    optical, sar = _open(pair.optical), _open(sar_path)
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    warned: list[str] = []
    out = reg.warp_sar(sar, optical, fit, tmp_path / "r.tif",
                       reg.WarpSettings(resampling=resampling, nodata=5.0),
                       warn=warned.append)  # fmt: skip
    ref = reg.warp_sar(sar, optical, fit, tmp_path / "ref.tif",
                       reg.WarpSettings(resampling=resampling, nodata=250.0))  # fmt: skip
    values, valid, _ = _warped(out)
    ref_values, ref_valid, _ = _warped(ref)
    fives = ref_valid & (ref_values == 5)  # where the warped value is the nodata
    assert fives.sum() == {"near": 658, "bilinear": 20, "cubic": 216, "average": 22}[resampling]
    rest = ref_valid & ~fives
    assert valid[rest].all() and np.array_equal(values[rest], ref_values[rest])
    written = reg.nodata_collision_value(gdal.GDT_UInt16, 5.0, resampling)
    assert len(warned) == 1 and warned[0].startswith(
        f"{int((data == 5).sum())} valid SAR pixel values (of 147456) equal the output nodata 5 "
        "(NODATA): "
    )
    if written is None:
        assert resampling == "near"  # GDAL copies the pixel: it cannot tell it from nodata
        assert not valid[fives].any() and np.array_equal(valid, rest)
        assert (
            "wherever they fall on the output they are written as nodata, holes in r.tif"
            in (warned[0])
        )
    else:
        assert resampling != "near" and written in (4.0, 6.0)  # GDAL 3.6: 4
        assert np.array_equal(valid, ref_valid) and (values[fives] == written).all()
        assert (f"r.tif keeps no holes for them: wherever the warped value would be 5, GDAL's "
                f"{resampling} warp writes {written:g} instead, data one step off. Set NODATA to "
                "a value no SAR pixel has (e.g. 65535") in warned[0]  # fmt: skip


@pytest.mark.parametrize("resampling", ["cubic", "lanczos"])
def test_kernels_that_overshoot_to_the_type_maximum_leave_no_holes(
    pair: Pair, tmp_path: Path, resampling: str
) -> None:
    """A Byte SAR of sharp 5/245 edges with a few zeros and no nodata: the output nodata is
    255, the type's maximum. Cubic and lanczos overshoot past 255 next to the edges and clamp
    there; GDAL writes those as 254 (as any warped value equal to the nodata,
    nodata_collision_value), so not one footprint pixel is a hole."""
    from osgeo import gdal

    path = tmp_path / "edges.tif"
    ds = gdal.Translate(str(path), str(pair.sar), noData="none", outputType=gdal.GDT_Byte)
    rng = np.random.default_rng(2)
    cells = rng.random((ds.RasterYSize // 4 + 1, ds.RasterXSize // 4 + 1)) < 0.5
    edges = np.kron(cells, np.ones((4, 4), bool))[: ds.RasterYSize, : ds.RasterXSize]
    data = np.where(edges, 245, 5).astype(np.uint8)
    data[::97, ::89] = 0  # zeros kept as data: 0 cannot be the nodata
    ds.GetRasterBand(1).WriteArray(data)
    ds = None
    flat = tmp_path / "flat.tif"  # the footprint: the same grid and kernel, no 0, no edges
    gdal.Translate(str(flat), str(path), scaleParams=[[0, 255, 100, 100]])
    optical = _open(pair.optical)
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    settings = reg.WarpSettings(resampling=resampling)
    values, valid, nodata = _warped(reg.warp_sar(_open(path), optical, fit, tmp_path / "r.tif",
                                                 settings))  # fmt: skip
    footprint = _warped(reg.warp_sar(_open(flat), optical, fit, tmp_path / "f.tif", settings))[1]
    assert nodata == 255.0 and footprint.sum() > 140000
    assert np.array_equal(valid, footprint)  # no holes
    assert reg.nodata_collision_value(gdal.GDT_Byte, 255.0, resampling) == 254.0
    # a Float32 copy of the SAR warps 16,422 (cubic) and 21,272 (lanczos) of them to >= 254.5
    assert (values[valid] == 254).sum() > 16000  # the clamped overshoots, one step off


@pytest.mark.parametrize("ext", ["nc", "gpkg"])
def test_a_rotated_optical_grid_is_refused_for_north_up_only_formats(
    pair: Pair, tmp_path: Path, ext: str
) -> None:
    """An optical grid rotated by 10 degrees: netCDF stored the output with north-up
    coordinate vectors that GDAL and QGIS read instead of its rotated geotransform (the far
    corner 94 px off, no warning); a GeoPackage failed at the warp. Now both are refused
    before any work, and a .tif keeps the rotation."""
    from osgeo import gdal

    rotated = tmp_path / "opt_rot.tif"
    gt = write_rotated(rotated, pair.optical, 10.0)
    sar16 = tmp_path / "sar16.tif"  # a type a .gpkg holds in one band
    gdal.Translate(str(sar16), str(pair.sar), outputType=gdal.GDT_UInt16,
                   scaleParams=[[-20, 0, 1, 60000]])  # fmt: skip
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    refused = (rf"cannot write r\.{ext}: the (netCDF|GPKG) format stores only north-up grids, "
               r"and the optical raster's grid, which the output takes, is rotated \(10 "
               r"degrees\); write a \.tif instead")  # fmt: skip
    with pytest.raises(ValueError, match=refused):
        reg.warp_sar(_open(sar16), _open(rotated), fit, tmp_path / f"r.{ext}", reg.WarpSettings())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt_rot.tif", "sar16.tif"]
    out = reg.warp_sar(_open(sar16), _open(rotated), fit, tmp_path / "r.tif", reg.WarpSettings())
    assert gdal.Open(str(out)).GetGeoTransform() == pytest.approx(gt)
    # a north-up grid is written as before
    north = reg.warp_sar(_open(sar16), _open(pair.optical), fit, tmp_path / f"n.{ext}",
                         reg.WarpSettings())  # fmt: skip
    assert gdal.Open(str(north)).GetGeoTransform() == pytest.approx(
        gdal.Open(str(pair.optical)).GetGeoTransform()
    )


def test_a_sar_whose_bands_differ_in_type_is_refused(pair: Pair, tmp_path: Path) -> None:
    """A VRT of a Byte layover mask and a Float32 dB band: the output took band 1's Byte for
    both, the dB values (-17.5 to -15) cut to 0 without a word. Now refused, with the ways
    out; nothing is written."""
    from osgeo import gdal

    mask = tmp_path / "mask.tif"
    gdal.Translate(str(mask), str(pair.sar), outputType=gdal.GDT_Byte, scaleParams=[[]])
    vrt = write_band_stack(tmp_path / "stack.vrt",
                           [(mask, gdal.GDT_Byte), (pair.sar, gdal.GDT_Float32)])  # fmt: skip
    sar = _open(vrt)
    assert sar.gdal_types == ("Byte", "Float32")
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    refused = (r"the SAR raster stack\.vrt has bands of different data types \(band 1 Byte, "
               r"band 2 Float32\): .*`gdal_translate -b 2 stack\.vrt stack_float32\.tif`\) or "
               r"convert it to Float32 first \(`gdal_translate -ot Float32 stack\.vrt "
               r"stack_float32\.tif`\)")  # fmt: skip
    with pytest.raises(ValueError, match=refused):
        reg.warp_sar(sar, _open(pair.optical), fit, tmp_path / "r.tif", reg.WarpSettings())
    assert not (tmp_path / "r.tif").exists()


def _ramp_sar(pair: Pair, path: Path) -> Path:
    """The pair's SAR grid, band 1 holding each pixel centre's x, band 2 its y (SAR px)."""
    from osgeo import gdal

    src = gdal.Open(str(pair.sar))
    n = src.RasterXSize
    ds = gdal.GetDriverByName("GTiff").Create(str(path), n, n, 2, gdal.GDT_Float32)
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    centres = np.arange(n, dtype=np.float32) + 0.5
    ds.GetRasterBand(1).WriteArray(np.tile(centres, (n, 1)))
    ds.GetRasterBand(2).WriteArray(np.tile(centres[:, None], (1, n)))
    ds = None
    return path


@pytest.mark.parametrize("resampling", ["lanczos", "cubic"])
@pytest.mark.parametrize("sar_px_per_output_px", [1.02, 2.0])
def test_a_kernel_this_gdal_misplaces_when_reducing_the_resolution_is_not_used_so(
    pair: Pair, tmp_path: Path, resampling: str, sar_px_per_output_px: float
) -> None:
    """GDAL 3.6 places lanczos' widened kernel up to half a SAR pixel off wherever the warp
    reduces the resolution (GDAL issue 11042): onto a grid 2 % coarser than the SAR the output
    came out -0.49 SAR px off in x and y (median), at twice the SAR's pixel -0.50 px, no word.
    Measured on a SAR whose pixels hold their own coordinates, through an affine fit of that
    scale: now the kernel is used unwidened down to 0.9 output pixels per SAR pixel (placed
    right), and below that the warp is refused; cubic is untouched. Where this GDAL places
    the kernel right (kernel_shift), nothing changes."""
    from osgeo import gdal

    k = sar_px_per_output_px
    src = np.random.default_rng(5).uniform(20, pair.size - 20, (40, 2))
    ties = reg.TiePoints(src, src / k + [3.0, -2.0], np.ones(len(src), bool), np.arange(len(src)))
    fit = reg.fit_tie_points(ties, "affine", 0.5, 8, np.random.default_rng(0))
    sar, optical = _open(_ramp_sar(pair, tmp_path / "ramp.tif")), _open(pair.optical)
    misplaced = resampling == "lanczos" and max(map(abs, reg.kernel_shift("lanczos"))) > 0.05
    logged: list[str] = []
    settings = reg.WarpSettings(resampling=resampling)
    if misplaced and k > 1 / reg.UNWIDENED_MIN_SCALE:
        with pytest.raises(reg.RegistrationError, match=r"RESAMPLING lanczos would shift r\.tif "
                           r"by up to half a SAR pixel: this GDAL \(.*\) misplaces the lanczos "
                           r"kernel .*here 2 x 2 SAR pixels make an output pixel\. No output "
                           r"was written\. Choose RESAMPLING cubic or average"):  # fmt: skip
            reg.warp_sar(sar, optical, fit, tmp_path / "r.tif", settings, log=logged.append)
        assert not (tmp_path / "r.tif").exists()
        return
    out = gdal.Open(str(reg.warp_sar(sar, optical, fit, tmp_path / "r.tif", settings,
                                     log=logged.append)))  # fmt: skip
    got_x, got_y = (out.GetRasterBand(b).ReadAsArray() for b in (1, 2))
    cols, rows = np.meshgrid(np.arange(got_x.shape[1]) + 0.5, np.arange(got_x.shape[0]) + 0.5)
    want_x, want_y = (cols - 3.0) * k, (rows + 2.0) * k  # the fit's inverse
    inside = (want_x > 10) & (want_x < pair.size - 10) & (want_y > 10) & (want_y < pair.size - 10)
    err = np.median(got_x[inside] - want_x[inside]), np.median(got_y[inside] - want_y[inside])
    assert max(map(abs, err)) < 0.02, err  # lanczos on GDAL 3.6 was -0.49 px
    unwidened = [line for line in logged if "kernel used unwidened" in line]
    assert len(unwidened) == int(misplaced)
    if misplaced:
        assert unwidened[0].startswith("lanczos kernel used unwidened (XSCALE 1, YSCALE 1 "
                                       "instead of 0.9804, 0.9804)")  # fmt: skip


def test_an_int16_geopackage_gets_the_one_nodata_it_records(pair: Pair, tmp_path: Path) -> None:
    """GDAL's GeoPackage records -32768 as an Int16 raster's nodata whatever it is given:
    NODATA 5000 (and the default 32767, and a SAR's own 0) was logged as the output's nodata
    while the file declared -32768, and the area outside the SAR, filled with 5000, read as
    data. Now a NODATA other than -32768 is refused, and without one the output's is -32768,
    said as such; the outside reads as nodata."""
    from osgeo import gdal

    sar16 = tmp_path / "sar16.tif"
    gdal.Translate(str(sar16), str(pair.sar), outputType=gdal.GDT_Int16,
                   scaleParams=[[-20, 0, 1, 20000]], noData="none")  # fmt: skip
    optical = _open(pair.optical)
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    assert reg.format_nodata("GPKG", gdal.GDT_Int16) == -32768.0
    assert reg.format_nodata("GPKG", gdal.GDT_UInt16) is None
    assert reg.format_nodata("GTiff", gdal.GDT_Int16) is None
    with pytest.raises(reg.RegistrationError, match=r"output nodata 5000 cannot be stored in "
                       r"r\.gpkg: the GPKG format records -32768 as the nodata of a Int16 "
                       r"raster whatever it is given, .*give NODATA -32768, leave it empty, or "
                       r"write a \.tif"):  # fmt: skip
        reg.warp_sar(_open(sar16), optical, fit, tmp_path / "r.gpkg", reg.WarpSettings(nodata=5000))
    assert not (tmp_path / "r.gpkg").exists()
    ref_valid = _warped(reg.warp_sar(_open(sar16), optical, fit, tmp_path / "ref.tif",
                                     reg.WarpSettings(nodata=-32768)))[1]  # fmt: skip
    assert 0 < ref_valid.sum() < ref_valid.size  # the SAR leaves part of the grid empty
    for nodata in (None, -32768.0):
        logged: list[str] = []
        out = reg.warp_sar(_open(sar16), optical, fit, tmp_path / f"r{nodata}.gpkg",
                           reg.WarpSettings(nodata=nodata), log=logged.append)  # fmt: skip
        values, valid, declared = _warped(out)
        assert declared == -32768.0 and np.array_equal(valid, ref_valid)
        assert (values[~valid] == -32768).all()
        assert logged == ["output nodata -32768 (the only nodata a GPKG Int16 raster records)"]


def test_the_gdal_probes_answer_under_gdal_exceptions_too(monkeypatch) -> None:
    """QGIS 3.38+ turns gdal.UseExceptions on: the probes (a GeoPackage that cannot hold
    Int32, whose temporary file then does not exist to unlink) still answer, as without."""
    from osgeo import gdal

    answers = []
    was = gdal.GetUseExceptions()
    for on in (False, True):
        for cache in ("_FORMAT_NODATA", "_COLLISION_VALUES", "_KERNEL_SHIFTS"):
            monkeypatch.setattr(reg, cache, {})
        (gdal.UseExceptions if on else gdal.DontUseExceptions)()
        try:
            answers.append((
                reg.format_nodata("GPKG", gdal.GDT_Int16),
                reg.format_nodata("GPKG", gdal.GDT_Int32),
                reg.nodata_collision_value(gdal.GDT_UInt16, 5.0, "bilinear"),
                reg.kernel_shift("cubic"),
            ))  # fmt: skip
        finally:
            (gdal.UseExceptions if was else gdal.DontUseExceptions)()
    assert answers[0] == answers[1]
    assert answers[0][1] is None and answers[0][3] == (0.0, 0.0)


def test_a_sar_with_its_own_nodata_keeps_it(pair: Pair, tmp_path: Path) -> None:
    """Its nodata pixels are no data: its nodata value is the output's, zeros or not, and it
    is not scanned (the float pair's -9999 stays, it does not become NaN)."""
    optical = _open(pair.optical)
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    sar_path, data = _sar_with_zeros(pair, tmp_path / "sar16.tif", "UInt16", nodata=0.0)
    for path, nodata in ((sar_path, 0.0), (pair.sar, -9999.0)):
        logged: list[str] = []
        warned: list[str] = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(reg, "_scan_valid", None)  # a scan would fail
            out = reg.warp_sar(_open(path), optical, fit, tmp_path / "r.tif",
                               reg.WarpSettings(resampling="near"), log=logged.append,
                               warn=warned.append)  # fmt: skip
        values, valid, out_nodata = _warped(out)
        assert out_nodata == nodata and warned == []
        assert logged == [f"output nodata {nodata:g} (the SAR's nodata value)"]


#: SAR pixels of no-data frame added on each side of the pair's SAR (a GRD scene's border)
FRAME_PX = 300


def _framed_sar(pair: Pair, path: Path, inner_zeros: int) -> tuple[Path, np.ndarray]:
    """A Byte SAR ``FRAME_PX`` larger on each side than the pair's (same pixel grid): 0 in
    the outer frame (an undeclared no-data border), 1..199 within 60 px of the pair's SAR,
    ``inner_zeros`` zeros in its middle. No nodata value."""
    from osgeo import gdal

    src = gdal.Open(str(pair.sar))
    g, p = src.GetGeoTransform(), FRAME_PX
    n = pair.size + 2 * p
    rng = np.random.default_rng(2)
    data = np.zeros((n, n), np.uint8)
    inner = slice(p - 60, p + pair.size + 60)
    data[inner, inner] = rng.integers(1, 200, data[inner, inner].shape)
    flat = rng.choice(200 * 200, inner_zeros, replace=False)
    data[p + 100 + flat // 200, p + 100 + flat % 200] = 0
    ds = gdal.GetDriverByName("GTiff").Create(str(path), n, n, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((g[0] - p * (g[1] + g[2]), g[1], g[2], g[3] - p * (g[4] + g[5]), g[4],
                        g[5]))  # fmt: skip
    ds.SetProjection(src.GetProjection())
    ds.GetRasterBand(1).WriteArray(data)
    ds = None
    return path, data


@pytest.mark.parametrize("inner_zeros", [0, 37])
def test_the_output_nodata_counts_only_sar_pixels_that_reach_the_output(
    pair: Pair, tmp_path: Path, inner_zeros: int
) -> None:
    """A SAR scene much larger than the optical, with a no-data frame of zeros outside the
    optical's footprint: the whole scene was scanned, its 714,240 frame zeros counted as
    valid pixels kept as data, and the nodata moved to 255 with a warning about a border that
    never reaches the output. Now only the SAR pixels the warp can read are scanned: without
    zeros there, the nodata stays 0 without a warning; with 37, they alone are counted."""
    sar_path, data = _framed_sar(pair, tmp_path / f"framed{inner_zeros}.tif", inner_zeros)
    assert int((data == 0).sum()) == 714240 + inner_zeros
    ties = _true_ties(pair)
    ties = reg.TiePoints(ties.src_px + FRAME_PX, ties.dst_px, ties.accepted, ties.ids)
    fit = reg.fit_tie_points(ties, "affine", 0.5, 8, np.random.default_rng(0))
    optical, sar = _open(pair.optical), _open(sar_path)
    windows: list = []
    scan = reg._scan_valid

    def recorded(ds, value, *args):
        windows.append(args[1] if len(args) > 1 else None)
        return scan(ds, value, *args)

    logged: list[str] = []
    warned: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reg, "_scan_valid", recorded)
        out = reg.warp_sar(sar, optical, fit, tmp_path / "r.tif",
                           reg.WarpSettings(resampling="near"), log=logged.append,
                           warn=warned.append)  # fmt: skip
    ref = reg.warp_sar(sar, optical, fit, tmp_path / "ref.tif",
                       reg.WarpSettings(resampling="near", nodata=250.0))  # fmt: skip
    values, valid, nodata = _warped(out)
    ref_values, ref_valid, _ = _warped(ref)
    np.testing.assert_array_equal(valid, ref_valid)  # not one valid pixel lost
    np.testing.assert_array_equal(values[valid], ref_values[valid])
    where = " where it falls on the output"
    if not inner_zeros:
        assert nodata == 0.0 and warned == []
        assert logged == ["output nodata 0: the SAR raster has no nodata value and none of its "
                          f"pixels{where} is 0"]  # fmt: skip
        assert int(((ref_values == 0) & ref_valid).sum()) == 0
    else:
        assert nodata == 255.0
        assert logged == [f"output nodata 255: the SAR raster has no nodata value and 37 of its "
                          f"pixels{where} are 0, kept as data (255 lies outside its "
                          f"values{where}, 0 to 199)"]  # fmt: skip
        assert len(warned) == 1 and warned[0].startswith(
            f"37 SAR pixels{where} are 0 and the SAR raster declares no nodata value: kept as "
            "data in r.tif (its nodata is 255)."
        )
        assert int(((values == 0) & valid).sum()) > 30  # the zeros are data in the output
    ((x0, y0, x1, y1),) = windows
    lo, hi = FRAME_PX - 60, FRAME_PX + pair.size + 60  # inside the 1..199 square
    assert lo <= x0 < FRAME_PX and lo <= y0 < FRAME_PX and hi >= x1 and hi >= y1
    # a coarser output grid: its kernel reads further out (4 output pixels of 10)
    size = (pair.size, pair.size)
    wide = reg.scan_window(fit.transform, sar.width, sar.height, size, ties.src_px, (0.1, 0.1))
    assert wide is not None and wide[0] <= x0 - 36 and wide[2] >= x1 + 36


@pytest.mark.parametrize(
    ("kind", "bend_px"), [("affine", 0.0), ("poly3", 40.0), ("poly2", 40.0), ("tps", 40.0)]
)
def test_the_scan_window_holds_every_sar_pixel_the_warp_reads(
    pair: Pair, tmp_path: Path, kind: str, bend_px: float
) -> None:
    """The nodata scan reads only scan_window's SAR pixels; a SAR pixel the warp reads outside
    it would escape the count. Measured with a SAR whose pixels hold their own index (a
    nearest warp writes which SAR pixel each output pixel read), on the framed 984^2 px scene
    with fits that bend by up to 40 px (tie points off the pair's affine by a cubic, fitted by
    a poly3, by a poly2 that cannot follow it, and by a spline): every pixel read lies at
    least SCAN_KERNEL_OUT_PX inside the window, room for lanczos' 3 px."""
    from osgeo import gdal

    p, n = FRAME_PX, pair.size + 2 * FRAME_PX
    g = gdal.Open(str(pair.sar)).GetGeoTransform()
    path = tmp_path / "ids.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), n, n, 1, gdal.GDT_Int32)
    ds.SetGeoTransform((g[0] - p * (g[1] + g[2]), g[1], g[2], g[3] - p * (g[4] + g[5]), g[4],
                        g[5]))  # fmt: skip
    ds.SetProjection(gdal.Open(str(pair.sar)).GetProjection())
    ds.GetRasterBand(1).WriteArray(np.arange(n * n, dtype=np.int32).reshape(n, n))
    ds = None
    src = np.random.default_rng(5).uniform(20, pair.size - 20, (60, 2))
    u = (src - pair.size / 2) / (pair.size / 2)
    bend = np.stack([u[:, 0] ** 3 + u[:, 1] ** 2, u[:, 1] ** 3 - u[:, 0] * u[:, 1]], 1)
    ties = reg.TiePoints(src + p, pair.sar_to_optical(src) + bend_px * bend,
                         np.ones(len(src), bool), np.arange(len(src)))  # fmt: skip
    fit = reg.fit_tie_points(ties, kind, 3.0, 8, np.random.default_rng(0))
    windows: list = []
    scan = reg.scan_window

    def recorded(*args):
        windows.append(scan(*args))
        return windows[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reg, "scan_window", recorded)
        out = reg.warp_sar(_open(path), _open(pair.optical), fit, tmp_path / "r.tif",
                           reg.WarpSettings(resampling="near", nodata=-1.0))  # fmt: skip
    values, valid, _ = _warped(out)
    assert valid.all()  # the optical lies inside the SAR scene
    read = values[valid]
    x, y = read % n, read // n
    ((x0, y0, x1, y1),) = windows  # not the whole SAR
    assert (x1 - x0) * (y1 - y0) < 0.45 * n * n
    slack = min(x.min() - x0, y.min() - y0, x1 - 1 - x.max(), y1 - 1 - y.max())
    assert slack >= reg.SCAN_KERNEL_OUT_PX, (kind, slack)  # measured: 21 (poly2) to 37 px


def test_tps_is_judged_by_its_leave_one_out_rmse_and_warped_through_its_points(
    pair: Pair, tmp_path: Path
) -> None:
    """The spline's own RMSE is 0 by construction; the leave-one-out RMSE sees the noise. The
    warp uses the fit's control points, so a SAR raster padded with nodata (larger, same
    pixels) gives the same output; through a grid over the whole raster it drifted."""
    from osgeo import gdal

    ties = _true_ties(pair, 40)
    ties.dst_px += np.random.default_rng(2).normal(0, 0.3, ties.dst_px.shape)  # match noise
    fit = reg.fit_tie_points(ties, "tps", 1.5, 8, np.random.default_rng(0))
    assert fit.rmse_px < 1e-6
    assert 0.3 < fit.loo_rmse_px < 1.5  # 0.42 px of noise per point, and more held out
    affine = reg.fit_tie_points(ties, "affine", 1.5, 8, np.random.default_rng(0))
    assert affine.loo_rmse_px < fit.loo_rmse_px  # the truth is affine: the spline overfits
    assert abs(affine.loo_rmse_px - affine.rmse_px) < 0.1
    optical = _open(pair.optical)
    arr, ds = gdal.Open(str(pair.sar)).ReadAsArray(), gdal.Open(str(pair.sar))
    padded = np.full((arr.shape[0] * 3, arr.shape[1] * 3), -9999.0, np.float32)
    padded[: arr.shape[0], : arr.shape[1]] = arr
    big = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "big.tif"), padded.shape[1],
                                               padded.shape[0], 1, gdal.GDT_Float32)  # fmt: skip
    big.SetGeoTransform(ds.GetGeoTransform())
    big.SetProjection(ds.GetProjection())
    big.GetRasterBand(1).SetNoDataValue(-9999.0)
    big.GetRasterBand(1).WriteArray(padded)
    big = ds = None
    settings = reg.WarpSettings(nodata=-9999.0)
    a = reg.warp_sar(_open(pair.sar), optical, fit, tmp_path / "a.tif", settings)
    b = reg.warp_sar(_open(tmp_path / "big.tif"), optical, fit, tmp_path / "b.tif", settings)
    wa, wb = gdal.Open(str(a)).ReadAsArray(), gdal.Open(str(b)).ReadAsArray()
    both = (wa != -9999.0) & (wb != -9999.0)
    assert both.mean() > 0.8
    np.testing.assert_allclose(wa[both], wb[both], atol=1e-4)


def test_a_degenerate_layout_for_the_kind_is_named(pair: Pair) -> None:
    """Well-spread inliers on three rows fit a poly2 but not a poly3: the refusal said "only
    45 inlier tie points were found, 14 are needed"."""
    xs = np.linspace(20, pair.size - 20, 15)
    src = np.array([(x, y) for y in (60.0, 190.0, 320.0) for x in xs])
    ties = reg.TiePoints(src, pair.sar_to_optical(src), np.ones(len(src), bool),
                         np.arange(len(src)))  # fmt: skip
    reg.fit_tie_points(ties, "poly2", 1.0, 8, np.random.default_rng(0))
    with pytest.raises(reg.RegistrationError, match=r"the 45 inlier tie points do not determine "
                       r"a 'poly3' transform: they lie in a degenerate layout"):  # fmt: skip
        reg.fit_tie_points(ties, "poly3", 1.0, 8, np.random.default_rng(0))


def test_a_duplicated_tie_point_is_named_for_a_spline(pair: Pair) -> None:
    """Two tie points at one SAR position: the interpolating spline is not defined there, and
    the refusal blamed only 'a degenerate layout (e.g. on a few lines or in a corner)'."""
    rng = np.random.default_rng(3)
    src = rng.uniform(20, pair.size - 20, (30, 2))
    src = np.vstack([src, src[:1]])  # a KEYPOINTS layer with one point twice
    ties = reg.TiePoints(src, pair.sar_to_optical(src), np.ones(len(src), bool),
                         np.arange(len(src)))  # fmt: skip
    with pytest.raises(reg.RegistrationError, match=r"'tps' transform: .* or two of them sit "
                       r"at the same SAR position"):  # fmt: skip
        reg.fit_tie_points(ties, "tps", 1.0, 8, np.random.default_rng(0))


def test_canceled_warp_leaves_nothing(pair: Pair, tmp_path: Path) -> None:
    optical, sar = _open(pair.optical), _open(pair.sar)
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    with pytest.raises(reg.Canceled):
        reg.warp_sar(
            sar, optical, fit, tmp_path / "r.tif", reg.WarpSettings(), is_canceled=lambda: True
        )
    assert list(tmp_path.iterdir()) == []


# --- end to end with the twin model ---------------------------------------------------------


def _match(pair: Pair, twin: Path):
    optical, sar = _open(pair.optical), _open(pair.sar)
    ms = reg.MatchSettings(
        model_path=str(twin),
        template_size=64,
        search_size=96,
        keep_maps=True,
        confidence_threshold=0.0,  # the twin's confidence is not calibrated
    )
    matcher = reg.load_matcher(ms)
    kps = reg.detect_keypoints_tiled(optical, reg.DetectSettings(min_distance_px=24, border_px=56))
    return optical, sar, reg.compute_matches(optical, 1, sar, 1, kps.xy_px, matcher, ms)


def test_pipeline_recovers_the_true_affine(pair: Pair, twin: Path, tmp_path: Path) -> None:
    optical, sar, result = _match(pair, twin)
    ties = reg.TiePoints.from_records(result.records)
    fit = reg.fit_tie_points(ties, "affine", 1.5, 8, np.random.default_rng(0), half_range=16)
    grid = np.stack(np.meshgrid(np.linspace(0, 384, 5), np.linspace(0, 384, 5)), -1)
    grid = grid.reshape(-1, 2)
    err = np.abs(fit.transform.apply(grid) - pair.sar_to_optical(grid)).max()
    assert err < 1.0, f"max transform error {err:.2f} px"
    assert fit.inliers.sum() >= 8 and fit.rmse_px < 1.0
    maps = reg.write_map_rasters(tmp_path / "maps", result.records, result.maps, optical, 96, 64)
    assert maps and all(p.stat().st_size > 0 for p in maps)


def test_sizes_must_equal_the_contract(twin: Path) -> None:
    with pytest.raises(ValueError, match="set them to 64 and 96"):
        reg.load_matcher(reg.MatchSettings(model_path=str(twin)))


@pytest.mark.parametrize("seed", [11, 12])
def test_unrelated_scenes_are_refused(tmp_path: Path, twin: Path, seed: int) -> None:
    pair = write_pair(tmp_path, seed=seed, unrelated=True)
    _, _, result = _match(pair, twin)
    ties = reg.TiePoints.from_records(result.records)
    with pytest.raises(reg.RegistrationError, match="Registration refused"):
        reg.fit_tie_points(ties, "affine", 1.5, 8, np.random.default_rng(0), half_range=16)


# --- report --------------------------------------------------------------------------------------


def _report_data() -> rep.ReportData:
    rng = np.random.default_rng(0)
    tp = np.column_stack([rng.uniform(0, 300, (20, 2)), rng.normal(0, 0.4, (20, 2))])
    return rep.ReportData(
        "R",
        {"RMSE (optical px)": 0.4321, "RANSAC inliers": 17},
        tp,
        np.arange(20) < 17,
        maps=[(3, rng.random((33, 33)))],
    )


def test_report_is_self_contained(tmp_path: Path) -> None:
    text = rep.write_report(tmp_path / "r.html", _report_data()).read_text(encoding="utf-8")
    assert "0.432" in text and "RANSAC inliers" in text
    assert text.count("data:image/png;base64,") == 2  # residual plot + one map
    assert 'src="http' not in text


def test_report_without_matplotlib_degrades_to_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    text = rep.render_html(_report_data())
    assert "data:image/png" not in text and "pip install matplotlib" in text
    assert text.count("<tr>") == 2 + 21  # summary rows + tie point header and rows


def test_mask_window_burns_the_polygons_without_a_gdal_warning() -> None:
    """A 40 x 40 square of a 64 px tile is burnt exactly, and quietly (GDAL warned "Failed to
    fetch spatial reference on layer mask" once per tile)."""
    from osgeo import gdal

    said: list[str] = []
    gdal.PushErrorHandler(lambda _c, _n, msg: said.append(str(msg)))
    try:
        s = reg.DetectSettings(mask_wkt=("POLYGON((10 -10, 50 -10, 50 -50, 10 -50, 10 -10))",))
        mask = reg._mask_window(s, (0, 1, 0, 0, 0, -1), (0, 0, 64, 64))
    finally:
        gdal.PopErrorHandler()
    assert mask.sum() == 1600 and mask[10:50, 10:50].all()
    assert said == []


@pytest.mark.parametrize(("search", "template"), [(96, 64), (97, 64)])
def test_map_rasters_put_the_peak_at_the_found_position(tmp_path: Path, search, template):
    """A map pixel's centre is keypoint + (j - (S - T) // 2) k, the offset matching reports
    (dx = (peak - (S - T) // 2) k); with an odd S - T the maps were half a pixel off."""
    from types import SimpleNamespace

    from osgeo import gdal, osr

    from sar_optical_matcher.rasters import open_raster

    path = tmp_path / "opt.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 200, 200, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((1000.0, 2.0, 0.0, 5000.0, 0.0, -2.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    ds = None
    optical = open_raster(str(path))
    m, off, k = search - template + 1, (search - template) // 2, 1.5
    cmap = np.zeros((1, m, m), np.float32)
    cmap[0, 20, 10] = 1.0  # the peak: window offset (j, i) = (10, 20)
    rec = SimpleNamespace(id=3, opt_x_px=100.0, opt_y_px=80.0)
    (out,) = reg.write_map_rasters(tmp_path / "maps", [rec], cmap, optical, search, template, k)
    gt = gdal.Open(str(out)).GetGeoTransform()
    centre = (gt[0] + 10.5 * gt[1], gt[3] + 20.5 * gt[5])
    found = (1000.0 + 2.0 * (100.0 + (10 - off) * k), 5000.0 - 2.0 * (80.0 + (20 - off) * k))
    assert centre == pytest.approx(found, abs=1e-9)


@pytest.mark.parametrize(("degrees", "scale"), [(4.0, 1.0), (10.0, 2.0), (10.0, 0.5)])
def test_warp_of_a_rotated_sar_follows_the_fit_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, degrees: float, scale: float
) -> None:
    """A SAR whose bands are its own pixel coordinates, warped through an exact rotation fit,
    must read back the fit's inverse at every output pixel. GDAL, left to take the resampling
    scale from each chunk's source window, took a rotated 1:1 warp for a downsampling: median
    0.02 px, max 0.07 px off at 4 degrees (10 px at the edges at 10 degrees), and blurred."""
    from osgeo import gdal

    from sar_optical_matcher import rasters
    from sar_optical_matcher.synthetic import write_geotiff

    monkeypatch.setattr(rasters, "WARP_MEMORY_BYTES", 300_000)  # chunks, as on a large scene
    n, m = 400, int(400 / scale)
    gt = (500_000.0, 10.0, 0.0, 5_200_000.0, 0.0, -10.0)
    optical = write_geotiff(tmp_path / "opt.tif", np.zeros((n, n), np.float32), gt, 32633)
    gx, gy = np.meshgrid(np.arange(m) + 0.5, np.arange(m) + 0.5)
    coords = np.stack([gx, gy]).astype(np.float32)
    sar = write_geotiff(tmp_path / "coords.tif", coords, gt, 32633)
    th = np.radians(degrees)
    a = scale * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    t = np.array([n / 2, n / 2]) - a @ np.array([m / 2, m / 2])
    src = np.stack(np.meshgrid(np.linspace(0, m, 6), np.linspace(0, m, 6)), -1).reshape(-1, 2)
    ties = reg.TiePoints(src, src @ a.T + t, np.ones(len(src), bool), np.arange(len(src)))
    fit = reg.fit_tie_points(ties, "affine", 1.0, 8, np.random.default_rng(0))
    out = tmp_path / "out.tif"
    reg.warp_sar(_open(sar), _open(optical), fit, out, reg.WarpSettings(nodata=-1))
    got = gdal.Open(str(out)).ReadAsArray().astype(np.float64)
    q = np.stack(np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5), -1)
    want = (q - t) @ np.linalg.inv(a).T  # the SAR pixel each output pixel shows
    inside = (want > 2).all(axis=-1) & (want < m - 2).all(axis=-1)
    err = np.hypot(got[0] - want[..., 0], got[1] - want[..., 1])[inside]
    assert inside.sum() > 0.4 * n * n
    assert err.max() < 2e-3


def test_extrapolated_share_is_the_overlap_outside_the_inliers_hull() -> None:
    grid = np.stack(np.meshgrid(np.linspace(100, 900, 9), np.linspace(100, 900, 9)), -1)
    src = grid.reshape(-1, 2)
    left = src[src[:, 0] <= 500]

    def share(points: np.ndarray, margin: float = 100.0, offset: float = 0.0) -> float:
        ties = reg.TiePoints(
            points, points + offset, np.ones(len(points), bool), np.arange(len(points))
        )
        fit = reg.fit_tie_points(ties, "shift", 1.0, 1, np.random.default_rng(0))
        return reg.extrapolated_share(fit, ties, (1000, 1000), (1000, 1000), margin)

    assert share(src) == 0.0  # the inner 800 px square is the hull
    assert share(left) == pytest.approx(0.5, abs=0.02)  # the right half is extrapolated
    assert share(src, margin=0.0) == pytest.approx(1 - 0.8**2, abs=0.03)  # the border band
    # the SAR 500 px to the right: only its half on the optical counts (0.68 with the rest)
    right = src[src[:, 0] >= 500]
    assert share(right, offset=-500.0, margin=0.0) == pytest.approx(1 - 0.4 * 0.8 / 0.5, abs=0.03)
    line = np.column_stack([np.linspace(100, 900, 20), np.full(20, 500.0)])
    assert share(line) == 1.0  # no area


def _layout_ties(name: str, seed: int = 0, noise: float = 0.3) -> reg.TiePoints:
    """Tie points over a 1000 px overlap with ``noise`` px of match noise: spread, two lines
    crossing (keypoints along roads, 3 px off them), one line, or bunched in a corner."""
    rng = np.random.default_rng(seed)
    t = np.linspace(64, 936, 20)
    if name == "spread":
        src = rng.uniform(64, 936, (40, 2))
    elif name == "cross":
        src = np.vstack([np.column_stack([t, 500 + rng.normal(0, 3, 20)]),
                         np.column_stack([500 + rng.normal(0, 3, 20), t])])  # fmt: skip
    elif name == "line":
        src = np.column_stack([t, 0.3 * t + 300 + rng.normal(0, 3, 20)])
    else:
        src = rng.uniform(64, 300, (30, 2))
    dst = src @ TRUE_A[:, :2].T + TRUE_A[:, 2] + rng.normal(0, noise, src.shape)
    return reg.TiePoints(src, dst, np.ones(len(src), bool), np.arange(len(src)))


def _check(ties: reg.TiePoints, kind: str) -> tuple[reg.FitResult, float]:
    fit = reg.fit_tie_points(ties, kind, 1.5, 8, np.random.default_rng(0))
    return fit, reg.check_predicted_error(fit, ties, (1000, 1000), (1000, 1000), 1.5, 64)


def _true_max_error(fit: reg.FitResult) -> float:
    g = np.linspace(64, 936, 32)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    return float(
        np.hypot(*(fit.transform.apply(grid) - grid @ TRUE_A[:, :2].T - TRUE_A[:, 2]).T).max()
    )


@pytest.mark.parametrize(("kind", "want"), [("affine", 0.170), ("poly2", 0.336), ("poly3", 0.710)])
def test_well_spread_tie_points_pass_the_predicted_error_with_a_margin(
    kind: str, want: float
) -> None:
    """40 random tie points, 0.3 px of noise: predicted 0.170 / 0.336 / 0.710 px out to the
    judged square's outline (0.167 / 0.315 / 0.631 px on a grid of cell centres a cell short
    of it; true largest error 0.26 / 0.42 / 0.75 px), 0.45 / 0.93 / 2.13 times the RMSE, and
    1.5 times it (the likely largest error) at least a quarter within the 1.5 px threshold."""
    fit, predicted = _check(_layout_ties("spread"), kind)
    assert predicted == fit.extra["predicted_error_px"]
    assert predicted == pytest.approx(want, abs=2e-3)
    assert predicted < 2.2 * fit.rmse_px and reg.ERROR_BOUND_FACTOR * predicted < 0.75 * 1.5
    assert 0.5 < _true_max_error(fit) / predicted < 2.0


def _same_order(true: float, predicted: float) -> bool:
    """One draw's true largest error against the prediction: 0.2-2.2 times in 90 % of draws."""
    return 0.25 < true / predicted < 4.0


@pytest.mark.parametrize("kind", ["poly2", "poly3"])
def test_tie_points_on_two_crossing_lines_refuse_a_polynomial(kind: str) -> None:
    """Matches only along two crossing roads: the poly2 / poly3 fit passed RANSAC and every
    residual check (RMSE 0.4 px) and was warped with, 42 / 141 px off between the roads
    (predicted 25 / 92 px)."""
    ties = _layout_ties("cross")
    fit = reg.fit_tie_points(ties, kind, 1.5, 8, np.random.default_rng(0))
    assert fit.rmse_px < 0.5 and _true_max_error(fit) > 15  # what was accepted
    with pytest.raises(reg.RegistrationError) as err:
        reg.check_predicted_error(fit, ties, (1000, 1000), (1000, 1000), 1.5, 64)
    text = str(err.value)
    assert f"the '{kind}' fit is predicted to be wrong by up to" in text
    assert "lie along a few lines (e.g. two crossing roads)" in text
    assert "Use TRANSFORM affine (predicted 0.24 px" in text and "KEYPOINTS" in text
    # keypoints kept to part of the overlap by EXTENT / MASK, or taken strongest first
    assert "(EXTENT and MASK over the whole overlap, a higher SPREAD or MAX_COUNT" in text
    assert _same_order(_true_max_error(fit), fit.extra["predicted_error_px"])
    _, affine = _check(ties, "affine")  # the affine of the same tie points is determined
    assert affine < 0.3


def test_tie_points_on_one_line_refuse_even_an_affine() -> None:
    """20 tie points along one road (3 px off it): spread_ratio is 1 (all usable matches lie
    there) and the affine was accepted, 15 px off across the road (predicted 21 px)."""
    ties = _layout_ties("line")
    fit = reg.fit_tie_points(ties, "affine", 1.5, 8, np.random.default_rng(0))
    assert _true_max_error(fit) > 10
    why = r"20 inliers lie on nearly one line \(spread across it 1 % of that along it\)"
    with pytest.raises(reg.RegistrationError, match=why + r".* Use TRANSFORM shift,"):
        reg.check_predicted_error(fit, ties, (1000, 1000), (1000, 1000), 1.5, 64)
    assert _same_order(_true_max_error(fit), fit.extra["predicted_error_px"])


def test_tie_points_in_a_corner_refuse_a_poly2_not_an_affine() -> None:
    """30 tie points in a 236 px corner square of a 1000 px overlap: the poly2 was accepted,
    24 px off in the far corner (predicted 13 px); the affine, 0.5 px off, passes at the
    default 3 px threshold (predicted 1.25 px, likely at most 1.88 px). At 1.5 px it is
    refused: over 200 such draws its true largest error was 1.2 px in the median and above
    1.5 px in 29 % of them."""
    ties = _layout_ties("corner")
    fit = reg.fit_tie_points(ties, "affine", 3.0, 8, np.random.default_rng(0))
    predicted = reg.check_predicted_error(fit, ties, (1000, 1000), (1000, 1000), 3.0, 64)
    assert 1.2 < predicted < 1.3 and _same_order(_true_max_error(fit), predicted)
    with pytest.raises(reg.RegistrationError, match=r"likely 1\.5 times that, 1\.8\d px"):
        _check(ties, "affine")
    poly2 = reg.fit_tie_points(ties, "poly2", 1.5, 8, np.random.default_rng(0))
    assert _true_max_error(poly2) > 15
    with pytest.raises(reg.RegistrationError, match=r"bunched in one part of the overlap "
                       r"\(their bounding box: 7 % of it\)"):  # fmt: skip
        _check(ties, "poly2")


def test_noise_free_tie_points_are_not_refused_for_their_layout() -> None:
    """Below the residual threshold the predicted error is what the user accepts at a tie
    point: exact tie points on two crossing lines fit a poly2 exactly, and pass."""
    fit, predicted = _check(_layout_ties("cross", noise=0.0), "poly2")
    assert predicted < 1e-6 and _true_max_error(fit) < 1e-6


def test_predicted_error_of_a_shift_and_of_a_spline() -> None:
    """A shift's offset has one error everywhere, sqrt(RSS / (k (k - 1))) (its mean's), here
    on the georeferences' pixel mapping; an interpolating spline has no residual to scale by:
    NaN, never a refusal (it is judged by its leave-one-out RMSE)."""
    ties = _layout_ties("line")  # even on one line: a shift is determined
    jac = TRUE_A[:, :2]
    fit = reg.fit_tie_points(ties, "shift", 1.5, 8, np.random.default_rng(0), nominal_jacobian=jac)
    k = int(fit.inliers.sum())
    want = np.sqrt((fit.residual_xy_px[fit.inliers] ** 2).sum() / (k * (k - 1)))
    got = reg.check_predicted_error(fit, ties, (1000, 1000), (1000, 1000), 1.5, 64)
    assert got == pytest.approx(want) and 0.05 < got < 0.15
    spread = _layout_ties("spread")
    tps = reg.fit_tie_points(spread, "tps", 1.5, 8, np.random.default_rng(0))
    assert np.isnan(reg.check_predicted_error(tps, spread, (1000, 1000), (1000, 1000), 1.5))


def _coordinate_raster(path: Path, size: int, gt: tuple[float, ...], wkt: str) -> Path:
    """A Float64 raster whose bands hold each pixel centre's own x and y (SAR pixels): warped
    bilinearly, it reads back where each output pixel was sampled from."""
    from osgeo import gdal

    ds = gdal.GetDriverByName("GTiff").Create(str(path), size, size, 2, gdal.GDT_Float64)
    ds.SetGeoTransform(gt)
    ds.SetProjection(wkt)
    centres = np.arange(size) + 0.5
    ds.GetRasterBand(1).WriteArray(np.tile(centres, (size, 1)))
    ds.GetRasterBand(2).WriteArray(np.tile(centres[:, None], (1, size)))
    ds = None
    return path


def _coordinate_pair(folder: Path, sar_size: int, optical_size: int) -> Path:
    """A ``sar_size`` coordinate raster ``xy.tif`` (:func:`_coordinate_raster`) and an empty
    ``optical_size`` optical ``opt.tif`` on the same 10 m UTM grid; returns the SAR's path."""
    from osgeo import gdal, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    wkt = srs.ExportToWkt()
    gt = (500000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0)
    sar_path = _coordinate_raster(folder / "xy.tif", sar_size, gt, wkt)
    opt = gdal.GetDriverByName("GTiff").Create(
        str(folder / "opt.tif"), optical_size, optical_size, 1
    )
    opt.SetGeoTransform(gt)
    opt.SetProjection(wkt)
    opt = None
    return sar_path


@pytest.mark.parametrize("out_per_sar_px", [1.0, 2.0])
def test_tps_warp_samples_the_sar_where_the_fitted_spline_says(
    tmp_path: Path, out_per_sar_px: float
) -> None:
    """Every output pixel, warped through a spline fitted to 80 noisy tie points on a bent
    scene, is sampled within 0.1 px of the fit (its SAR position, mapped by the fit, lands on
    the output pixel's centre), also with SAR pixels twice the output's: 0.086 / 0.055 px at
    most, next to a close pair of tie points. gdal.Warp(tps=True) through the control points
    was 2.18 / 0.89 px off (GDAL's approximate transformer, and its inverse a second spline)."""
    from osgeo import gdal

    size, k = 400, round(400 * out_per_sar_px)
    sar_path = _coordinate_pair(tmp_path, size, k)
    rng = np.random.default_rng(3)
    src = rng.uniform(0, size, (80, 2))
    c, s = np.cos(0.05), np.sin(0.05)
    bend = np.column_stack(
        [3 * np.sin(2 * np.pi * src[:, 1] / size), 2 * np.cos(4 * src[:, 0] / size)]
    )
    dst = out_per_sar_px * (src @ np.array([[c, -s], [s, c]]).T + [6.0, -4.0] + bend)
    dst += rng.normal(0, 0.3, dst.shape)
    ties = reg.TiePoints(src, dst, np.ones(len(src), bool), np.arange(len(src)))
    fit = reg.fit_tie_points(ties, "tps", 8.0, 8, np.random.default_rng(0))
    assert fit.inliers.sum() > 70
    out = reg.warp_sar(_open(sar_path), _open(tmp_path / "opt.tif"), fit, tmp_path / "r.tif",
                       reg.WarpSettings(nodata=-1.0))  # fmt: skip
    sampled = gdal.Open(str(out)).ReadAsArray().reshape(2, -1).T
    oy, ox = np.mgrid[0:k, 0:k]
    centre = np.column_stack([ox.ravel(), oy.ravel()]) + 0.5
    inside = ((sampled > 1) & (sampled < size - 1)).all(axis=1)  # bilinear reads the ramp
    assert inside.mean() > 0.8
    err = np.linalg.norm(fit.transform.apply(sampled[inside]) - centre[inside], axis=1)
    assert err.max() < 0.1, (err.max(), np.median(err))
    assert np.median(err) < 0.005
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.tif", "r.tif", "xy.tif"]
    assert not gdal.ReadDirRecursive("/vsimem/"), "geolocation arrays left in /vsimem"


def test_tps_warp_of_a_sar_larger_than_the_optical_follows_the_spline(tmp_path: Path) -> None:
    """The geolocation arrays cover only the SAR window that falls on the optical (here from
    SAR pixel (166, 216)): the output still samples the SAR where the fit says, within 0.1 px
    (0.091 px at most, next to a close pair of noisy tie points)."""
    from osgeo import gdal, osr

    size, k = 600, 250
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    wkt = srs.ExportToWkt()
    sar_path = _coordinate_raster(tmp_path / "xy.tif", size, (5e5, 10, 0, 5e6, 0, -10), wkt)
    opt = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "opt.tif"), k, k, 1)
    opt.SetGeoTransform((5e5 + 2000, 10, 0, 5e6 - 2500, 0, -10))  # SAR px - (200, 250)
    opt.SetProjection(wkt)
    opt = None
    rng = np.random.default_rng(3)
    src = rng.uniform(180, 470, (60, 2))
    bend = np.column_stack([2 * np.sin(src[:, 1] / 50), np.cos(src[:, 0] / 60)])
    dst = src - [200, 250] + bend + rng.normal(0, 0.3, (60, 2))
    ties = reg.TiePoints(src, dst, np.ones(len(src), bool), np.arange(len(src)))
    fit = reg.fit_tie_points(ties, "tps", 8.0, 8, np.random.default_rng(0))
    window = reg.sar_window_on_optical(fit.transform, size, size, k, k)
    assert window is not None and min(window[:2]) > 100
    out = reg.warp_sar(_open(sar_path), _open(tmp_path / "opt.tif"), fit, tmp_path / "r.tif",
                       reg.WarpSettings(nodata=-1.0))  # fmt: skip
    sampled = gdal.Open(str(out)).ReadAsArray().reshape(2, -1).T
    assert (sampled > 1).all(), "every output pixel lies on the SAR"
    oy, ox = np.mgrid[0:k, 0:k]
    centre = np.column_stack([ox.ravel(), oy.ravel()]) + 0.5
    err = np.linalg.norm(fit.transform.apply(sampled) - centre, axis=1)
    assert err.max() < 0.1, (err.max(), np.median(err))


@pytest.mark.parametrize("kind", ["affine", "poly2"])
def test_a_sar_scene_far_larger_than_the_optical_is_judged_on_the_overlap(kind: str) -> None:
    """A 1024 px optical crop at the centre of a 25,000 px SAR scene (1:1 pixels): the overlap
    grid was laid over the whole SAR, left no point inside the keypoints' border and fell back
    to the whole scene, and a good fit (0.17 / 0.36 px on the crop) was refused as 5.9 / 529 px
    off; the share outside the inliers' hull read 0.0 or 0.56 with the scene's size (0.19)."""
    rng = np.random.default_rng(0)
    opt = rng.uniform(200, 824, (40, 2))
    dst = opt + rng.normal(0, 0.3, opt.shape)
    figures = []
    for side in (1024, 25000):
        ties = reg.TiePoints(opt + (side / 2 - 512), dst, np.ones(40, bool), np.arange(40))
        fit = reg.fit_tie_points(ties, kind, 1.5, 8, np.random.default_rng(0))
        sizes = (side, side), (1024, 1024)
        figures.append((
            reg.check_predicted_error(fit, ties, *sizes, 1.5, 192),
            reg.predicted_error(fit, ties, *sizes),
            reg.extrapolated_share(fit, ties, *sizes, 192),
        ))  # fmt: skip
    (crop, crop_whole, crop_share), (scene, scene_whole, scene_share) = figures
    assert scene == pytest.approx(crop, rel=1e-6) and crop < 0.5
    assert scene_share == pytest.approx(crop_share, abs=1e-9) and 0.1 < crop_share < 0.3
    # the whole overlap's grid is clipped to the crop's SAR raster, not to the scene's
    assert scene_whole == pytest.approx(crop_whole, rel=0.1) and scene_whole < 1.0


def test_a_spread_tiles_the_mask_as_it_tiles_the_same_extent(tmp_path: Path) -> None:
    """The spread's cells were laid over the whole raster with a MASK: a mask square over a
    quarter of it got a quarter of the cells, 5 of 40 keypoints in its weak (0.3x contrast)
    part where the same square as an EXTENT got 10. Now the two give the same keypoints."""
    from osgeo import gdal, osr
    from scipy import ndimage

    from sar_optical_matcher import rasters

    n, gt = 1024, (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)
    img = ndimage.gaussian_filter(np.random.default_rng(5).normal(size=(n, n)), 3.0) * 40 + 100
    img[:, :712] = 100 + 0.3 * (img[:, :712] - 100)
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "o.tif"), n, n, 1, gdal.GDT_Float32)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetGeoTransform(gt)
    ds.SetProjection(srs.ExportToWkt())
    ds.GetRasterBand(1).WriteArray(img.astype(np.float32))
    ds = None
    info = rasters.open_raster(tmp_path / "o.tif")
    x0, y0, x1, y1 = 503000.0, 4091880.0, 508120.0, 4097000.0  # pixels 300..812
    square = f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"

    def detect(**kw: object) -> np.ndarray:
        s = reg.DetectSettings(min_distance_px=24, max_count=40, border_px=20, spread=0.5, **kw)
        return reg.detect_keypoints_tiled(info, s).xy_px

    masked, extent = detect(mask_wkt=(square,)), detect(extent_map=(x0, y0, x1, y1))
    assert len(masked) == len(extent) == 40
    assert (masked[:, 0] < 512).sum() == (extent[:, 0] < 512).sum() == 10
    # the same points: a polygon's edge is no edge of the image, so the response is not
    # blanked next to it (it was, as next to nodata: nothing within 9 px of the edge)
    np.testing.assert_array_equal(np.sort(masked, axis=0), np.sort(extent, axis=0))
    strip = f"POLYGON(({x0} {y0},{x0 + 180} {y0},{x0 + 180} {y1},{x0} {y1},{x0} {y0}))"
    narrow = detect(mask_wkt=(strip,))  # 18 px wide, in the textured part: had no keypoint
    assert len(narrow) >= 5
    assert (narrow[:, 0] > 300).all() and (narrow[:, 0] < 318).all()


def test_too_few_inliers_for_a_poly3_are_said_so_not_roads() -> None:
    """16 well-spread tie points of a poly3 (10 terms): refused, 12.2 px predicted, and told
    they "lie along a few lines (e.g. two crossing roads)", which they do not. The affine is
    named: the poly2, predicted 2.0 px, fails the 1.5 px threshold too."""
    rng = np.random.default_rng(0)
    src = rng.uniform(64, 936, (16, 2))
    dst = src @ TRUE_A[:, :2].T + TRUE_A[:, 2] + rng.normal(0, 0.3, src.shape)
    ties = reg.TiePoints(src, dst, np.ones(16, bool), np.arange(16))
    fit = reg.fit_tie_points(ties, "poly3", 1.5, 8, np.random.default_rng(0))
    with pytest.raises(reg.RegistrationError) as err:
        reg.check_predicted_error(fit, ties, (1000, 1000), (1000, 1000), 1.5, 64)
    text = str(err.value)
    assert "its 16 inliers are too few for its 10 terms per coordinate (at least 25" in text
    assert "crossing roads" not in text
    assert "Use TRANSFORM affine (predicted 0.37 px on these tie points)" in text


def test_a_poly3_on_17_inliers_within_10_times_its_rmse_is_refused() -> None:
    """17 well-spread tie points of a poly3 with 1 px of noise: predicted 5.02 px, 7.68 times
    its 0.65 px RMSE, so under 10 x RMSE and accepted, while truly 4.47 px off somewhere in
    the overlap (the 3 px threshold's fit). Now 1.5 x 5.02 px > 3 px refuses it, naming the
    affine (0.89 px) that passes. The poly2, predicted 2.08 px out to the judged square's
    corners (1.97 px on a grid of cell centres, which passed), is refused too though truly
    1.93 px off: the price of a factor that accepts no fit off by twice the threshold."""
    rng = np.random.default_rng(7)
    src = rng.uniform(64, 936, (17, 2))
    dst = src @ TRUE_A[:, :2].T + TRUE_A[:, 2] + rng.normal(0, 1.0, src.shape)
    ties = reg.TiePoints(src, dst, np.ones(17, bool), np.arange(17))
    fit = reg.fit_tie_points(ties, "poly3", 3.0, 8, np.random.default_rng(0))
    predicted = reg.predicted_error(fit, ties, (1000, 1000), (1000, 1000), 64)
    assert 6 < predicted / fit.rmse_px < 8 and _true_max_error(fit) > 4  # what was accepted
    with pytest.raises(reg.RegistrationError) as err:
        reg.check_predicted_error(fit, ties, (1000, 1000), (1000, 1000), 3.0, 64)
    text = str(err.value)
    assert "up to 5.02 px (standard error) in the overlap, 7.68 times its RMSE of 0.65 px" in text
    assert "likely 1.5 times that, 7.52 px, beyond the RESIDUAL_THRESHOLD of 3 px" in text
    assert "its 17 inliers are too few for its 10 terms per coordinate" in text
    assert "Use TRANSFORM affine (predicted 0.89 px on these tie points)" in text
    poly2 = reg.fit_tie_points(ties, "poly2", 3.0, 8, np.random.default_rng(0))
    with pytest.raises(reg.RegistrationError, match=r"wrong by up to 2\.08 px .* likely 1\.5 "
                       r"times that, 3\.12 px"):  # fmt: skip
        reg.check_predicted_error(poly2, ties, (1000, 1000), (1000, 1000), 3.0, 64)
    assert _true_max_error(poly2) == pytest.approx(1.93, abs=0.01)


def test_spread_tie_points_too_noisy_for_a_poly3_are_said_so() -> None:
    """60 random tie points with 1.4 px of noise: the poly3 (54 inliers, RMSE 1.50 px) is
    predicted 4.02 px wrong, 2.67 times its RMSE, and is truly 4.4 px off somewhere; accepted
    under 10 x RMSE, now refused, for its noise, not for a layout of lines."""
    rng = np.random.default_rng(4)
    src = rng.uniform(64, 936, (60, 2))
    dst = src @ TRUE_A[:, :2].T + TRUE_A[:, 2] + rng.normal(0, 1.4, src.shape)
    ties = reg.TiePoints(src, dst, np.ones(60, bool), np.arange(60))
    fit = reg.fit_tie_points(ties, "poly3", 3.0, 8, np.random.default_rng(0))
    assert _true_max_error(fit) > 4.0
    with pytest.raises(reg.RegistrationError) as err:
        reg.check_predicted_error(fit, ties, (1000, 1000), (1000, 1000), 3.0, 64)
    text = str(err.value)
    assert "up to 4.02 px (standard error) in the overlap, 2.67 times its RMSE" in text
    assert "inliers are spread over the overlap, but their residuals are too large" in text
    assert "crossing roads" not in text and "Use TRANSFORM poly2" in text


@pytest.mark.parametrize(
    ("kind", "inside", "band", "warned"),
    [("affine", 0.137, 0.202, False), ("poly2", 0.211, 0.497, False), ("poly3", 0.266, 1.30, True)],
)
def test_the_border_band_is_judged_and_warned_of_not_refused(
    kind: str, inside: float, band: float, warned: bool
) -> None:
    """60 tie points 128-872 px into a 1000 px overlap, 0.3 px of noise, judged inside 192 px
    of the edges: the band outside, warped but never judged, is where a poly3 bends. Its
    predicted error there is 1.30 px against 0.27 px inside (truly 2.13 / 0.36 px off), over
    the 1.5 px threshold once times 1.5: warned of, with the poly2 that passes (0.50 px there,
    truly 0.58 px) and the clipping; the affine and poly2 are not."""
    from sar_optical_matcher.processing.register import predicted_error_text

    rng = np.random.default_rng(0)
    src = rng.uniform(128, 872, (60, 2))
    dst = src @ TRUE_A[:, :2].T + TRUE_A[:, 2] + rng.normal(0, 0.3, src.shape)
    ties = reg.TiePoints(src, dst, np.ones(60, bool), np.arange(60))
    fit = reg.fit_tie_points(ties, kind, 1.5, 8, np.random.default_rng(0))
    sizes = (1000, 1000), (1000, 1000)
    assert reg.check_predicted_error(fit, ties, *sizes, 1.5, 192) == pytest.approx(inside, abs=2e-3)
    said = reg.check_border_band(fit, ties, *sizes, 1.5, 192)
    assert fit.extra["predicted_error_band_px"] == pytest.approx(band, abs=5e-3)
    g = np.linspace(0, 1000, 101)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    in_band = ~((grid >= 192) & (grid <= 808)).all(axis=1)
    true = np.hypot(*(fit.transform.apply(grid) - grid @ TRUE_A[:, :2].T - TRUE_A[:, 2]).T)
    assert (true[in_band].max() > 1.5) == warned and true[~in_band].max() < 0.5
    assert (said is not None) == warned
    if said is not None:
        assert "within 192 px of the optical raster's edges" in said
        assert "wrong by up to 1.3 px (standard error; its largest error there likely 1.94" in said
        assert "The output was written; use TRANSFORM poly2 (predicted 0.5 px" in said
        assert "clip it 192 px inside the optical raster's edges" in said
    line = predicted_error_text(fit)
    figures = re.search(r"up to ([\d.]+) px inside the keypoints' border, ([\d.]+) px in the "
                        r"border band", line)  # fmt: skip
    assert figures is not None, line
    assert [float(v) for v in figures.groups()] == pytest.approx([inside, band], abs=5e-3)


def _rotated_ties(
    degrees: float, kind: str, spread: tuple[float, float] = (128, 872)
) -> tuple[reg.FitResult, reg.TiePoints]:
    """60 tie points ``spread`` (128-872) px into a 1000 px optical raster, 0.3 px of noise, on
    a 2000 px SAR turned ``degrees`` against it (the optical in the SAR's middle), fitted by
    ``kind``."""
    t = math.radians(degrees)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    rng = np.random.default_rng(0)
    optical = rng.uniform(*spread, (60, 2))
    src = (optical - 500) @ rot + 1000  # SAR px: optical = rot (src - 1000) + 500
    ties = reg.TiePoints(src, optical + rng.normal(0, 0.3, src.shape), np.ones(60, bool),
                         np.arange(60))  # fmt: skip
    return reg.fit_tie_points(ties, kind, 2.0, 8, np.random.default_rng(0)), ties


@pytest.mark.parametrize("degrees", [0.0, 10.0, 45.0])
def test_the_border_band_is_judged_out_to_the_output_s_outermost_pixels(degrees: float) -> None:
    """A poly3 extrapolated into the band is most wrong at the output's corner pixels: its
    predicted error there is 1.347 px however the SAR is turned (a poly3 is one whatever its
    axes), the figure at the outermost pixel centres. A grid of cell centres missed the
    corners by up to a cell: 1.259 / 1.223 / 1.263 px, under the 1.95 px threshold once times
    1.5 (1.89 / 1.83 / 1.89 px), where 1.347 px is over it (2.02 px): now warned of."""
    fit, ties = _rotated_ties(degrees, "poly3")
    sizes = (2000, 2000), (1000, 1000)
    said = reg.check_border_band(fit, ties, *sizes, 1.95, 192)
    corners = np.array([[0.5, 0.5], [999.5, 0.5], [0.5, 999.5], [999.5, 999.5]])
    at = reg._inliers_affine(fit, ties).affine_matrix()
    under = np.linalg.solve(at[:, :2], (corners - at[:, 2]).T).T
    inl = np.asarray(fit.inliers, bool)
    corner_px = tf.prediction_error(ties.src_px[inl], ties.dst_px[inl], "poly3", under).max()
    assert fit.extra["predicted_error_band_px"] == pytest.approx(corner_px, rel=1e-9)
    assert fit.extra["predicted_error_band_px"] == pytest.approx(1.347, abs=1e-3)
    assert said is not None and "wrong by up to 1.35 px" in said


@pytest.mark.parametrize(("degrees", "cell_centres"), [(0.0, 0.449), (10.0, 0.367), (45.0, 0.348)])
def test_the_overlap_is_judged_out_to_the_keypoints_border_and_its_corners(
    degrees: float, cell_centres: float
) -> None:
    """60 tie points filling the judged square, 192-808 px into a 1000 px optical raster, on a
    SAR turned 0 / 10 / 45 degrees: a poly3 is most wrong at the square's bare corners, 0.4535
    px predicted at the worst however the SAR is turned, the figure now. A grid of cell
    centres stopped up to a cell short of the outline: 0.449 / 0.367 / 0.348 px, under
    ERROR_BOUND_FACTOR x 0.45 px as a threshold, where 0.4535 px is over it: now refused."""
    fit, ties = _rotated_ties(degrees, "poly3", spread=(192, 808))
    sizes = (2000, 2000), (1000, 1000)
    affine = reg._inliers_affine(fit, ties)
    corners = np.array([[192.0, 192.0], [808.0, 192.0], [192.0, 808.0], [808.0, 808.0]])
    at = affine.affine_matrix()
    under = np.linalg.solve(at[:, :2], (corners - at[:, 2]).T).T
    inl = np.asarray(fit.inliers, bool)
    corner_px = tf.prediction_error(ties.src_px[inl], ties.dst_px[inl], "poly3", under).max()
    predicted = reg.predicted_error(fit, ties, *sizes, 192)
    assert predicted == pytest.approx(corner_px, rel=1e-9)
    assert predicted == pytest.approx(0.4535, abs=5e-4) and predicted > cell_centres + 4e-3
    old = reg._overlap_grid(affine, *sizes, 192, 32, affine)  # the cell centres' grid
    assert reg._max_error("poly3", ties.src_px[inl], ties.dst_px[inl], old) == pytest.approx(
        cell_centres, abs=1e-3
    )
    # the grid reaches the outline, as the inliers' affine places it, and stays inside it
    grid = reg._fit_overlap(fit, ties, *sizes, 192, 32)[2]
    on = affine.apply(grid)
    assert on.min() == pytest.approx(192, abs=1e-6) and on.max() == pytest.approx(808, abs=1e-6)
    assert np.abs(grid[:, None] - under[None]).max(axis=2).min(axis=0).max() < 1e-9
    with pytest.raises(reg.RegistrationError, match=r"wrong by up to 0\.453 px"):
        reg.check_predicted_error(fit, ties, *sizes, reg.ERROR_BOUND_FACTOR * 0.45, 192)


def test_the_band_grid_covers_the_output_where_the_sar_does_and_nowhere_else() -> None:
    """A 1000 px SAR turned 10 degrees under a 1000 px optical raster covers an octagon of
    it: the band's samples lie on the SAR (0-1000 px) and on the output's pixel centres
    (0.5-999.5 px), reach both rasters' edges, the octagon's 8 corners among them, and none
    lie inside the judged 192 px."""
    t = math.radians(10.0)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    rng = np.random.default_rng(0)
    src = rng.uniform(200, 800, (40, 2))
    dst = (src - 500) @ rot.T + 500 + rng.normal(0, 0.3, src.shape)
    ties = reg.TiePoints(src, dst, np.ones(40, bool), np.arange(40))
    fit = reg.fit_tie_points(ties, "affine", 2.0, 8, np.random.default_rng(0))
    band = reg._band_grid(fit, ties, (1000, 1000), (1000, 1000), 192.0, 64)
    optical = reg._inliers_affine(fit, ties).apply(band)
    tol = 1e-6
    assert ((band >= -tol) & (band <= 1000 + tol)).all()
    assert ((optical >= 0.5 - tol) & (optical <= 999.5 + tol)).all()
    assert not ((optical > 192) & (optical < 808)).all(axis=1).any()
    octagon = reg._output_overlap(reg._inliers_affine(fit, ties), (1000, 1000), (1000, 1000))
    assert octagon is not None and len(octagon) == 8
    assert np.abs(band[:, None] - octagon[None]).max(axis=2).min(axis=0).max() < 1e-9
    assert band.min() == pytest.approx(0.0, abs=tol) and band.max() == pytest.approx(1000, abs=tol)
    assert optical.min() == pytest.approx(0.5, abs=tol)
    assert optical.max() == pytest.approx(999.5, abs=tol)


def test_tps_geolocation_keeps_every_spline_evaluation_within_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nodes x control points evaluated, the nodes near each control point included, stay
    within TPS_MAX_NODE_TERMS: only the coarse nodes were counted, and 1500 control points on
    a 2000^2 SAR evaluated 638 020 near nodes (957 M terms) besides the 63 001 coarse ones
    (94 M), 9.9 s with no cancel check; 4000 inliers would take minutes. The last node still
    reaches the window's far edge."""
    rng = np.random.default_rng(0)
    ctrl = rng.uniform(0, 600, (300, 2))
    budget = 20_000_000
    monkeypatch.setattr(reg, "TPS_MAX_NODE_TERMS", budget)
    evaluated: list[int] = []

    def to_map(xy: np.ndarray) -> np.ndarray:
        evaluated.append(len(xy))
        return xy * 10.0

    meta, mx, my = reg.tps_geolocation(to_map, ctrl, 600, 500, None, 1.0)
    assert sum(evaluated) * len(ctrl) <= budget, evaluated
    step = int(meta["PIXEL_STEP"])
    assert step * (mx.shape[1] - 1) >= 600 and step * (mx.shape[0] - 1) >= 500
    assert mx[0, -1] == pytest.approx(10.0 * step * (mx.shape[1] - 1))  # bilinear of a line


def test_a_cancel_while_the_spline_is_evaluated_stops_before_the_warp(tmp_path: Path) -> None:
    """The spline's nodes are evaluated in chunks that each check the cancel (they took 9.9 s
    uncancelable for 1500 control points): canceled there, nothing is warped (no progress
    reported), written or left in /vsimem."""
    from osgeo import gdal

    size = 300
    sar_path = _coordinate_pair(tmp_path, size, size)
    rng = np.random.default_rng(3)
    src = rng.uniform(0, size, (40, 2))
    dst = src + [3.0, -2.0] + rng.normal(0, 0.3, src.shape)
    ties = reg.TiePoints(src, dst, np.ones(len(src), bool), np.arange(len(src)))
    fit = reg.fit_tie_points(ties, "tps", 8.0, 8, np.random.default_rng(0))
    seen: list[float] = []
    vsimem_at_cancel: list[object] = []

    def canceled() -> bool:
        vsimem_at_cancel.append(gdal.ReadDirRecursive("/vsimem/"))
        return True

    with pytest.raises(reg.Canceled):
        reg.warp_sar(_open(sar_path), _open(tmp_path / "opt.tif"), fit, tmp_path / "r.tif",
                     reg.WarpSettings(), is_canceled=canceled, progress=seen.append)  # fmt: skip
    assert vsimem_at_cancel == [None], "the cancel was seen only once the arrays were written"
    assert seen == [], "the warp started after the cancel"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt.tif", "xy.tif"]
    assert not gdal.ReadDirRecursive("/vsimem/"), "geolocation arrays left in /vsimem"


@pytest.mark.parametrize("row_step", [10.0, 20.0])
def test_matching_grid_notes_give_a_non_square_optical_pixel_by_both_steps(
    row_step: float, tmp_path: Path
) -> None:
    """The notes gave the optical pixel as its column step alone: a 10 x 20 m optical beside a
    SAR of 3x its pixel side read "SAR 30, optical 10", where the SAR pixel's side is 42.4 m
    (3 x the optical's 14.1 m). Now both steps, the true SAR side, and, as MATCH_PIXEL_SIZE
    counts along the column step, the grid a suggested value gives. The scale is unchanged."""
    from tests.test_rasters import make_tif

    x0, y0 = 500000.0, 5000000.0
    opt = make_tif(tmp_path / "o.tif", np.ones((60, 60), np.float32),
                   (x0, 10.0, 0.0, y0, 0.0, -row_step))  # fmt: skip
    sar = make_tif(tmp_path / "s.tif", np.ones((20, 20), np.float32),
                   (x0, 30.0, 0.0, y0, 0.0, -3 * row_step))  # fmt: skip
    optical, sar_info = _open(opt), _open(sar)
    auto = reg.matching_grid(optical, sar_info, 0.0)
    fine = reg.matching_grid(optical, sar_info, 10.0)
    assert auto.scale == pytest.approx(3.0) and fine.scale == pytest.approx(1.0)
    if row_step == 10.0:
        assert "(automatic; SAR 30, optical 10 optical map units a pixel)" in auto.note
        assert fine.note.endswith("or to the SAR pixel size, 30")
        return
    steps = "(column x row step)"
    assert auto.note.startswith(
        f"matching on a grid of 30 x 60 {steps} optical map units a pixel (automatic; SAR "
        f"42.43, optical 10 x 20 {steps} optical map units a pixel), 3.00x the optical pixel"
    )
    assert f"grid 10 x 20 {steps}): the SAR is upsampled" in fine.note and fine.warning
    assert fine.note.endswith(
        f"or to the SAR pixel size, 30 (counted along the column step: a grid of 30 x 60 {steps})"
    )


def test_usable_takes_the_far_side_of_an_odd_search_range() -> None:
    """Offsets -8 .. +9 (S - T = 17): +8 is inside the map, -8 and +9 are its edge."""
    shift = np.array([[8.0, 0.0], [0.0, 8.0], [-8.0, 0.0], [9.0, 0.0], [7.4, -7.4], [np.nan, 0]])
    ties = reg.TiePoints(shift.copy(), shift.copy(), np.ones(6, bool), np.arange(6), shift)
    assert ties.usable(8.0, 9.0).tolist() == [True, True, False, False, True, True]
    assert ties.usable(8.0).tolist() == [False, False, False, False, True, True]  # symmetric
    assert reg.on_map_edge(shift, 8.0, 9.0).tolist() == [False, False, True, True, False, False]


def test_fit_tie_points_passes_the_far_range_on() -> None:
    """20 matches at +8 px (inside a -8 .. +9 map) register; called edge peaks they did not."""
    rng = np.random.default_rng(4)
    src = rng.uniform(0, 1000, (20, 2))
    shift = np.tile([8.0, 0.0], (20, 1))
    ties = reg.TiePoints(src, src + shift, np.ones(20, bool), np.arange(20), shift)
    fit = reg.fit_tie_points(ties, "shift", 1.0, 8, np.random.default_rng(0), half_range=8.0,
                             far_range=9.0)  # fmt: skip
    assert fit.inliers.all()
    np.testing.assert_allclose(fit.transform.apply(np.zeros((1, 2))), [[8.0, 0.0]], atol=1e-9)
    with pytest.raises(reg.RegistrationError):
        reg.fit_tie_points(ties, "shift", 1.0, 8, np.random.default_rng(0), half_range=8.0)


@pytest.mark.parametrize("declared", [False, True])
def test_warp_refuses_a_ringing_kernel_over_infinite_sar_pixels(
    pair: Pair, tmp_path: Path, declared: bool
) -> None:
    """A dB SAR whose zero intensities are -inf (a strip and scattered pixels, NaN nodata):
    cubic, cubicspline and lanczos wrote +inf pixels (the input has none) around NaN holes,
    with no word. Now refused, naming the count; bilinear (and near, average) warp it as before.
    A -inf that is the SAR's declared nodata is no data and not counted."""
    from osgeo import gdal

    optical = _open(pair.optical)
    src = gdal.Open(str(pair.sar))
    db = src.GetRasterBand(1).ReadAsArray().astype(np.float32)
    db[:, 100:110] = -np.inf
    db[::37, ::41] = -np.inf
    n_inf = int(np.isinf(db).sum())
    path = tmp_path / "sar_db.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), db.shape[1], db.shape[0], 1,
                                              gdal.GDT_Float32)  # fmt: skip
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    ds.GetRasterBand(1).SetNoDataValue(-np.inf if declared else np.nan)
    ds.GetRasterBand(1).WriteArray(db)
    ds = None
    sar = _open(path)
    fit = reg.fit_tie_points(_true_ties(pair), "affine", 0.5, 8, np.random.default_rng(0))
    assert reg.infinite_pixels(gdal.Open(str(path))) == (0 if declared else n_inf)
    for kernel in ("bilinear", "near", "average", "cubic", "cubicspline", "lanczos"):
        out = tmp_path / f"{kernel}.tif"
        settings = reg.WarpSettings(resampling=kernel)
        if kernel in reg.RINGING_KERNELS and not declared:
            # the whole SAR falls on the output: no window, every infinite pixel counted
            refusal = rf"^RESAMPLING {kernel}: {n_inf} valid SAR pixels are infinite.*"
            with pytest.raises(reg.RegistrationError, match=refusal + "bilinear.*gdal_calc"):
                reg.warp_sar(sar, optical, fit, out, settings)
            assert not out.exists()
            continue
        values = gdal.Open(str(reg.warp_sar(sar, optical, fit, out, settings))).ReadAsArray()
        assert not np.isposinf(values).any(), kernel  # cubic: 2051 +inf pixels on such a SAR


def test_infinite_sar_pixels_deep_inside_the_optical_are_counted_before_any_fit(
    pair: Pair, tmp_path: Path
) -> None:
    """check_infinite_pixels_up_front counts exactly the -inf pixels whose georeferenced
    position lies 2 search ranges inside the optical (any fit warps those onto the output):
    a block in the middle, scattered pixels, a strip at the SAR's edge (left to the check after
    the fit). Expected counts come from the pair's own truth, not the code's geometry."""
    from osgeo import gdal

    from tests.processing import SHIFT_PX

    src = gdal.Open(str(pair.sar))
    db = src.GetRasterBand(1).ReadAsArray().astype(np.float32)
    db[150:160, 170:180] = -np.inf
    db[::29, ::31] = -np.inf
    db[:, 0:3] = np.inf
    path = tmp_path / "sar_db.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), db.shape[1], db.shape[0], 1,
                                              gdal.GDT_Float32)  # fmt: skip
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    ds.GetRasterBand(1).SetNoDataValue(np.nan)
    ds.GetRasterBand(1).WriteArray(db)
    ds = None
    rows, cols = np.nonzero(np.isinf(db))
    opt = pair.sar_to_optical(np.column_stack([cols + 0.5, rows + 0.5])) + np.array(SHIFT_PX)
    optical, sar = _open(pair.optical), _open(path)
    for search_range in (16.0, 40.0, 100.0):
        m = 2 * search_range
        deep = int(((opt >= m) & (opt <= pair.size - m)).all(axis=1).sum())
        if 2 * m >= pair.size:  # no interior left: nothing said up front
            reg.check_infinite_pixels_up_front(
                gdal.Open(str(path)), sar, optical, "cubic", "out.tif", search_range
            )
            continue
        assert 100 <= deep < len(rows)  # the edge strip is never counted up front
        for kernel in ("bilinear", "near", "average"):  # no ringing: nothing read, nothing said
            reg.check_infinite_pixels_up_front(
                gdal.Open(str(path)), sar, optical, kernel, "out.tif", search_range
            )
        for kernel in reg.RINGING_KERNELS:
            with pytest.raises(
                reg.RegistrationError,
                match=rf"^RESAMPLING {kernel}: {deep} valid SAR pixels more than {m:.0f} optical"
                rf" pixels inside the optical raster are infinite.*bilinear.*gdal_calc",
            ):
                reg.check_infinite_pixels_up_front(
                    gdal.Open(str(path)), sar, optical, kernel, "out.tif", search_range
                )


@pytest.mark.parametrize(("kind", "tolerance"), [("poly2", 0.035), ("poly3", 0.01)])
def test_a_bending_fit_is_warped_exactly(
    pair: Pair, tmp_path: Path, kind: str, tolerance: float
) -> None:
    """The SAR's bands hold each pixel's own SAR coordinates, so the warped raster says which
    SAR point every output pixel shows; the fit must take it to that output pixel. A poly2/3
    fit of a 3 px bend was warped through GDAL's approximate transformer (0.05-0.06 px off at
    most: 0.064 px poly2, 0.046 px poly3 here); now exactly (errorThreshold 0). What is left
    of poly2's is GDAL's inverse, a least-squares poly2 through the GCPs (0.029 px)."""
    from osgeo import gdal

    n = pair.size
    src = np.random.default_rng(2).uniform(10, n - 10, (60, 2))
    u = (src - n / 2) / (n / 2)
    dst = pair.sar_to_optical(src) + 3.0 * np.column_stack([u[:, 0] ** 2, u[:, 0] * u[:, 1]])
    ties = reg.TiePoints(src, dst, np.ones(60, bool), np.arange(60))
    fit = reg.fit_tie_points(ties, kind, 0.5, 8, np.random.default_rng(0))
    assert fit.inliers.all()
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    sar_src = gdal.Open(str(pair.sar))
    path = tmp_path / "coords.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), n, n, 2, gdal.GDT_Float64)
    ds.SetGeoTransform(sar_src.GetGeoTransform())
    ds.SetProjection(sar_src.GetProjection())
    for b, values in ((1, xx), (2, yy)):
        ds.GetRasterBand(b).SetNoDataValue(-1.0)
        ds.GetRasterBand(b).WriteArray(values)
    ds = None
    out = reg.warp_sar(_open(path), _open(pair.optical), fit, tmp_path / "w.tif",
                       reg.WarpSettings(resampling="bilinear"))  # fmt: skip
    shown = gdal.Open(str(out)).ReadAsArray()[:, 40:-40, 40:-40]  # (2, h, w) SAR x, y
    ok = (shown > 1).all(axis=0)
    assert ok.mean() > 0.9
    sar_xy = np.column_stack([shown[0][ok], shown[1][ok]])
    oy, ox = (np.mgrid[40 : n - 40, 40 : n - 40] + 0.5)[:, ok]
    miss = np.hypot(*(fit.transform.apply(sar_xy) - np.column_stack([ox, oy])).T)
    assert miss.max() < tolerance, (np.median(miss), miss.max())


@pytest.mark.parametrize("sar_epsg", [3857, 4326])
def test_a_fit_across_two_crss_is_made_in_the_sars_crs(tmp_path: Path, sar_epsg: int) -> None:
    """A 40 km optical in UTM and a SAR in EPSG:3857 / 4326 whose georeference is exact: the
    pixel mapping between the grids is no affine, so an affine fitted between them (as
    Register did) missed the truth by up to half a pixel, which its RMSE counted as noise.
    In the frame of fit_frame (the SAR's CRS, optical scale) the same tie points fit exactly
    and the warp reprojects exactly. The SAR's bands hold its own pixel coordinates, so the
    output says which SAR point each pixel shows; the truth is the two georeferences."""
    from osgeo import gdal, osr

    from sar_optical_matcher import rasters

    n, opt_gt = 400, (400000.0, 100.0, 0.0, 5200000.0, 0.0, -100.0)
    utm = osr.SpatialReference()
    utm.ImportFromEPSG(32633)
    opt_path = tmp_path / "opt.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(opt_path), n, n, 1, gdal.GDT_Byte)
    ds.SetGeoTransform(opt_gt)
    ds.SetProjection(utm.ExportToWkt())
    ds = None
    # the SAR grid: the optical's footprint in the other CRS, about the same pixel count
    other = osr.SpatialReference()
    other.ImportFromEPSG(sar_epsg)
    other.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    optical = _open(opt_path)
    corners = rasters.pixel_to_map(optical, [[0, 0], [n, 0], [0, n], [n, n]])
    far = rasters.transform_points(corners, optical.crs_wkt, other.ExportToWkt())
    (x0, y0), (x1, y1) = far.min(axis=0), far.max(axis=0)
    m = 430
    sar_gt = (x0, (x1 - x0) / m, 0.0, y1, 0.0, -(y1 - y0) / m)
    yy, xx = np.mgrid[0:m, 0:m] + 0.5
    sar_path = tmp_path / "sar.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(sar_path), m, m, 2, gdal.GDT_Float64)
    ds.SetGeoTransform(sar_gt)
    ds.SetProjection(other.ExportToWkt())
    for b, values in ((1, xx), (2, yy)):
        ds.GetRasterBand(b).SetNoDataValue(-1.0)
        ds.GetRasterBand(b).WriteArray(values)
    ds = None
    sar = _open(sar_path)

    def true_optical(sar_xy: np.ndarray) -> np.ndarray:
        to_map = rasters.transform_points(rasters.pixel_to_map(sar, sar_xy), sar.crs_wkt,
                                          optical.crs_wkt)  # fmt: skip
        return rasters.map_to_pixel(optical, to_map)

    src = np.random.default_rng(1).uniform(0.1 * m, 0.9 * m, (80, 2))
    ties = reg.TiePoints(src, true_optical(src), np.ones(80, bool), np.arange(80))
    frame = reg.fit_frame(optical, sar)
    assert frame is not None and 0.2 < frame.departure_px < 2.0
    in_frame = reg.TiePoints(src, frame.to_frame(ties.dst_px), ties.accepted, ties.ids)
    misses = {}
    for label, t, f in (("pixel grids", ties, None), ("frame", in_frame, frame)):
        fit = reg.fit_tie_points(t, "affine", 1.0, 8, np.random.default_rng(0))
        # cubic: GDAL's bilinear kernel, widened at this 0.93 scale, is itself 0.04-0.07 px
        # off on a plain reprojection of the SAR by its own georeference (cubic 0.007-0.011)
        out = reg.warp_sar(sar, optical, fit, tmp_path / f"{label}.tif",
                           reg.WarpSettings(resampling="cubic"), frame=f)  # fmt: skip
        shown = gdal.Open(str(out)).ReadAsArray()[:, 20:-20, 20:-20]
        ok = (shown > 1).all(axis=0)
        assert ok.mean() > 0.95
        oy, ox = (np.mgrid[20 : n - 20, 20 : n - 20] + 0.5)[:, ok]
        where = true_optical(np.column_stack([shown[0][ok], shown[1][ok]]))
        misses[label] = float(np.hypot(*(where - np.column_stack([ox, oy])).T).max())
        if f is not None:
            assert fit.rmse_px < 1e-3  # exact in the frame
    assert misses["frame"] < 0.02, misses
    assert misses["pixel grids"] > 0.15, misses
    assert reg.fit_frame(optical, optical) is None  # one CRS: fitted as before
