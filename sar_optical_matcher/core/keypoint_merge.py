"""Streaming merge of tiles' keypoints, identical to :func:`keypoints.merge_keypoints`.

``merge_keypoints`` holds every tile's points until the end. With a spread the tiles pass
every local maximum to it (~7,300 per 1024^2 tile, ~2.9 M on a 20,000^2 raster), so memory
grew with the raster's area. :class:`TileMerger` takes the tiles one at a time, in the order
of boxes given up front, and drops every point that can no longer change the result.

Why the result is the same. Greedy suppression (strongest first, ties in ``(y, x)`` order)
keeps a point iff no kept stronger point lies closer than ``d``: only kept points suppress.
A held point is *open* while a box not yet added lies closer than ``d`` to it (a stronger
point may still come there). Over the held points and their greedy statuses:

- a point suppressed by a settled kept point is settled: it is dropped at once;
- a kept point that is not open and whose stronger neighbours are all settled is settled;
- every other point is held (its status may still change).

A settled kept point is never closer than ``d`` to a held point (one of the two would not be
settled) nor to a point still to come (it is not open), so it leaves the suppression for good.
It remains a candidate of the final choice only: :func:`keypoints.select_spread` takes each
cell's strongest point, then the strongest points up to ``max_count`` (``spread`` 0: the
strongest ``max_count``), so the ``max_count`` strongest settled points and each cell's
strongest are all that is kept. Held points are settled in batches of at least as many new
points as are held, so the repeated suppression costs at most about twice the one-shot one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from sar_optical_matcher.core import keypoints as kp

_FLUSH_MIN = 1 << 16  # new points gathered (at least) before the held ones are settled again


class TileMerger:
    """Merge tiles' keypoints as they come, holding only what may still change the result.

    ``merger.add(part)`` once per box, in the boxes' order, then ``merger.result()``: the
    same :class:`keypoints.Keypoints` as ``merge_keypoints(parts, min_distance_px, max_count,
    spread, extent, min_response_rel, valid)``. Memory is bounded by the points within reach
    (``min_distance_px``, chained through unsettled points) of the boxes not yet added, plus
    ``max_count`` and the spread's cells: for tiles added row by row, about one row of tiles.

    Args:
        boxes: ``(T, 4)`` ``(x0, y0, x1, y1)`` pixel boxes, one per tile, in the order
            the tiles are added; a tile's points must lie in its box (edges included).
        min_distance_px: minimum spacing of the merged set (>= 0).
        max_count: maximum number of merged keypoints (>= 0).
        spread: share of ``max_count`` shared out over cells of ``extent`` first.
        extent: ``(x0, y0, x1, y1)`` pixels the spread's cells tile; needed with a spread.
        min_response_rel: the floor of the points taken by strength, relative to the
            strongest merged point (0: none).
        valid: with a spread, optional ``(gy, gx)`` bool grid over ``extent`` of where
            keypoints may lie (``keypoints.spread_grid``).
    """

    def __init__(
        self,
        boxes: Sequence[Sequence[float]] | np.ndarray,
        min_distance_px: float,
        max_count: int,
        spread: float = 0.0,
        extent: Sequence[float] | None = None,
        min_response_rel: float = 0.01,
        valid: np.ndarray | None = None,
    ) -> None:
        """Check the settings; no tile added yet."""
        kp.check_merge_settings(max_count, min_distance_px, spread)
        b = np.asarray(boxes, np.float64)
        if b.ndim != 2 or b.shape[1] != 4 or not np.isfinite(b).all():
            raise ValueError(f"boxes must be (T, 4) finite (x0, y0, x1, y1), got shape {b.shape}")
        if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
            raise ValueError("every box needs x1 >= x0 and y1 >= y0 (x0, y0, x1, y1)")
        if spread > 0 and extent is None:
            raise ValueError("with a spread, give the extent (x0, y0, x1, y1) its cells tile")
        self._boxes, self._d = b, float(min_distance_px)
        self._max_count, self._spread = int(max_count), float(spread)
        self._extent = None if extent is None else tuple(float(v) for v in extent)
        self._min_rel = float(min_response_rel)
        n_cells = int(np.floor(spread * max_count + 1e-9))
        self._valid = valid
        self._cells = None  # (nx, ny) of the spread's cells; n_cells >= 1 needs a spread
        if n_cells >= 1 and self._extent is not None:
            self._cells = kp.spread_grid(self._extent, n_cells, valid, most=int(max_count))
        self._added = 0
        self._xy, self._resp = np.zeros((0, 2)), np.zeros(0)  # held points
        self._last = np.zeros(0, np.int64)  # last box within reach of each held point
        self._new: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # since the settling
        self._n_new = 0
        self._pool_xy, self._pool_resp = np.zeros((0, 2)), np.zeros(0)  # settled kept points
        #: Most points held at once (new and held ones, settled kept ones not counted).
        self.peak_held = 0

    def add(self, part: kp.Keypoints) -> None:
        """Add the next box's keypoints (possibly none)."""
        if self._added >= len(self._boxes):
            raise ValueError(f"all {len(self._boxes)} boxes have been added; one add per box")
        i = self._added
        x0, y0, x1, y1 = self._boxes[i]
        xy = part.xy_px
        if len(xy) and not ((xy >= [x0, y0]) & (xy <= [x1, y1])).all():
            raise ValueError(
                f"keypoints of tile {i} lie outside its box ({x0}, {y0}, {x1}, {y1}); give "
                "each tile's box (with its edges) and add the tiles in the boxes' order"
            )
        self._added += 1
        if len(xy):
            self._new.append((xy, part.response, self._last_box(xy, i)))
            self._n_new += len(xy)
        self.peak_held = max(self.peak_held, len(self._resp) + self._n_new)
        if self._n_new >= max(_FLUSH_MIN, len(self._resp)):
            self._settle()

    def result(self) -> kp.Keypoints:
        """The merged keypoints, strongest first; boxes not added count as empty."""
        self._added = len(self._boxes)
        self._settle()
        xy, resp = self._pool_xy, self._pool_resp
        extent = self._extent or (0.0, 0.0, 0.0, 0.0)  # spread 0: no cells, the floor only
        keep = kp.select_spread(xy, resp, self._max_count, self._spread, extent,
                                self._min_rel, self._valid)  # fmt: skip
        return kp.Keypoints(xy[keep], resp[keep])

    def _last_box(self, xy: np.ndarray, i: int) -> np.ndarray:
        """Index of the last box closer than the spacing to each point of box ``i``."""
        b, d2 = self._boxes, self._d**2
        later = np.arange(i + 1, len(b))
        gap_x = np.maximum(0.0, np.maximum(b[later, 0] - b[i, 2], b[i, 0] - b[later, 2]))
        gap_y = np.maximum(0.0, np.maximum(b[later, 1] - b[i, 3], b[i, 1] - b[later, 3]))
        near = later[gap_x**2 + gap_y**2 < d2]
        last = np.full(len(xy), i, np.int64)
        if len(near):
            dx = np.maximum(0.0, np.maximum(b[near, 0] - xy[:, :1], xy[:, :1] - b[near, 2]))
            dy = np.maximum(0.0, np.maximum(b[near, 1] - xy[:, 1:], xy[:, 1:] - b[near, 3]))
            reach = np.where(dx**2 + dy**2 < d2, near, i)  # (N, K)
            last = np.maximum(last, reach.max(axis=1))
        return last

    def _settle(self) -> None:
        """Greedy suppression over the held points; settled ones leave (see the module)."""
        xy = np.concatenate([self._xy, *(n[0] for n in self._new)])
        resp = np.concatenate([self._resp, *(n[1] for n in self._new)])
        last = np.concatenate([self._last, *(n[2] for n in self._new)])
        self._new, self._n_new = [], 0
        order = np.lexsort((xy[:, 0], xy[:, 1], -resp))
        xy, resp, last = xy[order], resp[order], last[order]
        kept, dropped = _settled(xy, last >= self._added, self._d)
        self._pool_xy = np.concatenate([self._pool_xy, xy[kept]])
        self._pool_resp = np.concatenate([self._pool_resp, resp[kept]])
        self._prune_pool()
        held = ~(kept | dropped)
        self._xy, self._resp, self._last = xy[held], resp[held], last[held]

    def _prune_pool(self) -> None:
        """Settled kept points, strongest first: the ``max_count`` strongest and cells' best."""
        xy, resp = self._pool_xy, self._pool_resp
        order = np.lexsort((xy[:, 0], xy[:, 1], -resp))
        keep = np.zeros(len(resp), bool)
        keep[order[: self._max_count]] = True
        if self._cells is not None and self._extent is not None:
            cell = kp.spread_cell_index(xy[order], self._extent, *self._cells)
            _, at = np.unique(cell, return_index=True)  # the first = each cell's strongest
            keep[order[at]] = True
        order = order[keep[order]]
        self._pool_xy, self._pool_resp = xy[order], resp[order]


def _settled(xy: np.ndarray, is_open: np.ndarray, d: float) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the settled kept and settled suppressed points of ``xy`` (strongest first).

    Settled kept: kept, not open, every stronger neighbour settled suppressed. Settled
    suppressed: a settled kept point is its neighbour and stronger. Decided in strength
    order these depend only on stronger points, so the fixed point reached by removing, from
    the kept points that are not open, those with an unsettled stronger neighbour is unique.
    """
    kept = np.zeros(len(xy), bool)
    kept[kp._greedy_nms(xy, d, len(xy))] = True
    settled = kept & ~is_open
    if d <= 0 or kept.all():  # no point suppresses another
        return settled, np.zeros(len(xy), bool)
    k_idx = np.flatnonzero(kept)
    pairs = cKDTree(xy[k_idx]).sparse_distance_matrix(
        cKDTree(xy), math.nextafter(d, math.inf) * (1 + 1e-9), output_type="ndarray"
    )
    k, p = k_idx[pairs["i"]], pairs["j"].astype(np.int64)
    close = ((xy[k] - xy[p]) ** 2).sum(axis=1) < d**2  # the suppression's own test
    k, p = k[close], p[close]
    covers = k < p  # k is stronger: it suppresses p (p is not kept)
    cover_k, cover_p = k[covers], p[covers]
    need = k > p  # p is stronger than the kept k: k is settled only if p is
    need_k, need_p = k[need], p[need]
    while True:
        covered = np.zeros(len(xy), bool)
        covered[cover_p[settled[cover_k]]] = True
        unsure = np.zeros(len(xy), bool)
        unsure[need_k[~covered[need_p]]] = True
        if not (settled & unsure).any():
            return settled, covered
        settled &= ~unsure
