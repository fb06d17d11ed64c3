"""Procedural SAR/optical scenes with an exact ground truth (numpy + scipy only).

A :class:`Scene` is a land-cover map (water, three field types, forest, urban ground, roads,
buildings) with object heights and an optical reflectance rendering. :func:`render_sigma0`
turns it into a SAR backscatter map from its own physics (per-class radiometry, double bounce,
layover, radar shadow), not from the optical pixels; :func:`apply_speckle` adds L-look Gamma
speckle. :func:`make_pair` places both on their own pixel grids with a known, deliberately wrong
SAR georeference; its :class:`Truth` maps between the two grids.

SAR geometry (ground-range projected, flat terrain): ``look_direction`` is the direction the
beam points on the ground, the sensor is on the opposite side (``"east"``: sensor in the west,
e.g. a right-looking ascending pass). A point at height h appears displaced *towards the sensor*
by ``h / tan(incidence)`` (layover); the ground behind an object of height h is in radar shadow
over ``h * tan(incidence)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

WATER, CROP, GRASS, BARE, FOREST, URBAN, ROAD, BUILDING = range(8)
CLASS_NAMES = ("water", "crop", "grass", "bare", "forest", "urban", "road", "building")
LOOK_DIRECTIONS = {"east": 0, "south": 1, "west": 2, "north": -1}  # np.rot90 k to beam-east
SAR_OUTPUTS = ("amplitude", "intensity", "db")
NESZ_DB = -26.0  # noise-equivalent sigma0: the floor of dark areas (radar shadow, calm water)

# Optical reflectance (R, G, B) and SAR sigma0 (dB at 35 deg, random spread per parcel/object,
# dB per degree of incidence) per class. Roads are dark in SAR (smooth) but mid-grey in optical,
# forest bright in SAR (volume) but dark in optical: the two modalities are not a remapping.
_RGB = np.array(
    [
        [0.025, 0.045, 0.055],  # water
        [0.07, 0.12, 0.05],  # crop
        [0.08, 0.11, 0.06],  # grass
        [0.21, 0.17, 0.13],  # bare
        [0.035, 0.06, 0.035],  # forest
        [0.15, 0.15, 0.16],  # urban ground
        [0.11, 0.11, 0.12],  # road
        [0.22, 0.20, 0.19],  # building (roof; recoloured per building)
    ],
    dtype=np.float32,
)
_SIGMA0_DB = np.array([-22.0, -10.0, -13.0, -14.0, -7.5, -9.0, -19.0, -7.0])
_SIGMA0_SPREAD_DB = np.array([2.0, 3.0, 1.5, 3.0, 0.7, 1.5, 1.0, 3.0])
_INCIDENCE_SLOPE_DB = np.array([-0.5, -0.15, -0.15, -0.2, -0.05, -0.1, -0.3, -0.1])
_WALL_DB = -3.0  # facade facing the sensor, spread over its layover extent
_DOUBLE_BOUNCE_DB = 12.0  # wall-ground dihedral at the wall foot, per pixel of wall length


@dataclass
class Scene:
    """A synthetic landscape on one pixel grid.

    Attributes:
        labels: (H, W) uint8 land-cover class, index into :data:`CLASS_NAMES`.
        height_m: (H, W) float32 object height above ground in metres (buildings, forest).
        parcel: (H, W) int32 object id (field parcel or building); radiometry varies per id.
        optical: (H, W, 3) float32 top-of-canopy reflectance-like RGB in [0, 1].
        pixel_size_m: ground sampling distance in metres.
    """

    labels: np.ndarray
    height_m: np.ndarray
    parcel: np.ndarray
    optical: np.ndarray
    pixel_size_m: float = 10.0

    def __post_init__(self) -> None:
        """Check shapes."""
        shape = self.labels.shape
        if len(shape) != 2 or self.height_m.shape != shape or self.parcel.shape != shape:
            raise ValueError("labels, height_m and parcel must be equally shaped 2-D arrays")
        if self.optical.shape != (*shape, 3):
            raise ValueError(f"optical must be (H, W, 3) = {(*shape, 3)}, not {self.optical.shape}")
        if not self.pixel_size_m > 0:
            raise ValueError(f"pixel_size_m must be > 0, got {self.pixel_size_m}")


def smooth_noise(shape: tuple[int, int], scale_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std smooth random field with a correlation length of ~``scale_px``.

    Separable Gaussian interpolation of a coarse white-noise grid: two small matrix products,
    so a 1024^2 field costs milliseconds.

    Returns:
        (H, W) float32.
    """
    h, w = shape
    scale = max(float(scale_px), 1.0)

    def weights(n: int) -> np.ndarray:
        nodes = np.arange(int(np.ceil(n / scale)) + 4) - 2.0
        pos = (np.arange(n) + 0.5) / scale
        k = np.exp(-0.5 * ((pos[:, None] - nodes[None, :]) / 0.7) ** 2)
        return k / k.sum(axis=1, keepdims=True)

    wr, wc = weights(h), weights(w)
    field_ = wr @ rng.standard_normal((wr.shape[1], wc.shape[1])) @ wc.T
    return ((field_ - field_.mean()) / (field_.std() + 1e-12)).astype(np.float32)


def _voronoi_parcels(
    shape: tuple[int, int], cell_px: float, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Field parcels: Voronoi cells of one jittered seed per grid cell. Returns (ids, count)."""
    h, w = shape
    ny, nx = int(np.ceil(h / cell_px)) + 2, int(np.ceil(w / cell_px)) + 2
    seeds = (np.indices((ny, nx)).transpose(1, 2, 0) - 1 + rng.uniform(0.1, 0.9, (ny, nx, 2))) * (
        cell_px
    )
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    cy, cx = (rows // cell_px).astype(int) + 1, (cols // cell_px).astype(int) + 1
    best = np.full(shape, np.inf, dtype=np.float32)
    ids = np.zeros(shape, dtype=np.int32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            sy, sx = np.clip(cy + dy, 0, ny - 1), np.clip(cx + dx, 0, nx - 1)
            d = (rows - seeds[sy, sx, 0]) ** 2 + (cols - seeds[sy, sx, 1]) ** 2
            closer = d < best
            best[closer] = d[closer]
            ids[closer] = (sy * nx + sx)[closer]
    return ids, ny * nx


def _linear_features(shape: tuple[int, int], px: float, rng: np.random.Generator) -> tuple:
    """A meandering river (bool mask) and 1-3 straight roads (bool mask)."""
    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    river = np.zeros(shape, dtype=bool)
    if rng.random() < 0.85:
        ang = rng.uniform(0, np.pi)
        u = (cols - w / 2) * np.cos(ang) + (rows - h / 2) * np.sin(ang)
        v = -(cols - w / 2) * np.sin(ang) + (rows - h / 2) * np.cos(ang)
        f, df = np.zeros_like(u), np.zeros_like(u)
        for _ in range(3):  # sum of sines: a meander belt of a few wavelengths
            lam = rng.uniform(0.3, 1.0) * max(h, w)
            amp = rng.uniform(0.02, 0.08) * lam
            ph = rng.uniform(0, 2 * np.pi)
            f += amp * np.sin(2 * np.pi * u / lam + ph)
            df += amp * 2 * np.pi / lam * np.cos(2 * np.pi * u / lam + ph)
        half_width_px = rng.uniform(12.0, 35.0) / px
        river = np.abs(v - f - rng.uniform(-0.2, 0.2) * h) / np.sqrt(1 + df**2) < half_width_px
    roads = np.zeros(shape, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        ang = rng.uniform(0, np.pi)
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        dist = np.abs(-(cols - x0) * np.sin(ang) + (rows - y0) * np.cos(ang))
        roads |= dist < max(rng.uniform(6.0, 12.0) / px, 0.5)
    return river, roads


def _urban_blocks(
    shape: tuple[int, int], px: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Street grid with one building per block. Returns (streets, building height m, block id)."""
    h, w = shape
    spacing = rng.uniform(60.0, 100.0)
    street = rng.uniform(10.0, 16.0)
    ym, xm = (np.mgrid[0:h, 0:w].astype(np.float32) + 0.5) * px + rng.uniform(0, spacing, 2)[
        :, None, None
    ]
    by, bx = (ym // spacing).astype(int), (xm // spacing).astype(int)
    u, v = xm - bx * spacing, ym - by * spacing
    nby, nbx = by.max() + 1, bx.max() + 1
    margins = rng.uniform(1.0, 0.3 * (spacing - street), (4, nby, nbx))
    heights = np.minimum(rng.lognormal(np.log(12.0), 0.6, (nby, nbx)), 80.0)
    heights[rng.random((nby, nbx)) < 0.12] = 0.0  # parks and squares
    streets = (u < street) | (v < street)
    inside = (
        (u > street + margins[0, by, bx])
        & (u < spacing - margins[1, by, bx])
        & (v > street + margins[2, by, bx])
        & (v < spacing - margins[3, by, bx])
    )
    return streets, np.where(inside, heights[by, bx], 0.0).astype(np.float32), by * nbx + bx


def _shifted(a: np.ndarray, dy: int, dx: int, fill: float = 0.0) -> np.ndarray:
    """``out[r, c] = a[r + dy, c + dx]`` (``fill`` outside ``a``)."""
    h, w = a.shape
    out = np.full_like(a, fill)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = a[
        max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)
    ]
    return out


def _land_cover(shape: tuple[int, int], px: float, rng: np.random.Generator) -> tuple:
    """Labels, heights and object ids of a new landscape (see :func:`render_scene`)."""
    parcel, n_parcels = _voronoi_parcels(shape, rng.uniform(200.0, 400.0) / px, rng)
    count = np.bincount(parcel.ravel(), minlength=n_parcels)
    urb, wood = (
        np.bincount(parcel.ravel(), smooth_noise(shape, s / px, rng).ravel(), n_parcels)
        / np.maximum(count, 1)
        for s in (1500.0, 700.0)
    )
    present = count > 0
    cls = rng.choice(np.array([CROP, GRASS, BARE]), n_parcels, p=[0.5, 0.3, 0.2])
    is_urban = present & (urb >= np.quantile(urb[present], 1.0 - rng.uniform(0.05, 0.3)))
    rest = present & ~is_urban
    is_forest = rest & (wood >= np.quantile(wood[rest], 1.0 - rng.uniform(0.1, 0.3)))
    cls[is_urban], cls[is_forest] = URBAN, FOREST
    labels = cls[parcel].astype(np.uint8)
    height = np.zeros(shape, dtype=np.float32)

    streets, building_h, block = _urban_blocks(shape, px, rng)
    urban = labels == URBAN
    labels[urban & streets] = ROAD
    buildings = urban & ~streets & (building_h > 0)
    labels[buildings], height[buildings] = BUILDING, building_h[buildings]
    parcel = np.where(buildings, n_parcels + block, parcel).astype(np.int32)

    forest = labels == FOREST
    canopy = 16.0 + 4.0 * smooth_noise(shape, 30.0 / px, rng)
    height[forest] = np.clip(canopy[forest], 8.0, 30.0)
    river, roads = _linear_features(shape, px, rng)
    water = river | (smooth_noise(shape, 400.0 / px, rng) > 2.2)
    labels[water], height[water] = WATER, 0.0
    labels[roads], height[roads] = ROAD, 0.0  # roads cross rivers on (flat) bridges
    return labels, height, parcel


def _sun_shadow(height_m: np.ndarray, px: float, rng: np.random.Generator) -> np.ndarray:
    """Cast-shadow mask of a sun at a random southern azimuth and 30-55 deg elevation."""
    az, elev = np.deg2rad(rng.uniform(130.0, 230.0)), np.deg2rad(rng.uniform(30.0, 55.0))
    to_sun = np.array([-np.cos(az), np.sin(az)])  # (row, col) step towards the sun
    shadow = np.zeros(height_m.shape, dtype=bool)
    for t in range(1, int(np.ceil(height_m.max() / np.tan(elev) / px)) + 1):
        dy, dx = np.rint(t * to_sun).astype(int)
        shadow |= _shifted(height_m, dy, dx) - t * px * np.tan(elev) > height_m
    return shadow


def _optical(
    labels: np.ndarray,
    height_m: np.ndarray,
    parcel: np.ndarray,
    px: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Reflectance RGB with per-parcel colour, crop rows, tree crowns and sun shadows."""
    shape = (labels.shape[0], labels.shape[1])
    n_ids = int(parcel.max()) + 1
    rgb = _RGB[labels] * rng.uniform(0.75, 1.3, n_ids).astype(np.float32)[parcel][..., None]
    crop = labels == CROP
    ripe = rng.uniform(0.0, 1.0, n_ids).astype(np.float32)[parcel][..., None]
    rgb = np.where(
        crop[..., None], (1 - ripe) * rgb + ripe * np.array([0.2, 0.18, 0.09], np.float32), rgb
    )
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    ang = rng.uniform(0, np.pi, n_ids)[parcel]
    period = rng.uniform(2.5, 5.0, n_ids)[parcel]
    stripes = 1 + 0.12 * np.sin(2 * np.pi * (cols * np.cos(ang) + rows * np.sin(ang)) / period)
    crowns = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.8)
    soil = smooth_noise(shape, 3.0, rng)
    tex = np.where(crop, stripes, 1 + 0.06 * soil)
    tex = np.where(labels == FOREST, 1 + 1.2 * crowns, tex)
    roofs = np.array([[0.26, 0.12, 0.08], [0.2, 0.2, 0.21], [0.36, 0.35, 0.33]], np.float32)
    roof = roofs[rng.integers(0, 3, n_ids)][parcel]
    rgb = np.where((labels == BUILDING)[..., None], roof, rgb) * tex[..., None]
    rgb *= np.where(_sun_shadow(height_m, px, rng), 0.35, 1.0)[..., None]
    rgb += rng.normal(0.0, 0.004, rgb.shape)
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def render_scene(size_px: int, rng: np.random.Generator, pixel_size_m: float = 10.0) -> Scene:
    """A random landscape: fields, forest, a town with buildings and streets, roads, a river.

    Args:
        size_px: side of the square scene in pixels (>= 16).
        rng: random generator; the same seed gives identical arrays.
        pixel_size_m: ground sampling distance in metres (> 0); objects have metric sizes.

    Returns:
        The :class:`Scene` (labels, heights, object ids and optical RGB).
    """
    if int(size_px) != size_px or size_px < 16:
        raise ValueError(f"size_px must be an integer >= 16, got {size_px!r}")
    if not pixel_size_m > 0:
        raise ValueError(f"pixel_size_m must be > 0 metres, got {pixel_size_m}")
    shape = (int(size_px), int(size_px))
    labels, height, parcel = _land_cover(shape, float(pixel_size_m), rng)
    optical = _optical(labels, height, parcel, float(pixel_size_m), rng)
    return Scene(labels, height, parcel, optical, float(pixel_size_m))


def _backscatter_db(scene: Scene, incidence_deg: float, rng: np.random.Generator) -> np.ndarray:
    """Per-pixel sigma0 (dB) of each surface before geometry: class, object and texture."""
    labels, parcel = scene.labels, scene.parcel
    spread = rng.uniform(-1.0, 1.0, int(parcel.max()) + 1)[parcel] * _SIGMA0_SPREAD_DB[labels]
    db = _SIGMA0_DB[labels] + _INCIDENCE_SLOPE_DB[labels] * (incidence_deg - 35.0) + spread
    wind = 2.0 * smooth_noise((labels.shape[0], labels.shape[1]), 500.0 / scene.pixel_size_m, rng)
    canopy = 0.6 * ndimage.gaussian_filter(rng.standard_normal(labels.shape), 1.0) / 0.28
    db += np.where(labels == WATER, wind, 0.0) + np.where(labels == FOREST, canopy, 0.0)
    return db


def _splat(out: np.ndarray, rows: np.ndarray, x: np.ndarray, weight: np.ndarray) -> None:
    """Add ``weight`` at continuous column positions ``x`` of ``rows`` (linear split), in place."""
    h, w = out.shape
    xi = x - 0.5  # pixel centres are at c + 0.5
    i0 = np.floor(xi).astype(np.int64)
    frac = xi - i0
    for idx, wt in ((i0, 1.0 - frac), (i0 + 1, frac)):
        ok = (idx >= 0) & (idx < w)
        flat = np.bincount(rows[ok] * w + idx[ok], (weight * wt)[ok], minlength=h * w)
        out += flat.reshape(h, w)


def _beam_east_geometry(
    db: np.ndarray, height_m: np.ndarray, building: np.ndarray, px: float, incidence_deg: float
) -> np.ndarray:
    """Ground-range sigma0 of a scene imaged by a beam pointing east (+x), sensor in the west."""
    h, w = db.shape
    tan_inc = np.tan(np.deg2rad(incidence_deg))
    shadow = np.zeros((h, w), dtype=bool)
    for d in range(1, int(np.ceil(height_m.max() * tan_inc / px)) + 2):
        shadow |= _shifted(height_m, 0, -d) - d * px / tan_inc > height_m
    rows, cols = np.mgrid[0:h, 0:w]
    out = np.zeros((h, w), dtype=np.float64)
    # every visible surface element is imaged at its slant range: shifted towards the sensor
    sigma = np.where(shadow, 0.0, 10.0 ** (db / 10.0))
    _splat(out, rows.ravel(), (cols + 0.5 - height_m / (tan_inc * px)).ravel(), sigma.ravel())
    front = _shifted(height_m, 0, -1)  # height of the western (sensor-side) neighbour
    wall = building & (height_m > front + 0.5)
    r, c = rows[wall], cols[wall].astype(np.float64)
    lo, hi = front[wall], height_m[wall]
    n = int(np.ceil(2 * (hi - lo).max(initial=0.0) / (tan_inc * px))) + 1
    for k in range(n):  # the facade spreads over its layover extent [c - hi/tan, c - lo/tan]
        z = lo + (k + 0.5) / n * (hi - lo)
        weight = 10.0 ** (_WALL_DB / 10.0) * (hi - lo) / (tan_inc * px * n)
        _splat(out, r, c - z / (tan_inc * px), weight)
    foot = lo < 1.0  # wall-ground dihedral: all paths as long as the foot's, imaged at the foot
    _splat(out, r[foot], c[foot], np.full(int(foot.sum()), 10.0 ** (_DOUBLE_BOUNCE_DB / 10.0)))
    return out + 10.0 ** (NESZ_DB / 10.0)


def render_sigma0(
    scene: Scene,
    rng: np.random.Generator,
    incidence_deg: float = 35.0,
    look_direction: str = "east",
) -> np.ndarray:
    """Noise-free SAR backscatter (linear sigma0) of ``scene`` on the scene's own grid.

    Radiometry per class and object (water dark with wind texture, fields per parcel, forest
    volume, roofs), facades and double-bounce lines at walls facing the sensor, layover of all
    elevated surfaces towards the sensor, radar shadow behind them, and a noise floor.

    Args:
        scene: the landscape.
        rng: random generator (per-object radiometry, textures).
        incidence_deg: local incidence angle in degrees, in (10, 70).
        look_direction: ground direction of the beam: ``"east"``, ``"south"``, ``"west"`` or
            ``"north"`` (the sensor is on the opposite side).

    Returns:
        (H, W) float32 linear sigma0 (intensity), > 0.
    """
    if look_direction not in LOOK_DIRECTIONS:
        raise ValueError(f"look_direction must be one of {list(LOOK_DIRECTIONS)}")
    if not 10.0 < incidence_deg < 70.0:
        raise ValueError(f"incidence_deg must be in (10, 70) degrees, got {incidence_deg}")
    k = LOOK_DIRECTIONS[look_direction]
    db = _backscatter_db(scene, float(incidence_deg), rng)
    db, height, building = (np.rot90(a, k) for a in (db, scene.height_m, scene.labels == BUILDING))
    out = _beam_east_geometry(db, height, building, scene.pixel_size_m, float(incidence_deg))
    return np.ascontiguousarray(np.rot90(out, -k), dtype=np.float32)


def apply_speckle(
    sigma0: np.ndarray,
    looks: float | None,
    rng: np.random.Generator,
    output: str = "amplitude",
) -> np.ndarray:
    """Multiplicative fully developed speckle: intensity = sigma0 * Gamma(L, 1/L).

    Args:
        sigma0: (H, W) linear backscatter (intensity), NaN where invalid.
        looks: equivalent number of looks L (>= 1), or None for no speckle.
        rng: random generator.
        output: ``"amplitude"`` (sqrt of intensity), ``"intensity"`` or ``"db"`` (10 log10 I).

    Returns:
        (H, W) float32 in the requested unit.
    """
    if output not in SAR_OUTPUTS:
        raise ValueError(f"output must be one of {SAR_OUTPUTS}, not {output!r}")
    intensity = np.asarray(sigma0, dtype=np.float64)
    if looks is not None:
        if not looks >= 1:
            raise ValueError(f"looks must be >= 1 (or None for no speckle), got {looks}")
        intensity = intensity * rng.gamma(looks, 1.0 / looks, intensity.shape)
    if output == "amplitude":
        return np.sqrt(intensity).astype(np.float32)
    if output == "db":
        return (10.0 * np.log10(np.maximum(intensity, 1e-10))).astype(np.float32)
    return intensity.astype(np.float32)


def render_sar(
    scene: Scene,
    rng: np.random.Generator,
    looks: float | None = 4.0,
    incidence_deg: float = 35.0,
    look_direction: str = "east",
    output: str = "amplitude",
) -> np.ndarray:
    """Speckled SAR image of ``scene`` on its own grid (see :func:`render_sigma0`).

    Returns:
        (H, W) float32 amplitude (default), intensity or dB.
    """
    sigma0 = render_sigma0(scene, rng, incidence_deg, look_direction)
    return apply_speckle(sigma0, looks, rng, output)


def _as_points(xy: np.ndarray) -> np.ndarray:
    """(N, 2) float64 view of ``xy``; raises ValueError for any other shape."""
    pts = np.asarray(xy, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be an (N, 2) array of (x, y) pixels, got shape {pts.shape}")
    return pts


@dataclass
class PolyMap:
    """2-D polynomial map (x, y) -> (x', y') of total degree ``degree`` in normalised coords.

    Attributes:
        centre: (2,) normalisation centre (x, y).
        scale: normalisation scale; u = (x - cx) / scale.
        coef: (2, T) coefficients of the terms u**i * v**j, i + j <= degree, ordered by i then j.
        degree: total degree.
    """

    centre: np.ndarray
    scale: float
    coef: np.ndarray
    degree: int

    def _terms(self, xy: np.ndarray) -> np.ndarray:
        u, v = ((xy - self.centre) / self.scale).T
        d = self.degree
        return np.stack([u**i * v**j for i in range(d + 1) for j in range(d + 1 - i)], axis=1)

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        """Map (N, 2) points; returns (N, 2) float64."""
        u, v = ((_as_points(xy) - self.centre) / self.scale).T
        out = np.zeros((u.size, 2))
        t = 0
        for i in range(self.degree + 1):  # term by term: (N, T) @ (T, 2) is slow for small T
            for j in range(self.degree + 1 - i):
                term = u**i * v**j
                out[:, 0] += self.coef[0, t] * term
                out[:, 1] += self.coef[1, t] * term
                t += 1
        return out

    @classmethod
    def fit(cls, src: np.ndarray, dst: np.ndarray, degree: int, centre: np.ndarray, scale: float):
        """Least-squares fit of ``dst ~ poly(src)``; returns ``(PolyMap, max residual)``."""
        pm = cls(np.asarray(centre, float), float(scale), np.zeros((2, 1)), int(degree))
        coef, *_ = np.linalg.lstsq(pm._terms(src), dst, rcond=None)
        pm.coef = coef.T
        return pm, float(np.abs(pm(src) - dst).max())

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "centre": self.centre.tolist(),
            "scale": self.scale,
            "coef": self.coef.tolist(),
            "degree": self.degree,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolyMap:
        """Inverse of :meth:`to_dict`."""
        return cls(
            np.asarray(d["centre"], float), float(d["scale"]), np.asarray(d["coef"]), d["degree"]
        )


@dataclass
class Truth:
    """Ground truth between an optical file's pixel grid and a SAR file's pixel grid.

    A ground feature truly at optical pixel ``p`` is imaged by the SAR at SAR pixel
    ``s = nominal(p + m(p))``: ``nominal`` is the mapping implied by the two *stored*
    georeferences (geotransforms + CRS) and ``m(p) = shift + A (p - c) + Q(p - c)`` the
    misregistration, in optical pixels: the stored SAR georeference puts the feature at
    ``p + m(p)`` instead of ``p``. Points are (N, 2) float64, (x, y) pixels (``core``
    convention: pixel centres at +0.5).

    Attributes:
        optical_gt: GDAL geotransform of the optical file.
        optical_epsg: EPSG code of the optical CRS.
        optical_shape: (rows, cols) of the optical image.
        sar_gt: GDAL geotransform stored in the SAR file (deliberately wrong by ``m``).
        sar_epsg: EPSG code of the SAR file's CRS.
        sar_shape: (rows, cols) of the SAR image.
        nominal: optical px -> SAR px through the stored georeferences (exactly affine for one
            CRS; a cubic fit of the PROJ transform otherwise, max error ``nominal_error_px``).
        nominal_inverse: SAR px -> optical px, the inverse fit.
        shift_px: (2,) constant part of ``m``.
        affine: (2, 2) linear part of ``m`` per optical pixel from ``centre_px``.
        quadratic_px: (2, 3) coefficients of (u^2, u v, v^2), u, v = (p - c) / (size / 2).
        centre_px: (2,) centre c of the misregistration model.
        nominal_error_px: residual of the nominal fit.
        meta: free-form provenance (seed, incidence, encodings, ...).
    """

    optical_gt: tuple[float, ...]
    optical_epsg: int
    optical_shape: tuple[int, int]
    sar_gt: tuple[float, ...]
    sar_epsg: int
    sar_shape: tuple[int, int]
    nominal: PolyMap
    nominal_inverse: PolyMap
    shift_px: np.ndarray
    affine: np.ndarray
    quadratic_px: np.ndarray
    centre_px: np.ndarray
    nominal_error_px: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def misregistration_at(self, optical_xy_px: np.ndarray) -> np.ndarray:
        """Where the stored SAR georeference puts a feature minus where it is, optical px (N, 2)."""
        pts = _as_points(optical_xy_px)
        dx, dy = pts[:, 0] - self.centre_px[0], pts[:, 1] - self.centre_px[1]
        u, v = dx / (0.5 * self.optical_shape[1]), dy / (0.5 * self.optical_shape[0])
        uu, uv, vv = u * u, u * v, v * v
        out = np.empty_like(pts)
        for k in range(2):  # component-wise: much faster than small matrix products
            a, q = self.affine[k], self.quadratic_px[k]
            out[:, k] = self.shift_px[k] + a[0] * dx + a[1] * dy + q[0] * uu + q[1] * uv + q[2] * vv
        return out

    def optical_px_to_sar_px(self, xy: np.ndarray) -> np.ndarray:
        """True SAR pixel (N, 2) of the ground point at optical pixel ``xy`` (N, 2)."""
        pts = _as_points(xy)
        return self.nominal(pts + self.misregistration_at(pts))

    def sar_px_to_optical_px(self, xy: np.ndarray, tol_px: float = 1e-9) -> np.ndarray:
        """True optical pixel (N, 2) of SAR pixel ``xy`` (N, 2): Newton on the forward map."""
        s = _as_points(xy)
        q = self.nominal_inverse(s)
        p = q - self.misregistration_at(q)
        eps = 1e-3
        for _ in range(30):
            f = self.optical_px_to_sar_px(p) - s
            jx = (self.optical_px_to_sar_px(p + [eps, 0]) - f - s) / eps
            jy = (self.optical_px_to_sar_px(p + [0, eps]) - f - s) / eps
            det = jx[:, 0] * jy[:, 1] - jy[:, 0] * jx[:, 1]
            step = np.stack(
                [(jy[:, 1] * f[:, 0] - jy[:, 0] * f[:, 1]) / det,
                 (jx[:, 0] * f[:, 1] - jx[:, 1] * f[:, 0]) / det],
                axis=1,
            )  # fmt: skip
            p = p - step
            if not np.isfinite(step).all() or np.abs(step).max(initial=0.0) < tol_px:
                break
        return p

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (see :meth:`from_dict`)."""
        out: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            if isinstance(value, PolyMap):
                out[name] = value.to_dict()
            elif isinstance(value, np.ndarray):
                out[name] = value.tolist()
            else:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Truth:
        """Inverse of :meth:`to_dict`."""
        return cls(
            optical_gt=tuple(d["optical_gt"]),
            optical_epsg=int(d["optical_epsg"]),
            optical_shape=tuple(d["optical_shape"]),
            sar_gt=tuple(d["sar_gt"]),
            sar_epsg=int(d["sar_epsg"]),
            sar_shape=tuple(d["sar_shape"]),
            nominal=PolyMap.from_dict(d["nominal"]),
            nominal_inverse=PolyMap.from_dict(d["nominal_inverse"]),
            shift_px=np.asarray(d["shift_px"], float),
            affine=np.asarray(d["affine"], float),
            quadratic_px=np.asarray(d["quadratic_px"], float),
            centre_px=np.asarray(d["centre_px"], float),
            nominal_error_px=float(d.get("nominal_error_px", 0.0)),
            meta=dict(d.get("meta", {})),
        )

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Truth:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def summary(self) -> str:
        """One line: misregistration at the centre and its range over the optical corners."""
        h, w = self.optical_shape
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], float)
        m = self.misregistration_at(np.vstack([[[w / 2, h / 2]], corners]))
        return (
            f"SAR misregistration at the optical centre: dx={m[0, 0]:+.2f} dy={m[0, 1]:+.2f} px; "
            f"at the corners up to {np.abs(m[1:]).max():.2f} px; SAR EPSG:{self.sar_epsg} "
            f"{self.sar_shape[1]}x{self.sar_shape[0]} px of {abs(self.sar_gt[1]):.3f} units"
        )


CrsTransform = Callable[[np.ndarray], np.ndarray]


@dataclass
class SyntheticPair:
    """An optical image and a mis-georeferenced SAR image of one synthetic scene.

    Attributes:
        optical: (H, W, 3) float32 reflectance RGB on the optical grid.
        sar: (Hs, Ws) float32 SAR on its own grid, unit ``sar_output``; NaN where no data.
        sar_sigma0: (Hs, Ws) float32 noise-free linear sigma0 on the SAR grid.
        sigma0_optical_grid: (H, W) float32 noise-free sigma0 on the optical grid: the SAR a
            perfectly registered sensor with the optical pixel size would see (a reference).
        truth: grids, georeferences and the true mapping between them.
        scene: the rendered world, larger than the optical image by ``world_offset_px``.
        world_offset_px: optical pixel (0, 0) is world pixel (offset, offset).
        sar_output: ``"amplitude"``, ``"intensity"`` or ``"db"``.
    """

    optical: np.ndarray
    sar: np.ndarray
    sar_sigma0: np.ndarray
    sigma0_optical_grid: np.ndarray
    truth: Truth
    scene: Scene
    world_offset_px: int
    sar_output: str = "amplitude"

    def _crop(self, a: np.ndarray) -> np.ndarray:
        o, (h, w) = self.world_offset_px, self.optical.shape[:2]
        return a[o : o + h, o : o + w]

    @property
    def labels(self) -> np.ndarray:
        """(H, W) uint8 land-cover labels on the optical grid."""
        return self._crop(self.scene.labels)

    @property
    def height_m(self) -> np.ndarray:
        """(H, W) float32 object heights on the optical grid."""
        return self._crop(self.scene.height_m)


def warp_sar_to_optical(sar: np.ndarray, truth: Truth, order: int = 1) -> np.ndarray:
    """Resample a SAR image onto the optical grid through the TRUE mapping.

    Args:
        sar: (Hs, Ws) image on the SAR file's grid.
        truth: the pair's ground truth.
        order: spline order of the interpolation (0 nearest, 1 bilinear).

    Returns:
        (H, W) float32 on the optical grid; NaN outside the SAR image.
    """
    if sar.shape != tuple(truth.sar_shape):
        raise ValueError(f"sar shape {sar.shape} differs from the truth's {truth.sar_shape}")
    h, w = truth.optical_shape
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    s = truth.optical_px_to_sar_px(np.stack([cols.ravel(), rows.ravel()], axis=1)) - 0.5
    out = ndimage.map_coordinates(
        np.asarray(sar, np.float64), [s[:, 1], s[:, 0]], order=order, cval=np.nan
    )
    return out.reshape(h, w).astype(np.float32)


def _draw_misregistration(
    size: int, rng: np.random.Generator, max_shift: float, max_affine: float, polynomial: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Random (shift, affine, quadratic) misregistration and a bound of its magnitude (px)."""
    shift = rng.uniform(-max_shift, max_shift, 2)
    affine = rng.uniform(-max_affine, max_affine, (2, 2))
    quad = rng.uniform(-1.0, 1.0, (2, 3)) * polynomial / 3.0
    bound = float(np.hypot(*shift) + 2 * max_affine * size + 1.5 * polynomial)
    return shift, affine, quad, bound


def _sar_grid(
    size: int,
    optical_gt: tuple[float, ...],
    margin: float,
    ratio: float,
    to_sar: CrsTransform | None,
) -> tuple[tuple[float, ...], tuple[int, int], PolyMap, PolyMap, float]:
    """Stored SAR grid covering the optical footprint + margin, and the nominal maps."""
    px = optical_gt[1]

    def opt_map(p: np.ndarray) -> np.ndarray:
        xy = np.stack([optical_gt[0] + p[:, 0] * px, optical_gt[3] + p[:, 1] * optical_gt[5]], 1)
        return xy if to_sar is None else np.asarray(to_sar(xy), float)

    c = np.array([[size / 2, size / 2], [size / 2 + 1, size / 2], [size / 2, size / 2 + 1]])
    e = opt_map(c)
    scale = 0.5 * (np.hypot(*(e[1] - e[0])) + np.hypot(*(e[2] - e[0]))) / px
    ps = px * ratio * scale  # the SAR pixel's ground size is ratio x the optical one
    t = np.linspace(-margin, size + margin, 33)
    edge = np.concatenate([np.stack([t, np.full_like(t, b)], 1) for b in (-margin, size + margin)])
    edge = opt_map(np.concatenate([edge, edge[:, ::-1]]))
    x0, y0 = np.floor(edge[:, 0].min() / ps) * ps, np.ceil(edge[:, 1].max() / ps) * ps
    shape = (int(np.ceil((y0 - edge[:, 1].min()) / ps)), int(np.ceil((edge[:, 0].max() - x0) / ps)))
    sar_gt = (float(x0), float(ps), 0.0, float(y0), 0.0, -float(ps))
    g = np.linspace(-2 * margin, size + 2 * margin, 17)
    p = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    m = opt_map(p)
    s = np.stack([(m[:, 0] - x0) / ps, (y0 - m[:, 1]) / ps], 1)
    degree = 1 if to_sar is None else 3
    nominal, err = PolyMap.fit(p, s, degree, np.array([size / 2] * 2), size / 2)
    centre = np.array(shape[::-1], float) / 2
    inverse, err_inv = PolyMap.fit(s, p, degree, centre, float(max(shape)) / 2)
    return sar_gt, shape, nominal, inverse, max(err, err_inv / ratio)


def make_pair(
    size_px: int,
    rng: np.random.Generator,
    *,
    pixel_size_m: float = 10.0,
    max_shift_px: float = 20.0,
    max_affine: float = 0.02,
    polynomial: float = 0.0,
    sar_pixel_size_ratio: float = 1.0,
    optical_epsg: int = 32633,
    sar_crs_epsg: int | None = None,
    crs_transform: CrsTransform | None = None,
    optical_origin_map: tuple[float, float] | None = None,
    looks: float | None = 4.0,
    incidence_deg: float = 35.0,
    look_direction: str = "east",
    sar_output: str = "amplitude",
) -> SyntheticPair:
    """An optical image and a SAR image of one scene, with a known wrong SAR georeference.

    Args:
        size_px: side of the square optical image (>= 16).
        rng: random generator; the same seed gives identical pairs.
        pixel_size_m: optical ground sampling distance (m).
        max_shift_px: misregistration shift drawn uniformly in [-max, max] per axis, optical px.
        max_affine: affine misregistration entries drawn in [-max, max] (0.02: 2 % scale/shear).
        polynomial: max extra quadratic misregistration at the image corners, optical px.
        sar_pixel_size_ratio: SAR pixel size / optical pixel size (>= 0.5).
        optical_epsg: optical CRS (a metric projected CRS; default UTM 33N).
        sar_crs_epsg: SAR CRS; None for the optical one. Another CRS needs ``crs_transform``
            (``sar_optical_matcher.synthetic.make_georeferenced_pair`` supplies it with GDAL).
        crs_transform: (N, 2) optical-CRS map coords -> (N, 2) SAR-CRS map coords (x, y order).
        optical_origin_map: map (x, y) of the optical top-left corner; random in UTM 33N if None.
        looks: equivalent number of looks of the speckle, None for a noise-free SAR.
        incidence_deg: incidence angle (deg).
        look_direction: beam direction on the ground (see module docstring).
        sar_output: ``"amplitude"``, ``"intensity"`` or ``"db"``.

    Returns:
        The :class:`SyntheticPair`.
    """
    whole = isinstance(size_px, (int, float, np.integer, np.floating)) and not isinstance(
        size_px, bool
    )
    if not (whole and math.isfinite(size_px) and int(size_px) == size_px) or not (
        16 <= size_px <= 65536
    ):
        raise ValueError(f"size_px must be a whole number in 16..65536, got {size_px!r}")
    if not (math.isfinite(pixel_size_m) and pixel_size_m > 0):
        raise ValueError(f"pixel_size_m must be a positive number of metres, got {pixel_size_m}")
    if not (math.isfinite(sar_pixel_size_ratio) and 0.5 <= sar_pixel_size_ratio <= 20):
        raise ValueError(f"sar_pixel_size_ratio must be in 0.5..20, got {sar_pixel_size_ratio}")
    if not all(math.isfinite(v) for v in (max_shift_px, max_affine, polynomial)):
        raise ValueError("max_shift_px, max_affine and polynomial must be finite numbers")
    if min(max_shift_px, max_affine, polynomial) < 0 or max_affine > 0.2:
        raise ValueError("need max_shift_px >= 0, 0 <= max_affine <= 0.2 and polynomial >= 0")
    sar_epsg = optical_epsg if sar_crs_epsg is None else int(sar_crs_epsg)
    if sar_epsg != optical_epsg and crs_transform is None:
        raise ValueError(
            f"SAR CRS EPSG:{sar_epsg} differs from the optical EPSG:{optical_epsg}: pass "
            "crs_transform, or use sar_optical_matcher.synthetic.make_georeferenced_pair"
        )
    size, px = int(size_px), float(pixel_size_m)
    shift, affine, quad, bound = _draw_misregistration(
        size, rng, max_shift_px, max_affine, polynomial
    )
    if optical_origin_map is None:
        optical_origin_map = (
            round(rng.uniform(300e3, 700e3) / px) * px,
            round(rng.uniform(4.6e6, 5.6e6) / px) * px,
        )
    optical_gt = (float(optical_origin_map[0]), px, 0.0, float(optical_origin_map[1]), 0.0, -px)
    margin = float(np.ceil(bound + 8.0))
    to_sar = None if sar_epsg == optical_epsg else crs_transform
    sar_gt, sar_shape, nominal, inverse, err = _sar_grid(
        size, optical_gt, margin, sar_pixel_size_ratio, to_sar
    )
    truth = Truth(
        optical_gt, int(optical_epsg), (size, size), sar_gt, sar_epsg, sar_shape, nominal,
        inverse, shift, affine, quad, np.array([size / 2.0, size / 2.0]), err,
        {"pixel_size_m": px, "incidence_deg": incidence_deg, "look_direction": look_direction,
         "looks": looks, "sar_output": sar_output, "sar_pixel_size_ratio": sar_pixel_size_ratio},
    )  # fmt: skip
    offset = int(np.ceil(margin + bound + 2 * sar_pixel_size_ratio + 4))
    scene = render_scene(size + 2 * offset, rng, px)
    sigma0 = render_sigma0(scene, rng, incidence_deg, look_direction).astype(np.float64)
    reference = sigma0[offset : offset + size, offset : offset + size].astype(np.float32)
    if sar_pixel_size_ratio > 1:  # a SAR pixel integrates the ground it covers
        sigma0 = ndimage.gaussian_filter(sigma0, np.sqrt((sar_pixel_size_ratio**2 - 1) / 12))
    cols, rows = np.meshgrid(np.arange(sar_shape[1]) + 0.5, np.arange(sar_shape[0]) + 0.5)
    p = truth.sar_px_to_optical_px(np.stack([cols.ravel(), rows.ravel()], 1)) + offset - 0.5
    sar_sigma0 = ndimage.map_coordinates(sigma0, [p[:, 1], p[:, 0]], order=1, cval=np.nan)
    sar_sigma0 = sar_sigma0.reshape(sar_shape).astype(np.float32)
    sar = apply_speckle(sar_sigma0, looks, rng, sar_output)
    optical = scene.optical[offset : offset + size, offset : offset + size].copy()
    return SyntheticPair(optical, sar, sar_sigma0, reference, truth, scene, offset, sar_output)
