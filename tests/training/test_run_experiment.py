"""The paper's supervision experiment driver (scripts/run_experiment.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from scripts import run_experiment as rx


def _args(tmp_path: Path, **kw) -> argparse.Namespace:
    base = dict(
        config=Path("training/configs/default.yaml"),
        epochs=3,
        out=tmp_path / "exp",
        force=False,
        data="3mos:ROOT:A,B",
        synthetic="synthetic:2:512",
        samples_per_pair=2,
        synthetic_samples_per_pair=6,
        w_recon=1.0,
        w_adv=0.1,
    )
    base.update(kw)
    return argparse.Namespace(**base)


def test_each_level_varies_only_the_supervision_ratio(tmp_path, monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(rx, "run", calls.append)
    args = _args(tmp_path)
    models = [rx.train_and_export(args, r) for r in (1.0, 0.05)]

    assert [m.parent.name for m in models] == ["sup100", "sup005"]
    train = [c for c in calls if c[2:4] == ["training", "train"]]
    assert len(train) == 2 and len(calls) == 4  # train + export per level
    sets = [[c[i + 1] for i, x in enumerate(c) if x == "--set"] for c in train]
    assert sets[0][0] == "data.supervision_ratio=1.0"
    assert sets[1][0] == "data.supervision_ratio=0.05"
    # everything else identical: epochs and the paper's semi-supervised terms switched on
    assert sets[0][1:] == sets[1][1:] == ["optim.epochs=3", "loss.w_recon=1.0", "loss.w_adv=0.1"]
    assert "--resume" not in train[0]


def test_existing_models_are_kept_and_interrupted_runs_resume(tmp_path, monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(rx, "run", calls.append)
    args = _args(tmp_path)
    done, partial = args.out / "sup100", args.out / "sup050"
    done.mkdir(parents=True)
    partial.mkdir(parents=True)
    (done / "model.onnx").write_bytes(b"x")
    (partial / "checkpoint_last.pt").write_bytes(b"x")

    assert rx.train_and_export(args, 1.0) == done / "model.onnx"
    assert calls == []
    rx.train_and_export(args, 0.5)
    assert "--resume" in calls[0]


def test_force_retrains_from_scratch(tmp_path, monkeypatch):
    """--force resumed a finished run for 0 epochs and re-exported the same model."""
    calls: list[list[str]] = []
    monkeypatch.setattr(rx, "run", calls.append)
    args = _args(tmp_path, force=True)
    level = args.out / "sup100"
    level.mkdir(parents=True)
    for name in ("model.onnx", "checkpoint_last.pt", "checkpoint_best.pt", "metrics.csv"):
        (level / name).write_bytes(b"x")
    rx.train_and_export(args, 1.0)
    assert calls[0][2:4] == ["training", "train"] and "--resume" not in calls[0]
    assert sorted(p.name for p in level.iterdir()) == ["metrics.csv"]


def _summary(within3: float, median: float, hist: Path) -> dict:
    metrics = {
        "within_1px": within3 / 2,
        "within_3px": within3,
        "within_5px": min(1.0, within3 * 1.5),
        "median_px": median,
        "mean_px": median * 2,
        "confidence": {"auc": 0.7},
        "histogram": hist,
    }
    return metrics


def test_write_doc_replaces_only_the_experiment_section(tmp_path):
    hist = tmp_path / "h.png"
    hist.write_bytes(b"\x89PNG fake")
    rows = []
    for ratio, w3 in ((1.0, 0.25), (0.05, 0.125), (0.5, 0.0)):
        s = _summary(w3, 12.0, hist)
        s["synthetic"] = _summary(w3 * 2, 4.0, hist)
        rows.append((ratio, s))
    rows[-1][1]["confidence"]["auc"] = float("nan")  # no correct match: AUC undefined
    doc = tmp_path / "docs" / "results.md"
    doc.parent.mkdir()
    doc.write_text(f"# Results\n\nbefore\n\n{rx.START}\nold table\n{rx.END}\n\nafter\n")

    rx.write_doc(doc, rows, _args(tmp_path))
    text = doc.read_text()

    assert "old table" not in text
    assert text.startswith("# Results\n\nbefore\n") and text.rstrip().endswith("after")
    assert "| 100% | 12.5% | 25.0% | 37.5% | 12.0 | 24.0 | 0.70 | 50.0% | 75.0% | 4.0 |" in text
    assert "| 5% | 6.2% | 12.5% | 18.8% | 12.0 | 24.0 | 0.70 | 25.0% | 37.5% | 4.0 |" in text
    assert "| 50% | 0.0% | 0.0% | 0.0% | 12.0 | 24.0 | - | 0.0% | 0.0% | 4.0 |" in text
    # the histograms in one row under their supervision levels (paper Fig. 4)
    assert "| 100% supervision | 5% supervision | 50% supervision |" in text
    for tag in ("sup100", "sup005"):
        assert f"img/experiment_{tag}.png" in text
        assert (doc.parent / "img" / f"experiment_{tag}.png").read_bytes() == hist.read_bytes()


def test_write_doc_appends_a_section_when_markers_are_absent(tmp_path):
    hist = tmp_path / "h.png"
    hist.write_bytes(b"png")
    s = _summary(0.5, 3.0, hist)
    s["synthetic"] = _summary(0.5, 3.0, hist)
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n")
    rx.write_doc(doc, [(0.25, s)], _args(tmp_path))
    text = doc.read_text()
    assert text.count(rx.START) == 1 and text.count(rx.END) == 1
    assert "## The paper's experiment" in text and "| 25% |" in text


def test_every_level_is_evaluated_on_real_and_synthetic_samples(tmp_path, monkeypatch):
    import json

    from scripts import evaluate as ev

    seen: list[list[str]] = []

    def fake_main(argv):
        seen.append(list(argv))
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True)
        median = 40.0 if "3mos" in argv[argv.index("--data") + 1] else 4.0
        (out / "results.json").write_text(json.dumps({"summaries": [{"median_px": median}]}))
        return 0

    monkeypatch.setattr(ev, "main", fake_main)
    s = rx.evaluate(_args(tmp_path), 0.25, tmp_path / "m.onnx")

    assert s["median_px"] == 40.0 and s["synthetic"]["median_px"] == 4.0
    assert s["histogram"] == tmp_path / "exp" / "eval_sup025" / "real" / "histograms.png"
    data = [a[a.index("--data") + 1] for a in seen]
    per_pair = [a[a.index("--samples-per-pair") + 1] for a in seen]
    assert data == ["3mos:ROOT:A,B", "synthetic:2:512"] and per_pair == ["2", "6"]
    # identical samples for every level: the evaluation seed never depends on the ratio
    assert all(a[a.index("--seed") + 1] == "0" for a in seen)


def test_auxiliary_weights_come_from_the_command_line(tmp_path, monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(rx, "run", calls.append)
    rx.train_and_export(_args(tmp_path, w_recon=0.5, w_adv=0.0), 0.05)
    assert "loss.w_recon=0.5" in calls[0] and "loss.w_adv=0.0" in calls[0]


def test_bad_arguments_are_refused_before_any_level_trains(tmp_path, monkeypatch, capsys):
    """--ratios abc was a ValueError traceback; a share of 1.5, --epochs 0, a bad --w-adv or
    a misspelt --data failed only after the levels before it had trained (hours)."""
    import pytest

    calls: list[list[str]] = []
    monkeypatch.setattr(rx, "run", calls.append)
    out = ["--out", str(tmp_path / "exp"), "--doc", str(tmp_path / "results.md")]
    for argv, message in (
        (["--ratios", "1,abc"], "comma-separated numbers in (0, 1]"),
        (["--ratios", "1,1.5"], "must be in (0, 1] (0.05 for 5 %), got 1.5"),
        (["--ratios", "0.5,0.5"], "given twice"),
        # both were sup050: the second level replaced the first's model (with --force)
        (["--ratios", "1,0.5,0.504"], "shares 0.5 and 0.504 both name the level sup050"),
        (["--epochs", "0"], "must be an integer >= 1, got '0'"),
        (["--samples-per-pair", "0"], "must be an integer >= 1, got '0'"),
    ):
        with pytest.raises(SystemExit) as exc:
            rx.main(argv + out)
        assert exc.value.code == 2 and message in capsys.readouterr().err
    for argv, message in (
        (["--w-adv", "-1"], "loss.w_adv must be >= 0"),
        (["--data", f"3mos:{tmp_path / 'nowhere'}"], "nowhere"),
    ):
        with pytest.raises(SystemExit, match=message):
            rx.main(["--ratios", "1,0.05"] + argv + out)
    assert calls == [] and not (tmp_path / "exp").exists()


def test_levels_run_in_the_callers_folder_with_the_repository_importable(tmp_path, monkeypatch):
    """The training and export subprocesses ran in the repository, so a relative --out
    trained into the repository's runs/ while the script looked for the model (and
    evaluated) in the caller's folder: "model runs/exp/sup100/model.onnx not found". Now
    they run where the script was started, with the repository on PYTHONPATH; a failing
    level ends the experiment with one line, not a CalledProcessError traceback."""
    import os
    import subprocess
    import sys

    import pytest

    monkeypatch.chdir(tmp_path)
    seen: dict = {}

    def fake(cmd, **kw):
        seen.update(kw, cwd=os.getcwd() if kw.get("cwd") is None else kw["cwd"], cmd=cmd)
        return subprocess.CompletedProcess(cmd, 3)

    monkeypatch.setattr(subprocess, "run", fake)
    with pytest.raises(SystemExit, match=r"error: `-m training train \.\.\.` failed \(exit "
                       r"status 3; its message is above\)"):  # fmt: skip
        rx.run([sys.executable, "-m", "training", "train", "--out", "runs/exp/sup100"])
    assert Path(seen["cwd"]) == tmp_path
    assert seen["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(rx.ROOT)


def test_a_failed_document_write_leaves_the_histograms_as_they_were(tmp_path, monkeypatch):
    """The histograms were replaced before the document was written: a failing document write
    left the new images under the old table (helper-74). Now both are staged and renamed
    together, so nothing changes; a write that succeeds replaces both."""
    hist = tmp_path / "h.png"
    hist.write_bytes(b"NEW")
    s = _summary(0.5, 3.0, hist)
    s["synthetic"] = _summary(0.5, 3.0, hist)
    doc = tmp_path / "results.md"
    doc.write_text(f"# Results\n\n{rx.START}\nold table\n{rx.END}\n")
    (tmp_path / "img").mkdir()
    old_image = tmp_path / "img" / "experiment_sup025.png"
    old_image.write_bytes(b"OLD")
    real_write_text = Path.write_text

    def failing(self, *args, **kw):
        if self.name.startswith(".") or "results" in self.name:
            raise OSError("disk full (simulated)")
        return real_write_text(self, *args, **kw)

    monkeypatch.setattr(Path, "write_text", failing)
    with pytest.raises(OSError, match="disk full"):
        rx.write_doc(doc, [(0.25, s)], _args(tmp_path))
    monkeypatch.undo()
    assert "old table" in doc.read_text() and old_image.read_bytes() == b"OLD"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.png", "img", "results.md"]
    assert [p.name for p in (tmp_path / "img").iterdir()] == ["experiment_sup025.png"]
    rx.write_doc(doc, [(0.25, s)], _args(tmp_path))
    assert "old table" not in doc.read_text() and old_image.read_bytes() == b"NEW"


_3MOS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "3mos"


@pytest.mark.skipif(not _3MOS.is_dir(), reason="3MOS sample data not available")
def test_a_training_scene_as_evaluation_data_is_refused(tmp_path, monkeypatch):
    """--data SEN_city (a training scene of the config) was scored under the table heading
    "the held-out 3MOS scenes" (helper-74). Now refused before any level trains."""
    calls: list = []
    monkeypatch.setattr(rx, "train_and_export", lambda *a: calls.append(a))
    with pytest.raises(SystemExit, match=r"--data has 3MOS scenes \['SEN_city'\] that "
                       r".*default\.yaml does not hold out"):  # fmt: skip
        rx.main(["--ratios", "1", "--data", f"3mos:{_3MOS}:SEN_city,RCM_city",
                 "--out", str(tmp_path / "exp"), "--doc", str(tmp_path / "r.md")])  # fmt: skip
    assert calls == [] and not (tmp_path / "exp").exists()
