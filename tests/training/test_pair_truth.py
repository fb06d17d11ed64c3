"""evaluate.py --truth: a gdal pair's ground-truth transform, against pairs built from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from training import sources

OPT_GT = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)
#: optical px -> true SAR px at one SAR pixel a optical pixel: 1 % scale, 1 degree, a shift
TRUE = np.array([[1.01, -0.0175, 6.0], [0.0175, 0.995, -5.0]])


def _write(path: Path, data: np.ndarray, gt: tuple[float, ...]) -> Path:
    from osgeo import gdal, osr

    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[1], data.shape[0], 1,
                                              gdal.GDT_Float32)  # fmt: skip
    ds.SetGeoTransform(gt)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    ds.GetRasterBand(1).SetNoDataValue(-9999.0)
    ds.GetRasterBand(1).WriteArray(data)
    ds = None
    return path


def make_pair(folder: Path, ratio: float, size: int = 320) -> tuple[Path, Path, np.ndarray]:
    """An optical texture and a "SAR" that is the same texture seen through ``TRUE`` with
    SAR pixels ``ratio`` optical pixels large; the SAR's stored georeference is the optical's
    scaled by ``ratio`` (same origin), so it is off by an affine misregistration of 1-9 px.

    Returns the optical and SAR paths and the (2, 3) optical px -> SAR px truth.
    """
    rng = np.random.default_rng(3)
    pad = 64
    world = ndimage.gaussian_filter(rng.normal(size=(size + 2 * pad, size + 2 * pad)), 3.0)
    world = (world - world.mean()) / world.std()
    optical = world[pad:-pad, pad:-pad]
    truth = TRUE.copy()
    truth[:, :2] /= ratio
    truth[:, 2] /= ratio
    n_sar = int(round(size / ratio))
    yy, xx = np.mgrid[0:n_sar, 0:n_sar] + 0.5  # SAR pixel centres -> optical px through TRUE
    inv = np.linalg.inv(truth[:, :2])
    s = np.stack([xx.ravel(), yy.ravel()], axis=1) - truth[:, 2]
    p = s @ inv.T
    sar = ndimage.map_coordinates(world, [p[:, 1] - 0.5 + pad, p[:, 0] - 0.5 + pad], order=3)
    sar_gt = (OPT_GT[0], OPT_GT[1] * ratio, 0.0, OPT_GT[3], 0.0, OPT_GT[5] * ratio)
    folder.mkdir(parents=True, exist_ok=True)
    opt_path = _write(folder / f"opt_{ratio:g}.tif", optical.astype(np.float32), OPT_GT)
    sar_path = _write(folder / f"sar_{ratio:g}.tif",
                      sar.reshape(n_sar, n_sar).astype(np.float32), sar_gt)  # fmt: skip
    return opt_path, sar_path, truth


def _errors(out: Path) -> np.ndarray:
    return np.array(json.loads((out / "results.json").read_text())["errors_px"]["ncc"])


@pytest.mark.parametrize("ratio", [1.0, 0.5, 2.0])
def test_truth_takes_out_a_known_affine_misregistration(tmp_path: Path, ratio: float) -> None:
    """Same texture in both rasters, the SAR off by an affine of its georeference: NCC scores
    every sample within 1 px against the truth file, and a median error above 4.5 optical px
    against the georeference alone. A SAR twice finer is averaged onto the optical grid (2 x 2
    looks), one twice coarser is matched on its own grid (errors in its pixels)."""
    from scripts import evaluate

    opt, sar, truth = make_pair(tmp_path, ratio)
    truth_file = tmp_path / "truth.json"
    truth_file.write_text(json.dumps({"optical_px_to_sar_px": truth.tolist()}))
    common = ["--data", f"gdal:{opt},{sar}", "--methods", "ncc", "--template", "48",
              "--search", "96", "--samples-per-pair", "24", "--seed", "4"]  # fmt: skip
    assert evaluate.main([*common, "--truth", f"{opt.stem}={truth_file}",
                          "--out", str(tmp_path / "t")]) == 0  # fmt: skip
    with_truth = _errors(tmp_path / "t")
    assert evaluate.main([*common, "--out", str(tmp_path / "g")]) == 0
    georeference = _errors(tmp_path / "g")
    assert len(with_truth) == len(georeference) == 24
    assert with_truth.max() < 1.0, with_truth
    # the georeference is 1-9 optical px off over the raster (errors in grid px)
    assert np.median(georeference) * max(ratio, 1.0) > 4.5, georeference
    config = json.loads((tmp_path / "t" / "results.json").read_text())["config"]
    assert config["truth"] == [f"{opt.stem}={truth_file}"]


def test_a_make_synthetic_pair_truth_takes_out_its_misregistration(tmp_path: Path) -> None:
    """make_synthetic_pair.py's own truth file (shift, affine and quadratic terms): the
    shipped model's median error falls from the misregistration (several px) to under 1 px."""
    from scripts import evaluate, make_synthetic_pair

    paths = make_synthetic_pair.main(["--size", "512", "--seed", "5", "--max-shift", "12",
                                      "--affine", "0.01", "--polynomial", "2",
                                      "--out", str(tmp_path)])  # fmt: skip
    common = ["--data", f"gdal:{paths['optical']},{paths['sar']}", "--methods", "learned",
              "--samples-per-pair", "12", "--seed", "2"]  # fmt: skip
    assert evaluate.main([*common, "--truth", f"pair_optical={paths['truth']}",
                          "--out", str(tmp_path / "t")]) == 0  # fmt: skip
    assert evaluate.main([*common, "--out", str(tmp_path / "g")]) == 0
    med = {
        k: json.loads((tmp_path / k / "results.json").read_text())["summaries"][0]["median_px"]
        for k in ("t", "g")
    }
    assert med["t"] < 1.0 and med["g"] > 4.0, med


def test_truth_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bad truth files and misuse are one line each (exit 2 or a SystemExit message), before
    any matching."""
    from scripts import evaluate

    opt, sar, truth = make_pair(tmp_path, 1.0, size=200)
    good = tmp_path / "t.json"
    good.write_text(json.dumps({"optical_px_to_sar_px": truth.tolist()}))
    cases = {
        "[1, 2]": "not a JSON object",
        "{": "cannot be read as JSON",
        '{"optical_px_to_sar_px": [[1, 0], [0, 1]]}': "must be 2 rows of 3 numbers",
        '{"optical_px_to_sar_px": [[1, 2, 0], [2, 4, 0]]}': "is singular",
        '{"optical_px_to_sar_px": [[1, 0, 0], [0, 1, NaN]]}': "must be 2 rows of 3 numbers",
        '{"nominal": {}, "optical_shape": [1, 1]}': "not a complete make_synthetic_pair truth",
        '{"shift": [1, 2]}': "holds neither form",
    }
    base = ["--data", f"gdal:{opt},{sar}", "--methods", "ncc", "--template", "48", "--search",
            "96", "--out", str(tmp_path / "out")]  # fmt: skip
    for k, (text, message) in enumerate(cases.items()):
        bad = tmp_path / f"bad{k}.json"
        bad.write_text(text)
        with pytest.raises(SystemExit, match=message):
            evaluate.main([*base, "--truth", f"{opt.stem}={bad}"])
    with pytest.raises(SystemExit, match=r"needs SCENE=FILE\.json"):
        evaluate.main([*base, "--truth", str(good)])
    with pytest.raises(SystemExit, match=r"no gdal pair in --data has an optical file of stem "
                       r"'other'.*their stems: \['opt_1'\]"):  # fmt: skip
        evaluate.main([*base, "--truth", f"other={good}"])
    with pytest.raises(SystemExit, match="both give opt_1's truth"):
        evaluate.main([*base, "--truth", f"opt_1={good}", "--scene-offset", "opt_1=1,2"])
    with pytest.raises(SystemExit, match=r"opt_1=\.\.\. is given twice"):
        evaluate.main([*base, "--truth", f"opt_1={good}", "--truth", f"opt_1={good}"])
    synth = ["--data", "synthetic:1:256", "--methods", "ncc", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match="a truth is for gdal pairs; their stems: none"):
        evaluate.main([*synth, "--truth", f"synthetic_0={good}"])
    # a make_synthetic_pair truth knows its rasters: another pair's is refused
    from scripts import make_synthetic_pair

    other = make_synthetic_pair.main(["--size", "256", "--seed", "1", "--out",
                                      str(tmp_path / "s")])  # fmt: skip
    assert evaluate.main([*base, "--truth", f"opt_1={other['truth']}"]) == 2
    assert "is for a 256x256 px optical raster" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sample_through_truth_is_bilinear_at_the_true_positions(tmp_path: Path) -> None:
    """The record's SAR pixel is the SAR's bilinear value at the truth's position (computed
    here by hand at a few pixels); NaN next to a nodata pixel."""
    from sar_optical_matcher import rasters

    opt, sar, truth = make_pair(tmp_path, 1.0, size=120)
    t = sources.PairTruth(lambda xy: np.asarray(xy) @ truth[:, :2].T + truth[:, 2], "x", "affine")
    info = rasters.open_raster(str(sar))
    grid = rasters.open_raster(str(opt))
    got = sources.sample_through_truth(info, 1, t.optical_px_to_sar_px, grid, 1.0, 1)
    data = rasters.read_window(info, 1, 0, 0, info.width, info.height)[0]
    for r, c in ((10, 20), (60, 61), (100, 5)):
        x, y = t.optical_px_to_sar_px(np.array([[c + 0.5, r + 0.5]]))[0] - 0.5
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        want = ((1 - fy) * ((1 - fx) * data[y0, x0] + fx * data[y0, x0 + 1])
                + fy * ((1 - fx) * data[y0 + 1, x0] + fx * data[y0 + 1, x0 + 1]))  # fmt: skip
        assert got[r, c] == pytest.approx(want, abs=1e-5)
    assert np.isnan(got[:, -1]).all()  # the truth's shift takes the last column off the SAR
