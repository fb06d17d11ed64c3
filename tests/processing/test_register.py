"""Processing algorithm 'Register SAR to optical' end to end on a known synthetic pair."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sar_optical_matcher import gcp
from sar_optical_matcher import registration as reg
from tests.processing import (  # noqa: F401
    MATCH_PARAMS,
    OPT_GT,
    Pair,
    provider_fixture,
    run_cli,
    synthetic_pair_fixture,
    twin_model_fixture,
    write_pair,
)
from tests.qgis_helpers import recording_feedback


def _params(pair: Pair, model: Path, out: Path, **kw) -> dict:
    return {
        "SAR": str(pair.sar),
        "OPTICAL": str(pair.optical),
        "MODEL": str(model),
        **MATCH_PARAMS,
        "RESIDUAL_THRESHOLD": 1.5,
        "TRANSFORM": 1,
        "OUTPUT": str(out / "reg.tif"),
        "OUTPUT_GCP": str(out / "reg.points"),
        "OUTPUT_REPORT": str(out / "reg.html"),
        "OUTPUT_TIEPOINTS": "memory:",
        **kw,
    }


def _alignment_error(pair: Pair, registered: Path) -> float:
    """Median |registered - optical| in optical grey levels, interior only."""
    from osgeo import gdal

    warped = gdal.Open(str(registered)).ReadAsArray().astype(np.float64)[40:-40, 40:-40]
    ref = gdal.Open(str(pair.optical)).ReadAsArray().astype(np.float64)[40:-40, 40:-40]
    return float(np.median(np.abs((warped + 18.0) / 3.0 * 255.0 - ref)))


def test_settings_translate_parameters(provider, synthetic_pair, twin_model, tmp_path) -> None:
    from qgis.core import QgsProcessingContext

    from sar_optical_matcher.processing.register import RegisterSarToOpticalAlgorithm

    alg = RegisterSarToOpticalAlgorithm()
    alg.initAlgorithm()
    s = alg.settings(
        _params(
            synthetic_pair,
            twin_model,
            tmp_path,
            TRANSFORM=3,
            SEED=5,
            RESAMPLING=2,
            PIXEL_SIZE=20,
            NODATA=-5,
            CREATION_OPTIONS="COMPRESS=LZW|BIGTIFF=YES",
        ),
        QgsProcessingContext(),
    )
    assert (s.transform, s.residual_threshold_px, s.min_inliers, s.seed) == ("poly2", 1.5, 8, 5)
    assert s.warp == s.warp.__class__("cubic", 20.0, ("COMPRESS=LZW", "BIGTIFF=YES"), -5.0)
    assert s.output_path == str(tmp_path / "reg.tif")
    assert (s.gcp_path, s.report_path) == (str(tmp_path / "reg.points"), str(tmp_path / "reg.html"))
    assert s.correspondence.match.keep_maps
    d = alg.settings(_params(synthetic_pair, twin_model, tmp_path), QgsProcessingContext())
    assert d.warp.pixel_size is None and d.warp.nodata is None and d.transform == "affine"
    assert d.warp.creation_options is None  # the format's defaults
    # the maps are only the report's: without one, none is kept (65 KB a keypoint)
    params = _params(synthetic_pair, twin_model, tmp_path)
    del params["OUTPUT_REPORT"]
    assert not alg.settings(params, QgsProcessingContext()).correspondence.match.keep_maps


def test_creation_options_of_another_format_are_refused_up_front(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    """GeoTIFF options given to a GeoPackage output are an error before any work (GDAL would
    warn and write without them); empty options are each format's own defaults."""
    from qgis.core import QgsProcessingContext, QgsProcessingException

    from sar_optical_matcher.processing.register import RegisterSarToOpticalAlgorithm

    alg = RegisterSarToOpticalAlgorithm()
    alg.initAlgorithm()
    params = _params(synthetic_pair, twin_model, tmp_path, OUTPUT=str(tmp_path / "reg.gpkg"))
    with pytest.raises(
        QgsProcessingException,
        match=r"OUTPUT: COMPRESS=LZW: not creation option\(s\) of the GPKG format of reg\.gpkg"
        r" .*its options are .*TILE_FORMAT",
    ):
        alg.settings({**params, "CREATION_OPTIONS": "COMPRESS=LZW"}, QgsProcessingContext())
    ok = alg.settings({**params, "CREATION_OPTIONS": "TILE_FORMAT=PNG"}, QgsProcessingContext())
    assert ok.warp.creation_options == ("TILE_FORMAT=PNG",)
    tif = _params(synthetic_pair, twin_model, tmp_path, CREATION_OPTIONS="COMPRESS=NOSUCH")
    with pytest.raises(QgsProcessingException, match=r"OUTPUT: COMPRESS=NOSUCH: 'NOSUCH' is "
                       r"not one of NONE, LZW"):  # fmt: skip
        alg.settings(tif, QgsProcessingContext())  # GDAL wrote it uncompressed, unsaid
    assert list(tmp_path.iterdir()) == []


def test_a_rotated_grid_band_types_and_nodata_are_refused_up_front(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    """Said by settings(), before any matching: a netCDF output of a rotated optical grid
    (was written north-up, 94 px off at the far corner), a SAR whose bands differ in type (was
    written in band 1's: Float32 dB values cut to 0), a NODATA the SAR's type cannot hold (was
    refused only after the matching; Float32 1e39 was written as an infinite nodata no pixel
    has), lanczos onto a grid coarser than the SAR where this GDAL misplaces it."""
    from osgeo import gdal
    from qgis.core import QgsProcessingContext, QgsProcessingException

    from sar_optical_matcher.processing.register import RegisterSarToOpticalAlgorithm
    from tests.processing import write_band_stack, write_rotated

    alg = RegisterSarToOpticalAlgorithm()
    alg.initAlgorithm()
    ctx = QgsProcessingContext()
    out = tmp_path / "out"
    params = _params(synthetic_pair, twin_model, out)
    rotated = tmp_path / "opt_rot.tif"
    write_rotated(rotated, synthetic_pair.optical, 10.0)
    nc = {**params, "OPTICAL": str(rotated), "OUTPUT": str(out / "reg.nc")}
    with pytest.raises(QgsProcessingException, match=r"^OUTPUT: cannot write reg\.nc: the netCDF "
                       r"format stores only north-up grids.*rotated \(10 degrees\)"):  # fmt: skip
        alg.settings(nc, ctx)
    assert alg.settings({**nc, "OUTPUT": str(out / "reg.tif")}, ctx).output_path.endswith(".tif")
    mask = tmp_path / "mask.tif"
    gdal.Translate(str(mask), str(synthetic_pair.sar), outputType=gdal.GDT_Byte, scaleParams=[[]])
    bands = [(mask, gdal.GDT_Byte), (synthetic_pair.sar, gdal.GDT_Float32)]
    stack = write_band_stack(tmp_path / "stack.vrt", bands)
    with pytest.raises(QgsProcessingException, match=r"^SAR: the SAR raster stack\.vrt has bands "
                       r"of different data types \(band 1 Byte, band 2 Float32\)"):  # fmt: skip
        alg.settings({**params, "SAR": str(stack), "SAR_BAND": 2}, ctx)
    with pytest.raises(QgsProcessingException, match=r"output nodata 1e\+39 cannot be stored in "
                       r"the SAR's Float32 data type"):  # fmt: skip
        alg.settings({**params, "NODATA": 1e39}, ctx)
    with pytest.raises(QgsProcessingException, match=r"output nodata -9999 cannot be stored in "
                       r"the SAR's Byte data type \(0 to 255\)"):  # fmt: skip
        alg.settings({**params, "SAR": str(mask), "NODATA": -9999}, ctx)
    sar16 = tmp_path / "sar16.tif"  # GPKG records -32768 as an Int16 raster's nodata
    gdal.Translate(str(sar16), str(synthetic_pair.sar), outputType=gdal.GDT_Int16,
                   scaleParams=[[-20, 0, 1, 20000]])  # fmt: skip
    gpkg = {**params, "SAR": str(sar16), "OUTPUT": str(out / "reg.gpkg")}
    with pytest.raises(QgsProcessingException, match=r"output nodata 5000 cannot be stored in "
                       r"reg\.gpkg: the GPKG format records -32768"):  # fmt: skip
        alg.settings({**gpkg, "NODATA": 5000}, ctx)
    assert alg.settings({**gpkg, "NODATA": -32768}, ctx).warp.nodata == -32768.0
    # lanczos onto a grid of twice the SAR's pixel: GDAL 3.6 shifts it half a SAR pixel
    lanczos = {**params, "RESAMPLING": 4, "PIXEL_SIZE": 20}
    if max(map(abs, reg.kernel_shift("lanczos"))) > 0.05:
        with pytest.raises(QgsProcessingException, match=r"RESAMPLING lanczos would shift "
                           r"reg\.tif by up to half a SAR pixel"):  # fmt: skip
            alg.settings(lanczos, ctx)
    assert alg.settings({**lanczos, "RESAMPLING": 2}, ctx).warp.resampling == "cubic"
    assert not out.exists()


def test_runs_without_a_feedback_object(provider, synthetic_pair, twin_model, tmp_path) -> None:
    """QgsProcessingAlgorithm.run(parameters, context, None) hands processAlgorithm no
    feedback: it failed with AttributeError 'NoneType' object has no attribute 'pushInfo'."""
    from qgis.core import QgsProcessingContext

    from sar_optical_matcher.processing.register import RegisterSarToOpticalAlgorithm

    alg = RegisterSarToOpticalAlgorithm()
    alg.initAlgorithm()
    params = _params(synthetic_pair, twin_model, tmp_path)
    res = alg.processAlgorithm(params, QgsProcessingContext(), None)
    assert res["N_INLIERS"] >= 8 and res["RMSE_PX"] < 1.0
    assert Path(res["OUTPUT"]).is_file()


def test_registers_the_known_pair(provider, synthetic_pair, twin_model, tmp_path) -> None:
    import processing

    res = processing.run(
        "sarmatcher:registersartooptical", _params(synthetic_pair, twin_model, tmp_path)
    )
    assert res["N_INLIERS"] >= 8 and res["RMSE_PX"] < 1.0
    assert _alignment_error(synthetic_pair, Path(res["OUTPUT"])) < 4.0
    # the tie points: inliers close to the truth
    feats = list(res["OUTPUT_TIEPOINTS"].getFeatures())
    inl = [f for f in feats if f["inlier"]]
    assert len(inl) == res["N_INLIERS"]
    sar = np.array([[f["sar_x_px"], f["sar_y_px"]] for f in inl])
    opt = np.array([[f["opt_x_px"], f["opt_y_px"]] for f in inl])
    assert np.median(np.linalg.norm(synthetic_pair.sar_to_optical(sar) - opt, axis=1)) < 1.0
    # the .points file: inliers enabled, SAR pixels recoverable with the SAR geotransform
    from sar_optical_matcher import rasters

    table = gcp.read_points(res["OUTPUT_GCP"])
    assert table.crs_wkt and int(table.enabled.sum()) == res["N_INLIERS"]
    px = gcp.pixels_from_source(
        table.source_xy, rasters.open_raster(synthetic_pair.sar).geotransform
    )
    gt = rasters.open_raster(synthetic_pair.optical).geotransform
    opt_px = np.column_stack(
        [(table.map_xy[:, 0] - gt[0]) / gt[1], (table.map_xy[:, 1] - gt[3]) / gt[5]]
    )
    err = np.linalg.norm(synthetic_pair.sar_to_optical(px) - opt_px, axis=1)[table.enabled]
    assert np.median(err) < 1.0
    html = Path(res["OUTPUT_REPORT"]).read_text(encoding="utf-8")
    assert "RMSE (optical px)" in html and "data:image/png;base64," in html


def test_tps_reports_its_leave_one_out_rmse(provider, synthetic_pair, twin_model, tmp_path):
    """A spline's RMSE_PX is 0 by construction: RMSE_LOO_PX, the tie points' loo_residual_px
    and the report carry the figure to judge it by, and the log says so."""
    import processing

    feedback = recording_feedback()
    warnings = feedback.warnings
    res = processing.run(
        "sarmatcher:registersartooptical",
        _params(synthetic_pair, twin_model, tmp_path, TRANSFORM=5),
        feedback=feedback,
    )
    assert res["RMSE_PX"] < 1e-6 < res["RMSE_LOO_PX"] < 2.0
    assert any("0 by construction" in w and "leave-one-out" in w for w in warnings), warnings
    inl = [f for f in res["OUTPUT_TIEPOINTS"].getFeatures() if f["inlier"]]
    loo = np.array([f["loo_residual_px"] for f in inl])
    assert np.sqrt((loo**2).mean()) == pytest.approx(res["RMSE_LOO_PX"])
    assert "leave-one-out RMSE (optical px)" in Path(res["OUTPUT_REPORT"]).read_text()
    affine = processing.run(
        "sarmatcher:registersartooptical", _params(synthetic_pair, twin_model, tmp_path / "a")
    )
    assert affine["RMSE_PX"] <= affine["RMSE_LOO_PX"] < affine["RMSE_PX"] * 1.5


def test_shift_is_an_offset_of_the_georeference_for_a_sar_of_another_pixel_size(
    provider, twin_model, tmp_path: Path
) -> None:
    """A SAR of 9.8 m pixels on a 10 m optical, its georeference off by (6, -5) px: a pure
    shift in map units. TRANSFORM shift fitted ``optical px = SAR px + t``, a 2 % scaling
    error: 8 of 29 matches (one band of the raster) were accepted as inliers with a 0.93 px
    RMSE, and the warp was off by up to 4 px elsewhere (grey error 6.6 against 0.8)."""
    import processing

    a = np.array([[0.98, 0.0, 4.0], [0.0, 0.98, -3.0]])
    pair = write_pair(tmp_path / "in", a=a)
    res = processing.run(
        "sarmatcher:registersartooptical", _params(pair, twin_model, tmp_path, TRANSFORM=0)
    )
    assert res["N_INLIERS"] >= 20 and res["RMSE_PX"] < 0.6
    assert _alignment_error(pair, Path(res["OUTPUT"])) < 1.5
    inl = [f for f in res["OUTPUT_TIEPOINTS"].getFeatures() if f["inlier"]]
    sar = np.array([[f["sar_x_px"], f["sar_y_px"]] for f in inl])
    opt = np.array([[f["opt_x_px"], f["opt_y_px"]] for f in inl])
    assert np.ptp(sar, axis=0).min() > 0.5 * pair.size  # inliers all over, not one band
    assert np.median(np.linalg.norm(pair.sar_to_optical(sar) - opt, axis=1)) < 1.0


def test_matches_beyond_half_the_range_of_a_coarser_matching_grid_are_used(
    provider, twin_model, tmp_path: Path
) -> None:
    """A 20 m SAR on a 10 m optical is matched on a 2x grid (+/-32 optical px for the twin
    model's +/-16 grid px). Its georeference off by (17, -16.5) px: the edge test took the
    range in grid pixels, so every match beyond 15.5 optical px was an 'edge peak' (38 of the
    40 here) and the registration was refused."""
    import processing

    a = np.array([[2.0, 0.0, -256.0], [0.0, 2.0, -256.0]])
    pair = write_pair(tmp_path / "in", a=a, shift_px=(17.0, -16.5), size=512)
    res = processing.run(
        "sarmatcher:registersartooptical",
        _params(pair, twin_model, tmp_path, TRANSFORM=0, MIN_DISTANCE=12),
    )
    feats = list(res["OUTPUT_TIEPOINTS"].getFeatures())
    inl = [f for f in feats if f["inlier"]]
    assert res["N_INLIERS"] >= 10 and len(inl) == res["N_INLIERS"]
    assert min(abs(f["dx_px"]) for f in inl) > 15.5  # all beyond half the range
    sar = np.array([[f["sar_x_px"], f["sar_y_px"]] for f in inl])
    opt = np.array([[f["opt_x_px"], f["opt_y_px"]] for f in inl])
    assert np.median(np.linalg.norm(pair.sar_to_optical(sar) - opt, axis=1)) < 1.5


def test_unrelated_scene_is_refused_and_nothing_is_written(
    provider,
    twin_model,
    tmp_path: Path,
) -> None:
    import processing
    from qgis.core import QgsProcessingException

    pair = write_pair(tmp_path / "in", seed=21, unrelated=True)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(QgsProcessingException, match="Registration refused") as err:
        processing.run(
            "sarmatcher:registersartooptical",
            _params(pair, twin_model, out, OUTPUT_TIEPOINTS=str(out / "t.gpkg")),
        )
    assert "are needed" in str(err.value)
    assert list(out.iterdir()) == []


def test_canceled_run_leaves_no_output(provider, synthetic_pair, twin_model, tmp_path) -> None:
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda p: feedback.cancel() if p > 75 else None)
    with pytest.raises(QgsProcessingException, match="Canceled"):
        processing.run(
            "sarmatcher:registersartooptical",
            _params(synthetic_pair, twin_model, tmp_path),
            feedback=feedback,
        )
    assert [p for p in tmp_path.iterdir()] == []


def test_a_failing_last_output_keeps_the_earlier_results(
    provider, synthetic_pair, twin_model, tmp_path, monkeypatch
) -> None:
    """The tie-point layer fails after the raster, GCPs and report are written (a full disk):
    the earlier files of the same names stay as they were and no new or partial file is left.
    The raster used to be renamed over the old one first, then deleted by the cleanup."""
    import processing
    from qgis.core import QgsProcessingException

    from sar_optical_matcher.processing.register import RegisterSarToOpticalAlgorithm

    for name in ("reg.tif", "reg.points", "reg.html"):
        (tmp_path / name).write_text(f"earlier {name}")

    def disk_full(*_args, **_kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RegisterSarToOpticalAlgorithm, "_write_tiepoints", disk_full)
    with pytest.raises(QgsProcessingException, match="No space left on device"):
        processing.run(
            "sarmatcher:registersartooptical", _params(synthetic_pair, twin_model, tmp_path)
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg.html", "reg.points", "reg.tif"]
    for name in ("reg.tif", "reg.points", "reg.html"):
        assert (tmp_path / name).read_text() == f"earlier {name}"


def test_a_tie_point_layer_failing_midway_or_a_failed_rename_keeps_the_earlier_layer(
    provider, synthetic_pair, twin_model, tmp_path, monkeypatch
) -> None:
    """QGIS writes the tie-point layer in place: a write failing after 3 of its features (a
    full disk) replaced the earlier 72-point tp.gpkg with an unreadable 64 KB file and its
    -journal, beside the earlier raster, GCPs and report that were kept. So did a failed rename
    of the staged files (on Windows, the earlier reg.tif still loaded in QGIS): new tie points
    beside the earlier raster. Now the earlier layer is put back, nothing else is left."""
    import hashlib

    import processing
    from osgeo import ogr
    from qgis.core import QgsProcessingException

    from sar_optical_matcher.core import files
    from sar_optical_matcher.processing import common

    params = _params(
        synthetic_pair, twin_model, tmp_path, OUTPUT_TIEPOINTS=str(tmp_path / "t.gpkg")
    )
    processing.run("sarmatcher:registersartooptical", params)

    def digests() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}

    earlier = digests()
    assert sorted(earlier) == ["reg.html", "reg.points", "reg.tif", "t.gpkg"]
    ds = ogr.Open(str(tmp_path / "t.gpkg"))  # kept: a layer outlives no dataset
    n_earlier = ds.GetLayer(0).GetFeatureCount()
    ds = None
    write = common.write_point_features

    def disk_full_after_3(sink, fields, xy, rows, feedback=None):
        write(sink, fields, xy[:3], rows[:3])
        raise OSError(28, "No space left on device")

    def in_use(self):
        raise ValueError("cannot replace reg.tif: Permission denied")

    for patch, message in (
        ((common, "write_point_features", disk_full_after_3), "No space left on device"),
        ((files.StagedOutputs, "commit", in_use), "cannot replace reg.tif"),
    ):
        with monkeypatch.context() as m:
            m.setattr(*patch)
            with pytest.raises(QgsProcessingException, match=message):
                processing.run("sarmatcher:registersartooptical", params)
        assert digests() == earlier, message
    ds = ogr.Open(str(tmp_path / "t.gpkg"))
    assert ds.GetLayer(0).GetFeatureCount() == n_earlier > 3
    ds = None


def test_unwritable_outputs_are_refused_before_any_work(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    """A destination inside a file, or a raster format GDAL cannot write, is said at once
    (the run used to match and warp first, then fail with a traceback or '[Errno 17]')."""
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    a_file = tmp_path / "optical_copy.tif"
    a_file.write_text("x")
    progress: list[float] = []
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(progress.append)
    cases = {
        "OUTPUT_GCP": (str(a_file / "x.points"), r"OUTPUT_GCP: cannot write .* is a file, not "
                       r"a folder"),
        "OUTPUT_REPORT": (str(a_file / "sub" / "r.html"), r"OUTPUT_REPORT: .* is a file, not"),
        "OUTPUT_TIEPOINTS": (str(a_file / "tp.gpkg"), r"OUTPUT_TIEPOINTS: .* is a file, not"),
        "OUTPUT": (str(tmp_path / "reg.vrt"), r"vrt"),
    }  # fmt: skip
    cases["OUTPUT "] = (
        str(tmp_path / "reg.png"),
        r"OUTPUT: cannot write reg\.png: the PNG "
        r"format stores Byte, UInt16 bands, the SAR raster is Float32",
    )
    for key, (dest, pattern) in cases.items():
        key = key.strip()
        out = tmp_path / "out"
        params = _params(synthetic_pair, twin_model, out, **{key: dest})
        with pytest.raises(QgsProcessingException, match=pattern):
            processing.run("sarmatcher:registersartooptical", params, feedback=feedback)
        assert not out.exists(), key
    assert max(progress, default=0.0) == 0.0  # nothing was matched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optical_copy.tif"]


def test_a_format_that_cannot_hold_the_sars_bands_is_refused_before_any_work(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    """A dual-polarisation (2-band Float32) SAR: GeoPackage failed only at the warp, after the
    matching ('Only single band dataset supported for non Byte datatype'); netCDF wrote one
    variable a band, a reg.nc that QGIS cannot open as a raster layer (no geotransform)."""
    import processing
    from osgeo import gdal
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    dual = tmp_path / "sar_vv_vh.tif"
    gdal.Translate(str(dual), str(synthetic_pair.sar), bandList=[1, 1])
    pair = Pair(synthetic_pair.optical, dual, synthetic_pair.a, synthetic_pair.size)
    progress: list[float] = []
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(progress.append)
    out = tmp_path / "out"
    for name, what in (("reg.gpkg", "GPKG format stores 1"), ("reg.nc", "netCDF format stores 1")):
        with pytest.raises(
            QgsProcessingException,
            match=rf"OUTPUT: cannot write {name}: the {what} band\(s\) of Float32 as one "
            r"raster, the SAR raster has 2; write a \.tif instead",
        ):
            processing.run(
                "sarmatcher:registersartooptical",
                _params(pair, twin_model, out, OUTPUT=str(out / name)),
                feedback=feedback,
            )
    assert max(progress, default=0.0) == 0.0 and not out.exists()


def test_a_byte_sar_to_geopackage_is_refused_before_matching(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    """A 1-band Byte SAR registered to reg.gpkg: written as RGBA image tiles, which QGIS opened
    as a 4-band layer (grey 3 times + alpha). Refused before any matching, nothing written; the
    UInt16 way the message names gives a one-band layer."""
    import processing
    from osgeo import gdal
    from qgis.core import QgsProcessingException, QgsRasterLayer

    byte_sar = tmp_path / "sar8.tif"
    gdal.Translate(str(byte_sar), str(synthetic_pair.sar), outputType=gdal.GDT_Byte,
                   scaleParams=[[-18, -15, 1, 255]], noData=0)  # fmt: skip
    pair = Pair(synthetic_pair.optical, byte_sar, synthetic_pair.a, synthetic_pair.size)
    out = tmp_path / "out"
    with pytest.raises(QgsProcessingException, match=r"OUTPUT: cannot write reg\.gpkg: the GPKG "
                       r"format stores a Byte band .* read back as 4 bands"):  # fmt: skip
        processing.run("sarmatcher:registersartooptical",
                       _params(pair, twin_model, out, OUTPUT=str(out / "reg.gpkg")))  # fmt: skip
    assert not out.exists()
    sar16 = tmp_path / "sar16.tif"
    gdal.Translate(str(sar16), str(byte_sar), outputType=gdal.GDT_UInt16)
    pair16 = Pair(synthetic_pair.optical, sar16, synthetic_pair.a, synthetic_pair.size)
    processing.run("sarmatcher:registersartooptical",
                   _params(pair16, twin_model, out, OUTPUT=str(out / "reg.gpkg")))  # fmt: skip
    layer = QgsRasterLayer(str(out / "reg.gpkg"), "reg")
    valid_one_band = layer.isValid() and layer.bandCount() == 1
    del layer  # a GeoPackage layer left to interpreter exit outlives QGIS: segfault at exit
    assert valid_one_band
    warped = gdal.Open(str(out / "reg.gpkg")).ReadAsArray().astype(np.float64)[40:-40, 40:-40]
    ref = gdal.Open(str(pair.optical)).ReadAsArray().astype(np.float64)[40:-40, 40:-40]
    # the SAR is 3 * optical - 18 dB, scaled to 1..255: registered, it follows the optical
    valid = warped > 0
    assert valid.mean() > 0.9
    assert np.corrcoef(warped[valid], ref[valid])[0, 1] > 0.9


def test_an_output_named_like_an_input_or_another_output_is_refused(
    provider, twin_model, tmp_path
) -> None:
    """OUTPUT named like the SAR replaced the input raster with its registered copy; a report
    named like OUTPUT overwrote the registered raster with HTML, and OUTPUT named it; tie
    points in OUTPUT's GeoPackage were lost when the raster was renamed over it."""
    import hashlib

    import processing
    from qgis.core import QgsProcessingException

    pair = write_pair(tmp_path / "in")  # its own: the old code replaced the SAR
    digest = hashlib.sha256(pair.sar.read_bytes()).hexdigest()
    out = tmp_path / "out"
    cases = {
        "OUTPUT": (str(pair.sar), r"OUTPUT: sar\.tif is also the SAR input raster, "
                   r"which writing it would replace; give each output a file name of its own"),
        "OUTPUT_REPORT": (str(out / "reg.tif"), r"OUTPUT_REPORT: reg\.tif is also OUTPUT's file"),
        "OUTPUT_TIEPOINTS": (str(pair.optical.parent / "." / "optical.tif"),
                             r"OUTPUT_TIEPOINTS: optical\.tif is also the OPTICAL input raster"),
        "OUTPUT_TIEPOINTS ": (str(out / "reg.tif"), r"OUTPUT_TIEPOINTS: reg\.tif is also OUTPUT's"),
    }  # fmt: skip
    for key, (dest, pattern) in cases.items():
        with pytest.raises(QgsProcessingException, match=pattern):
            processing.run(
                "sarmatcher:registersartooptical",
                _params(pair, twin_model, out, **{key.strip(): dest}),
            )
    assert hashlib.sha256(pair.sar.read_bytes()).hexdigest() == digest
    assert not out.exists()


def test_an_output_over_the_geopackage_of_the_inputs_is_refused(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    """Optical and SAR as two raster tables of one GeoPackage (layers GPKG:both.gpkg:opt and
    :sar) and OUTPUT both.gpkg: the inputs' names are GDAL connection strings, not file
    paths, so the check of OUTPUT against them passed, and the registered raster replaced the
    GeoPackage: both input tables lost. Refused before any work."""
    import processing
    from osgeo import gdal
    from qgis.core import QgsProcessingException, QgsProject, QgsRasterLayer

    gpkg = str(tmp_path / "both.gpkg")
    gdal.Translate(gpkg, str(synthetic_pair.optical), format="GPKG",
                   creationOptions=["RASTER_TABLE=opt"])  # fmt: skip
    gdal.Warp(gpkg, str(synthetic_pair.sar), format="GPKG",
              creationOptions=["RASTER_TABLE=sar", "APPEND_SUBDATASET=YES"])  # fmt: skip
    project = QgsProject.instance()  # owned by the project (see test_algorithms_review)
    layers = [project.addMapLayer(QgsRasterLayer(f"GPKG:{gpkg}:{t}", t)) for t in ("opt", "sar")]
    params = _params(synthetic_pair, twin_model, tmp_path / "out", OPTICAL=layers[0].id(),
                     SAR=layers[1].id(), OUTPUT=gpkg)  # fmt: skip
    try:
        with pytest.raises(QgsProcessingException, match=r"OUTPUT: both\.gpkg is also the SAR "
                           "input raster, which writing it would replace"):  # fmt: skip
            processing.run("sarmatcher:registersartooptical", params)
    finally:
        for layer in layers:
            project.removeMapLayer(layer.id())
    assert len(gdal.Open(gpkg).GetSubDatasets()) == 2


def test_a_pixel_size_beyond_the_optical_raster_is_refused_up_front(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    """PIXEL_SIZE larger than the optical raster (3840 m here) wrote a 1 x 1 px output; one
    in degrees for it (1e-4) failed in GDAL only after the matching ("File too large")."""
    import processing
    from qgis.core import QgsProcessingException

    out = tmp_path / "out"
    with pytest.raises(QgsProcessingException, match=r"PIXEL_SIZE 5000 is larger than the "
                       r"optical raster, 3840 x 3840 optical map units \(map units\)"):  # fmt: skip
        processing.run(
            "sarmatcher:registersartooptical",
            _params(synthetic_pair, twin_model, out, PIXEL_SIZE=5000),
        )
    from qgis.core import QgsProcessingContext

    from sar_optical_matcher.processing.register import RegisterSarToOpticalAlgorithm

    alg = RegisterSarToOpticalAlgorithm()
    alg.initAlgorithm()
    with pytest.raises(QgsProcessingException, match=r"PIXEL_SIZE 0.0001 makes a 38,400,000 x "
                       r"38,400,000 px output"):  # fmt: skip
        alg.settings(_params(synthetic_pair, twin_model, out, PIXEL_SIZE=1e-4),
                     QgsProcessingContext())  # fmt: skip
    assert not out.exists()


def test_outputs_follow_the_umask_and_the_tie_point_folder_is_created(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    import os
    import stat

    import processing

    old = os.umask(0o022)
    try:
        res = processing.run(
            "sarmatcher:registersartooptical",
            _params(synthetic_pair, twin_model, tmp_path / "a",
                    OUTPUT_TIEPOINTS=str(tmp_path / "new" / "tp.gpkg")),
        )  # fmt: skip
    finally:
        os.umask(old)
    for key in ("OUTPUT", "OUTPUT_GCP", "OUTPUT_REPORT"):
        assert stat.S_IMODE(Path(res[key]).stat().st_mode) == 0o644, key
    assert (tmp_path / "new" / "tp.gpkg").is_file()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "reg.html",
        "reg.points",
        "reg.tif",
    ]


@pytest.mark.slow
@pytest.mark.qgis_process
def test_qgis_process_cli(qgis_profile, synthetic_pair, twin_model, tmp_path) -> None:
    params = _params(
        synthetic_pair, twin_model, tmp_path, OUTPUT_TIEPOINTS=str(tmp_path / "tp.gpkg")
    )
    res = run_cli(qgis_profile, "registersartooptical", params)["results"]
    assert res["RMSE_PX"] < 1.0 and res["N_INLIERS"] >= 8
    assert _alignment_error(synthetic_pair, tmp_path / "reg.tif") < 4.0
    assert len(gcp.read_points(tmp_path / "reg.points")) >= 8


def test_a_bending_fit_extrapolated_over_much_of_the_overlap_is_said(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    """Keypoints only in one part of the overlap (strongest first: a contrasted area takes
    them all) left a poly2 / tps fit extrapolated over the rest, accepted without a word: on an
    8000 px scene whose keypoints lay in one half, 1.5 px (poly3) / 3.8 px (tps) off there.
    Keypoints in the left 65 %: 21 inliers, warned of (and of its border band); in the left
    45 % the poly2 is predicted 3.1 px wrong, 14.4 times its RMSE: refused. SPREAD 0
    (strongest first), the layout these figures are of: a spread changes which corners are
    taken. (Until stop 33 the left 60 % was warned of with 18 inliers; the response floor is
    now the strongest keypoint's in the EXTENT, not the strongest pixel's of the whole tile,
    so weaker corners there are kept, 19 inliers, and that fit is refused.)"""
    import processing

    from sar_optical_matcher import rasters

    warned: list[str] = []

    def run(out: Path, **kw) -> tuple[dict, list[str]]:
        feedback = recording_feedback()
        res = processing.run(
            "sarmatcher:registersartooptical",
            _params(synthetic_pair, twin_model, out, TRANSFORM=3, SPREAD=0, **kw),
            feedback=feedback,
        )
        warned[:] = feedback.warnings
        return res, [w for w in feedback.warnings if "transform is extrapolated" in w]

    whole, said = run(tmp_path / "whole")
    assert said == []
    assert not [w for w in warned if "border band" in w]  # keypoints over the whole scene
    gt = rasters.open_raster(synthetic_pair.optical).geotransform
    x0, y0 = gt[0], gt[3] + gt[5] * synthetic_pair.size

    def left(share: float) -> str:
        return f"{x0},{gt[0] + gt[1] * synthetic_pair.size * share},{y0},{gt[3]} [EPSG:32633]"

    half, said = run(tmp_path / "half", EXTENT=left(0.65))
    assert len(said) == 1 and "'poly2' transform is extrapolated" in said[0], said
    # the band of a fit that bends over the right 35 %: warned of (more predicted there
    # than inside), with the affine that passes there and the clipping
    band = [w for w in warned if "border band" in w]
    assert len(band) == 1 and "use TRANSFORM affine (predicted" in band[0], warned
    assert "The output was written" in band[0] and "Clip Raster by Extent" in band[0]
    share = float(said[0].split("other ")[1].split(" %")[0]) / 100
    assert 0.3 < share < 0.8  # 35 % here: the right 35 % and the border band
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match=r"'poly2' fit is predicted to be wrong .* "
                       r"bunched in one part of the overlap"):  # fmt: skip
        run(tmp_path / "less", EXTENT=left(0.45))
    html = Path(half["OUTPUT_REPORT"]).read_text(encoding="utf-8")
    assert "overlap outside the inliers&#x27; hull" in html or "outside the inliers" in html


def test_keypoints_along_two_crossing_roads_refuse_a_poly2(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    """A KEYPOINTS layer along two crossing lines (1 px off them): the poly2 passed RANSAC and
    every check (58 inliers, RMSE 0.32 px) and was warped 12.4 px off between the lines; now
    refused, predicted 9.1 px. The affine of the same matches passes, its predicted error
    (0.16 px; true 0.15 px) in the log and the report."""
    import processing
    from qgis.core import QgsProcessingException

    from tests.processing import EPSG, OPT_GT
    from tests.qgis_helpers import memory_layer

    n, rng = synthetic_pair.size, np.random.default_rng(0)
    t = np.arange(60, n - 60, 6.0) + 0.5
    px = np.vstack([np.column_stack([t, n / 2 + rng.normal(0, 1, len(t))]),
                    np.column_stack([n / 2 + rng.normal(0, 1, len(t)), t])])  # fmt: skip
    xy = px * [OPT_GT[1], OPT_GT[5]] + [OPT_GT[0], OPT_GT[3]]
    layer = memory_layer("Point", f"EPSG:{EPSG}", [f"POINT({x} {y})" for x, y in xy])
    out = tmp_path / "poly2"
    out.mkdir()
    with pytest.raises(QgsProcessingException) as err:
        processing.run(
            "sarmatcher:registersartooptical",
            _params(synthetic_pair, twin_model, out, TRANSFORM=3, KEYPOINTS=layer),
        )
    text = str(err.value)
    assert "the 'poly2' fit is predicted to be wrong by up to" in text
    assert "lie along a few lines (e.g. two crossing roads)" in text
    assert "Use TRANSFORM affine" in text and "No output raster was written" in text
    assert list(out.iterdir()) == []
    feedback = recording_feedback()
    res = processing.run(
        "sarmatcher:registersartooptical",
        _params(synthetic_pair, twin_model, tmp_path / "affine", KEYPOINTS=layer),
        feedback=feedback,
    )
    said = [i for i in feedback.infos if i.startswith("predicted error over the overlap")]
    assert len(said) == 1, feedback.infos
    inner = float(said[0].split("up to ")[1].split(" px")[0])
    assert 0 < inner < 0.5 and inner < res["RMSE_PX"]
    html = Path(res["OUTPUT_REPORT"]).read_text(encoding="utf-8")
    assert "predicted error inside the keypoints" in html and f"{inner:.3f}"[:4] in html


def test_tps_warps_every_band_where_the_truth_says_and_the_points_are_its_control_points(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    """Register with TRANSFORM tps on a SAR whose bands 2 and 3 hold its own pixel coordinates:
    read back, they say where each output pixel was sampled. Against the synthetic truth that is
    1.06 px off at most, median 0.28 px (the spline through noisy tie points; affine 0.31 /
    0.13 px); output pixels whose truth lies outside the SAR are nodata (441 of them), no
    geolocation array is left in /vsimem, and the .points file's enabled points are the inliers
    the spline passes through (its control points): re-applied with ``gdalwarp -tps`` (GDAL's
    TPS transformer) they give a warp 1.23 px off this one at most, median 0.03 px (0.04 px
    with ``-et 0``)."""
    import processing
    from osgeo import gdal

    from sar_optical_matcher import rasters

    src = gdal.Open(str(synthetic_pair.sar))
    w, h = src.RasterXSize, src.RasterYSize
    sar = tmp_path / "sar3.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(sar), w, h, 3, gdal.GDT_Float32)
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    ds.GetRasterBand(1).WriteArray(src.ReadAsArray())
    ds.GetRasterBand(2).WriteArray(np.tile(np.arange(w) + 0.5, (h, 1)))
    ds.GetRasterBand(3).WriteArray(np.tile((np.arange(h) + 0.5)[:, None], (1, w)))
    for b in (1, 2, 3):
        ds.GetRasterBand(b).SetNoDataValue(-999.0)
    ds, src = None, None
    res = processing.run(
        "sarmatcher:registersartooptical",
        {**_params(synthetic_pair, twin_model, tmp_path, TRANSFORM=5), "SAR": str(sar)},
    )
    out = gdal.Open(res["OUTPUT"])
    a = out.ReadAsArray().astype(np.float64)
    assert a.shape[0] == 3 and out.GetRasterBand(3).GetNoDataValue() == -999.0
    out = None
    oy, ox = np.mgrid[0 : a.shape[1], 0 : a.shape[2]]
    centre = np.column_stack([ox.ravel(), oy.ravel()]) + 0.5
    sampled = a[1:].reshape(2, -1).T
    valid = a[0].ravel() != -999.0
    ok = valid & ((sampled > 2) & (sampled < synthetic_pair.size - 2)).all(axis=1)
    err = np.linalg.norm(synthetic_pair.sar_to_optical(sampled[ok]) - centre[ok], axis=1)
    assert err.max() < 1.5 and np.median(err) < 0.4, (err.max(), np.median(err))
    lin = synthetic_pair.a
    truth = (centre - lin[:, 2]) @ np.linalg.inv(lin[:, :2]).T
    outside = ((truth < -1) | (truth > synthetic_pair.size + 1)).any(axis=1)
    assert outside.sum() > 100 and not valid[outside].any(), "values outside the SAR"
    assert not gdal.ReadDirRecursive("/vsimem/"), "geolocation arrays left in /vsimem"
    table = gcp.read_points(res["OUTPUT_GCP"])
    assert int(table.enabled.sum()) == res["N_INLIERS"]
    px = gcp.pixels_from_source(table.source_xy, rasters.open_raster(str(sar)).geotransform)
    inl = [f for f in res["OUTPUT_TIEPOINTS"].getFeatures() if f["inlier"]]
    ctrl = np.array([[f["sar_x_px"], f["sar_y_px"]] for f in inl])
    assert np.abs(np.sort(px[table.enabled], axis=0) - np.sort(ctrl, axis=0)).max() < 1e-6


def _coordinate_sar(pair: Pair, path: Path, nodata: float = -999.0) -> Path:
    """The pair's SAR with 2 more bands holding its own pixel coordinates (centres, +0.5):
    warped, they say where each output pixel was sampled."""
    from osgeo import gdal

    src = gdal.Open(str(pair.sar))
    w, h = src.RasterXSize, src.RasterYSize
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, 3, gdal.GDT_Float32)
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    bands = (src.ReadAsArray(), np.tile(np.arange(w) + 0.5, (h, 1)),
             np.tile((np.arange(h) + 0.5)[:, None], (1, w)))  # fmt: skip
    for b, (arr, name) in enumerate(zip(bands, ("VV <dB> & co", "column", "row")), start=1):
        ds.GetRasterBand(b).WriteArray(arr)
        ds.GetRasterBand(b).SetNoDataValue(nodata)
        ds.GetRasterBand(b).SetDescription(name)
    ds = None
    return path


def _sampling_error(pair: Pair, warped: np.ndarray, nodata: float) -> tuple[np.ndarray, Any]:
    """(N, 2) SAR pixel each valid interior output pixel shows minus the truth's, and the
    (H, W) valid mask; ``warped``: the coordinate SAR warped onto the optical grid."""
    oy, ox = np.mgrid[0 : warped.shape[1], 0 : warped.shape[2]]
    centre = np.column_stack([ox.ravel(), oy.ravel()]) + 0.5
    truth = (centre - pair.a[:, 2]) @ np.linalg.inv(pair.a[:, :2]).T
    sampled = warped[1:].reshape(2, -1).T
    valid = warped[0].ravel() != nodata
    inner = valid & ((sampled > 2) & (sampled < pair.size - 2)).all(axis=1)
    return sampled[inner] - truth[inner], valid.reshape(warped.shape[1:])


def test_the_points_file_warped_by_gdal_and_the_registered_raster_sit_where_the_truth_says(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    """The .points file as a GDAL user takes it (pixel = (sourceX - gt[0]) / gt[1], line =
    (gt[3] - sourceY) / |gt[5]|, corner-based; map = mapX, mapY in the #CRS), given to
    gdal.Warp with polynomial order 1: the SAR lands where the truth says, 0.008 px off on
    average, 0.12 px at the median pixel (the twin model's matches), and within 0.0022 px of
    OUTPUT, which is as close to the truth (a half-pixel slip would be 0.5 px on average).
    OUTPUT: the optical grid and CRS, Float32, 3 bands with their descriptions and nodata,
    nodata wherever the truth is outside the SAR. The tie-point layer's points are
    the .points file's map points, its SAR pixels the file's source pixels."""
    import processing
    from osgeo import gdal, osr

    from sar_optical_matcher import rasters

    sar = _coordinate_sar(synthetic_pair, tmp_path / "sar3.tif")
    res = processing.run(
        "sarmatcher:registersartooptical",
        {**_params(synthetic_pair, twin_model, tmp_path), "SAR": str(sar)},
    )
    opt = gdal.Open(str(synthetic_pair.optical))
    out = gdal.Open(res["OUTPUT"])
    assert out.GetGeoTransform() == opt.GetGeoTransform()
    assert (out.RasterXSize, out.RasterYSize) == (opt.RasterXSize, opt.RasterYSize)
    assert out.GetSpatialRef().IsSame(opt.GetSpatialRef())
    bands = [out.GetRasterBand(b) for b in (1, 2, 3)]
    assert [b.DataType for b in bands] == [gdal.GDT_Float32] * 3
    assert [b.GetDescription() for b in bands] == ["VV <dB> & co", "column", "row"]
    assert [b.GetNoDataValue() for b in bands] == [-999.0] * 3
    registered = out.ReadAsArray().astype(np.float64)
    bands, out = None, None
    err, valid = _sampling_error(synthetic_pair, registered, -999.0)
    assert np.abs(err.mean(axis=0)).max() < 0.1 and np.median(np.hypot(*err.T)) < 0.25
    # nodata exactly where the truth is outside the SAR (0.5 px margin: the fit's error)
    oy, ox = np.mgrid[0 : valid.shape[0], 0 : valid.shape[1]]
    q = np.stack([ox, oy], -1) + 0.5
    truth = (q - synthetic_pair.a[:, 2]) @ np.linalg.inv(synthetic_pair.a[:, :2]).T
    far_out = ((truth < -0.5) | (truth > synthetic_pair.size + 0.5)).any(axis=-1)
    well_in = ((truth > 1.5) & (truth < synthetic_pair.size - 1.5)).all(axis=-1)
    assert far_out.sum() > 100 and not valid[far_out].any() and valid[well_in].all()
    # the .points file, as GDAL takes it
    table = gcp.read_points(res["OUTPUT_GCP"])
    sgt = gdal.Open(str(sar)).GetGeoTransform()
    gcps = [
        gdal.GCP(mx, my, 0.0, (sx - sgt[0]) / sgt[1], (sgt[3] - sy) / abs(sgt[5]))
        for (mx, my), (sx, sy) in zip(table.map_xy[table.enabled], table.source_xy[table.enabled])
    ]
    srs = osr.SpatialReference()
    srs.ImportFromWkt(table.crs_wkt)
    assert srs.IsSame(opt.GetSpatialRef())
    vrt = gdal.Translate("", str(sar), format="VRT", GCPs=gcps, outputSRS=table.crs_wkt)
    g = opt.GetGeoTransform()
    bounds = (g[0], g[3] + g[5] * opt.RasterYSize, g[0] + g[1] * opt.RasterXSize, g[3])
    warped = gdal.Warp("", vrt, format="MEM", polynomialOrder=1, outputBounds=bounds,
                       xRes=g[1], yRes=-g[5], resampleAlg="bilinear", dstNodata=-999.0,
                       errorThreshold=0)  # fmt: skip
    by_gdal = warped.ReadAsArray().astype(np.float64)
    warped, vrt = None, None
    gdal_err, _ = _sampling_error(synthetic_pair, by_gdal, -999.0)
    assert np.abs(gdal_err.mean(axis=0)).max() < 0.1
    assert np.median(np.hypot(*gdal_err.T)) < 0.25
    both = (registered[0] != -999.0) & (by_gdal[0] != -999.0)
    assert np.abs(by_gdal[1:, both] - registered[1:, both]).max() < 0.01
    # the tie-point layer: the same points
    feats = [f for f in res["OUTPUT_TIEPOINTS"].getFeatures() if f["accepted"]]
    xy = np.array([[f.geometry().asPoint().x(), f.geometry().asPoint().y()] for f in feats])
    src_px = np.array([[f["sar_x_px"], f["sar_y_px"]] for f in feats])
    assert len(feats) == len(table) and np.abs(xy - table.map_xy).max() < 1e-6
    px = gcp.pixels_from_source(table.source_xy, rasters.open_raster(str(sar)).geotransform)
    assert np.abs(src_px - px).max() < 1e-6
    assert [bool(f["inlier"]) for f in feats] == table.enabled.tolist()


def test_the_report_of_a_run_escapes_its_paths_embeds_its_figures_and_agrees_with_the_points(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    """Inputs and outputs in folders named with <, & and quotes: the report shows the paths
    escaped, its 5 figures (residuals, 4 maps) are data: URIs (nothing to lose when the report
    is moved), and its figures are the .points file's: RMSE 0.352 px = the enabled rows'
    residuals, 48 inliers = 48 enabled rows, each row's optical pixel the row's map point and
    its residual the row's dX, dY."""
    import html as html_lib
    import re
    import shutil

    import processing

    folder = tmp_path / "a<b&c>\"q'"
    folder.mkdir()
    sar = Path(shutil.copy(synthetic_pair.sar, folder / "sar.tif"))
    optical = Path(shutil.copy(synthetic_pair.optical, folder / "optical.tif"))
    pair = Pair(optical, sar, synthetic_pair.a, synthetic_pair.size)
    out = tmp_path / "out<&>"
    res = processing.run(
        "sarmatcher:registersartooptical",
        _params(pair, twin_model, out, OUTPUT_REPORT=str(out / "r&<.html")),
    )
    moved = Path(shutil.move(res["OUTPUT_REPORT"], tmp_path / "elsewhere.html"))
    text = moved.read_text(encoding="utf-8")
    assert html_lib.escape(str(sar)) in text and str(sar) not in text
    sources = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert len(sources) == 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    cells = dict(re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td></tr>", text))
    table = gcp.read_points(res["OUTPUT_GCP"])
    res_xy = table.residual_xy[table.enabled]
    rmse = float(np.sqrt((res_xy**2).sum(axis=1).mean()))
    assert float(cells["RMSE (optical px)"]) == pytest.approx(rmse, abs=5e-4)
    assert rmse == pytest.approx(res["RMSE_PX"])
    assert int(cells["RANSAC inliers"]) == int(table.enabled.sum()) == res["N_INLIERS"]
    number = r"(-?[\d.]+)"
    rows = re.findall(
        r"<tr><td>\d+</td>" + rf"<td>{number}</td>" * 5 + r"<td>(yes|no)</td></tr>", text
    )
    got = np.array([[float(v) for v in r[:5]] for r in rows])
    gt = OPT_GT
    opt_px = (table.map_xy - [gt[0], gt[3]]) / [gt[1], gt[5]]
    assert len(rows) == len(table) and [r[5] == "yes" for r in rows] == table.enabled.tolist()
    np.testing.assert_allclose(got[:, :2], opt_px, atol=5e-4)
    np.testing.assert_allclose(got[:, 2:4], table.residual_xy, atol=5e-4)
    np.testing.assert_allclose(got[:, 4], np.hypot(*table.residual_xy.T), atol=5e-4)


def test_valid_sar_zeros_are_kept_or_warned_of(provider, synthetic_pair, twin_model, tmp_path):
    """A UInt16 SAR without nodata whose valid pixels include 0s: the output's nodata was 0,
    and they became holes without a word. Now the default is 65535 (the log says so); a NODATA
    0 given is used and warned of with the true count of valid 0s and what the warp makes of
    them (holes, or under GDAL 3.6's bilinear 1s)."""
    import processing
    from osgeo import gdal

    sar16 = tmp_path / "sar16.tif"
    gdal.Translate(str(sar16), str(synthetic_pair.sar), outputType=gdal.GDT_UInt16,
                   scaleParams=[[-17.5, -15, 0, 1000]], noData="none")  # fmt: skip
    zeros = int((gdal.Open(str(sar16)).ReadAsArray() == 0).sum())
    assert zeros == 993
    pair = Pair(synthetic_pair.optical, sar16, synthetic_pair.a, synthetic_pair.size)
    for nodata, out in ((None, tmp_path / "a"), (0, tmp_path / "b")):
        feedback = recording_feedback()
        kw = {} if nodata is None else {"NODATA": nodata}
        res = processing.run("sarmatcher:registersartooptical",
                             _params(pair, twin_model, out, **kw), feedback=feedback)  # fmt: skip
        said = [w for w in feedback.warnings if "equal the output nodata" in w]
        ds = gdal.Open(res["OUTPUT"])  # the band dies with its dataset
        band = ds.GetRasterBand(1)
        if nodata is None:
            assert band.GetNoDataValue() == 65535.0 and said == []
            kept = [w for w in feedback.warnings if "kept as data" in w]
            assert len(kept) == 1 and kept[0].startswith(f"{zeros} SAR pixels are 0 ")
            assert "set NODATA to 0" in kept[0]
            assert any(
                i.startswith(
                    "output nodata 65535: the SAR raster has no nodata value "
                    f"and {zeros} of its pixels are 0"
                )
                for i in feedback.infos
            )
        else:
            assert band.GetNoDataValue() == 0.0
            assert len(said) == 1 and said[0].startswith(f"{zeros} valid SAR pixel values (of ")
            # the default bilinear: what this GDAL writes for a warped 0 (GDAL 3.6: 1, no hole)
            written = reg.nodata_collision_value(gdal.GDT_UInt16, 0.0, "bilinear")
            assert ("wherever they fall on the output they are written as nodata, holes"
                    if written is None
                    else f"keeps no holes for them: wherever the warped value would be 0, GDAL's "
                    f"bilinear warp writes {written:g} instead") in said[0]  # fmt: skip


def test_a_ringing_kernel_over_infinite_sar_pixels_is_refused_before_the_matching(
    provider, synthetic_pair, twin_model, tmp_path, monkeypatch
) -> None:
    """-inf dB pixels in the middle of the SAR under RESAMPLING cubic: refused before any
    matching (it was refused only after the whole matching and fit), naming the count; the
    same SAR with bilinear registers; -inf pixels only at the SAR's edge are left to the check
    after the fit, which refuses them too. Nothing is written."""
    import processing
    from osgeo import gdal
    from qgis.core import QgsProcessingException

    from sar_optical_matcher.processing import register

    src = gdal.Open(str(synthetic_pair.sar))
    db = src.GetRasterBand(1).ReadAsArray().astype(np.float32)

    def write(name: str, rows: slice, cols: slice) -> Path:
        data = db.copy()
        data[rows, cols] = -np.inf
        path = tmp_path / name
        ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[1], data.shape[0], 1,
                                                  gdal.GDT_Float32)  # fmt: skip
        ds.SetGeoTransform(src.GetGeoTransform())
        ds.SetProjection(src.GetProjection())
        ds.GetRasterBand(1).SetNoDataValue(-9999.0)
        ds.GetRasterBand(1).WriteArray(data)
        return path

    middle = write("sar_middle.tif", slice(180, 190), slice(180, 192))
    edge = write("sar_edge.tif", slice(None), slice(0, 2))
    out = tmp_path / "out"
    out.mkdir()
    matched: list[str] = []
    real = register.run_matching

    def counting(*args: Any, **kw: Any) -> Any:
        matched.append("run")
        return real(*args, **kw)

    monkeypatch.setattr(register, "run_matching", counting)
    params = _params(synthetic_pair, twin_model, out, RESAMPLING=2, SAR=str(middle))
    refusal = r"RESAMPLING cubic: 120 valid SAR pixels more than 32 optical pixels inside the "
    with pytest.raises(QgsProcessingException, match=refusal + "optical raster are infinite"):
        processing.run("sarmatcher:registersartooptical", params)
    assert matched == [] and list(out.iterdir()) == []
    # the whole SAR falls on the output: all 768 edge pixels counted, no window named
    with pytest.raises(QgsProcessingException, match=r"RESAMPLING cubic: 768 valid SAR pixels are"):
        processing.run("sarmatcher:registersartooptical", {**params, "SAR": str(edge)})
    assert matched == ["run"] and list(out.iterdir()) == []
    res = processing.run("sarmatcher:registersartooptical", {**params, "RESAMPLING": 1})
    assert matched == ["run", "run"] and res["N_INLIERS"] >= 8


def test_a_gcp_file_of_a_sar_turned_90_degrees_is_refused_up_front(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    """A SAR grid turned 90 degrees (gt[1] = gt[5] = 0) registers, but its .points file cannot
    be written in QGIS's convention: that failed after the matching and warp with an internal
    'geotransform must be 6 numbers ...' (helper-73). Now settings() says so and how out."""
    from osgeo import gdal
    from qgis.core import QgsProcessingContext, QgsProcessingException

    from sar_optical_matcher.processing.register import RegisterSarToOpticalAlgorithm

    src = gdal.Open(str(synthetic_pair.sar))
    g = src.GetGeoTransform()
    turned = tmp_path / "sar_turned.tif"
    ds = gdal.GetDriverByName("GTiff").CreateCopy(str(turned), src)
    ds.SetGeoTransform((g[0], 0.0, g[1], g[3], g[5], 0.0))
    ds = None
    alg = RegisterSarToOpticalAlgorithm()
    alg.initAlgorithm()
    out = tmp_path / "out"
    params = _params(synthetic_pair, twin_model, out, SAR=str(turned))
    with pytest.raises(QgsProcessingException, match=r"^OUTPUT_GCP: a \.points file cannot hold "
                       r"this SAR's pixels: its grid is turned 90 degrees.*Leave OUTPUT_GCP "
                       r"empty"):  # fmt: skip
        alg.settings(params, QgsProcessingContext())
    del params["OUTPUT_GCP"]
    assert alg.settings(params, QgsProcessingContext()).gcp_path is None
    assert not out.exists()
