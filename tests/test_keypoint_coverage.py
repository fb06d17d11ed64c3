"""Detection where a search region of valid SAR data lies around the keypoint, and the spread
of tiled detection (``registration.sar_coverage``, ``DetectSettings.spread``)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, osr
from scipy import ndimage

from sar_optical_matcher import rasters
from sar_optical_matcher import registration as reg
from sar_optical_matcher.core import keypoint_merge
from sar_optical_matcher.core import keypoints as kp
from sar_optical_matcher.core.keypoints import detect_keypoints
from sar_optical_matcher.processing import matching_plan as mp

GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)
SIZE, T, S = 640, 64, 128  # optical side; template and search sizes of the matcher
MIN_VALID = 0.9  # matching.match_keypoints' min_valid_fraction: under it, nodata_sar


def _write(path: Path, bands: list[np.ndarray], gt: tuple, nodata: float | None = None,
           alpha: bool = False) -> rasters.RasterInfo:  # fmt: skip
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    h, w = bands[0].shape
    kind = gdal.GDT_Byte if alpha else gdal.GDT_Float32
    opts = ["ALPHA=YES"] if alpha else []
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, len(bands), kind, opts)
    ds.SetGeoTransform(gt)
    ds.SetProjection(srs.ExportToWkt())
    for i, b in enumerate(bands):
        if nodata is not None:
            ds.GetRasterBand(i + 1).SetNoDataValue(nodata)
        ds.GetRasterBand(i + 1).WriteArray(b)
    ds = None
    return rasters.open_raster(path)


def _texture(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(rng.normal(size=(n, n)), 3.0) * 40 + 100).astype(np.float32)


def _rotated_gt(n: int, degrees: float) -> tuple:
    """A grid of n x n 10 m pixels rotated by ``degrees``, centred on the optical raster."""
    c, s = 10 * math.cos(math.radians(degrees)), 10 * math.sin(math.radians(degrees))
    cx, cy = GT[0] + 10 * SIZE / 2, GT[3] - 10 * SIZE / 2
    return (cx - n / 2 * (c + s), c, s, cy - n / 2 * (s - c), s, -c)


def _swath(n: int, degrees: float) -> np.ndarray:
    """(n, n) bool: a rotated rectangle (a SAR swath in a north-up product), nodata outside."""
    yy, xx = np.mgrid[0:n, 0:n] + 0.5 - n / 2
    a = math.radians(degrees)
    u, v = xx * math.cos(a) + yy * math.sin(a), -xx * math.sin(a) + yy * math.cos(a)
    return (np.abs(u) < 0.36 * n) & (np.abs(v) < 0.45 * n)


@pytest.fixture(name="optical", scope="module")
def optical_fixture(tmp_path_factory: pytest.TempPathFactory) -> rasters.RasterInfo:
    return _write(tmp_path_factory.mktemp("cov") / "optical.tif", [_texture(0, SIZE)], GT)


def _sars(folder: Path) -> dict[str, rasters.RasterInfo]:
    data = _texture(1, SIZE)
    swath = _swath(SIZE, 15.0)
    nodata = np.where(swath, data, 0.0).astype(np.float32)
    return {
        "rotated grid": _write(folder / "rot.tif", [_texture(1, 480)], _rotated_gt(480, 20.0)),
        "nodata corners": _write(folder / "swath.tif", [nodata], GT, nodata=0.0),
        "alpha band": _write(
            folder / "alpha.tif",
            [np.clip(data, 1, 255).astype(np.uint8), (swath * 255).astype(np.uint8)],
            GT,
            alpha=True,
        ),
    }


def _valid_share(
    optical: rasters.RasterInfo, sar: rasters.RasterInfo, xy: np.ndarray
) -> np.ndarray:
    """(N,) valid share of each keypoint's search region, read as matching reads it."""
    out = []
    for x, y in xy:
        x0 = math.floor(x - T / 2 + 0.5) - (S - T) // 2
        y0 = math.floor(y - T / 2 + 0.5) - (S - T) // 2
        out.append(rasters.read_on_grid(sar, 1, optical, x0, y0, S, S)[1].mean())
    return np.array(out)


@pytest.mark.parametrize("case", ["rotated grid", "nodata corners", "alpha band"])
def test_keypoints_only_where_a_search_region_of_valid_sar_lies(
    optical: rasters.RasterInfo, tmp_path: Path, case: str
) -> None:
    """In the footprint's bounding box (shrunk by half a search region), 10 % (SAR on a grid
    rotated 4 degrees) to 27 % (a swath in nodata triangles) of 300 keypoints on a 4096 px
    scene had no valid SAR region and were skipped as nodata_sar."""
    sar = _sars(tmp_path)[case]
    base = reg.DetectSettings(min_distance_px=24, max_count=60, border_px=40)
    overlap = mp.check_overlap(optical, sar, S)
    x0, y0, x1, y1 = overlap  # the bounding box shrunk by half a search region, as before
    box = dataclasses.replace(base, within_px=(x0 + S / 2, y0 + S / 2, x1 - S / 2, y1 - S / 2))
    before = _valid_share(optical, sar, reg.detect_keypoints_tiled(optical, box).xy_px)
    assert (before < MIN_VALID).mean() > 0.1  # the bounding box wastes the budget
    detect = mp.detection_on_sar(base, optical, sar, 1, S, 1.0)
    k = reg.detect_keypoints_tiled(optical, detect)
    assert len(k) == 60  # the whole budget, on valid SAR
    assert _valid_share(optical, sar, k.xy_px).min() >= MIN_VALID


def test_coverage_is_sound_and_not_much_smaller_than_the_truth(
    optical: rasters.RasterInfo, tmp_path: Path
) -> None:
    sar = _sars(tmp_path)["nodata corners"]
    cov = reg.sar_coverage(optical, sar, 1, S)
    g = np.arange(8, SIZE, 24) + 0.5
    ok = cov.at(g, g)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    share = _valid_share(optical, sar, xy).reshape(ok.shape)
    assert share[ok].min() >= MIN_VALID  # never a region matching would skip
    assert ok[share == 1.0].mean() > 0.6  # most of the fully valid ones are kept
    assert ok.sum() > 50


def test_sparse_nodata_pixels_do_not_empty_the_coverage(
    optical: rasters.RasterInfo, tmp_path: Path
) -> None:
    """1 % of nodata pixels scattered over the SAR leave every region 99 % valid (matched):
    an erosion of each invalid sample would have removed nearly all of it."""
    data = _texture(1, SIZE)
    data[np.random.default_rng(2).random(data.shape) < 0.01] = 0.0
    full = reg.sar_coverage(optical, _write(tmp_path / "a.tif", [_texture(1, SIZE)], GT), 1, S)
    holes = reg.sar_coverage(optical, _write(tmp_path / "b.tif", [data], GT, nodata=0.0), 1, S)
    assert holes.ok.sum() >= 0.9 * full.ok.sum()  # 94 %: the 1 % moves the edges in a little


def test_no_valid_sar_region_is_explained(optical: rasters.RasterInfo, tmp_path: Path) -> None:
    empty = _write(tmp_path / "e.tif", [np.zeros((SIZE, SIZE), np.float32)], GT, nodata=0.0)
    with pytest.raises(ValueError, match="nowhere on the optical raster does the SAR have valid"):
        reg.sar_coverage(optical, empty, 1, S)


def test_valid_on_grid_maps_validity_through_both_georeferences(tmp_path: Path) -> None:
    dst = _write(tmp_path / "dst.tif", [np.ones((100, 100), np.float32)], GT)
    # the source covers the right half of dst, with 20 m pixels; its left 10 columns nodata
    arr = np.ones((50, 25), np.float32)
    arr[:, :5] = -1
    src = _write(tmp_path / "src.tif", [arr], (GT[0] + 500, 20.0, 0, GT[3], 0, -20.0), -1)
    valid, cell = rasters.valid_on_grid(src, 1, dst, (-10.0, 0.0), 10.0, (10, 12))
    expect = np.zeros((10, 12), bool)
    expect[:, 7:11] = True  # cells at dst x -10 + 10 j + 5: 60 <= x < 100 valid
    np.testing.assert_array_equal(valid, expect)
    assert cell >= 1.0
    with pytest.raises(ValueError, match="at least 1 x 1 cells"):
        rasters.valid_on_grid(src, 1, dst, (0.0, 0.0), 10.0, (0, 3))


@pytest.mark.parametrize("tile_px", [100, 4096])
def test_tiled_spread_equals_whole_image_detection(
    optical: rasters.RasterInfo, tmp_path: Path, tile_px: int
) -> None:
    """With a spread every local maximum of a tile enters the global merge: the result is
    whole-image detection's, whatever the tile size, and a 0.3x contrast half gets its cells."""
    img = _texture(3, 400)
    img[:, :200] = 100 + 0.3 * (img[:, :200] - 100)
    info = _write(tmp_path / "half.tif", [img], GT)
    s = reg.DetectSettings(min_distance_px=24, max_count=40, border_px=20, tile_px=tile_px,
                           spread=0.5)  # fmt: skip
    tiled = reg.detect_keypoints_tiled(info, s)
    whole = detect_keypoints(img, 40, 24.0, border_px=20, spread=0.5)
    np.testing.assert_array_equal(tiled.xy_px, whole.xy_px)
    np.testing.assert_array_equal(tiled.response, whole.response)
    assert (tiled.xy_px[:, 0] < 200).sum() >= 8
    strongest = reg.detect_keypoints_tiled(info, dataclasses.replace(s, spread=0.0))
    assert (strongest.xy_px[:, 0] < 200).sum() <= 2
    with pytest.raises(ValueError, match="SPREAD must be in"):
        reg.DetectSettings(spread=-0.1)
    # NaN passed every comparison and was refused later as "must be non-negative"
    with pytest.raises(ValueError, match="min_distance_px >= 1.*got nan"):
        reg.DetectSettings(min_distance_px=float("nan"))


@pytest.mark.parametrize("tile_px", [100, 128, 4096])
def test_tiled_strongest_first_equals_whole_image_detection(tmp_path: Path, tile_px: int) -> None:
    """SPREAD 0 with room left in MAX_COUNT: each tile applied the response floor (1 % of the
    strongest) to ITS strongest, so the tiles of a 5 % contrast half gave every corner there
    (about half the points at 128 px tiles, none in one tile); the floor is now the raster's."""
    img = _texture(3, 400)
    img[:, 200:] = 100 + 0.05 * (img[:, 200:] - 100)
    info = _write(tmp_path / "half.tif", [img], GT)
    s = reg.DetectSettings(min_distance_px=8, max_count=5000, border_px=20, tile_px=tile_px)
    tiled = reg.detect_keypoints_tiled(info, s)
    whole = detect_keypoints(img, 5000, 8.0, border_px=20)
    assert len(whole) >= 300 and (whole.xy_px[:, 0] >= 200).sum() == 0
    np.testing.assert_array_equal(tiled.xy_px, whole.xy_px)
    np.testing.assert_array_equal(tiled.response, whole.response)


@pytest.mark.parametrize(("tile_px", "spacing"), [(48, 24.0), (64, 90.0), (128, 40.0), (150, 12.0)])
def test_the_streaming_merge_keeps_tiled_spread_detection_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tile_px: int, spacing: float
) -> None:
    """The merge drops settled maxima as the tiles come (``core.keypoint_merge``): at any tile
    size, and with a spacing beyond a tile and its halo (90 px against 64 + 16), the keypoints
    are still whole-image detection's, bit for bit."""
    monkeypatch.setattr(keypoint_merge, "_FLUSH_MIN", 1)  # settle after every tile
    img = _texture(5, 400)
    img[:, :200] = 100 + 0.3 * (img[:, :200] - 100)
    info = _write(tmp_path / "half.tif", [img], GT)
    s = reg.DetectSettings(min_distance_px=spacing, max_count=60, border_px=20, tile_px=tile_px,
                           spread=0.5)  # fmt: skip
    tiled = reg.detect_keypoints_tiled(info, s)
    whole = detect_keypoints(img, 60, spacing, border_px=20, spread=0.5)
    assert len(whole) >= 12
    np.testing.assert_array_equal(tiled.xy_px, whole.xy_px)
    np.testing.assert_array_equal(tiled.response, whole.response)


@pytest.mark.parametrize("degrees", [30.0, 45.0])
def test_a_rotated_footprint_shares_the_spread_over_cells_it_covers(
    optical: rasters.RasterInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, degrees: float
) -> None:
    """MAX_COUNT 40, SPREAD 0.5: 4 x 5 cells over the bounding box of a SAR grid rotated 30 /
    45 degrees, of which 18 / 16 overlap the coverage (a search region of valid SAR), and 16
    got a keypoint. The grid now grows to the count of such cells closest to 20 (4 x 6: 21 /
    20 of them) and 20 distinct cells get a keypoint; the streaming merge stays exact."""
    sar = _write(tmp_path / "rot.tif", [_texture(1, 400)], _rotated_gt(400, degrees))
    base = reg.DetectSettings(min_distance_px=24, max_count=40, border_px=40, spread=0.5,
                              tile_px=128)  # fmt: skip
    detect = mp.detection_on_sar(base, optical, sar, 1, S, 1.0)
    window = reg.search_window(optical, detect)
    valid = detect.coverage.on_box(window)

    def cells(xy: np.ndarray, grid: tuple[int, int]) -> int:
        return len(np.unique(kp.spread_cell_index(xy, window, *grid)))

    before_grid = kp.spread_cells(window, 20)
    after_grid = kp.spread_grid(window, 20, valid, most=40)
    samples = np.column_stack([c.ravel() for c in np.meshgrid(
        window[0] + (np.arange(valid.shape[1]) + 0.5) / valid.shape[1] * (window[2] - window[0]),
        window[1] + (np.arange(valid.shape[0]) + 0.5) / valid.shape[0] * (window[3] - window[1]),
    )])[valid.ravel()]  # fmt: skip
    want = {30.0: (18, 21), 45.0: (16, 20)}[degrees]  # cells of each grid with coverage
    assert (cells(samples, before_grid), cells(samples, after_grid)) == want
    assert (before_grid, after_grid) == ((4, 5), (4, 6))
    after = reg.detect_keypoints_tiled(optical, detect)
    with monkeypatch.context() as m:  # the 0.3.5 grid: every cell of the bounding box
        m.setattr(reg.SarCoverage, "on_box", lambda self, box, max_side=512: None)
        before = reg.detect_keypoints_tiled(optical, detect)
    assert len(before) == len(after) == 40
    assert cells(before.xy_px, before_grid) == 16
    assert cells(after.xy_px, after_grid) == 20
    monkeypatch.setattr(keypoint_merge, "_FLUSH_MIN", 1)  # settle after every tile: same
    again = reg.detect_keypoints_tiled(optical, detect)
    np.testing.assert_array_equal(again.xy_px, after.xy_px)


def test_a_small_sar_chip_on_a_huge_optical_keeps_its_room(tmp_path: Path) -> None:
    """The coverage grid spanned the whole optical raster: on a 20,000 px one its cells were
    10 px, and a 130 px SAR chip that a 96 px search region fits in (34 px of room) was refused
    ("nowhere ... valid data"); on a 2000 px optical the same chip kept 28 px. Now the grid
    covers the SAR footprint: the same cells and room on both."""
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    boxes = []
    for n in (2000, 20000):
        path = tmp_path / f"optical{n}.tif"
        ds = gdal.GetDriverByName("GTiff").Create(str(path), n, n, 1, gdal.GDT_Byte,
                                                  ["SPARSE_OK=TRUE", "TILED=YES"])  # fmt: skip
        ds.SetGeoTransform(GT)
        ds.SetProjection(srs.ExportToWkt())
        ds = None
        c = n / 2 - 65
        chip_gt = (GT[0] + 10 * c, 10.0, 0.0, GT[3] - 10 * c, 0.0, -10.0)
        chip = _write(tmp_path / f"chip{n}.tif", [np.ones((130, 130), np.float32)], chip_gt)
        cov = reg.sar_coverage(rasters.open_raster(path), chip, 1, 96)
        box = cov.bbox()
        assert box is not None and cov.step_px < 4
        boxes.append(np.subtract(box, c))
    np.testing.assert_allclose(boxes[0], boxes[1], atol=1e-6)
    assert 20 <= boxes[0][2] - boxes[0][0] <= 34  # of the 130 - 96 = 34 px of room


def test_optical_template_rule_is_sound_and_changes_nothing_on_valid_optical(
    optical: rasters.RasterInfo, tmp_path: Path
) -> None:
    """Detection also keeps to where matching's optical rule passes (``nodata_optical``:
    under ``matching.MIN_VALID_FRACTION`` of the template valid); a fully valid optical gets
    exactly the keypoints it got without the rule."""
    from sar_optical_matcher import matching

    sar = _sars(tmp_path)["nodata corners"]
    base = reg.DetectSettings(min_distance_px=24, max_count=60, border_px=40)
    sar_only = mp.detection_on_sar(base, optical, sar, 1, S, 1.0)
    without = reg.detect_keypoints_tiled(optical, sar_only)
    with_rule = reg.detect_keypoints_tiled(
        optical, mp.detection_on_sar(base, optical, sar, 1, S, 1.0, template_size=T)
    )
    np.testing.assert_array_equal(with_rule.xy_px, without.xy_px)
    np.testing.assert_array_equal(with_rule.response, without.response)
    # an optical nodata triangle: every kept cell's template passes matching's rule
    data = _texture(0, SIZE)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    data[xx + yy < 400] = -1.0
    holed = _write(tmp_path / "opt_triangle.tif", [data], GT, nodata=-1.0)
    g = np.arange(8, SIZE, 12) + 0.5
    ok = reg.optical_template_ok(holed, 1, (0.0, 0.0), 4.0, (SIZE // 4, SIZE // 4), T)
    ok = reg.SarCoverage(0.0, 0.0, 4.0, ok).at(g, g)
    share = np.array([[rasters.read_window(holed, 1, math.floor(x - T / 2 + 0.5),
                                           math.floor(y - T / 2 + 0.5), T, T)[1].mean()
                       for x in g] for y in g])  # fmt: skip
    assert share[ok].min() >= matching.MIN_VALID_FRACTION
    assert ok[share == 1.0].mean() > 0.8  # most fully valid templates are kept
    assert not ok[share < matching.MIN_VALID_FRACTION].any()
