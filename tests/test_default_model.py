"""The shipped default model matches: figures of docs/results.md as regression checks.

Measured with the evaluation harness on samples the model never saw (unseen synthetic scenes;
the held-out real 3MOS scenes, skipped where the shared data is absent, e.g. in CI).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sar_optical_matcher.core import peaks
from sar_optical_matcher.model.runtime import OnnxMatcher, default_model_path
from training import evaluation_harness as harness
from training import sources

DATA_3MOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "3mos"
HELD_OUT = ["RCM_city", "RCM_plain", "SEN_plain", "GF3_water", "Redarsat_hills"]


@pytest.fixture(scope="module")
def matcher() -> OnnxMatcher:
    return OnnxMatcher(default_model_path(), device="cpu", log=lambda _m: None)


def test_unseen_synthetic_scenes_are_matched(matcher: OnnxMatcher) -> None:
    """Scenes of a seed no training run used (docs: 100 % within 3 px on 48 samples)."""
    records = sources.load_synthetic(2, 512, seed=10_007)
    samples = harness.make_samples(records, 8, rng=np.random.default_rng(1))
    pred = harness.run_method(samples, harness.learned_map_fn(matcher), name="learned")
    assert len(pred.error_px) == 16
    assert (pred.error_px <= 3).mean() >= 0.8
    assert np.median(pred.error_px) < 1.5


@pytest.fixture(scope="module")
def held_out(matcher: OnnxMatcher) -> tuple[list, harness.Predictions]:
    """The 100 held-out samples of docs/results.md (seed 0), matched with the shipped
    confidence."""
    if not DATA_3MOS.is_dir():
        pytest.skip("3MOS sample data not available")
    records = sources.load_3mos(DATA_3MOS, scenes=HELD_OUT)
    samples = harness.make_samples(records, 2, rng=np.random.default_rng(0))
    conf = peaks.ConfidenceModel.from_dict(matcher.contract.training["confidence_model"])
    fn = harness.learned_map_fn(matcher)
    return samples, harness.run_method(samples, fn, name="learned", confidence_model=conf)


def test_held_out_real_tiles_beat_cfog_on_the_same_samples(held_out) -> None:
    """docs/results.md, 100 held-out samples (seed 0): 53 % within 3 px vs CFOG's 38 %, median
    2.8 vs 6.0 px (raw maps, plugin <= 0.3.1: 54 %). Checked here as: >= 50 %, >= 1.25x CFOG's
    share and a lower median."""
    samples, learned = held_out
    cfog = harness.run_method(samples, harness.classical_map_fn("cfog"), name="cfog")
    ours, theirs = (learned.error_px <= 3).mean(), (cfog.error_px <= 3).mean()
    assert ours >= 0.5 and ours >= 1.25 * theirs
    assert np.median(learned.error_px) < np.median(cfog.error_px)


def test_held_out_confidence_is_calibrated_and_ranks(held_out) -> None:
    """Measured on these samples: mean confidence 0.63 against 53 % correct; at 0.5 it keeps
    61 % at 68.9 % precision. (Raw maps, plugin 0.3.1: 0.61 against 54 %, 58 % kept at 70.7 %.
    Calibrated on SEN_water alone, 0.3.0: 0.74, and 79 % kept at 62 %: it promised 20 points
    more than it held, which the 0.12 bound catches.)"""
    _, learned = held_out
    correct = learned.error_px <= 3
    accepted = learned.confidence >= 0.5
    assert abs(learned.confidence.mean() - correct.mean()) <= 0.12
    assert accepted.mean() >= 0.3 and correct[accepted].mean() >= correct.mean() + 0.1
