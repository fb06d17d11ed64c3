"""Pair loaders: real 3MOS tiles, a fake SEN1-2 tree, GDAL rasters, synthetic scenes; splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from PIL import Image

from sar_optical_matcher.core import synthetic as syn
from sar_optical_matcher.synthetic import make_georeferenced_pair, write_pair
from tests.test_rasters import make_tif
from training import sources
from training.sources import PairRecord

THREE_MOS = Path(__file__).resolve().parents[3] / "shared" / "data" / "3mos"


@pytest.fixture(scope="module")
def three_mos() -> list[PairRecord]:
    if not THREE_MOS.is_dir():
        pytest.skip(f"3MOS sample not found at {THREE_MOS}")
    return sources.load_3mos(THREE_MOS)


def test_3mos_all_pairs_scenes_and_sensors(three_mos):
    assert len(three_mos) == 140
    scenes = {r.scene for r in three_mos}
    assert len(scenes) == 14 and "SEN_city" in scenes and "Redarsat_hills" in scenes
    assert {r.sensor for r in three_mos} == {"SEN", "GF3", "RCM", "Redarsat"}
    for r in three_mos:
        assert r.sar.shape == r.optical.shape == (256, 256)
        assert r.sar.dtype == r.optical.dtype == np.float32
        assert r.sar_scale == "db" and r.source == "3mos"
        assert 0 <= r.sar.min() and r.sar.max() <= 255 and r.optical.max() <= 255
        assert r.offset_xy_px == ((2.0, 0.0) if r.sensor == "GF3" else (0.0, 0.0))
    assert len({r.name for r in three_mos}) == 140


def test_3mos_luminance_matches_the_png(three_mos):
    rgb = np.asarray(Image.open(THREE_MOS / "SEN_city" / "3_optical.png"), dtype=np.float64)
    rec = next(r for r in three_mos if r.name == "3mos/SEN_city/3")
    np.testing.assert_allclose(rec.optical, rgb @ [0.299, 0.587, 0.114], atol=1e-3)
    sar = np.asarray(Image.open(THREE_MOS / "SEN_city" / "3_sar.png"))
    np.testing.assert_array_equal(rec.sar, sar.astype(np.float32))


def test_3mos_filters_and_unknown_scene():
    if not THREE_MOS.is_dir():
        pytest.skip("3MOS sample not found")
    recs = sources.load_3mos(THREE_MOS, sensors=["GF3"])
    assert len(recs) == 30 and {r.scene for r in recs} == {"GF3_city", "GF3_plain", "GF3_water"}
    assert len(sources.load_3mos(THREE_MOS, scenes=["SEN_water"])) == 10
    with pytest.raises(ValueError, match="SEN_atlantis"):
        sources.load_3mos(THREE_MOS, scenes=["SEN_atlantis"])
    measured = sources.load_3mos(
        THREE_MOS, scenes=["GF3_plain", "SEN_city"], offsets_px={"GF3_plain": [-2.8, -0.7]}
    )
    assert {r.scene: r.offset_xy_px for r in measured} == {
        "GF3_plain": (-2.8, -0.7), "SEN_city": (0.0, 0.0)
    }  # fmt: skip
    with pytest.raises(ValueError, match="offsets_px names scenes"):
        sources.load_3mos(THREE_MOS, offsets_px={"GF3_atlantis": [1, 2]})


def test_3mos_and_sen12_layout_errors_are_named(tmp_path, monkeypatch):
    """A wrong root or sensor filter used to load 0 pairs silently (training went on with the
    other sources alone); a tile without a number failed with int()'s own message."""
    with pytest.raises(ValueError, match="no 3MOS tile pairs under"):
        sources.load_3mos(tmp_path)  # e.g. root= one level too high: no <SENSOR>_<scene>/
    # the default's relative root, run from another folder: say where it looked
    with pytest.raises(ValueError, match=f"looked in {tmp_path.parent.resolve()}/shared/data/3mos"):
        monkeypatch.chdir(tmp_path)
        sources.load_3mos("../shared/data/3mos")
    scene = tmp_path / "SEN_x"
    scene.mkdir()
    rgb = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(rgb).save(scene / "0_optical.png")
    Image.fromarray(rgb[..., 0]).save(scene / "0_sar.png")
    assert [r.name for r in sources.load_3mos(tmp_path)] == ["3mos/SEN_x/0"]
    with pytest.raises(ValueError, match=r"sensors \['S1'\] not in .*have \['SEN'\]"):
        sources.load_3mos(tmp_path, sensors=["S1"])
    Image.fromarray(rgb).save(scene / "preview_optical.png")
    with pytest.raises(ValueError, match=r"holds \['preview_optical.png'\], not named <k>_opt"):
        sources.load_3mos(tmp_path)
    with pytest.raises(ValueError, match="no SEN1-2 patch pairs under"):
        sources.load_sen12(tmp_path)


def test_3mos_tile_offsets_replace_the_scene_offset_of_one_tile():
    if not THREE_MOS.is_dir():
        pytest.skip("3MOS sample not found")
    recs = sources.load_3mos(
        THREE_MOS,
        scenes=["GF3_plain", "SEN_city"],
        offsets_px={"GF3_plain": [-2.8, -0.7]},
        tile_offsets_px={"GF3_plain/3": [-9.8, -0.8], "SEN_city/0": [0.5, 1]},
    )
    got = {r.name: r.offset_xy_px for r in recs}
    assert got["3mos/GF3_plain/3"] == (-9.8, -0.8) and got["3mos/SEN_city/0"] == (0.5, 1.0)
    others = {v for k, v in got.items() if k not in ("3mos/GF3_plain/3", "3mos/SEN_city/0")}
    assert others == {(-2.8, -0.7), (0.0, 0.0)}  # the other 18 tiles keep their scene's
    # a tile key that names no loaded tile (typo, or its scene not selected) is an error
    for bad in ({"GF3_plain/30": [1, 2]}, {"SEN_water/0": [1, 2]}, {"GF3_plain": [1, 2]}):
        with pytest.raises(ValueError, match="tile_offsets_px names tiles"):
            sources.load_3mos(THREE_MOS, scenes=["GF3_plain"], tile_offsets_px=bad)


def fake_sen12(root: Path) -> None:
    """Two seasons, three scenes, 2 + 2 + 1 patches (64 px), one s1 patch without a twin."""
    rng = np.random.default_rng(0)
    layout = {
        ("ROIs1158_spring", 1): [30, 31],
        ("ROIs1158_spring", 2): [5],
        ("ROIs2017_winter", 1): [7, 8],
    }
    for (roi, n), patches in layout.items():
        for k in patches:
            for s, shape in (("s1", (64, 64)), ("s2", (64, 64, 3))):
                folder = root / roi / f"{s}_{n}"
                folder.mkdir(parents=True, exist_ok=True)
                img = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(img).save(folder / f"{roi}_{s}_{n}_p{k}.png")
    orphan = root / "ROIs1158_spring" / "s1_2" / "ROIs1158_spring_s1_2_p99.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(orphan)


def test_sen12_pairs_twins_and_scene_keys(tmp_path):
    fake_sen12(tmp_path)
    with pytest.warns(UserWarning, match="1 s1 patches without an s2 twin"):
        recs = sources.load_sen12(tmp_path)
    assert len(recs) == 5
    assert sorted({r.scene for r in recs}) == [
        "ROIs1158_spring_1", "ROIs1158_spring_2", "ROIs2017_winter_1",
    ]  # fmt: skip
    rec = next(r for r in recs if r.name.endswith("ROIs2017_winter_s1_1_p8"))
    s1 = np.asarray(Image.open(tmp_path / "ROIs2017_winter/s1_1/ROIs2017_winter_s1_1_p8.png"))
    s2 = np.asarray(Image.open(tmp_path / "ROIs2017_winter/s2_1/ROIs2017_winter_s2_1_p8.png"))
    np.testing.assert_array_equal(rec.sar, s1)
    np.testing.assert_allclose(rec.optical, s2 @ np.array([0.299, 0.587, 0.114]), atol=1e-3)
    assert all(
        r.sar_scale == "db" and r.source == "sen12" and r.sar.shape == (64, 64) for r in recs
    )


def test_sen12_scenes_filter_by_scene_or_season_and_names_the_available_ones(tmp_path):
    """SEN1-2 could only be loaded whole (every season of the root): no way to evaluate or
    calibrate on chosen scenes, as 3mos:ROOT:SCENES allows."""
    fake_sen12(tmp_path)
    winter = sources.load_sen12(tmp_path, scenes=["ROIs2017_winter_1"])
    assert [r.name for r in winter] == [
        "sen12/ROIs2017_winter_s1_1_p7", "sen12/ROIs2017_winter_s1_1_p8",
    ]  # fmt: skip
    with pytest.warns(UserWarning, match="1 s1 patches without an s2 twin"):
        spring = sources.load_sen12(tmp_path, scenes=["ROIs1158_spring"])  # a season folder
    assert sorted(r.scene for r in spring) == ["ROIs1158_spring_1"] * 2 + ["ROIs1158_spring_2"]
    with pytest.raises(ValueError) as err:
        sources.load_sen12(tmp_path, scenes=["ROIs2017_winter_1", "ROIs1158_summer_3"])
    assert str(err.value) == (
        f"SEN1-2 scenes ['ROIs1158_summer_3'] not in {tmp_path}; have the season folders "
        "['ROIs1158_spring', 'ROIs2017_winter'] and the scenes ROIs1158_spring_1, "
        "ROIs1158_spring_2, ROIs2017_winter_1"
    )
    with pytest.raises(ValueError, match="non-empty list of names"):
        sources.load_sen12(tmp_path, scenes="ROIs2017_winter_1")  # a string, not a list


def test_sen12_scenes_in_the_data_option_of_evaluate_and_calibrate(tmp_path):
    from sar_optical_matcher.model import runtime
    from scripts import calibrate_confidence
    from scripts.evaluate import load_records

    fake_sen12(tmp_path)
    with pytest.warns(UserWarning, match="1 s1 patches without an s2 twin"):  # spring_2's p99
        recs = load_records(f"sen12:{tmp_path}:ROIs2017_winter_1,ROIs1158_spring_2", 0)
    assert sorted({r.scene for r in recs}) == ["ROIs1158_spring_2", "ROIs2017_winter_1"]
    assert len(recs) == 3
    with pytest.warns(UserWarning, match="without an s2 twin"):
        assert len(load_records(f"sen12:{tmp_path}", 0)) == 5  # the old form: every scene
    with pytest.raises(ValueError, match=r"SEN1-2 scenes \['ROIs9_x_1'\] not in .*season"):
        load_records(f"sen12:{tmp_path}:ROIs9_x_1", 0)
    out = tmp_path / "c.onnx"
    argv = ["--model", str(runtime.default_model_path()), "--out", str(out)]
    with pytest.raises(SystemExit, match=r"error: SEN1-2 scenes \['ROIs9_x_1'\] not in "):
        calibrate_confidence.main([*argv, "--data", f"sen12:{tmp_path}:ROIs9_x_1"])
    assert not out.exists()


def test_gdal_pair_is_resampled_onto_the_optical_grid_with_its_georeference(tmp_path):
    # zero misregistration: the stored georeference is the truth, so GDAL's resampling must
    # reproduce the truth warp (SAR stored in another CRS and pixel size)
    pair = make_georeferenced_pair(
        96, np.random.default_rng(1), sar_crs_epsg=32632, max_shift_px=0, max_affine=0,
        sar_pixel_size_ratio=1.3, looks=None,
    )  # fmt: skip
    paths = write_pair(pair, tmp_path, sar_dtype="uint16")
    rec = sources.load_gdal_pair(paths["optical"], paths["sar"], scene="s1")
    assert rec.sar.shape == rec.optical.shape == (96, 96)
    assert rec.sar_scale == "linear" and rec.scene == "s1" and rec.source == "gdal"
    assert rec.valid is not None and rec.valid[4:-4, 4:-4].all()
    expected = syn.warp_sar_to_optical(np.sqrt(pair.sar_sigma0), pair.truth) / 1e-3
    inner = np.s_[4:-4, 4:-4]
    np.testing.assert_allclose(rec.sar[inner], expected[inner], rtol=0.02, atol=2)
    lum = (pair.optical * 10000) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(rec.optical, lum, atol=1.0)
    assert not [p for p in gdal.listdir("/vsimem/") if "sources_" in p.name]


def test_gdal_pair_nodata_and_byte_scale(tmp_path):
    pair = make_georeferenced_pair(64, np.random.default_rng(2), max_shift_px=0, max_affine=0)
    paths = write_pair(pair, tmp_path, sar_dtype="uint8")
    ds = gdal.Open(str(paths["sar"]), gdal.GA_Update)
    arr = ds.GetRasterBand(1).ReadAsArray()
    arr[:, : arr.shape[1] // 2] = 0  # nodata on the western half
    ds.GetRasterBand(1).WriteArray(arr)
    ds = None
    rec = sources.load_gdal_pair(paths["optical"], paths["sar"], optical_band=2)
    assert rec.sar_scale == "db"
    x_nodata = pair.truth.sar_gt[0] + pair.truth.sar_shape[1] // 2 * pair.truth.sar_gt[1]
    col = int((x_nodata - pair.truth.optical_gt[0]) / pair.truth.optical_gt[1])
    assert not rec.valid[:, : col - 1].any() and rec.valid[:, col + 1 :].all()
    assert np.isnan(rec.sar[~rec.valid]).all()
    opt_ds = gdal.Open(str(paths["optical"]))  # keep the dataset alive while its band is used
    band2 = opt_ds.GetRasterBand(2).ReadAsArray()
    np.testing.assert_array_equal(rec.optical, band2.astype(np.float32))
    with pytest.raises(ValueError, match=r"band 2 does not exist: pair_sar\.tif has 1 band\(s\)"):
        sources.load_gdal_pair(paths["optical"], paths["sar"], sar_band=2)
    with pytest.raises(ValueError, match=r"band 4 does not exist: pair_optical\.tif has 3 band"):
        sources.load_gdal_pair(paths["optical"], paths["sar"], optical_band=4)


def test_gdal_pair_with_a_coarser_sar_is_evaluated_on_the_matching_grid(tmp_path):
    """SAR pixel 3x the optical's: the record is on the plugin's automatic matching grid (the
    SAR's pixel size, the optical averaged onto it); MATCH_PIXEL_SIZE = the optical's keeps
    the optical grid."""
    pair = make_georeferenced_pair(
        192, np.random.default_rng(4), max_shift_px=0, max_affine=0, sar_pixel_size_ratio=3.0,
        looks=None,
    )  # fmt: skip
    paths = write_pair(pair, tmp_path, sar_dtype="float32")
    rec = sources.load_gdal_pair(paths["optical"], paths["sar"])
    assert rec.sar.shape == rec.optical.shape == (64, 64)
    lum = (pair.optical * 10000) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(rec.optical, lum.reshape(64, 3, 64, 3).mean(axis=(1, 3)),
                               rtol=1e-3, atol=0.5)  # fmt: skip
    fine = sources.load_gdal_pair(paths["optical"], paths["sar"], match_pixel_size=10.0)
    assert fine.sar.shape == fine.optical.shape == (192, 192)
    # the same SAR on both grids: the fine one's 3 x 3 block means are the coarse record
    blocks = fine.sar.reshape(64, 3, 64, 3).mean(axis=(1, 3))
    inner = np.s_[2:-2, 2:-2]
    ok = np.isfinite(blocks[inner]) & np.isfinite(rec.sar[inner])
    assert ok.mean() > 0.95
    assert np.corrcoef(blocks[inner][ok], rec.sar[inner][ok])[0, 1] > 0.95


def test_gdal_pair_with_a_rotated_optical_keeps_its_axes_on_the_coarser_grid(tmp_path):
    """A rotated optical geotransform (30 degrees), SAR pixel 3x the optical's on the same axes:
    the record is on the plugin's coarser grid (``rasters.scaled_grid``: same origin and axes),
    so its optical is the 3 x 3 block means of the optical as stored and its SAR the SAR as
    stored. A north-up resampling would turn the image and change its size."""
    rng = np.random.default_rng(7)
    optical = rng.random((192, 192)).astype(np.float32) * 100.0
    optical[:9, :9] = -1.0  # nodata: the coarse pixels over it are left out
    c, s = 10.0 * np.cos(np.radians(30.0)), 10.0 * np.sin(np.radians(30.0))
    gt = (500000.0, c, s, 4000000.0, s, -c)
    blocks = optical.reshape(64, 3, 64, 3)
    expected = blocks.mean(axis=(1, 3))  # 3 x 3 means (the nodata blocks are not compared)
    sar = (expected[::-1] + 5.0).astype(np.float32)  # any content: flipped, so it differs
    make_tif(tmp_path / "opt.tif", optical, gt, nodata=-1.0)
    make_tif(tmp_path / "sar.tif", sar, (gt[0], 3 * c, 3 * s, gt[3], 3 * s, -3 * c))
    rec = sources.load_gdal_pair(tmp_path / "opt.tif", tmp_path / "sar.tif", sar_scale="linear")
    assert rec.optical.shape == rec.sar.shape == (64, 64)
    assert not rec.valid[:3, :3].any() and rec.valid[3:, 3:].all()
    np.testing.assert_allclose(rec.optical[3:, 3:], expected[3:, 3:], rtol=1e-4)
    np.testing.assert_allclose(rec.sar[3:, 3:], sar[3:, 3:], rtol=1e-4)


def test_gdal_pair_with_a_complex_sar_band_is_refused(tmp_path):
    """An SLC band would lose its imaginary part in the warp: refused with the way out."""
    pair = make_georeferenced_pair(48, np.random.default_rng(3), max_shift_px=0, max_affine=0)
    paths = write_pair(pair, tmp_path, sar_dtype="uint16")
    src = gdal.Open(str(paths["sar"]))
    slc_path = tmp_path / "slc.tif"
    slc = gdal.GetDriverByName("GTiff").Create(
        str(slc_path), src.RasterXSize, src.RasterYSize, 1, gdal.GDT_CFloat32
    )
    slc.SetGeoTransform(src.GetGeoTransform())
    slc.SetProjection(src.GetProjection())
    amp = src.GetRasterBand(1).ReadAsArray().astype(np.float32)
    slc.GetRasterBand(1).WriteArray((amp * np.exp(1j * 0.7)).astype(np.complex64))
    slc = src = None
    with pytest.raises(ValueError, match=r"band 1 of slc\.tif is complex \(CFloat32\).*SNAP"):
        sources.load_gdal_pair(paths["optical"], slc_path)
    # given as the optical, it is named the wrong file, not a SAR to be detected
    with pytest.raises(ValueError, match=r"slc\.tif is complex \(CFloat32\), but the OPTICAL"):
        sources.load_gdal_pair(slc_path, paths["sar"])


def test_synthetic_records_are_coregistered_and_deterministic():
    recs = sources.load_synthetic(2, 64, seed=3)
    again = sources.load_synthetic(1, 64, seed=3)
    assert [r.scene for r in recs] == ["synthetic-0", "synthetic-1"]
    np.testing.assert_array_equal(recs[0].sar, again[0].sar)
    pair = syn.make_pair(64, np.random.default_rng([3, 0]), max_shift_px=8.0)
    r = recs[0]
    assert r.sar_scale == "linear" and r.sar.shape == r.optical.shape == (64, 64)
    assert np.isfinite(r.sar).all() and r.sar.min() > 0
    # co-registered: the SAR's bright (built-up) pixels are where the truth says
    log_ref = np.log(pair.sigma0_optical_grid)
    assert np.corrcoef(np.log(r.sar).ravel(), log_ref.ravel())[0, 1] > 0.6
    shifted = np.corrcoef(np.log(r.sar)[:, 2:].ravel(), log_ref[:, :-2].ravel())[0, 1]
    assert shifted < np.corrcoef(np.log(r.sar).ravel(), log_ref.ravel())[0, 1] - 0.1


def record(scene: str, i: int) -> PairRecord:
    z = np.zeros((4, 4), np.float32)
    return PairRecord(z, z, "db", scene, "X", "test", f"{scene}/{i}")


def test_split_never_shares_scenes_follows_fractions_and_is_deterministic():
    recs = [record(f"s{k}", i) for k in range(20) for i in range(1 + k % 3)]
    train, val, test = sources.split_by_scene(recs, (0.6, 0.2, 0.2), seed=1, holdout_scenes=["s3"])
    scene_sets = [{r.scene for r in part} for part in (train, val, test)]
    assert not (
        scene_sets[0] & scene_sets[1]
        or scene_sets[0] & scene_sets[2]
        or scene_sets[1] & scene_sets[2]
    )
    assert "s3" in scene_sets[2]
    assert len(train) + len(val) + len(test) == len(recs)
    free = len(recs) - 1  # s3 has one record
    assert abs(len(train) - 0.6 * free) <= 3 and abs(len(val) - 0.2 * free) <= 3
    again = sources.split_by_scene(recs, (0.6, 0.2, 0.2), seed=1, holdout_scenes=["s3"])
    assert [[r.name for r in p] for p in again] == [[r.name for r in p] for p in (train, val, test)]
    other = sources.split_by_scene(recs, (0.6, 0.2, 0.2), seed=2)
    assert {r.scene for r in other[0]} != scene_sets[0]
    no_test = sources.split_by_scene(recs, (0.8, 0.2, 0.0), seed=0)
    assert no_test[2] == [] and len(no_test[1]) > 0
    with pytest.raises(ValueError, match="fractions"):
        sources.split_by_scene(recs, (1.0, -0.1, 0.1))


def test_validation_scenes_are_forced_into_validation_and_count_towards_it():
    recs = [record(f"s{k}", i) for k in range(10) for i in range(2)]
    train, val, test = sources.split_by_scene(
        recs, (0.8, 0.2, 0.0), seed=0, holdout_scenes=["s0"], validation_scenes=["s9"]
    )
    assert "s9" in {r.scene for r in val} and {r.scene for r in test} == {"s0"}
    assert len(val) == 4 and len(train) == 14  # s9 counts: one more scene tops val up to 20 %
    with pytest.raises(ValueError, match="both held out and validation"):
        sources.split_by_scene(recs, (0.8, 0.2, 0.0), holdout_scenes=["s1"],
                               validation_scenes=["s1"])  # fmt: skip


def test_forced_scenes_that_are_not_in_the_data_are_refused():
    """A misspelt held-out scene used to match nothing: the real one was trained on."""
    recs = [record(f"s{k}", i) for k in range(6) for i in range(2)]
    with pytest.raises(ValueError, match=r"data.holdout_scenes names scenes \['s5x'\]"):
        sources.split_by_scene(recs, (1.0, 0.0, 0.0), holdout_scenes=["s5x"])
    with pytest.raises(ValueError, match=r"data.validation_scenes .*\['s9'\].*s0, s1"):
        sources.split_by_scene(recs, (1.0, 0.0, 0.0), validation_scenes=["s0", "s9"])
    train, val, test = sources.split_by_scene(
        recs, (1.0, 0.0, 0.0), holdout_scenes=["s5"], validation_scenes=["s0"]
    )
    assert {r.scene for r in test} == {"s5"} and {r.scene for r in val} == {"s0"}
    assert len(train) == 8


def test_calibration_scenes_are_the_default_validation_scenes(three_mos):
    """`make train-default` calibrates the confidence on validation scenes (and, through
    ``--training-tiles``, the training split's), never on a held-out test scene."""
    import re
    from types import SimpleNamespace

    from training.config import load_config

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "training" / "configs" / "default.yaml")
    n_syn = sum(s.get("n_scenes", 0) for s in cfg.data.sources if s["kind"] == "synthetic")
    synthetic = [SimpleNamespace(scene=f"synthetic-{i}") for i in range(n_syn)]  # 1 record each
    train, val, test = sources.split_by_scene(
        [*three_mos, *synthetic], cfg.data.split_fractions, cfg.seed, cfg.data.holdout_scenes,
        cfg.data.validation_scenes,
    )  # fmt: skip
    makefile = (root / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("CALIBRATION_DATA"))
    calib = set(re.search(r"3mos:[^:]+:(\S+)", line).group(1).split(","))
    val_real = {r.scene for r in val} - {s.scene for s in synthetic}
    assert calib and calib <= val_real
    assert not calib & {r.scene for r in train + test}
    assert "--training-tiles training/configs/default.yaml --samples-per-pair" in makefile
