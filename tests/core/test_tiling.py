import numpy as np
import pytest

from sar_optical_matcher.core.tiling import batched, iter_tiles


@pytest.mark.parametrize(("width", "height", "tile"), [(100, 70, 32), (64, 64, 64), (5, 300, 7)])
def test_tiles_cover_every_pixel_exactly_once(width: int, height: int, tile: int) -> None:
    count = np.zeros((height, width), dtype=int)
    for x0, y0, w, h in iter_tiles(width, height, tile):
        assert 1 <= w <= tile and 1 <= h <= tile
        count[y0 : y0 + h, x0 : x0 + w] += 1
    assert (count == 1).all()


def test_tile_positions_and_clipping() -> None:
    tiles = list(iter_tiles(100, 40, 32))
    assert tiles[:4] == [(0, 0, 32, 32), (32, 0, 32, 32), (64, 0, 32, 32), (96, 0, 4, 32)]
    assert tiles[-1] == (96, 32, 4, 8)
    assert len(tiles) == 8


def test_overlap_shares_pixels_and_covers_everything() -> None:
    tiles = list(iter_tiles(100, 50, 40, overlap=10))
    xs = sorted({t[0] for t in tiles})
    assert xs == [0, 30, 60]  # step 30; the tile at 60 reaches the edge (60 + 40 = 100)
    count = np.zeros((50, 100), dtype=int)
    for x0, y0, w, h in tiles:
        count[y0 : y0 + h, x0 : x0 + w] += 1
    assert count.min() >= 1
    assert count[0, 35] == 2  # columns 30..39 are shared by the first two tiles


@pytest.mark.parametrize(
    "args", [(0, 10, 4, 0), (10, -1, 4, 0), (10, 10, 0, 0), (10, 10, 4, 4), (10, 10, 4, -1)]
)
def test_bad_sizes_raise(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        list(iter_tiles(*args))


def test_batched() -> None:
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 3)) == []
    assert [len(b) for b in batched(np.arange(10), 5)] == [5, 5]
    with pytest.raises(ValueError, match="positive"):
        list(batched([1, 2], 0))
