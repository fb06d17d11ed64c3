r"""Write a large synthetic optical/SAR pair (up to 20,000^2 px and more) in bounded memory.

A few small synthetic scenes (``core.synthetic``: optical RGB and speckled SAR of the same
landscape) are rendered once as tile GeoTIFFs; the large rasters are VRT mosaics of these
tiles (``--format vrt``: no pixel is copied, any size costs the same) or tiled, DEFLATE
compressed GeoTIFFs copied from the VRTs block by block by GDAL (``--format gtiff``). The whole
raster is never in memory.

Ground truth: SAR pixel (x, y) shows the same ground as optical pixel (x, y), but the SAR's
geotransform is deliberately wrong: it places SAR pixel p at the optical pixel
``q = p + shift + E (p - c)`` (c the raster centre, E a small affine error). A registration
must therefore fit the identity (SAR px -> optical px); ``truth.json`` holds shift and E.

    .venv/bin/python scripts/make_large_pair.py --size 8192 --out build/large
    .venv/bin/python scripts/make_large_pair.py --size 20000 --format vrt --out build/large
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sar_optical_matcher.core.files import atomic_output, write_text_atomic  # noqa: E402
from sar_optical_matcher.core.synthetic import (  # noqa: E402
    apply_speckle,
    render_scene,
    render_sigma0,
)
from sar_optical_matcher.synthetic import _srs, write_geotiff  # noqa: E402

FORMATS = ("gtiff", "vrt")
EPSG = 32633
ORIGIN_MAP = (500_000.0, 5_200_000.0)


def render_tiles(
    folder: Path, n_scenes: int, tile_px: int, pixel_size_m: float, rng: np.random.Generator
) -> list[tuple[Path, Path]]:
    """Render ``n_scenes`` scenes as (optical uint16 x 10000, 3 bands; SAR float32 amplitude).

    Returns:
        [(optical tile path, SAR tile path)] (tiles carry a dummy georeference; the VRT places
        them).
    """
    gt = (ORIGIN_MAP[0], pixel_size_m, 0.0, ORIGIN_MAP[1], 0.0, -pixel_size_m)
    tiles = []
    for k in range(n_scenes):
        scene = render_scene(tile_px, rng, pixel_size_m)
        sar = apply_speckle(render_sigma0(scene, rng), 4.0, rng, "amplitude")
        rgb = np.clip(np.rint(np.moveaxis(scene.optical, -1, 0) * 10000), 0, 65535)
        opt_path = write_geotiff(folder / f"tile{k}_optical.tif", rgb.astype(np.uint16), gt, EPSG)
        sar_path = write_geotiff(folder / f"tile{k}_sar.tif", sar, gt, EPSG)
        tiles.append((opt_path, sar_path))
    return tiles


def sar_geotransform(
    size_px: int, pixel_size_m: float, shift_px: np.ndarray, affine: np.ndarray
) -> tuple[float, ...]:
    """The SAR's wrong geotransform: SAR px p -> optical px ``p + shift + E (p - c)`` -> map.

    Args:
        size_px: raster side (the centre c is at size / 2).
        pixel_size_m: pixel size (north-up grid).
        shift_px: (2,) shift (x, y) in pixels.
        affine: (2, 2) affine error E (dimensionless).
    """
    a = np.eye(2) + affine
    t = shift_px - affine @ np.array([size_px / 2.0] * 2)
    d = np.diag([pixel_size_m, -pixel_size_m])
    lin, off = d @ a, d @ t + np.array(ORIGIN_MAP)
    return (float(off[0]), float(lin[0, 0]), float(lin[0, 1]), float(off[1]), float(lin[1, 0]),
            float(lin[1, 1]))  # fmt: skip


def mosaic_vrt(
    path: Path, size_px: int, tile_px: int, sources: list[Path], bands: int, dtype: str,
    gt: tuple[float, ...], rng: np.random.Generator,
) -> Path:  # fmt: skip
    """A VRT of ``size_px``^2 pixels tiled with randomly chosen ``sources`` (tile_px^2 each)."""
    picks = rng.integers(0, len(sources), (-(-size_px // tile_px),) * 2)
    wkt = escape(_srs(EPSG).ExportToWkt())
    parts = [
        f'<VRTDataset rasterXSize="{size_px}" rasterYSize="{size_px}">',
        f"<SRS>{wkt}</SRS>",
        f"<GeoTransform>{', '.join(repr(v) for v in gt)}</GeoTransform>",
    ]
    for b in range(1, bands + 1):
        parts.append(f'<VRTRasterBand dataType="{dtype}" band="{b}">')
        for (i, j), k in np.ndenumerate(picks):
            x, y = j * tile_px, i * tile_px
            w, h = min(tile_px, size_px - x), min(tile_px, size_px - y)
            parts.append(
                f'<SimpleSource><SourceFilename relativeToVRT="1">{sources[k].name}'
                f"</SourceFilename><SourceBand>{b}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                f'<DstRect xOff="{x}" yOff="{y}" xSize="{w}" ySize="{h}"/></SimpleSource>'
            )
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    return write_text_atomic(path, "\n".join(parts))


def to_geotiff(vrt: Path, out: Path) -> Path:
    """Copy a VRT to a tiled, DEFLATE-compressed (BigTIFF if needed) GeoTIFF, block by block.

    Written under a temporary name: an interrupted copy (minutes at 20,000 px) leaves no file
    of the final name.
    """
    from osgeo import gdal

    options = ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER", "NUM_THREADS=ALL_CPUS"]
    with atomic_output(out) as tmp:
        ds = gdal.Translate(str(tmp), str(vrt), format="GTiff", creationOptions=options)
        if ds is None:
            raise RuntimeError(f"GDAL could not write {out}: {gdal.GetLastErrorMsg()}")
        ds = None
    return out


def make_large_pair(
    folder: str | Path, size_px: int, rng: np.random.Generator, *, fmt: str = "gtiff",
    tile_px: int = 512, n_scenes: int = 4, pixel_size_m: float = 10.0,
    max_shift_px: float = 20.0, max_affine: float = 5e-4,
) -> dict[str, Any]:  # fmt: skip
    """Write ``optical`` / ``sar`` rasters of ``size_px``^2 px and ``truth.json`` into folder.

    Args:
        folder: output folder (created).
        size_px: raster side in pixels (>= tile_px).
        rng: random generator (scenes, mosaic layout, misregistration).
        fmt: ``"gtiff"`` (tiled compressed GeoTIFFs) or ``"vrt"`` (mosaics of the tiles).
        tile_px: side of the rendered scenes.
        n_scenes: number of distinct scenes in the mosaic.
        pixel_size_m: pixel size in metres (EPSG:32633).
        max_shift_px: shift drawn uniformly in [-max, max] per axis.
        max_affine: affine error entries drawn in [-max, max] (5e-4: 5 px at 10,000 px).

    Returns:
        ``{"optical": path, "sar": path, "truth": path, "shift_px": [..], "affine": [[..]]}``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    if size_px < tile_px or tile_px < 256:
        raise ValueError(f"need size_px >= tile_px >= 256, got {size_px}, {tile_px}")
    if n_scenes < 1:
        raise ValueError(f"need n_scenes >= 1, got {n_scenes}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    truth_path = folder / f"truth_{size_px}.json"
    # an earlier pair's truth must not outlive its rasters: this run rewrites them
    truth_path.unlink(missing_ok=True)
    tiles = render_tiles(folder, n_scenes, tile_px, pixel_size_m, rng)
    shift = rng.uniform(-max_shift_px, max_shift_px, 2)
    affine = rng.uniform(-max_affine, max_affine, (2, 2))
    opt_gt = (ORIGIN_MAP[0], pixel_size_m, 0.0, ORIGIN_MAP[1], 0.0, -pixel_size_m)
    sar_gt = sar_geotransform(size_px, pixel_size_m, shift, affine)
    layout_seed = int(rng.integers(2**32))  # the SAME mosaic layout for both rasters
    paths = {}
    for kind, bands, dtype, gt in (("optical", 3, "UInt16", opt_gt), ("sar", 1, "Float32", sar_gt)):
        srcs = [t[0] if kind == "optical" else t[1] for t in tiles]
        vrt = mosaic_vrt(folder / f"{kind}_{size_px}.vrt", size_px, tile_px, srcs, bands, dtype,
                         gt, np.random.default_rng(layout_seed))  # fmt: skip
        paths[kind] = vrt if fmt == "vrt" else to_geotiff(vrt, folder / f"{kind}_{size_px}.tif")
    truth = {"size_px": size_px, "shift_px": shift.tolist(), "affine": affine.tolist(),
             "sar_px_to_optical_px": "identity", "optical": str(paths["optical"]),
             "sar": str(paths["sar"])}  # fmt: skip
    write_text_atomic(truth_path, json.dumps(truth, indent=2))
    return {**paths, "truth": truth_path, "shift_px": shift, "affine": affine}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=4096, help="raster side in pixels")
    p.add_argument("--format", choices=FORMATS, default="gtiff")
    p.add_argument("--tile", type=int, default=512, help="side of the rendered scenes")
    p.add_argument("--scenes", type=int, default=4, help="distinct scenes in the mosaic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("build/large"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Write the pair and print the paths."""
    args = parse_args(argv)
    try:
        out = make_large_pair(args.out, args.size, np.random.default_rng(args.seed),
                              fmt=args.format, tile_px=args.tile, n_scenes=args.scenes)  # fmt: skip
    except (ValueError, RuntimeError, OSError) as exc:  # sizes, an unwritable --out, GDAL
        raise SystemExit(f"make_large_pair.py: error: {exc}") from None
    for key in ("optical", "sar", "truth"):
        print(f"{key:8s} {out[key]}")
    print(f"shift {np.round(out['shift_px'], 3).tolist()} px, affine error "
          f"{np.round(out['affine'], 6).tolist()}")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
