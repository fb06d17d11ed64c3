"""How accuracy falls when matching runs on a grid finer than the data (a pixel-size mismatch).

When the optical pixel is k times smaller than the SAR's and matching runs on the optical grid,
the SAR is upsampled k times and the model sees structures k times larger than the pairs it was
trained on. This script simulates that on co-registered pairs: both images of every record are
zoomed by each ``--zoom`` factor (bilinear) before the usual known-offset samples are cut, the
learned matcher runs, and the errors are converted back to the data's own pixels, so the rows
compare like with like. It is the measurement behind the automatic matching grid of the
plugin (``registration.matching_grid``, docs/results.md)::

    .venv/bin/python scripts/measure_pixel_scale.py \
        --data 3mos:../shared/data/3mos:RCM_city,SEN_plain,Redarsat_hills --zoom 1 1.5 2

``--through-gdal`` measures the plugin's answer to such a pair instead: only the optical is
made finer (GDAL bilinear, ``zoom`` times smaller pixels), both images are written as
georeferenced GeoTIFFs (the SAR at its own pixel size), and every pair is loaded by the
evaluation's GDAL loader (``sources.load_gdal_pair``) twice: on the automatic matching grid
(``registration.matching_grid``: the SAR's pixel size, the optical averaged onto it) and on
the optical grid forced (``MATCH_PIXEL_SIZE`` = the optical pixel, the SAR upsampled). Errors
are in SAR pixels in both rows. Records need a zero known offset (the 3MOS scenes other than
GF-3).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training import evaluation_harness as harness  # noqa: E402


def zoomed(record, factor: float):
    """``record`` with both images zoomed by ``factor`` and its known offset scaled with them."""
    from scipy import ndimage

    def zoom(a: np.ndarray) -> np.ndarray:
        return ndimage.zoom(a, factor, order=1).astype(np.float32)

    offset = record.offset_xy_px
    return dataclasses.replace(
        record,
        sar=zoom(record.sar),
        optical=zoom(record.optical),
        valid=None if record.valid is None else ndimage.zoom(record.valid, factor, order=0),
        offset_xy_px=None if offset is None else tuple(float(v) * factor for v in offset),
    )


#: Pixel size (map units) the SAR is written at by :func:`gdal_pair`; any value would do.
SAR_PIXEL_M = 10.0


def gdal_pair(record, factor: float, folder: Path) -> tuple[Path, Path]:
    """Write ``record`` as a georeferenced pair, the optical ``factor`` times finer than the SAR.

    Returns:
        ``(optical_path, sar_path)``: single-band float32 GeoTIFFs in EPSG:32633 covering the
        same ground, the SAR at :data:`SAR_PIXEL_M`, the optical resampled (bilinear) to
        ``SAR_PIXEL_M / factor`` by GDAL, so the georeference stays exact.
    """
    from osgeo import gdal, osr

    from sar_optical_matcher.rasters import write_raster_atomic

    if tuple(record.offset_xy_px) != (0.0, 0.0):
        raise ValueError(
            f"{record.name} has a known offset {record.offset_xy_px}: --through-gdal needs "
            "pairs whose georeference is their truth (leave out the GF-3 scenes)"
        )
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    gt = (500000.0, SAR_PIXEL_M, 0.0, 5000000.0, 0.0, -SAR_PIXEL_M)
    stem = folder / record.name.replace("/", "_")
    paths = [
        write_raster_atomic(
            f"{stem}_{kind}.tif", np.asarray(image, np.float32), gt, srs.ExportToWkt()
        )
        for kind, image in (("optical_native", record.optical), ("sar", record.sar))
    ]
    fine = Path(f"{stem}_optical.tif")
    res = SAR_PIXEL_M / factor
    if gdal.Warp(str(fine), str(paths[0]), xRes=res, yRes=res, resampleAlg="bilinear") is None:
        raise ValueError(f"GDAL cannot resample {paths[0]}: {gdal.GetLastErrorMsg()}")
    return fine, paths[1]


def _gdal_rows(records, args, fn) -> list[dict[str, float]]:
    import tempfile

    from training import sources

    rows = []
    print(f"| zoom | grid | samples | <= {args.correct_px:g} px | median px |")
    print("|---|---|---|---|---|")
    for factor in args.zoom:
        with tempfile.TemporaryDirectory(prefix="pixel_scale_") as tmp:
            pairs = [(gdal_pair(r, factor, Path(tmp)), r) for r in records]
            for grid, size in (("optical", SAR_PIXEL_M / factor), ("automatic", 0.0)):
                recs = [
                    dataclasses.replace(
                        sources.load_gdal_pair(o, s, sar_scale=r.sar_scale, match_pixel_size=size),
                        scene=r.scene,
                        sensor=r.sensor,
                        name=r.name,
                    )
                    for (o, s), r in pairs
                ]
                to_sar_px = recs[0].optical.shape[0] / records[0].optical.shape[0]
                samples = harness.make_samples(
                    recs, args.samples_per_pair, rng=np.random.default_rng(args.seed)
                )
                err = harness.run_method(samples, fn, name="learned").error_px / to_sar_px
                row = {
                    "zoom": factor,
                    "grid": grid,
                    "grid_px_per_sar_px": to_sar_px,
                    "n": float(len(err)),
                    "within": float(np.mean(err <= args.correct_px)),
                    "median_px": float(np.median(err)),
                }
                rows.append(row)
                print(f"| {factor:g} | {grid} ({to_sar_px:g} px a SAR px) | {len(err)} | "
                      f"{100 * row['within']:.1f}% | {row['median_px']:.2f} |")  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    """Measure and print one row per zoom factor; return the rows."""
    from sar_optical_matcher.model.runtime import OnnxMatcher, default_model_path
    from scripts import evaluate as ev

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", required=True, help="as scripts/evaluate.py")
    p.add_argument("--zoom", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    p.add_argument("--samples-per-pair", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="ONNX model (default: the shipped one)")
    p.add_argument("--correct-px", type=float, default=3.0, help="in the data's own pixels")
    p.add_argument(
        "--through-gdal",
        action="store_true",
        help="make only the optical finer, write GeoTIFFs and compare the plugin's automatic "
        "matching grid with the optical grid (the module docstring says how)",
    )
    args = p.parse_args(argv)
    if any(not z >= 1.0 for z in args.zoom):
        p.error("--zoom factors must be >= 1 (a grid finer than the data)")
    records = [r for spec in args.data for r in ev.load_records(spec, args.seed)]
    if not records:
        p.error("no pair records found in --data")
    matcher = OnnxMatcher(args.model or default_model_path(), device="auto", log=print)
    fn = harness.learned_map_fn(matcher)
    if args.through_gdal:
        return _gdal_rows(records, args, fn)
    rows = []
    print(f"| zoom | samples | <= {args.correct_px:g} px | median px |")
    print("|---|---|---|---|")
    for factor in args.zoom:
        recs = [zoomed(r, factor) for r in records]
        rng = np.random.default_rng(args.seed)
        samples = harness.make_samples(recs, args.samples_per_pair, rng=rng)
        err = harness.run_method(samples, fn, name="learned").error_px / factor
        row = {
            "zoom": factor,
            "n": float(len(err)),
            "within": float(np.mean(err <= args.correct_px)),
            "median_px": float(np.median(err)),
        }
        rows.append(row)
        print(f"| {factor:g} | {len(err)} | {100 * row['within']:.1f}% | {row['median_px']:.2f} |")
    return rows


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:  # bad --data (a scene not there, sizes), a missing model
        raise SystemExit(f"measure_pixel_scale.py: error: {exc}") from None
