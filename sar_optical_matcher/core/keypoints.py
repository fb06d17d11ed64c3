"""Harris keypoints with a minimum spacing, as in the paper's dataset construction.

Hughes & Schmitt (2019, sec. 4) apply a Harris corner detector to the optical image and a
non-maximum suppression with a spatial constraint so that keypoints are at least 128 px apart.
:func:`detect_keypoints` does the same, vectorised: Harris response (``scipy.ndimage``
filters), 3x3 local maxima as candidates, then an exact greedy suppression (strongest first)
accelerated by a grid of cells holding at most one accepted point each. With a ``spread``
(:func:`select_spread`) the budget is first shared out over a grid of cells of the search
window, so that a low-contrast part of the scene still gets keypoints.

Coordinates follow ``core.__init__``: ``(x, y)`` with the centre of pixel ``[r, c]`` at
``(c + 0.5, r + 0.5)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

_CHUNK = 1024  # candidates resolved per vectorised NMS step
_MAX_GRID_CELLS = 1 << 22  # above this, NMS runs on KD-tree pairs alone
#: With a spread, a cell's strongest point is taken first only when its response is at least
#: this fraction of the strongest point's. Harris grows with contrast^4, so 1e-5 is 5.6 % of the
#: strongest corner's contrast. Measured on a 2048 px synthetic scene (strongest = 1): a half
#: at 0.3x contrast has cells whose best point is 5e-4..8e-3 (kept); a flat quadrant with noise
#: of 2 % of the scene's standard deviation peaks at 5e-8 (no keypoint taken there).
SPREAD_FLOOR_REL = 1e-5


@dataclass(frozen=True)
class Keypoints:
    """Detected keypoints, strongest first.

    Attributes:
        xy_px: ``(N, 2) float64`` pixel-centre coordinates ``(col + 0.5, row + 0.5)``.
        response: ``(N,) float64`` Harris response, descending.
    """

    xy_px: np.ndarray
    response: np.ndarray

    def __post_init__(self) -> None:
        """Validate shapes (N may be 0)."""
        xy = np.asarray(self.xy_px, dtype=np.float64).reshape(-1, 2)
        resp = np.asarray(self.response, dtype=np.float64).reshape(-1)
        if len(xy) != len(resp):
            raise ValueError(f"{len(xy)} keypoints but {len(resp)} responses")
        object.__setattr__(self, "xy_px", xy)
        object.__setattr__(self, "response", resp)

    def __len__(self) -> int:
        return len(self.response)

    @classmethod
    def empty(cls) -> Keypoints:
        """No keypoints (N = 0)."""
        return cls(np.zeros((0, 2)), np.zeros(0))


def _valid_mask(image: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    ok = np.isfinite(image)
    if valid is not None:
        v = np.asarray(valid)
        if v.shape != image.shape:
            raise ValueError(
                f"valid mask shape {v.shape} differs from image shape {image.shape}; pass a "
                "boolean mask with one value per pixel (True = valid)"
            )
        ok &= v.astype(bool)
    return ok


def harris_response(
    image: np.ndarray, sigma: float = 2.0, k: float = 0.04, valid: np.ndarray | None = None
) -> np.ndarray:
    """Harris corner response ``det(M) - k trace(M)^2`` of the structure tensor ``M``.

    Gradients are central differences; ``M`` is smoothed with a Gaussian of ``sigma``. Invalid
    pixels (NaN/Inf or ``valid == False``) are filled with the mean of the valid pixels and
    the response is set to 0 within the filters' reach (``ceil(4 sigma) + 1`` px) of any
    invalid pixel, so nodata edges never produce corners. The response is in image units to
    the 4th power and is not normalised per call, so responses of tiles of one image are
    comparable (see :func:`merge_keypoints`); thresholds are relative (``min_response_rel``).

    Args:
        image: ``(H, W)`` single band, any real dtype.
        sigma: integration scale in pixels (> 0).
        k: Harris sensitivity, typically 0.04-0.06.
        valid: optional ``(H, W)`` bool mask, True where the pixel is usable.

    Returns:
        ``(H, W) float32`` response, finite everywhere.
    """
    img = np.asarray(image)
    if img.ndim != 2 or min(img.shape) < 1:
        raise ValueError(f"image must be a 2-D single band (H, W), got shape {img.shape}")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number of pixels, got {sigma}")
    ok = _valid_mask(img, valid)
    if not ok.any():
        return np.zeros(img.shape, dtype=np.float32)
    f = img.astype(np.float32, copy=True)
    if not ok.all():  # any fill works: responses within reach of it are zeroed below
        f[~ok] = np.float32(np.mean(f, where=ok, dtype=np.float64))
    # In-place arithmetic keeps the peak memory near six float32 copies of the image.
    ix = np.gradient(f, axis=1)  # central differences
    iy = np.gradient(f, axis=0)
    del f
    prod = ix * ix
    sxx = ndimage.gaussian_filter(prod, sigma, mode="reflect")
    np.multiply(iy, iy, out=prod)
    syy = ndimage.gaussian_filter(prod, sigma, mode="reflect")
    np.multiply(ix, iy, out=prod)
    del ix, iy
    resp = ndimage.gaussian_filter(prod, sigma, mode="reflect")  # sxy for now
    resp *= resp  # sxy^2
    np.multiply(sxx, syy, out=prod)
    np.subtract(prod, resp, out=resp)  # det
    sxx += syy  # trace
    del syy
    sxx *= sxx
    sxx *= np.float32(k)
    resp -= sxx  # det - k trace^2
    del sxx, prod
    if not ok.all():
        reach = int(np.ceil(4.0 * sigma)) + 1  # gaussian_filter truncates at 4 sigma; +1 gradient
        near = ndimage.maximum_filter(~ok, size=2 * reach + 1, mode="constant", cval=0)
        resp[near] = 0.0
    return resp.astype(np.float32, copy=False)


def _greedy_nms(
    xy: np.ndarray, min_distance: float, max_count: int, counts: np.ndarray | None = None
) -> np.ndarray:
    """Indices of ``xy (N, 2)`` (sorted strongest first) kept by greedy suppression.

    Exact: a point is kept iff no previously kept point lies closer than ``min_distance``.
    Kept points are stored in a grid of cells of side ``min_distance / sqrt(2)`` (at most one
    per cell), so a candidate is checked against the 5x5 cells around its own at once.
    ``counts`` (N,) bool: only these points count towards ``max_count`` (the others still
    suppress their neighbours); the result ends at the ``max_count``-th counted point.
    """
    if len(xy) == 0 or max_count <= 0:
        return np.zeros(0, dtype=np.int64)
    if counts is None:
        counts = np.ones(len(xy), bool)

    def upto_budget(kept: Sequence[int] | np.ndarray) -> np.ndarray:
        kept = np.asarray(kept, dtype=np.int64)
        cut = int(np.searchsorted(np.cumsum(counts[kept]), max_count)) + 1
        return kept[:cut]

    if min_distance <= 0:
        return upto_budget(np.arange(len(xy)))
    cell = min_distance / np.sqrt(2.0)
    origin = xy.min(axis=0)
    with np.errstate(over="ignore"):
        n_cells = np.prod((xy.max(axis=0) - origin) / cell + 5.0)
    if n_cells > _MAX_GRID_CELLS:
        # Tiny spacing relative to the extent: the KD-tree's conflict pairs are few anyway.
        return upto_budget(_resolve_within(xy, np.arange(len(xy)), min_distance))
    cij = np.floor((xy - origin) / cell).astype(np.int64) + 2  # +2: pad for the 5x5 lookup
    grid = np.full(tuple(cij.max(axis=0) + 3), -1, dtype=np.int64)
    offs = np.stack(np.meshgrid(np.arange(-2, 3), np.arange(-2, 3)), -1).reshape(-1, 2)
    kept: list[int] = []
    d2 = min_distance**2
    for start in range(0, len(xy), _CHUNK):
        idx = np.arange(start, min(start + _CHUNK, len(xy)))
        nb = grid[tuple((cij[idx, None, :] + offs[None]).transpose(2, 0, 1))]  # (B, 25)
        nb_xy = xy[np.where(nb >= 0, nb, 0)]
        close = ((nb_xy - xy[idx, None]) ** 2).sum(axis=2) < d2
        idx = idx[~(close & (nb >= 0)).any(axis=1)]
        kept_chunk = _resolve_within(xy, idx, min_distance)
        for i in kept_chunk:
            grid[tuple(cij[i])] = i
        kept.extend(kept_chunk)
        if int(counts[np.asarray(kept, dtype=np.int64)].sum()) >= max_count:
            break
    return upto_budget(kept)


def _resolve_within(xy: np.ndarray, idx: np.ndarray, min_distance: float) -> list[int]:
    """Greedy suppression among candidates ``idx`` (ascending = strongest first) only."""
    if len(idx) < 2:
        return idx.tolist()
    pts = xy[idx]
    pairs = cKDTree(pts).query_pairs(min_distance, output_type="ndarray")  # distance <= d
    if len(pairs):  # conflict = strictly closer than d, the test the grid path applies
        pairs = pairs[((pts[pairs[:, 0]] - pts[pairs[:, 1]]) ** 2).sum(axis=1) < min_distance**2]
    if len(pairs) == 0:
        return idx.tolist()
    conflicts: dict[int, list[int]] = {}
    for a, b in pairs:  # a < b after sorting: b is the weaker one
        lo, hi = (a, b) if a < b else (b, a)
        conflicts.setdefault(int(hi), []).append(int(lo))
    alive = np.ones(len(idx), dtype=bool)
    for j in range(len(idx)):
        if any(alive[i] for i in conflicts.get(j, ())):
            alive[j] = False
    return idx[alive].tolist()


def _local_maxima(resp: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Mask of ``resp[r0:r1 + 1, c0:c1 + 1]`` pixels >= their 8 neighbours (outside = -inf)."""
    pad = np.pad(resp, 1, mode="constant", constant_values=-np.inf)
    inner = resp[r0 : r1 + 1, c0 : c1 + 1]
    out = np.ones(inner.shape, dtype=bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr or dc:
                out &= inner >= pad[r0 + 1 + dr : r1 + 2 + dr, c0 + 1 + dc : c1 + 2 + dc]
    return out


def detect_keypoints(
    image: np.ndarray,
    max_count: int = 500,
    min_distance_px: float = 128.0,
    border_px: int = 128,
    valid: np.ndarray | None = None,
    sigma: float = 2.0,
    min_response_rel: float = 0.01,
    candidates: np.ndarray | None = None,
    spread: float = 0.0,
) -> Keypoints:
    """Harris keypoints at least ``min_distance_px`` apart, strongest first.

    Candidates are 3x3 local maxima of :func:`harris_response` with a response > 0, on valid
    pixels, whose centre is at least ``border_px`` from every image edge (``border_px <= col +
    0.5 <= W - border_px``, likewise for rows), so a region of ``2 * border_px`` around each
    fits in the image. Greedy non-maximum suppression then keeps the strongest candidate and
    drops every candidate closer than ``min_distance_px`` to a kept one, up to ``max_count``
    points above ``min_response_rel`` times the strongest returned one (the strongest
    keypoint, not the strongest pixel: the floor a tiled detection can apply exactly).
    Whether a keypoint's neighbourhood contains invalid pixels is left to the caller.

    Args:
        image: ``(H, W)`` single band, any real dtype; NaN/Inf are treated as invalid.
        max_count: maximum number of keypoints returned (>= 0).
        min_distance_px: minimum Euclidean spacing between returned keypoints (>= 0).
        border_px: minimum distance of a keypoint centre from the image edges (>= 0).
        valid: optional ``(H, W)`` bool mask, True where pixels are usable.
        sigma: Harris integration scale in pixels.
        min_response_rel: relative response threshold in [0, 1).
        candidates: optional ``(H, W)`` bool mask of where returned keypoints may lie (a
            tile's core, an extent). Unlike ``valid`` it leaves the response untouched, and
            points outside it still suppress their neighbours but are neither returned nor
            counted towards ``max_count``.
        spread: share in [0, 1] of ``max_count`` shared out over a grid of cells of the
            border's inner box before the rest goes by strength (:func:`select_spread`); 0:
            strongest first. With a spread, ``min_response_rel`` applies to the points taken
            by strength only.

    Returns:
        :class:`Keypoints` sorted by response, descending (possibly empty).

    Raises:
        ValueError: on a non-2-D image, a mismatched mask or out-of-range parameters.
    """
    if int(max_count) != max_count or max_count < 0:
        raise ValueError(f"max_count must be a non-negative integer, got {max_count!r}")
    if not (np.isfinite(min_distance_px) and min_distance_px >= 0) or border_px < 0:
        raise ValueError("min_distance_px and border_px must be finite and >= 0")
    if not 0 <= min_response_rel < 1:
        raise ValueError(f"min_response_rel must be in [0, 1), got {min_response_rel}")
    check_spread(spread)
    resp = harris_response(image, sigma=sigma, valid=valid)
    h, w = resp.shape
    if candidates is not None and np.shape(candidates) != (h, w):
        raise ValueError(f"candidates mask shape {np.shape(candidates)} != image {(h, w)}")
    ok = _valid_mask(np.asarray(image), valid)
    r0, c0 = int(np.ceil(border_px - 0.5)), int(np.ceil(border_px - 0.5))
    r1, c1 = int(np.floor(h - border_px - 0.5)), int(np.floor(w - border_px - 0.5))
    if max_count == 0 or r1 < r0 or c1 < c0:
        return Keypoints.empty()
    inner = resp[r0 : r1 + 1, c0 : c1 + 1]
    peak = float(inner.max())
    if peak <= 0:
        return Keypoints.empty()
    cand = (inner > 0.0) & ok[r0 : r1 + 1, c0 : c1 + 1]  # the floor: after the suppression
    cand &= _local_maxima(resp, r0, r1, c0, c1)
    rows, cols = np.nonzero(cand)
    rows, cols = rows + r0, cols + c0
    values = resp[rows, cols].astype(np.float64)
    order = np.lexsort((cols, rows, -values))  # strongest first, ties in raster order
    xy = np.column_stack([cols[order] + 0.5, rows[order] + 0.5])
    inside = None
    if candidates is not None:
        inside = np.asarray(candidates, bool)[rows[order], cols[order]]
    values = values[order]
    budget = int(max_count) if spread == 0 else len(xy)  # a spread chooses among all spaced
    keep = _greedy_nms(xy, float(min_distance_px), budget, inside)
    if inside is not None:
        keep = keep[inside[keep]]
    if spread == 0 and len(keep):  # a suffix of the strongest-first points: budget unchanged
        keep = keep[values[keep] > min_response_rel * values[keep[0]]]
    if spread > 0:
        box = (float(border_px), float(border_px), float(w - border_px), float(h - border_px))
        keep = keep[select_spread(xy[keep], values[keep], int(max_count), spread, box,
                                  min_response_rel)]  # fmt: skip
    return Keypoints(xy[keep], values[keep])


def check_spread(spread: float, name: str = "spread", of: str = "the keypoints") -> None:
    """Raise ``ValueError`` unless ``spread`` is in [0, 1]; the message calls it ``name``."""
    if not (np.isfinite(spread) and 0 <= spread <= 1):
        raise ValueError(
            f"{name} must be in [0, 1] (the share of {of} shared out over the scene's "
            f"cells; 0: strongest first), got {spread!r}"
        )


def check_merge_settings(max_count: int, min_distance_px: float, spread: float) -> None:
    """Raise ``ValueError`` on a merge's out-of-range settings (NaN spacing included).

    One check for :func:`merge_keypoints` and the streaming ``core.keypoint_merge.TileMerger``.
    """
    if int(max_count) != max_count or max_count < 0 or not min_distance_px >= 0:
        raise ValueError("max_count and min_distance_px must be non-negative")
    check_spread(spread)


def cell_centres(extent: Sequence[float], gx: int, gy: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(xs (gx,), ys (gy,))`` of a ``gx`` x ``gy`` grid of cells tiling ``extent``.

    Where a ``valid`` grid of :func:`spread_grid` is sampled (``registration.SarCoverage``),
    and where :func:`spread_grid` takes its samples to lie: one definition for both.
    """
    x0, y0, x1, y1 = (float(v) for v in extent)
    xs = x0 + (np.arange(gx) + 0.5) / gx * (x1 - x0)
    ys = y0 + (np.arange(gy) + 0.5) / gy * (y1 - y0)
    return xs, ys


def spread_cells(extent: Sequence[float], n_cells: int) -> tuple[int, int]:
    """Columns and rows ``(nx, ny)`` of a grid of at most ``n_cells`` near-square cells.

    The grid with the most cells per square root of a cell's elongation (``nx ny /
    sqrt(max(a, 1/a))``, ``a`` a cell's width over its height), then the most cells: the most
    cells alone cut a square into strips for
    a prime count (5 cells: 1 x 5, whose strongest corners could all lie in one half, as they
    did at MAX_COUNT 4-14 and SPREAD 0.5 on a scene of a 0.3x-contrast half); now 2 x 2.
    """
    x0, y0, x1, y1 = (float(v) for v in extent)
    w, h = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)
    n = max(int(n_cells), 1)
    guess = math.sqrt(n * w / h)
    lo = min(max(1, math.floor(guess / 2)), n)
    nx = np.arange(lo, min(n, max(lo, math.ceil(2 * guess))) + 1)
    ny = n // nx
    aspect = (w / nx) / (h / ny)
    score = np.round(nx * ny / np.sqrt(np.maximum(aspect, 1 / aspect)), 9)
    best = np.flatnonzero(score == score.max())
    best = best[np.argmax((nx * ny)[best])]  # then the most cells, then the fewest columns
    return int(nx[best]), int(ny[best])


def spread_grid(
    extent: Sequence[float], n_cells: int, valid: np.ndarray | None = None,
    most: int | None = None,
) -> tuple[int, int]:  # fmt: skip
    """Columns and rows ``(nx, ny)`` of the spread's cells, counting only usable cells.

    Without ``valid``: :func:`spread_cells`. With ``valid``, a ``(gy, gx)`` bool grid over
    ``extent`` (True where keypoints may lie, sampled at its cells' centres), the grids of
    :func:`spread_cells` for ``n_cells``, ``n_cells + 1``, ... are tried and the one whose
    count of cells holding a True sample is the closest to ``n_cells`` (on a tie the
    fewer, never above ``most``, default ``n_cells``) is taken: cells in a rotated
    footprint's empty corners no longer take a share of the budget (a footprint rotated 45
    degrees covers half of its bounding box).
    """
    n = max(int(n_cells), 1)
    most = n if most is None else max(int(most), n)
    if valid is not None and (np.ndim(valid) != 2 or min(np.shape(valid)) < 1):
        raise ValueError(
            f"valid must be a (gy, gx) bool grid over the extent, got shape {np.shape(valid)}"
        )
    if valid is None or not np.asarray(valid).any():
        return spread_cells(extent, n)
    ok = np.asarray(valid, bool)
    gy, gx = ok.shape
    x0, y0 = float(extent[0]), float(extent[1])
    xs, ys = cell_centres(extent, gx, gy)
    cum = np.pad(ok.cumsum(axis=0), ((1, 0), (0, 0)))  # sums over runs of rows: differences

    def usable(nx: int, ny: int) -> int:
        col = spread_cell_index(np.column_stack([xs, np.full(gx, y0)]), extent, nx, 1)
        row = spread_cell_index(np.column_stack([np.full(gy, x0), ys]), extent, 1, ny)
        by_row = np.diff(cum[np.searchsorted(row, np.arange(ny + 1))], axis=0)  # (ny, gx)
        cum_c = np.pad(by_row.cumsum(axis=1), ((0, 0), (1, 0)))
        per = np.diff(cum_c[:, np.searchsorted(col, np.arange(nx + 1))], axis=1)  # (ny, nx)
        return int((per > 0).sum())

    best, best_gap, seen = spread_cells(extent, n), math.inf, set()
    for m in range(n, 16 * n + 1):
        grid = spread_cells(extent, m)
        if grid in seen:
            continue
        seen.add(grid)
        count = usable(*grid)
        if count > most:
            break
        if abs(count - n) < best_gap:  # strictly closer: a tie keeps the fewer cells
            best, best_gap = grid, abs(count - n)
        if count >= n:
            break
    return best


def spread_cell_index(xy: np.ndarray, extent: Sequence[float], nx: int, ny: int) -> np.ndarray:
    """``(N,) int64`` cell (row-major) of each point of ``xy (N, 2)`` in an ``nx`` x ``ny`` grid.

    The grid tiles ``extent (x0, y0, x1, y1)``; points outside it count in the nearest cell.
    One definition for :func:`select_spread` and the streaming merge (``core.keypoint_merge``).
    """
    x0, y0, x1, y1 = (float(v) for v in extent)
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    ix = np.clip(np.floor((pts[:, 0] - x0) / max(x1 - x0, 1e-9) * nx), 0, nx - 1)
    iy = np.clip(np.floor((pts[:, 1] - y0) / max(y1 - y0, 1e-9) * ny), 0, ny - 1)
    return (iy * nx + ix).astype(np.int64)


def select_spread(
    xy: np.ndarray,
    response: np.ndarray,
    max_count: int,
    spread: float,
    extent: Sequence[float],
    min_response_rel: float = 0.01,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of spaced keypoints chosen with a spatial spread, strongest first.

    The extent ``(x0, y0, x1, y1)`` (pixels) is cut into ``floor(spread * max_count)``
    near-square cells at most (:func:`spread_cells`). Each cell's strongest point is taken
    first, if its response is at least :data:`SPREAD_FLOOR_REL` times the strongest point's
    (a weak but real corner is kept; noise in a flat cell is not); the rest of ``max_count``
    goes by strength to points above ``min_response_rel`` times the strongest. With
    ``spread`` 0 this is the strongest ``max_count`` above that floor.

    Args:
        xy: ``(N, 2)`` points sorted strongest first and already spaced (non-maximum
            suppression without a budget).
        response: ``(N,)`` their responses, descending.
        max_count: keypoints wanted (>= 0).
        spread: share of ``max_count`` given out by cells, in [0, 1].
        extent: the search window the cells tile; points outside count in the nearest cell.
        min_response_rel: floor of the points taken by strength, relative to the strongest.
        valid: optional ``(gy, gx)`` bool grid over ``extent``, True where keypoints may lie:
            only cells holding a True sample count towards the cells (:func:`spread_grid`).

    Returns:
        ``(M,) int`` ascending indices into ``xy`` (so still strongest first), ``M <= max_count``.
    """
    check_spread(spread)
    resp = np.asarray(response, np.float64).reshape(-1)
    if len(resp) == 0 or max_count <= 0 or resp[0] <= 0:
        return np.zeros(0, np.int64)
    peak = float(resp[0])
    first = np.zeros(len(resp), bool)
    n_cells = min(int(np.floor(spread * max_count + 1e-9)), len(resp))  # not more than points
    if n_cells >= 1:
        grid = spread_grid(extent, n_cells, valid, most=int(max_count))
        cells = spread_cell_index(xy, extent, *grid)
        eligible = np.flatnonzero(resp >= SPREAD_FLOOR_REL * peak)
        cell = cells[eligible]
        _, at = np.unique(cell, return_index=True)  # the first = the strongest of each cell
        first[eligible[at]] = True
    strong = np.flatnonzero((resp > min_response_rel * peak) & ~first)
    rest = strong[: max(0, int(max_count) - int(first.sum()))]
    return np.sort(np.concatenate([np.flatnonzero(first), rest]))


def merge_keypoints(
    parts: Sequence[Keypoints],
    min_distance_px: float,
    max_count: int,
    spread: float = 0.0,
    extent: Sequence[float] | None = None,
    min_response_rel: float = 0.01,
    valid: np.ndarray | None = None,
) -> Keypoints:
    """Merge keypoints detected on tiles (offsets already applied) with a global NMS.

    The merged set is identical to whole-image detection when every tile is read with a halo
    of at least ``ceil(4 sigma) + 2`` px, only points inside the tile's core are kept, and the
    tiles are detected with ``min_distance_px=0`` and ``min_response_rel=0`` (all local
    maxima), the floor ``min_response_rel`` being applied here to the merged points. With the
    spacing applied per tile as well, spacing is still guaranteed but a few points can be
    lost: a tile may suppress a point because of a neighbour that a stronger point in another
    tile suppresses in turn.

    Args:
        parts: keypoint sets in one common pixel frame.
        min_distance_px: minimum spacing of the merged set.
        max_count: maximum number of merged keypoints.
        spread: share of ``max_count`` shared out over cells of ``extent`` first
            (:func:`select_spread`); 0: strongest first. The tiles are then best detected with
            ``min_distance_px=0`` and ``min_response_rel=0``, the floor being applied here.
        extent: ``(x0, y0, x1, y1)`` pixels the cells tile (with a spread; default: the
            points' bounding box).
        min_response_rel: the floor of the points taken by strength, relative to the
            strongest merged point (0: none).
        valid: with a spread, optional ``(gy, gx)`` bool grid over ``extent`` of where
            keypoints may lie (:func:`spread_grid`).

    Returns:
        :class:`Keypoints` strongest first, every pair at least ``min_distance_px`` apart.
    """
    check_merge_settings(max_count, min_distance_px, spread)
    parts = [p for p in parts if len(p)]
    if not parts:
        return Keypoints.empty()
    xy = np.concatenate([p.xy_px for p in parts])
    values = np.concatenate([p.response for p in parts])
    order = np.lexsort((xy[:, 0], xy[:, 1], -values))
    xy, values = xy[order], values[order]
    if spread == 0:  # the floor is the strongest point's, not a tile's: applied here
        keep = _greedy_nms(xy, float(min_distance_px), int(max_count))
        keep = keep[values[keep] > min_response_rel * max(float(values[0]), 0.0)]
        return Keypoints(xy[keep], values[keep])
    keep = _greedy_nms(xy, float(min_distance_px), len(xy))
    if extent is None:
        extent = (*xy.min(axis=0), *xy.max(axis=0))
    keep = keep[select_spread(xy[keep], values[keep], int(max_count), spread, extent,
                              min_response_rel, valid)]  # fmt: skip
    return Keypoints(xy[keep], values[keep])
