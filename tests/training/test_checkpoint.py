"""Exact resume (epoch boundary and mid-epoch kill), NaN stop, corrupt checkpoint detection."""

from __future__ import annotations

import pytest
import torch

from tests.training.test_loop import tiny_config, tiny_datasets
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.config import save_config
from training.loop import BEST, LAST, NonFiniteLossError, Trainer


class KilledError(Exception):
    """Stands in for SIGKILL in the middle of an epoch."""


@pytest.fixture(scope="module")
def data():
    return tiny_datasets()


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """An uninterrupted 2-epoch run: (history, final state dict)."""
    torch.set_num_threads(1)
    trainer = Trainer(tiny_config(), data, tmp_path_factory.mktemp("straight"))
    history = trainer.fit()
    return history, {k: v.clone() for k, v in trainer.matcher.state_dict().items()}


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_resume_at_epoch_boundary_is_exact(data, straight, tmp_path):
    first = Trainer(tiny_config(), data, tmp_path)
    first.fit(max_epochs=1)
    resumed = Trainer(tiny_config(), data, tmp_path)  # a fresh process, same config
    history = resumed.fit(resume=True)
    for got, want in zip(history, straight[0]):
        for key in ("train_loss", "train_recon", "train_match", "train_critic", "val_recon"):
            assert got[key] == pytest.approx(want[key], abs=1e-6), key
    _assert_same_weights(resumed.matcher.state_dict(), straight[1])


def test_killed_mid_epoch_resumes_without_lost_or_repeated_steps(data, straight, tmp_path):
    cfg = tiny_config(run={"checkpoint_every_steps": 2})
    victim = Trainer(cfg, data, tmp_path)
    per_epoch = victim.steps_per_epoch
    kill_at = per_epoch + 3  # in epoch 2, one step after the step-(per_epoch + 2) checkpoint

    def kill(tr: Trainer) -> None:
        if tr.global_step == kill_at:
            raise KilledError

    with pytest.raises(KilledError):
        victim.fit(on_step=kill)
    saved = load_checkpoint(tmp_path / LAST)
    assert (saved["epoch"], saved["batch_in_epoch"]) == (1, 2)
    assert saved["global_step"] == per_epoch + 2
    resumed = Trainer(cfg, data, tmp_path)
    steps = []
    resumed.fit(resume=True, on_step=lambda tr: steps.append(tr.global_step))
    assert steps == list(range(per_epoch + 3, 2 * per_epoch + 1))  # each missing step once
    assert resumed.sched.last_epoch == 2 * per_epoch
    # the resumed epoch's train_* figures average its own batches only, and say so
    batches = [row["train_batches"] for row in resumed.history]
    assert batches == [per_epoch, per_epoch - 2]
    _assert_same_weights(resumed.matcher.state_dict(), straight[1])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path):
    trainer = Trainer(tiny_config(), data, tmp_path)
    good_step = trainer.steps_per_epoch

    def poison(tr: Trainer) -> None:
        if tr.global_step == good_step + 1:
            with torch.no_grad():
                tr.matcher.sar.encoder.head.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match="not finite.*last good checkpoint"):
        trainer.fit(on_step=poison)
    state = load_checkpoint(tmp_path / LAST)
    assert state["epoch"] == 1 and state["global_step"] == good_step
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_corrupt_truncated_and_foreign_checkpoints_are_detected(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"w": torch.arange(1000.0), "epoch": 3, "rng": torch.get_rng_state()}, path)
    assert load_checkpoint(path)["epoch"] == 3
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    (tmp_path / "flip.pt").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "flip.pt")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:-500])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a SAR-Optical Matcher checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_payload_with_code_is_refused(tmp_path):
    save_checkpoint({"f": KilledError("x")}, tmp_path / "evil.pt")  # arbitrary objects need pickle
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_checkpoint(tmp_path / "evil.pt")


def test_a_fresh_run_in_a_folder_with_another_run_is_refused(data, tmp_path):
    """Training again into a run's folder without --resume overwrote its last checkpoint and
    left its best one, which export takes, from the other run."""
    from training.cli import main

    Trainer(tiny_config(), data, tmp_path).fit(max_epochs=1)
    before = (tmp_path / BEST).read_bytes()
    with pytest.raises(ValueError, match=r"already holds a run \(checkpoint_last.pt, "
                       r"checkpoint_best.pt\); continue it with --resume"):  # fmt: skip
        Trainer(tiny_config(loss={"margin": 0.5}), data, tmp_path).fit()
    assert (tmp_path / BEST).read_bytes() == before
    cfg = tmp_path / "c.yaml"
    save_config(tiny_config(), cfg)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path)]) == 2
    assert main(["train", "--config", str(cfg), "--out", str(cfg)]) == 2  # a file


def test_resume_with_another_config_is_refused(data, tmp_path):
    """The refusal gave two hashes only: which key differed, and which config to use, was
    left to guess."""
    from training.config import load_config

    Trainer(tiny_config(), data, tmp_path).fit(max_epochs=1)
    other = tiny_config(loss={"margin": 0.5}, optim={"lr_max": 0.01}, run={"num_threads": 2})
    with pytest.raises(CheckpointError) as err:
        Trainer(other, data, tmp_path).fit(resume=True)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / LAST} was trained under another config (hash ")
    assert (
        "): loss.margin 1.0 -> 0.5; optim.lr_max 0.003 -> 0.01; resume with the run's own " in msg
    )
    assert msg.endswith(f"config (--config {tmp_path / 'config.yaml'}), or train into a new --out")
    assert "num_threads" not in msg  # run settings do not change the weights: not refused
    history = Trainer(load_config(tmp_path / "config.yaml"), data, tmp_path).fit(resume=True)
    assert [r["epoch"] for r in history] == [1.0, 2.0]  # the suggested config resumes


def test_resume_on_other_data_is_refused(data, tmp_path):
    """The config hash does not see a data folder's contents: resumed on more pairs, the
    restored one-cycle schedule failed an epoch later ("Tried to step 9 times. The specified
    number of total steps is 8"); on as many other pairs the run went on silently."""
    Trainer(tiny_config(), data, tmp_path).fit(max_epochs=1)
    more = Trainer(tiny_config(), tiny_datasets(n_train=10), tmp_path)
    with pytest.raises(CheckpointError, match=r"trained on other data .*8 -> 12 steps in all"):
        more.fit(resume=True)
    other = tiny_datasets()
    other.train.sar[:] = other.train.sar[::-1] ** 2  # same count, other pixels and statistics
    from training.data import training_specs

    other.sar_spec, other.optical_spec = training_specs(other.train, tiny_config().data)
    with pytest.raises(CheckpointError, match="preprocessing statistics"):
        Trainer(tiny_config(), other, tmp_path).fit(resume=True)
    history = Trainer(tiny_config(), tiny_datasets(), tmp_path).fit(resume=True)
    assert [r["epoch"] for r in history] == [1.0, 2.0]  # the same data (rebuilt): resumed


def test_resume_on_another_world_size_warns(data, tmp_path, caplog):
    """Each rank draws its own augmentation: a run resumed on another world size is not the
    uninterrupted run (it continued without a word)."""
    import logging

    Trainer(tiny_config(), data, tmp_path).fit(max_epochs=1)
    state = load_checkpoint(tmp_path / LAST)
    save_checkpoint(dict(state, world_size=2), tmp_path / LAST)
    with caplog.at_level(logging.WARNING, logger="training.loop"):
        Trainer(tiny_config(), data, tmp_path).fit(resume=True, max_epochs=1)
    assert "trained on 2 rank(s), resumed on 1" in caplog.text


def test_a_kill_between_the_two_end_of_epoch_saves_keeps_the_new_best(data, tmp_path, monkeypatch):
    """The last checkpoint was written before the best: a kill between the two lost the best
    epoch (checkpoint_best.pt stayed the previous epoch's, or was missing after epoch 1)."""
    import training.loop as loop

    trainer = Trainer(tiny_config(), data, tmp_path)
    real_save = loop.save_checkpoint
    written: list[str] = []

    def save_then_die(payload: dict, path) -> str:
        if written:  # the second save of the epoch
            raise KilledError
        written.append(path.name)
        return real_save(payload, path)

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KilledError):
        trainer.fit(max_epochs=1)
    assert written == [BEST]
    best = load_checkpoint(tmp_path / BEST)
    assert (best["epoch"], best["global_step"]) == (1, trainer.steps_per_epoch)
    assert best["best_acc"] == trainer.best_acc and best["best_acc"] >= 0
    assert not (tmp_path / LAST).exists()
    assert not _leftovers(tmp_path)


def test_resume_of_weights_this_code_cannot_load_names_them_in_one_line(data, tmp_path):
    """Weights of another code version under the same config failed deep in torch's
    load_state_dict, one line per key; the message is the one export gives."""
    Trainer(tiny_config(), data, tmp_path).fit(max_epochs=1)
    state = load_checkpoint(tmp_path / LAST)
    model = dict(state["model"])
    first = next(iter(model))
    model["optical.encoder.extra"] = model.pop(first)
    save_checkpoint(dict(state, model=model), tmp_path / LAST)
    with pytest.raises(CheckpointError) as err:
        Trainer(tiny_config(), data, tmp_path).fit(resume=True)
    assert str(err.value) == (
        f"the weights in {tmp_path / LAST} do not fit the model built here (1 missing key(s): "
        f"{first}; 1 unexpected key(s): optical.encoder.extra); resume with the code version "
        "that wrote it, or train into a new --out"
    )


@pytest.fixture
def sigterm_stops_training():
    """The trainer's SIGTERM handler, installed for one test (as ``python -m training train``)."""
    import signal

    from training.loop import sigterm_handler

    previous = signal.signal(signal.SIGTERM, sigterm_handler)
    yield
    signal.signal(signal.SIGTERM, previous)


def _sigterm_at(step: int):
    import os
    import signal

    def hook(tr: Trainer) -> None:
        if tr.global_step == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


def test_sigterm_saves_at_the_step_boundary_and_resumes_exactly(
    data, straight, tmp_path, sigterm_stops_training
):
    """SIGTERM (a scheduler's or `kill`'s) killed the run where it stood: the steps since the
    last checkpoint were lost, and a write under way could be cut short."""
    victim = Trainer(tiny_config(), data, tmp_path)
    stop_at = victim.steps_per_epoch + 1  # in epoch 2
    with pytest.raises(KeyboardInterrupt):
        victim.fit(on_step=_sigterm_at(stop_at))
    saved = load_checkpoint(tmp_path / LAST)
    assert (saved["epoch"], saved["batch_in_epoch"], saved["global_step"]) == (1, 1, stop_at)
    assert not _leftovers(tmp_path)
    resumed = Trainer(tiny_config(), data, tmp_path)
    steps: list[int] = []
    resumed.fit(resume=True, on_step=lambda tr: steps.append(tr.global_step))
    assert steps == list(range(stop_at + 1, 2 * victim.steps_per_epoch + 1))
    _assert_same_weights(resumed.matcher.state_dict(), straight[1])
    # on an epoch's last step: the epoch ends (validated, saved), then the run stops
    other = tmp_path / "other"
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(), data, other).fit(on_step=_sigterm_at(victim.steps_per_epoch))
    saved = load_checkpoint(other / LAST)
    assert (saved["epoch"], saved["batch_in_epoch"]) == (1, 0) and len(saved["history"]) == 1


def test_cli_sigterm_exits_130_and_suggests_resume_only_with_a_checkpoint(
    tmp_path, capsys, monkeypatch
):
    """The message offered --resume also where no checkpoint had been written yet; SIGTERM
    ended the process without a word (and could leave patches_*.tmp.npz behind)."""
    import os
    import signal
    from pathlib import Path

    import numpy as np

    from training.cli import main

    tiny = str(Path(__file__).resolve().parents[2] / "training" / "configs" / "tiny.yaml")
    real_savez = np.savez

    def savez_then_sigterm(path, *args, **kwargs):  # killed while the patch cache is written
        real_savez(path, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(np, "savez", savez_then_sigterm)
    early = tmp_path / "early"
    assert main(["train", "--config", tiny, "--out", str(early)]) == 130
    err = capsys.readouterr().err
    assert f"interrupted; no {early / LAST} was written, so there is nothing to resume" in err
    assert "--resume" not in err
    assert sorted(p.name for p in early.iterdir()) == []  # no half-written cache
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is restored
    monkeypatch.setattr(np, "savez", real_savez)
    monkeypatch.setattr(Trainer, "fit", _fit_with_sigterm_at_step(3))
    late = tmp_path / "late"
    assert main(["train", "--config", tiny, "--out", str(late)]) == 130
    err = capsys.readouterr().err
    assert f"interrupted; {late / LAST} was saved after step 3 (1 epoch(s) done): continue " in err
    assert load_checkpoint(late / LAST)["global_step"] == 3
    assert not _leftovers(late)


def _fit_with_sigterm_at_step(step: int):
    real_fit = Trainer.fit

    def fit(self: Trainer, resume: bool = False, max_epochs=None, on_step=None):
        return real_fit(self, resume, max_epochs, _sigterm_at(step))

    return fit


def test_cli_resume_into_a_folder_without_a_checkpoint_builds_nothing(tmp_path, capsys):
    """--resume with a mistyped --out built the whole data set first (23 s on the 3MOS tiles)
    and cached it there (199 MB) before saying the checkpoint was not found: now it says so
    at once, and the folder is not created."""
    from pathlib import Path

    from training.cli import main

    tiny = str(Path(__file__).resolve().parents[2] / "training" / "configs" / "tiny.yaml")
    typo = tmp_path / "typo"
    assert main(["train", "--config", tiny, "--out", str(typo), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {typo / LAST} not found; check the --out folder, or train without " in err
    assert "patch" not in err.lower() and not typo.exists()


def _leftovers(folder) -> list[str]:
    """Temporary files left in ``folder``: a checkpoint's (``.partial-``), a cache's (``.tmp``)."""
    return [p.name for p in folder.iterdir() if ".tmp" in p.name or ".partial-" in p.name]
