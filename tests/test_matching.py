"""Compute correspondence engine: recover a known sub-pixel shift with the twin model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from scipy import ndimage

from sar_optical_matcher.matching import Canceled, match_keypoints
from sar_optical_matcher.model.runtime import OnnxMatcher
from sar_optical_matcher.rasters import RasterInfo, open_raster
from tests.model_fixtures import make_twin_model
from tests.test_rasters import UTM_GT, make_tif

SHIFT = (5.3, -7.8)  # (dx, dy) optical pixels: where the SAR's georeference puts the content
KEYPOINTS = np.array([[80, 80], [176, 80], [80, 176], [176, 176], [128, 128], [100, 150]]) + 0.5


def scene(seed: int = 0, size: int = 256) -> np.ndarray:
    """Smooth uint8 texture that saturates ~10 % at each end, so the 2-98 % stretch of any
    template or region is exactly [0, 255] and both branches see the same values."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.normal(size=(size, size)), 3.0)
    return np.clip(128 + 100 * (x - x.mean()) / x.std(), 0, 255).astype(np.uint8)


def shifted_gt(dx: float, dy: float) -> tuple[float, ...]:
    """Geotransform that puts SAR pixel (u, v) where optical pixel (u + dx, v + dy) is."""
    return (UTM_GT[0] + dx * UTM_GT[1], UTM_GT[1], 0.0, UTM_GT[3] + dy * UTM_GT[5], 0.0, UTM_GT[5])


@pytest.fixture(scope="module")
def matcher(tmp_path_factory: pytest.TempPathFactory) -> OnnxMatcher:
    path = make_twin_model(tmp_path_factory.mktemp("model") / "twin.onnx")
    return OnnxMatcher(path, device="cpu", log=lambda _: None)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[RasterInfo, RasterInfo]:
    root = tmp_path_factory.mktemp("pair")
    img = scene()
    optical = open_raster(make_tif(root / "optical.tif", img, UTM_GT))
    sar = open_raster(make_tif(root / "sar.tif", img, shifted_gt(*SHIFT)))
    return optical, sar


def test_recovers_known_subpixel_shift(matcher: OnnxMatcher, pair: tuple) -> None:
    optical, sar = pair
    seen: list[float] = []
    result = match_keypoints(optical, 1, sar, 1, KEYPOINTS, matcher, batch_size=4,
                             keep_maps=True, progress=seen.append)  # fmt: skip
    assert seen == pytest.approx([4 / 6, 1.0])  # fractions: 0..100 ran the bar to its end
    assert [r.status for r in result.records] == ["ok"] * 6 and result.counts == {"ok": 6}
    assert result.sar_scale == "db"  # uint8 SAR
    for r, (x, y) in zip(result.records, KEYPOINTS):
        assert (r.opt_x_px, r.opt_y_px) == (x, y)
        assert abs(r.dx_px - SHIFT[0]) < 0.5 and abs(r.dy_px - SHIFT[1]) < 0.5, (r.dx_px, r.dy_px)
        # the SAR raster holds the optical pixels unchanged: the match is the same pixel there
        assert abs(r.sar_x_px - x) < 0.5 and abs(r.sar_y_px - y) < 0.5
        assert (r.opt_x_map, r.opt_y_map) == (UTM_GT[0] + 10 * x, UTM_GT[3] - 10 * y)
        assert r.sar_x_map == pytest.approx(UTM_GT[0] + 10 * (x + r.dx_px))
        assert r.sar_y_map == pytest.approx(UTM_GT[3] - 10 * (y + r.dy_px))
        assert 0.8 < r.score <= 1.0 + 1e-6 and r.ratio >= 1.0 and 0.0 <= r.confidence <= 1.0
    assert result.maps is not None and result.maps.shape == (6, 33, 33)
    peaks = [np.unravel_index(m.argmax(), m.shape) for m in result.maps]
    assert all(abs(py - 16 - SHIFT[1]) <= 1 and abs(px - 16 - SHIFT[0]) <= 1 for py, px in peaks)


def test_aligned_pair_gives_zero_shift(matcher: OnnxMatcher, tmp_path: Path) -> None:
    img = scene(seed=1)
    optical = open_raster(make_tif(tmp_path / "o.tif", img, UTM_GT))
    sar = open_raster(make_tif(tmp_path / "s.tif", img, UTM_GT))
    result = match_keypoints(optical, 1, sar, 1, KEYPOINTS[:3], matcher)
    for r in result.records:
        assert abs(r.dx_px) < 0.5 and abs(r.dy_px) < 0.5 and r.score == pytest.approx(1, abs=1e-4)


def test_other_crs_and_pixel_size(matcher: OnnxMatcher, pair: tuple, tmp_path: Path) -> None:
    optical, sar = pair
    warped = tmp_path / "sar_3857.tif"
    gdal.Warp(str(warped), sar.path, dstSRS="EPSG:3857", xRes=9.0, yRes=9.0,
              resampleAlg="cubic")  # fmt: skip
    sar2 = open_raster(warped)
    result = match_keypoints(optical, 1, sar2, 1, KEYPOINTS[:4], matcher)
    # independent check of the SAR pixel: GDAL's own optical-pixel -> SAR-pixel transformer
    transformer = gdal.Transformer(gdal.Open(optical.path), gdal.Open(sar2.path), [])
    for r in result.records:
        assert r.status == "ok"
        assert abs(r.dx_px - SHIFT[0]) < 0.5 and abs(r.dy_px - SHIFT[1]) < 0.5, (r.dx_px, r.dy_px)
        ok, (u, v, _) = transformer.TransformPoint(0, r.opt_x_px + r.dx_px, r.opt_y_px + r.dy_px)
        assert ok and abs(r.sar_x_px - u) < 1e-3 and abs(r.sar_y_px - v) < 1e-3


def test_nodata_and_constant_regions_are_skipped(matcher: OnnxMatcher, tmp_path: Path) -> None:
    img = scene(seed=2).astype(np.float32) + 1.0
    opt_img = img.copy()
    opt_img[150:, :60] = 7.0  # constant optical area
    sar_img = img.copy()
    sar_img[:, 150:] = -9999.0  # SAR nodata on the right
    optical = open_raster(make_tif(tmp_path / "o.tif", opt_img, UTM_GT))
    sar = open_raster(make_tif(tmp_path / "s.tif", sar_img, UTM_GT, nodata=-9999.0))
    keypoints = np.array([[80.5, 80.5], [200.5, 100.5], [25.5, 220.5], [10.5, 10.5]])
    result = match_keypoints(optical, 1, sar, 1, keypoints, matcher, sar_scale="db",
                             keep_maps=True)  # fmt: skip
    statuses = [r.status for r in result.records]
    assert statuses == ["ok", "nodata_sar", "constant_optical", "nodata_optical"]
    assert abs(result.records[0].dx_px) < 0.5 and abs(result.records[0].dy_px) < 0.5
    for r in result.records[1:]:
        assert not r.accepted and np.isnan(r.dx_px) and np.isnan(r.sar_x_px)
        assert np.isnan(r.confidence)  # not measured (NULL in the layer), not "0 confident"
        assert r.opt_x_map == UTM_GT[0] + 10 * r.opt_x_px  # still located
    assert np.isfinite(result.maps[0]).all() and np.isnan(result.maps[1:]).all()


def test_cancel_stops_after_the_current_batch(matcher: OnnxMatcher, pair: tuple) -> None:
    optical, sar = pair
    polls: list[int] = []
    seen: list[float] = []

    def cancel_after_first_batch() -> bool:
        polls.append(1)
        return bool(seen)  # canceled once one batch reported progress

    with pytest.raises(Canceled):
        match_keypoints(optical, 1, sar, 1, KEYPOINTS, matcher, batch_size=2,
                        progress=seen.append, is_canceled=cancel_after_first_batch)  # fmt: skip
    assert seen == pytest.approx([1 / 3])


def test_empty_and_bad_arguments(matcher: OnnxMatcher, pair: tuple) -> None:
    optical, sar = pair
    assert match_keypoints(optical, 1, sar, 1, np.zeros((0, 2)), matcher).records == []
    with pytest.raises(ValueError, match=r"has 1 band\(s\)"):
        match_keypoints(optical, 1, sar, 2, KEYPOINTS, matcher)
    with pytest.raises(ValueError, match="finite \\(N, 2\\) array"):
        match_keypoints(optical, 1, sar, 1, np.array([[1.0, np.nan]]), matcher)
    with pytest.raises(ValueError, match="sar_scale must be one of"):
        match_keypoints(optical, 1, sar, 1, KEYPOINTS, matcher, sar_scale="log")


def test_a_complex_optical_band_is_named_the_wrong_file(
    matcher: OnnxMatcher, pair: tuple, tmp_path: Path
) -> None:
    """A complex (SLC) band given as the optical was refused with the SAR advice (detect it in
    SNAP, take its amplitude) by the numpy API, which called it a SAR product to be detected;
    the plugin's adapter alone said the file was the wrong one for OPTICAL."""
    optical, sar = pair
    complex_optical = open_raster(
        make_tif(tmp_path / "slc.tif", np.ones((8, 8), np.complex64), UTM_GT)
    )
    with pytest.raises(ValueError, match=r"slc\.tif is complex \(CFloat32\), but the OPTICAL") as e:
        match_keypoints(complex_optical, 1, sar, 1, KEYPOINTS, matcher)
    assert "SNAP" not in str(e.value)
    with pytest.raises(ValueError, match=r"slc\.tif is complex \(CFloat32\), e\.g\. a single"):
        match_keypoints(optical, 1, complex_optical, 1, KEYPOINTS, matcher)


def test_per_window_method_gives_the_same_matches(matcher: OnnxMatcher, pair: tuple) -> None:
    optical, sar = pair
    dense = match_keypoints(optical, 1, sar, 1, KEYPOINTS[:1], matcher, keep_maps=True)
    reference = match_keypoints(optical, 1, sar, 1, KEYPOINTS[:1], matcher, method="per_window",
                                keep_maps=True)  # fmt: skip
    assert np.abs(dense.maps - reference.maps).max() <= 1e-4
    assert dense.records[0].dx_px == pytest.approx(reference.records[0].dx_px, abs=1e-3)


def test_matching_on_a_coarser_grid_reports_optical_pixels(
    matcher: OnnxMatcher, tmp_path: Path
) -> None:
    """Optical at 5 m, SAR at 15 m (the optical's 3 x 3 block means), its georeference off by
    (9, 6) optical px: on a grid of 15 m pixels (grid_scale 3) the template is the same block
    mean as the SAR, and the records give the shift and the SAR positions in optical pixels."""
    fine = np.repeat(np.repeat(scene(seed=4, size=256), 3, axis=0), 3, axis=1)  # 768 px, 5 m
    opt_gt = (UTM_GT[0], 5.0, 0.0, UTM_GT[3], 0.0, -5.0)
    optical = open_raster(make_tif(tmp_path / "fine.tif", fine, opt_gt))
    coarse = fine.reshape(256, 3, 256, 3).mean(axis=(1, 3)).astype(np.uint8)
    sar_gt = (opt_gt[0] + 9 * 5.0, 15.0, 0.0, opt_gt[3] - 6 * 5.0, 0.0, -15.0)  # 45 m E, 30 m S
    sar = open_raster(make_tif(tmp_path / "coarse.tif", coarse, sar_gt))
    kps = np.array([[300.0, 300.0], [450.0, 330.0], [360.0, 480.0]])
    result = match_keypoints(optical, 1, sar, 1, kps, matcher, grid_scale=3.0, keep_maps=True)
    assert result.grid_scale == 3.0 and result.counts == {"ok": 3}
    for r, (x, y) in zip(result.records, kps):
        assert (r.opt_x_px, r.opt_y_px) == (x, y)
        assert abs(r.dx_px - 9) < 1.0 and abs(r.dy_px - 6) < 1.0, (r.dx_px, r.dy_px)
        # SAR pixel (u, v) holds the content of optical pixels [3u, 3u + 3) x [3v, 3v + 3)
        assert abs(r.sar_x_px - x / 3) < 0.34 and abs(r.sar_y_px - y / 3) < 0.34
        assert r.sar_x_map == pytest.approx(opt_gt[0] + 5.0 * (x + r.dx_px))
    assert result.maps is not None and result.maps.shape == (3, 33, 33)
    peaks = [np.unravel_index(m.argmax(), m.shape) for m in result.maps]
    assert peaks == [(16 + 2, 16 + 3)] * 3  # (dy, dx) offsets in 15 m grid pixels
    # the peak's spread too is in optical pixels (it was in 15 m grid pixels, 3x too small)
    from sar_optical_matcher.core.peaks import analyse_maps

    for r, st in zip(result.records, analyse_maps(result.maps)):
        assert st.spread_px > 0.5
        assert r.spread_px == pytest.approx(3.0 * st.spread_px)
    # the map GeoTIFFs have 15 m pixels and put each peak where the SAR content was found
    from sar_optical_matcher.registration import write_map_rasters

    paths = write_map_rasters(tmp_path / "maps", result.records, result.maps, optical, 96, 64,
                              result.grid_scale)  # fmt: skip
    for path, r, (py, px) in zip(paths, result.records, peaks):
        ds = gdal.Open(str(path))
        gt = ds.GetGeoTransform()
        assert (gt[1], gt[5]) == (15.0, -15.0)
        centre = (gt[0] + (px + 0.5) * gt[1], gt[3] + (py + 0.5) * gt[5])
        found = (opt_gt[0] + 5.0 * (r.opt_x_px + r.dx_px), opt_gt[3] - 5.0 * (r.opt_y_px + r.dy_px))
        assert abs(centre[0] - found[0]) < 7.5 and abs(centre[1] - found[1]) < 7.5
    with pytest.raises(ValueError, match="grid_scale must be >= 1"):
        match_keypoints(optical, 1, sar, 1, kps, matcher, grid_scale=0.5)


def test_auto_sar_scale_is_decided_once_for_the_raster(matcher: OnnxMatcher, tmp_path) -> None:
    """A float dB SAR whose bright corner has no negative value: every region is taken as dB
    (per region, the bright one was converted to dB a second time and matched differently)."""
    optical = open_raster(make_tif(tmp_path / "o.tif", scene(3), UTM_GT))
    db = (scene(3).astype(np.float32) - 200.0) / 8.0  # -25 .. +7 dB
    db[:160, :160] = np.abs(db[:160, :160]) + 1.0  # the top-left region: bright, all > 0
    sar = open_raster(make_tif(tmp_path / "s.tif", db, UTM_GT))
    kps = np.array([[80.5, 80.5], [176.5, 176.5]])  # the bright region and a mixed one
    auto = match_keypoints(optical, 1, sar, 1, kps, matcher, keep_maps=True)
    forced = match_keypoints(optical, 1, sar, 1, kps, matcher, sar_scale="db", keep_maps=True)
    assert auto.sar_scale == "db"
    np.testing.assert_array_equal(auto.maps, forced.maps)
    linear = open_raster(make_tif(tmp_path / "lin.tif", scene(3).astype(np.float32) + 1, UTM_GT))
    assert match_keypoints(optical, 1, linear, 1, kps, matcher).sar_scale == "linear"


def test_linear_sar_scale_refuses_a_db_band(matcher: OnnxMatcher, tmp_path: Path) -> None:
    """sar_scale "linear" on a dB band (mostly negative): a clear error; each value floored to
    -60 dB, 5 of 6 keypoints of a real dB pair were skipped as constant_sar. A linear band with
    a few negative pixels (noise subtraction) is still matched."""
    optical = open_raster(make_tif(tmp_path / "o.tif", scene(3), UTM_GT))
    db = (scene(3).astype(np.float32) - 200.0) / 8.0  # -25 .. +7 dB, ~80 % negative
    sar = open_raster(make_tif(tmp_path / "db.tif", db, UTM_GT))
    kps = np.array([[80.5, 80.5], [176.5, 176.5]])
    with pytest.raises(ValueError, match=r"SAR_SCALE is linear, but \d+% .* negative .*dB"):
        match_keypoints(optical, 1, sar, 1, kps, matcher, sar_scale="linear")
    assert match_keypoints(optical, 1, sar, 1, kps, matcher, sar_scale="db").counts == {"ok": 2}
    noisy = scene(3).astype(np.float32) / 255.0
    noisy[:20] = -0.001  # 8 % of the band slightly negative
    lin = open_raster(make_tif(tmp_path / "lin.tif", noisy, UTM_GT))
    result = match_keypoints(optical, 1, lin, 1, kps, matcher, sar_scale="linear")
    assert result.sar_scale == "linear" and result.counts == {"ok": 2}


def test_db_sar_scale_on_a_linear_band_is_warned_about(matcher: OnnxMatcher, tmp_path) -> None:
    """sar_scale "db" on linear float32 amplitude (``synthetic.write_pair``): the numpy API
    warns too (only the Processing adapter did): ``warn`` gets it before the matching starts,
    and the result keeps it, ``warn`` given or not; no warning for dB data, nor for auto."""
    from sar_optical_matcher.synthetic import make_georeferenced_pair, write_pair

    paths = write_pair(make_georeferenced_pair(384, np.random.default_rng(3)), tmp_path, "lin")
    optical, sar = open_raster(paths["optical"]), open_raster(paths["sar"])
    kps = np.array([[192.5, 192.5]])
    events: list[str] = []

    def progress(f: float) -> None:
        events.append(f"{f:g}")

    result = match_keypoints(
        optical, 1, sar, 1, kps, matcher, sar_scale="db", warn=events.append, progress=progress
    )
    assert len(result.warnings) == 1 and events == [result.warnings[0], "1"]
    text = result.warnings[0]
    assert text.startswith("SAR_SCALE is dB, but SAR band 1 (float32) looks like linear ")
    assert "no negative value, median " in text
    assert text.endswith("choose auto or linear for SAR_SCALE unless these really are dB values")
    assert match_keypoints(optical, 1, sar, 1, kps, matcher, sar_scale="db").warnings == [text]
    auto = match_keypoints(optical, 1, sar, 1, kps, matcher, warn=events.append)
    assert (auto.sar_scale, auto.warnings, len(events)) == ("linear", [], 2)
    db = (scene(3).astype(np.float32) - 200.0) / 8.0  # -25 .. +7 dB
    db_sar = open_raster(make_tif(tmp_path / "db.tif", db, UTM_GT))
    plain = open_raster(make_tif(tmp_path / "o.tif", scene(3), UTM_GT))
    on_db = match_keypoints(plain, 1, db_sar, 1, np.array([[128.5, 128.5]]), matcher,
                            sar_scale="db", warn=events.append)  # fmt: skip
    assert (on_db.warnings, len(events)) == ([], 2)


def test_an_undeclared_zero_fill_of_the_sar_is_warned_about(matcher: OnnxMatcher, tmp_path) -> None:
    """A linear SAR whose corner triangle is 0 with no nodata value (a swath edge): it was
    matched as data, and the only word was that matches peak on the edge of the search range
    ("check the rasters' georeferences"). Now a warning names the zero share and the fix;
    none once the SAR declares nodata 0, none for scattered zeros (dark pixels) or none."""
    from osgeo import gdal

    from sar_optical_matcher.synthetic import make_georeferenced_pair, write_pair

    paths = write_pair(make_georeferenced_pair(384, np.random.default_rng(3)), tmp_path, "lin")
    optical = open_raster(paths["optical"])
    kps = np.array([[192.5, 192.5]])
    base = gdal.Open(str(paths["sar"])).ReadAsArray()
    rows, cols = np.indices(base.shape)

    def sar_with(zero: np.ndarray, name: str, nodata: float | None = None):
        path = tmp_path / name
        ds = gdal.Translate(str(path), str(paths["sar"]), noData="none")  # the pair's is NaN
        ds.GetRasterBand(1).WriteArray(np.where(zero, 0.0, base))
        if nodata is not None:
            ds.GetRasterBand(1).SetNoDataValue(nodata)
        ds = None
        return open_raster(path)

    triangle = rows + cols < 120  # 7,260 of 470^2 pixels: 3.3 %
    warned: list[str] = []
    result = match_keypoints(optical, 1, sar_with(triangle, "fill.tif"), 1, kps, matcher,
                             warn=warned.append)  # fmt: skip
    assert len(warned) == 1 and result.warnings == warned
    assert re.match(r"3\.\d% of SAR band 1's pixels are exactly 0, in areas, and fill\.tif "
                    r"declares no nodata value: if they are a no-data fill .*\(gdal_edit\.py "
                    r"-a_nodata 0 fill\.tif\)$", warned[0])  # fmt: skip
    declared = sar_with(triangle, "declared.tif", nodata=0.0)
    scattered = sar_with(np.random.default_rng(0).random(base.shape) < 0.03, "dark.tif")
    for sar in (declared, scattered, open_raster(paths["sar"])):
        assert match_keypoints(optical, 1, sar, 1, kps, matcher).warnings == []
    # the scale decision and both warnings share one decimated read of the band
    from sar_optical_matcher import matching, rasters

    reads: list[int] = []
    real = rasters.band_sample_grid

    def counted(*args, **kwargs):
        reads.append(1)
        return real(*args, **kwargs)

    for scale in ("auto", "linear", "db"):
        reads.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(matching, "band_sample_grid", counted)
            mp.setattr(rasters, "band_sample_grid", counted)
            match_keypoints(optical, 1, sar_with(triangle, f"{scale}.tif"), 1, kps, matcher,
                            sar_scale=scale)  # fmt: skip
        assert len(reads) == 1, scale


def test_patches_the_stretch_flattens_are_skipped(matcher: OnnxMatcher, tmp_path: Path) -> None:
    """A template or region of one value but for a 3 x 3 spot (0.2 % of a 64 x 64 template, 0.1 %
    of a 96 x 96 region) is constant after the 2-98 % stretch: the model sees a constant
    patch. It was matched as "ok" (a shift read off a map of noise); now it is skipped."""
    img = scene(seed=5).astype(np.float32) + 1.0
    opt_img = img.copy()
    opt_img[150:, :90] = 7.0  # calm water with one small boat
    opt_img[210:213, 40:43] = 50.0
    sar_img = img.copy()
    sar_img[:100, 150:] = 3.0  # likewise in the SAR
    sar_img[50:53, 205:208] = 20.0
    optical = open_raster(make_tif(tmp_path / "o.tif", opt_img, UTM_GT))
    sar = open_raster(make_tif(tmp_path / "s.tif", sar_img, UTM_GT))
    keypoints = np.array([[80.5, 110.5], [50.5, 200.5], [206.5, 51.5]])  # regions inside
    result = match_keypoints(optical, 1, sar, 1, keypoints, matcher, sar_scale="db",
                             confidence_threshold=0.0)  # fmt: skip
    assert [r.status for r in result.records] == ["ok", "constant_optical", "constant_sar"]
    assert result.records[0].accepted and abs(result.records[0].dx_px) < 0.5
    for r in result.records[1:]:
        assert not r.accepted and np.isnan(r.dx_px) and np.isnan(r.score)


class _NccMatcher:
    """Stand-in for OnnxMatcher: the map is the exact normalised cross-correlation of the
    preprocessed pixels, so the geometry of matching is checked without a network's errors."""

    def __init__(self, template_size: int, search_size: int) -> None:
        from sar_optical_matcher.model.contract import ModelContract

        self.contract = ModelContract("ncc", "0", template_size=template_size,
                                      search_size=search_size)  # fmt: skip

    def correspondence_maps(self, templates: np.ndarray, regions: np.ndarray, **_kw) -> np.ndarray:
        from sar_optical_matcher.core.correlation import window_cosine_maps

        centred = templates - templates.mean(axis=(1, 2), keepdims=True)
        return window_cosine_maps(centred[:, None], regions[:, None])


@pytest.mark.parametrize(("t", "s"), [(33, 50), (32, 49), (33, 51), (31, 64)])
@pytest.mark.parametrize("grid_scale", [1.0, 2.5])
def test_shift_convention_with_odd_sizes(tmp_path: Path, t: int, s: int, grid_scale: float) -> None:
    """Odd template sizes and odd S - T (the offset origin is (S - T) // 2): a SAR georeference
    off by (3, -5) px is measured as (3, -5) to 0.1 grid px (measured: at most 0.051 px on the
    optical grid, 0.034 grid px on the 2.5x coarser one, the sub-pixel parabola on a slightly
    asymmetric peak; a half-pixel convention error would be 0.5 grid px)."""
    rng = np.random.default_rng(0)
    img = ndimage.gaussian_filter(rng.normal(size=(300, 300)), 2.0).astype(np.float32)
    img = (img - img.min()) / np.ptp(img) * 1000 + 1
    optical = open_raster(make_tif(tmp_path / "o.tif", img, UTM_GT))
    sar = open_raster(make_tif(tmp_path / "s.tif", img, shifted_gt(3.0, -5.0)))
    kps = np.array([[150.5, 150.5], [150.0, 150.0], [149.3, 151.8]])
    result = match_keypoints(optical, 1, sar, 1, kps, _NccMatcher(t, s), sar_scale="db",
                             grid_scale=grid_scale)  # fmt: skip
    tol = 0.1 * grid_scale
    for r in result.records:
        assert r.status == "ok"
        assert abs(r.dx_px - 3.0) < tol and abs(r.dy_px + 5.0) < tol, (r.dx_px, r.dy_px)


@pytest.mark.parametrize(
    ("shift", "on_edge"),
    [((8.0, 0.0), False), ((0.0, 8.0), False), ((-8.0, 0.0), True), ((0.0, -8.0), True),
     ((9.0, 0.0), True), ((7.0, -7.0), False)],
)  # fmt: skip
def test_edge_rule_with_an_odd_search_range(tmp_path: Path, shift, on_edge: bool) -> None:
    """T 33 in S 50: the map's offsets run from -8 to +9 px, so +8 lies inside it and only -8
    and +9 are its edge; the symmetric rule |dx| > 7.5 refused good +8 matches."""
    from sar_optical_matcher.processing.matching_plan import edge_peaks

    rng = np.random.default_rng(0)
    img = ndimage.gaussian_filter(rng.normal(size=(300, 300)), 2.0).astype(np.float32)
    img = (img - img.min()) / np.ptp(img) * 1000 + 1
    optical = open_raster(make_tif(tmp_path / "o.tif", img, UTM_GT))
    sar = open_raster(make_tif(tmp_path / "s.tif", img, shifted_gt(*shift)))
    kps = np.array([[150.5, 150.5], [140.0, 160.0]])
    result = match_keypoints(optical, 1, sar, 1, kps, _NccMatcher(33, 50), sar_scale="db")
    for r in result.records:
        assert r.status == "ok"
        assert abs(r.dx_px - shift[0]) < 0.1 and abs(r.dy_px - shift[1]) < 0.1, (r.dx_px, r.dy_px)
    assert edge_peaks(result.records, 50, 33).tolist() == [on_edge, on_edge]
