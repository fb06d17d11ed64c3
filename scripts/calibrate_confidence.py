r"""Calibrate a model's match confidence and store it in the model's contract.

The confidence of a match is a logistic function of its correspondence map's structure (peak
cosine, peak-to-second-peak ratio, peak spread, peak z-score; ``core.peaks``). This fits it to
"the match is within ``--correct-px`` of the truth" on calibration samples with known offsets,
which must be data the model's test evaluation never sees (validation scenes, unseen synthetic
scenes, the model's own real training tiles with ``--training-tiles``), and writes a copy of the
model whose contract carries the fitted parameters as ``training["confidence_model"]`` (read by
the plugin and the evaluation).

    .venv/bin/python scripts/calibrate_confidence.py --model runs/default/model.onnx \
        --data 3mos:../shared/data/3mos:SEN_water --training-tiles training/configs/default.yaml \
        --out model.onnx

A confidence fitted on one scene learns that scene's mix of easy and hard matches; the real
training tiles add the other sensors and scenes (docs/results.md measures both on held-out
sensors).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sar_optical_matcher.core import peaks  # noqa: E402
from sar_optical_matcher.core.files import atomic_output, check_destination  # noqa: E402
from sar_optical_matcher.model.runtime import OnnxMatcher, read_contract  # noqa: E402
from training import evaluation_harness as harness  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Fit the confidence model on the calibration samples and write the calibrated model."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="exported ONNX model")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        help="calibration data, as scripts/evaluate.py --data, e.g. 3mos:ROOT:SCENE,... or "
        "sen12:DIR:ROIs1158_spring_1,... (repeatable)",
    )
    p.add_argument(
        "--training-tiles",
        type=Path,
        metavar="CONFIG",
        help="also calibrate on the real (not synthetic) pairs of this training config's "
        "training split, with the labels the training used (e.g. its offsets_px)",
    )
    p.add_argument("--samples-per-pair", type=int, default=4)
    p.add_argument("--correct-px", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, required=True, help="calibrated model to write")
    args = p.parse_args(argv)
    if not args.data and args.training_tiles is None:
        p.error("give calibration data: --data and/or --training-tiles")
    if args.samples_per_pair < 1:
        p.error(f"--samples-per-pair must be >= 1, got {args.samples_per_pair}")
    if not 0 <= args.seed < 2**32:  # numpy said "expected non-negative integer" after the load
        p.error(f"--seed must be in [0, 2^32 - 1], got {args.seed}")
    if not args.correct_px > 0:
        p.error(f"--correct-px must be > 0 (pixels), got {args.correct_px}")
    try:
        return calibrate(args)
    except ValueError as exc:  # a missing model or data, an unwritable --out: said, not dumped
        raise SystemExit(f"calibrate_confidence.py: error: {exc}") from None


def refuse_test_scenes(records: list, held_out: Sequence[str], who: str, where: str) -> None:
    """Raise ValueError when ``records`` hold scenes that ``who`` holds out for testing.

    The confidence would then be judged, by ``make evaluate``, on the scenes it was fitted on.
    """
    leak = set(held_out) & {r.scene for r in records}
    if leak:
        raise ValueError(
            f"--data has scenes {sorted(leak)} that {who} holds out for testing ({where}): "
            "calibrate on validation or training scenes, or the held-out precision of the "
            "confidence is measured on its own fit"
        )


def calibrate(args: argparse.Namespace) -> int:
    """Fit and write the calibrated model of ``args``; ValueError says what is wrong."""
    from scripts import evaluate as ev

    # before the calibration's minutes of matching: the model and the destination
    contract = read_contract(args.model)
    check_destination(args.out)
    records = [r for spec in args.data for r in ev.load_records(spec, args.seed)]
    own = contract.training.get("held_out_scenes")
    where = "its contract's held_out_scenes"
    if own is None:  # contracts before 0.3.8 (the shipped 0.3.0 weights): the shipped recipe's
        from training.config import load_config

        own = load_config(ROOT / "training/configs/default.yaml").data.holdout_scenes
        where = "the shipped recipe's data.holdout_scenes; its contract names none"
    # the model's own test scenes, whatever --training-tiles says (or without it)
    refuse_test_scenes(records, own, Path(args.model).name, where)
    described = list(args.data)
    if args.training_tiles is not None:
        tiles = training_tiles(args.training_tiles)
        overlap = {r.scene for r in tiles} & {r.scene for r in records}
        if overlap:
            raise SystemExit(f"--data repeats training scenes {sorted(overlap)}: drop them")
        from training.config import load_config

        held_out = load_config(args.training_tiles).data.holdout_scenes
        refuse_test_scenes(records, held_out, str(args.training_tiles), "data.holdout_scenes")
        records += tiles
        described.append(f"training tiles of {args.training_tiles} ({len(tiles)} pairs)")
    rng = np.random.default_rng(args.seed)
    matcher = OnnxMatcher(args.model, device="auto", log=print)
    c = matcher.contract  # samples cut with the model's own sizes
    samples = harness.make_samples(
        records, args.samples_per_pair, c.template_size, c.search_size, rng=rng
    )
    repeated = harness.repeated_samples(samples)
    if repeated:
        print(f"warning: {repeated} (--samples-per-pair)", file=sys.stderr)
    pred = harness.run_method(samples, harness.learned_map_fn(matcher), name="learned")
    correct = pred.error_px <= args.correct_px
    if correct.all() or not correct.any():
        raise SystemExit(
            f"calibration needs both correct and wrong matches; got {correct.sum()} of "
            f"{correct.size} correct: use more or harder calibration data"
        )
    model = peaks.fit_confidence_model(pred.features, correct)
    conf = model.predict(pred.features)
    auc = peaks.ranking_auc(conf, correct)
    # the fit's own samples flatter it: the same model fitted on one half, judged on the other
    auc_cv = peaks.ranking_auc(harness.cross_validated_confidence(pred.features, correct), correct)
    precision, kept = peaks.precision_at_thresholds(conf, correct, np.array([0.5]))
    print(
        f"{len(samples)} calibration samples, {correct.mean():.1%} within "
        f"{args.correct_px:g} px; AUC {auc:.3f} on these samples ({auc_cv:.3f} 2-fold "
        f"cross-validated); at 0.5: precision {precision[0]:.1%}, kept {kept[0]:.1%}"
    )

    from training.export import finite_or_none, set_contract

    training = dict(contract.training)
    training["confidence_model"] = model.to_dict()
    training["confidence_calibration"] = {
        "data": described,
        "samples": len(samples),
        "correct_px": args.correct_px,
        "share_correct": float(correct.mean()),
        # null where nothing is measured (no match accepted at 0.5: no precision)
        **{k: finite_or_none(v) for k, v in (("auc", auc), ("auc_cv", auc_cv),
           ("precision_at_0.5", precision[0]), ("kept_at_0.5", kept[0]))},
    }  # fmt: skip

    with atomic_output(args.out) as tmp:
        shutil.copyfile(args.model, tmp)
        set_contract(tmp, dataclasses.replace(contract, training=training))
        read_contract(tmp)  # the plugin's own validation, before the file takes its final name
    print(f"wrote {args.out}")
    return 0


def training_tiles(config_path: Path) -> list:
    """The real pairs of a training config's training split, labelled as training saw them.

    The split is the training's own (``split_by_scene`` over all its sources, synthetic
    included, with its seed), so held-out and validation scenes never come back here.
    """
    from training import data
    from training.config import load_config

    cfg = load_config(config_path)
    train, _, _ = data.split_records(data.load_records(cfg.data), cfg.data, cfg.seed)
    real = [r for r in train if r.source != "synthetic"]
    if not real:
        raise SystemExit(f"{config_path}: its training split holds no real pairs")
    return real


if __name__ == "__main__":
    raise SystemExit(main())
