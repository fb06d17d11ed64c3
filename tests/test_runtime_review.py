"""Review findings on the model runtime: per-window memory, a broken onnxruntime install."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from sar_optical_matcher.model import runtime
from sar_optical_matcher.model.runtime import MissingDependencyError, OnnxMatcher
from tests.model_fixtures import SEARCH, TEMPLATE, make_twin_model

M = SEARCH - TEMPLATE + 1


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> OnnxMatcher:
    path = make_twin_model(tmp_path_factory.mktemp("model") / "twin.onnx", 8, (4, 8, 8, 8))
    return OnnxMatcher(path, device="cpu", threads=1, log=lambda _: None)


def test_per_window_maps_copy_one_batch_of_windows_at_a_time(twin: OnnxMatcher) -> None:
    """All m^2 windows were copied at once before the batch loop: 33^2 x 64^2 float32 = 17.8 MB
    here, 1.09 GB per keypoint for the default model (T 128, S 256). Now one batch of
    WINDOW_BATCH windows (4.2 MB here) is copied at a time; the map is unchanged."""
    rng = np.random.default_rng(0)
    regions = rng.normal(size=(1, SEARCH, SEARCH)).astype(np.float32)
    templates = regions[:, 9 : 9 + TEMPLATE, 21 : 21 + TEMPLATE].copy()
    all_windows_mb = M * M * TEMPLATE * TEMPLATE * 4 / 1e6
    batch_mb = runtime.WINDOW_BATCH * TEMPLATE * TEMPLATE * 4 / 1e6
    tracemalloc.start()
    try:
        maps = twin.correspondence_maps(templates, regions, method="per_window", smoothing_px=0)
        peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()
    assert peak_mb < 3 * batch_mb < all_windows_mb, (peak_mb, batch_mb, all_windows_mb)
    assert np.unravel_index(maps[0].argmax(), (M, M)) == (9, 21)
    dense = twin.correspondence_maps(templates, regions, smoothing_px=0)
    assert np.abs(maps - dense).max() <= 1e-4


def test_a_broken_onnxruntime_install_is_not_reported_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An onnxruntime that is installed but fails to import (Windows 'DLL load failed', a
    numpy it was not built for) was reported as not installed: "Install it ... `pip install
    onnxruntime`", which the user had done, and the real error was not shown."""
    fake = tmp_path / "site" / "onnxruntime"
    fake.mkdir(parents=True)
    dll = "DLL load failed while importing onnxruntime_pybind11_state: module not found"
    (fake / "__init__.py").write_text(f"raise ImportError({dll!r})\n")
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(MissingDependencyError) as info:
        runtime.resolve_providers("auto")
    text = str(info.value)
    assert "installed but cannot be imported (ImportError: DLL load failed" in text
    assert "--force-reinstall onnxruntime" in text and "Visual C++" in text
    assert "needs the Python package onnxruntime" not in text
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # really absent: the install hint
    with pytest.raises(MissingDependencyError, match="needs the Python package onnxruntime"):
        runtime.resolve_providers("auto")
