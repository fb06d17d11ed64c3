"""Processing algorithm 'Compute correspondence' with the twin model on a known pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.processing import (  # noqa: F401
    EPSG,
    MATCH_PARAMS,
    SHIFT_PX,
    Pair,
    provider_fixture,
    run_cli,
    synthetic_pair_fixture,
    twin_model_fixture,
)
from tests.qgis_helpers import recording_feedback


def _params(pair: Pair, model: Path, **kw) -> dict:
    return {
        "SAR": str(pair.sar),
        "OPTICAL": str(pair.optical),
        "MODEL": str(model),
        **MATCH_PARAMS,
        "MATCHES": "memory:",
        **kw,
    }


def _true_sar_px(pair: Pair, opt_xy: np.ndarray) -> np.ndarray:
    a = np.vstack([pair.a, [0, 0, 1]])
    inv = np.linalg.inv(a)
    return opt_xy @ inv[:2, :2].T + inv[:2, 2]


def test_settings_translate_parameters(provider, synthetic_pair, twin_model) -> None:
    from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsProcessingContext, QgsVectorLayer

    from sar_optical_matcher.processing.compute_correspondence import (
        ComputeCorrespondenceAlgorithm,
    )

    kp = QgsVectorLayer("Point?crs=EPSG:4326", "kp", "memory")
    f = QgsFeature()
    f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(15.0, 37.0)))
    kp.dataProvider().addFeatures([f])
    alg = ComputeCorrespondenceAlgorithm()
    alg.initAlgorithm()
    s = alg.settings(
        _params(
            synthetic_pair,
            twin_model,
            KEYPOINTS=kp,
            SAR_SCALE=2,
            DEVICE=1,
            BATCH_SIZE=3,
            SAR_BAND=1,
        ),
        QgsProcessingContext(),
    )
    assert (s.sar_path, s.optical_path) == (str(synthetic_pair.sar), str(synthetic_pair.optical))
    assert (s.sar_band, s.optical_band) == (1, 1)
    m = s.match
    assert (m.model_path, m.template_size, m.search_size) == (str(twin_model), 64, 96)
    assert (m.sar_scale, m.device, m.batch_size, m.confidence_threshold) == ("db", "cpu", 3, 0.0)
    assert not m.keep_maps and s.maps_folder is None
    from osgeo import osr

    wgs, utm = osr.SpatialReference(), osr.SpatialReference()
    wgs.ImportFromEPSG(4326)
    utm.ImportFromEPSG(EPSG)
    wgs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    utm.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    x, y, _ = osr.CoordinateTransformation(wgs, utm).TransformPoint(15.0, 37.0)
    np.testing.assert_allclose(s.keypoints_map, [[x, y]], atol=0.01)
    assert (s.detect.min_distance_px, s.detect.border_px) == (24, 56)


def test_keypoint_layers_multipoints_and_a_wrong_crs(provider, synthetic_pair, twin_model) -> None:
    """Every part of a multipoint is a keypoint (the first part alone was kept); points that
    cannot be transformed (a layer whose CRS is wrong) are a clear error, not a traceback."""
    from qgis.core import (
        QgsProcessingContext,
        QgsProcessingException,
    )

    from sar_optical_matcher.processing.compute_correspondence import (
        ComputeCorrespondenceAlgorithm,
    )
    from tests.qgis_helpers import memory_layer

    alg = ComputeCorrespondenceAlgorithm()
    alg.initAlgorithm()

    pts = [(500100.0, 4199900.0), (500200.0, 4199800.0), (500300.0, 4199700.0)]
    multi = "MULTIPOINT(" + ", ".join(f"({x} {y})" for x, y in pts) + ")"
    kp = memory_layer("MultiPoint", f"EPSG:{EPSG}", [multi, "MULTIPOINT((500400 4199600))"])
    s = alg.settings(_params(synthetic_pair, twin_model, KEYPOINTS=kp), QgsProcessingContext())
    np.testing.assert_allclose(s.keypoints_map, pts + [(500400.0, 4199600.0)])
    wrong = memory_layer("Point", "EPSG:4326", ["POINT(15 37)", "POINT(200 95)", "POINT(300 -120)"])
    with pytest.raises(
        QgsProcessingException,
        match=r"KEYPOINTS: 2 point\(s\) cannot be "
        r"transformed from EPSG:4326 .*feature 2 at 200, 95.*layer's CRS",
    ):
        alg.settings(_params(synthetic_pair, twin_model, KEYPOINTS=wrong), QgsProcessingContext())


def test_matches_are_within_a_pixel_of_the_truth(
    provider,
    synthetic_pair,
    twin_model,
    tmp_path: Path,
) -> None:
    import processing
    from osgeo import gdal
    from qgis.core import QgsApplication

    res = processing.run(
        "sarmatcher:computecorrespondence",
        _params(synthetic_pair, twin_model, OUTPUT_MAPS=str(tmp_path / "maps")),
    )
    layer = res["MATCHES"]
    names = [f.name() for f in layer.fields()]
    for key in (
        "opt_x_px",
        "sar_x_px",
        "sar_y_map",
        "score",
        "ratio",
        "spread_px",
        "confidence",
        "accepted",
        "status",
    ):
        assert key in names
    feats = list(layer.getFeatures())
    assert len(feats) >= 25
    # threshold 0: all accepted but the (wrong) matches peaking on the map's edge, |d| 16
    on_edge = [max(abs(f["dx_px"]), abs(f["dy_px"])) > 15.5 for f in feats]
    assert [f["accepted"] for f in feats] == [not e for e in on_edge]
    assert sum(on_edge) <= 0.2 * len(feats), sum(on_edge)
    opt = np.array([[f["opt_x_px"], f["opt_y_px"]] for f in feats])
    sar = np.array([[f["sar_x_px"], f["sar_y_px"]] for f in feats])
    err = np.linalg.norm(sar - _true_sar_px(synthetic_pair, opt), axis=1)
    # the twin is a weak matcher; a broken pipeline (wrong frame, sign or offset) would put
    # ~0 % within 1 px of the truth (a random offset in +/-16 px hits 1 px with p ~ 0.003)
    assert (err < 1.0).mean() > 0.3, np.round(err, 1)
    assert all(0.0 <= f["confidence"] <= 1.0 for f in feats)
    maps = sorted((tmp_path / "maps").glob("*.tif"))
    assert len(maps) == len(feats)
    # named as the help says (it said map_<id>.tif only: map_12.tif was looked for)
    assert {p.name for p in maps} == {f"map_{f['id']:05d}.tif" for f in feats}
    alg = QgsApplication.processingRegistry().algorithmById("sarmatcher:computecorrespondence")
    assert "id 12 is map_00012.tif" in alg.parameterDefinition("OUTPUT_MAPS").help()
    ds = gdal.Open(str(maps[0]))
    assert (ds.RasterXSize, ds.RasterYSize) == (33, 33)
    assert ds.GetGeoTransform()[1] == 10.0


def test_sizes_that_differ_from_the_model_are_refused(
    provider,
    synthetic_pair,
    twin_model,
) -> None:
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="set them to 64 and 96"):
        processing.run(
            "sarmatcher:computecorrespondence",
            _params(synthetic_pair, twin_model, TEMPLATE_SIZE=128, SEARCH_SIZE=256),
        )


def test_linear_sar_values_on_a_db_raster_are_refused(
    provider, synthetic_pair, twin_model, tmp_path: Path
) -> None:
    """SAR_SCALE linear on the dB-like pair (all negative): an error naming the fix, not a
    layer of constant_sar skips; nothing is written."""
    import processing
    from qgis.core import QgsProcessingException

    out, maps = tmp_path / "out" / "m.gpkg", str(tmp_path / "maps")
    with pytest.raises(QgsProcessingException, match="100% of the SAR band 1's values are neg"):
        processing.run(
            "sarmatcher:computecorrespondence",
            _params(synthetic_pair, twin_model, SAR_SCALE=1, MATCHES=str(out), OUTPUT_MAPS=maps),
        )
    assert not out.exists() and not Path(maps).exists()


def test_a_shapefile_output_logs_no_field_width_warning(
    provider, synthetic_pair, twin_model, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    """MATCHES to a shapefile: the status field had no width, and GDAL printed 'Warning 1:
    Field status of width 255 truncated to 254.' on every run."""
    import processing
    from osgeo import ogr

    shp = tmp_path / "m.shp"
    capfd.readouterr()
    processing.run(
        "sarmatcher:computecorrespondence",
        _params(synthetic_pair, twin_model, MATCHES=str(shp), MAX_COUNT=2),
    )
    assert "truncated" not in capfd.readouterr().err
    ds = ogr.Open(str(shp))
    defn = ds.GetLayer(0).GetLayerDefn()
    status = defn.GetFieldDefn(defn.GetFieldIndex("status"))
    assert status.GetWidth() == 32
    assert sorted({f.GetField("status") for f in ds.GetLayer(0)}) == ["ok"]


def test_peaks_on_the_edge_of_the_search_range_are_not_accepted(
    provider, twin_model, tmp_path: Path
) -> None:
    """The SAR's georeference off by 40 px, beyond the twin's +/-16: matches peaking on the
    map's edge (|dx| = 16.0 exactly, no measurement) were accepted, as confident as any (on a
    real 3MOS pair off by 90 px, 2 of 34 with dx 64.0 at confidence 0.56); Register already
    takes them for no evidence. Now they are not accepted, and the log says why."""
    import processing

    from tests.processing import write_pair

    pair = write_pair(tmp_path / "pair", shift_px=(40.0, 0.0))
    feedback = recording_feedback()
    layer = processing.run(
        "sarmatcher:computecorrespondence", _params(pair, twin_model), feedback=feedback
    )["MATCHES"]
    feats = [f for f in layer.getFeatures() if f["status"] == "ok"]
    edge = np.array([max(abs(f["dx_px"]), abs(f["dy_px"])) > 15.5 for f in feats])
    assert 3 <= edge.sum() < len(feats), edge
    assert [f["accepted"] for f in feats] == list(~edge)  # threshold 0: all others accepted
    assert any(
        w.startswith(f"{edge.sum()} of {len(feats)} matches peak on the edge of the search range")
        for w in feedback.warnings
    ), feedback.warnings


def test_not_a_model_is_refused(provider, synthetic_pair, tmp_path: Path) -> None:
    import processing
    from qgis.core import QgsProcessingException

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file at all")
    with pytest.raises(QgsProcessingException, match="bad.onnx"):
        processing.run("sarmatcher:computecorrespondence", _params(synthetic_pair, bad))


@pytest.mark.qgis_process
def test_qgis_process_cli(qgis_profile, synthetic_pair, twin_model, tmp_path: Path) -> None:
    from osgeo import ogr

    out = tmp_path / "m.gpkg"
    params = _params(synthetic_pair, twin_model, MATCHES=out)
    run_cli(qgis_profile, "computecorrespondence", params)
    ds = ogr.Open(str(out))  # keep the dataset alive while its layer is used
    assert ds.GetLayer(0).GetFeatureCount() >= 25


def test_maps_appear_only_with_the_match_layer(
    provider, synthetic_pair, twin_model, tmp_path: Path, monkeypatch
) -> None:
    """The match layer fails after the maps are written: no map file is left (36 were); a
    match layer in a folder that does not exist yet is written (the folder is created)."""
    import processing
    from qgis.core import QgsProcessingException

    from sar_optical_matcher.processing import common

    maps = tmp_path / "maps"
    res = processing.run(
        "sarmatcher:computecorrespondence",
        _params(synthetic_pair, twin_model, OUTPUT_MAPS=str(maps),
                MATCHES=str(tmp_path / "new" / "m.gpkg")),
    )  # fmt: skip
    n_maps = len(list(maps.iterdir()))
    assert n_maps >= 25 and Path(res["MATCHES"].split("|")[0]).is_file()

    def disk_full(*_args, **_kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(common, "write_point_features", disk_full)
    again = tmp_path / "maps2"
    with pytest.raises(QgsProcessingException, match="No space left on device"):
        processing.run(
            "sarmatcher:computecorrespondence",
            _params(synthetic_pair, twin_model, OUTPUT_MAPS=str(again)),
        )
    assert not again.exists() or list(again.iterdir()) == []
    assert len(list(maps.iterdir())) == n_maps
    from sar_optical_matcher import registration as reg

    empty = tmp_path / "no_maps"  # nothing to write: the folder output still exists
    assert reg.write_map_rasters(empty, [], None, None, 96, 64) == [] and empty.is_dir()


def test_progress_rises_batch_by_batch(provider, synthetic_pair, twin_model) -> None:
    """The matcher reported 0..100 to a callback taking fractions: the bar jumped to the end of
    the matching step after the first batch and sat there."""
    import processing
    from qgis.core import QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    seen: list[float] = []
    feedback.progressChanged.connect(seen.append)
    processing.run(
        "sarmatcher:computecorrespondence",
        _params(synthetic_pair, twin_model, BATCH_SIZE=4),
        feedback=feedback,
    )
    during = [p for p in seen if 10.0 < p < 89.0]
    assert len(during) >= 4 and during == sorted(during), seen


def _point_layer(pts_px: list[tuple[float, float]], crs: str = f"EPSG:{EPSG}"):
    """A memory point layer at optical pixel positions (x, y) of the synthetic pair."""
    from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsVectorLayer

    from tests.processing import OPT_GT

    layer = QgsVectorLayer(f"Point?crs={crs}", "kp", "memory")
    feats = []
    for x, y in pts_px:
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(OPT_GT[0] + x * 10, OPT_GT[3] - y * 10)))
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    return layer


def test_sar_map_positions_are_in_the_sar_crs_as_the_help_says(
    provider, synthetic_pair, twin_model, tmp_path: Path
) -> None:
    """A SAR in EPSG:3857 over the UTM optical: sar_x_map/sar_y_map are in the SAR's CRS (the
    help said "positions in map units" beside the layer's optical CRS, so a user subtracted
    them from opt_x_map/opt_y_map: 1.1e6 m "offsets" here)."""
    import processing
    from osgeo import gdal, osr

    from sar_optical_matcher.processing.compute_correspondence import (
        ComputeCorrespondenceAlgorithm,
    )

    alg = ComputeCorrespondenceAlgorithm()
    alg.initAlgorithm()
    assert (
        "sar_x_map/sar_y_map in the SAR raster's CRS" in alg.parameterDefinition("MATCHES").help()
    )
    sar = str(tmp_path / "sar_3857.tif")
    gdal.Warp(sar, str(synthetic_pair.sar), dstSRS="EPSG:3857", resampleAlg="bilinear")
    layer = processing.run(
        "sarmatcher:computecorrespondence",
        {**_params(synthetic_pair, twin_model, KEYPOINTS=_point_layer([(190.5, 190.5)])),
         "SAR": sar},
    )["MATCHES"]  # fmt: skip
    (f,) = layer.getFeatures()
    assert f["status"] == "ok"
    utm, merc = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(EPSG)
    merc.ImportFromEPSG(3857)
    for s in (utm, merc):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    found_utm = (f["opt_x_map"] + 10.0 * f["dx_px"], f["opt_y_map"] - 10.0 * f["dy_px"])
    x, y, _ = osr.CoordinateTransformation(utm, merc).TransformPoint(*found_utm)
    assert abs(f["sar_x_map"] - x) < 0.01 and abs(f["sar_y_map"] - y) < 0.01
    assert abs(f["sar_x_map"] - f["opt_x_map"]) > 1e5  # not comparable with the optical CRS


def test_keypoint_layer_ids_extent_mask_and_an_empty_layer(
    provider, synthetic_pair, twin_model
) -> None:
    """The match id is the point's index in KEYPOINTS: points off the raster renumbered the
    others (the 2nd point got id 0); EXTENT and MASK were ignored for a KEYPOINTS layer
    although their help says "keypoints only inside it"; an empty layer was reported as one
    with "no point on the optical raster"."""
    import processing
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer

    from tests.processing import OPT_GT

    feedback = recording_feedback()
    warnings = feedback.warnings

    def run(**kw) -> list[tuple[int, float, float]]:
        layer = processing.run(
            "sarmatcher:computecorrespondence", _params(synthetic_pair, twin_model, **kw),
            feedback=feedback,
        )["MATCHES"]  # fmt: skip
        return sorted((f["id"], f["opt_x_px"], f["opt_y_px"]) for f in layer.getFeatures())

    kp = _point_layer([(-50.0, 100.0), (150.0, 150.0), (200.0, 220.0), (5000.0, 10.0)])
    assert run(KEYPOINTS=kp) == [(1, 150.0, 150.0), (2, 200.0, 220.0)]
    extent = f"{OPT_GT[0]},{OPT_GT[0] + 1700},{OPT_GT[3] - 2000},{OPT_GT[3]} [EPSG:{EPSG}]"
    assert run(KEYPOINTS=kp, EXTENT=extent) == [(1, 150.0, 150.0)]  # (200, 220) is outside
    assert "1 keypoints on the optical raster lie outside EXTENT and are skipped" in warnings
    mask = QgsVectorLayer(f"Polygon?crs=EPSG:{EPSG}", "mask", "memory")
    f = QgsFeature()  # x from 180 to 384 px: (200, 220) only
    f.setGeometry(QgsGeometry.fromWkt(
        f"POLYGON(({OPT_GT[0] + 1800} {OPT_GT[3]}, {OPT_GT[0] + 3840} {OPT_GT[3]}, "
        f"{OPT_GT[0] + 3840} {OPT_GT[3] - 3840}, {OPT_GT[0] + 1800} {OPT_GT[3] - 3840}, "
        f"{OPT_GT[0] + 1800} {OPT_GT[3]}))"
    ))  # fmt: skip
    mask.dataProvider().addFeatures([f])
    assert run(KEYPOINTS=kp, MASK=mask) == [(2, 200.0, 220.0)]
    warnings.clear()
    assert run(KEYPOINTS=_point_layer([])) == []
    assert any("the KEYPOINTS layer has no points (an empty layer" in w for w in warnings)


@pytest.mark.parametrize("ext", ["fgb", "gpkg"])
def test_a_match_names_the_keypoint_it_matched_whatever_the_keypoint_format(
    provider, synthetic_pair, twin_model, tmp_path, ext
) -> None:
    """Detect keypoints into a FlatGeobuf, then Compute correspondence on it: OGR's
    FlatGeobuf writer sorted the features along its spatial index, so the layer's N-th
    point (which match id N names) was not keypoint id N: 71 of 72 matches named another
    keypoint. Now the points keep the order written (no spatial index)."""
    import processing
    from qgis.core import QgsVectorLayer

    detected = processing.run("sarmatcher:detectkeypoints", {
        "INPUT": str(synthetic_pair.optical), "MIN_DISTANCE": 24, "BORDER": 56,
        "OUTPUT": str(tmp_path / f"kp.{ext}"),
    })["OUTPUT"]  # fmt: skip
    keypoints = QgsVectorLayer(detected, "kp", "ogr")
    assert [f["id"] for f in keypoints.getFeatures()] == list(range(keypoints.featureCount()))
    at = {f["id"]: (f["x_px"], f["y_px"]) for f in keypoints.getFeatures()}
    params = _params(synthetic_pair, twin_model, KEYPOINTS=keypoints)
    matches = processing.run("sarmatcher:computecorrespondence", params)["MATCHES"]
    named = [(at[f["id"]], (f["opt_x_px"], f["opt_y_px"])) for f in matches.getFeatures()]
    assert len(named) > 50
    assert all(kp == pytest.approx(m, abs=1e-6) for kp, m in named)


@pytest.mark.parametrize("alg", ["computecorrespondence", "registersartooptical"])
def test_the_model_and_its_provider_are_logged_once(
    provider, synthetic_pair, twin_model, tmp_path: Path, alg: str
) -> None:
    """Each run logged the model and its onnxruntime provider twice, one line after the other
    ('SAR-Optical Matcher: running twin 0.0-test with CPUExecutionProvider ...' and 'model twin
    0.0-test, onnxruntime provider: CPUExecutionProvider'), seen in a qgis_process log."""
    import processing

    feedback = recording_feedback()
    params = _params(synthetic_pair, twin_model)
    if alg == "registersartooptical":
        params = {**params, "RESIDUAL_THRESHOLD": 1.5, "OUTPUT": str(tmp_path / "r.tif")}
        params.pop("MATCHES")
    processing.run(f"sarmatcher:{alg}", params, feedback=feedback)
    named = [m for m in feedback.infos if "CPUExecutionProvider" in m]
    assert len(named) == 1, named
    assert named[0].startswith("SAR-Optical Matcher: running twin ")


def test_runs_without_a_feedback_object(provider, synthetic_pair, twin_model) -> None:
    """QgsProcessingAlgorithm.run(parameters, context, None) hands processAlgorithm no
    feedback: it failed with AttributeError 'NoneType' object has no attribute 'pushInfo'."""
    from qgis.core import QgsProcessingContext, QgsProcessingUtils

    from sar_optical_matcher.processing.compute_correspondence import (
        ComputeCorrespondenceAlgorithm,
    )

    alg = ComputeCorrespondenceAlgorithm()
    alg.initAlgorithm()
    context = QgsProcessingContext()
    kp = _point_layer([(150.0, 150.0), (200.0, 220.0)])
    params = _params(synthetic_pair, twin_model, KEYPOINTS=kp)
    dest = alg.processAlgorithm(params, context, None)["MATCHES"]
    layer = QgsProcessingUtils.mapLayerFromString(dest, context)
    assert sorted(f["id"] for f in layer.getFeatures()) == [0, 1]


def test_an_extent_on_a_nodata_hole_of_the_sar_is_said(
    provider, synthetic_pair, twin_model, tmp_path: Path
) -> None:
    """EXTENT over a 200 px nodata hole of the SAR (valid SAR all around it): detection kept
    to the coverage found nothing there and the warning blamed the optical ("no corner was
    found on the optical raster (constant, all nodata or textureless there ..."), which is
    textured. Now refused, naming the SAR's nodata and EXTENT."""
    import processing
    from osgeo import gdal
    from qgis.core import QgsProcessingException

    from tests.processing import OPT_GT

    sar = tmp_path / "holed.tif"
    gdal.Translate(str(sar), str(synthetic_pair.sar))
    ds = gdal.Open(str(sar), gdal.GA_Update)
    band = ds.GetRasterBand(1)
    arr = band.ReadAsArray()
    arr[100:300, 100:300] = -9999.0
    band.WriteArray(arr)
    band.SetNoDataValue(-9999.0)
    ds = None
    x0, y0 = OPT_GT[0], OPT_GT[3]
    extent = f"{x0 + 1600},{x0 + 2400},{y0 - 2400},{y0 - 1600} [EPSG:{EPSG}]"  # px 160..240
    params = {**_params(synthetic_pair, twin_model), "SAR": str(sar)}
    with pytest.raises(QgsProcessingException, match=r"the SAR has no valid data over a whole "
                       r"search region anywhere .* move EXTENT onto valid SAR data"):  # fmt: skip
        processing.run("sarmatcher:computecorrespondence", {**params, "EXTENT": extent})
    layer = processing.run("sarmatcher:computecorrespondence", params)["MATCHES"]
    assert layer.featureCount() > 0  # around the hole, keypoints are found and matched
    # a KEYPOINTS layer ('Selected features only' too) is neither kept to the coverage nor
    # spread: its point in the hole is matched and skipped as nodata_sar, with its id
    kp = _point_layer([(200.0, 200.0), (80.0, 80.0)])
    layer = processing.run(
        "sarmatcher:computecorrespondence", {**params, "KEYPOINTS": kp, "EXTENT": extent}
    )["MATCHES"]
    assert sorted((f["id"], f["status"]) for f in layer.getFeatures()) == [(0, "nodata_sar")]
    layer = processing.run("sarmatcher:computecorrespondence", {**params, "KEYPOINTS": kp})[
        "MATCHES"
    ]
    assert sorted((f["id"], f["status"]) for f in layer.getFeatures()) == [
        (0, "nodata_sar"), (1, "ok")
    ]  # fmt: skip


def _optical_with_a_nodata_triangle(pair: Pair, path: Path) -> Path:
    """The pair's optical with its top-left triangle (x + y < 300 px) set to nodata (0)."""
    from osgeo import gdal

    gdal.Translate(str(path), str(pair.optical))
    ds = gdal.Open(str(path), gdal.GA_Update)
    band = ds.GetRasterBand(1)
    arr = np.maximum(band.ReadAsArray(), 1)  # 0 is the nodata value
    yy, xx = np.mgrid[0 : arr.shape[0], 0 : arr.shape[1]] + 0.5
    arr[xx + yy < 300] = 0
    band.WriteArray(arr)
    band.SetNoDataValue(0)
    ds = None
    return path


def test_keypoints_are_not_spent_on_an_optical_nodata_edge(
    provider, synthetic_pair, twin_model, tmp_path: Path
) -> None:
    """Harris corners are strongest along an optical nodata edge (a scene's nodata triangle):
    detection kept to the SAR coverage only put 2 of 20 keypoints there, skipped at matching
    as nodata_optical. Now detection keeps to where matching's own optical rule
    (``matching.MIN_VALID_FRACTION``) passes: none is skipped, and more are matched."""
    import processing

    optical = _optical_with_a_nodata_triangle(synthetic_pair, tmp_path / "triangle.tif")
    params = {**_params(synthetic_pair, twin_model), "OPTICAL": str(optical), "MAX_COUNT": 20}
    layer = processing.run("sarmatcher:computecorrespondence", params)["MATCHES"]
    feats = list(layer.getFeatures())
    status = [f["status"] for f in feats]
    assert len(feats) == 20
    assert status.count("nodata_optical") == 0, status  # 2 before
    assert status.count("ok") == 20, status  # 18 before


def test_an_extent_on_an_optical_nodata_triangle_is_said(
    provider, synthetic_pair, twin_model, tmp_path: Path
) -> None:
    """EXTENT inside the optical's nodata triangle (valid SAR there): refused, naming the
    optical's nodata, not the SAR's."""
    import processing
    from qgis.core import QgsProcessingException

    from tests.processing import OPT_GT

    optical = _optical_with_a_nodata_triangle(synthetic_pair, tmp_path / "triangle.tif")
    x0, y0 = OPT_GT[0], OPT_GT[3]
    extent = f"{x0 + 600},{x0 + 1200},{y0 - 1200},{y0 - 600} [EPSG:{EPSG}]"  # px 60..120
    params = {**_params(synthetic_pair, twin_model), "OPTICAL": str(optical), "EXTENT": extent}
    with pytest.raises(QgsProcessingException, match=r"no optical template around a point with "
                       r"valid SAR data .* check the optical's nodata value"):  # fmt: skip
        processing.run("sarmatcher:computecorrespondence", params)


def test_a_matching_pixel_size_in_metres_for_an_optical_in_degrees_is_said(
    provider, synthetic_pair, twin_model, tmp_path: Path
) -> None:
    """MATCH_PIXEL_SIZE 20 (metres) for an optical raster in EPSG:4326: a grid of 196,282
    optical pixels, and the error said the rasters "overlap by only 417 x 339 optical pixels
    ... choose rasters that cover more of the same place/area", sending the user to other
    rasters. It now names MATCH_PIXEL_SIZE, its units and the optical pixel size; 0.0002
    (degrees, the 20 m SAR's pixel) runs and matches as on the UTM optical."""
    import processing
    from osgeo import gdal
    from qgis.core import QgsProcessingException

    optical, sar = str(tmp_path / "optical_4326.tif"), str(tmp_path / "sar_20m.tif")
    gdal.Warp(optical, str(synthetic_pair.optical), dstSRS="EPSG:4326")
    gdal.Warp(sar, str(synthetic_pair.sar), xRes=20, yRes=20, resampleAlg="average")
    params = {**_params(synthetic_pair, twin_model), "OPTICAL": optical, "SAR": sar,
              "MIN_DISTANCE": 12, "BORDER": 100}  # fmt: skip
    with pytest.raises(QgsProcessingException) as err:
        processing.run("sarmatcher:computecorrespondence", {**params, "MATCH_PIXEL_SIZE": 20.0})
    text = str(err.value)
    assert text.startswith("MATCH_PIXEL_SIZE 20 makes one search region 96 x 96 matching-grid "
                           "pixels of 196282 optical px"), text  # fmt: skip
    assert (
        "optical map units (degrees: the optical CRS is geographic); the optical pixel is "
        "0.0001019: give a smaller one, at most 0.0003598 here, or 0 (automatic)" in text
    ), text
    assert "cover more of the same place" not in text
    layer = processing.run(
        "sarmatcher:computecorrespondence", {**params, "MATCH_PIXEL_SIZE": 0.0002}
    )["MATCHES"]
    assert layer.featureCount() >= 50


def test_the_fix_a_complex_sar_is_refused_with_gives_a_matchable_sar(
    provider, synthetic_pair, twin_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A geocoded complex SAR (amplitude x random phase, CFloat32) is refused; the error said
    "take the amplitude ... with a GDAL VRT using the 'mod' pixel function", and the plain
    VRT that does (no SourceTransferType) reads the complex source as Float32, its real part:
    matched, 0 of 72 matches within 1 px of the truth (median error 14.4 px), against 46 of
    72 for the amplitude itself. The error now gives a command; run as given, it matches."""
    import re
    import shlex

    import processing
    from osgeo import gdal
    from osgeo_utils import gdal_calc
    from qgis.core import QgsProcessingException

    ds = gdal.Open(str(synthetic_pair.sar))
    amplitude = 10 ** (ds.ReadAsArray() / 20.0)  # the pair's dB-like values, as amplitude
    phase = np.exp(1j * np.random.default_rng(0).uniform(0, 2 * np.pi, amplitude.shape))
    slc = gdal.GetDriverByName("GTiff").Create(
        str(tmp_path / "slc.tif"), ds.RasterXSize, ds.RasterYSize, 1, gdal.GDT_CFloat32
    )
    slc.SetGeoTransform(ds.GetGeoTransform())
    slc.SetProjection(ds.GetProjection())
    slc.GetRasterBand(1).WriteArray((amplitude * phase).astype(np.complex64))
    slc = None
    params = {**_params(synthetic_pair, twin_model), "SAR": str(tmp_path / "slc.tif")}
    with pytest.raises(QgsProcessingException) as err:
        processing.run("sarmatcher:computecorrespondence", params)
    command = re.search(r"`(gdal_calc\.py [^`]+)`", str(err.value))
    assert command, str(err.value)
    monkeypatch.chdir(tmp_path)
    gdal_calc.main([*shlex.split(command.group(1)), "--quiet"])
    layer = processing.run(
        "sarmatcher:computecorrespondence", {**params, "SAR": str(tmp_path / "amplitude.tif")}
    )["MATCHES"]
    feats = [f for f in layer.getFeatures() if f["status"] == "ok"]
    found = np.array([[f["opt_x_px"] + f["dx_px"], f["opt_y_px"] + f["dy_px"]] for f in feats])
    truth = np.array([[f["opt_x_px"], f["opt_y_px"]] for f in feats]) + SHIFT_PX
    within = (np.linalg.norm(found - truth, axis=1) < 1.0).mean()
    assert len(feats) >= 50 and within > 0.5, (len(feats), within)


def test_a_keypoint_layer_with_lines_names_the_feature_and_the_fix(
    provider, synthetic_pair, twin_model, tmp_path: Path
) -> None:
    """A GeoPackage layer of mixed geometries (a point, then a line), or a line layer, given as
    KEYPOINTS: the error was "KEYPOINTS must be a point layer", for a layer QGIS lists as a
    point-capable one (GeometryCollection); it now names the feature, its type and the fix.
    The layer's points alone (an OGR geometry-type filter) are matched."""
    import processing
    from osgeo import ogr, osr
    from qgis.core import QgsProcessingException

    from tests.processing import OPT_GT
    from tests.qgis_helpers import memory_layer

    x, y = OPT_GT[0] + 1005, OPT_GT[3] - 1205  # optical px (100.5, 120.5)
    line = f"LINESTRING({x} {y}, {x + 1000} {y - 1000})"
    path = str(tmp_path / "mixed.gpkg")
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    layer = ds.CreateLayer("mixed", srs, ogr.wkbUnknown)
    for wkt in (f"POINT({x} {y})", line):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    ds = layer = None
    for keypoints, fid in ((path, 2), (memory_layer("LineString", f"EPSG:{EPSG}", [line]), 1)):
        with pytest.raises(QgsProcessingException) as err:
            processing.run("sarmatcher:computecorrespondence",
                           _params(synthetic_pair, twin_model, KEYPOINTS=keypoints))  # fmt: skip
        text = str(err.value)
        assert text.startswith(
            f"KEYPOINTS must be a point layer: feature {fid} is a LineString;"
        ), text
        assert "geometry_type($geometry) = 'Point'" in text, text
    out = processing.run(
        "sarmatcher:computecorrespondence",
        _params(synthetic_pair, twin_model, KEYPOINTS=f"{path}|geometrytype=Point"),
    )["MATCHES"]
    assert [(f["opt_x_px"], f["opt_y_px"]) for f in out.getFeatures()] == [(100.5, 120.5)]


@pytest.mark.parametrize("alg", ["detectkeypoints", "computecorrespondence"])
def test_an_output_into_the_input_geopackage_is_refused(
    alg, provider, synthetic_pair, twin_model, tmp_path: Path
) -> None:
    """The optical raster in optical.gpkg and the output layer given as optical.gpkg: QGIS
    writes a GeoPackage output anew, and the input raster was deleted with no word (the file
    then held the point layer alone, 0 rasters). Refused before any work; a table added to
    that GeoPackage (an ogr: URI) keeps the raster."""
    import processing
    from osgeo import gdal
    from qgis.core import QgsProcessingException

    gpkg = str(tmp_path / "optical.gpkg")
    gdal.Translate(gpkg, str(synthetic_pair.optical), format="GPKG")
    if alg == "detectkeypoints":
        params = {"INPUT": gpkg, "MIN_DISTANCE": 24, "BORDER": 56}
        key, name = "OUTPUT", "INPUT"
    else:
        params = {**_params(synthetic_pair, twin_model), "OPTICAL": gpkg}
        key, name = "MATCHES", "OPTICAL"
    with pytest.raises(
        QgsProcessingException,
        match=rf"{key}: optical\.gpkg is also the {name} input raster, which writing it "
        "would replace",
    ):
        processing.run(f"sarmatcher:{alg}", {**params, key: gpkg})
    assert gdal.Open(gpkg).RasterCount == 1
    processing.run(f"sarmatcher:{alg}", {**params, key: f"ogr:dbname='{gpkg}' table=\"kp\" (geom)"})
    ds = gdal.OpenEx(gpkg)
    assert (ds.RasterCount, ds.GetLayerCount()) == (1, 1)


@pytest.mark.parametrize("alg_id", ["computecorrespondence", "registersartooptical"])
def test_db_sar_values_on_a_linear_raster_are_warned_about(
    provider, synthetic_pair, twin_model, tmp_path: Path, alg_id: str
) -> None:
    """SAR_SCALE dB on linear float32 amplitude (``synthetic.write_pair``): a warning saying
    what was seen and to choose auto or linear; none on the dB-like pair."""
    import processing

    from sar_optical_matcher.synthetic import make_georeferenced_pair, write_pair

    linear = write_pair(make_georeferenced_pair(384, np.random.default_rng(3)), tmp_path, "lin")
    outputs = {"OUTPUT": str(tmp_path / "out.tif")} if alg_id != "computecorrespondence" else {}
    warned, errors = [], []
    for inputs in ({"SAR": str(linear["sar"]), "OPTICAL": str(linear["optical"])}, {}):
        feedback = recording_feedback()
        params = _params(synthetic_pair, twin_model, SAR_SCALE=2, MAX_COUNT=6, **outputs)
        try:
            processing.run(f"sarmatcher:{alg_id}", {**params, **inputs}, feedback=feedback)
        except Exception as exc:  # noqa: BLE001 - a refused fit has logged the matching
            errors.append(str(exc))
        warned.append([w for w in feedback.warnings if w.startswith("SAR_SCALE is dB")])
    assert len(warned[0]) == 1, (warned, errors)
    assert (
        "SAR band 1 (float32) looks like linear amplitude or intensity: no negative "
        in (warned[0][0])
    )
    end = "choose auto or linear for SAR_SCALE unless these really are dB values"
    assert warned[0][0].endswith(end)
    assert warned[1] == []
