"""Processing algorithm 'Detect keypoints' through processing.run and qgis_process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.processing import EPSG, OPT_GT, _write, provider_fixture  # noqa: F401
from tests.qgis_helpers import recording_feedback

SQUARES = [(40, 50), (150, 60), (60, 160), (170, 170)]  # top-left (x, y) of 30 px squares


def _squares_raster(folder: Path) -> tuple[Path, np.ndarray]:
    """256 px raster with four bright squares; returns it and their (16, 2) corner positions."""
    img = np.full((256, 256), 20, np.uint8)
    corners = []
    for x, y in SQUARES:
        img[y : y + 30, x : x + 30] = 220
        corners += [(x, y), (x + 30, y), (x, y + 30), (x + 30, y + 30)]
    return _write(folder / "squares.tif", img, OPT_GT), np.array(corners, np.float64)


def _features(layer) -> list:
    return sorted(layer.getFeatures(), key=lambda f: f["id"])


def test_settings_translate_parameters(provider, tmp_path: Path) -> None:
    from qgis.core import QgsProcessingContext

    from sar_optical_matcher.processing.detect_keypoints import DetectKeypointsAlgorithm

    path, _ = _squares_raster(tmp_path)
    alg = DetectKeypointsAlgorithm()
    alg.initAlgorithm()
    extent = f"500100,500900,4098000,4099900 [EPSG:{EPSG}]"
    s = alg.settings(
        {
            "INPUT": str(path),
            "BAND": 1,
            "MIN_DISTANCE": 17.5,
            "MAX_COUNT": 9,
            "BORDER": 12,
            "SPREAD": 0.25,
            "EXTENT": extent,
        },
        QgsProcessingContext(),
    )
    assert s.raster_path == str(path)
    d = s.detect
    assert (d.band, d.min_distance_px, d.max_count, d.border_px) == (1, 17.5, 9, 12)
    assert d.spread == 0.25 and d.coverage is None
    assert d.extent_map == pytest.approx((500100, 4098000, 500900, 4099900))
    assert d.mask_wkt is None
    defaults = alg.settings({"INPUT": str(path)}, QgsProcessingContext()).detect
    assert (defaults.min_distance_px, defaults.max_count, defaults.border_px) == (128, 500, 128)
    assert defaults.spread == 0.5
    assert alg.createInstance() is not alg and type(alg.createInstance()) is type(alg)


def test_keypoints_land_on_the_square_corners(provider, tmp_path: Path) -> None:
    import processing

    path, corners = _squares_raster(tmp_path)
    out = processing.run(
        "sarmatcher:detectkeypoints",
        {"INPUT": str(path), "MIN_DISTANCE": 12, "MAX_COUNT": 50, "BORDER": 8, "OUTPUT": "memory:"},
    )["OUTPUT"]
    feats = _features(out)
    assert len(feats) == 16
    assert [f.name() for f in out.fields()] == ["id", "x_px", "y_px", "response"]
    xy = np.array([[f["x_px"], f["y_px"]] for f in feats])
    d = np.linalg.norm(xy[:, None] - corners[None], axis=2)
    assert d.min(axis=1).max() < 3.0, "every keypoint is on a square corner"
    assert d.min(axis=0).max() < 3.0, "every corner got a keypoint"
    # geometry in the raster CRS at the pixel position
    p = feats[0].geometry().asPoint()
    assert p.x() == pytest.approx(OPT_GT[0] + xy[0, 0] * OPT_GT[1])
    assert p.y() == pytest.approx(OPT_GT[3] + xy[0, 1] * OPT_GT[5])
    assert out.crs().authid() == f"EPSG:{EPSG}"
    responses = [f["response"] for f in feats]
    assert responses == sorted(responses, reverse=True)


def test_mask_layer_in_another_crs_limits_keypoints(provider, tmp_path: Path) -> None:
    import processing
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransform,
        QgsFeature,
        QgsGeometry,
        QgsProject,
        QgsRectangle,
        QgsVectorLayer,
    )

    path, _ = _squares_raster(tmp_path)
    # left half of the raster (x < 128 px), given in WGS 84
    rect = QgsGeometry.fromRect(
        QgsRectangle(OPT_GT[0], OPT_GT[3] - 2560, OPT_GT[0] + 1280, OPT_GT[3])
    )
    rect.transform(
        QgsCoordinateTransform(
            QgsCoordinateReferenceSystem(f"EPSG:{EPSG}"),
            QgsCoordinateReferenceSystem("EPSG:4326"),
            QgsProject.instance(),
        )
    )
    mask = QgsVectorLayer("Polygon?crs=EPSG:4326", "mask", "memory")
    f = QgsFeature()
    f.setGeometry(rect)
    mask.dataProvider().addFeatures([f])
    out = processing.run(
        "sarmatcher:detectkeypoints",
        {"INPUT": str(path), "MIN_DISTANCE": 12, "BORDER": 8, "MASK": mask, "OUTPUT": "memory:"},
    )["OUTPUT"]
    xs = [f["x_px"] for f in out.getFeatures()]
    assert len(xs) == 8 and max(xs) < 128


def test_invalid_and_misplaced_masks(provider, tmp_path: Path) -> None:
    """A self-intersecting (bow-tie) mask is repaired, not fed to QGIS's invalid-geometry
    check from inside the Python loop, which corrupted the interpreter; a mask away from the
    raster gives a warning about the MASK, not about the raster."""
    import processing
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer

    path, _ = _squares_raster(tmp_path)
    x0, y0 = OPT_GT[0], OPT_GT[3]

    def mask_layer(wkt: str) -> QgsVectorLayer:
        layer = QgsVectorLayer(f"Polygon?crs=EPSG:{EPSG}", "mask", "memory")
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromWkt(wkt))
        layer.dataProvider().addFeatures([f])
        return layer

    # a bow-tie over the whole raster: left and right triangles meeting at its centre
    bowtie = (f"POLYGON(({x0} {y0}, {x0 + 2560} {y0 - 2560}, {x0 + 2560} {y0}, "
              f"{x0} {y0 - 2560}, {x0} {y0}))")  # fmt: skip
    params = {"INPUT": str(path), "MIN_DISTANCE": 12, "BORDER": 8, "OUTPUT": "memory:"}
    out = processing.run("sarmatcher:detectkeypoints", {**params, "MASK": mask_layer(bowtie)})
    feats = list(out["OUTPUT"].getFeatures())
    assert feats  # the repaired bow-tie: keypoints in its two triangles only
    for f in feats:
        x, y = f["x_px"], f["y_px"]
        assert abs(x - 128) >= abs(y - 128) - 2, (x, y)  # the left and right triangles
    assert sum(range(10)) == 45  # the interpreter still runs plain Python
    feedback = recording_feedback()
    warnings = feedback.warnings

    far = (
        f"POLYGON(({x0 + 1e6} {y0}, {x0 + 1e6 + 500} {y0}, {x0 + 1e6 + 500} {y0 - 500}, "
        f"{x0 + 1e6} {y0}))"
    )
    out = processing.run("sarmatcher:detectkeypoints", {**params, "MASK": mask_layer(far)},
                         feedback=feedback)  # fmt: skip
    assert out["OUTPUT"].featureCount() == 0
    assert any("no keypoints found inside MASK" in w for w in warnings), warnings
    # makeValid turns a zero-area ring into a line and a spike into polygon + lines: only the
    # polygon parts are a mask (lines were burnt in as mask pixels outside any polygon)
    from qgis.core import QgsProcessingException

    flat = f"POLYGON(({x0} {y0}, {x0 + 2560} {y0 - 2560}, {x0} {y0}))"
    with pytest.raises(QgsProcessingException, match="MASK has no polygons"):
        processing.run("sarmatcher:detectkeypoints", {**params, "MASK": mask_layer(flat)})
    left = (
        f"POLYGON(({x0} {y0}, {x0 + 1280} {y0}, {x0 + 1280} {y0 - 2560}, {x0} {y0 - 2560}, "
        f"{x0} {y0}, {x0 + 2560} {y0 - 2560}, {x0} {y0}))"
    )  # left half + a diagonal spike
    out = processing.run("sarmatcher:detectkeypoints", {**params, "MASK": mask_layer(left)})
    xs = [f["x_px"] for f in out["OUTPUT"].getFeatures()]
    assert xs and max(xs) < 128, xs


def test_lines_and_points_are_no_mask(provider, tmp_path: Path) -> None:
    """A line or point layer given as MASK (QGIS 3.22's processing.run does not check the
    geometry type): the lines were burnt in as mask pixels and the run found "no keypoints
    inside MASK: its polygons cover no textured part" with no polygon at all. Lines and
    points are no mask, as those makeValid leaves already were: "MASK has no polygons"; a
    collection keeps its polygons."""
    import processing
    from qgis.core import QgsProcessingException

    from tests.qgis_helpers import memory_layer

    path, _ = _squares_raster(tmp_path)
    x0, y0 = OPT_GT[0], OPT_GT[3]
    params = {"INPUT": str(path), "MIN_DISTANCE": 12, "BORDER": 8, "OUTPUT": "memory:"}
    diagonal = f"LINESTRING({x0 + 1500} {y0 - 600}, {x0 + 2000} {y0 - 2000})"  # right squares
    for kind, wkt in (("LineString", diagonal), ("Point", f"POINT({x0 + 1500} {y0 - 600})")):
        mask = memory_layer(kind, f"EPSG:{EPSG}", [wkt])
        with pytest.raises(QgsProcessingException, match="MASK has no polygons"):
            processing.run("sarmatcher:detectkeypoints", {**params, "MASK": mask})
    x1, y1 = x0 + 1280, y0 - 2560  # the left half
    left = f"POLYGON(({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"
    mask = memory_layer("GeometryCollection", f"EPSG:{EPSG}",
                        [f"GEOMETRYCOLLECTION({left}, {diagonal})"])  # fmt: skip
    out = processing.run("sarmatcher:detectkeypoints", {**params, "MASK": mask})["OUTPUT"]
    xs = [f["x_px"] for f in out.getFeatures()]
    assert len(xs) == 8 and max(xs) < 128, xs  # the corners of the two left squares


def test_extent_in_another_crs_is_applied_exactly(provider, tmp_path: Path) -> None:
    """An extent in EPSG:32632 over this EPSG:32633 raster is rotated by 3.6 degrees in the
    raster's grid: only its bounding box was applied, and 12 of 103 keypoints lay outside it."""
    import processing
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransform,
        QgsPointXY,
        QgsProject,
    )

    from tests.processing import world_texture

    img = (world_texture(np.random.default_rng(3), 384) * 255).astype(np.uint8)
    path = _write(tmp_path / "textured.tif", img, OPT_GT)
    to_32632 = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem(f"EPSG:{EPSG}"),
        QgsCoordinateReferenceSystem("EPSG:32632"),
        QgsProject.instance(),
    )
    centre = to_32632.transform(QgsPointXY(OPT_GT[0] + 1920, OPT_GT[3] - 1920))
    x0, x1, y0, y1 = centre.x() - 1200, centre.x() + 1200, centre.y() - 1200, centre.y() + 1200
    out = processing.run(
        "sarmatcher:detectkeypoints",
        {"INPUT": str(path), "MIN_DISTANCE": 6, "MAX_COUNT": 10_000, "BORDER": 8,
         "EXTENT": f"{x0},{x1},{y0},{y1} [EPSG:32632]", "OUTPUT": "memory:"},
    )["OUTPUT"]  # fmt: skip
    feats = list(out.getFeatures())
    assert len(feats) > 50  # the 240 x 240 px extent is textured throughout
    inside = []
    for f in feats:  # each keypoint, back in the extent's CRS
        x_map = OPT_GT[0] + f["x_px"] * OPT_GT[1]
        y_map = OPT_GT[3] + f["y_px"] * OPT_GT[5]
        q = to_32632.transform(QgsPointXY(x_map, y_map))
        inside.append(x0 - 1e-6 <= q.x() <= x1 + 1e-6 and y0 - 1e-6 <= q.y() <= y1 + 1e-6)
    assert all(inside), f"{inside.count(False)} of {len(feats)} keypoints outside the extent"


def test_runs_without_a_feedback_object(provider, tmp_path: Path) -> None:
    """QgsProcessingAlgorithm.run(parameters, context, None) hands processAlgorithm no
    feedback: it failed with AttributeError 'NoneType' object has no attribute 'pushInfo'."""
    from qgis.core import QgsProcessingContext, QgsProcessingUtils

    from sar_optical_matcher.processing.detect_keypoints import DetectKeypointsAlgorithm

    path, _ = _squares_raster(tmp_path)
    alg = DetectKeypointsAlgorithm()
    alg.initAlgorithm()
    context = QgsProcessingContext()
    params = {"INPUT": str(path), "MIN_DISTANCE": 12, "BORDER": 8, "OUTPUT": "memory:"}
    dest = alg.processAlgorithm(params, context, None)["OUTPUT"]
    assert QgsProcessingUtils.mapLayerFromString(dest, context).featureCount() == 16


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"BAND": 3}, "band 3"),
        ({"BORDER": 200}, "smaller border"),
        ({"BORDER": 2**31}, "BORDER"),  # ran as BORDER 0: QGIS wrapped the 32-bit int
        ({"MAX_COUNT": 99_999_999_999}, "MAX_COUNT"),
        ({"SPREAD": 1.5}, "SPREAD"),
        # was "no room for keypoints ... use ... a smaller border"
        (
            {"EXTENT": f"600000,601000,4000000,4001000 [EPSG:{EPSG}]", "BORDER": 8},
            "EXTENT does not overlap",
        ),
        # was ignored: keypoints all over the raster
        ({"EXTENT": f"500100,500100,4098000,4099000 [EPSG:{EPSG}]", "BORDER": 8}, "is empty"),
    ],
)
def test_bad_inputs_raise_clear_errors(provider, tmp_path: Path, params, message) -> None:
    import processing
    from qgis.core import QgsProcessingException

    path, _ = _squares_raster(tmp_path)
    with pytest.raises(QgsProcessingException, match=message):
        processing.run(
            "sarmatcher:detectkeypoints",
            {"INPUT": str(path), "OUTPUT": str(tmp_path / "k.gpkg"), **params},
        )
    assert not (tmp_path / "k.gpkg").exists()


def test_raster_without_georeference_is_refused(provider, tmp_path: Path) -> None:
    import processing
    from osgeo import gdal
    from qgis.core import QgsProcessingException

    path = tmp_path / "plain.tif"
    gdal.GetDriverByName("GTiff").Create(str(path), 64, 64, 1, gdal.GDT_Byte).FlushCache()
    with pytest.raises(QgsProcessingException, match="georeference"):
        processing.run(
            "sarmatcher:detectkeypoints", {"INPUT": str(path), "BORDER": 0, "OUTPUT": "memory:"}
        )


@pytest.mark.qgis_process
def test_qgis_process_cli(qgis_profile: dict[str, str], tmp_path: Path) -> None:
    from osgeo import ogr

    path, _ = _squares_raster(tmp_path)
    out = tmp_path / "kp.gpkg"
    res = run_cli_detect(qgis_profile, path, out)
    assert Path(res["results"]["OUTPUT"].split("|")[0]) == out
    ds = ogr.Open(str(out))  # keep the dataset alive while its layer is used
    assert ds.GetLayer(0).GetFeatureCount() == 16


def run_cli_detect(env: dict[str, str], path: Path, out: Path) -> dict:
    from tests.processing import run_cli

    return run_cli(
        env, "detectkeypoints", {"INPUT": path, "MIN_DISTANCE": 12, "BORDER": 8, "OUTPUT": out}
    )


def test_spread_reaches_a_low_contrast_half(provider, tmp_path: Path) -> None:
    """Strongest first (SPREAD 0), every keypoint fell in the contrasted half; by default half
    of them are shared out over the raster's cells."""
    import processing
    from scipy import ndimage

    rng = np.random.default_rng(5)
    img = ndimage.gaussian_filter(rng.normal(size=(400, 400)), 3.0) * 40 + 100
    img[:, :200] = 100 + 0.3 * (img[:, :200] - 100)
    path = _write(tmp_path / "half.tif", img.astype(np.float32), OPT_GT)

    def left(**kw) -> int:
        params = {"INPUT": str(path), "MIN_DISTANCE": 24, "MAX_COUNT": 40, "BORDER": 20}
        out = processing.run("sarmatcher:detectkeypoints", {**params, **kw, "OUTPUT": "memory:"})
        feats = _features(out["OUTPUT"])
        assert len(feats) == 40
        return sum(f["x_px"] < 200 for f in feats)

    assert left(SPREAD=0) <= 2
    assert left() >= 8


@pytest.mark.qgis_process
def test_qgis_process_says_and_takes_spread(qgis_profile: dict[str, str], tmp_path: Path) -> None:
    """`qgis_process help` listed SPREAD without its range or default (QGIS 3.22 prints
    neither for a number); a SPREAD given on the command line reaches the algorithm."""
    import subprocess

    from osgeo import ogr

    from tests.conftest import qgis_process_command
    from tests.processing import run_cli

    run = subprocess.run(
        [*qgis_process_command(), "help", "sarmatcher:detectkeypoints"],
        env=qgis_profile, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    spread = run.stdout.split("\nSPREAD: ")[1].split("\nBORDER: ")[0]
    assert "0 to 1, default 0.5." in spread and "SPREAD x MAX_COUNT cells" in spread
    path, _ = _squares_raster(tmp_path)
    params = {"INPUT": path, "MIN_DISTANCE": 12, "BORDER": 8, "MAX_COUNT": 4}
    for value in (0, 1):
        out = tmp_path / f"kp{value}.gpkg"
        run_cli(qgis_profile, "detectkeypoints", {**params, "SPREAD": value, "OUTPUT": out})
        ds = ogr.Open(str(out))
        assert ds.GetLayer(0).GetFeatureCount() == 4
    bad = subprocess.run(
        [*qgis_process_command(), "run", "sarmatcher:detectkeypoints", "--",
         f"INPUT={path}", "SPREAD=1.5", f"OUTPUT={tmp_path / 'bad.gpkg'}"],
        env=qgis_profile, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode != 0 and "SPREAD" in bad.stdout + bad.stderr


def test_a_one_pixel_raster_is_refused_clearly(provider, tmp_path: Path) -> None:
    """A 1 x 1 px raster (BORDER 0) crashed in numpy: "Shape of array too small to calculate a
    numerical gradient"; a 2 px wide one still gives its corner."""
    import processing
    from qgis.core import QgsProcessingException

    rng = np.random.default_rng(0)
    one = _write(tmp_path / "one.tif", rng.normal(size=(1, 1)).astype(np.float32), OPT_GT)
    params = {"BORDER": 0, "MIN_DISTANCE": 1, "OUTPUT": "memory:"}
    with pytest.raises(QgsProcessingException, match=r"the 1 x 1 px raster has no corner"):
        processing.run("sarmatcher:detectkeypoints", {**params, "INPUT": str(one)})
    two = _write(tmp_path / "two.tif", rng.normal(size=(5, 2)).astype(np.float32), OPT_GT)
    out = processing.run("sarmatcher:detectkeypoints", {**params, "INPUT": str(two)})
    assert out["OUTPUT"].featureCount() == 1


def test_a_huge_min_distance_is_refused_by_name(provider, tmp_path: Path) -> None:
    """MIN_DISTANCE 2e154: its square overflowed into an OverflowError traceback (helper-72);
    now QGIS refuses it by name against the parameter's maximum, and 1e9 still runs."""
    import processing
    from qgis.core import QgsProcessingException

    path, _ = _squares_raster(tmp_path)
    params = {"INPUT": str(path), "MAX_COUNT": 50, "BORDER": 8, "OUTPUT": "memory:"}
    with pytest.raises(QgsProcessingException, match="MIN_DISTANCE") as err:
        processing.run("sarmatcher:detectkeypoints", {**params, "MIN_DISTANCE": 2e154})
    assert "Traceback" not in str(err.value) and "Overflow" not in str(err.value)
    out = processing.run("sarmatcher:detectkeypoints", {**params, "MIN_DISTANCE": 1e9})["OUTPUT"]
    assert out.featureCount() == 1  # one keypoint: every other one is nearer than 1e9 px


def test_shapefile_and_csv_outputs_keep_every_value_and_point(provider, tmp_path: Path) -> None:
    """A uint16 optical (Sentinel-2-like reflectances) has Harris responses of 1e10 and more:
    a shapefile's default Real 24.15 field logged 'not successfully written' for each feature
    (helper-72); a .csv was written without its points. Now the field is 24.6 wide and the
    response reads back to 1e-9 relative, and the CSV holds X and Y, the map coordinates."""
    import csv

    import processing
    from osgeo import gdal, ogr

    path, _ = _squares_raster(tmp_path)
    big = tmp_path / "u16.tif"
    arr = gdal.Open(str(path)).ReadAsArray().astype(np.uint16) * 250
    _write(big, arr, OPT_GT)
    params = {"INPUT": str(big), "MIN_DISTANCE": 12, "MAX_COUNT": 50, "BORDER": 8}
    ref = _features(processing.run("sarmatcher:detectkeypoints",
                                   {**params, "OUTPUT": "memory:"})["OUTPUT"])  # fmt: skip
    assert min(f["response"] for f in ref) > 1e10
    shp = tmp_path / "k.shp"
    processing.run("sarmatcher:detectkeypoints", {**params, "OUTPUT": str(shp)})
    ds = ogr.Open(str(shp))  # referenced while its layer is read
    layer = ds.GetLayer(0)
    defn = layer.GetLayerDefn().GetFieldDefn(layer.GetLayerDefn().GetFieldIndex("response"))
    # 24.6 (OGR writes 25.6) holds 17 digits before the point; 24.15 held 8, hence the warning
    assert defn.GetWidth() - defn.GetPrecision() >= 17 and defn.GetPrecision() == 6
    got = sorted((f["id"], f["response"]) for f in layer)
    for (i, r), f in zip(got, ref):
        assert i == f["id"] and r == pytest.approx(f["response"], rel=1e-9)
    out_csv = tmp_path / "k.csv"
    processing.run("sarmatcher:detectkeypoints", {**params, "OUTPUT": str(out_csv)})
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == len(ref) and {"X", "Y"} <= set(rows[0])
    for row, f in zip(sorted(rows, key=lambda r: int(r["id"])), ref):
        p = f.geometry().asPoint()
        assert float(row["X"]) == pytest.approx(p.x()) and float(row["Y"]) == pytest.approx(p.y())


def test_a_paletted_raster_is_refused_with_the_expand_command(provider, tmp_path: Path) -> None:
    """Palette indices were detected on as intensities (10 of 16 keypoints off the corners of
    a raster whose scrambled colour table shows the squares; helper-72). Now refused before
    any work, with gdal_translate -expand; the expanded file gives the 16 corners."""
    import processing
    from osgeo import gdal
    from qgis.core import QgsProcessingException

    path, corners = _squares_raster(tmp_path)
    grey = gdal.Open(str(path)).ReadAsArray()
    order = np.random.default_rng(0).permutation(256)  # index k shows grey order[k]
    index = np.argsort(order)[grey].astype(np.uint8)
    pal = tmp_path / "pal.tif"
    _write(pal, index, OPT_GT)
    ds = gdal.Open(str(pal), gdal.GA_Update)
    table = gdal.ColorTable()
    for k in range(256):
        table.SetColorEntry(k, (int(order[k]),) * 3 + (255,))
    ds.GetRasterBand(1).SetColorTable(table)
    ds.GetRasterBand(1).SetColorInterpretation(gdal.GCI_PaletteIndex)
    ds = None
    params = {"MIN_DISTANCE": 12, "MAX_COUNT": 50, "BORDER": 8, "OUTPUT": "memory:"}
    with pytest.raises(QgsProcessingException, match=r"INPUT: band 1 of pal\.tif holds palette "
                       r"indices.*gdal_translate -expand gray pal\.tif"):  # fmt: skip
        processing.run("sarmatcher:detectkeypoints", {**params, "INPUT": str(pal)})
    expanded = tmp_path / "expanded.tif"
    gdal.Translate(str(expanded), str(pal), rgbExpand="gray")
    out = processing.run("sarmatcher:detectkeypoints", {**params, "INPUT": str(expanded)})
    xy = np.array([[f["x_px"], f["y_px"]] for f in _features(out["OUTPUT"])])
    d = np.linalg.norm(xy[:, None] - corners[None], axis=2)
    assert len(xy) == 16 and d.min(axis=1).max() < 3.0
