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


def test_scene_offsets_per_tile_find_the_one_displaced_tile() -> None:
    """Keyed by tile, one tile of a well-labelled scene displaced by (-4, 2) px is corrected
    alone; the spread and minimum-residual rules keep the other tiles' labels."""
    rng = np.random.default_rng(7)
    recs = [shifted_record(rng, bias=(1, 0), name=f"t{i}", scene="scene-a") for i in range(3)]
    recs[1] = dataclasses.replace(
        shifted_record(rng, bias=(-3, 2), name="t1", scene="scene-a"), offset_xy_px=(1.0, 0.0)
    )
    samples = harness.make_samples(recs, 8, template=24, search=56, rng=rng)
    pred = harness.run_method(samples, harness.classical_map_fn("ncc"), name="ncc")
    keys = [s.record for s in samples]
    current = {r.name: (1.0, 0.0) for r in recs}
    found = scene_bias.scene_offsets(
        pred, current, 8.0, 4, keys=keys, max_mad_px=1.0, min_residual_px=1.0
    )
    assert [f.scene for f in found] == ["t0", "t1", "t2"] and found[1].n_samples == 8
    assert found[1].corrected and found[1].offset_xy_px == pytest.approx((-3.0, 2.0), abs=0.3)
    assert not found[0].corrected and not found[2].corrected  # residual ~0 < 1 px
    assert found[0].offset_xy_px == found[2].offset_xy_px == (1.0, 0.0)
    # per scene, the displaced tile's matches are a third: the median stays at the scene's
    (scene,) = scene_bias.scene_offsets(pred, {"scene-a": (1.0, 0.0)}, 8.0, 4)
    assert scene.residual_xy_px == pytest.approx((0.0, 0.0), abs=0.3)
    # a spread limit below the matcher's own scatter keeps every label
    tight = scene_bias.scene_offsets(pred, current, 8.0, 4, keys=keys, max_mad_px=-1.0)
    assert not any(f.corrected for f in tight)
    with pytest.raises(ValueError, match="keys has 3 entries"):
        scene_bias.scene_offsets(pred, current, keys=keys[:3])


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


def test_measure_offsets_cli_per_tile_prints_tile_offsets(capsys: pytest.CaptureFixture) -> None:
    if not DATA_3MOS.is_dir():
        pytest.skip(f"3MOS sample not found at {DATA_3MOS}")
    from scripts import measure_offsets

    found = measure_offsets.main(
        [
            "--data",
            f"3mos:{DATA_3MOS}:SEN_city",
            "--per-tile",
            "--samples-per-pair",
            "4",
            "--scene-offset",
            "SEN_city=-0.02,0.76",
        ]
    )
    out = capsys.readouterr().out
    assert [f.scene for f in found] == [f"SEN_city/{k}" for k in range(10)]
    assert "| tile |" in out and "tile_offsets_px: {" in out
    # SEN_city is well registered: most tiles keep the scene offset they were given
    kept = [f for f in found if not f.corrected]
    assert len(kept) >= 7 and all(f.offset_xy_px == (-0.02, 0.76) for f in kept)
    with pytest.raises(SystemExit, match="not in --data"):
        measure_offsets.main(["--data", f"3mos:{DATA_3MOS}:SEN_city", "--scene-offset", "X=1,2"])
