"""Regression tests of the benchmark and experiment scripts: what they time, wait for, reuse, write.

* ``bench_correspondence``: a per-window path is warmed up on its own path (never a dense pass,
  whose memory would count in its peak RSS, nor a cold first call in the timed region), and a
  partial map extrapolates whole window batches only, the template's descriptor once;
* ``run_child`` (both benchmarks): a child that dies without reporting is an error, not a
  parent waiting forever;
* ``run_experiment``: a kept model of other settings is refused, the document's section is
  replaced by rename and only between one well-ordered pair of markers.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from scripts import bench_correspondence as bc
from scripts import run_experiment as rx
from training.config import load_config, save_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bc.write_random_model(tmp_path_factory.mktemp("model"), "tiny")


class _FakeClock:
    """``perf_counter`` that only the fake session advances (deterministic timings)."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


def _fake_strided(monkeypatch: pytest.MonkeyPatch, clock: _FakeClock) -> None:
    """Strided session costing 10 s on its first call (cold), then 1 s a call + 0.01 s a window."""
    real = bc._strided_session
    calls = {"n": 0}

    def fake(model: Path, matcher: Any, threads: int | None) -> Any:
        session = real(model, matcher, threads)
        sar_input = matcher.contract.sar_input

        def run(names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            clock.t += (10.0 if calls["n"] == 0 else 0.0) + 1.0 + 0.01 * len(feeds[sar_input])
            calls["n"] += 1
            return session.run(names, feeds)

        return SimpleNamespace(run=run)

    monkeypatch.setattr(bc, "_strided_session", fake)
    monkeypatch.setattr(bc, "time", SimpleNamespace(perf_counter=clock.now))


def _job(model: Path, method: str, windows: int | None = None) -> dict[str, Any]:
    return {"model": model, "device": "cpu", "threads": 1, "n": 1, "batch": 1, "seed": 0,
            "windows": windows, "method": method}  # fmt: skip


def test_per_window_timing_excludes_warm_up_and_extrapolates_whole_batches(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny model: 17 x 17 = 289 windows, batches of 256.

    True cost of one keypoint under the fake session: template call 1.01 s, batches of 256 and
    33 windows 3.56 + 1.33 s: 5.9 s. The cold first call (10 s) was timed, and ``--reference-
    windows 50`` scaled a 50-window call and the template by 289 / 50 (72 s).
    """
    clock = _FakeClock()
    _fake_strided(monkeypatch, clock)
    full = bc._time_path(_job(tiny_model, "per_window_strided"))
    assert full["windows"] == 289
    assert full["seconds"] == pytest.approx(5.9)
    part = bc._time_path(_job(tiny_model, "per_window_strided", windows=50))
    assert part["windows"] == 256  # rounded up to a whole batch
    # template once, the batch of 256 scaled to 289 windows; the last batch's call overhead
    # is the only thing extrapolation cannot know
    assert part["seconds"] == pytest.approx(1.01 + 3.56 * 289 / 256)
    assert part["seconds"] == pytest.approx(full["seconds"], rel=0.2)
    assert np.isfinite(part["maps"]).sum() == 256


def test_timed_windows_are_whole_batches() -> None:
    assert bc.timed_windows(None, 16641) == 16641
    assert bc.timed_windows(1, 16641) == bc.WINDOW_BATCH
    assert bc.timed_windows(1024, 16641) == 1024
    assert bc.timed_windows(1025, 16641) == 1280
    assert bc.timed_windows(5000, 289) == 289


def test_each_path_warms_up_on_itself(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A per-window path's warm-up was a dense pass: its memory counted in that path's RSS."""
    methods: list[str] = []
    real = bc.OnnxMatcher.correspondence_maps

    def spy(self: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        methods.append(kwargs.get("method", "dense"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(bc.OnnxMatcher, "correspondence_maps", spy)
    expected = {"per_window": ["per_window"], "per_window_strided": [], "dense": ["dense"] * 2}
    for method, calls in expected.items():
        methods.clear()
        out = bc._time_path(_job(tiny_model, method))
        assert methods == calls, method
        assert out["maps"].shape == (1, 17, 17) and np.isfinite(out["maps"]).all()


def _dies(code: int, queue: Any) -> None:
    os._exit(code)


def _reports(value: int, queue: Any) -> None:
    queue.put({"value": value})


def test_run_child_reports_a_child_that_dies_without_reporting() -> None:
    """The parent waited forever on the queue (e.g. a child killed by the OOM killer)."""
    with pytest.raises(SystemExit, match="exited with code 3 before reporting"):
        bc.run_child(_dies, 3, poll_s=0.2)
    assert bc.run_child(_reports, 7, poll_s=0.2) == {"value": 7}


def test_bench_register_reports_a_failed_model_export(tmp_path: Path) -> None:
    from scripts import bench_register as br

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit, match="benchmark child failed"):
        br.run_child(br._model_child, str(blocker / "sub"), "tiny", poll_s=0.2)


# -- run_experiment ----------------------------------------------------------------------


def _args(tmp_path: Path, **kw: Any) -> argparse.Namespace:
    base = dict(config=ROOT / "training/configs/default.yaml", epochs=3, out=tmp_path / "exp",
                force=False, data="3mos:ROOT:A,B", synthetic="synthetic:2:512", w_recon=1.0,
                w_adv=0.1, samples_per_pair=2, synthetic_samples_per_pair=6)  # fmt: skip
    base.update(kw)
    return argparse.Namespace(**base)


def _trained_level(args: argparse.Namespace, ratio: float) -> Path:
    """A finished level as the trainer leaves it: its config.yaml and the exported model."""
    level = args.out / f"sup{int(round(ratio * 100)):03d}"
    level.mkdir(parents=True)
    overrides = [f"data.supervision_ratio={ratio}", f"optim.epochs={args.epochs}",
                 f"loss.w_recon={args.w_recon}", f"loss.w_adv={args.w_adv}"]  # fmt: skip
    cfg = load_config(args.config, overrides)
    cfg.run.out_dir = str(level)
    cfg.version = "0.0-trained-earlier"  # a label: not a setting that changes the weights
    save_config(cfg, level / "config.yaml")
    (level / "model.onnx").write_bytes(b"x")
    return level


def test_a_kept_model_must_have_been_trained_with_these_settings(tmp_path, monkeypatch):
    """Rerunning with other --epochs / --w-adv and the same --out reused the old models under
    the new command line in the table."""
    calls: list[list[str]] = []
    monkeypatch.setattr(rx, "run", calls.append)
    level = _trained_level(_args(tmp_path, epochs=3), 0.25)
    # same settings, another version label: kept, nothing run
    assert rx.train_and_export(_args(tmp_path, epochs=3), 0.25) == level / "model.onnx"
    for changed in ({"epochs": 8}, {"w_adv": 0.0}):
        with pytest.raises(SystemExit, match="trained with other settings.*--force"):
            rx.train_and_export(_args(tmp_path, **changed), 0.25)
    assert calls == []
    # --force retrains it
    rx.train_and_export(_args(tmp_path, epochs=8, force=True), 0.25)
    assert "optim.epochs=8" in calls[0]


def _rows(tmp_path: Path) -> list[tuple[float, dict]]:
    hist = tmp_path / "h.png"
    hist.write_bytes(b"\x89PNG new")
    metrics = {"within_1px": 0.1, "within_3px": 0.3, "within_5px": 0.5, "median_px": 4.0,
               "mean_px": 9.0, "confidence": {"auc": 0.7}, "histogram": hist}  # fmt: skip
    return [(1.0, dict(metrics, synthetic=dict(metrics)))]


def test_write_doc_refuses_markers_out_of_order_and_writes_nothing(tmp_path):
    """END before START: everything after START (to the end of the file) was deleted."""
    doc = tmp_path / "docs" / "results.md"
    doc.parent.mkdir()
    original = f"# Results\n\n{rx.END}\nkeep me\n\n{rx.START}\nold table\n\n## Later section\n"
    doc.write_text(original)
    with pytest.raises(ValueError, match="not one pair"):
        rx.write_doc(doc, _rows(tmp_path), _args(tmp_path))
    assert doc.read_text() == original
    assert not (doc.parent / "img").exists()
    doc.write_text(original.replace(rx.END, rx.START + rx.END))  # two sections
    with pytest.raises(ValueError, match="2 <!-- experiment:start -->"):
        rx.write_doc(doc, _rows(tmp_path), _args(tmp_path))


def test_write_doc_replaces_the_document_by_rename(tmp_path):
    """The document was rewritten in place: an interrupted write left it truncated."""
    doc = tmp_path / "results.md"
    doc.write_text(f"# Results\n\nbefore\n\n{rx.START}\nold\n{rx.END}\n\nafter\n")
    inode = doc.stat().st_ino
    keep = tmp_path / "hold.md"
    os.link(doc, keep)  # the old inode stays alive, so a new file cannot reuse its number
    rx.write_doc(doc, _rows(tmp_path), _args(tmp_path))
    assert doc.stat().st_ino != inode
    text = doc.read_text()
    assert text.startswith("# Results\n\nbefore\n\n") and text.endswith(f"{rx.END}\n\nafter\n")
    assert "| 100% | 10.0% | 30.0% | 50.0% | 4.0 | 9.0 | 0.70 | 30.0% | 50.0% | 4.0 |" in text
    assert (tmp_path / "img" / "experiment_sup100.png").read_bytes() == b"\x89PNG new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.png", "hold.md", "img", "results.md"]
