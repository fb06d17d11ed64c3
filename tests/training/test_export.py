"""Export of a trained checkpoint: valid ONNX, full contract, torch/onnxruntime parity."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sar_optical_matcher.model.contract import METADATA_KEY, ModelContract
from sar_optical_matcher.model.runtime import read_contract
from tests.training.test_loop import tiny_config, tiny_datasets
from training.checkpoint import load_checkpoint
from training.cli import main
from training.config import config_hash
from training.export import export_checkpoint
from training.loop import BEST, LAST, Trainer, build_matcher


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    Trainer(tiny_config(), tiny_datasets(), out).fit()
    return out


def test_export_writes_valid_onnx_with_contract_and_parity(run_dir, tmp_path):
    path, contract = export_checkpoint(run_dir / LAST, tmp_path / "m.onnx", version="9.9")
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    parsed = ModelContract.from_json(meta[METADATA_KEY])
    state = load_checkpoint(run_dir / LAST)
    assert parsed == contract and parsed.version == "9.9" and parsed.descriptor_size == 16
    assert parsed.sar.mean == pytest.approx(state["specs"]["sar"]["mean"])  # training stats
    assert parsed.optical.std == pytest.approx(state["specs"]["optical"]["std"])
    assert parsed.sar.mean != 0.5  # not the paper's default: computed from the training set
    t = parsed.training
    assert t["config_hash"] == config_hash(tiny_config()) and t["epochs"] == 2
    assert t["onnx_parity_max_abs_diff"] < 1e-4 and t["seed"] == 0
    assert "val_acc_1_3px" in t["validation"] and t["torch_version"] == torch.__version__
    assert t["data_sources"] == ["synthetic:tiny"]
    data = tiny_datasets()  # the run's splits, by scene: what trained, what only validated
    assert t["train_scenes"] == sorted(set(data.train.scenes)) != t["validation_scenes"]
    assert t["validation_scenes"] == sorted(set(data.val.scenes)) == t["held_out_scenes"]
    assert not set(t["train_scenes"]) & set(t["validation_scenes"])
    json.dumps(t, allow_nan=False)  # strict JSON

    # the exported SAR branch gives the dense map of the trained torch encoder
    matcher = build_matcher(tiny_config())
    matcher.load_state_dict(state["model"])
    matcher.eval()
    sar = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(3))
    opt = torch.randn(1, 1, 128, 128, generator=torch.Generator().manual_seed(4))
    got_o, got_s = session.run(None, {"optical": opt.numpy(), "sar": sar.numpy()})
    assert got_s.shape == (1, 16, 129, 129) and got_o.shape == (1, 16, 1, 1)
    with torch.no_grad():
        z = matcher.sar.encoder(sar[:, :, 10:138, 37:165])  # the raw code (contract: not unit)
    np.testing.assert_allclose(got_s[0, :, 10, 37], z[0].numpy(), atol=1e-4)


def test_cli_export_and_errors(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["export", "--checkpoint", str(run_dir / BEST), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["path"] == str(out) and out.stat().st_size > 1000
    assert printed["map_smoothing_px"] == read_contract(out).map_smoothing_px == 0.0
    smoothed = tmp_path / "smoothed.onnx"
    argv = ["export", "--checkpoint", str(run_dir / BEST), "--out", str(smoothed)]
    assert main([*argv, "--map-smoothing-px", "1.25"]) == 0
    capsys.readouterr()
    assert read_contract(smoothed).map_smoothing_px == 1.25
    assert main([*argv[:-1], str(tmp_path / "y.onnx"), "--map-smoothing-px", "-1"]) == 2
    assert "map_smoothing_px must be a number in 0..8" in capsys.readouterr().err
    assert not (tmp_path / "y.onnx").exists()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "not a SAR-Optical Matcher checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_parity_failure_removes_the_file(run_dir, tmp_path):
    from training.export import export_checked

    state = load_checkpoint(run_dir / LAST)
    matcher = build_matcher(tiny_config())
    matcher.load_state_dict(state["model"])
    contract = ModelContract("m", "1", descriptor_size=16)
    with pytest.raises(ValueError, match="differs from torch"):
        export_checked(
            matcher.optical.encoder,
            matcher.sar.encoder,
            contract,
            tmp_path / "p.onnx",
            tolerance=-1.0,
        )
    assert not list(tmp_path.iterdir())
    # over an earlier model: a failed check keeps it (it was replaced first, then deleted)
    good = tmp_path / "good.onnx"
    export_checked(matcher.optical.encoder, matcher.sar.encoder, contract, good)
    before = good.read_bytes()
    with pytest.raises(ValueError, match="the file was not written"):
        export_checked(matcher.optical.encoder, matcher.sar.encoder, contract, good, tolerance=-1.0)
    assert good.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "good.onnx"
    ]


def test_cli_export_to_a_folder_or_inside_a_file_is_a_clear_error(run_dir, tmp_path, capsys):
    argv = ["export", "--checkpoint", str(run_dir / BEST), "--out"]
    assert main([*argv, str(tmp_path)]) == 2
    assert "is a folder; give the model file" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main([*argv, str(tmp_path / "afile" / "m.onnx")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_cli_evaluate_refuses_an_empty_split_and_a_config_that_does_not_fit(
    run_dir, tmp_path, capsys
):
    """An empty split reported NaN with exit 0 (and non-strict JSON); a --config whose model
    does not fit the checkpoint dumped torch's size-mismatch traceback."""
    from training.config import save_config

    small = ["--set", "data.sources=[{kind: synthetic, n_scenes: 2, size_px: 300, seed: 0}]"]
    argv = ["evaluate", "--checkpoint", str(run_dir / BEST), "--out", str(tmp_path / "ev")]
    empty = [*small, "--set", "data.split_fractions=[1.0, 0.0, 0.0]", "--split", "test"]
    assert main([*argv, *empty]) == 2
    assert "the test split is empty under this config" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()
    other = tmp_path / "other.yaml"
    save_config(tiny_config(model={"widths": [4, 8, 8, 16]}), other)
    assert main([*argv, "--config", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"the weights in {run_dir / BEST} do not fit the model built here (" in err
    assert "shape mismatch(es): sar.encoder." in err and "leave --config out" in err
    assert "Traceback" not in err


def test_cli_refuses_arguments_it_would_ignore(run_dir, tmp_path, capsys):
    """export took --config and --set (and its help offered --config) but never read them, so
    `--set name=x` exported under the checkpoint's name; `evaluate --max-pairs 0` printed NaN
    figures with exit 0; `lr-find --steps 3` was refused only after the data were built."""
    from pathlib import Path

    tiny = str(Path(__file__).resolve().parents[2] / "training" / "configs" / "tiny.yaml")
    argv = ["export", "--checkpoint", str(run_dir / BEST), "--out", str(tmp_path / "m.onnx")]
    for extra in (["--set", "name=renamed"], ["--config", tiny]):
        with pytest.raises(SystemExit) as exc:
            main([*argv, *extra])
        assert exc.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(run_dir / BEST), "--max-pairs", "0"])
    assert "--max-pairs: must be an integer >= 1, got '0'" in capsys.readouterr().err
    lr = ["lr-find", "--config", tiny, "--out", str(tmp_path / "lr")]
    assert main([*lr, "--steps", "3"]) == 2
    assert "--steps >= 5, got 1e-07, 1 and 3" in capsys.readouterr().err
    assert not (tmp_path / "lr").exists()


def test_cli_export_of_a_checkpoint_this_code_cannot_rebuild_is_one_line(run_dir, tmp_path, capsys):
    """A checkpoint from another code version (renamed, missing or resized weights, or a config
    key this code does not know) ended in torch's RuntimeError traceback, one line per key."""
    from training.checkpoint import save_checkpoint

    state = load_checkpoint(run_dir / BEST)
    model = dict(state["model"])
    names = list(model)  # the model's own order, as the message lists them
    model["sar.encoder.extra.weight"] = model.pop(names[0])  # renamed: 1 missing, 1 unexpected
    del model[names[1]]
    model[names[2]] = torch.zeros(3, 3)
    odd = tmp_path / "odd.pt"
    save_checkpoint(dict(state, model=model), odd)
    argv = ["export", "--checkpoint", str(odd), "--out", str(tmp_path / "m.onnx")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: the weights in {odd} do not fit the model built here (")
    assert f"2 missing key(s): {names[0]}, {names[1]}; " in err
    assert "1 unexpected key(s): sar.encoder.extra.weight; " in err
    want = list(state["model"][names[2]].shape)
    assert f"1 shape mismatch(es): {names[2]} [3, 3] in the checkpoint vs {want} here)" in err
    assert err.rstrip().endswith("export it with the code version that trained it, or retrain")
    raw = dict(state["config"])
    raw["model"] = dict(raw["model"], attention_heads=4)  # a key of a newer version
    save_checkpoint(dict(state, config=raw), odd)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {odd}: its config does not build a model with this code (")
    assert "attention_heads" in err and err.count("\n") == 1
    save_checkpoint({"model": model}, odd)
    assert main(argv) == 2
    assert f"{odd} lacks ['config', 'specs', " in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
