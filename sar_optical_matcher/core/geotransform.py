"""GDAL geotransform arithmetic (pixel <-> map), the one implementation used everywhere.

``x_map = gt[0] + x * gt[1] + y * gt[2]``, ``y_map = gt[3] + x * gt[4] + y * gt[5]`` with
``(x, y)`` continuous pixel coordinates (see the convention in ``core/__init__.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike


def as_points(xy: ArrayLike, name: str) -> np.ndarray:
    """``xy`` as an (N, 2) float64 array of (x, y); one point (2,) becomes (1, 2)."""
    pts = np.asarray(xy, dtype=np.float64)
    if pts.ndim == 1 and pts.shape == (2,):
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) as (x, y), got {pts.shape}")
    return pts


def pixel_to_map(gt: Sequence[float], xy_px: ArrayLike) -> np.ndarray:
    """(N, 2) pixel ``(x, y)`` -> (N, 2) map coordinates with geotransform ``gt``."""
    p = as_points(xy_px, "xy_px")
    return np.column_stack(
        [gt[0] + p[:, 0] * gt[1] + p[:, 1] * gt[2], gt[3] + p[:, 0] * gt[4] + p[:, 1] * gt[5]]
    )


def map_to_pixel(gt: Sequence[float], xy_map: ArrayLike) -> np.ndarray:
    """(N, 2) map coordinates -> (N, 2) pixel ``(x, y)``: inverse of :func:`pixel_to_map`."""
    p = as_points(xy_map, "xy_map")
    a = np.array([[gt[1], gt[2]], [gt[4], gt[5]]], dtype=np.float64)
    if abs(np.linalg.det(a)) < 1e-300:
        raise ValueError(f"geotransform {tuple(gt)} is singular (zero pixel size)")
    return np.linalg.solve(a, (p - [gt[0], gt[3]]).T).T


def points_in_box(xy: ArrayLike, box: Sequence[float] | None) -> np.ndarray:
    """(N,) bool: points ``(x, y)`` inside ``box = (xmin, ymin, xmax, ymax)``, edges included.

    All True without a box.
    """
    pts = as_points(xy, "xy")
    if box is None:
        return np.ones(len(pts), bool)
    xmin, ymin, xmax, ymax = box
    x, y = pts[:, 0], pts[:, 1]
    return (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)


def box_outline(box: Sequence[float], samples: int) -> np.ndarray:
    """(4 * samples, 2) points along the edges of ``box = (x0, y0, x1, y1)``.

    Top, bottom, left, right, ``samples`` evenly spaced on each, corners included. What a
    box's bounding box becomes through a curved or rotating mapping (a reprojection, a fitted
    transform) is taken from these densified edges.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    t = np.linspace(0.0, 1.0, samples)
    xs, ys = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
    return np.concatenate([
        np.column_stack([xs, np.full(samples, y0)]), np.column_stack([xs, np.full(samples, y1)]),
        np.column_stack([np.full(samples, x0), ys]), np.column_stack([np.full(samples, x1), ys]),
    ])  # fmt: skip
