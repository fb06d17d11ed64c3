"""Per-scene registration bias: a mislabelled scene is measured, the CLI prints the mapping."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.training.test_evaluation_harness import DATA_3MOS, shifted_record
from training import evaluation_harness as harness
from training import scene_bias


def test_scene_offsets_measure_a_mislabelled_scene_bias() -> None:
    """A scene whose records claim no offset but are displaced by (3, -2) px is measured so."""
    rng = np.random.default_rng(4)
    right = [shifted_record(rng, bias=(1, 0), name=f"a{i}", scene="scene-a") for i in range(3)]
    wrong = [
        dataclasses.replace(
            shifted_record(rng, bias=(3, -2), name=f"b{i}", scene="scene-b"),
            offset_xy_px=(0.0, 0.0),
        )  # fmt: skip
        for i in range(3)
    ]
    samples = harness.make_samples(right + wrong, 6, template=24, search=56, rng=rng)
    pred = harness.run_method(samples, harness.classical_map_fn("ncc"), name="ncc")
    current = {"scene-a": (1.0, 0.0), "scene-b": (0.0, 0.0)}
    a, b = scene_bias.scene_offsets(pred, current, radius_px=8.0, min_used=10)
    assert (a.scene, b.scene) == ("scene-a", "scene-b") and a.n_samples == b.n_samples == 18
    assert a.residual_xy_px == pytest.approx((0.0, 0.0), abs=0.3)
    assert a.offset_xy_px == pytest.approx((1.0, 0.0), abs=0.3) and a.corrected
    assert b.residual_xy_px == pytest.approx((3.0, -2.0), abs=0.3)
    assert b.offset_xy_px == pytest.approx((3.0, -2.0), abs=0.3) and b.n_used >= 10
    # too few usable matches: the scene keeps its offset
    few = scene_bias.scene_offsets(pred, current, radius_px=8.0, min_used=100)
    assert [f.offset_xy_px for f in few] == [(1.0, 0.0), (0.0, 0.0)]
    assert not any(f.corrected for f in few)


def test_measure_offsets_cli_prints_the_table_and_mapping(capsys: pytest.CaptureFixture) -> None:
    if not DATA_3MOS.is_dir():
        pytest.skip(f"3MOS sample not found at {DATA_3MOS}")
    from scripts import measure_offsets

    found = measure_offsets.main(
        ["--data", f"3mos:{DATA_3MOS}:SEN_city,GF3_plain", "--samples-per-pair", "2"]
    )
    out = capsys.readouterr().out
    assert [f.scene for f in found] == ["GF3_plain", "SEN_city"]
    assert "| SEN_city |" in out and "offsets_px: {GF3_plain: [" in out
    city = found[1]
    assert city.corrected and abs(city.residual_xy_px[0]) < 1.0  # SEN_city is well registered
