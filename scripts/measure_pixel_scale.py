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
    args = p.parse_args(argv)
    if any(not z >= 1.0 for z in args.zoom):
        p.error("--zoom factors must be >= 1 (a grid finer than the data)")
    records = [r for spec in args.data for r in ev.load_records(spec, args.seed)]
    if not records:
        p.error("no pair records found in --data")
    matcher = OnnxMatcher(args.model or default_model_path(), device="auto", log=print)
    fn = harness.learned_map_fn(matcher)
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
    main()
