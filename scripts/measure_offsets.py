"""Measure each scene's registration bias with CFOG, for correcting TRAINING labels.

CFOG (a classical matcher, independent of any trained model) matches known-offset samples of
every scene; the median residual (prediction - truth) of its matches within ``--radius`` px is
the scene's bias (``training.scene_bias.scene_offsets``). Prints a table and the
``offsets_px`` mapping for a ``3mos`` source in a training config. Use it on training scenes
only: validation and test scenes keep the data set's own truth, or the evaluation would be
judged against a matcher's answer.

    .venv/bin/python scripts/measure_offsets.py --data 3mos:../shared/data/3mos:GF3_city,SEN_city
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training import evaluation_harness as harness  # noqa: E402
from training import scene_bias  # noqa: E402


def main(argv: Sequence[str] | None = None) -> list[scene_bias.SceneOffset]:
    """Measure, print the table and the YAML mapping; return the measurements."""
    from scripts import evaluate as ev

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", required=True, help="as scripts/evaluate.py")
    p.add_argument("--samples-per-pair", type=int, default=8)
    p.add_argument("--radius", type=float, default=8.0, help="matches within this are used")
    p.add_argument("--min-used", type=int, default=10, help="fewer used matches: no correction")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    records = [r for spec in args.data for r in ev.load_records(spec, args.seed)]
    if not records:
        raise SystemExit("no pair records found in --data")
    samples = harness.make_samples(
        records, args.samples_per_pair, rng=np.random.default_rng(args.seed)
    )
    pred = harness.run_method(samples, harness.classical_map_fn("cfog"), name="cfog")
    current = {r.scene: (float(r.offset_xy_px[0]), float(r.offset_xy_px[1])) for r in records}
    found = scene_bias.scene_offsets(pred, current, args.radius, args.min_used)
    print("| scene | used / samples | residual x, y px | MAD x, y px | offset x, y px |")
    print("|---|---|---|---|---|")
    for f in found:
        mark = "" if f.corrected else " (kept: too few matches)"
        print(
            f"| {f.scene} | {f.n_used} / {f.n_samples} | {f.residual_xy_px[0]:+.2f}, "
            f"{f.residual_xy_px[1]:+.2f} | {f.mad_xy_px[0]:.2f}, {f.mad_xy_px[1]:.2f} | "
            f"{f.offset_xy_px[0]:+.2f}, {f.offset_xy_px[1]:+.2f}{mark} |"
        )
    pairs = ", ".join(f"{f.scene}: [{f.offset_xy_px[0]}, {f.offset_xy_px[1]}]" for f in found)
    print(f"\noffsets_px: {{{pairs}}}")
    return found


if __name__ == "__main__":
    main()
