"""Tiling of large rasters into blocks, and batching of work items.

Large rasters are processed block by block so that memory is bounded by the tiles in flight
(issue 7, item 4). Tiles are given as ``(x0, y0, w, h)`` in pixels (x = column, y = row, see
``core.__init__``), exactly what GDAL's ``ReadAsArray(xoff, yoff, xsize, ysize)`` takes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def _starts(length: int, tile: int, step: int) -> list[int]:
    """Tile start positions along one axis: every ``step`` until a tile reaches the end."""
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + step)
    return starts


def iter_tiles(
    width: int, height: int, tile: int, overlap: int = 0
) -> Iterator[tuple[int, int, int, int]]:
    """Cover a ``width`` x ``height`` raster with square tiles, row by row.

    Consecutive tiles along an axis start ``tile - overlap`` pixels apart; the last tile of a
    row/column is clipped at the raster edge (it may be smaller than ``tile``). With
    ``overlap=0`` every pixel lies in exactly one tile; with ``overlap > 0`` neighbouring tiles
    share ``overlap`` pixels (the clipped last tile may share more) and every pixel is covered.

    Args:
        width: raster width in pixels (columns), >= 1.
        height: raster height in pixels (rows), >= 1.
        tile: tile edge length in pixels, >= 1.
        overlap: pixels shared by neighbouring tiles, 0 <= overlap < tile.

    Yields:
        ``(x0, y0, w, h)``: top-left pixel (column, row) and size of each tile.

    Raises:
        ValueError: on non-positive sizes or an overlap not smaller than the tile.
    """
    for name, value in (("width", width), ("height", height), ("tile", tile)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if int(overlap) != overlap or not 0 <= overlap < tile:
        raise ValueError(
            f"overlap must be an integer with 0 <= overlap < tile ({tile}), got {overlap!r}; "
            "use a smaller overlap or a larger tile"
        )
    step = int(tile) - int(overlap)
    for y0 in _starts(int(height), int(tile), step):
        for x0 in _starts(int(width), int(tile), step):
            yield x0, y0, min(int(tile), int(width) - x0), min(int(tile), int(height) - y0)


def batched(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Split ``items`` into consecutive lists of ``size`` (the last one may be shorter).

    Args:
        items: any sequence (list, tuple, range, numpy array along axis 0).
        size: batch size, >= 1.

    Yields:
        Lists of at most ``size`` items, in order; nothing for an empty sequence.

    Raises:
        ValueError: if ``size`` is not a positive integer.
    """
    if int(size) != size or size < 1:
        raise ValueError(f"batch size must be a positive integer, got {size!r}")
    size = int(size)
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
