"""End-to-end CPU training on tiny synthetic data, validation matching, config handling."""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from sar_optical_matcher.core.preprocessing import PreprocessSpec
from tests.training.test_data import tiny_records
from training.checkpoint import load_checkpoint
from training.config import (
    TrainConfig,
    config_from_dict,
    config_hash,
    load_config,
    save_config,
)
from training.data import Datasets, PatchSet, build_patch_set, training_specs
from training.evaluate import matching_accuracy, subpixel_peak
from training.loop import BEST, LAST, Trainer, amp_mode, build_matcher

TINY = {
    "seed": 0,
    "model": {"widths": [4, 8, 8, 8], "descriptor_size": 16, "critic_hidden": [16, 8]},
    "optim": {"epochs": 2, "batch_size": 4, "lr_max": 3e-3},
    "data": {"supervision_ratio": 0.5, "max_val_pairs": 4},
    "run": {"progress": False, "num_threads": 1, "device": "cpu", "amp": "none"},
}


def tiny_config(**sections) -> TrainConfig:
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return config_from_dict(raw)


def tiny_datasets(n_train: int = 6, n_val: int = 2) -> Datasets:
    cfg = TrainConfig().data
    recs = tiny_records(n_train + n_val)
    train = build_patch_set(recs[:n_train], cfg, np.random.default_rng(0))
    val = build_patch_set(recs[n_train:], cfg, np.random.default_rng(0))
    sar, opt = training_specs(train, cfg)
    return Datasets(train, val, val, sar, opt, ["synthetic:tiny"])


@pytest.fixture(scope="module")
def data() -> Datasets:
    return tiny_datasets()


def test_two_epoch_cpu_run_reduces_loss_and_writes_outputs(tmp_path, data):
    torch.set_num_threads(1)
    trainer = Trainer(tiny_config(), data, tmp_path)
    history = trainer.fit()
    assert [r["epoch"] for r in history] == [1.0, 2.0]
    assert history[1]["train_recon"] < 0.95 * history[0]["train_recon"]
    assert history[1]["val_recon"] < history[0]["val_recon"]
    assert all(np.isfinite(r["train_loss"]) and 0 <= r["val_acc_3px"] <= 1 for r in history)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert len(rows) == 2 and float(rows[1]["train_recon"]) == pytest.approx(
        history[1]["train_recon"]
    )
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")  # weights_only=True inside
    assert state["epoch"] == 2 and state["global_step"] == 2 * trainer.steps_per_epoch
    assert state["config_hash"] == config_hash(tiny_config())
    assert state["specs"]["sar"]["mean"] == pytest.approx(data.sar_spec.mean)
    assert (tmp_path / "checkpoint_best.pt").is_file()


def test_shipped_recipe_oriented_front_end_and_map_cross_entropy(tmp_path, data):
    """The default's recipe on tiny data: the fixed front end stays fixed, the map term runs."""
    cfg = tiny_config(
        model={"front_end": "oriented_gradients", "orientations": 4},
        loss={"dense_negative_radius_px": 4, "dense_kind": "infonce", "w_recon": 0.0},
    )
    trainer = Trainer(cfg, data, tmp_path)
    fixed = trainer.matcher.sar.encoder.features[0].weight.clone()
    history = trainer.fit(max_epochs=1)
    assert torch.equal(trainer.matcher.sar.encoder.features[0].weight, fixed)
    # after one tiny epoch the map term (ln 73 for 81 - 8 candidates at chance) is far from 0
    assert history[0]["train_match"] > 0.5 * np.log(81 - 8)
    assert np.isfinite(history[0]["train_loss"])


def _count_calls(module: torch.nn.Module, calls: list[str], name: str) -> object:
    return module.register_forward_hook(lambda _m, _i, _o: calls.append(name))


def test_a_supervision_ratio_that_labels_no_pair_is_refused(tmp_path, data):
    """0.05 of 6 pairs rounds to none: the run trained without any matching term, silently."""
    with pytest.raises(ValueError, match=r"supervision_ratio 0.05 labels none of the 6 .*0.167"):
        Trainer(tiny_config(data={"supervision_ratio": 0.05}), data, tmp_path)
    assert len(Trainer(tiny_config(data={"supervision_ratio": 0.0}), data, tmp_path).labelled) == 0


def test_a_model_that_does_not_fit_is_refused_before_the_data_are_built(tmp_path):
    """The encoder's shape was checked only after every source had been loaded and cut."""
    from training.loop import run_training

    missing = [{"kind": "3mos", "root": str(tmp_path / "not-there")}]
    cfg = tiny_config(model={"widths": [4, 8]}, data={"sources": missing})
    with pytest.raises(ValueError, match="widths and convs_per_stage must be non-empty and equal"):
        run_training(cfg, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_run_without_validation_says_that_no_best_checkpoint_is_written(tmp_path, caplog):
    """Without validation pairs checkpoint_best.pt never appears (nothing selects an epoch);
    export of it (make train-default) then failed with only 'checkpoint ... not found'."""
    import logging

    no_val = tiny_datasets(n_train=4, n_val=0)
    with caplog.at_level(logging.WARNING, logger="training.loop"):
        Trainer(tiny_config(optim={"epochs": 1}), no_val, tmp_path).fit()
    assert (
        "no validation pairs" in caplog.text and "checkpoint_best.pt is not written" in caplog.text
    )
    assert (tmp_path / LAST).is_file() and not (tmp_path / BEST).exists()


def test_terms_with_weight_zero_are_not_computed(tmp_path, data):
    """w_recon = w_adv = 0: no decoder pass, no critic update; the encoders still learn."""
    cfg = tiny_config(
        loss={"w_recon": 0.0, "w_adv": 0.0, "dense_negative_radius_px": 8},
        data={"supervision_ratio": 1.0},
    )
    trainer = Trainer(cfg, data, tmp_path)
    calls: list[str] = []
    m = trainer.matcher
    hooks = [
        _count_calls(m.sar.decoder, calls, "decoder"),
        _count_calls(m.optical.decoder, calls, "decoder"),
        _count_calls(m.critic, calls, "critic"),
        _count_calls(m.sar.encoder, calls, "encoder"),
    ]
    critic_before = [p.detach().clone() for p in m.critic.parameters()]
    enc_before = [p.detach().clone() for p in m.optical.encoder.parameters()]
    plan = trainer._plan(0)
    try:
        terms = trainer.train_step(trainer._batch(plan[0], 0, 0), torch.Generator().manual_seed(0))
    finally:
        for h in hooks:
            h.remove()  # type: ignore[attr-defined]
    assert calls == ["encoder"]
    assert all(torch.equal(a, b) for a, b in zip(critic_before, m.critic.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(enc_before, m.optical.encoder.parameters()))
    assert torch.isnan(terms["recon"]) and torch.isnan(terms["adv"])
    assert torch.isnan(terms["critic"])
    assert torch.isfinite(terms["match"]) and float(terms["loss"]) == float(terms["match"])
    # a full epoch logs the skipped terms as NaN and the computed ones as numbers
    row = trainer.fit(max_epochs=1)[0]
    assert np.isnan(row["train_recon"]) and np.isnan(row["train_adv"])
    assert np.isfinite(row["train_match"]) and np.isfinite(row["train_loss"])


def test_only_the_nonzero_unsupervised_term_is_computed(tmp_path, data):
    cfg = tiny_config(loss={"w_recon": 1.0, "w_adv": 0.0})
    trainer = Trainer(cfg, data, tmp_path)
    calls: list[str] = []
    hooks = [
        _count_calls(trainer.matcher.sar.decoder, calls, "decoder"),
        _count_calls(trainer.matcher.critic, calls, "critic"),
    ]
    try:
        terms = trainer.train_step(
            trainer._batch(trainer._plan(0)[0], 0, 0), torch.Generator().manual_seed(0)
        )
    finally:
        for h in hooks:
            h.remove()  # type: ignore[attr-defined]
    assert calls == ["decoder"]
    assert torch.isfinite(terms["recon"]) and torch.isnan(terms["adv"])


def test_unlabelled_batch_without_unsupervised_terms_is_a_no_op_that_keeps_the_schedule(
    tmp_path, data
):
    cfg = tiny_config(loss={"w_recon": 0.0, "w_adv": 0.0}, data={"supervision_ratio": 0.5})
    trainer = Trainer(cfg, data, tmp_path)
    plan = trainer._plan(0)
    b = next(i for i, p in enumerate(plan) if p.label is None)
    batch = trainer._batch(plan[b], 0, b)
    assert batch.label is None  # an unlabelled batch
    before = [p.detach().clone() for p in trainer.matcher.parameters()]
    terms = trainer.train_step(batch, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, p) for a, p in zip(before, trainer.matcher.parameters()))
    assert trainer.sched.last_epoch == 1 and float(terms["loss"]) == 0.0


def test_amp_mode_uses_cpu_bf16_only_where_native(monkeypatch):
    import training.loop as loop

    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert [amp_mode(a, cuda) for a in ("bf16", "fp16", "none")] == ["bf16", "fp16", "none"]
    monkeypatch.setattr(loop, "cpu_supports_bf16", lambda: True)
    assert [amp_mode(a, cpu) for a in ("bf16", "fp16", "none")] == ["bf16", "none", "none"]
    monkeypatch.setattr(loop, "cpu_supports_bf16", lambda: False)
    assert amp_mode("bf16", cpu) == "none"


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_step_on_cpu_autocast(tmp_path, data, amp):
    """The CUDA mixed-precision branch (autocast + GradScaler for fp16), run on CPU autocast.

    The trainer enables AMP only on CUDA; no GPU is available to the tests, so the same code
    path is exercised with torch's CPU autocast: the step runs in reduced precision, the losses
    are computed in float32, fp16 goes through the gradient scaler, and the weights move.
    """
    trainer = Trainer(tiny_config(), data, tmp_path)
    trainer.amp = amp
    trainer.scaler = torch.amp.GradScaler("cpu", enabled=amp == "fp16")
    plan = trainer._plan(0)
    before = [p.detach().clone() for p in trainer.matcher.optical.encoder.parameters()]
    seen: list[torch.dtype] = []
    hook = trainer.matcher.optical.encoder.head.register_forward_hook(
        lambda _m, _i, out: seen.append(out.dtype)
    )
    params = list(trainer.matcher.optical.encoder.parameters())
    moved, steps = False, 0
    try:
        # fp16: GradScaler skips the update while its initial scale (65536) overflows
        while not moved and steps < len(plan):
            batch = trainer._batch(plan[steps], 0, steps)
            terms = trainer.train_step(batch, torch.Generator().manual_seed(steps))
            assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in terms.values())
            moved = any(not torch.equal(a, b) for a, b in zip(params, before))
            steps += 1
    finally:
        hook.remove()
    assert moved
    assert trainer.sched.last_epoch == 1  # skipped fp16 steps do not advance the schedule
    assert set(seen) == {torch.bfloat16 if amp == "bf16" else torch.float16}
    if amp == "fp16":
        assert trainer.scaler.is_enabled() and trainer.scaler.get_scale() <= 65536.0
    else:
        assert steps == 1 and not trainer.scaler.is_enabled()


def test_schedule_and_critic_constraints(tmp_path, data):
    trainer = Trainer(tiny_config(), data, tmp_path)
    trainer.fit(max_epochs=1)
    lrs = trainer.sched.get_last_lr()
    assert trainer.opt.param_groups[0]["betas"] == (0.9, 0.99)
    assert trainer.opt.param_groups[0]["weight_decay"] == 1e-4
    assert 0 < lrs[0] < 3e-3 and trainer.sched.total_steps == 2 * trainer.steps_per_epoch
    g = trainer.critic_opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"]) == (4e-3, 0.9, 3e-4)
    top = max(p.abs().max().item() for p in trainer.matcher.critic.parameters())
    assert top == pytest.approx(0.1, abs=1e-7)  # clipping is active, never exceeded


def _matching_set(true_xy: tuple[int, int]) -> tuple[PatchSet, tuple]:
    rng = np.random.default_rng(5)
    sar = rng.random((3, 256, 256), dtype=np.float32)
    x, y = true_xy
    opt = sar[:, y : y + 128, x : x + 128].copy()
    truth = np.tile(np.array(true_xy, dtype=np.float64), (3, 1))
    spec = (PreprocessSpec("sar", mean=0.5, std=0.3), PreprocessSpec("optical", mean=0.5, std=0.3))
    return PatchSet(sar, opt, truth, ["a"] * 3, ["p0", "p1", "p2"]), spec


@pytest.mark.parametrize("true_xy", [(64, 64), (70, 59)])
def test_matching_accuracy_finds_known_offset(true_xy):
    torch.manual_seed(0)
    matcher = build_matcher(tiny_config())
    matcher.sar.load_state_dict(matcher.optical.state_dict())  # same encoder both sides
    ps, specs = _matching_set(true_xy)
    acc = matching_accuracy(matcher, ps, specs, torch.device("cpu"))
    assert acc["n"] == 3 and acc["acc_1_3px"] == 1.0 and acc["median_err_px"] < 0.2
    ps.true_xy_px[:] += 5.0  # a wrong truth must be reported as an error of ~7 px
    acc = matching_accuracy(matcher, ps, specs, torch.device("cpu"))
    assert acc["acc_1px"] == 0.0 and 6.5 < acc["median_err_px"] < 7.6


def test_subpixel_peak_recovers_parabola_vertex():
    yy, xx = np.mgrid[0:20, 0:30]
    cmap = -((xx - 10.3) ** 2) - 2 * (yy - 5.8) ** 2
    np.testing.assert_allclose(subpixel_peak(cmap), [10.3, 5.8], atol=1e-9)
    edge = -((xx - 0.0) ** 2) - (yy - 19.0) ** 2
    np.testing.assert_array_equal(subpixel_peak(edge), [0.0, 19.0])


def test_config_yaml_roundtrip_hash_and_errors(tmp_path):
    cfg = tiny_config()
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg and config_hash(again) == config_hash(cfg)
    assert len(config_hash(cfg)) == 64
    moved = load_config(tmp_path / "c.yaml", ["run.out_dir=elsewhere", "run.device=cuda"])
    assert config_hash(moved) == config_hash(cfg)  # the run section does not change weights
    changed = load_config(tmp_path / "c.yaml", ["loss.margin=2.0"])
    assert changed.loss.margin == 2.0 and config_hash(changed) != config_hash(cfg)
    assert TrainConfig().loss.prior_std == pytest.approx(5**0.5)  # N(0, 5): variance 5
    with pytest.raises(ValueError, match="unknown config key.*'optim'"):
        load_config(tmp_path / "c.yaml", ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match="supervision_ratio"):
        load_config(tmp_path / "c.yaml", ["data.supervision_ratio=25"])
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    # YAML 1.1 reads 5e-4 (no dot) as a string: float fields take it as the number it is
    assert load_config(tmp_path / "c.yaml", ["optim.lr_max=5e-4"]).optim.lr_max == 5e-4
    with pytest.raises(ValueError, match="optim.lr_max must be a number"):
        load_config(tmp_path / "c.yaml", ["optim.lr_max=fast"])
    with pytest.raises(ValueError, match="dense_kind"):
        load_config(tmp_path / "c.yaml", ["loss.dense_kind=softmax"])
    with pytest.raises(ValueError, match="front_end"):
        load_config(tmp_path / "c.yaml", ["model.front_end=sobel"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.epochs=five", "optim.epochs must be an integer, got 'five'"),
        ("optim.epochs=2.7", "optim.epochs must be an integer, got 2.7"),
        ("optim.batch_size=2.5", "optim.batch_size must be an integer"),
        ("seed=abc", "seed must be an integer"),
        ("model.widths=8", "model.widths must be a list"),
        ("model.widths=[32, 32.5]", r"model.widths\[1\] must be an integer"),
        ("augment.gamma_range=[0.7]", "augment.gamma_range must be a list of 2 values"),
        ('data.random_windows="false"', "data.random_windows must be true or false"),
        ("data.supervision_ratio=true", "data.supervision_ratio must be a number, got True"),
        ("data.holdout_scenes=SEN_city", "data.holdout_scenes must be a list"),
        ("run.device=gpu", r"run.device must be one of \('auto', 'cpu', 'cuda'\)"),
        ("name=[1]", "name must be a string"),
        ("data.negative_min_shift_px=0", "negative_min_shift_px must be >= 1"),
        # ranges: these failed late in torch's words (a ZeroDivisionError, "Invalid learning
        # rate: -0.0001") or were taken silently (lr 0, flip_p 2, no validation at all)
        ("optim.lr_max=-1e-3", r"optim.lr_max must be > 0 .*got -0.001"),
        ("optim.lr_max=.inf", "optim.lr_max must be > 0"),
        ("optim.div_factor=0", "optim.div_factor must be > 0"),
        ("optim.pct_start=1.5", r"optim.pct_start must be in \(0, 1\)"),
        ("optim.betas=[1.5, 0.99]", r"optim.betas must be 2 Adam betas in \[0, 1\)"),
        ("optim.critic_steps=0", "optim.critic_steps must be >= 1 while loss.w_adv is 1.0"),
        ("data.template_size_px=0", "data.template_size_px must be >= 8"),
        ("data.max_val_pairs=0", "data.max_val_pairs must be >= 1"),
        ("data.split_fractions=[1.2, -0.2, 0]", "data.split_fractions must be 3 shares >= 0"),
        ("data.split_fractions=[0, 1, 0]", "the train share > 0, e.g. .*got \\[0.0, 1.0, 0.0\\]"),
        ("data.low_percentile=99", r"data.low_percentile \(99.0\) must be below"),
        ("model.descriptor_size=0", "model.descriptor_size must be >= 1"),
        ("loss.w_match=-1", "loss.w_match must be >= 0"),
        ("loss.dense_negative_radius_px=-3", "loss.dense_negative_radius_px must be >= 0"),
        ("augment.flip_p=2", r"augment.flip_p must be a probability in \[0, 1\], got 2.0"),
        ("augment.scale_range=[1.05, 0.95]", "augment.scale_range must be positive and ordered"),
        ("run.num_threads=-2", "run.num_threads must be >= 0"),
        # no negative window this far from a centred true one: a random-window batch failed
        # hours into a run, a search region of the template's size at the first batch
        ("data.negative_min_shift_px=65", r"negative_min_shift_px \(65\) must be <= .* = 64"),
        ("data.search_size_px=130", r"negative_min_shift_px \(8\) must be <= .* = 1"),
        # the model contract needs a map of >= 3 x 3 offsets; say so, not the negative shift
        ("data.search_size_px=129", r"data.search_size_px must be >= data.template_size_px \+ 2"),
        ("loss.dense_negative_radius_px=65", r"dense_negative_radius_px \(65\) must be <="),
        # hinge: negatives lie >= negative_min_shift_px (8) away; none in a +-4 px neighbourhood
        ("loss.dense_negative_radius_px=4", r"dense_negative_radius_px \(4\) must be >= data"),
    ],
)
def test_config_values_are_type_checked(tmp_path, override, message):
    """A wrong type or value is an error naming the key (it crashed later in torch or numpy,
    or, for "false" and true, was silently taken as true and as 1.0)."""
    save_config(tiny_config(), tmp_path / "c.yaml")
    with pytest.raises(ValueError, match=message):
        load_config(tmp_path / "c.yaml", [override])


def test_shipped_configs_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "training" / "configs"
    default = load_config(root / "default.yaml")
    assert default.model.widths == (32, 32) and default.optim.batch_size == 16
    assert default.model.latent == "map" and build_matcher(default).spec.code_size == 114
    assert default.data.validation_scenes == ["SEN_water"]
    assert default.loss.prior_std == pytest.approx(5**0.5)
    assert load_config(root / "tiny.yaml").model.descriptor_size == 16
    # --set indexes lists: one source's option, as docs/results.md's tile-label run does
    tiles = load_config(
        root / "default.yaml", ["data.sources.0.tile_offsets_px={GF3_plain/3: [-9.81, -0.83]}"]
    )
    assert tiles.data.sources[0]["tile_offsets_px"] == {"GF3_plain/3": [-9.81, -0.83]}
    assert tiles.data.sources[0]["offsets_px"] == default.data.sources[0]["offsets_px"]
    assert tiles.data.sources[1] == default.data.sources[1]
    assert config_hash(tiles) != config_hash(default)
    # keys added later with a neutral default do not move the hash of runs made before them
    neutral = ["augment.gamma_p=0.0", "augment.gamma_range=[0.7, 1.4]", "augment.sar_noise_std=0"]
    assert config_hash(load_config(root / "default.yaml", neutral)) == config_hash(default)
    on = ("augment.gamma_p=0.5", "augment.gamma_range=[0.8, 1.2]", "augment.sar_noise_std=0.08")
    for key in on:
        assert config_hash(load_config(root / "default.yaml", [key])) != config_hash(default)
    with pytest.raises(ValueError, match=r"data.sources is a list of 2; index it with 0..1"):
        load_config(root / "default.yaml", ["data.sources.5.repeat=3"])
    with pytest.raises(ValueError, match="data.sources is a list"):
        load_config(root / "default.yaml", ["data.sources.first.repeat=3"])
    with pytest.raises(ValueError, match="seed holds no keys"):
        load_config(root / "default.yaml", ["seed.value=3"])


def test_suggest_range_finds_steepest_descent():
    from training.lr_find import suggest_range

    lr = np.logspace(-7, 0, 200)
    x = np.log10(lr)
    loss = 1.0 - 0.8 / (1 + np.exp(-(x + 3.0) * 3))  # steepest fall at lr = 1e-3
    loss[x > -1] += (x[x > -1] + 1) ** 2  # divergence at high lr
    got = suggest_range(lr, loss, beta=0.0)
    assert got["steepest_lr"] == pytest.approx(1e-3, rel=0.1)
    assert 1e-4 < got["lr_low"] < 1e-3 < got["lr_high"] < 1e-2


def test_lr_range_test_writes_csv_plot_and_range(tmp_path, data):
    from training.lr_find import lr_range_test

    result = lr_range_test(tiny_config(), data, tmp_path, steps=12, lr_start=1e-7, lr_end=1.0)
    rows = list(csv.DictReader(open(tmp_path / "lr_find.csv")))
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] == pytest.approx(1e-7) and all(b > a for a, b in zip(lrs, lrs[1:]))
    assert len(rows) == result["steps"] and (tmp_path / "lr_find.png").stat().st_size > 1000
    assert 1e-7 <= result["lr_low"] <= result["steepest_lr"] <= result["lr_high"] <= 1.0


def test_lr_range_test_failing_to_write_keeps_the_earlier_pair(tmp_path, data, monkeypatch):
    """The CSV and the plot are written together or not at all: a plot failing after the CSV
    was written (a full disk, a kill) overwrote lr_find.csv in place and left the earlier
    lr_find.png beside it; now both earlier files stay byte-identical and nothing is left."""
    import hashlib

    from training import lr_find

    lr_find.lr_range_test(tiny_config(), data, tmp_path, steps=8, lr_start=1e-6, lr_end=1e-1)
    names = sorted(p.name for p in tmp_path.iterdir())
    before = {n: hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in names}

    def failing_plot(path, rows, result):
        Path(path).write_bytes(b"half a png")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lr_find, "_plot", failing_plot)
    with pytest.raises(OSError, match="No space left"):
        lr_find.lr_range_test(tiny_config(), data, tmp_path, steps=9, lr_start=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no temporary file left
    after = {n: hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in names}
    assert after == before
    assert len(list(csv.DictReader(open(tmp_path / "lr_find.csv")))) == 8


def test_lr_range_test_without_reconstruction_and_early_divergence(tmp_path, data, monkeypatch):
    """w_recon 0 leaves the reconstruction uncomputed (NaN): the objective was 0 x NaN = NaN at
    every step and the suggestion failed in np.gradient; a loss that is not finite before 5
    steps failed on an empty CSV (IndexError)."""
    from training.loop import NonFiniteLossError, Trainer
    from training.lr_find import lr_range_test

    cfg = tiny_config(loss={"w_recon": 0.0})
    result = lr_range_test(cfg, data, tmp_path, steps=8, lr_start=1e-6, lr_end=1e-1)
    rows = list(csv.DictReader(open(tmp_path / "lr_find.csv")))
    assert len(rows) == 8 and all(np.isfinite(float(r["objective"])) for r in rows)
    assert 1e-6 <= result["lr_low"] <= result["lr_high"] <= 1e-1

    calls = []
    real_step = Trainer.train_step

    def diverging(self, batch, gen):
        calls.append(1)
        if len(calls) > 2:
            raise NonFiniteLossError("injected")
        return real_step(self, batch, gen)

    monkeypatch.setattr(Trainer, "train_step", diverging)
    with pytest.raises(ValueError, match=r"not finite after 2 of 6 steps \(at lr 0.0001\)"):
        lr_range_test(tiny_config(), data, tmp_path / "diverged", steps=6, lr_start=1e-6,
                      lr_end=1e-1)  # fmt: skip


def test_identical_init_copies_weights_without_sharing_them() -> None:
    import torch

    from training.config import config_from_dict
    from training.loop import build_matcher

    cfg = config_from_dict(
        {"model": {"widths": [4, 8, 8, 8], "descriptor_size": 16, "identical_init": True}}
    )
    m = build_matcher(cfg)
    sar, opt = m.sar.state_dict(), m.optical.state_dict()
    assert all(torch.equal(sar[k], opt[k]) for k in sar)
    with torch.no_grad():
        next(m.sar.parameters()).add_(1.0)  # no shared tensors: the optical one is unchanged
    assert not torch.equal(next(m.sar.parameters()), next(m.optical.parameters()))


def test_repeated_pairs_lengthen_the_epoch(tmp_path, data):
    """A source's ``repeat`` draws its pairs that many times: more batches per epoch."""
    plain = Trainer(tiny_config(data={"supervision_ratio": 0.5}), data, tmp_path / "a")
    rep = np.ones(len(data.train), np.int64)
    rep[:2] = 4
    weighted = dataclasses.replace(data, train=dataclasses.replace(data.train, repeat=rep))
    trainer = Trainer(tiny_config(data={"supervision_ratio": 0.5}), weighted, tmp_path / "b")
    both = np.concatenate([trainer.labelled, trainer.unlabelled])
    np.testing.assert_array_equal(np.bincount(both, minlength=len(rep)), rep)
    assert set(trainer.labelled) == set(plain.labelled)  # same pairs labelled, only repeated
    assert trainer.steps_per_epoch > plain.steps_per_epoch


MAP_MODEL = {
    "latent": "map", "widths": [4, 6], "convs_per_stage": [2, 2], "descriptor_size": 4,
    "front_end": "oriented_gradients", "orientations": 4, "critic_hidden": [16, 8],
}  # fmt: skip


@pytest.mark.parametrize("position_norm", [False, True])
def test_map_latent_trains_with_every_term_and_exports_its_maps(tmp_path, data, position_norm):
    """The paper's full objective on code maps: decoders, position critic, eq. 4, map term."""
    from sar_optical_matcher.model.runtime import OnnxMatcher
    from training.export import export_checkpoint
    from training.losses import window_cosine

    cfg = tiny_config(
        model={**MAP_MODEL, "position_norm": position_norm},
        loss={"w_recon": 1.0, "w_adv": 0.1, "dense_negative_radius_px": 8,
              "dense_kind": "infonce", "temperature": 0.05, "dense_ignore_px": 0},
        augment={"transpose_p": 0.5},
    )  # fmt: skip
    trainer = Trainer(cfg, data, tmp_path)
    critic_before = [p.detach().clone() for p in trainer.matcher.critic.parameters()]
    history = trainer.fit()
    assert trainer.matcher.critic.net[0].in_features == 4  # scores one position's D-vector
    critic_after = trainer.matcher.critic.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, critic_after))
    assert history[1]["train_recon"] < history[0]["train_recon"]
    for key in ("train_loss", "train_recon", "train_match", "train_adv", "train_critic"):
        assert all(np.isfinite(r[key]) for r in history), key
    path, contract = export_checkpoint(tmp_path / "checkpoint_last.pt", tmp_path / "m.onnx")
    assert contract.code_size == 128 - 13 + 1 and contract.receptive_field == 13
    # the plugin's map of the exported model equals the trained torch model's map
    m = trainer.matcher.eval()
    rng = np.random.default_rng(0)
    region = rng.normal(size=(1, 256, 256)).astype(np.float32)
    template = region[:, 40:168, 90:218] + 0.5 * rng.normal(size=(1, 128, 128)).astype(np.float32)
    with torch.no_grad():
        want = window_cosine(m.optical.encoder(torch.from_numpy(template)[:, None]),
                             m.sar.encoder.code_map(torch.from_numpy(region)[:, None]))  # fmt: skip
    runtime = OnnxMatcher(path, device="cpu", threads=1, log=lambda _m: None)
    got = runtime.correspondence_maps(template, region)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


def test_validation_windows_per_pair_and_selection_figure(tmp_path):
    """Each validation tile gives several fixed windows; checkpoint_best follows select_by."""
    from training.data import build_datasets

    cfg = tiny_config(data={"val_windows_per_pair": 3, "split_fractions": [0.5, 0.5, 0.0]},
                      optim={"select_by": "acc_3px", "epochs": 3})  # fmt: skip
    ds = build_datasets(cfg.data, 0, records=tiny_records(4))
    assert len(ds.val) == 3 * 2 and len(set(ds.val.names)) == 6
    assert len({tuple(xy) for xy in ds.val.true_xy_px}) > 2  # copies got their own windows
    trainer = Trainer(cfg, ds, tmp_path)
    history = trainer.fit()
    best = max(range(3), key=lambda i: (history[i]["val_acc_3px"], i))
    assert load_checkpoint(tmp_path / "checkpoint_best.pt")["epoch"] == best + 1
    with pytest.raises(ValueError, match="select_by"):
        tiny_config(optim={"select_by": "loss"})
    with pytest.raises(ValueError, match="position_norm"):
        build_matcher(tiny_config(model={"position_norm": True}))


def test_validation_refines_the_peak_as_the_plugin_does():
    """Validation refined each axis by its own parabola, the plugin by a 2-D quadratic: on a
    tilted peak they differ by tenths of a pixel, and validation scored other positions."""
    from sar_optical_matcher.core.peaks import analyse_maps

    yy, xx = np.mgrid[0:33, 0:33].astype(np.float64)
    u, v = xx - 16.3, yy - 14.6
    tilted = -(u**2 + v**2 + 1.6 * u * v)  # elongated along a diagonal: separable fits miss
    stats = analyse_maps(tilted[None])[0]
    np.testing.assert_allclose(subpixel_peak(tilted), [stats.subpixel_x_px, stats.subpixel_y_px],
                               atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(subpixel_peak(tilted), [16.3, 14.6], atol=1e-9)


def test_a_missing_config_file_is_named_with_where_it_was_looked_for(tmp_path, monkeypatch):
    """It said "pass --config", a flag calibrate_confidence.py (--training-tiles) does not have,
    and not which folder a relative path was taken from."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ValueError, match=re.escape(f"nope.yaml not found (relative to {tmp_path})")
    ):
        load_config("nope.yaml")
