"""Regression tests of the validation split the trainer selects its best epoch on.

* ``data.validation_scenes``: a named scene whose records all yield no patch pair was only
  warned of, so the best epoch was selected on the other scenes, or on none.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.training.test_data import tiny_records
from training.config import DataConfig
from training.data import build_datasets


def _records() -> list:
    big = tiny_records(3)  # scene0..scene2, 256 px
    small = [
        dataclasses.replace(r, scene="small", name=f"small_{i}")
        for i, r in enumerate(tiny_records(2, size=64, seed=1))
    ]
    return big + small


def _cfg(validation: list[str]) -> DataConfig:
    return DataConfig(
        split_fractions=(1.0, 0.0, 0.0), validation_scenes=validation, max_keypoints_per_scene=4
    )


def test_a_validation_scene_without_patch_pairs_is_an_error() -> None:
    """Before: 'records yield no patch pair and are skipped' in the log, and the run selected
    its best epoch on scene2 alone (or, with validation_scenes [small], wrote no best
    checkpoint at all)."""
    records = _records()
    ok = build_datasets(_cfg(["scene2"]), 0, records=records)
    assert set(ok.val.scenes) == {"scene2"} and len(ok.val) > 0
    n_val = len(ok.val)

    with pytest.raises(ValueError) as info:
        build_datasets(_cfg(["scene2", "small"]), 0, records=records)
    msg = str(info.value)
    assert msg.startswith(
        "data.validation_scenes ['small'] yield no validation pair (small_0: 64x64 px is smaller "
        "than the 256 px search region (data.search_size_px); small_1: 64x64 px is smaller"
    )
    assert (
        f"the best epoch would be selected on {n_val} pairs of the other scenes ['scene2'] "
        "only, not on the scenes named" in msg
    )
    assert msg.endswith("or remove the scenes from data.validation_scenes")

    with pytest.raises(ValueError, match=r"\['small'\] yield no validation pair .*: no epoch "
                       r"would be selected \(the validation split has no pair\)"):  # fmt: skip
        build_datasets(_cfg(["small"]), 0, records=records)
