import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.spatial.distance import pdist

from sar_optical_matcher.core.keypoints import (
    Keypoints,
    detect_keypoints,
    harris_response,
    merge_keypoints,
)

RECT_CORNERS = np.array(
    [[50, 40], [200, 40], [50, 100], [200, 100], [30, 150], [120, 150], [30, 220], [120, 220]],
    dtype=float,
)  # (x, y) pixel-edge coordinates of the two rectangles below


def rectangles() -> np.ndarray:
    img = np.zeros((256, 256), dtype=np.float32)
    img[40:100, 50:200] = 1.0
    img[150:220, 30:120] = 1.0
    return img


def smooth_noise(seed: int, shape: tuple[int, int] = (256, 256), sigma: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=shape), sigma).astype(np.float32)


def naive_greedy(xy: np.ndarray, d: float, cap: int) -> list[int]:
    kept: list[int] = []
    for i, p in enumerate(xy):
        if len(kept) < cap and not (np.hypot(*(xy[kept] - p).T) < d).any():
            kept.append(i)
    return kept


def assert_spacing(kp: Keypoints, d: float) -> None:
    if len(kp) > 1:
        assert pdist(kp.xy_px).min() >= d


def test_rectangle_corners_found_where_expected() -> None:
    kp = detect_keypoints(rectangles(), max_count=50, min_distance_px=10, border_px=8)
    assert len(kp) == 8
    # Each corner matched by one keypoint; Harris at sigma=2 sits 1.5 px inside an L-corner.
    dist = np.abs(kp.xy_px[:, None, :] - RECT_CORNERS[None]).max(axis=2)
    assert sorted(dist.argmin(axis=1).tolist()) == list(range(8))
    assert dist.min(axis=1).max() <= 1.5
    assert np.all(np.diff(kp.response) <= 0)


def test_checkerboard_junctions_found_exactly() -> None:
    yy, xx = np.mgrid[0:256, 0:256]
    board = ((xx // 32 + yy // 32) % 2).astype(np.float32)
    kp = detect_keypoints(board, max_count=1000, min_distance_px=16, border_px=20)
    expected = {(32.0 * i, 32.0 * j) for i in range(1, 8) for j in range(1, 8)}
    # The X-junction at pixel edge (32 i, 32 j) is found at a neighbouring pixel centre.
    found = {(round(x - 0.5 + 0.5 * np.sign(x % 32 - 16)), round(y - 0.5)) for x, y in kp.xy_px}
    assert len(kp) == 49
    assert np.abs(kp.xy_px - np.round(kp.xy_px / 32) * 32).max() <= 0.5
    assert len(found) == 49 and len(expected) == 49


def test_spacing_border_cap_and_order_on_noise() -> None:
    img = smooth_noise(0)
    kp = detect_keypoints(img, max_count=10_000, min_distance_px=20.0, border_px=30)
    assert len(kp) > 20
    assert_spacing(kp, 20.0)
    assert kp.xy_px.min() >= 30 and kp.xy_px.max() <= 256 - 30
    assert np.all(np.diff(kp.response) <= 0)
    top = detect_keypoints(img, max_count=7, min_distance_px=20.0, border_px=30)
    np.testing.assert_array_equal(top.xy_px, kp.xy_px[:7])


def test_candidates_mask_takes_the_budget_and_keeps_outside_suppressors() -> None:
    """Points outside ``candidates`` still suppress (the whole-image result, restricted to the
    mask) but take none of ``max_count``."""
    img = smooth_noise(3)
    mask = np.zeros(img.shape, bool)
    mask[:, 128:] = True
    every = detect_keypoints(img, max_count=10_000, min_distance_px=20.0, border_px=10)
    right = every.xy_px[every.xy_px[:, 0] >= 128]
    got = detect_keypoints(img, max_count=10_000, min_distance_px=20.0, border_px=10,
                           candidates=mask)  # fmt: skip
    np.testing.assert_array_equal(got.xy_px, right)
    for n in (1, 4, 9):
        top = detect_keypoints(img, max_count=n, min_distance_px=20.0, border_px=10,
                               candidates=mask)  # fmt: skip
        np.testing.assert_array_equal(top.xy_px, right[:n])
    with pytest.raises(ValueError, match="candidates mask shape"):
        detect_keypoints(img, candidates=mask[:10])


def test_nms_is_exact_greedy() -> None:
    rng = np.random.default_rng(1)
    for d, n in [(25.0, 3000), (3.0, 3000), (0.5, 500)]:  # grid path and KD-tree path
        xy = rng.uniform(0, 400, size=(n, 2))
        parts = [
            Keypoints(xy[:1500], rng.random(len(xy[:1500]))),
            Keypoints(xy[1500:], rng.random(len(xy[1500:]))),
        ]
        merged = merge_keypoints(parts, d, 10_000, min_response_rel=0.0)  # NMS alone
        allxy = np.concatenate([p.xy_px for p in parts])
        allr = np.concatenate([p.response for p in parts])
        order = np.argsort(-allr, kind="stable")
        expected = allxy[order][naive_greedy(allxy[order], d, 10_000)]
        np.testing.assert_array_equal(merged.xy_px, expected)


def test_empty_inputs_give_zero_keypoints() -> None:
    assert len(detect_keypoints(np.full((200, 200), 7.0))) == 0
    assert len(detect_keypoints(np.full((200, 200), np.nan), border_px=0)) == 0
    assert len(detect_keypoints(rectangles(), max_count=0)) == 0
    assert len(detect_keypoints(rectangles(), border_px=128)) == 0  # nothing fits
    assert len(merge_keypoints([], 10.0, 5)) == 0
    assert Keypoints.empty().xy_px.shape == (0, 2)


def test_nan_region_excluded_and_response_finite() -> None:
    img = smooth_noise(2)
    img[100:160, 60:200] = np.nan
    resp = harris_response(img)
    assert np.isfinite(resp).all() and resp.dtype == np.float32
    kp = detect_keypoints(img, max_count=1000, min_distance_px=5, border_px=10)
    assert len(kp) > 50
    col, row = (kp.xy_px[:, 0] - 0.5).astype(int), (kp.xy_px[:, 1] - 0.5).astype(int)
    reach = 9  # ceil(4 sigma) + 1 pixels around every invalid pixel have response 0
    near_row = (row >= 100 - reach) & (row < 160 + reach)
    near_col = (col >= 60 - reach) & (col < 200 + reach)
    assert not np.any(near_row & near_col)
    resp_nan = harris_response(img)
    assert (resp_nan[100 - reach : 160 + reach, 60 - reach : 200 + reach] == 0).all()
    assert resp_nan[100 - reach - 1, 100] != 0
    # The same with a validity mask instead of NaN.
    clean = smooth_noise(2)
    mask = np.isfinite(img)
    masked = detect_keypoints(clean, max_count=1000, min_distance_px=5, border_px=10, valid=mask)
    np.testing.assert_array_equal(masked.xy_px, kp.xy_px)


def test_independent_of_data_scale() -> None:
    img = smooth_noise(3)
    as_uint16 = np.round((img - img.min()) * 10_000).astype(np.uint16)
    a = detect_keypoints(img, max_count=30, min_distance_px=16, border_px=16)
    b = detect_keypoints(as_uint16, max_count=30, min_distance_px=16, border_px=16)
    assert np.abs(a.xy_px - b.xy_px).max() == 0


def test_tiles_merge_to_a_spaced_set() -> None:
    img = smooth_noise(4, shape=(256, 256))
    parts = []
    for x0 in (0, 128):
        block = detect_keypoints(
            img[:, x0 : x0 + 128], max_count=100, min_distance_px=24, border_px=8
        )
        parts.append(Keypoints(block.xy_px + [x0, 0], block.response))
    merged = merge_keypoints(parts, 24.0, 40)
    assert 10 < len(merged) <= 40
    assert_spacing(merged, 24.0)
    assert np.all(np.diff(merged.response) <= 0)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="2-D"):
        detect_keypoints(np.zeros((3, 64, 64)))
    with pytest.raises(ValueError, match="valid mask shape"):
        detect_keypoints(np.zeros((64, 64)), valid=np.ones((32, 32), dtype=bool))
    with pytest.raises(ValueError, match="max_count"):
        detect_keypoints(np.zeros((64, 64)), max_count=-1)
    with pytest.raises(ValueError, match="sigma"):
        harris_response(np.zeros((64, 64)), sigma=0)
    with pytest.raises(ValueError, match="responses"):
        Keypoints(np.zeros((3, 2)), np.zeros(2))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    h=st.integers(16, 96),
    w=st.integers(16, 96),
    d=st.floats(0.0, 40.0),
    border=st.integers(0, 12),
    nan_frac=st.floats(0.0, 0.3),
)
def test_property_nms_spacing_and_border(
    seed: int, h: int, w: int, d: float, border: int, nan_frac: float
) -> None:
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.normal(size=(h, w)), rng.uniform(0.5, 3.0))
    img[rng.random((h, w)) < nan_frac * 0.05] = np.nan
    kp = detect_keypoints(img, max_count=200, min_distance_px=d, border_px=border)
    assert len(kp) <= 200
    assert_spacing(kp, d)
    if len(kp):
        assert kp.xy_px[:, 0].min() >= border and kp.xy_px[:, 0].max() <= w - border
        assert kp.xy_px[:, 1].min() >= border and kp.xy_px[:, 1].max() <= h - border
        rows, cols = (kp.xy_px[:, 1] - 0.5).astype(int), (kp.xy_px[:, 0] - 0.5).astype(int)
        assert np.isfinite(img[rows, cols]).all()
        assert np.all(np.diff(kp.response) <= 0) and (kp.response > 0).all()


def _tile_parts(img: np.ndarray) -> list[Keypoints]:
    """Keypoints of the four 128 px tiles of a 256 px image (a 12 px halo, border 8), in the
    image's frame: every local maximum of each tile's core, for a global merge."""
    halo, parts = 12, []  # halo >= the filters' reach (9 px) + 1 for the 3x3 maxima
    for x0, y0 in [(0, 0), (128, 0), (0, 128), (128, 128)]:
        wx0, wy0 = max(0, x0 - halo), max(0, y0 - halo)
        window = img[wy0 : y0 + 128 + halo, wx0 : x0 + 128 + halo]
        # min_distance 0: a tile's own NMS could drop a point whose suppressor is itself
        # suppressed by a stronger point in another tile.
        k = detect_keypoints(window, 10_000, 0.0, border_px=0, min_response_rel=0.0)
        xy = k.xy_px + [wx0, wy0]
        core = ((xy >= [x0, y0]) & (xy < [x0 + 128, y0 + 128])).all(axis=1)
        core &= ((xy >= 8) & (xy <= 256 - 8)).all(axis=1)
        parts.append(Keypoints(xy[core], k.response[core]))
    return parts


def test_tiled_detection_with_halo_equals_whole_image() -> None:
    img = smooth_noise(6, shape=(256, 256))
    whole = detect_keypoints(img, 10_000, 12.0, border_px=8, min_response_rel=0.0)
    merged = merge_keypoints(_tile_parts(img), 12.0, 10_000)
    np.testing.assert_array_equal(merged.xy_px, whole.xy_px)
    np.testing.assert_array_equal(merged.response, whole.response)


@pytest.mark.slow
def test_full_size_image_4096() -> None:
    img = smooth_noise(5, shape=(4096, 4096), sigma=3.0)
    kp = detect_keypoints(img)  # the paper's settings: 128 px spacing and border
    assert len(kp) == 500
    assert_spacing(kp, 128.0)
    assert kp.xy_px.min() >= 128 and kp.xy_px.max() <= 4096 - 128


# --- spatial spread -----------------------------------------------------------------------------


def _half_contrast(seed: int = 7, size: int = 512, gain: float = 0.3) -> np.ndarray:
    """Texture whose left half has ``gain`` times the contrast of the right half."""
    img = smooth_noise(seed, (size, size), sigma=3.0)
    img[:, : size // 2] *= gain
    return img


def test_spread_gives_a_low_contrast_half_its_share() -> None:
    """Strongest first, a half at 0.3x contrast (Harris ~ contrast^4: 0.8 %) got no keypoint;
    with a spread, every cell holds one and half of the budget still goes by strength."""
    img = _half_contrast()
    args = dict(max_count=40, min_distance_px=24.0, border_px=16)
    strongest = detect_keypoints(img, **args)
    assert len(strongest) == 40 and (strongest.xy_px[:, 0] < 256).sum() == 0
    spread = detect_keypoints(img, **args, spread=0.5)
    assert len(spread) == 40
    assert_spacing(spread, 24.0)
    assert np.all(np.diff(spread.response) <= 0)
    left = spread.xy_px[:, 0] < 256
    assert 8 <= left.sum() <= 12  # 20 cells of a 4 x 5 grid, 10 on the left; the rest strongest
    from sar_optical_matcher.core.keypoints import spread_cells

    assert spread_cells((16, 16, 496, 496), 20) == (4, 5)
    box = np.array([16.0, 16.0])
    cells = np.floor((spread.xy_px - box) / ((512 - 32) / np.array([4, 5]))).astype(int)
    assert len(np.unique(cells, axis=0)) == 20
    everywhere = detect_keypoints(img, **args, spread=1.0)
    assert 16 <= (everywhere.xy_px[:, 0] < 256).sum() <= 24


def test_spread_takes_no_noise_in_a_flat_cell() -> None:
    """A flat quadrant (noise of 2 % of the scene's std) is no weak corner: no keypoint there,
    while a 0.3x contrast quadrant keeps its own."""
    img = smooth_noise(8, (512, 512), sigma=3.0)
    rng = np.random.default_rng(0)
    img[256:, :256] = 0.02 * img.std() * rng.normal(size=(256, 256))
    img[:256, :256] *= 0.3
    for spread in (0.5, 1.0):
        k = detect_keypoints(img, max_count=1000, min_distance_px=24.0, border_px=16,
                             spread=spread)  # fmt: skip
        x, y = k.xy_px.T
        assert ((x < 256) & (y >= 256)).sum() == 0, spread
        assert ((x < 256) & (y < 256)).sum() >= 9, spread
    # Strongest first with a floor per call, the same quadrant alone gives noise corners.
    assert len(detect_keypoints(img[256:, :256], 1000, 24.0, border_px=16)) > 5


def test_spread_zero_is_strongest_first_and_select_spread_by_hand() -> None:
    from sar_optical_matcher.core.keypoints import select_spread, spread_cells

    img = _half_contrast(9)
    a = detect_keypoints(img, max_count=25, min_distance_px=20.0, border_px=10)
    b = detect_keypoints(img, max_count=25, min_distance_px=20.0, border_px=10, spread=0.0)
    np.testing.assert_array_equal(a.xy_px, b.xy_px)
    # 4 points, 2 cells (left / right of x = 50): the strongest of each, then by strength
    xy = np.array([[60.0, 5], [70, 5], [10, 5], [20, 5]])
    resp = np.array([1.0, 0.9, 0.5, 1e-7])  # the last is under SPREAD_FLOOR_REL
    sel = select_spread(xy, resp, 3, 2 / 3, (0, 0, 100, 10), min_response_rel=0.0)
    np.testing.assert_array_equal(sel, [0, 1, 2])
    sel = select_spread(xy, resp, 2, 1.0, (0, 0, 100, 10), min_response_rel=0.0)
    np.testing.assert_array_equal(sel, [0, 2])  # not 0, 1: the left cell comes first
    sel = select_spread(xy[[0, 3]], resp[[0, 3]], 2, 1.0, (0, 0, 100, 10), min_response_rel=0.0)
    np.testing.assert_array_equal(sel, [0, 1])  # the noise point only by strength
    sel = select_spread(xy[[0, 3]], resp[[0, 3]], 2, 1.0, (0, 0, 100, 10))
    np.testing.assert_array_equal(sel, [0])  # ... and not under min_response_rel
    assert spread_cells((0, 0, 400, 100), 8) == (4, 2)
    assert spread_cells((0, 0, 100, 10), 2) == (2, 1)
    assert spread_cells((0, 0, 10, 10), 1) == (1, 1)
    with pytest.raises(ValueError, match="spread must be in"):
        detect_keypoints(img, spread=1.5)


def test_spread_merge_of_tiles_equals_whole_image() -> None:
    img = _half_contrast(10, 256)
    whole = detect_keypoints(img, 30, 16.0, border_px=8, spread=0.5)
    merged = merge_keypoints(_tile_parts(img), 16.0, 30, spread=0.5, extent=(8, 8, 248, 248))
    assert len(merged) == 30
    np.testing.assert_array_equal(merged.xy_px, whole.xy_px)


def test_a_small_spread_is_a_grid_not_strips() -> None:
    """The grid with the most cells cut a square into strips for a prime count (5 cells:
    1 x 5, 7: 1 x 7), so at MAX_COUNT 10-14 and SPREAD 0.5 every keypoint of a scene with a
    0.3x-contrast half lay in the other half, as strongest first; now 2 x 2 and 3 x 2."""
    from sar_optical_matcher.core.keypoints import spread_cells

    assert spread_cells((0, 0, 400, 400), 5) == (2, 2)
    assert spread_cells((0, 0, 400, 400), 7) in ((3, 2), (2, 3))
    assert spread_cells((0, 0, 1000, 10), 50) == (50, 1)  # a strip of an extent stays one
    assert spread_cells((0, 0, 400, 400), 250) in ((15, 16), (16, 15))
    img = _half_contrast(5, 400)
    for count, left in ((10, 2), (14, 2)):
        k = detect_keypoints(img, count, 24.0, border_px=20, spread=0.5)
        assert len(k) == count and (k.xy_px[:, 0] < 200).sum() >= left
        strongest = detect_keypoints(img, count, 24.0, border_px=20)
        assert (strongest.xy_px[:, 0] < 200).sum() == 0
