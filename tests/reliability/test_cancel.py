"""Cancellation at any stage stops at the next check and leaves no output file behind.

A feedback cancels itself when the progress first reaches a given percentage (so at a known
stage: Register maps keypoints to 0-7 %, matching to 7-70 %, the GDAL warp to 70-95 %, the side
outputs after 95 %) and counts the progress reports that follow the cancel: a run that went on
working (another tile, batch or warp chunk) would report progress again. No clock is read: a
time limit fails on a loaded machine and passes a run that polls too rarely on a fast one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sar_optical_matcher import rasters
from sar_optical_matcher import registration as reg
from tests.processing import Pair, provider_fixture, twin_model_fixture, write_pair  # noqa: F401
from tests.reliability import alg_params, files_under, run_refused

#: progress reports allowed after the cancel (the step that saw it may still report once)
MAX_REPORTS_AFTER_CANCEL = 1


@pytest.fixture(name="pair", scope="module")
def pair_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    """A 256 px pair (fast) with the default truth."""
    return write_pair(tmp_path_factory.mktemp("pair"), seed=4, size=256)


def cancel_at(percent: float, calls: int | None = None):
    """A QgsProcessingFeedback canceling at ``percent`` progress or on the ``calls``-th call."""
    from qgis.core import QgsProcessingFeedback

    class CancelAt(QgsProcessingFeedback):
        def __init__(self) -> None:
            super().__init__()
            self.canceled_at: float | None = None  # the progress (%) at the cancel
            self.progress_calls = 0
            self.reports_after_cancel = 0

        def setProgress(self, progress: float) -> None:  # noqa: N802 - QGIS API name
            super().setProgress(progress)
            self.progress_calls += 1
            if self.canceled_at is not None:
                self.reports_after_cancel += 1
            hit = progress >= percent or (calls is not None and self.progress_calls >= calls)
            if hit and self.canceled_at is None:
                self.canceled_at = float(progress)
                self.cancel()

    return CancelAt()


def _stopped_at_once(feedback) -> None:
    assert feedback.canceled_at is not None, "the run never reached the cancel point"
    after = feedback.reports_after_cancel
    assert after <= MAX_REPORTS_AFTER_CANCEL, (
        f"{after} progress reports after the cancel at {feedback.canceled_at:.1f} %: the run "
        "went on working"
    )


#: (algorithm, percent): keypoints, matching (early, late), warp (start, end), side outputs
STAGES = [
    ("detectkeypoints", 0.0),
    ("computecorrespondence", 0.0),
    ("computecorrespondence", 40.0),
    ("computecorrespondence", 89.0),
    ("registersartooptical", 0.0),
    ("registersartooptical", 30.0),
    ("registersartooptical", 70.5),
    ("registersartooptical", 94.9),
]


@pytest.mark.parametrize(("alg", "percent"), STAGES)
def test_cancel_stops_quickly_and_writes_nothing(
    alg: str, percent: float, provider, pair: Pair, twin_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    params = alg_params(alg, pair.optical, pair.sar, twin_model, out, BATCH_SIZE=2, MIN_DISTANCE=16)
    if alg == "detectkeypoints":
        params.pop("BATCH_SIZE")
    feedback = cancel_at(percent)
    run_refused(alg, params, out, "Cancel", feedback=feedback)
    _stopped_at_once(feedback)
    assert files_under(out) == []


@pytest.mark.parametrize("calls", [2, 5])
def test_cancel_after_n_progress_calls(calls, provider, pair, twin_model, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    params = alg_params("registersartooptical", pair.optical, pair.sar, twin_model, out,
                        BATCH_SIZE=1, MIN_DISTANCE=16)  # fmt: skip
    feedback = cancel_at(101.0, calls=calls)
    run_refused("registersartooptical", params, out, "Cancel", feedback=feedback)
    _stopped_at_once(feedback)
    assert feedback.progress_calls <= calls + 1  # no further work reported progress


def test_uncanceled_run_writes_everything(provider, pair, twin_model, tmp_path) -> None:
    """Control: the same feedback class that never cancels lets every output through."""
    import processing

    out = tmp_path / "out"
    out.mkdir()
    params = alg_params("registersartooptical", pair.optical, pair.sar, twin_model, out,
                        MIN_DISTANCE=16)  # fmt: skip
    feedback = cancel_at(101.0)
    processing.run("sarmatcher:registersartooptical", params, feedback=feedback)
    assert feedback.canceled_at is None
    assert files_under(out) == ["reg.html", "reg.points", "reg.tif", "tp.gpkg"]


# --- the pipeline functions, with plain callbacks -------------------------------------------------


def test_matching_checks_cancel_per_batch(pair: Pair, twin_model: Path) -> None:
    ms = reg.MatchSettings(model_path=str(twin_model), template_size=64, search_size=96,
                           confidence_threshold=0.0, batch_size=1)  # fmt: skip
    matcher = reg.load_matcher(ms)
    optical, sar = rasters.open_raster(pair.optical), rasters.open_raster(pair.sar)
    xy = np.array([[64.5 + 8 * i, 128.5] for i in range(16)])
    polls: list[int] = []

    def is_canceled() -> bool:
        polls.append(len(polls))
        return len(polls) > 3

    with pytest.raises(reg.Canceled):
        reg.compute_matches(optical, 1, sar, 1, xy, matcher, ms, is_canceled=is_canceled)
    assert len(polls) == 4  # stopped at the first poll after the cancel, not at the end


def test_warp_cancel_removes_the_partial_raster(pair: Pair, tmp_path: Path) -> None:
    optical, sar = rasters.open_raster(pair.optical), rasters.open_raster(pair.sar)
    src = np.random.default_rng(0).uniform(20, 230, (30, 2))
    ties = reg.TiePoints(src, pair.sar_to_optical(src), np.ones(30, bool), np.arange(30))
    fit = reg.fit_tie_points(ties, "affine", 1.0, 8, np.random.default_rng(0), half_range=16)
    seen: list[float] = []
    with pytest.raises(reg.Canceled):
        reg.warp_sar(sar, optical, fit, tmp_path / "w.tif", reg.WarpSettings(),
                     is_canceled=lambda: len(seen) > 1, progress=seen.append)  # fmt: skip
    assert files_under(tmp_path) == []
    reg.warp_sar(sar, optical, fit, tmp_path / "w.tif", reg.WarpSettings())  # control
    assert files_under(tmp_path) == ["w.tif"]
