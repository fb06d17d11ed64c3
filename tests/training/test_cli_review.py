"""Review findings on the training command line, its config and its checkpoints.

* a YAML syntax error (config file or ``--set``) was a ``yaml.parser`` traceback, exit 1;
* a source option of the wrong type (``n_scenes=abc``) was a ``TypeError`` traceback, and a
  loader's own refusal did not say which source;
* ``seed`` had no range (-1 failed in numpy, 1e20 in torch, neither naming the key), and
  ``max_keypoints_per_scene`` 0, ``min_distance_px`` -5, ``random_crops_per_scene`` -1 were taken;
* ``export --out`` the checkpoint itself replaced the run's weights by the model, exit 0;
* ``evaluate`` and ``train --resume`` of a checkpoint lacking entries were ``KeyError``
  tracebacks; ``evaluate --out`` a file failed only after the whole evaluation;
* checkpoints were rw------- whatever the umask (``mkstemp``);
* the model contract could hold NaN, which strict JSON readers refuse.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training.test_loop import tiny_config, tiny_datasets
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.cli import main
from training.config import apply_overrides, load_config
from training.loop import BEST, LAST, Trainer

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "training" / "configs" / "default.yaml"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    Trainer(tiny_config(), tiny_datasets(), out).fit(max_epochs=1)
    return out


def test_yaml_syntax_errors_are_one_line_with_the_place(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  sources: [1, 2\nseed: 1\n")
    with pytest.raises(ValueError, match=rf"config file {bad} is not valid YAML: .* line 3"):
        load_config(bad)
    with pytest.raises(ValueError, match=r"override 'optim.epochs=\[1,': the value is not valid"):
        apply_overrides({}, ["optim.epochs=[1,"])
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: config file {bad} is not valid YAML") and "Traceback" not in err
    argv = ["train", "--config", str(DEFAULT), "--set", "seed=[1,", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "the value is not valid YAML" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=-1", r"seed must be an integer in \[0, 2\*\*32 - 1\], got -1"),
        ("seed=99999999999999999999", r"seed must be an integer in \[0, 2\*\*32 - 1\]"),
        ("data.max_keypoints_per_scene=0", "data.max_keypoints_per_scene must be >= 1"),
        ("data.min_distance_px=-5", "data.min_distance_px must be >= 0 px"),
        ("data.random_crops_per_scene=-1", "data.random_crops_per_scene must be >= 0"),
    ],
)
def test_config_ranges_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(DEFAULT, [override])


def test_largest_seed_is_taken() -> None:
    assert load_config(DEFAULT, ["seed=4294967295"]).seed == 2**32 - 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.sources.1.n_scenes=abc", r"data.sources\[1\] \(kind synthetic\): option n_scenes "
         r"must be an integer, got 'abc'"),
        ("data.sources.1.size_px=true", "option size_px must be an integer, got True"),
        ("data.sources.0.root=5", r"data.sources\[0\] \(kind 3mos\): option root must be text"),
        ("data.sources.0.sensors=5", "option sensors must be a list of text or null, got 5"),
        ("data.sources.0.sensors=[1]", r"option sensors must be a list of text or null, got \[1\]"),
        ("data.sources.0.offsets_px=[1]", r"option offsets_px must be a mapping or null"),
    ],
)  # fmt: skip
def test_source_options_of_the_wrong_type_are_named(override: str, message: str) -> None:
    from training.data import load_records

    cfg = load_config(DEFAULT, [override])
    assert [s["kind"] for s in cfg.data.sources] == ["3mos", "synthetic"]
    with pytest.raises(ValueError, match=message):
        load_records(cfg.data)


# Source 0 is a small synthetic source here, not the 3MOS tiles: the loaders run in order, and
# without ../shared/data/3mos (a clone elsewhere) source 0 would be refused first.
SMALL_FIRST = "data.sources.0={kind: synthetic, n_scenes: 1, size_px: 64, seed: 0}"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.sources.1.size_px=8", r"data.sources\[1\] \(kind synthetic\): synthetic source: "
         "size_px must be an integer >= 16, got 8"),
        ("data.sources.1.seed=-2", r"data.sources\[1\] \(kind synthetic\): .*seed must be an "
         "integer >= 0, got -2"),
    ],
)  # fmt: skip
def test_a_loaders_own_refusal_names_its_source(override: str, message: str) -> None:
    from training.data import load_records

    cfg = load_config(DEFAULT, [SMALL_FIRST, override])
    assert [s["kind"] for s in cfg.data.sources] == ["synthetic", "synthetic"]
    with pytest.raises(ValueError, match=message):
        load_records(cfg.data)


def test_export_over_a_checkpoint_is_refused_and_keeps_it(run_dir: Path, tmp_path, capsys):
    ckpt = tmp_path / BEST
    ckpt.write_bytes((run_dir / BEST).read_bytes())
    other = tmp_path / LAST
    other.write_bytes((run_dir / LAST).read_bytes())
    for out in (ckpt, other):  # itself, or the run's other checkpoint
        assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"--out {out} is a training checkpoint: the model would replace it" in err
        assert load_checkpoint(out)["epoch"] == 1  # still a checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([BEST, LAST])


def test_checkpoints_lacking_entries_are_one_line(run_dir: Path, tmp_path: Path, capsys):
    state = load_checkpoint(run_dir / LAST)
    only_model = tmp_path / "only_model.pt"
    save_checkpoint({"model": state["model"]}, only_model)
    no_specs = tmp_path / "no_specs.pt"
    save_checkpoint({k: v for k, v in state.items() if k != "specs"}, no_specs)
    for path, lacks in ((only_model, "['config', 'specs']"), (no_specs, "['specs']")):
        assert main(["evaluate", "--checkpoint", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"error: {path} lacks {lacks}: not a training checkpoint" in err, err
        assert "Traceback" not in err
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint({k: v for k, v in state.items() if k != "config_hash"}, run / LAST)
    with pytest.raises(CheckpointError, match=r"lacks \['config_hash'\]: not a training"):
        Trainer(tiny_config(), tiny_datasets(), run).fit(resume=True)


def test_evaluate_out_is_checked_before_matching(run_dir, tmp_path, capsys, monkeypatch):
    import training.evaluate as ev

    def no_matching(*args, **kwargs):
        raise AssertionError("the evaluation ran before --out was checked")

    monkeypatch.setattr(ev, "matching_accuracy", no_matching)
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (afile, f"--out {afile} is a file; give a folder for the evaluation"),
        (afile / "sub", f"--out {afile / 'sub'}: {afile} is a file, not a folder"),
    ]
    for out, said in cases:
        assert main(["evaluate", "--checkpoint", str(run_dir / BEST), "--out", str(out)]) == 2
        assert said in capsys.readouterr().err
    assert afile.read_text() == "x"


def test_evaluate_writes_its_report(run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "new" / "eval"
    argv = ["evaluate", "--checkpoint", str(run_dir / BEST), "--out", str(out), "--max-pairs", "2"]
    assert main(argv) == 0
    capsys.readouterr()
    report = json.loads((out / "evaluate_val.json").read_text())
    assert report["split"] == "val" and report["checkpoint"] == str(run_dir / BEST)
    assert [p.name for p in out.iterdir()] == ["evaluate_val.json"]


def test_checkpoints_take_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        save_checkpoint({"x": torch.zeros(2)}, tmp_path / "a.pt")
        os.umask(0o077)
        save_checkpoint({"x": torch.zeros(2)}, tmp_path / "b.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.pt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.pt").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt"]


def test_contract_json_is_strict() -> None:
    from sar_optical_matcher.model.contract import ModelContract

    good = ModelContract("m", "1", training={"precision_at_0.5": None})
    assert json.loads(good.to_json())["training"]["precision_at_0.5"] is None
    bad = ModelContract("m", "1", training={"precision_at_0.5": float("nan")})
    with pytest.raises(ValueError, match="holds a NaN or infinite number"):
        bad.to_json()


def test_demo_refuses_an_infinite_match_pixel_size() -> None:
    """inf passed ``>= 0``, then Processing refused it and QGIS segfaulted on exit (rc 139)."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    cmd = [sys.executable, str(ROOT / "scripts" / "demo.py"), "--match-pixel-size", "inf"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--match-pixel-size must be 0 (automatic) or a positive finite size, got inf" in (
        done.stderr
    )
