"""Patch cutting, preprocessing identity with inference, statistics, batches and the plan."""

from __future__ import annotations

import numpy as np
import pytest

from sar_optical_matcher.core.preprocessing import PreprocessSpec, preprocess
from sar_optical_matcher.core.synthetic import render_sar, render_scene
from training.config import AugmentConfig, DataConfig
from training.data import (
    PatchSet,
    build_patch_set,
    cut_records,
    epoch_plan,
    make_batch,
    negative_windows,
    repeated,
    split_labelled,
    standardise,
    training_specs,
)
from training.sources import PairRecord


def tiny_records(n: int, size: int = 256, seed: int = 0, offset=(0.0, 0.0)) -> list[PairRecord]:
    """``n`` synthetic co-registered scenes (optical luminance, linear SAR amplitude)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        scene = render_scene(size, rng)
        optical = scene.optical.mean(axis=2).astype(np.float32)
        sar = render_sar(scene, rng, looks=4.0)
        out.append(
            PairRecord(
                sar,
                optical,
                "linear",
                f"scene{i}",
                "synthetic",
                "synthetic",
                f"s{seed}_{i}",
                offset_xy_px=offset,
            )
        )
    return out


def tiny_patch_set(n: int, seed: int = 0) -> PatchSet:
    return build_patch_set(tiny_records(n, seed=seed), DataConfig(), np.random.default_rng(0))


def test_tile_record_is_one_pair_and_matches_inference_preprocessing():
    rec = tiny_records(1)[0]
    ps = build_patch_set([rec], DataConfig(), np.random.default_rng(0))
    assert len(ps) == 1 and ps.sar.shape == (1, 256, 256) and ps.optical.shape == (1, 128, 128)
    np.testing.assert_array_equal(ps.true_xy_px, [[64.0, 64.0]])
    sar_spec = PreprocessSpec("sar", mean=0.31, std=0.17)
    opt_spec = PreprocessSpec("optical", mean=0.44, std=0.21)
    # SAR: normalised over the whole 256 region, then cropped; optical: over its 128 crop.
    expect_sar = preprocess(rec.sar, sar_spec, sar_scale="linear")[64:192, 64:192]
    expect_opt = preprocess(rec.optical[64:192, 64:192], opt_spec, sar_scale="db")
    np.testing.assert_allclose(
        standardise(ps.sar[0], sar_spec)[64:192, 64:192], expect_sar, atol=1e-5
    )
    np.testing.assert_allclose(standardise(ps.optical[0], opt_spec), expect_opt, atol=1e-5)


def test_large_scene_cuts_spaced_keypoint_pairs():
    rec = tiny_records(1, size=512, seed=3)[0]
    cfg = DataConfig(max_keypoints_per_scene=10, random_crops_per_scene=2)
    ps = build_patch_set([rec], cfg, np.random.default_rng(0))
    assert 3 <= len(ps) <= 12
    centres = np.array([[int(v) for v in n.split("@")[1].split(",")] for n in ps.names])
    assert ((centres >= 128) & (centres <= 384)).all()
    kp = centres[: len(ps) - 2]
    d = np.abs(kp[:, None] - kp[None]).max(-1) + np.eye(len(kp), dtype=int) * 999
    assert np.hypot(*(kp[:, None] - kp[None]).transpose(2, 0, 1)).min() >= 0 and d.min() >= 90


def test_training_specs_are_the_training_statistics():
    ps = tiny_patch_set(2)
    sar, opt = training_specs(ps, DataConfig())
    assert sar.mean == pytest.approx(float(np.nanmean(ps.sar)), abs=1e-6)
    assert opt.std == pytest.approx(float(np.nanstd(ps.optical)), abs=1e-6)
    assert 0.2 < sar.mean < 0.8 and 0.05 < sar.std < 0.5
    with pytest.raises(ValueError, match="no patch pairs"):
        training_specs(PatchSet(ps.sar[:0], ps.optical[:0], ps.true_xy_px[:0]), DataConfig())


def test_positive_window_follows_record_offset():
    ps = build_patch_set(
        tiny_records(1, offset=(3.0, -2.0)), DataConfig(), np.random.default_rng(0)
    )
    np.testing.assert_array_equal(ps.true_xy_px, [[67.0, 62.0]])
    specs = training_specs(ps, DataConfig())
    b = make_batch(
        ps,
        np.array([0]),
        np.array([1]),
        specs,
        AugmentConfig(flip_p=0, optical_noise_std=0, scale_p=0),
        8,
        np.random.default_rng(0),
    )
    np.testing.assert_allclose(b.sar_target[0, 0].numpy(), ps.sar[0, 62:190, 67:195], atol=0)


def test_negatives_are_far_enough_and_uniform():
    rng = np.random.default_rng(1)
    truth = np.tile([64.0, 64.0], (5000, 1))
    neg = negative_windows(truth, 128, 8, rng)
    assert (np.abs(neg - 64).max(1) >= 8).all() and neg.min() >= 0 and neg.max() <= 128
    assert abs(neg.mean() - 64) < 2


def test_far_negatives_are_found_where_few_windows_qualify():
    """At half the span only the border windows of a centred truth qualify (~3 %): 100
    rejection draws missed them for about 4 % of the pairs and the batch failed."""
    truth = np.tile([64.0, 64.0], (300, 1))
    neg = negative_windows(truth, 128, 64, np.random.default_rng(2))
    assert (np.abs(neg - 64).max(1) >= 64).all() and neg.min() >= 0 and neg.max() <= 128
    assert len({tuple(n) for n in neg}) > 100  # still drawn, not one fixed window
    with pytest.raises(ValueError, match=r"from \[64, 64\] within a 128 px span; lower"):
        negative_windows(truth[:1], 128, 65, np.random.default_rng(2))


def test_labelled_pairs_share_flips_unlabelled_do_not():
    ps = tiny_patch_set(1)
    specs = training_specs(ps, DataConfig())
    aug = AugmentConfig(flip_p=0.5, optical_noise_std=0.0, scale_p=0.0)
    idx = np.zeros(64, dtype=np.int64)
    lab = make_batch(ps, idx, np.ones(64, dtype=np.int64), specs, aug, 8, np.random.default_rng(0))
    unl = make_batch(ps, idx, None, specs, aug, 8, np.random.default_rng(0))

    def flipped(t, ref):  # which of the 4 flips of ref each image is
        v = [ref, ref[:, ::-1], ref[::-1], ref[::-1, ::-1]]
        return np.array([[np.allclose(img, c) for c in v].index(True) for img in t[:, 0].numpy()])

    sar_ref, opt_ref = ps.sar[0, 64:192, 64:192], ps.optical[0]
    same_lab = flipped(lab.sar_target, sar_ref) == flipped(lab.optical_target, opt_ref)
    same_unl = flipped(unl.sar_target, sar_ref) == flipped(unl.optical_target, opt_ref)
    assert same_lab.all() and 0.1 < same_unl.mean() < 0.5  # independent: 1/4 expected
    assert lab.label is not None and unl.label is None


def test_optical_noise_and_scale():
    ps = tiny_patch_set(1)
    specs = training_specs(ps, DataConfig())
    aug = AugmentConfig(flip_p=0.0, optical_noise_std=0.02, scale_p=1.0)
    b = make_batch(ps, np.zeros(16, dtype=np.int64), None, specs, aug, 8, np.random.default_rng(2))
    ratio = b.sar_target[:, 0].numpy() / np.maximum(ps.sar[0, 64:192, 64:192], 1e-3)
    k = np.median(ratio.reshape(16, -1), axis=1)
    assert ((k >= 0.95 - 1e-4) & (k <= 1.05 + 1e-4)).all() and k.std() > 0.005
    t, o = b.optical_target[:, 0].numpy().reshape(16, -1), ps.optical[0].reshape(-1)
    k_opt = t @ o / (o @ o)  # the optical's own (independent) scale
    assert ((k_opt > 0.949) & (k_opt < 1.051)).all() and not np.allclose(k_opt, k, atol=1e-3)
    resid = t - k_opt[:, None] * o
    assert resid.std() == pytest.approx(0.02, rel=0.05)  # noise on the optical only
    sar = ps.sar[0, 64:192, 64:192]
    np.testing.assert_allclose(b.sar_target[:, 0].numpy(), k[:, None, None] * sar, atol=1e-4)


def test_split_and_plan_alternate_and_oversample():
    lab, unl = split_labelled(100, 0.25, seed=4)
    assert len(lab) == 25 and len(unl) == 75 and not set(lab) & set(unl)
    plan = epoch_plan(lab, unl, batch_size=8, seed=4, epoch=0)
    kinds = [p.label is not None for p in plan]
    assert kinds == [True, False] * (len(plan) // 2) and len(plan) == 2 * 10  # ceil(75/8)
    lab_idx = np.concatenate([p.index for p in plan if p.label is not None])
    assert set(lab_idx) == set(lab) and all(len(p.index) == 8 for p in plan)
    labels = np.concatenate([p.label for p in plan if p.label is not None])
    assert 0.35 < labels.mean() < 0.65
    again = epoch_plan(lab, unl, batch_size=8, seed=4, epoch=0)
    assert all((a.index == b.index).all() for a, b in zip(plan, again))
    assert not all((a.index == b.index).all() for a, b in zip(plan, epoch_plan(lab, unl, 8, 4, 1)))
    shards = [plan[0].shard(r, 2) for r in range(2)]
    assert sorted(np.concatenate([s.index for s in shards])) == sorted(plan[0].index)
    only = epoch_plan(np.arange(10), np.arange(0), 4, 0, 0)
    assert all(p.label is not None for p in only) and len(only) == 5  # 20 items / 4


def test_source_repeat_weights_pairs_after_the_labelled_split(tmp_path):
    from training.config import TrainConfig
    from training.data import build_datasets

    cfg = DataConfig(
        sources=[
            {"kind": "synthetic", "n_scenes": 2, "size_px": 256, "seed": 1, "repeat": 3},
            {"kind": "synthetic", "n_scenes": 2, "size_px": 256, "seed": 2},
        ],
        split_fractions=(1.0, 0.0, 0.0),
        random_crops_per_scene=0,
        max_keypoints_per_scene=1,
    )
    data = build_datasets(cfg, 0, cache_dir=tmp_path)
    rep = data.train.repeat
    assert rep is not None and sorted(rep.tolist()) == [1, 1, 3, 3]
    heavy = {n.split("@")[0] for n, r in zip(data.train.names, rep) if r == 3}
    assert len(heavy) == 2 and all(n.startswith("synthetic/seed1/") for n in heavy), heavy
    # the cache keeps the weights
    again = build_datasets(cfg, 0, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.train.repeat, rep)
    # every copy of a pair has its label status: the split is per pair, then repeated
    lab, unl = split_labelled(len(rep), 0.5, seed=0)
    lab_r, unl_r = repeated(lab, rep), repeated(unl, rep)
    assert not set(lab_r) & set(unl_r)
    assert len(lab_r) + len(unl_r) == 8
    for i in range(4):
        assert (lab_r == i).sum() + (unl_r == i).sum() == rep[i]
    np.testing.assert_array_equal(repeated(lab, None), lab)
    # the epoch draws a weighted pair that many times more often
    plan = epoch_plan(repeated(np.arange(4), rep), np.arange(0), 2, 0, 0)
    drawn = np.concatenate([p.index for p in plan])
    counts = np.bincount(drawn, minlength=4)
    np.testing.assert_array_equal(counts, 2 * rep)  # positive + negative of each copy
    for bad in (0, 1.5, "3", True):
        with pytest.raises(ValueError, match="repeat must be an integer >= 1"):
            TrainConfig(data=DataConfig(sources=[{"kind": "synthetic", "repeat": bad}]))


def test_build_datasets_splits_by_scene_and_caches(tmp_path):
    from training.data import build_datasets

    cfg = DataConfig(split_fractions=(0.5, 0.25, 0.25))
    recs = tiny_records(4)
    data = build_datasets(cfg, 0, records=recs)
    scenes = [set(data.train.scenes), set(data.val.scenes), set(data.test.scenes)]
    assert sum(len(s) for s in scenes) == 4 and not (scenes[0] & scenes[1] | scenes[0] & scenes[2])
    assert data.sar_spec.mean == pytest.approx(float(np.nanmean(data.train.sar)))
    # cache: the second call reads the file instead of loading sources
    cfg2 = DataConfig(
        sources=[{"kind": "synthetic", "n_scenes": 2, "size_px": 256, "seed": 1}],
        split_fractions=(0.5, 0.5, 0.0),
    )
    first = build_datasets(cfg2, 0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("patches_*.npz"))) == 1
    again = build_datasets(cfg2, 0, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.train.sar, first.train.sar)
    assert again.sar_spec == first.sar_spec and again.val.names == first.val.names
    with pytest.raises(ValueError, match="kind"):
        build_datasets(DataConfig(sources=[{"kind": "nope"}]), 0)


def test_patch_cache_write_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    """The cache goes through core.files.atomic_output: a write failing part-way (a full disk)
    leaves no partial or temporary file that a later call could read, and that later call
    builds and writes the cache anew."""
    import errno

    from training.data import build_datasets

    cfg = DataConfig(
        sources=[{"kind": "synthetic", "n_scenes": 2, "size_px": 256, "seed": 1}],
        split_fractions=(0.5, 0.5, 0.0),
    )
    real_savez = np.savez

    def savez_then_full(fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 part of an archive")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_then_full)
    with pytest.raises(OSError, match="No space left"):
        build_datasets(cfg, 0, cache_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.setattr(np, "savez", real_savez)
    first = build_datasets(cfg, 0, cache_dir=tmp_path)
    (cache,) = tmp_path.iterdir()
    assert cache.name.startswith("patches_") and cache.suffix == ".npz"
    again = build_datasets(cfg, 0, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.train.sar, first.train.sar)


def test_the_patch_cache_is_not_reused_once_a_source_file_changes(tmp_path):
    """The cache was keyed by the data config and seed only: a gdal pair re-aligned in place
    and trained again into the same --out trained on the old file's patches (the same
    losses to 4 digits). Now the source files' names, sizes and mtimes are in the key: a
    changed file builds anew, an unchanged one reuses the cache, a synthetic source has no
    files to stamp."""
    import os

    from sar_optical_matcher.synthetic import make_georeferenced_pair, write_pair
    from training.data import build_datasets, source_files_stamp

    rng = np.random.default_rng(1)
    specs = []
    for i in range(3):
        pair = make_georeferenced_pair(320, rng, max_shift_px=0, max_affine=0, looks=None)
        paths = write_pair(pair, tmp_path / f"pair{i}")
        specs.append({"kind": "gdal", "optical": str(paths["optical"]), "sar": str(paths["sar"]),
                      "scene": f"area{i}"})  # fmt: skip
    cfg = DataConfig(sources=specs, split_fractions=(0.67, 0.33, 0.0))
    cache = tmp_path / "run"
    first = build_datasets(cfg, 0, cache_dir=cache)
    again = build_datasets(cfg, 0, cache_dir=cache)
    assert len(list(cache.glob("patches_*.npz"))) == 1  # unchanged: read back
    np.testing.assert_array_equal(again.train.sar, first.train.sar)
    moved = make_georeferenced_pair(320, np.random.default_rng(9), max_shift_px=0,
                                    max_affine=0, looks=None)  # fmt: skip
    os.replace(write_pair(moved, tmp_path / "new")["sar"], specs[0]["sar"])  # re-aligned in place
    changed = build_datasets(cfg, 0, cache_dir=cache)
    assert len(list(cache.glob("patches_*.npz"))) == 2
    assert not np.array_equal(changed.train.sar, first.train.sar)
    stamp = source_files_stamp(cfg)
    assert [s[:2] for s in stamp[:2]] == [[specs[0]["optical"], 1], [specs[0]["sar"], 1]]
    assert source_files_stamp(DataConfig(sources=[{"kind": "synthetic", "n_scenes": 2}])) == []


def test_source_specs_gdal_kind_and_option_errors(tmp_path):
    """A ``gdal`` source (one record from load_gdal_pair) failed with "'PairRecord' object is
    not iterable"; a misspelt or missing option failed with the loader's TypeError."""
    from sar_optical_matcher.synthetic import make_georeferenced_pair, write_pair
    from training.data import load_records

    pair = make_georeferenced_pair(
        64, np.random.default_rng(1), max_shift_px=0, max_affine=0, looks=None
    )
    paths = write_pair(pair, tmp_path)
    spec = {"kind": "gdal", "optical": str(paths["optical"]), "sar": str(paths["sar"])}
    recs = load_records(DataConfig(sources=[{**spec, "scene": "g", "repeat": 2}]))
    assert [(r.source, r.scene, r.repeat, r.sar.shape) for r in recs] == [
        ("gdal", "g", 2, (64, 64))
    ]
    with pytest.raises(ValueError, match=r"data.sources\[1\] \(kind synthetic\): unknown opt"):
        load_records(DataConfig(sources=[spec, {"kind": "synthetic", "n_scene": 2}]))
    with pytest.raises(
        ValueError, match=r"sources\[0\] \(kind gdal\): missing option\(s\) \['optical'\]"
    ):
        load_records(DataConfig(sources=[{"kind": "gdal", "sar": str(paths["sar"])}]))


def test_random_windows_move_template_and_sar_window_together() -> None:
    """Positives drawn anywhere in the pair still show the same ground; val gets fixed windows."""
    from training.config import AugmentConfig, DataConfig
    from training.data import build_patch_set, make_batch, unit_spec, with_fixed_windows
    from training.sources import PairRecord

    rng = np.random.default_rng(0)
    img = rng.random((256, 256)).astype(np.float32)
    shifted = np.roll(img, (-2, 3), axis=(0, 1))  # SAR content of optical p at p + (3, -2)
    rec = PairRecord(shifted, img, "db", "s", "x", "synthetic", "r", offset_xy_px=(3.0, -2.0))
    cfg = DataConfig()
    ps = build_patch_set([rec] * 4, cfg, rng)
    no_aug = AugmentConfig(flip_p=0.0, optical_noise_std=0.0, scale_p=0.0)
    specs = (unit_spec("sar", cfg), unit_spec("optical", cfg))
    batch = make_batch(
        ps,
        np.arange(4),
        np.ones(4, np.int64),
        specs,
        no_aug,
        8,
        rng,
        random_windows=True,
        unit_optical=unit_spec("optical", cfg),
    )
    sar, opt = batch.sar_target[:, 0].numpy(), batch.optical_target[:, 0].numpy()
    for s, o in zip(sar, opt):
        inner = (slice(4, -4), slice(4, -4))  # avoid the wrap-around border of np.roll
        assert np.corrcoef(s[inner].ravel(), o[inner].ravel())[0, 1] > 0.99
    assert len({o.tobytes() for o in opt}) == 4  # four different windows, not the centre
    fixed = with_fixed_windows(ps, cfg, np.random.default_rng(1))
    assert not np.allclose(fixed.true_xy_px, ps.true_xy_px)
    corner = (fixed.true_xy_px[0] - [3.0, -2.0]).astype(int)
    window = img[corner[1] : corner[1] + 128, corner[0] : corner[0] + 128]
    assert np.corrcoef(window.ravel(), fixed.optical[0].ravel())[0, 1] > 0.999


@pytest.mark.parametrize(("transpose_p", "radius"), [(0.0, 16), (0.5, 16), (1.0, 64)])
def test_neighbourhood_regions_follow_flips(transpose_p: float, radius: int) -> None:
    """The true window's position inside a flipped (transposed) neighbourhood moves with the
    pixels, and the template shows the same ground as that window."""
    from training.config import AugmentConfig, DataConfig
    from training.data import build_patch_set, make_batch, unit_spec
    from training.sources import PairRecord

    rng = np.random.default_rng(3)
    img = rng.random((256, 256)).astype(np.float32)
    rec = PairRecord(img, img, "db", "s", "x", "synthetic", "r")
    cfg = DataConfig()
    ps = build_patch_set([rec] * 6, cfg, rng)
    aug = AugmentConfig(flip_p=0.5, transpose_p=transpose_p, optical_noise_std=0.0, scale_p=0.0)
    specs = (unit_spec("sar", cfg), unit_spec("optical", cfg))
    b = make_batch(
        ps,
        np.arange(6),
        np.ones(6, np.int64),
        specs,
        aug,
        8,
        rng,
        random_windows=True,
        unit_optical=unit_spec("optical", cfg),
        dense_radius=radius,
    )
    assert b.sar_region is not None and b.region_true_xy is not None
    assert b.sar_region.shape == (6, 1, 128 + 2 * radius, 128 + 2 * radius)
    pairs = zip(b.sar_region[:, 0], b.region_true_xy, b.sar[:, 0], b.optical_target[:, 0])
    for region, (x, y), window, template in pairs:
        np.testing.assert_allclose(region[y : y + 128, x : x + 128].numpy(), window.numpy())
        # SAR = optical here: the (stretched) template is the same ground as the window
        assert np.corrcoef(template.numpy().ravel(), window.numpy().ravel())[0, 1] > 0.999
    if radius == 64:  # the whole search region: with transpose_p 1 every one is transposed
        flipped = [
            any(np.allclose(r, v) for v in (t, t[::-1], t[:, ::-1], t[::-1, ::-1]))
            for r, t in zip(b.sar_region[:, 0].numpy(), ps.sar.transpose(0, 2, 1))
        ]
        assert all(flipped)


def test_gamma_and_sar_noise_augmentation() -> None:
    """Contrast changes are per image (the two modalities independent, a SAR window and its
    neighbourhood alike) within the range; SAR noise has a per-image std within [0, max]."""
    from training.data import unit_spec

    rng = np.random.default_rng(4)
    img = (0.05 + 0.9 * rng.random((256, 256))).astype(np.float32)
    rec = PairRecord(img, img, "db", "s", "x", "synthetic", "r")
    cfg = DataConfig()
    ps = build_patch_set([rec], cfg, rng)
    specs = (unit_spec("sar", cfg), unit_spec("optical", cfg))
    sar_ref, opt_ref = ps.sar[0, 64:192, 64:192], ps.optical[0]
    off = dict(flip_p=0.0, optical_noise_std=0.0, scale_p=0.0)
    idx, lab = np.zeros(64, np.int64), np.ones(64, np.int64)

    aug = AugmentConfig(**off, gamma_p=0.5, gamma_range=(0.7, 1.4))
    b = make_batch(ps, idx, lab, specs, aug, 8, np.random.default_rng(0), dense_radius=16)

    def gammas(t: np.ndarray, ref: np.ndarray) -> np.ndarray:
        inner = (ref > 0.05) & (ref < 0.95)  # the stretch puts its percentiles at 0 and 1
        return np.median(np.log(t[:, inner]) / np.log(ref[inner]), axis=1)

    g_sar = gammas(b.sar_target[:, 0].numpy(), sar_ref)
    g_opt = gammas(b.optical_target[:, 0].numpy(), opt_ref)
    for g in (g_sar, g_opt):
        assert ((g > 0.7 - 1e-3) & (g < 1.4 + 1e-3)).all()
        assert 0.3 < np.mean(np.abs(g - 1) > 1e-3) < 0.7  # gamma_p 0.5
    assert np.mean(np.abs(g_sar - g_opt) > 1e-3) > 0.3  # drawn independently
    assert b.sar_region is not None and b.region_true_xy is not None
    for region, (x, y), window in zip(b.sar_region[:, 0], b.region_true_xy, b.sar[:, 0]):
        np.testing.assert_allclose(region[y : y + 128, x : x + 128].numpy(), window.numpy())

    aug = AugmentConfig(**off, sar_noise_std=0.1)
    b = make_batch(ps, idx, lab, specs, aug, 8, np.random.default_rng(1), dense_radius=16)
    std = (b.sar_target[:, 0].numpy() - sar_ref).reshape(64, -1).std(axis=1)
    assert std.max() < 0.1 + 5e-3 and 0.035 < std.mean() < 0.065  # uniform in [0, 0.1]
    opt = b.optical_target[:, 0].numpy()
    np.testing.assert_allclose(opt, np.broadcast_to(opt_ref, opt.shape))  # SAR only
    assert b.sar_region is not None and b.region_true_xy is not None
    x, y = b.region_true_xy[0]
    again = b.sar_region[0, 0, y : y + 128, x : x + 128].numpy() - b.sar[0, 0].numpy()
    assert np.abs(again).max() > 0  # the neighbourhood has noise of its own


@pytest.mark.parametrize(
    "bad",
    [{"gamma_p": 1.5}, {"gamma_range": (1.4, 0.7)}, {"gamma_range": (0.0, 1.0)}]
    + [{"sar_noise_std": -0.1}],
)
def test_photometric_config_errors(bad: dict) -> None:
    from training.config import TrainConfig

    with pytest.raises(ValueError, match="augment"):
        TrainConfig(augment=AugmentConfig(**bad))


def _shifted_smooth_pair(offset: tuple[int, int], seed: int = 0):
    """A smooth optical image and its SAR twin whose content of optical p lies at p + offset."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((256, 256)), 3.0).astype(np.float32)
    img = (img - img.min()) / (img.max() - img.min())
    dx, dy = offset
    return np.roll(img, (dy, dx), axis=(0, 1)), img


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_zoom_keeps_pairs_registered_and_scales_the_offset(factor: float) -> None:
    """Both images zoomed alike stay co-registered at factor x offset, not at the old offset."""
    from training.data import build_patch_set, unit_spec, zoomed_pairs
    from training.sources import PairRecord

    sar, opt = _shifted_smooth_pair((16, -12))
    rec = PairRecord(sar, opt, "db", "s", "x", "synthetic", "r", offset_xy_px=(16.0, -12.0))
    cfg = DataConfig()
    ps = build_patch_set([rec] * 2, cfg, np.random.default_rng(0))
    sub, idx = zoomed_pairs(ps, np.array([1, 0]), np.array([factor, 1.0]))
    np.testing.assert_array_equal(idx, [0, 1])
    np.testing.assert_allclose(sub.offset_xy_px, [[16 * factor, -12 * factor], [16, -12]])
    np.testing.assert_allclose(sub.true_xy_px, sub.offset_xy_px + 64)
    np.testing.assert_array_equal(sub.sar[1], ps.sar[0])  # factor 1: untouched
    _ = unit_spec  # the SAR region is already the [0, 1] stretch

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        ok = np.isfinite(a) & np.isfinite(b)
        return float(np.corrcoef(a[ok], b[ok])[0, 1])

    tpl = np.array([60, 70])
    o = sub.optical_region[0, tpl[1] : tpl[1] + 128, tpl[0] : tpl[0] + 128]
    for off, want in ((sub.offset_xy_px[0], "match"), (np.array([16.0, -12.0]), "miss")):
        x, y = np.rint(tpl + off).astype(int)
        c = corr(o, sub.sar[0, y : y + 128, x : x + 128])
        if want == "match":
            assert c > 0.98, c
        else:
            assert c < 0.9, c  # 3-4 px off: measured 0.48 and 0.62
    # a zoom out leaves an invalid (NaN) border; a zoom in has none
    border = np.isnan(sub.sar[0, 0]).mean()
    assert (border == 1.0) if factor < 1 else (border == 0.0)


def test_zoomed_batches_keep_positives_and_dense_labels_on_the_ground() -> None:
    """make_batch with zoom_p 1: every positive window and dense label shows the template's
    ground; off by default (no draw, the random stream of older configs is unchanged)."""
    from training.data import build_patch_set, make_batch, unit_spec
    from training.sources import PairRecord

    sar, opt = _shifted_smooth_pair((10, -6), seed=4)
    rec = PairRecord(sar, opt, "db", "s", "x", "synthetic", "r", offset_xy_px=(10.0, -6.0))
    cfg = DataConfig()
    ps = build_patch_set([rec] * 8, cfg, np.random.default_rng(0))
    specs = (unit_spec("sar", cfg), unit_spec("optical", cfg))
    base = dict(flip_p=0.5, transpose_p=0.5, optical_noise_std=0.0, scale_p=0.0)
    aug = AugmentConfig(**base, zoom_p=1.0, zoom_range=(0.8, 1.25))
    kw = dict(random_windows=True, unit_optical=unit_spec("optical", cfg), dense_radius=32)
    lab = np.ones(8, np.int64)
    b = make_batch(ps, np.arange(8), lab, specs, aug, 8, np.random.default_rng(5), **kw)
    plain = make_batch(
        ps, np.arange(8), lab, specs, AugmentConfig(**base), 8, np.random.default_rng(5), **kw
    )
    assert not np.allclose(b.optical_target.numpy(), plain.optical_target.numpy())
    for region, (x, y), window, template in zip(
        b.sar_region[:, 0].numpy(),
        b.region_true_xy.numpy(),
        b.sar_target[:, 0].numpy(),
        b.optical_target[:, 0].numpy(),
    ):
        cut = region[y : y + 128, x : x + 128]
        ok = (cut != 0) & (window != 0) & (template != 0)  # NaN became 0
        assert ok.mean() > 0.5
        assert np.corrcoef(window[ok].ravel(), template[ok].ravel())[0, 1] > 0.97
        assert np.corrcoef(cut[ok].ravel(), template[ok].ravel())[0, 1] > 0.97
    again = make_batch(
        ps, np.arange(8), lab, specs, AugmentConfig(**base), 8, np.random.default_rng(5), **kw
    )
    np.testing.assert_array_equal(again.sar.numpy(), plain.sar.numpy())


def test_zoom_config_is_checked() -> None:
    from training.config import TrainConfig

    with pytest.raises(ValueError, match="zoom_range"):
        TrainConfig(augment=AugmentConfig(zoom_p=0.5, zoom_range=(1.3, 0.8)))
    with pytest.raises(ValueError, match="random_windows"):
        TrainConfig(data=DataConfig(random_windows=False), augment=AugmentConfig(zoom_p=0.5))


def test_records_without_a_patch_pair_are_named_and_an_empty_training_split_says_why(
    tmp_path, caplog
):
    """A tile smaller than the search region, one without corners and one all nodata were
    dropped silently (only the first was logged); training then failed with "the training
    split has no patch pairs; add sources or scenes", naming none of them."""
    import dataclasses
    import logging

    from PIL import Image

    from tests.test_rasters import UTM_GT, make_tif
    from training.data import build_datasets

    rng = np.random.default_rng(0)
    tiles = tmp_path / "tiles"
    for name, img in (
        ("SEN_small", rng.integers(0, 256, (200, 200), dtype=np.uint8)),
        ("SEN_flat", np.full((300, 300), 90, np.uint8)),  # no Harris corner
    ):
        (tiles / name).mkdir(parents=True)
        Image.fromarray(np.stack([img] * 3, -1)).save(tiles / name / "0_optical.png")
        Image.fromarray(img).save(tiles / name / "0_sar.png")
    opt = make_tif(tmp_path / "opt.tif", rng.integers(1, 256, (256, 256), dtype=np.uint8), UTM_GT)
    sar = make_tif(tmp_path / "sar.tif", np.zeros((256, 256), np.float32), UTM_GT, nodata=0.0)
    sources = [
        {"kind": "3mos", "root": str(tiles)},
        {"kind": "gdal", "optical": str(opt), "sar": str(sar), "sar_scale": "linear"},
    ]
    cfg = DataConfig(sources=sources, split_fractions=[1, 0, 0])
    with pytest.raises(ValueError) as err, caplog.at_level(logging.WARNING, "training.data"):
        build_datasets(cfg, 0)
    msg = str(err.value)
    assert msg.startswith("the training split has no patch pairs: none of its 3 records")
    for part in (
        "3mos/SEN_small/0: 200x200 px is smaller than the 256 px search region",
        "3mos/SEN_flat/0: 300x300 px: no Harris corner 128 px or more from its border, and "
        "data.random_crops_per_scene is 0",
        "gdal/opt.tif+sar.tif: each of its 1 cut(s) is more than half nodata",
        "set data.random_crops_per_scene > 0",
    ):
        assert part in msg
    assert "3 of 3 records yield no patch pair" in caplog.text
    # the fix the message gives: random crops cut the flat tile; the others are still named
    caplog.clear()
    with caplog.at_level(logging.WARNING, "training.data"):
        data = build_datasets(dataclasses.replace(cfg, random_crops_per_scene=2), 0)
    assert len(data.train) == 2 and {n.split("@")[0] for n in data.train.names} == {
        "3mos/SEN_flat/0"
    }
    assert "2 of 3 records yield no patch pair" in caplog.text
    assert "SEN_small/0" in caplog.text and "opt.tif+sar.tif" in caplog.text


def test_stamp_sees_a_loaders_default_root_linked_scenes_and_vsi_archives(tmp_path, monkeypatch):
    """Three inputs the patch cache's key missed, each served stale patches after a change in
    place: a 3mos source without ``root`` (the loader's default), a scene folder linked into
    the root (os.walk did not follow it: 0 files), a gdal pair read through ``/vsizip/``."""
    import os
    import zipfile

    from training.data import source_files_stamp

    def stamp_of(*specs) -> list:
        return source_files_stamp(DataConfig(sources=list(specs)))

    work = tmp_path / "work"
    work.mkdir()
    tile = tmp_path / "shared" / "data" / "3mos" / "SEN_a" / "sar" / "0.png"
    tile.parent.mkdir(parents=True)
    tile.write_bytes(b"x")
    monkeypatch.chdir(work)  # the default root ../shared/data/3mos is relative to it
    before = stamp_of({"kind": "3mos"})
    assert [s[:2] for s in before] == [[str(tmp_path / "shared" / "data" / "3mos"), 1]]
    tile.write_bytes(b"xy")
    assert stamp_of({"kind": "3mos"}) != before

    root, real = tmp_path / "root", tmp_path / "elsewhere" / "SEN_b"
    (real / "sar").mkdir(parents=True)
    (real / "sar" / "0.png").write_bytes(b"x")
    root.mkdir()
    os.symlink(real, root / "SEN_b")
    os.symlink(root, real / "loop")  # a link loop ends
    linked = stamp_of({"kind": "3mos", "root": str(root)})
    assert linked[0][1] == 1
    (real / "sar" / "0.png").write_bytes(b"xyz")
    assert stamp_of({"kind": "3mos", "root": str(root)}) != linked

    archive = tmp_path / "pairs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("o.tif", b"1")
    spec = {
        "kind": "gdal",
        "optical": f"/vsizip/{archive}/o.tif",
        "sar": f"/vsizip/{archive}/s.tif",
    }
    zipped = stamp_of(spec)
    assert [s[:2] for s in zipped] == [[str(archive), 1], [str(archive), 1]]
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("o.tif", b"22")
    assert stamp_of(spec) != zipped
    remote = {"kind": "gdal", "optical": "/vsicurl/https://x/o.tif", "sar": "s.tif", "scene": "a"}
    assert stamp_of(remote) == []  # nothing local; "a" and "s.tif" name no file here


def test_a_record_exactly_the_search_size_on_one_side_yields_pairs() -> None:
    """256 x 512: no keypoint centre was 128 px from both long edges (col + 0.5 <= 128 and
    >= 128), so the record gave no pair, blamed on "no Harris corner"; 257 rows gave one."""
    rec = tiny_records(1, size=512)[0]
    cfg = DataConfig(max_keypoints_per_scene=8, random_crops_per_scene=0)
    for sar, optical in (
        (rec.sar[:256], rec.optical[:256]),
        (rec.sar[:, :256], rec.optical[:, :256]),
    ):
        cut, skipped = cut_records([PairRecord(sar, optical, "linear", "s", "x", "synthetic", "r")],
                                   cfg, np.random.default_rng(0))  # fmt: skip
        assert skipped == [] and len(cut) >= 1
        assert cut.sar.shape[1:] == (256, 256) and np.isfinite(cut.sar).all()
