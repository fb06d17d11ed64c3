"""Co-registered SAR/optical pair records: the one input format of the trainer and evaluation.

Loaders for each source (:func:`load_synthetic`, :func:`load_3mos`, :func:`load_sen12`,
:func:`load_gdal_pair`) return lists of :class:`PairRecord`; :func:`split_by_scene` splits them
without ever splitting a scene. numpy only (no torch); PIL and GDAL are imported by the loaders
that need them.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Known x bias of the 3MOS GF-3 tiles (README of the 3MOS sample: "GF-3 tiles seem to carry a
#: ~2 px x bias"), as ``PairRecord.offset_xy_px``; the sign is the README's, not re-measured.
GF3_OFFSET_XY_PX = (2.0, 0.0)
#: Rec. 601 luma weights: RGB -> one optical band.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass
class PairRecord:
    """One co-registered SAR/optical pair on a common pixel grid.

    Attributes:
        sar: (H, W) float32 raw SAR values (scale given by ``sar_scale``).
        optical: (H, W) float32 raw optical values, one band (RGB is reduced to luminance).
        sar_scale: ``"linear"`` (amplitude/intensity) or ``"db"`` (already logarithmic, or an
            8-bit display rendering), see ``core.preprocessing``.
        scene: split key; pairs of one scene/region always fall into the same split.
        sensor: SAR sensor name (e.g. ``"SEN"``, ``"GF3"``, ``"synthetic"``).
        source: ``"synthetic"``, ``"3mos"``, ``"sen12"`` or ``"gdal"``.
        name: unique, human-readable identifier.
        valid: optional (H, W) bool mask of pixels valid in both images.
        offset_xy_px: known residual misregistration (x, y) of the SAR relative to the optical in
            pixels (e.g. the GF-3 x bias of 3MOS), (0, 0) when perfectly registered.
        repeat: times the pairs cut from this record are drawn per training epoch (the source
            spec's ``repeat``, e.g. to weight scarce real tiles over synthetic scenes).
        grid_scale: the record's pixel in pixels of the optical raster it was read from: 1 but
            for a gdal pair matched on a coarser grid (e.g. 2.0 for a SAR pixel twice the
            optical's); ``offset_xy_px`` and every error measured on the record are in record
            pixels, a shift in optical pixels is ``shift / grid_scale`` of them.
    """

    sar: np.ndarray
    optical: np.ndarray
    sar_scale: str
    scene: str
    sensor: str
    source: str
    name: str
    valid: np.ndarray | None = None
    offset_xy_px: tuple[float, float] = (0.0, 0.0)
    repeat: int = 1
    grid_scale: float = 1.0

    def __post_init__(self) -> None:
        """Check shapes and the scale."""
        if self.sar.ndim != 2 or self.sar.shape != self.optical.shape:
            raise ValueError(
                f"{self.name}: SAR {self.sar.shape} and optical {self.optical.shape} must be "
                "2-D and equally shaped"
            )
        if self.sar_scale not in ("linear", "db"):
            raise ValueError(f"{self.name}: sar_scale must be 'linear' or 'db'")
        if self.valid is not None and self.valid.shape != self.sar.shape:
            raise ValueError(f"{self.name}: valid mask shape differs from the images")
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, int) or self.repeat < 1:
            raise ValueError(f"{self.name}: repeat must be an integer >= 1, got {self.repeat!r}")
        if not (np.isfinite(self.grid_scale) and self.grid_scale > 0):
            raise ValueError(f"{self.name}: grid_scale must be > 0, got {self.grid_scale!r}")


def luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB (any dtype, raw values) -> (H, W) float32 Rec. 601 luma; 2-D passes through."""
    a = np.asarray(rgb, dtype=np.float32)
    if a.ndim == 2:
        return a
    if a.ndim != 3 or a.shape[2] < 3:
        raise ValueError(f"expected (H, W) or (H, W, >=3) image, got shape {a.shape}")
    return (a[..., :3] @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)).astype(np.float32)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


_3MOS_PREFIX = "3mos/"


def tile_key(record_name: str) -> str:
    """The ``tile_offsets_px`` key ``"<scene>/<k>"`` of a record name ``"3mos/<scene>/<k>"``.

    A record of another source keeps its name.
    """
    return record_name.removeprefix(_3MOS_PREFIX)


def load_3mos(
    root: str | Path = "../shared/data/3mos",
    sensors: Sequence[str] | None = None,
    scenes: Sequence[str] | None = None,
    offsets_px: dict[str, Sequence[float]] | None = None,
    tile_offsets_px: dict[str, Sequence[float]] | None = None,
) -> list[PairRecord]:
    """The 3MOS tile pairs: ``<SENSOR>_<scene>/<k>_optical.png`` + ``<k>_sar.png``.

    Optical RGB uint8 becomes luminance (float32, 0-255); the SAR is an 8-bit display rendering
    (``sar_scale="db"``). Scene key = folder name (e.g. ``"SEN_city"``), sensor = its prefix.
    GF-3 pairs carry :data:`GF3_OFFSET_XY_PX`, other pairs (0, 0), unless ``offsets_px`` names
    their scene.

    Args:
        root: folder holding the ``<SENSOR>_<scene>`` folders.
        sensors: keep only these sensors (e.g. ``["SEN", "GF3"]``); None for all.
        scenes: keep only these scene folders (e.g. ``["SEN_city"]``); None for all.
        offsets_px: ``{scene: (x, y)}``, the residual misregistration (``offset_xy_px``) of
            the named scenes, e.g. measured by ``scripts/measure_offsets.py``; replaces the
            default of those scenes.
        tile_offsets_px: ``{"<scene>/<k>": (x, y)}``, the same for single tiles (e.g. measured
            by ``scripts/measure_offsets.py --per-tile``); replaces the scene's offset for the
            named tiles.

    Returns:
        Records sorted by scene, then tile number.

    Raises:
        ValueError: ``root`` is missing or holds no tile pairs, a filter or offset names a
            sensor, scene or tile that is not there, or a tile file has no tile number.
    """
    base = Path(root)
    if not base.is_dir():
        raise ValueError(
            f"3MOS folder {base} not found (looked in {base.resolve()}: a relative root is "
            "taken from the working folder); run from the repository root or set the source's "
            "root to the folder holding <SENSOR>_<scene>/"
        )
    folders = _3mos_folders(base, sensors, scenes)
    measured = {k: (float(v[0]), float(v[1])) for k, v in (offsets_px or {}).items()}
    unknown = set(measured) - {d.name for d in base.iterdir() if d.is_dir()}
    if unknown:
        raise ValueError(f"3MOS offsets_px names scenes {sorted(unknown)} that are not in {base}")
    per_tile = {k: (float(v[0]), float(v[1])) for k, v in (tile_offsets_px or {}).items()}
    found: set[str] = set()
    records = []
    for folder in folders:
        sensor = folder.name.split("_", 1)[0]
        for opt_path in _3mos_tiles(folder):
            k = opt_path.name.split("_")[0]
            sar_path = folder / f"{k}_sar.png"
            if not sar_path.is_file():
                warnings.warn(f"3MOS: {sar_path} missing, pair skipped", stacklevel=2)
                continue
            tile = f"{folder.name}/{k}"
            offset = measured.get(folder.name, GF3_OFFSET_XY_PX if sensor == "GF3" else (0.0, 0.0))
            if tile in per_tile:
                found.add(tile)
                offset = per_tile[tile]
            records.append(
                PairRecord(
                    sar=luminance(_read_png(sar_path)),
                    optical=luminance(_read_png(opt_path)),
                    sar_scale="db",
                    scene=folder.name,
                    sensor=sensor,
                    source="3mos",
                    name=f"{_3MOS_PREFIX}{tile}",
                    offset_xy_px=offset,
                )
            )
    if not records:
        raise ValueError(
            f"no 3MOS tile pairs under {base}: expected <SENSOR>_<scene>/<k>_optical.png with "
            "<k>_sar.png (e.g. SEN_city/0_optical.png); check root= and the sensors/scenes filters"
        )
    missing_tiles = set(per_tile) - found
    if missing_tiles:
        raise ValueError(
            f"3MOS tile_offsets_px names tiles {sorted(missing_tiles)} that were not loaded from "
            f"{base} (keys are '<scene>/<k>', e.g. 'GF3_plain/3', and the scene must be selected)"
        )
    return records


def _3mos_folders(
    base: Path, sensors: Sequence[str] | None, scenes: Sequence[str] | None
) -> list[Path]:
    """The ``<SENSOR>_<scene>`` folders of ``base`` that the filters keep (each must match)."""
    folders = every = sorted(d for d in base.iterdir() if d.is_dir() and "_" in d.name)
    if scenes is not None:
        missing = set(scenes) - {d.name for d in folders}
        if missing:
            raise ValueError(
                f"3MOS scenes {sorted(missing)} not in {base}; have {[d.name for d in folders]}"
            )
        folders = [d for d in folders if d.name in set(scenes)]
    if sensors is not None:
        have = sorted({d.name.split("_", 1)[0] for d in every})
        if set(sensors) - set(have):
            raise ValueError(
                f"3MOS sensors {sorted(set(sensors) - set(have))} not in {base}; have {have}"
            )
        folders = [d for d in folders if d.name.split("_", 1)[0] in set(sensors)]
    return folders


def _3mos_tiles(folder: Path) -> list[Path]:
    """The ``<k>_optical.png`` files of a 3MOS scene folder, by tile number ``k``."""
    tiles = sorted(folder.glob("*_optical.png"))
    odd = [p.name for p in tiles if not p.name.split("_")[0].isdigit()]
    if odd:
        raise ValueError(
            f"3MOS: {folder} holds {odd}, not named <k>_optical.png with a tile number k; "
            "rename or remove them"
        )
    return sorted(tiles, key=lambda p: int(p.name.split("_")[0]))


_SEN12_S1 = re.compile(r"^(?P<roi>ROIs\d+_[a-z]+)_s1_(?P<scene>\d+)_p(?P<patch>\d+)\.png$")


def load_sen12(root: str | Path, scenes: Sequence[str] | None = None) -> list[PairRecord]:
    """SEN1-2 patches: ``ROIs*/s1_<n>/<ROI>_<season>_s1_<n>_p<k>.png`` + the ``s2_<n>`` twin.

    Scene key = ROI + season + scene number (``"ROIs1158_spring_1"``): patches of one scene
    always fall into one split. SAR is 8-bit dB-scaled (``sar_scale="db"``); the optical RGB
    becomes luminance. Pairs without an optical twin are skipped with a warning.

    Args:
        root: the SEN1-2 root holding the ``ROIs*`` season folders.
        scenes: keep only these: scene keys (``"ROIs1158_spring_1"``) or whole season folders
            (``"ROIs1158_spring"``); None for all.

    Returns:
        Records sorted by path.

    Raises:
        ValueError: ``root`` is missing or holds no patch pairs, or ``scenes`` names a scene or
            season folder that is not there (the available ones are listed).
    """
    base = Path(root)
    if not base.is_dir():
        raise ValueError(f"SEN1-2 folder {base} not found: pass the folder holding ROIs*/")
    patches = [
        (p, m) for p in sorted(base.glob("ROIs*/s1_*/*.png")) if (m := _SEN12_S1.match(p.name))
    ]
    if scenes is not None:
        patches = _sen12_selected(base, patches, scenes)
    records, skipped = [], 0
    for s1_path, m in patches:
        s2_name = f"{m['roi']}_s2_{m['scene']}_p{m['patch']}.png"
        s2_path = s1_path.parent.parent / f"s2_{m['scene']}" / s2_name
        if not s2_path.is_file():
            skipped += 1
            continue
        records.append(
            PairRecord(
                sar=luminance(_read_png(s1_path)),
                optical=luminance(_read_png(s2_path)),
                sar_scale="db",
                scene=f"{m['roi']}_{m['scene']}",
                sensor="S1",
                source="sen12",
                name=f"sen12/{s1_path.stem}",
            )
        )
    if skipped:
        warnings.warn(f"SEN1-2: {skipped} s1 patches without an s2 twin skipped", stacklevel=2)
    if not records:
        chosen = "" if scenes is None else f" of scenes {list(scenes)}"
        raise ValueError(
            f"no SEN1-2 patch pairs{chosen} under {base}: expected ROIs*/s1_<n>/<ROI>_<season>"
            "_s1_<n>_p<k>.png with its twin in ROIs*/s2_<n>/; pass the folder holding ROIs*/"
        )
    return records


def _sen12_selected(
    base: Path, patches: list[tuple[Path, re.Match[str]]], scenes: Sequence[str]
) -> list[tuple[Path, re.Match[str]]]:
    """The ``(s1 path, name match)`` of ``patches`` in ``scenes`` (scene keys or seasons).

    Checked on the file names alone, before any image is read.
    """
    if isinstance(scenes, str) or not scenes:
        raise ValueError(
            f"SEN1-2 scenes must be a non-empty list of names (e.g. ['ROIs1158_spring_1']), "
            f"got {scenes!r}; leave it out for every scene"
        )
    keys = {f"{m['roi']}_{m['scene']}": m["roi"] for _, m in patches}
    unknown = sorted(set(scenes) - set(keys) - set(keys.values()))
    if unknown:
        seasons = sorted(set(keys.values()))
        have = sorted(keys)
        shown = ", ".join(have[:20]) + (f", ... ({len(have)} in all)" if len(have) > 20 else "")
        raise ValueError(
            f"SEN1-2 scenes {unknown} not in {base}; have the season folders {seasons} and "
            f"the scenes {shown}"
        )
    wanted = set(scenes)
    return [(p, m) for p, m in patches if {f"{m['roi']}_{m['scene']}", m["roi"]} & wanted]


def _optical_bands(band: int | None, band_count: int) -> list[int]:
    """The optical bands read: ``band``, or bands 1-3 (luminance) if there are 3, else band 1."""
    return [band] if band is not None else ([1, 2, 3] if band_count >= 3 else [1])


def _read_optical(
    ds: Any, info: Any, bands: Sequence[int], grid: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The optical image of ``bands`` on ``grid`` (luminance when they are 3) + its valid mask.

    ``grid`` is ``info`` itself (read as stored) or a coarser grid (``rasters.scaled_grid``),
    which every band is averaged onto by ``rasters.read_on_grid``, as the plugin reads its
    templates. Bands are checked by the caller.
    """
    from sar_optical_matcher import rasters

    stack, valid = [], np.ones((grid.height, grid.width), dtype=bool)
    for b in bands:
        if grid is info:
            a = ds.GetRasterBand(b).ReadAsArray().astype(np.float32)
            nodata = info.nodata[b - 1]
            ok = np.isfinite(a) & (True if nodata is None or np.isnan(nodata) else a != nodata)
        else:
            a, ok = rasters.read_on_grid(info, b, grid, 0, 0, grid.width, grid.height,
                                         "average")  # fmt: skip
        valid &= ok
        stack.append(a)
    return luminance(np.stack(stack, axis=-1)) if len(stack) == 3 else stack[0], valid


#: Optical pixels -> true SAR pixels, (N, 2) (x, y) each, pixel centres at +0.5.
PixelMap = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PairTruth:
    """A ground-truth transform between a gdal pair's pixel grids (:func:`read_pair_truth`).

    Attributes:
        optical_px_to_sar_px: where the SAR truly images the ground point at each optical
            pixel ((N, 2) -> (N, 2), pixel centres at +0.5).
        path: the file it was read from.
        kind: ``"affine"`` or ``"synthetic"`` (``make_synthetic_pair.py``'s truth file).
        optical_shape: (rows, cols) the truth was made for, or None (an affine says nothing).
        sar_shape: (rows, cols) likewise.
        optical_gt: the optical geotransform it was made for, or None.
        sar_gt: the SAR geotransform likewise.
    """

    optical_px_to_sar_px: PixelMap
    path: str
    kind: str
    optical_shape: tuple[int, int] | None = None
    sar_shape: tuple[int, int] | None = None
    optical_gt: tuple[float, ...] | None = None
    sar_gt: tuple[float, ...] | None = None

    def check_pair(self, optical: Any, sar: Any) -> None:
        """Raise ValueError unless the truth was made for these rasters (RasterInfo)."""
        for role, info, shape, gt in (
            ("optical", optical, self.optical_shape, self.optical_gt),
            ("SAR", sar, self.sar_shape, self.sar_gt),
        ):
            if shape is not None and tuple(shape) != (info.height, info.width):
                raise ValueError(
                    f"truth {self.path} is for a {shape[0]}x{shape[1]} px {role} raster, and "
                    f"{info.path} is {info.height}x{info.width} px: it belongs to another pair"
                )
            if gt is not None and not np.allclose(gt, info.geotransform, rtol=1e-9, atol=1e-9):
                raise ValueError(
                    f"truth {self.path} was made for the {role} geotransform {tuple(gt)}, and "
                    f"{info.path} has {tuple(info.geotransform)}: it belongs to another pair "
                    "(or the raster was resampled since)"
                )


def read_pair_truth(path: str | Path) -> PairTruth:
    """The ground-truth transform of a gdal pair from a JSON file.

    Two forms: the ``<stem>_truth.json`` that ``scripts/make_synthetic_pair.py`` writes
    (any misregistration it draws: shift, affine, quadratic; any two CRSs), and a plain
    affine ``{"optical_px_to_sar_px": [[a, b, c], [d, e, f]]}``: the ground point at optical
    pixel (x, y) is at SAR pixel (a x + b y + c, d x + e y + f), pixel centres at +0.5 (a
    corner-based affine from another tool: add 0.5 to x and y before, take 0.5 after).

    Raises:
        ValueError: the file cannot be read, or holds neither form.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"truth {p}: cannot be read as JSON ({exc})") from None
    form = "give make_synthetic_pair.py's <stem>_truth.json or " + (
        '{"optical_px_to_sar_px": [[a, b, c], [d, e, f]]}'
    )
    if not isinstance(doc, dict):
        raise ValueError(f"truth {p}: not a JSON object; {form}")
    if "optical_px_to_sar_px" in doc:
        try:
            m = np.array(doc["optical_px_to_sar_px"], dtype=np.float64)
        except (TypeError, ValueError):
            m = np.zeros(0)
        if m.shape != (2, 3) or not np.isfinite(m).all():
            raise ValueError(f"truth {p}: optical_px_to_sar_px must be 2 rows of 3 numbers; {form}")
        if abs(np.linalg.det(m[:, :2])) < 1e-9:
            raise ValueError(f"truth {p}: optical_px_to_sar_px is singular (it folds the plane)")

        def affine(xy: np.ndarray) -> np.ndarray:
            pts = np.asarray(xy, np.float64).reshape(-1, 2)
            return pts @ m[:, :2].T + m[:, 2]

        return PairTruth(affine, str(p), "affine")
    if "nominal" in doc and "optical_shape" in doc:
        from sar_optical_matcher.core.synthetic import Truth

        try:
            t = Truth.from_dict(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"truth {p}: not a complete make_synthetic_pair truth ({exc})"
            ) from None
        return PairTruth(
            t.optical_px_to_sar_px, str(p), "synthetic",
            (int(t.optical_shape[0]), int(t.optical_shape[1])),
            (int(t.sar_shape[0]), int(t.sar_shape[1])), tuple(t.optical_gt), tuple(t.sar_gt),
        )  # fmt: skip
    raise ValueError(f"truth {p}: holds neither form; {form}")


#: Grid rows sampled through a truth at a time (bounds the sample arrays' memory).
TRUTH_ROWS = 128


def sample_through_truth(
    sar: Any, band: int, truth: PixelMap, grid: Any, grid_scale: float, looks: int
) -> np.ndarray:
    """The SAR band on ``grid`` sampled through ``truth`` instead of the georeferences.

    ``grid`` (a RasterInfo) is the optical grid or a coarser one of ``grid_scale`` optical
    pixels a pixel, same origin and axes (``rasters.scaled_grid``). Each grid pixel is the
    bilinear SAR value at its true position, or, with ``looks`` > 1 (a SAR much finer than
    the grid, which the plugin averages onto it), the mean of ``looks`` x ``looks`` such
    values spread over the pixel. NaN where any SAR pixel it leans on is not valid.
    """
    from scipy import ndimage

    from sar_optical_matcher import rasters

    data, _ = rasters.read_window(sar, band, 0, 0, sar.width, sar.height)
    out = np.empty((grid.height, grid.width), np.float32)
    sub = (np.arange(looks) + 0.5) / looks  # sample positions inside a grid pixel
    xs = (np.arange(grid.width)[:, None] + sub[None, :]).ravel() * grid_scale
    for top in range(0, grid.height, TRUTH_ROWS):
        rows = np.arange(top, min(top + TRUTH_ROWS, grid.height))
        ys = (rows[:, None] + sub[None, :]).ravel() * grid_scale
        yy, xx = np.meshgrid(ys, xs, indexing="ij")  # (rows * looks, width * looks)
        at = truth(np.column_stack([xx.ravel(), yy.ravel()]))
        with np.errstate(invalid="ignore"):
            v = ndimage.map_coordinates(
                data, [at[:, 1] - 0.5, at[:, 0] - 0.5], order=1, mode="constant", cval=np.nan
            )
        v = v.reshape(len(rows), looks, grid.width, looks).mean(axis=(1, 3))
        out[top : top + len(rows)] = v
    return out


def load_gdal_pair(
    optical: str | Path,
    sar: str | Path,
    optical_band: int | None = None,
    sar_band: int = 1,
    sar_scale: str = "auto",
    scene: str | None = None,
    sensor: str = "unknown",
    match_pixel_size: float = 0.0,
    truth: PairTruth | None = None,
) -> PairRecord:
    """A georeferenced raster pair, the SAR resampled onto the optical (matching) grid.

    The pair is as co-registered as its georeferences are: use it for data whose geocoding is
    trusted (or for evaluation against such data). The grid is the plugin's matching grid
    (``registration.matching_grid``): the optical grid, or, where the SAR pixel is more than
    1.5x the optical's, the optical grid with the SAR's pixel size, the optical averaged onto
    it; a much finer SAR is averaged onto the grid. The record's pixels are that grid's.

    Args:
        optical: optical raster path (any GDAL format with a CRS and geotransform).
        sar: SAR raster path (any CRS; reprojected by ``gdal.Warp``).
        optical_band: band to use; None: luminance of bands 1-3 if there are >= 3, else band 1.
        sar_band: SAR band (1-based).
        sar_scale: ``"auto"`` (8-bit or negative data: dB, else linear), ``"linear"``, ``"db"``.
        scene: split key; default the optical file's stem.
        sensor: SAR sensor name for the record.
        match_pixel_size: grid pixel size in optical map units (0: automatic, as above).
        truth: a ground-truth transform of the pair (:func:`read_pair_truth`): the SAR is
            sampled through it (:func:`sample_through_truth`) instead of through the two
            georeferences, so a known misregistration of any form is taken out and the record
            is co-registered exactly; its grid is still the one the georeferences give.

    Returns:
        One :class:`PairRecord` with ``valid`` = optical and SAR data (nodata/NaN excluded) and
        ``grid_scale`` = the grid's pixel in optical pixels (1 on the optical grid).
    """
    from sar_optical_matcher import rasters
    from sar_optical_matcher.core.preprocessing import resolve_sar_scale
    from sar_optical_matcher.registration import matching_grid

    for p in (optical, sar):
        if not Path(p).is_file() and not str(p).startswith("/vsi"):
            raise ValueError(f"raster {p} not found")
    # the plugin's checks and messages: georeference, CRS, band range, complex (SLC) bands
    opt_ds, opt_info = rasters.open_dataset(optical)
    sar_info = rasters.open_raster(sar, band=sar_band)
    optical_bands = _optical_bands(optical_band, opt_info.band_count)
    for b in optical_bands:
        opt_info.check_band(b, role="OPTICAL")
    grid = matching_grid(opt_info, sar_info, match_pixel_size)
    # the plugin's grid and reads: the optical grid, or the same origin and axes with the
    # coarser pixel (every optical band averaged onto it); the SAR resampled onto that grid
    target = opt_info if grid.scale == 1.0 else rasters.scaled_grid(opt_info, grid.scale)
    opt_values, opt_valid = _read_optical(opt_ds, opt_info, optical_bands, target)
    byte_data = sar_info.gdal_types[sar_band - 1] == "Byte"
    if truth is None:
        sar_values, _ = rasters.read_on_grid(
            sar_info, sar_band, target, 0, 0, target.width, target.height, grid.sar_resampling
        )
    else:
        truth.check_pair(opt_info, sar_info)
        ratio = grid.pixel_ratio / grid.scale if math.isfinite(grid.pixel_ratio) else 1.0
        looks = max(math.ceil(1.0 / ratio - 1e-9), 1) if grid.sar_resampling == "average" else 1
        sar_values = sample_through_truth(
            sar_info, sar_band, truth.optical_px_to_sar_px, target, grid.scale, looks
        )
    valid = opt_valid & np.isfinite(sar_values)
    scale = (
        "db"
        if byte_data and sar_scale == "auto"
        else resolve_sar_scale(sar_values[valid], sar_scale)
    )
    return PairRecord(
        sar=np.where(valid, sar_values, np.nan).astype(np.float32),
        optical=opt_values.astype(np.float32),
        sar_scale=scale,
        scene=scene if scene is not None else Path(optical).stem,
        sensor=sensor,
        source="gdal",
        name=f"gdal/{Path(optical).name}+{Path(sar).name}",
        valid=valid,
        grid_scale=float(grid.scale),
    )


def load_synthetic(n_scenes: int = 8, size_px: int = 512, seed: int = 0) -> list[PairRecord]:
    """Synthetic scenes (``core.synthetic``), SAR resampled onto the optical grid with the truth.

    Scene ``i`` comes from ``np.random.default_rng([seed, i])``: the same (seed, i) always gives
    the same scene, whatever ``n_scenes``. SAR is linear amplitude with 4-look speckle.

    Args:
        n_scenes: number of scenes (>= 1).
        size_px: side of each scene in pixels (>= 16).
        seed: base seed.

    Returns:
        Records with scene keys ``"synthetic-<i>"``.
    """
    from sar_optical_matcher.core.synthetic import make_pair, warp_sar_to_optical

    for name, value, low in (
        ("n_scenes", n_scenes, 1),
        ("size_px", size_px, 16),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"synthetic source: {name} must be an integer >= {low}, got {value!r}")
    records = []
    for i in range(int(n_scenes)):
        pair = make_pair(int(size_px), np.random.default_rng([seed, i]), max_shift_px=8.0)
        sar = warp_sar_to_optical(pair.sar, pair.truth)
        valid = np.isfinite(sar)
        records.append(
            PairRecord(
                sar=np.where(valid, sar, np.nan).astype(np.float32),
                optical=luminance(pair.optical),
                sar_scale="linear",
                scene=f"synthetic-{i}",
                sensor="synthetic",
                source="synthetic",
                name=f"synthetic/seed{seed}/{i}",
                valid=None if valid.all() else valid,
            )
        )
    return records


def split_by_scene(
    records: Sequence[PairRecord],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    holdout_scenes: Sequence[str] | None = None,
    validation_scenes: Sequence[str] | None = None,
) -> tuple[list[PairRecord], list[PairRecord], list[PairRecord]]:
    """(train, val, test) records; a scene is never split, holdout scenes always go to test.

    Scenes are shuffled with ``seed`` and handed one by one to the split furthest below its
    target share of *records*; a split with fraction 0 gets none. Deterministic.

    Args:
        records: the records (any order; kept within each split).
        fractions: (train, val, test) target shares, >= 0, not all 0.
        seed: shuffle seed.
        holdout_scenes: scene keys forced into the test split.
        validation_scenes: scene keys forced into the validation split (they count towards its
            share; the other scenes fill the splits as before).

    Returns:
        The three lists.

    Raises:
        ValueError: bad fractions, a scene named in both forced lists, or a forced scene that
            no record has.
    """
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (3,) or (frac < 0).any() or frac.sum() <= 0:
        raise ValueError(f"fractions must be 3 non-negative numbers, not all 0; got {fractions}")
    holdout = set(holdout_scenes or ())
    validation = set(validation_scenes or ())
    if holdout & validation:
        raise ValueError(
            f"scenes {sorted(holdout & validation)} are both held out and validation scenes; "
            "name each scene in one of data.holdout_scenes / data.validation_scenes"
        )
    sizes: dict[str, int] = {}
    for r in records:
        sizes[r.scene] = sizes.get(r.scene, 0) + 1
    _check_named_scenes(holdout, validation, set(sizes))
    free = sorted(set(sizes) - holdout)
    target = frac / frac.sum() * sum(sizes[s] for s in free)
    filled = np.zeros(3)
    part = {s: 2 for s in holdout}
    for s in sorted(validation & set(sizes)):
        part[s] = 1
        filled[1] += sizes[s]
    free = [s for s in free if s not in validation]
    order = [free[i] for i in np.random.default_rng(seed).permutation(len(free))]
    for s in order:
        deficit = np.where(frac > 0, target - filled, -np.inf)
        k = int(np.argmax(deficit))
        part[s] = k
        filled[k] += sizes[s]
    out: tuple[list[PairRecord], list[PairRecord], list[PairRecord]] = ([], [], [])
    for r in records:
        out[part[r.scene]].append(r)
    return out


def _check_named_scenes(holdout: set[str], validation: set[str], scenes: set[str]) -> None:
    """Every scene forced into a split must be in the data.

    A misspelt or unloaded name would otherwise match nothing, and the scene meant to be held
    out would silently be trained on (or the validation split silently lack it).
    """
    for key, names in (("data.holdout_scenes", holdout), ("data.validation_scenes", validation)):
        missing = sorted(names - scenes)
        if missing:
            have = sorted(scenes)
            shown = ", ".join(have[:30]) + (f", ... ({len(have)} in all)" if len(have) > 30 else "")
            raise ValueError(
                f"{key} names scenes {missing} that are not in the loaded data (scenes: "
                f"{shown}); check their spelling and that their source is configured"
            )
