"""The streaming merge (``core.keypoint_merge.TileMerger``) against the one-shot merge.

Random candidate sets on random tilings (uneven tiles, ties in the responses, responses over
seven decades so the spread's floors bite, spacings from 0 to several tiles), added in raster
order and in a shuffled order, settled after every tile and in large batches: the result must
be ``merge_keypoints``' exactly, while far fewer points are held than were added.
"""

from __future__ import annotations

import numpy as np
import pytest

from sar_optical_matcher.core import keypoint_merge
from sar_optical_matcher.core.keypoint_merge import TileMerger
from sar_optical_matcher.core.keypoints import Keypoints, merge_keypoints


def _tiling(rng: np.random.Generator, w: int, h: int, n_x: int, n_y: int) -> list[list[int]]:
    """Boxes (x0, y0, x1, y1) of an uneven grid over w x h px, row by row."""
    xs = np.unique(np.r_[0, np.sort(rng.choice(np.arange(1, w), n_x - 1, replace=False)), w])
    ys = np.unique(np.r_[0, np.sort(rng.choice(np.arange(1, h), n_y - 1, replace=False)), h])
    return [[int(xs[i]), int(ys[j]), int(xs[i + 1]), int(ys[j + 1])]
            for j in range(len(ys) - 1) for i in range(len(xs) - 1)]  # fmt: skip


def _parts(rng: np.random.Generator, boxes: list[list[int]], density: float, ties: bool
           ) -> list[Keypoints]:  # fmt: skip
    """Points at pixel centres inside each box (edges densely hit), distinct positions."""
    parts = []
    for x0, y0, x1, y1 in boxes:
        n_px = (x1 - x0) * (y1 - y0)
        pick = rng.choice(n_px, int(rng.binomial(n_px, density)), replace=False)
        xy = np.column_stack([x0 + pick % (x1 - x0) + 0.5, y0 + pick // (x1 - x0) + 0.5])
        if ties:
            resp = rng.choice([1e-7, 0.004, 0.3, 1.0, 1.0, 2.0], len(xy))
        else:
            resp = 10.0 ** rng.uniform(-7, 0, len(xy))
        parts.append(Keypoints(xy, resp))
    return parts


def _merge(boxes: list[list[int]], parts: list[Keypoints], *args: float) -> TileMerger:
    merger = TileMerger(boxes, *args)  # type: ignore[arg-type]
    for part in parts:
        merger.add(part)
    return merger


@pytest.mark.parametrize("every_tile", [True, False])
def test_streaming_merge_equals_the_one_shot_merge(
    monkeypatch: pytest.MonkeyPatch, every_tile: bool
) -> None:
    if every_tile:  # settle after every tile: the most partial states
        monkeypatch.setattr(keypoint_merge, "_FLUSH_MIN", 1)
    rng = np.random.default_rng(0)
    cases = 0
    for trial in range(48):
        w, h = int(rng.integers(40, 160)), int(rng.integers(40, 160))
        boxes = _tiling(rng, w, h, int(rng.integers(1, 7)), int(rng.integers(1, 7)))
        parts = _parts(rng, boxes, float(rng.choice([0.05, 0.3])), bool(trial % 2))
        d = float(rng.choice([0.0, 1.0, 3.0, 7.5, 20.0, 60.0]))  # 60: beyond several tiles
        max_count = int(rng.choice([1, 3, 12, 40, 10_000]))
        spread = float(rng.choice([0.0, 0.25, 0.5, 1.0]))
        rel = float(rng.choice([0.0, 0.01, 0.5]))
        extent = (2.0, 3.0, w - 1.0, h - 4.0)
        valid = None  # where keypoints may lie: the spread's cells count only those
        if trial % 4 == 1:
            valid = rng.random((int(rng.integers(1, 12)), int(rng.integers(1, 12)))) < 0.5
        want = merge_keypoints(parts, d, max_count, spread, extent, rel, valid)
        if trial % 3 == 0:  # any order of the tiles, not only raster order
            perm = rng.permutation(len(boxes))
            boxes, parts = [boxes[i] for i in perm], [parts[i] for i in perm]
        merger = TileMerger(boxes, d, max_count, spread, extent, rel, valid)
        for part in parts:
            merger.add(part)
        got = merger.result()
        np.testing.assert_array_equal(got.xy_px, want.xy_px, err_msg=f"trial {trial}")
        np.testing.assert_array_equal(got.response, want.response, err_msg=f"trial {trial}")
        cases += len(want) > 1
    assert cases >= 30  # most cases choose several points


def test_few_points_are_held_on_a_long_raster(monkeypatch: pytest.MonkeyPatch) -> None:
    """12 x 40 tiles of 32 px, dense candidates, spacing 12 px, spread 0.5: the merge holds
    about two rows of tiles' points, not the raster's, and still equals the one-shot merge."""
    monkeypatch.setattr(keypoint_merge, "_FLUSH_MIN", 1)
    rng = np.random.default_rng(3)
    boxes = [[x, y, x + 32, y + 32] for y in range(0, 1280, 32) for x in range(0, 384, 32)]
    parts = _parts(rng, boxes, 0.07, ties=False)
    total = sum(len(p) for p in parts)
    merger = _merge(boxes, parts, 12.0, 300, 0.5, (0.0, 0.0, 384.0, 1280.0))
    want = merge_keypoints(parts, 12.0, 300, 0.5, (0.0, 0.0, 384.0, 1280.0))
    got = merger.result()
    np.testing.assert_array_equal(got.xy_px, want.xy_px)
    assert len(want) == 300
    row = total / 40  # points of one row of 12 tiles
    assert total > 30_000
    assert merger.peak_held < 2.5 * row  # measured: 1.4 rows
    assert merger.peak_held < 0.07 * total


def test_bad_tiles_are_refused() -> None:
    box = [[0, 0, 10, 10]]
    with pytest.raises(ValueError, match="lie outside its box"):
        TileMerger(box, 2.0, 5).add(Keypoints(np.array([[10.5, 5.0]]), np.ones(1)))
    merger = TileMerger(box, 2.0, 5)
    merger.add(Keypoints.empty())
    with pytest.raises(ValueError, match="all 1 boxes have been added"):
        merger.add(Keypoints.empty())
    with pytest.raises(ValueError, match="give the extent"):
        TileMerger(box, 2.0, 5, spread=0.5)
    with pytest.raises(ValueError, match=r"boxes must be \(T, 4\)"):
        TileMerger([[0, 0, 10]], 2.0, 5)
    with pytest.raises(ValueError, match="x1 >= x0"):
        TileMerger([[5, 0, 1, 10]], 2.0, 5)
    with pytest.raises(ValueError, match="spread must be in"):
        TileMerger(box, 2.0, 5, spread=2.0, extent=(0, 0, 10, 10))
    assert len(TileMerger(box, 2.0, 5).result()) == 0  # nothing added: nothing merged


@pytest.mark.parametrize("max_count, spacing", [(-1, 10.0), (2.5, 10.0), (5, -1.0), (5, np.nan)])
def test_both_merges_refuse_the_same_bad_settings(max_count, spacing) -> None:
    """One check (``keypoints.check_merge_settings``): a NaN spacing, which suppresses nothing
    in the greedy test ``distance < d``, is refused by both, not merged unspaced."""
    part = Keypoints(np.array([[10.0, 10.0], [12.0, 10.0]]), np.array([2.0, 1.0]))
    with pytest.raises(ValueError, match="must be non-negative"):
        merge_keypoints([part], spacing, max_count)
    with pytest.raises(ValueError, match="must be non-negative"):
        TileMerger([(0, 0, 20, 20)], spacing, max_count)
