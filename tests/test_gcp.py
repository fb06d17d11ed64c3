"""QGIS Georeferencer .points files: format, round trip, and QGIS's source-coordinate convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sar_optical_matcher import gcp

WKT = 'PROJCRS["WGS 84 / UTM zone 33N",BASEGEOGCRS["WGS 84",DATUM["World Geodetic System 1984"]]]'
GT = (400000.0, 10.0, 0.0, 5000000.0, 0.0, -10.0)


def _table(rng: np.random.Generator, n: int = 7) -> gcp.GcpTable:
    px = rng.uniform(0, 500, (n, 2))
    return gcp.make_table(
        map_xy=rng.uniform(1e5, 9e5, (n, 2)),
        source_xy=gcp.source_from_pixels(px, GT),
        crs_wkt=WKT,
        enabled=rng.random(n) > 0.3,
        residual_xy=rng.normal(0, 0.5, (n, 2)),
    )


def test_file_layout_matches_qgis(tmp_path: Path) -> None:
    table = gcp.make_table([[500010.5, 4999990.25]], [[10.5, -20.5]], WKT, [True], [[0.3, -0.4]])
    path = gcp.write_points(tmp_path / "a.points", table)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#CRS: " + WKT
    assert lines[1] == "mapX,mapY,sourceX,sourceY,enable,dX,dY,residual"
    assert lines[2] == "500010.5,4999990.25,10.5,-20.5,1,0.3,-0.4,0.5"
    assert len(lines) == 3


def test_round_trip_is_exact(tmp_path: Path) -> None:
    table = _table(np.random.default_rng(1))
    back = gcp.read_points(gcp.write_points(tmp_path / "t.points", table))
    assert back.crs_wkt == WKT
    np.testing.assert_array_equal(back.map_xy, table.map_xy)
    np.testing.assert_array_equal(back.source_xy, table.source_xy)
    np.testing.assert_array_equal(back.enabled, table.enabled)
    np.testing.assert_allclose(back.residual_xy, table.residual_xy, rtol=0, atol=0)


def test_source_coordinates_follow_qgis_raster_change_coords() -> None:
    # QgsRasterChangeCoords::toColumnLine: col = (x - ulx) / resx, line = (uly - y) / resy with
    # resy < 0 for a north-up raster, i.e. the Georeferencer's line is -row.
    px = np.array([[0.0, 0.0], [12.5, 7.25], [100.0, 300.0]])
    src = gcp.source_from_pixels(px, GT)
    np.testing.assert_allclose(src[1], [400125.0, 4999927.5])
    qgis_line = (GT[3] - src[:, 1]) / GT[5]
    np.testing.assert_allclose(qgis_line, -px[:, 1])
    np.testing.assert_allclose(gcp.pixels_from_source(src, GT), px)


def test_ungeoreferenced_source_uses_negative_rows() -> None:
    px = np.array([[3.5, 4.5], [0.0, 10.0]])
    np.testing.assert_allclose(gcp.source_from_pixels(px), [[3.5, -4.5], [0.0, -10.0]])
    np.testing.assert_allclose(gcp.pixels_from_source(gcp.source_from_pixels(px)), px)


def test_reads_a_qgis_written_file_without_crs_and_tab_format(tmp_path: Path) -> None:
    path = tmp_path / "q.points"
    path.write_text(
        "mapX,mapY,sourceX,sourceY,enable,dX,dY,residual\n"
        "4316373.376414543,3385976.075841331,3899,-1161,1,-0.1,0.2,0.22\n"
        "4880681.5,5391377.5,6584,-6754,0,0,0,0\n"
        "1\t2\t3\t-4\n",
        encoding="utf-8",
    )
    t = gcp.read_points(path)
    assert t.crs_wkt is None and len(t) == 3
    np.testing.assert_allclose(t.source_xy[0], [3899, -1161])
    assert t.enabled.tolist() == [True, False, True]
    np.testing.assert_allclose(t.residual_xy[0], [-0.1, 0.2])


def test_reads_a_file_saved_with_a_byte_order_mark(tmp_path: Path) -> None:
    """A .points file edited and saved by Excel or Notepad starts with a UTF-8 BOM: its #CRS
    line was taken for a GCP ('malformed GCP at line 1')."""
    table = _table(np.random.default_rng(3))
    path = tmp_path / "bom.points"
    path.write_bytes(b"\xef\xbb\xbf" + gcp.format_points(table).encode("utf-8"))
    back = gcp.read_points(path)
    assert back.crs_wkt == WKT and len(back) == len(table)
    np.testing.assert_array_equal(back.map_xy, table.map_xy)


def test_gcps_drive_gdal_to_the_same_affine(tmp_path: Path) -> None:
    gdal = pytest.importorskip("osgeo.gdal")
    rng = np.random.default_rng(3)
    a = np.array([[1.01, 0.02, 5.0], [-0.015, 0.99, -3.0]])  # SAR px -> optical px
    px = rng.uniform(0, 200, (12, 2))
    opt_gt = (300000.0, 2.0, 0.0, 6000000.0, 0.0, -2.0)
    opt_px = px @ a[:, :2].T + a[:, 2]
    map_xy = np.column_stack([opt_gt[0] + opt_px[:, 0] * 2.0, opt_gt[3] - opt_px[:, 1] * 2.0])
    table = gcp.make_table(map_xy, gcp.source_from_pixels(px, GT), WKT)
    back = gcp.read_points(gcp.write_points(tmp_path / "g.points", table))
    pix = gcp.pixels_from_source(back.source_xy, GT)
    gcps = [gdal.GCP(mx, my, 0, x, y) for (mx, my), (x, y) in zip(back.map_xy, pix)]
    gt = gdal.GCPsToGeoTransform(gcps)
    expect = (
        opt_gt[0] + 2.0 * a[0, 2],
        2.0 * a[0, 0],
        2.0 * a[0, 1],
        opt_gt[3] - 2.0 * a[1, 2],
        -2.0 * a[1, 0],
        -2.0 * a[1, 1],
    )
    np.testing.assert_allclose(gt, expect, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"map_xy": np.zeros((2, 3)), "source_xy": np.zeros((2, 2))}, "shape"),
        ({"map_xy": np.zeros((2, 2)), "source_xy": np.zeros((3, 2))}, "pair them"),
        ({"map_xy": [[np.nan, 0.0]], "source_xy": [[0.0, 0.0]]}, "finite"),
    ],
)
def test_bad_tables_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gcp.make_table(crs_wkt=None, **kwargs)


def test_malformed_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.points"
    path.write_text("#CRS: \nmapX,mapY,sourceX,sourceY,enable,dX,dY,residual\n1,2,x,4\n")
    with pytest.raises(ValueError, match="line 3"):
        gcp.read_points(path)


def test_bad_geotransform_is_refused() -> None:
    with pytest.raises(ValueError, match="non-zero pixel sizes"):
        gcp.source_from_pixels(np.zeros((1, 2)), (0, 0, 0, 0, 0, 0))
