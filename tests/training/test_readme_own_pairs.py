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

README = Path(__file__).resolve().parents[2] / "README.md"


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("### Training on your own pairs")
    end = text.index("\n## ", start)
    return text[start:end]


def _yaml_block(section: str) -> dict:
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "the section has no yaml block"
    return yaml.safe_load(block.group(1))


def test_readme_config_trains_on_aligned_pairs(tmp_path) -> None:
    """The synthetic pairs the README suggests are aligned (truth shift 0) and the config
    splits area1/area2 into training and area3 into validation, as its comment says."""
    section = _section()
    assert "--max-shift 0 --affine 0" in section
    raw = _yaml_block(section)
    for spec in raw["data"]["sources"]:
        stem = spec["scene"]
        make_synthetic_pair.main(
            ["--size", "512", "--seed", stem[-1], "--max-shift", "0", "--affine", "0",
             "--out", str(tmp_path), "--stem", stem]
        )  # fmt: skip
        assert Path(spec["optical"]).name == f"{stem}_optical.tif"
        assert Path(spec["sar"]).name == f"{stem}_sar.tif"
        spec["optical"] = str(tmp_path / spec["optical"])
        spec["sar"] = str(tmp_path / spec["sar"])
        truth = read_truth(tmp_path / f"{stem}_truth.json")
        probe = np.array([[100.0, 200.0], [400.0, 50.0], [256.0, 256.0]])
        np.testing.assert_allclose(truth.misregistration_at(probe), 0.0, atol=1e-9)
    cfg = config_from_dict(raw)
    train, val, test = split_records(load_records(cfg.data), cfg.data, cfg.seed)
    assert sorted(r.scene for r in train) == ["area1", "area2"]
    assert [r.scene for r in val] == ["area3"]
    assert test == []
