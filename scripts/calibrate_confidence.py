r"""Calibrate a model's match confidence and store it in the model's contract.

The confidence of a match is a logistic function of its correspondence map's structure (peak
cosine, peak-to-second-peak ratio, peak spread, peak z-score; ``core.peaks``). This fits it to
"the match is within ``--correct-px`` of the truth" on calibration samples with known offsets,
which must be data the model's test evaluation never sees (validation scenes, unseen synthetic
scenes), and writes a copy of the model whose contract carries the fitted parameters as
``training["confidence_model"]`` (read by the plugin and the evaluation).

    .venv/bin/python scripts/calibrate_confidence.py --model runs/default/model.onnx \
        --data 3mos:../shared/data/3mos:SEN_city --data synthetic:8 --out model.onnx
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sar_optical_matcher.core import peaks  # noqa: E402
from sar_optical_matcher.model.runtime import OnnxMatcher, read_contract  # noqa: E402
from training import evaluation_harness as harness  # noqa: E402


def main() -> int:
    """Fit the confidence model on the calibration samples and write the calibrated model."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="exported ONNX model")
    p.add_argument(
        "--data",
        action="append",
        required=True,
        help="calibration data, as scripts/evaluate.py --data (repeatable)",
    )
    p.add_argument("--samples-per-pair", type=int, default=4)
    p.add_argument("--correct-px", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, required=True, help="calibrated model to write")
    args = p.parse_args()

    from scripts import evaluate as ev

    records = [r for spec in args.data for r in ev.load_records(spec, args.seed)]
    rng = np.random.default_rng(args.seed)
    samples = harness.make_samples(records, args.samples_per_pair, rng=rng)
    matcher = OnnxMatcher(args.model, device="auto", log=print)
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
    precision, kept = peaks.precision_at_thresholds(conf, correct, np.array([0.5]))
    print(
        f"{len(samples)} calibration samples, {correct.mean():.1%} within "
        f"{args.correct_px:g} px; AUC {auc:.3f}; at 0.5: precision {precision[0]:.1%}, "
        f"kept {kept[0]:.1%}"
    )

    contract = read_contract(args.model)
    training = dict(contract.training)
    training["confidence_model"] = model.to_dict()
    training["confidence_calibration"] = {
        "data": args.data,
        "samples": len(samples),
        "correct_px": args.correct_px,
        "share_correct": float(correct.mean()),
        "auc": float(auc),
        "precision_at_0.5": float(precision[0]),
        "kept_at_0.5": float(kept[0]),
    }
    from training.export import set_contract

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".calibrating.onnx")
    shutil.copyfile(args.model, tmp)
    set_contract(tmp, dataclasses.replace(contract, training=training))
    read_contract(tmp)  # the plugin's own validation, before the file takes its final name
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
