"""Regression tests of the evaluation's ground truth on georeferenced (gdal) pairs.

* ``evaluate.py --scene-offset``: a gdal pair's shift is given in optical pixels (the one
  ``make_synthetic_pair.py`` prints); a pair whose SAR pixel is > 1.5x the optical's is matched
  on the coarser grid, and the shift was taken as grid pixels (twice the truth at 2x);
* ``measure_offsets.py``: its offsets, fed back to ``--scene-offset``, are in the same unit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scripts import evaluate, measure_offsets
from training import evaluation_harness as harness

pytest.importorskip("osgeo")


@pytest.fixture(scope="module")
def coarse_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], np.ndarray]:
    """A 640 px optical and a SAR of twice its pixel, off by one shift of > 5 optical px."""
    from sar_optical_matcher.synthetic import make_georeferenced_pair, write_pair

    # speckled: CFOG misses most matches on a speckle-free SAR
    pair = make_georeferenced_pair(
        640, np.random.default_rng(3), max_shift_px=12, max_affine=0, sar_pixel_size_ratio=2.0
    )
    shift = np.asarray(pair.truth.shift_px, float)
    assert np.abs(shift).min() > 5.0  # the test needs a shift whose half is clearly wrong
    return write_pair(pair, tmp_path_factory.mktemp("coarse")), shift


def _cfog_errors(paths: dict[str, Path], offset: str) -> tuple[np.ndarray, np.ndarray]:
    args = evaluate.parse_args(
        ["--data", f"gdal:{paths['optical']},{paths['sar']}", "--samples-per-pair", "12",
         "--seed", "2", "--scene-offset", offset]
    )  # fmt: skip
    samples = evaluate.build_samples(args)
    pred = harness.run_method(samples, harness.classical_map_fn("cfog"), name="cfog")
    return pred.error_px, pred.pred_offset_xy_px - pred.true_offset_xy_px


def test_scene_offset_of_a_pair_on_a_coarser_grid_is_in_optical_pixels(coarse_pair, capsys):
    """Before: the printed shift was applied as grid pixels; CFOG's median error 5.0 px, 0 of
    12 within 3 px. Now the truth is the shift / 2 and CFOG solves the pair."""
    paths, shift = coarse_pair
    errors, residual = _cfog_errors(paths, f"pair_optical={shift[0]},{shift[1]}")
    assert np.median(errors) < 1.5 and np.mean(errors <= 3.0) >= 0.75
    assert "matched on a grid of 2 optical pixels a pixel" in capsys.readouterr().out
    # a deliberately wrong truth (the opposite sign) is scored as far off as it is
    wrong, _ = _cfog_errors(paths, f"pair_optical={-shift[0]},{-shift[1]}")
    assert np.median(wrong) > 0.8 * np.hypot(*shift)  # |2 shift| / 2 grid px, less CFOG's slack
    assert np.mean(wrong <= 3.0) == 0.0


def test_measure_offsets_gives_a_coarse_pair_its_shift_in_optical_pixels(coarse_pair, capsys):
    """Before: grid pixels, (-5.95, -3.12) for (-9.94, -6.32), which --scene-offset reads as
    optical pixels."""
    paths, shift = coarse_pair
    found = measure_offsets.main(
        ["--data", f"gdal:{paths['optical']},{paths['sar']}", "--samples-per-pair", "16",
         "--radius", "12"]
    )  # fmt: skip
    (f,) = found
    assert f.corrected
    # the synthetic SAR's layover adds ~1 optical px in x (towards the sensor, in the east)
    np.testing.assert_allclose(f.offset_xy_px, shift, atol=2.0)
    assert f"offsets_px: {{pair_optical: [{f.offset_xy_px[0]}, {f.offset_xy_px[1]}]}}" in (
        capsys.readouterr().out
    )


def test_a_misspelt_method_or_a_model_of_other_sizes_fails_before_the_data_are_read(
    tmp_path, monkeypatch, capsys
):
    """Before: every pair was loaded and cut into samples first (minutes for large rasters);
    with ``--methods cfog,learned`` and sizes the model cannot match, CFOG ran in full and
    then 'learned' failed."""
    read: list[object] = []
    monkeypatch.setattr(evaluate, "build_samples", lambda args: read.append(args) or [])
    out = str(tmp_path / "eval")
    with pytest.raises(SystemExit, match=r"unknown methods \['nccc'\]; choose from learned"):
        evaluate.main(["--data", "synthetic:1:256", "--methods", "nccc,cfog", "--out", out])
    assert read == []
    argv = ["--data", "synthetic:1:256", "--methods", "cfog,learned", "--device", "cpu"]
    assert evaluate.main([*argv, "--template", "64", "--search", "128", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "matches 128 px templates in 256 px regions, not --template 64 --search 128" in err
    assert read == [] and not (tmp_path / "eval").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # without 'learned' (whose model gives the sizes not given: test_scripts_review4)
        (
            ["--methods", "cfog", "--template", "300"],
            "--template 300 --search 256: the template side must be >= 2",
        ),
        (["--max-rotation", "90"], "--max-rotation 90 --max-scale 0: the rotation must be in"),
        (["--max-scale", "0.5"], "--max-rotation 0 --max-scale 0.5: the rotation must be in"),
    ],
)
def test_sample_geometry_errors_name_the_options(extra, message, capsys):
    """Before: 'need n_per_record >= 1 and 2 <= template <= search, got 1, 300, 256' after the
    data were read (the harness's argument names, not the options)."""
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--data", "synthetic:1", *extra])
    assert message in capsys.readouterr().err


def test_results_json_names_the_model_that_was_evaluated(tmp_path):
    """Before: config.model was None for the shipped model, and a path for --model, with no
    hash or version: two runs of 'learned' could not be told apart."""
    import hashlib
    import json

    from sar_optical_matcher.model.runtime import DEFAULT_MODEL_PATH

    if not DEFAULT_MODEL_PATH.is_file():
        pytest.skip("no shipped model")
    argv = ["--data", "synthetic:1:256", "--methods", "learned", "--device", "cpu", "--maps", "0"]
    assert evaluate.main([*argv, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    used = doc["config"]["model_used"]
    assert used["path"] == str(DEFAULT_MODEL_PATH.resolve())
    assert used["sha256"] == hashlib.sha256(DEFAULT_MODEL_PATH.read_bytes()).hexdigest()
    assert used["name"] == "sar-optical-matcher-default" and used["version"]
    assert used["confidence_model"] in ("contract", "default")


def test_a_scene_offset_is_refused_for_two_gdal_pairs_of_one_optical_stem(coarse_pair, tmp_path):
    """make_synthetic_pair.py names every optical 'pair_optical.tif': two such pairs were one
    scene, and one --scene-offset silently became the truth of both."""
    import shutil

    paths, _ = coarse_pair
    other = tmp_path / "other"
    other.mkdir()
    for kind in ("optical", "sar"):
        shutil.copy(paths[kind], other / paths[kind].name)
    specs = [f"gdal:{paths['optical']},{paths['sar']}"]
    specs.append(f"gdal:{other / paths['optical'].name},{other / paths['sar'].name}")
    records = [r for spec in specs for r in evaluate.load_records(spec, 0)]
    assert [r.scene for r in records] == ["pair_optical", "pair_optical"]
    with pytest.raises(SystemExit, match=r"one shift to 2 gdal pairs whose optical files share"):
        evaluate.with_scene_offsets(records, ["pair_optical=1,2"])
    assert evaluate.with_scene_offsets(records, []) == records  # without an offset: both kept
    # and the two stay two records (their per-record residuals were one group)
    names = [r.name for r in evaluate.unique_names(records)]
    assert names == [f"{records[0].name}#1", f"{records[0].name}#2"]
    assert evaluate.unique_names(records[:1])[0].name == records[0].name
