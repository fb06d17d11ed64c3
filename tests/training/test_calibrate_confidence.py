"""scripts/calibrate_confidence.py: calibration data, the training tiles option, its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sar_optical_matcher.model import runtime

ROOT = Path(__file__).resolve().parents[2]
DATA_3MOS = ROOT.parent / "shared" / "data" / "3mos"
pytestmark = pytest.mark.skipif(not DATA_3MOS.is_dir(), reason="3MOS sample data not available")


def small_config(tmp_path: Path) -> Path:
    """Three real scenes: SEN_city trains (labels moved by offsets_px), SEN_water validates,
    RCM_city is held out."""
    cfg = {
        "seed": 0,
        "data": {
            "sources": [
                {
                    "kind": "3mos",
                    "root": str(DATA_3MOS),
                    "scenes": ["SEN_city", "SEN_water", "RCM_city"],
                    "offsets_px": {"SEN_city": [1.5, -0.5]},
                },
            ],
            "split_fractions": [0.95, 0.05, 0.0],
            "holdout_scenes": ["RCM_city"],
            "validation_scenes": ["SEN_water"],
        },
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_training_tiles_are_the_training_split_with_its_labels(tmp_path: Path) -> None:
    from scripts.calibrate_confidence import training_tiles

    tiles = training_tiles(small_config(tmp_path))
    assert {r.scene for r in tiles} == {"SEN_city"} and len(tiles) == 10
    assert all(r.offset_xy_px == (1.5, -0.5) for r in tiles)


def test_calibration_on_training_tiles_writes_a_calibrated_model(tmp_path: Path) -> None:
    from scripts.calibrate_confidence import main

    cfg, out = small_config(tmp_path), tmp_path / "calibrated.onnx"
    argv = ["--model", str(runtime.default_model_path()), "--training-tiles", str(cfg)]
    assert main([*argv, "--samples-per-pair", "3", "--out", str(out)]) == 0
    calib = runtime.read_contract(out).training["confidence_calibration"]
    assert calib["samples"] == 30 and 0.0 < calib["share_correct"] < 1.0
    # out of fold these 30 samples (29 correct) rank far worse than on the fit's own
    assert 0.0 <= calib["auc_cv"] <= calib["auc"] <= 1.0 and calib["auc_cv"] != calib["auc"]
    assert calib["data"] == [f"training tiles of {cfg} (10 pairs)"]
    with pytest.raises(SystemExit, match=r"repeats training scenes \['SEN_city'\]"):
        main([*argv, "--data", f"3mos:{DATA_3MOS}:SEN_city", "--out", str(tmp_path / "x.onnx")])
    with pytest.raises(SystemExit):
        main(["--model", str(runtime.default_model_path()), "--out", str(tmp_path / "y.onnx")])
    # a held-out scene as calibration data: its held-out precision would be the fit's own
    with pytest.raises(SystemExit, match=r"scenes \['RCM_city'\] that .* holds out"):
        main([*argv, "--data", f"3mos:{DATA_3MOS}:RCM_city", "--out", str(tmp_path / "z.onnx")])
    assert not any((tmp_path / n).exists() for n in ("x.onnx", "y.onnx", "z.onnx"))


def test_calibration_cuts_samples_with_the_models_sizes(tmp_path: Path) -> None:
    """A 64 / 96 px model: the samples were always cut at 128 / 256 px, which it refuses."""
    from scripts.calibrate_confidence import main
    from tests.model_fixtures import SEARCH, TEMPLATE, make_twin_model

    model = make_twin_model(tmp_path / "twin.onnx", descriptor_size=8, widths=(4, 8, 8, 8))
    assert (TEMPLATE, SEARCH) != (128, 256)
    out = tmp_path / "calibrated.onnx"
    argv = ["--model", str(model), "--data", f"3mos:{DATA_3MOS}:SEN_city,SEN_water"]
    assert main([*argv, "--samples-per-pair", "4", "--out", str(out)]) == 0
    contract = runtime.read_contract(out)
    assert (contract.template_size, contract.search_size) == (TEMPLATE, SEARCH)
    assert contract.training["confidence_calibration"]["samples"] == 80
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibrated.onnx", "twin.onnx"]


def test_a_precision_that_is_not_measured_is_stored_as_null(tmp_path: Path, monkeypatch) -> None:
    """A confidence that accepts no match at 0.5 has no precision there: NaN went into the
    contract, which strict JSON readers refuse; it is null now, and the model is written."""
    import json

    from sar_optical_matcher.core import peaks
    from scripts import calibrate_confidence

    never = peaks.ConfidenceModel((0.0, 0.0, 0.0, 0.0), -10.0)  # confidence ~5e-5 everywhere
    monkeypatch.setattr(calibrate_confidence.peaks, "fit_confidence_model", lambda f, c: never)
    out = tmp_path / "calibrated.onnx"
    argv = ["--model", str(runtime.default_model_path()), "--training-tiles"]
    assert calibrate_confidence.main([*argv, str(small_config(tmp_path)), "--out", str(out)]) == 0
    training = runtime.read_contract(out).training
    calib = training["confidence_calibration"]
    assert calib["precision_at_0.5"] is None and calib["kept_at_0.5"] == 0.0
    json.dumps(training, allow_nan=False)  # strict JSON


def test_the_models_own_test_scenes_are_refused_without_training_tiles(tmp_path: Path) -> None:
    """Without --training-tiles, the held-out scenes were taken as calibration data (exit 0,
    a contract whose confidence was fitted on the scenes make evaluate then scores it on;
    helper-74). Now the model's own held_out_scenes are refused before any matching, and for
    a contract that names none (the shipped 0.3.0 weights) the shipped recipe's."""
    import dataclasses
    import shutil

    from scripts import calibrate_confidence
    from training.export import set_contract

    out = tmp_path / "calibrated.onnx"
    args = ["--data", f"3mos:{DATA_3MOS}:RCM_city", "--samples-per-pair", "1", "--out", str(out)]
    shipped = str(runtime.DEFAULT_MODEL_PATH)
    assert runtime.read_contract(shipped).training.get("held_out_scenes") is None
    refused = r"scenes \['{}'\] that {}\.onnx holds out for testing \({}"
    with pytest.raises(SystemExit, match=refused.format("RCM_city", "default", "the shipped")):
        calibrate_confidence.main(["--model", shipped, *args])
    own = tmp_path / "own.onnx"
    shutil.copy(shipped, own)
    c = runtime.read_contract(own)
    training = {**c.training, "held_out_scenes": ["SEN_water"]}
    set_contract(own, dataclasses.replace(c, training=training))
    water = ["--data", f"3mos:{DATA_3MOS}:SEN_water", *args[2:]]
    with pytest.raises(SystemExit, match=refused.format("SEN_water", "own", "its contract's")):
        calibrate_confidence.main(["--model", str(own), *water])
    assert not out.exists()
