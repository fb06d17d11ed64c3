"""Regression tests of the trainer's logs and of the resume refusal.

* ``metrics.csv`` / ``loss_curves.png``: were written in place, so a run killed while writing
  them left them truncated; a run without validation logged matplotlib's empty-legend warning;
* ``config_diffs`` (a refused ``--resume``): a key an older checkpoint's config lacks was listed
  as ``(absent) -> value`` even where the value is the key's default.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from training import loop
from training.config import TrainConfig, config_to_dict

HISTORY = [
    {"epoch": 1.0, "lr": 1e-3, "train_recon": 0.5, "train_match": 0.9},
    {"epoch": 2.0, "lr": 5e-4, "train_recon": 0.4, "train_match": 0.7},
]


def _written(tmp_path: Path) -> tuple[list[dict[str, str]], bytes]:
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv", newline="")))
    return rows, (tmp_path / "loss_curves.png").read_bytes()


def test_a_kill_while_writing_the_logs_keeps_the_previous_ones(tmp_path, monkeypatch) -> None:
    """Before: after a kill during the CSV's rows metrics.csv held its header only (no row
    of the epoch before), and one during savefig left a loss_curves.png of 7 bytes."""
    loop._write_logs(tmp_path, HISTORY[:1], tensorboard=False)
    rows, png = _written(tmp_path)
    assert [r["epoch"] for r in rows] == ["1.0"] and png.startswith(b"\x89PNG")

    def killed_rows(self, rows):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(csv.DictWriter, "writerows", killed_rows)
        with pytest.raises(KeyboardInterrupt):
            loop._write_logs(tmp_path, HISTORY, tensorboard=False)
    assert _written(tmp_path) == (rows, png)

    def killed_plot(path, history):
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(loop, "_plot", killed_plot)
        with pytest.raises(KeyboardInterrupt):
            loop._write_logs(tmp_path, HISTORY, tensorboard=False)
    new_rows, kept_png = _written(tmp_path)
    assert [r["epoch"] for r in new_rows] == ["1.0", "2.0"]  # the CSV was written whole
    assert kept_png == png
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss_curves.png", "metrics.csv"]

    loop._write_logs(tmp_path, HISTORY, tensorboard=False)  # and a whole write replaces them
    assert _written(tmp_path)[1] != png


def test_a_run_without_validation_plots_no_empty_series(tmp_path, caplog) -> None:
    """Before: the accuracy panel had no line and its legend() logged matplotlib's 'No artists
    with labels found to put in legend' at every epoch of a run without validation pairs; an
    all-NaN validation series was drawn as an empty line with a legend entry."""
    import logging

    history = [{**row, "val_recon": float("nan")} for row in HISTORY]
    assert loop.plotted_series(history) == [
        [("train_recon", [0.5, 0.4])],
        [("train_match", [0.9, 0.7])],
        [],
    ]
    with caplog.at_level(logging.WARNING):
        loop._plot(tmp_path / "curves.png", history)
    assert caplog.records == []
    assert (tmp_path / "curves.png").stat().st_size > 1000
    with_val = [{**row, "val_acc_1px": 0.25 * row["epoch"]} for row in HISTORY]
    assert loop.plotted_series(with_val)[2] == [("val_acc_1px", [0.25, 0.5])]


def test_config_diffs_count_a_key_an_older_config_lacks_as_its_default() -> None:
    """Before: 'augment.zoom_p (absent) -> 0.0; data.random_windows (absent) -> True;
    optim.lr_max 0.003 -> 0.01' for a config of older code that differs in lr_max only."""
    new = config_to_dict(TrainConfig())
    defaults = config_to_dict(TrainConfig())
    old = {k: dict(v) if isinstance(v, dict) else v for k, v in new.items()}
    del old["augment"]["zoom_p"], old["data"]["random_windows"]
    old["optim"]["lr_max"] = 0.003
    new["optim"]["lr_max"] = 0.01
    assert loop.config_diffs(old, new) == ["optim.lr_max 0.003 -> 0.01"]
    # a lacking key whose value now is not its default is listed, with that default
    new["augment"]["zoom_p"] = 0.5
    assert loop.config_diffs(old, new) == [
        f"augment.zoom_p (absent: default {defaults['augment']['zoom_p']!r}) -> 0.5",
        "optim.lr_max 0.003 -> 0.01",
    ]
    # a whole section older code did not have: its keys are their defaults too
    del old["augment"]
    assert loop.config_diffs(old, new)[0].startswith("augment.zoom_p (absent: default ")
    assert len(loop.config_diffs(old, new)) == 2
    # an old config this code rejects (a key it no longer knows): compared as it is
    old["loss"]["retired_key"] = 1
    diffs = loop.config_diffs(old, new)
    assert "loss.retired_key 1 -> (absent)" in diffs
    assert f"data.random_windows (absent) -> {defaults['data']['random_windows']!r}" in diffs
