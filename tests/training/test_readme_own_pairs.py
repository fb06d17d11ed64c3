"""The README's "Training on your own pairs" recipe: its config loads and splits as it says."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import yaml

from sar_optical_matcher.synthetic import read_truth
from scripts import make_synthetic_pair
from training.config import config_from_dict
from training.data import load_records, split_records

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RECIPE = ROOT / "training" / "configs" / "default.yaml"


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("### Training on your own pairs")
    end = text.index("\n## ", start)
    return text[start:end]


def _yaml_block(section: str) -> dict:
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "the section has no yaml block"
    return yaml.safe_load(block.group(1))


def _as_the_readme_says(block: dict) -> dict:
    """The shipped recipe with the README block's top-level keys and data keys put in."""
    raw = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    for key, value in block.items():
        if key == "data":
            raw["data"].update(value)
        else:
            raw[key] = value
    return raw


def test_readme_config_trains_on_aligned_pairs(tmp_path, monkeypatch) -> None:
    """The synthetic pairs the README suggests are aligned (truth shift 0), its command writes
    them where the yaml looks for them (run from the folder the commands run in; without
    ``--out .`` they went to build/synthetic/ and training found no area1_optical.tif), and
    the config splits area1/area2 into training and area3 into validation, as it says."""
    section = _section()
    assert "cp training/configs/default.yaml my.yaml" in section
    command = re.search(r"make_synthetic_pair\.py ([^`]+)`", section)
    assert command, "the README's trial-run command"
    args = command.group(1).split()
    assert "--max-shift 0 --affine 0" in command.group(1) and "--out ." in command.group(1)
    raw = _as_the_readme_says(_yaml_block(section))
    monkeypatch.chdir(tmp_path)
    for spec in raw["data"]["sources"]:
        stem = spec["scene"]
        as_written = [stem if a == "areaN" else stem[-1] if a == "N" else a for a in args]
        make_synthetic_pair.main(["--size", "512", *as_written])
        assert Path(spec["optical"]).is_file() and Path(spec["sar"]).is_file()
        truth = read_truth(tmp_path / f"{stem}_truth.json")
        probe = np.array([[100.0, 200.0], [400.0, 50.0], [256.0, 256.0]])
        np.testing.assert_allclose(truth.misregistration_at(probe), 0.0, atol=1e-9)
    cfg = config_from_dict(raw)
    train, val, test = split_records(load_records(cfg.data), cfg.data, cfg.seed)
    assert sorted(r.scene for r in train) == ["area1", "area2"]
    assert [r.scene for r in val] == ["area3"]
    assert test == []


def test_readme_config_keeps_the_shipped_recipe_but_its_data() -> None:
    """Only name, version and the data sources and splits differ from the shipped recipe: the
    config.py defaults (vector latent, hinge loss, w_adv 1, 100 epochs) are not what it trains."""
    block = _yaml_block(_section())
    assert set(block) == {"name", "version", "data"}
    assert set(block["data"]) == {
        "sources", "validation_scenes", "holdout_scenes", "split_fractions"
    }  # fmt: skip
    mine = config_from_dict(_as_the_readme_says(block))
    shipped = config_from_dict(yaml.safe_load(RECIPE.read_text(encoding="utf-8")))
    assert mine.model == shipped.model and mine.model.latent == "map"
    assert mine.loss == shipped.loss and mine.loss.dense_kind == "infonce"
    assert mine.optim == shipped.optim and mine.optim.epochs == 40
    assert mine.augment == shipped.augment
    assert mine.data.holdout_scenes == [] and mine.data.validation_scenes == ["area3"]
