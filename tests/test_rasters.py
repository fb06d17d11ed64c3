"""Raster I/O: georeference checks, windows with padding, warping onto another grid."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr

from sar_optical_matcher.rasters import (
    atomic_output,
    can_create,
    check_output,
    footprint_overlap,
    gdal_messages_dropped,
    lossless_creation_options,
    map_to_pixel,
    open_dataset,
    open_raster,
    pixel_jacobian,
    pixel_size_ratio,
    pixel_to_map,
    read_on_grid,
    read_window,
    scaled_grid,
    transform_points,
    write_raster_atomic,
)


def wkt(epsg: int) -> str:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    return srs.ExportToWkt()


def make_tif(path: Path, data: np.ndarray, gt: tuple, epsg: int | None = 32633,
             nodata: float | None = None) -> Path:  # fmt: skip
    data = data if data.ndim == 3 else data[None]
    gdal_type = {np.uint8: gdal.GDT_Byte, np.float32: gdal.GDT_Float32,
                 np.uint16: gdal.GDT_UInt16,
                 np.complex64: gdal.GDT_CFloat32}[data.dtype.type]  # fmt: skip
    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[2], data.shape[1],
                                              data.shape[0], gdal_type)  # fmt: skip
    if gt is not None:
        ds.SetGeoTransform(gt)
    if epsg is not None:
        ds.SetProjection(wkt(epsg))
    for i, plane in enumerate(data):
        if nodata is not None:
            ds.GetRasterBand(i + 1).SetNoDataValue(nodata)
        ds.GetRasterBand(i + 1).WriteArray(plane)
    ds = None
    return path


UTM_GT = (500000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0)


def blob_image(size: int, centre_xy: tuple[float, float], gt: tuple, sigma_px: float) -> np.ndarray:
    """Gaussian blob at ``centre_xy`` (pixel coords); returns float32."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    return np.exp(-((xx - centre_xy[0]) ** 2 + (yy - centre_xy[1]) ** 2) / (2 * sigma_px**2)
                  ).astype(np.float32)  # fmt: skip


def peak_xy(data: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroid of the top of a blob, in pixel coords (+0.5 convention)."""
    d = np.nan_to_num(data)
    d = np.where(d > 0.5 * d.max(), d, 0)
    yy, xx = np.mgrid[0 : d.shape[0], 0 : d.shape[1]] + 0.5
    return np.array([(d * xx).sum() / d.sum(), (d * yy).sum() / d.sum()])


def test_open_raster_describes_it(tmp_path: Path) -> None:
    data = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30)
    info = open_raster(make_tif(tmp_path / "a.tif", data, UTM_GT, nodata=7), band=3)
    assert (info.width, info.height, info.band_count) == (30, 20, 3)
    assert info.geotransform == UTM_GT and not info.is_geographic
    assert info.dtypes == ("uint16",) * 3 and info.nodata == (7.0,) * 3
    assert info.gdal_types == ("UInt16",) * 3
    ds, same = open_dataset(tmp_path / "a.tif", band=3)  # the dataset it was read from, too
    assert same == info and ds.GetRasterBand(3).ReadAsArray()[0, 0] == data[2, 0, 0]
    assert open_raster(make_tif(tmp_path / "g.tif", data[0], (10, 0.001, 0, 50, 0, -0.001),
                                epsg=4326)).is_geographic  # fmt: skip


def test_open_raster_errors(tmp_path: Path) -> None:
    data = np.zeros((10, 10), np.uint8)
    (tmp_path / "text.tif").write_text("not a raster")
    cases = {
        str(tmp_path / "text.tif"): "cannot open .* as a raster",
        str(tmp_path / "missing.tif"): "the file does not exist",
        str(make_tif(tmp_path / "nogt.tif", data, None)): "no georeference.*Georeferencer",
        str(make_tif(tmp_path / "nocrs.tif", data, UTM_GT, epsg=None)): "no coordinate reference"
        ".*gdal_edit.py -a_srs",
    }
    for path, message in cases.items():
        with pytest.raises(ValueError, match=message):
            open_raster(path)
    ok = make_tif(tmp_path / "ok.tif", data, UTM_GT)
    with pytest.raises(ValueError, match=r"has 1 band\(s\); choose 1..1"):
        open_raster(ok, band=2)
    with pytest.raises(ValueError, match="choose 1..1"):
        read_window(open_raster(ok), 0, 0, 0, 2, 2)
    rpc = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "rpc.tif"), 4, 4, 1)
    rpc.SetMetadata({"LINE_OFF": "2", "SAMP_OFF": "2", "LAT_OFF": "37", "LONG_OFF": "15",
                     "HEIGHT_OFF": "0", "LINE_SCALE": "2", "SAMP_SCALE": "2", "LAT_SCALE": "0.01",
                     "LONG_SCALE": "0.01", "HEIGHT_SCALE": "100",
                     "LINE_NUM_COEFF": "0 0 -1" + " 0" * 17, "LINE_DEN_COEFF": "1" + " 0" * 19,
                     "SAMP_NUM_COEFF": "0 1" + " 0" * 18, "SAMP_DEN_COEFF": "1" + " 0" * 19},
                    "RPC")  # fmt: skip
    rpc = None  # sensor geometry: the "no georeference" fixes (-a_ullr) would give a wrong one
    assert gdal.Open(str(tmp_path / "rpc.tif")).GetMetadata("RPC")
    with pytest.raises(ValueError, match=r"rpc\.tif is georeferenced by RPCs only.*gdalwarp -rpc"):
        open_raster(tmp_path / "rpc.tif")
    slc = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "slc.tif"), 4, 4, 1, gdal.GDT_CInt16)
    slc.SetGeoTransform(UTM_GT)
    slc.SetProjection(wkt(32633))
    slc = None  # a complex band is named by its GDAL type, as gdalinfo prints it
    with pytest.raises(ValueError, match=r"band 1 of slc\.tif is complex \(CInt16\).*'mod'"):
        open_raster(tmp_path / "slc.tif", band=1)


def test_read_window_pads_and_masks(tmp_path: Path) -> None:
    data = np.arange(100, dtype=np.float32).reshape(10, 10)
    data[2, 3] = -9999
    data[4, 4] = np.inf
    info = open_raster(make_tif(tmp_path / "a.tif", data, UTM_GT, nodata=-9999))
    win, valid = read_window(info, 1, -2, 1, 6, 4)  # columns -2..3, rows 1..4
    assert win.shape == (4, 6) and win.dtype == np.float32
    assert np.isnan(win[:, :2]).all() and not valid[:, :2].any()  # outside -> NaN
    assert win[0, 2] == 10 and win[3, 5] == 43
    assert np.isnan(win[1, 5]) and not valid[1, 5]  # nodata at row 2, col 3
    assert valid.sum() == 4 * 4 - 1
    win2, valid2 = read_window(info, 1, 2, 2, 4, 4)
    assert np.isnan(win2[2, 2]) and not valid2[2, 2]  # Inf at row 4, col 4
    far, far_valid = read_window(info, 1, 50, 50, 3, 3)
    assert np.isnan(far).all() and not far_valid.any()


def test_read_on_grid_other_crs_and_pixel_size(tmp_path: Path) -> None:
    # optical: UTM 33N, 10 m pixels; a landmark at pixel (40.5, 60.5)
    opt = open_raster(make_tif(tmp_path / "opt.tif", np.zeros((128, 128), np.uint8), UTM_GT))
    landmark_map = pixel_to_map(opt, np.array([[40.5, 60.5]]))
    # "SAR": Web Mercator, 10 m pixels (7.1 m on the ground at 45 N), a blob drawn at the
    # landmark's position in its own grid
    landmark_3857 = transform_points(landmark_map, opt.crs_wkt, wkt(3857))[0]
    res = 10.0
    sar_gt = (landmark_3857[0] - 50.3 * res, res, 0.0, landmark_3857[1] + 70.6 * res, 0.0, -res)
    sar_data = blob_image(160, (50.3, 70.6), sar_gt, sigma_px=4.0)
    sar = open_raster(make_tif(tmp_path / "sar.tif", sar_data, sar_gt, epsg=3857))
    x0, y0 = 10, 20
    on_grid, valid = read_on_grid(sar, 1, opt, x0, y0, 64, 64)
    assert on_grid.shape == (64, 64) and valid.all()
    found = peak_xy(on_grid) + [x0, y0]
    assert np.abs(found - [40.5, 60.5]).max() < 0.1, found  # measured 0.02
    # and map_to_pixel inverts pixel_to_map
    np.testing.assert_allclose(map_to_pixel(opt, landmark_map), [[40.5, 60.5]], atol=1e-9)


def test_read_on_grid_geographic_target_and_outside(tmp_path: Path) -> None:
    sar = open_raster(make_tif(tmp_path / "sar.tif", np.full((50, 50), 3, np.float32), UTM_GT))
    corner_ll = transform_points(np.array([[UTM_GT[0], UTM_GT[3]]]), sar.crs_wkt, wkt(4326))[0]
    assert 14.0 < corner_ll[0] < 15.1 and 45.0 < corner_ll[1] < 45.2  # lon, lat order
    deg = 1e-4  # ~8-11 m; grid starts 30 px west/north of the SAR corner
    geo_gt = (corner_ll[0] - 30 * deg, deg, 0.0, corner_ll[1] + 30 * deg, 0.0, -deg)
    geo = open_raster(make_tif(tmp_path / "geo.tif", np.zeros((100, 100), np.uint8), geo_gt,
                               epsg=4326))  # fmt: skip
    data, valid = read_on_grid(sar, 1, geo, 0, 0, 100, 100, resampling="near")
    assert np.isnan(data[:25, :25]).all() and not valid[:25, :25].any()
    assert (data[valid] == 3).all() and valid[35:60, 35:60].all()
    x0, y0, x1, y1 = footprint_overlap(geo, sar)
    # 500 m of SAR = 63.5 px of 1e-4 deg in longitude at 45.1 N, 45 px in latitude
    assert abs(x0 - 30) < 0.5 and abs(y0 - 30) < 0.5
    assert abs(x1 - 30 - 500 / (111320 * np.cos(np.radians(45.1)) * deg)) < 1.0
    assert abs(y1 - 30 - 500 / (111130 * deg)) < 1.0
    assert footprint_overlap(sar, geo)[:2] == (0.0, 0.0)


def test_pixel_size_ratio_through_both_georeferences(tmp_path: Path) -> None:
    opt = open_raster(make_tif(tmp_path / "opt.tif", np.zeros((200, 200), np.uint8), UTM_GT))
    same_gt = (UTM_GT[0] + 300, 10.0, 0.0, UTM_GT[3] - 300, 0.0, -10.0)
    same = open_raster(make_tif(tmp_path / "same.tif", np.zeros((50, 50), np.uint8), same_gt))
    coarse = open_raster(make_tif(tmp_path / "coarse.tif", np.zeros((50, 50), np.uint8),
                                  (UTM_GT[0], 30.0, 0.0, UTM_GT[3], 0.0, -30.0)))  # fmt: skip
    assert pixel_size_ratio(opt, same) == pytest.approx(1.0, abs=1e-6)
    assert pixel_size_ratio(opt, coarse) == pytest.approx(3.0, abs=1e-6)
    assert pixel_size_ratio(coarse, opt) == pytest.approx(1 / 3, abs=1e-6)
    # Web Mercator 10 m pixels are 10 * cos(45.1 deg) = 7.06 m on the ground at 45.1 N
    centre = transform_points(pixel_to_map(opt, np.array([[100.0, 100.0]])), opt.crs_wkt,
                              wkt(3857))[0]  # fmt: skip
    merc_gt = (centre[0] - 1000.0, 10.0, 0.0, centre[1] + 1000.0, 0.0, -10.0)
    merc = open_raster(make_tif(tmp_path / "merc.tif", np.zeros((200, 200), np.uint8), merc_gt,
                                epsg=3857))  # fmt: skip
    lat = transform_points(np.array([centre]), wkt(3857), wkt(4326))[0][1]
    assert pixel_size_ratio(opt, merc) == pytest.approx(np.cos(np.radians(lat)), rel=0.01)
    far = (UTM_GT[0] + 1e6, 10.0, 0.0, UTM_GT[3], 0.0, -10.0)
    apart = open_raster(make_tif(tmp_path / "far.tif", np.zeros((10, 10), np.uint8), far))
    assert np.isnan(pixel_size_ratio(opt, apart))


def test_pixel_jacobian_through_both_georeferences(tmp_path: Path) -> None:
    """Optical pixels per SAR pixel along each SAR axis: pixel size, rotation and CRS."""
    opt = open_raster(make_tif(tmp_path / "opt.tif", np.zeros((200, 200), np.uint8), UTM_GT))
    c, s = 5.0 * np.cos(np.radians(30)), 5.0 * np.sin(np.radians(30))
    rot_gt = (UTM_GT[0] + 100, c, s, UTM_GT[3] - 100, s, -c)
    rot = open_raster(make_tif(tmp_path / "rot.tif", np.zeros((300, 300), np.uint8), rot_gt))
    np.testing.assert_allclose(
        pixel_jacobian(opt, rot), [[c / 10, s / 10], [-s / 10, c / 10]], atol=1e-9
    )
    deg = 1e-4  # a geographic SAR: a degree of longitude is cos(lat) of one of latitude
    centre = transform_points(pixel_to_map(opt, np.array([[100.0, 100.0]])), opt.crs_wkt,
                              wkt(4326))[0]  # fmt: skip
    geo_gt = (centre[0] - 50 * deg, deg, 0.0, centre[1] + 50 * deg, 0.0, -deg)
    geo = open_raster(make_tif(tmp_path / "geo.tif", np.zeros((100, 100), np.uint8), geo_gt,
                               epsg=4326))  # fmt: skip
    jac = pixel_jacobian(opt, geo)
    lon_m, lat_m = 111320 * np.cos(np.radians(centre[1])) * deg, 111130 * deg
    assert jac[0, 0] == pytest.approx(lon_m / 10, rel=0.01)
    assert jac[1, 1] == pytest.approx(lat_m / 10, rel=0.01)
    assert abs(jac[0, 1]) < 0.02 and abs(jac[1, 0]) < 0.02  # UTM's grid convergence
    far = (UTM_GT[0] + 1e6, 10.0, 0.0, UTM_GT[3], 0.0, -10.0)
    apart = open_raster(make_tif(tmp_path / "far.tif", np.zeros((10, 10), np.uint8), far))
    assert np.isnan(pixel_jacobian(opt, apart)).all()


@pytest.mark.parametrize(
    ("driver", "gdal_type", "bands", "ok"),
    [
        ("GTiff", "Float32", 5, True),
        ("GPKG", "Float32", 1, True),
        ("GPKG", "Float32", 2, False),
        ("GPKG", "Byte", 3, True),
        ("GPKG", "UInt16", 1, True),
        ("GPKG", "Byte", 2, False),
        ("GPKG", "Byte", 4, False),
        ("GPKG", "Byte", 5, False),
        ("netCDF", "Float32", 1, True),
        ("netCDF", "Float32", 2, False),
        ("PNG", "UInt16", 4, True),
        ("PNG", "Byte", 5, False),
        ("JPEG", "Byte", 3, True),
        ("JPEG", "Byte", 4, False),
    ],
)
def test_output_band_counts_match_what_gdal_writes(
    tmp_path: Path, driver: str, gdal_type: str, bands: int, ok: bool
) -> None:
    """A band count is accepted exactly where GDAL writes it back, as Register does (a warp
    into a created raster, or a copy for copy-only formats), as one raster of as many bands
    (GeoPackage fails at creation beyond Byte and at the warp for 2 or 4 Byte bands, whose last
    it takes as alpha; netCDF splits bands into subdatasets; JPEG turns 4 bands into 3)."""
    ext = {"GTiff": "tif", "GPKG": "gpkg", "netCDF": "nc", "PNG": "png", "JPEG": "jpg"}[driver]
    if not ok:
        with pytest.raises(ValueError, match=rf"cannot write x\.{ext}: the {driver} format "
                           rf"stores .* band\(s\) of {gdal_type} as one raster, the SAR raster "
                           rf"has {bands}; write a \.tif"):  # fmt: skip
            check_output(driver, gdal_type, None, f"x.{ext}", bands)
    else:
        check_output(driver, gdal_type, None, f"x.{ext}", bands)
    src = gdal.GetDriverByName("MEM").Create("", 32, 32, bands, gdal.GetDataTypeByName(gdal_type))
    src.SetGeoTransform(UTM_GT)
    src.SetProjection(wkt(32633))
    for b in range(bands):
        src.GetRasterBand(b + 1).Fill(b + 1)
    out = str(tmp_path / f"x.{ext}")
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        if can_create(driver):  # as warp_sar: create, then warp into it
            dst = gdal.GetDriverByName(driver).Create(
                out, 32, 32, bands, src.GetRasterBand(1).DataType
            )
            if dst is not None:
                dst.SetGeoTransform(UTM_GT)
                dst.SetProjection(wkt(32633))
                try:
                    warped = gdal.Warp(dst, src)
                except RuntimeError:  # GDAL raising exceptions
                    warped = None
                if not warped:
                    dst = None
                    Path(out).unlink(missing_ok=True)
                dst = warped = None
        else:
            gdal.GetDriverByName(driver).CreateCopy(out, src)  # closed at once
        back = gdal.Open(out) if Path(out).exists() else None
    finally:
        gdal.PopErrorHandler()
    # as many bands, each as written (GeoPackage reads Byte tiles back with an alpha band
    # added; JPEG is lossy)
    same = back is not None and back.RasterCount in (bands, bands + 1 if driver == "GPKG" else -1)
    values = (
        [int(back.GetRasterBand(b + 1).ReadAsArray()[16, 16]) for b in range(bands)] if same else []
    )
    back = None  # closed before any assertion (GDAL objects in a failing assert's repr crashed)
    assert (same and all(abs(v - (b + 1)) <= 2 for b, v in enumerate(values))) == ok, values


def test_one_byte_band_geopackage_is_refused_for_what_reads_back(tmp_path: Path) -> None:
    """A 1-band Byte SAR registered to a .gpkg read back as 4 bands (grey 3 times + alpha) in
    gdal.Open and QgsRasterLayer: GDAL 3.6 stores Byte rasters as RGBA image tiles with no band
    count. Refused, naming the ways that work: a .tif, or a UInt16 / Float32 one-band .gpkg."""
    for gdal_type, bands in (("Byte", 4), ("UInt16", 1), ("Float32", 1)):
        out = tmp_path / f"x_{gdal_type}.gpkg"
        dst = gdal.GetDriverByName("GPKG").Create(
            str(out), 40, 40, 1, gdal.GetDataTypeByName(gdal_type)
        )
        dst.SetGeoTransform(UTM_GT)
        dst.SetProjection(wkt(32633))
        dst.GetRasterBand(1).WriteArray(np.arange(1600).reshape(40, 40) % 200 + 1)
        dst = None
        back = gdal.Open(str(out))
        count, first = back.RasterCount, back.GetRasterBand(1).ReadAsArray()
        back = None
        assert count == bands, gdal_type  # what the refusal / the alternative rest on
        np.testing.assert_array_equal(first, np.arange(1600).reshape(40, 40) % 200 + 1)
    with pytest.raises(ValueError, match=r"cannot write r\.gpkg: the GPKG format stores a Byte "
                       r"band as image tiles, which GDAL and QGIS read back as 4 bands .*write a "
                       r"\.tif instead, or convert the SAR to UInt16 or Float32"):  # fmt: skip
        check_output("GPKG", "Byte", None, "r.gpkg", 1)
    for ok in (("GPKG", "UInt16", 1), ("GPKG", "Float32", 1), ("GTiff", "Byte", 1)):
        check_output(ok[0], ok[1], None, "r.gpkg", ok[2])


def test_lossless_options_are_added_unless_the_user_sets_them() -> None:
    """A Byte GeoPackage gets PNG tiles and a JPEG 2000 the reversible wavelet at quality 100,
    after the user's other options; a key the user sets keeps the user's value (and all of the
    format's additions are left out); other formats and GeoPackage coverages get nothing."""
    assert lossless_creation_options("GPKG", "Byte", ()) == ("TILE_FORMAT=PNG",)
    assert lossless_creation_options("GPKG", "Byte", ("BLOCKSIZE=512",)) == (
        "BLOCKSIZE=512", "TILE_FORMAT=PNG")  # fmt: skip
    assert lossless_creation_options("GPKG", "Byte", ("tile_format=JPEG",)) == (
        "tile_format=JPEG",)  # fmt: skip
    assert lossless_creation_options("JP2OpenJPEG", "UInt16", ("CODEC=JP2",)) == (
        "CODEC=JP2", "REVERSIBLE=YES", "QUALITY=100")  # fmt: skip
    assert lossless_creation_options("JP2OpenJPEG", "Byte", ("QUALITY=40",)) == ("QUALITY=40",)
    assert lossless_creation_options("JP2OpenJPEG", "Byte", ("REVERSIBLE=NO",)) == (
        "REVERSIBLE=NO",)  # fmt: skip
    for driver, gdal_type in (("GPKG", "UInt16"), ("GPKG", "Float32"), ("GTiff", "Byte"),
                              ("JPEG", "Byte"), ("PNG", "Byte")):  # fmt: skip
        assert lossless_creation_options(driver, gdal_type, ("X=1",)) == ("X=1",)


@pytest.mark.parametrize("exceptions", [False, True])
def test_dropped_gdal_messages_are_only_the_named_ones(exceptions: bool) -> None:
    """The statistics failure is dropped; any other message reaches the handler that was
    there, a failure as a failure (as a warning with exceptions on: raised, it would be lost
    to the caller's handler and break the caller)."""
    seen: list[tuple[int, str]] = []
    was = gdal.GetUseExceptions()
    gdal.UseExceptions() if exceptions else gdal.DontUseExceptions()
    gdal.PushErrorHandler(lambda cls, _no, msg: seen.append((cls, str(msg))))
    try:
        with gdal_messages_dropped("Failed to compute statistics") as dropped:
            ds = gdal.GetDriverByName("MEM").Create("", 8, 8, 1, gdal.GDT_Float32)
            band = ds.GetRasterBand(1)
            band.SetNoDataValue(-1.0)
            band.Fill(-1.0)
            try:  # GDAL's own failure (raised with exceptions on)
                band.ComputeStatistics(False)
            except RuntimeError:
                pass
            gdal.Error(gdal.CE_Warning, 1, "a warning")
            if not exceptions:
                gdal.Error(gdal.CE_Failure, 1, "another failure")
            assert seen == []  # passed on when the block ends, the dropped one never
        assert len(dropped) == 1 and "no valid pixels" in dropped[0], dropped
    finally:
        gdal.PopErrorHandler()
        gdal.UseExceptions() if was else gdal.DontUseExceptions()
        band = ds = None
    assert seen == [(gdal.CE_Warning, "a warning")] + (
        [] if exceptions else [(gdal.CE_Failure, "another failure")])  # fmt: skip


def test_16_bit_jpeg_is_refused(tmp_path: Path) -> None:
    """GDAL writes UInt16 to JPEG as 12-bit JPEG and clips above 4095: a registered amplitude
    of values up to 65,000 came back at most 4095 (median error 28,000)."""
    with pytest.raises(ValueError, match=r"cannot write r\.jpg: the JPEG format stores UInt16 "
                       r"bands as 12-bit JPEG, which clips every value above 4095; write a "
                       r"\.tif"):  # fmt: skip
        check_output("JPEG", "UInt16", None, "r.jpg", 1)
    check_output("JPEG", "Byte", None, "r.jpg", 1)
    check_output("PNG", "UInt16", None, "r.png", 1)  # true 16-bit: kept
    src = gdal.GetDriverByName("MEM").Create("", 16, 16, 1, gdal.GDT_UInt16)
    src.GetRasterBand(1).Fill(60000)
    for ext, driver in (("png", "PNG"), ("jpg", "JPEG")):
        gdal.GetDriverByName(driver).CreateCopy(str(tmp_path / f"r.{ext}"), src)  # closed at once
    assert gdal.Open(str(tmp_path / "r.png")).ReadAsArray().max() == 60000
    assert gdal.Open(str(tmp_path / "r.jpg")).ReadAsArray().max() == 4095  # what was refused


def test_32_bit_jpeg2000_is_refused(tmp_path: Path) -> None:
    """The JP2OpenJPEG driver lists Int32 and UInt32, yet OpenJPEG writes at most 31 bits: the
    write failed ('opj_read_header() failed') after all the matching; now refused before."""
    for gdal_type in ("Int32", "UInt32"):
        with pytest.raises(ValueError, match=rf"cannot write r\.jp2: OpenJPEG writes JPEG 2000 "
                           rf"bands of at most 31 bits, the SAR raster is {gdal_type}; write a "
                           r"\.tif"):  # fmt: skip
            check_output("JP2OpenJPEG", gdal_type, None, "r.jp2", 1)
    for gdal_type, dtype in (("Int16", np.int16), ("UInt16", np.uint16)):
        check_output("JP2OpenJPEG", gdal_type, None, "r.jp2", 1)  # kept, and written exactly
        src = gdal.GetDriverByName("MEM").Create("", 16, 16, 1, gdal.GetDataTypeByName(gdal_type))
        data = (np.arange(256).reshape(16, 16) * 97 % 30000 - 100).astype(dtype)
        src.GetRasterBand(1).WriteArray(data)
        out = str(tmp_path / f"r_{gdal_type}.jp2")
        gdal.GetDriverByName("JP2OpenJPEG").CreateCopy(
            out, src, options=["REVERSIBLE=YES", "QUALITY=100"]
        )
        assert np.array_equal(gdal.Open(out).ReadAsArray(), data)
    src = gdal.GetDriverByName("MEM").Create("", 16, 16, 1, gdal.GDT_Int32)
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:  # what was refused: GDAL fails to write it, with exceptions on or off
        written = gdal.GetDriverByName("JP2OpenJPEG").CreateCopy(str(tmp_path / "r32.jp2"), src)
    except RuntimeError:
        written = None
    finally:
        gdal.PopErrorHandler()
    assert written is None
    src = None


def test_scaled_grid_keeps_origin_and_axes(tmp_path: Path) -> None:
    """Pixels ``scale`` times larger on the same origin and axes (a rotated grid stays rotated);
    whole coarse pixels only, and an exact multiple measured with float noise keeps its last."""
    c, s = 10.0 * np.cos(np.radians(30.0)), 10.0 * np.sin(np.radians(30.0))
    rotated = (500000.0, c, s, 5000000.0, s, -c)
    info = open_raster(make_tif(tmp_path / "rot.tif", np.zeros((100, 192), np.uint8), rotated))
    grid = scaled_grid(info, 3.0 * (1 + 1e-12))
    assert (grid.width, grid.height) == (64, 33)
    np.testing.assert_allclose(grid.geotransform, (500000.0, 3 * c, 3 * s, 5000000.0, 3 * s,
                                                   -3 * c), rtol=1e-9)  # fmt: skip
    xy = np.array([[0.0, 0.0], [30.0, 12.0], [191.0, 99.0]])
    np.testing.assert_allclose(pixel_to_map(grid, xy / 3.0), pixel_to_map(info, xy), atol=1e-6)
    assert (scaled_grid(info, 2.5).width, scaled_grid(info, 1000.0).width) == (76, 1)
    for bad in (0.0, -2.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="grid scale must be a positive number"):
            scaled_grid(info, bad)


def test_coarse_matching_grid_resamples_both_rasters_without_bias(tmp_path: Path) -> None:
    """The 2x matching grid of a 20 m SAR on a 10 m optical (the SAR's 2 x 2 block means under
    a wrong, slightly affine georeference): both rasters land on it with no sub-pixel bias.

    Each band holds a pixel-centre coordinate (x, y), a ramp that box averaging and bilinear
    sampling reproduce exactly, so every value read onto the grid is the position it came
    from: the optical averaged onto the grid reads the coarse pixel centre, the SAR the optical
    pixel its georeference puts there. Measured: within 1e-4 px (float32). A half-pixel slip
    of a window origin or of the coarse grid would be 0.5-1 optical px; this pins that the
    x-only bias of a 20 m synthetic SAR (docs/performance.md, stop 22) is not the grid's.
    """
    n, shift = 256, np.array([12.95, -11.28])
    err = np.array([[-4.0e-4, 1.5e-4], [2.3e-5, 4.9e-4]])
    centres = np.mgrid[0:n, 0:n][::-1] + 0.5  # (x, y) of every optical pixel centre
    optical = open_raster(make_tif(tmp_path / "o.tif", centres.astype(np.float32), UTM_GT))
    # SAR px p shows optical px p; its georeference puts p at p + shift + E (p - c), c = n / 2
    lin = np.diag([10.0, -10.0]) @ (np.eye(2) + err)
    off = np.diag([10.0, -10.0]) @ (shift - err @ [n / 2, n / 2]) + (UTM_GT[0], UTM_GT[3])
    sar20_gt = (off[0], 2 * lin[0, 0], 2 * lin[0, 1], off[1], 2 * lin[1, 0], 2 * lin[1, 1])
    blocks = centres.reshape(2, n // 2, 2, n // 2, 2).mean(axis=(2, 4)).astype(np.float32)
    sar = open_raster(make_tif(tmp_path / "s20.tif", blocks, sar20_gt))
    scale = pixel_size_ratio(optical, sar)  # what registration.matching_grid takes
    assert scale == pytest.approx(2.0, abs=2e-3) and scale != 2.0
    grid = scaled_grid(optical, scale)
    x0, y0, w = 30, 40, 48  # inside both footprints
    u = (np.mgrid[y0 : y0 + w, x0 : x0 + w][::-1] + 0.5) * scale  # coarse centres, optical px
    # the optical pixel the SAR's georeference puts at u: solve u = q + shift + E (q - c)
    rhs = u.reshape(2, -1) - (shift - err @ [n / 2, n / 2])[:, None]
    q = np.linalg.solve(np.eye(2) + err, rhs).reshape(u.shape)
    for band in (1, 2):
        tpl, tpl_ok = read_on_grid(optical, band, grid, x0, y0, w, w, "average")
        reg, reg_ok = read_on_grid(sar, band, grid, x0, y0, w, w, "bilinear")
        assert tpl_ok.all() and reg_ok.all()
        np.testing.assert_allclose(tpl, u[band - 1], atol=1e-3)
        np.testing.assert_allclose(reg, q[band - 1], atol=1e-3)


def test_footprint_no_overlap(tmp_path: Path) -> None:
    a = open_raster(make_tif(tmp_path / "a.tif", np.zeros((10, 10), np.uint8), UTM_GT))
    far = (UTM_GT[0] + 1e5, 10.0, 0.0, UTM_GT[3], 0.0, -10.0)
    b = open_raster(make_tif(tmp_path / "b.tif", np.zeros((10, 10), np.uint8), far))
    x0, y0, x1, y1 = footprint_overlap(a, b)
    assert x1 - x0 == 0 or y1 - y0 == 0


def test_write_raster_atomic(tmp_path: Path) -> None:
    out = tmp_path / "maps.tif"
    data = np.random.default_rng(0).normal(size=(2, 8, 9)).astype(np.float32)
    write_raster_atomic(out, data, UTM_GT, wkt(32633), nodata=-1)
    info = open_raster(out)
    assert info.band_count == 2 and info.nodata == (-1.0, -1.0)
    np.testing.assert_array_equal(read_window(info, 2, 0, 0, 9, 8)[0], data[1])
    with pytest.raises(KeyboardInterrupt):  # cancel mid-write: no partial, old file intact
        with atomic_output(tmp_path / "x.tif") as tmp:
            assert tmp.parent == tmp_path and f"partial-{os.getpid()}" in tmp.name
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.tif"]


def test_gdal_cache_limit_restores_the_setting_when_runs_overlap() -> None:
    """Run A enters, B enters, A leaves, B leaves: B restored the 256 MiB it saw on entry, so
    GDAL's process-wide cache stayed lowered for good."""
    import threading

    from sar_optical_matcher.rasters import gdal_cache_limit

    old = gdal.GetCacheMax()
    gdal.SetCacheMax(1_000_000_000)
    try:
        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
        during: list[int] = []

        def run_a() -> None:
            with gdal_cache_limit(256 * 2**20):
                a_in.set()
                b_in.wait(5)
            a_out.set()

        def run_b() -> None:
            a_in.wait(5)
            with gdal_cache_limit(128 * 2**20):
                b_in.set()
                a_out.wait(5)
                during.append(gdal.GetCacheMax())  # still limited while B runs

        threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert during == [128 * 2**20] and gdal.GetCacheMax() == 1_000_000_000
    finally:
        gdal.SetCacheMax(old)


def test_default_geotiff_is_a_bigtiff_where_it_may_pass_4_gb(tmp_path: Path) -> None:
    """Compressed, GDAL makes a classic TIFF of any size unless told: a 40,000 px square
    Float32 output (6.4 GB raw) was one, and its warp failed once 4 GB were written."""
    from sar_optical_matcher import rasters

    def magic(side: int) -> int:
        path = tmp_path / f"{side}.tif"
        options = list(rasters.default_creation_options("GTiff"))
        gdal.GetDriverByName("GTiff").Create(str(path), side, side, 1, gdal.GDT_Float32, options)
        return path.read_bytes()[2]  # 42: classic TIFF, 43: BigTIFF

    assert magic(40000) == 43
    assert magic(1000) == 42  # small outputs stay classic TIFFs (every reader)


def test_creation_options_are_checked_against_the_format() -> None:
    """Each format gets the defaults it knows; an option it does not know is an error that
    lists the ones it has (GDAL itself warns and writes without it)."""
    from sar_optical_matcher import rasters

    assert rasters.default_creation_options("GTiff") == (
        "COMPRESS=DEFLATE",
        "TILED=YES",
        "BIGTIFF=IF_SAFER",
    )
    assert rasters.default_creation_options("PNG") == ()
    assert rasters.default_creation_options("GPKG") == ()
    rasters.check_creation_options("GTiff", ["compress=lzw", "BIGTIFF=YES"], "a.tif")
    rasters.check_creation_options("PNG", ["ZLEVEL=9"], "a.png")
    with pytest.raises(ValueError, match=r"COMPRESS=DEFLATE, TILED: not creation option\(s\) "
                       r"of the PNG format of a\.png .*its options are .*ZLEVEL"):  # fmt: skip
        rasters.check_creation_options("PNG", ["ZLEVEL=6", "COMPRESS=DEFLATE", "TILED"], "a.png")


def test_creation_option_values_are_checked_against_the_format(tmp_path: Path) -> None:
    """A value GDAL does not know (COMPRESS=NOSUCH, a typo as DEFLAT, TILED=MAYBE,
    ZLEVEL=high) was ignored by GDAL with a warning the plugin did not show: the file came
    out uncompressed, untiled. Now an error naming the values there are; the values GDAL
    reads (any case, aliases, every boolean form) pass, and every default passes."""
    from osgeo import gdal

    from sar_optical_matcher import rasters

    given = ["compress=deflate", "TILED=true", "ZLEVEL=9", "BIGTIFF=if_safer", "PREDICTOR=2"]
    rasters.check_creation_options("GTiff", given, "a.tif")
    for driver in ("GTiff", "GPKG", "JP2OpenJPEG", "netCDF", "PNG", "JPEG"):
        rasters.check_creation_options(driver, rasters.default_creation_options(driver), "a")
    rasters.check_creation_options("JP2OpenJPEG", ["REVERSIBLE=YES", "QUALITY=100"], "a.jp2")
    for option, why in (
        ("COMPRESS=NOSUCH", r"'NOSUCH' is not one of NONE, LZW, PACKBITS, JPEG, .*DEFLATE"),
        ("COMPRESS=DEFLAT", r"'DEFLAT' is not one of"),
        ("TILED=MAYBE", r"'MAYBE' is not YES or NO"),
        ("ZLEVEL=high", r"'high' is not an integer"),
    ):
        with pytest.raises(ValueError, match=rf"^{option}: {why}.* for the {option.split('=')[0]}"
                           r" creation option of the GTiff format of a\.tif \(GDAL would ignore "
                           r"it and write the file without it\)$"):  # fmt: skip
            rasters.check_creation_options("GTiff", ["TILED=YES", option], "a.tif")
    # what GDAL does with it: a warning, and the file written without the option
    gdal.GetDriverByName("GTiff").Create(str(tmp_path / "x.tif"), 8, 8, 1, gdal.GDT_Byte,
                                         ["COMPRESS=NOSUCH"]).FlushCache()  # fmt: skip
    assert gdal.Info(str(tmp_path / "x.tif"), format="json")["metadata"].get(
        "IMAGE_STRUCTURE", {}).get("COMPRESSION") is None  # fmt: skip


@pytest.mark.parametrize("kind", ["alpha", "per_dataset_mask"])
def test_read_on_grid_honours_alpha_bands_and_dataset_masks(tmp_path: Path, kind: str) -> None:
    """The transparent half of an RGBA orthophoto (or a raster's per-dataset mask) is invalid
    when resampled onto another grid too; read_on_grid called it all valid (1.0, not 0.5)."""
    from osgeo import gdal, osr

    from sar_optical_matcher import rasters

    path = tmp_path / f"{kind}.tif"
    drv = gdal.GetDriverByName("GTiff")
    n_bands = 4 if kind == "alpha" else 1
    ds = drv.Create(
        str(path), 64, 64, n_bands, gdal.GDT_Byte, ["ALPHA=YES"] if n_bands == 4 else []
    )
    ds.SetGeoTransform((500000, 10, 0, 4000000, 0, -10))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    ramp = np.tile(np.arange(64, dtype=np.uint8), (64, 1)) + 50
    keep = np.full((64, 64), 255, np.uint8)
    keep[:, :32] = 0  # the left half transparent
    if kind == "alpha":
        for b in (1, 2, 3):
            ds.GetRasterBand(b).WriteArray(ramp)
        ds.GetRasterBand(4).WriteArray(keep)
    else:
        ds.GetRasterBand(1).WriteArray(ramp)
        ds.CreateMaskBand(gdal.GMF_PER_DATASET)
        ds.GetRasterBand(1).GetMaskBand().WriteArray(keep)
    ds = None
    info = rasters.open_raster(str(path))
    _, want = rasters.read_window(info, 1, 0, 0, 64, 64)
    data, valid = rasters.read_on_grid(info, 1, info, 0, 0, 64, 64)
    assert want.mean() == 0.5 and valid.mean() == 0.5
    np.testing.assert_array_equal(valid, want)
    np.testing.assert_array_equal(data[valid], ramp[want].astype(np.float32))
    coarse = rasters.scaled_grid(info, 2.0)  # 20 m pixels, averaged
    _, valid2 = rasters.read_on_grid(info, 1, coarse, 0, 0, 32, 32, "average")
    assert valid2[:, :15].sum() == 0 and valid2[:, 17:].all()


def test_raster_sar_scale_reads_the_valid_finite_pixels(tmp_path: Path) -> None:
    """dB with -inf pixels (log of 0) is dB; linear data whose nodata is -9999 is linear; a
    uint8 band is dB; a 3000 px band is decided from a decimated read."""
    from sar_optical_matcher import rasters

    db = np.full((64, 64), -12.0, np.float32)
    db[:8] = -np.inf
    db[40:] = 3.0
    info = rasters.open_raster(str(make_tif(tmp_path / "db.tif", db, UTM_GT)))
    assert rasters.raster_sar_scale(info, 1) == "db"
    lin = np.full((64, 64), 0.2, np.float32)
    lin[:10] = -9999.0
    info = rasters.open_raster(str(make_tif(tmp_path / "lin.tif", lin, UTM_GT, nodata=-9999.0)))
    assert rasters.raster_sar_scale(info, 1) == "linear"
    big = np.full((3000, 3000), -5.0, np.float32)
    info = rasters.open_raster(str(make_tif(tmp_path / "big.tif", big, UTM_GT)))
    assert rasters.raster_sar_scale(info, 1, sample_px=256) == "db"
    u8 = rasters.open_raster(str(make_tif(tmp_path / "u8.tif", np.ones((8, 8), np.uint8), UTM_GT)))
    assert rasters.raster_sar_scale(u8, 1) == "db"


@pytest.fixture(name="encoded_sars", scope="module")
def encoded_sars_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The synthetic pair's SAR in each of ``scripts/make_synthetic_pair.py``'s encodings."""
    from sar_optical_matcher.synthetic import SAR_DTYPES, make_georeferenced_pair, write_pair

    folder = tmp_path_factory.mktemp("encoded")
    pair = make_georeferenced_pair(384, np.random.default_rng(3))
    return {d: write_pair(pair, folder, d, sar_dtype=d)["sar"] for d in SAR_DTYPES}


def test_linear_sar_evidence_fires_on_linear_data_only(encoded_sars: dict[str, Path]) -> None:
    """Linear float32 / uint16 amplitude and its square (intensity) look linear; dB, 8-bit
    display data and dB shifted positive, stretched to [0, 1], stored as UInt16 or mostly dark
    (water) do not."""
    from sar_optical_matcher.rasters import band_sample_grid, linear_sar_evidence

    def grid(d: str) -> np.ndarray:
        return band_sample_grid(open_raster(encoded_sars[d]), 1)

    for d in ("float32", "uint16"):
        text = linear_sar_evidence(grid(d), d)
        assert text is not None and text.startswith("no negative value, median ")
        assert "99th percentile" in text and "correlation 0." in text
    assert linear_sar_evidence(grid("float32") ** 2, "float32") is not None
    assert linear_sar_evidence(grid("uint8"), "uint8") is None
    assert linear_sar_evidence(grid("uint8"), "uint16") is None  # not only by its dtype
    db = grid("db")
    water = np.where(np.arange(db.shape[1]) < 0.7 * db.shape[1], db - 12.0, db)
    not_linear = {
        "db": db,
        "db + 40": db + 40.0,
        "db - min": db - np.nanmin(db),
        "db stretched": np.clip((db + 20.0) / 25.0, 0.0, 1.0),
        "db x 100 uint16": np.rint((db + 50.0) * 100.0),
        "water db - min": water - np.nanmin(water),
    }
    fired = [k for k, v in not_linear.items() if linear_sar_evidence(v, "float32") is not None]
    assert fired == []


def test_ground_pixel_size_of_a_geographic_raster_scales_longitude(tmp_path: Path) -> None:
    """Degrees are not square on the ground: 1e-4 x 1e-4 degrees at 60 N is 2:1 (5.57 x 11.1
    m); 2e-4 x 1e-4 degrees there is square. A projected raster: its geotransform's steps."""
    from sar_optical_matcher.rasters import ground_pixel_size, pixel_aspect

    def raster(name: str, gt: tuple, epsg: int) -> object:
        ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / name), 20, 20, 1, gdal.GDT_Byte)
        ds.SetGeoTransform(gt)
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
        ds = None
        return open_raster(tmp_path / name)

    equal_deg = raster("deg.tif", (10.0, 1e-4, 0.0, 60.001, 0.0, -1e-4), 4326)
    x, y, unit = ground_pixel_size(equal_deg)
    assert (
        unit == "m" and x == pytest.approx(5.566, abs=0.01) and y == pytest.approx(11.13, abs=0.01)
    )
    assert pixel_aspect(equal_deg) == pytest.approx(2.0, abs=0.001)
    square = raster("sq.tif", (10.0, 2e-4, 0.0, 60.001, 0.0, -1e-4), 4326)
    assert pixel_aspect(square) == pytest.approx(1.0, abs=0.001)
    utm = raster("utm.tif", (500000.0, 10.0, 0.0, 4100000.0, 0.0, -20.0), 32633)
    assert ground_pixel_size(utm) == (10.0, 20.0, "map units") and pixel_aspect(utm) == 2.0
