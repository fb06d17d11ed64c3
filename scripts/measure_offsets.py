"""Measure each scene's registration bias with CFOG, for correcting TRAINING labels.

CFOG (a classical matcher, independent of any trained model) matches known-offset samples of
every scene; the median residual (prediction - truth) of its matches within ``--radius`` px is
the scene's bias (``training.scene_bias.scene_offsets``). Prints a table and the
``offsets_px`` mapping for a ``3mos`` source in a training config. Use it on training scenes
only: validation and test scenes keep the data set's own truth, or the evaluation would be
judged against a matcher's answer.

    .venv/bin/python scripts/measure_offsets.py --data 3mos:../shared/data/3mos:GF3_city,SEN_city

``--per-tile`` measures each tile instead, on top of the scene offsets given with
``--scene-offset`` (the ones the training config already applies), and prints the
``tile_offsets_px`` mapping of a ``3mos`` source: only tiles whose CFOG matches agree on one
shift (``--max-mad``, default 1 px) that is not within CFOG's own noise (``--min-residual``,
default 1 px) are corrected, e.g.::

    .venv/bin/python scripts/measure_offsets.py --per-tile --samples-per-pair 16 --seed 5 \
        --data 3mos:../shared/data/3mos:GF3_plain,SEN_city \
        --scene-offset GF3_plain=-2.84,-0.74 --scene-offset SEN_city=-0.02,0.76
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
from training import scene_bias  # noqa: E402
from training.sources import tile_key  # noqa: E402


def main(argv: Sequence[str] | None = None) -> list[scene_bias.SceneOffset]:
    """Measure, print the table and the YAML mapping; return the measurements."""
    from scripts import evaluate as ev

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", required=True, help="as scripts/evaluate.py")
    p.add_argument("--samples-per-pair", type=int, default=8)
    p.add_argument("--radius", type=float, default=8.0, help="matches within this are used")
    p.add_argument(
        "--min-used",
        type=int,
        default=None,
        help="fewer used matches: no correction (10; 4 per tile)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-tile", action="store_true", help="measure each tile, not each scene")
    p.add_argument("--max-mad", type=float, default=None, help="(px) larger spread: no correction")
    p.add_argument("--min-residual", type=float, default=None, help="(px) smaller: no correction")
    p.add_argument(
        "--scene-offset",
        action="append",
        default=[],
        metavar="SCENE=X,Y",
        help="the scene's current offset (repeatable), e.g. a config's offsets_px",
    )
    args = p.parse_args(argv)
    # per tile, few samples a group: defaults that ask the matches to agree
    min_used = args.min_used if args.min_used is not None else (4 if args.per_tile else 10)
    max_mad = args.max_mad if args.max_mad is not None else (1.0 if args.per_tile else np.inf)
    min_res = args.min_residual if args.min_residual is not None else float(args.per_tile)
    records = [r for spec in args.data for r in ev.load_records(spec, args.seed)]
    if not records:
        raise SystemExit("no pair records found in --data")
    records = ev.with_scene_offsets(records, args.scene_offset)
    samples = harness.make_samples(
        records, args.samples_per_pair, rng=np.random.default_rng(args.seed)
    )
    pred = harness.run_method(samples, harness.classical_map_fn("cfog"), name="cfog")
    current = {
        tile_key(r.name) if args.per_tile else r.scene: (
            float(r.offset_xy_px[0]),
            float(r.offset_xy_px[1]),
        )
        for r in records
    }
    found = scene_bias.scene_offsets(
        pred,
        current,
        args.radius,
        min_used,
        keys=[tile_key(s.record) for s in samples] if args.per_tile else None,
        max_mad_px=max_mad,
        min_residual_px=min_res,
    )
    # the figures in optical-raster pixels, the unit of --scene-offset: a gdal pair matched on
    # a coarser grid measures in grid pixels (PairRecord.grid_scale optical pixels each)
    scale = {tile_key(r.name) if args.per_tile else r.scene: float(r.grid_scale) for r in records}
    found = [_in_optical_px(f, scale[f.scene]) for f in found]
    print(
        f"| {'tile' if args.per_tile else 'scene'} | used / samples | residual x, y px | "
        "MAD x, y px | offset x, y px |"
    )
    print("|---|---|---|---|---|")
    for f in found:
        mark = "" if f.corrected else " (kept)"
        print(
            f"| {f.scene} | {f.n_used} / {f.n_samples} | {f.residual_xy_px[0]:+.2f}, "
            f"{f.residual_xy_px[1]:+.2f} | {f.mad_xy_px[0]:.2f}, {f.mad_xy_px[1]:.2f} | "
            f"{f.offset_xy_px[0]:+.2f}, {f.offset_xy_px[1]:+.2f}{mark} |"
        )
    chosen = [f for f in found if f.corrected or not args.per_tile]
    pairs = ", ".join(f"{f.scene}: [{f.offset_xy_px[0]}, {f.offset_xy_px[1]}]" for f in chosen)
    print(f"\n{'tile_offsets_px' if args.per_tile else 'offsets_px'}: {{{pairs}}}")
    return found


def _in_optical_px(f: scene_bias.SceneOffset, grid_scale: float) -> scene_bias.SceneOffset:
    """``f`` with its (x, y) figures in optical pixels (grid pixels times ``grid_scale``)."""
    if grid_scale == 1.0:
        return f

    def px(xy: tuple[float, float]) -> tuple[float, float]:
        return (round(xy[0] * grid_scale, 2), round(xy[1] * grid_scale, 2))

    return dataclasses.replace(
        f,
        residual_xy_px=px(f.residual_xy_px),
        mad_xy_px=px(f.mad_xy_px),
        offset_xy_px=px(f.offset_xy_px),
    )


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:  # bad --data (a scene not there, sizes), a missing model
        raise SystemExit(f"measure_offsets.py: error: {exc}") from None
