"""Bad inputs through processing.run: a clear error naming the problem and the fix, no outputs.

Also the inputs that look odd but must work: NaN/Inf pixels, geographic CRSs (degrees), a
keypoints layer in another CRS. Positions are checked against the synthetic truth.

Zero keypoints: *Detect keypoints* and *Compute correspondence* write an empty layer and push a
warning (a modeler/batch chain keeps running); *Register SAR to optical* raises an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.processing import (  # noqa: F401
    EPSG,
    OPT_GT,
    Pair,
    provider_fixture,
    twin_model_fixture,
    write_pair,
)
from tests.reliability import (
    alg_params,
    files_under,
    map_to_px,
    px_to_map,
    read_array,
    rewrite,
    run_refused,
    to_crs,
    true_sar_px,
    warp_to_epsg,
    write_raster,
)

ALGS = ("detectkeypoints", "computecorrespondence", "registersartooptical")
MATCHING = ALGS[1:]


@pytest.fixture(name="pair", scope="module")
def pair_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    """The default synthetic pair (384 px, truth ``A``)."""
    return write_pair(tmp_path_factory.mktemp("pair"), seed=0)


@pytest.fixture(name="out")
def out_fixture(tmp_path: Path) -> Path:
    """An empty output folder."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _params(alg: str, pair: Pair, model: Path, out: Path, optical=None, sar=None, **kw) -> dict:
    return alg_params(alg, optical or pair.optical, sar or pair.sar, model, out, **kw)


def _run(alg: str, params: dict, feedback=None) -> dict:
    import processing

    return processing.run(f"sarmatcher:{alg}", params, feedback=feedback)


def FeedbackLog():  # noqa: N802 - kept as the tests name it
    """A QgsProcessingFeedback that records the infos and warnings pushed to it."""
    from tests.qgis_helpers import recording_feedback

    return recording_feedback()


# --- unreadable and ungeoreferenced rasters ------------------------------------------------------


def _not_a_raster(folder: Path) -> Path:
    path = folder / "notes.tif"
    path.write_text("this is a text file, not an image\n" * 50)
    return path


def _truncated(pair: Pair, folder: Path) -> Path:
    path = folder / "truncated.tif"
    data = pair.sar.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


@pytest.mark.parametrize("alg", ALGS)
def test_non_raster_optical_is_refused(alg, provider, pair, twin_model, tmp_path, out) -> None:
    bad = _not_a_raster(tmp_path)
    key = "INPUT" if alg == "detectkeypoints" else "OPTICAL"
    params = _params(alg, pair, twin_model, out, **{key: str(bad)})
    run_refused(alg, params, out, key, "notes.tif|not a readable raster|raster", "GeoTIFF|GDAL")


@pytest.mark.parametrize("alg", MATCHING)
def test_truncated_sar_is_refused(alg, provider, pair, twin_model, tmp_path, out) -> None:
    params = _params(alg, pair, twin_model, out, sar=_truncated(pair, tmp_path))
    run_refused(alg, params, out, "truncated.tif", "truncated or corrupt", "gdalinfo -checksum")


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("missing", ["georeference", "crs"])
def test_ungeoreferenced_raster_is_refused(
    alg, missing, provider, pair, twin_model, tmp_path, out
) -> None:
    arr, gt = read_array(pair.optical)
    kw = {"gt": None, "epsg": None} if missing == "georeference" else {"epsg": None}
    bad = write_raster(tmp_path / "bare.tif", arr.astype(np.uint8), **kw)
    if alg == "detectkeypoints":
        params = _params(alg, pair, twin_model, out, INPUT=str(bad))
    else:  # the SAR without georeference, the harder case (the optical defines the grid)
        params = _params(alg, pair, twin_model, out, sar=bad)
    fix = "Georeferencer|gdal_translate" if missing == "georeference" else "Assign Projection"
    run_refused(alg, params, out, "no georeference|no coordinate reference system", fix)


# --- geometry: overlap, size, bands ---------------------------------------------------------------


def _moved_sar(pair: Pair, folder: Path, dx_px: float, dy_px: float) -> Path:
    """The pair's SAR with its georeference moved by (dx, dy) optical pixels."""
    _, gt = read_array(pair.sar)
    moved = (gt[0] + dx_px * OPT_GT[1], *gt[1:3], gt[3] + dy_px * OPT_GT[5], *gt[4:])
    return rewrite(pair.sar, folder / f"sar_moved_{dx_px:g}.tif", lambda a: a, gt=moved)


@pytest.mark.parametrize("alg", MATCHING)
@pytest.mark.parametrize("shift", [10000.0, 330.0])  # far away; a 54 px strip (< 96 px region)
def test_no_useful_overlap_is_refused(alg, shift, provider, pair, twin_model, tmp_path, out):
    params = _params(alg, pair, twin_model, out, sar=_moved_sar(pair, tmp_path, shift, 0.0))
    text = run_refused(alg, params, out, "overlap", "search region", "same (place|area)")
    assert ("do not overlap" in text) == (shift > 1000)


def test_keypoints_are_detected_where_the_sar_leaves_room(provider, pair, twin_model, out):
    """A SAR moved 160 px right covers only part of the optical: keypoints are detected only
    where a whole search region lies on it (17 of 23 were skipped as nodata_sar before)."""
    sar = _moved_sar(pair, out.parent, 160.0, 0.0)
    feedback = FeedbackLog()
    params = _params("computecorrespondence", pair, twin_model, out, sar=sar,
                     MATCHES="memory:", OUTPUT_MAPS=None)  # fmt: skip
    res = _run("computecorrespondence", params, feedback)
    feats = list(res["MATCHES"].getFeatures())
    x = np.array([f["opt_x_px"] for f in feats])
    assert len(feats) >= 5 and x.min() >= 160 + 48  # half the 96 px search region
    assert {f["status"] for f in feats} == {"ok"}, [f["status"] for f in feats]
    assert not any("skipped" in w for w in feedback.warnings), feedback.warnings


@pytest.mark.parametrize("alg", ALGS)
def test_raster_smaller_than_the_search_region_is_refused(
    alg, provider, pair, twin_model, tmp_path, out
) -> None:
    arr, gt = read_array(pair.optical)
    small = write_raster(tmp_path / "small.tif", arr[:80, :80].astype(np.uint8), gt=gt)
    if alg == "detectkeypoints":  # detection alone only needs room for the BORDER (56 px)
        params = _params(alg, pair, twin_model, out, INPUT=str(small))
        run_refused(alg, params, out, "no room for keypoints", "80 x 80", "smaller border")
    else:  # matching needs one search region (96 px) whatever the BORDER
        params = _params(alg, pair, twin_model, out, optical=small, BORDER=0)
        run_refused(alg, params, out, "OPTICAL 80 x 80 px", "smaller than one search region")


@pytest.mark.parametrize("alg", ALGS)
def test_band_out_of_range_is_refused(alg, provider, pair, twin_model, out) -> None:
    key = "BAND" if alg == "detectkeypoints" else "SAR_BAND"
    params = _params(alg, pair, twin_model, out, **{key: 3})
    run_refused(alg, params, out, "band 3", r"1 band|1\.\.1|between 1 and 1")


def _slc(pair: Pair, folder: Path) -> Path:
    arr, gt = read_array(pair.sar)
    phase = np.exp(1j * np.random.default_rng(0).uniform(0, 2 * np.pi, arr.shape))
    return write_raster(folder / "slc.tif", (arr * phase).astype(np.complex64), gt=gt)


@pytest.mark.parametrize("alg", MATCHING)
def test_complex_sar_raster_is_refused(alg, provider, pair, twin_model, tmp_path, out) -> None:
    """A single-look complex (SLC) band would otherwise lose its imaginary part silently."""
    params = _params(alg, pair, twin_model, out, sar=_slc(pair, tmp_path))
    text = run_refused(alg, params, out, "slc.tif", "CFloat32", "amplitude or intensity", "SNAP")
    assert text.startswith("SAR: band 1 of slc.tif is complex (CFloat32), e.g. a single-look")
    assert "'mod' pixel function" in text and '--calc="abs(A)"' in text


@pytest.mark.parametrize("alg", ALGS)
def test_complex_optical_or_input_names_its_parameter(
    alg, provider, pair, twin_model, tmp_path, out
) -> None:
    """A complex band given as the optical (or Detect keypoints' INPUT) was refused with the SAR
    wording (SNAP, 'the matcher needs a detected amplitude'): the message now names the
    parameter and what belongs there."""
    slc = _slc(pair, tmp_path)
    if alg == "detectkeypoints":
        params = _params(alg, pair, twin_model, out, INPUT=str(slc))
        text = run_refused(alg, params, out, "slc.tif", "CFloat32")
        assert text.startswith("INPUT: band 1 of slc.tif is complex (CFloat32): keypoints are ")
        assert "usually the optical raster" in text and "choose it for INPUT" in text
    else:
        text = run_refused(alg, _params(alg, pair, twin_model, out, optical=slc), out, "slc")
        assert text.startswith("OPTICAL: band 1 of slc.tif is complex (CFloat32), but the OPT")
        assert "the wrong file is given for OPTICAL" in text and "belongs in SAR" in text
    assert "SNAP" not in text and '--calc="abs(A)"' in text


@pytest.mark.parametrize("which", ["sar", "optical", None])
@pytest.mark.parametrize("alg", MATCHING)
def test_non_square_pixels_are_warned_about(alg, which, provider, pair, twin_model, tmp_path, out):
    """A raster resampled to 10 x 20 m pixels: matching ran on without a word (templates in
    optical pixels cover twice the ground along y; an upsampled SAR axis); now a warning names
    the pixel sizes, what they mean and the fix. Square pixels say nothing."""
    from osgeo import gdal

    params = _params(alg, pair, twin_model, out)
    if which is not None:
        src = pair.sar if which == "sar" else pair.optical
        _, gt = read_array(src)
        dst = tmp_path / f"{which}_10x20.tif"
        gdal.Warp(str(dst), str(src), xRes=abs(gt[1]), yRes=2 * abs(gt[5]), resampleAlg="average")
        params = _params(alg, pair, twin_model, out, **{which: dst})
    log = FeedbackLog()
    with contextlib.suppress(Exception):  # a refused fit has logged the matching
        _run(alg, params, log)
    notes = [w for w in log.warnings if "pixels are not square" in w]
    if which is None:
        assert notes == []
        return
    assert len(notes) == 1, log.warnings
    size = f"{abs(gt[1]):.4g} x {2 * abs(gt[5]):.4g} map units a pixel (column x row step, 2.0:1)"
    assert notes[0].startswith(f"{which.upper()} pixels are not square on the ground: {size}. ")
    if which == "optical":
        assert "every template covers 2.0x more ground along one axis" in notes[0]
        assert notes[0].endswith(
            f"`gdalwarp -tr {abs(gt[1]):.4g} {abs(gt[1]):.4g} -r cubic in.tif out.tif`"
        )
    else:
        assert "its coarser axis upsampled 2.0x" in notes[0] and "GR square pixel" in notes[0]


@pytest.mark.parametrize("non_square", [True, False])
def test_detect_keypoints_warns_of_non_square_pixels(
    non_square, provider, pair, twin_model, tmp_path, out
):
    """Detect keypoints said nothing of a 10 x 20 m INPUT (Compute correspondence and Register
    warned): its corners are found, and then matched, on that grid. The warning is the same
    one, naming INPUT; square pixels say nothing."""
    from osgeo import gdal

    _, gt = read_array(pair.optical)
    src = tmp_path / "optical.tif"
    y_res = 2 * abs(gt[5]) if non_square else abs(gt[5])
    gdal.Warp(str(src), str(pair.optical), xRes=abs(gt[1]), yRes=y_res, resampleAlg="average")
    log = FeedbackLog()
    _run("detectkeypoints", _params("detectkeypoints", pair, twin_model, out, INPUT=str(src)), log)
    notes = [w for w in log.warnings if "pixels are not square" in w]
    if not non_square:
        assert notes == []
        return
    size = f"{abs(gt[1]):.4g} x {y_res:.4g} map units a pixel (column x row step, 2.0:1)"
    assert notes == [
        f"INPUT pixels are not square on the ground: {size}. Keypoints are detected and matched "
        "on the optical pixel grid, so every template covers 2.0x more ground along one axis "
        "than along the other, unlike the square pixels the model was trained on, and "
        "keypoints are fewer along the coarser axis: expect fewer and less accurate matches. "
        f"Resample the optical to square pixels first; e.g. `gdalwarp -tr {abs(gt[1]):.4g} "
        f"{abs(gt[1]):.4g} -r cubic in.tif out.tif`"
    ]


def _scaled_sar(pair: Pair, folder: Path, factor: float) -> Path:
    """The pair's SAR with pixels ``factor`` times the optical's (content meaningless)."""
    _, gt = read_array(pair.sar)
    scaled = (gt[0] - 100.0, gt[1] * factor, 0.0, gt[3] + 100.0, 0.0, gt[5] * factor)
    return rewrite(pair.sar, folder / f"sar_x{factor:.2f}.tif", lambda a: a, gt=scaled)


@pytest.mark.parametrize(
    ("factor", "pixel_size", "kind", "expected"),
    [
        (3.0, 0.0, "info", "matching on a grid of 30.3 optical map units a pixel (automatic"),
        (3.0, 10.0, "warning", "SAR pixel is 3.0x the matching-grid pixel"),
        (1.0 / 3.0, 0.0, "info", "3.0x smaller than the matching-grid pixel"),
        (1.0, 0.0, None, None),
    ],
)
def test_pixel_size_mismatch_sets_or_warns_about_the_matching_grid(
    factor, pixel_size, kind, expected, provider, pair, twin_model, tmp_path, out
) -> None:
    """A SAR pixel 3x larger than the optical one is matched on the SAR's pixel size (or, when
    MATCH_PIXEL_SIZE forces the optical grid, warned about with the fix); a 3x smaller one is
    averaged onto the grid; the same size says nothing."""
    sar = pair.sar if factor == 1.0 else _scaled_sar(pair, tmp_path, factor)
    log = FeedbackLog()
    params = _params("computecorrespondence", pair, twin_model, out, sar=sar,
                     MATCH_PIXEL_SIZE=pixel_size)  # fmt: skip
    _run("computecorrespondence", params, feedback=log)
    notes = [m for m in log.infos + log.warnings if "matching-grid pixel" in m or "a grid of" in m]
    if kind is None:
        assert notes == []
        return
    assert len(notes) == 1 and expected in notes[0], notes
    assert notes[0] in (log.warnings if kind == "warning" else log.infos)
    if kind == "warning":
        assert "Set MATCH_PIXEL_SIZE to 0 (automatic) or to the SAR pixel size, 30.3" in notes[0]


def test_matching_pixel_size_finer_than_the_optical_is_refused(
    provider, pair, twin_model, out
) -> None:
    params = _params("computecorrespondence", pair, twin_model, out, MATCH_PIXEL_SIZE=5.0)
    run_refused("computecorrespondence", params, out, "MATCH_PIXEL_SIZE 5 is finer than the "
                "optical pixel", "use 0 \\(automatic\\)")  # fmt: skip


# --- empty, constant and broken pixels ------------------------------------------------------------


@pytest.mark.parametrize("content", ["constant", "nodata"])
def test_constant_or_nodata_optical(content, provider, pair, twin_model, tmp_path, out) -> None:
    value = 77.0 if content == "constant" else -1.0
    flat = rewrite(pair.optical, tmp_path / "flat.tif", lambda a: np.full_like(a, value),
                   nodata=-1.0)  # fmt: skip
    # Detect keypoints, and Compute correspondence on the constant one: an empty layer and a
    # warning; Compute correspondence on the nodata one, which knows the template, says so
    for alg in ("detectkeypoints", "computecorrespondence"):
        key = "INPUT" if alg == "detectkeypoints" else "OPTICAL"
        params = _params(alg, pair, twin_model, out, **{key: str(flat)})
        params.pop("OUTPUT_MAPS", None)
        params["OUTPUT" if key == "INPUT" else "MATCHES"] = "memory:"
        if alg == "computecorrespondence" and content == "nodata":
            from qgis.core import QgsProcessingException

            with pytest.raises(QgsProcessingException, match=r"nowhere where the SAR has valid "
                               r"data does the optical band 1 have a valid template .*check the "
                               r"optical's nodata value"):  # fmt: skip
                _run(alg, params)
            continue
        log = FeedbackLog()
        res = _run(alg, params, log)
        layer = res["OUTPUT" if key == "INPUT" else "MATCHES"]
        assert layer.featureCount() == 0
        assert any("no keypoints" in w.lower() for w in log.warnings), log.warnings
    # Register: an error that says why and what to do
    params = _params("registersartooptical", pair, twin_model, out, optical=flat)
    why = ("no keypoints", "constant", "textured")
    if content == "nodata":  # detection knows the template: the optical's nodata is named
        why = ("no room for keypoints", "optical band 1 have a valid template", "nodata value")
    with gdal_messages() as seen:
        run_refused("registersartooptical", params, out, *why)
    assert not [m for m in seen if "statistics" in m], seen  # GDAL's, for the nodata one


@contextlib.contextmanager
def gdal_messages() -> Iterator[list[str]]:
    """GDAL's messages that reach the handler a caller has (GDAL's printing, QGIS's log)."""
    from osgeo import gdal

    seen: list[str] = []
    gdal.PushErrorHandler(lambda _cls, _no, msg: seen.append(str(msg)))
    try:
        yield seen
    finally:
        gdal.PopErrorHandler()


def test_all_nodata_sar_is_refused_by_register(provider, pair, twin_model, tmp_path, out) -> None:
    """Refused with the plugin's message only: QGIS's statistics of the layer, when it loaded
    it, made GDAL print "ERROR 1: Failed to compute statistics, no valid pixels found in
    sampling." first."""
    empty = rewrite(pair.sar, tmp_path / "empty.tif", lambda a: np.full_like(a, -9999.0))
    params = _params("registersartooptical", pair, twin_model, out, sar=empty)
    # refused before detection since the SAR coverage (0.3.5), not after matching (nodata_sar)
    with gdal_messages() as seen:
        run_refused("registersartooptical", params, out, "nowhere on the optical raster does "
                    "the SAR have valid data", "0% of the grid",
                    "check the SAR's nodata value")  # fmt: skip
    assert not [m for m in seen if "statistics" in m], seen


def test_nan_and_inf_pixels_are_skipped_not_fatal(provider, pair, twin_model, tmp_path, out):
    """Float optical with a NaN block, SAR with NaN and +-Inf: registers, truth within 1 px."""
    opt = rewrite(pair.optical, tmp_path / "opt_nan.tif", _with_holes(nan_block=True), nodata=None)
    sar = rewrite(pair.sar, tmp_path / "sar_inf.tif", _with_holes(nan_block=False))
    kp = _run("detectkeypoints", _params("detectkeypoints", pair, twin_model, out, INPUT=str(opt),
                                         OUTPUT="memory:"))["OUTPUT"]  # fmt: skip
    xy = np.array([[f["x_px"], f["y_px"]] for f in kp.getFeatures()])
    assert len(xy) >= 20
    assert not ((xy[:, 0] > 150 - 4) & (xy[:, 0] < 230 + 4) & (xy[:, 1] > 150 - 4)
                & (xy[:, 1] < 230 + 4)).any()  # fmt: skip  # no keypoint in the NaN block
    params = _params("registersartooptical", pair, twin_model, out, optical=opt, sar=sar,
                     OUTPUT_TIEPOINTS="memory:")  # fmt: skip
    res = _run("registersartooptical", params)
    _assert_tiepoints_true(res["OUTPUT_TIEPOINTS"], pair, lambda p: p)
    statuses = {f["accepted"] for f in res["OUTPUT_TIEPOINTS"].getFeatures()}
    assert statuses == {True}  # none spent next to the holes (0.3.6: some there were skipped)
    reg_arr, _ = read_array(Path(res["OUTPUT"]))
    assert np.isfinite(reg_arr).mean() > 0.5


def _with_holes(nan_block: bool):
    def edit(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float32).copy()
        if nan_block:
            a[150:230, 150:230] = np.nan
        else:
            a[60:70, :] = np.inf
            a[:, 300:305] = -np.inf
            a[200:240, 40:90] = np.nan
        return a

    return edit


def _assert_tiepoints_true(layer, pair: Pair, opt_px_to_utm_px) -> None:
    """Median distance of the inliers' SAR positions to the truth < 1 px, >= 8 inliers."""
    feats = [f for f in layer.getFeatures() if f["inlier"]]
    assert len(feats) >= 8
    opt = opt_px_to_utm_px(np.array([[f["opt_x_px"], f["opt_y_px"]] for f in feats]))
    sar = np.array([[f["sar_x_px"], f["sar_y_px"]] for f in feats])
    err = np.linalg.norm(true_sar_px(pair, opt) - sar, axis=1)
    assert np.median(err) < 1.0, np.median(err)


# --- geographic CRSs and keypoints in another CRS -------------------------------------------------


def test_sar_in_degrees_registers(provider, pair, twin_model, tmp_path, out) -> None:
    """SAR reprojected to EPSG:4326, optical in UTM: registered as well as the UTM SAR."""
    from osgeo import gdal

    sar4326 = warp_to_epsg(pair.sar, tmp_path / "sar_4326.tif", 4326)
    params = _params("registersartooptical", pair, twin_model, out, sar=sar4326,
                     OUTPUT_TIEPOINTS="memory:")  # fmt: skip
    res = _run("registersartooptical", params)
    assert res["N_INLIERS"] >= 8 and res["RMSE_PX"] < 1.5
    # truth of a tie point: SAR-4326 px -> degrees -> UTM -> original SAR px (the content)
    gt4326 = gdal.Open(str(sar4326)).GetGeoTransform()
    _, gt_sar = read_array(pair.sar)
    feats = [f for f in res["OUTPUT_TIEPOINTS"].getFeatures() if f["inlier"]]
    sar_px = np.array([[f["sar_x_px"], f["sar_y_px"]] for f in feats])
    content_px = map_to_px(gt_sar, to_crs(px_to_map(gt4326, sar_px), 4326, EPSG))
    opt = np.array([[f["opt_x_px"], f["opt_y_px"]] for f in feats])
    assert np.median(np.linalg.norm(true_sar_px(pair, opt) - content_px, axis=1)) < 1.0
    # the registered raster lies on the optical grid and matches the optical content
    warped, gt = read_array(Path(res["OUTPUT"]))
    ref, _ = read_array(pair.optical)
    assert gt == OPT_GT and warped.shape == ref.shape
    inner = (slice(40, -40), slice(40, -40))
    err = np.nanmedian(np.abs((warped[inner] + 18.0) / 3.0 * 255.0 - ref[inner]))
    assert err < 6.0, err


def test_optical_in_degrees_gives_true_matches(provider, pair, twin_model, tmp_path, out) -> None:
    """Optical reprojected to EPSG:4326: match positions (in degrees) agree with the truth."""
    opt4326 = warp_to_epsg(pair.optical, tmp_path / "opt_4326.tif", 4326)
    _, gt4326 = read_array(opt4326)
    params = _params("computecorrespondence", pair, twin_model, out, optical=opt4326,
                     MATCHES="memory:", OUTPUT_MAPS=None)  # fmt: skip
    res = _run("computecorrespondence", params)
    layer = res["MATCHES"]
    assert layer.crs().authid() == "EPSG:4326"
    feats = list(layer.getFeatures())
    assert len(feats) >= 15
    opt_px = np.array([[f["opt_x_px"], f["opt_y_px"]] for f in feats])
    geom = np.array([[f.geometry().asPoint().x(), f.geometry().asPoint().y()] for f in feats])
    np.testing.assert_allclose(geom, px_to_map(gt4326, opt_px), atol=1e-9)
    # found position in optical-4326 px -> degrees -> UTM px -> truth in SAR px
    found = opt_px + np.array([[f["dx_px"], f["dy_px"]] for f in feats])
    utm_px = map_to_px(OPT_GT, to_crs(px_to_map(gt4326, found), 4326, EPSG))
    sar = np.array([[f["sar_x_px"], f["sar_y_px"]] for f in feats])
    kp_utm = map_to_px(OPT_GT, to_crs(geom, 4326, EPSG))
    err = np.linalg.norm(true_sar_px(pair, kp_utm) - sar, axis=1)
    assert np.mean(err < 1.5) > 0.5, np.round(np.sort(err), 1)
    assert np.isfinite(utm_px).all()


def test_keypoints_layer_in_another_crs_is_reprojected(provider, pair, twin_model, out) -> None:
    from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsVectorLayer

    opt_px = np.array([[96.5, 100.5], [200.5, 150.5], [290.5, 280.5], [150.5, 300.5]])
    deg = to_crs(px_to_map(OPT_GT, opt_px), EPSG, 4326)
    layer = QgsVectorLayer("Point?crs=EPSG:4326", "kp", "memory")
    for x, y in deg:
        feature = QgsFeature()
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(float(x), float(y))))
        layer.dataProvider().addFeature(feature)
    params = _params("computecorrespondence", pair, twin_model, out, KEYPOINTS=layer,
                     MATCHES="memory:", OUTPUT_MAPS=None)  # fmt: skip
    feats = sorted(_run("computecorrespondence", params)["MATCHES"].getFeatures(),
                   key=lambda f: f["id"])  # fmt: skip
    got = np.array([[f["opt_x_px"], f["opt_y_px"]] for f in feats])
    np.testing.assert_allclose(got, opt_px, atol=1e-6)
    sar = np.array([[f["sar_x_px"], f["sar_y_px"]] for f in feats])
    assert np.median(np.linalg.norm(true_sar_px(pair, opt_px) - sar, axis=1)) < 1.0


def test_empty_keypoints_layer(provider, pair, twin_model, out) -> None:
    from qgis.core import QgsVectorLayer

    empty = QgsVectorLayer("Point?crs=EPSG:4326", "kp", "memory")
    params = _params("computecorrespondence", pair, twin_model, out, KEYPOINTS=empty,
                     MATCHES="memory:", OUTPUT_MAPS=None)  # fmt: skip
    log = FeedbackLog()
    assert _run("computecorrespondence", params, log)["MATCHES"].featureCount() == 0
    assert any("no keypoints" in w.lower() for w in log.warnings), log.warnings
    params = _params("registersartooptical", pair, twin_model, out, KEYPOINTS=empty)
    run_refused("registersartooptical", params, out, "no keypoints", "KEYPOINTS")


# --- models that do not fit -----------------------------------------------------------------------


@pytest.fixture(name="bad_models", scope="module")
def bad_models_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.model_fixtures import make_bad_models

    return make_bad_models(tmp_path_factory.mktemp("bad"))


#: fault -> what the message must say (problem) and suggest (fix)
MODEL_FAULTS = {
    "not_onnx": ("not an ONNX model", "choose"),
    "empty": ("not an ONNX model", "choose"),
    "truncated": ("truncated|corrupt", "copy it again|choose"),
    "no_metadata": ("not a SAR-Optical Matcher model", "re-export"),
    "bad_json": ("invalid model contract", ""),
    "wrong_size": ("template", "re-export|set them"),
    "wrong_channels": ("channels", "re-export"),
    "swapped_inputs": ("swapped", "re-export"),
    "single_encoder": ("inputs", "re-export"),
    "newer_format": ("format|version", "upgrade|update|plugin"),
    "new_opset": ("opset 30", "upgrade onnxruntime"),
    "new_ir": ("IR version 99", "upgrade onnxruntime"),
}


@pytest.mark.parametrize("fault", sorted(MODEL_FAULTS))
def test_unusable_model_is_refused(fault, provider, pair, bad_models, out) -> None:
    problem, fix = MODEL_FAULTS[fault]
    for alg in MATCHING:
        params = _params(alg, pair, bad_models[fault], out)
        run_refused(alg, params, out, problem, fix)


def test_outputs_of_a_good_run_for_reference(provider, pair, twin_model, out) -> None:
    """The same parameters as the refusals above do write every output (the tests can fail)."""
    res = _run("registersartooptical", _params("registersartooptical", pair, twin_model, out))
    assert res["N_INLIERS"] >= 8
    assert {"reg.tif", "reg.points", "reg.html", "tp.gpkg"} <= set(files_under(out))
