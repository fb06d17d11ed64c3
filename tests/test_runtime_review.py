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


class _FakeCudaSession:
    """A CUDA session as onnxruntime's Python wrapper presents it, run by the CPU underneath.

    ``fail_at``: the run (1-based; run 1 is the load check) that fails on the "GPU". With the
    wrapper's fallback on, it moves to ``CPUExecutionProvider`` and retries, as onnxruntime's
    ``InferenceSession.run`` does on EPFail; after ``disable_fallback()`` it raises.
    """

    made: list[_FakeCudaSession] = []

    def __init__(self, source, sess_options=None, providers=None, *, real, fail_at) -> None:
        self._real = real(source, sess_options=sess_options, providers=["CPUExecutionProvider"])
        self._providers = list(providers or [])
        self.fallback, self.calls, self.fail_at = True, 0, fail_at
        _FakeCudaSession.made.append(self)

    def get_providers(self) -> list[str]:
        return list(self._providers)

    def disable_fallback(self) -> None:
        self.fallback = False

    def run(self, *args):
        self.calls += 1
        if self.calls >= self.fail_at and self._providers[0] == "CUDAExecutionProvider":
            if not self.fallback:
                raise RuntimeError(
                    "[ONNXRuntimeError] : 11 : EP_FAIL : CUDA failure 2: out of memory"
                )
            self._providers = ["CPUExecutionProvider"]
        return self._real.run(*args)

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def fake_cuda(monkeypatch):
    """onnxruntime that lists CUDA and makes :class:`_FakeCudaSession`s; set ``.fail_at``."""
    import onnxruntime as ort

    real, available = ort.InferenceSession, ort.get_available_providers()
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *available]
    )
    state = {"fail_at": 10**9}

    def make(*args, **kw):
        return _FakeCudaSession(*args, real=real, fail_at=state["fail_at"], **kw)

    monkeypatch.setattr(ort, "InferenceSession", make)
    _FakeCudaSession.made.clear()
    return state


def test_the_log_names_the_provider_after_onnxruntime_moves_to_the_cpu(fake_cuda) -> None:
    """The first real batch fails on the "GPU" after the load check passed: onnxruntime moves
    the session to the CPU and says so only on stdout. The matcher said CUDA throughout; now
    it says the move and names the CPU. DEVICE cuda turns the fallback off and refuses."""
    from sar_optical_matcher.model import runtime

    fake_cuda["fail_at"] = 2
    log: list[str] = []
    m = runtime.OnnxMatcher(runtime.DEFAULT_MODEL_PATH, device="auto", log=log.append)
    assert m.provider == "CUDAExecutionProvider" and "with CUDAExecutionProvider" in log[0]
    t = m.contract.template_size
    rng = np.random.default_rng(0)
    templates = rng.standard_normal((2, t, t)).astype(np.float32)
    regions = rng.standard_normal((2, 2 * t, 2 * t)).astype(np.float32)
    maps = m.correspondence_maps(templates, regions)
    assert np.isfinite(maps).all()
    assert m.provider == "CPUExecutionProvider"
    assert len(log) == 2 and "moved the session from CUDAExecutionProvider to " in log[1]
    assert "CPUExecutionProvider" in log[1]
    strict = runtime.OnnxMatcher(runtime.DEFAULT_MODEL_PATH, device="cuda", log=log.append)
    assert not _FakeCudaSession.made[-1].fallback
    with pytest.raises(runtime.ModelError, match=r"onnxruntime \(CUDAExecutionProvider\) failed "
                       r"on a batch.*CUDA failure 2: out of memory"):  # fmt: skip
        strict.correspondence_maps(templates, regions)


def test_a_gpu_failing_the_load_check_is_not_blamed_on_the_model(fake_cuda, monkeypatch) -> None:
    """The load check itself fails on the "GPU" (run 1): 'auto' opened the model anew on the
    CPU and says why (it raised "the network was built for another patch size ... re-export"
    for the shipped model); 'cuda' refuses and says a GPU failure reads the same."""
    from sar_optical_matcher.model import runtime

    fake_cuda["fail_at"] = 1
    _FakeCudaSession.made.clear()
    log: list[str] = []
    # the wrapper's fallback would hide it: a GPU whose failure it cannot retry (cuDNN)
    import onnxruntime as ort

    make = ort.InferenceSession

    def no_fallback(*args, **kw):
        session = make(*args, **kw)
        session.fallback = False
        return session

    monkeypatch.setattr(ort, "InferenceSession", no_fallback)
    m = runtime.OnnxMatcher(runtime.DEFAULT_MODEL_PATH, device="auto", log=log.append)
    assert m.provider == "CPUExecutionProvider"
    assert "with CPUExecutionProvider" in log[0]
    assert "the CUDA session failed the load check" in log[0] and "the CPU passed it" in log[0]
    with pytest.raises(runtime.ModelError, match=r"this ran on CUDAExecutionProvider: a failure "
                       r"of the GPU.*DEVICE cpu tells the two apart"):  # fmt: skip
        runtime.OnnxMatcher(runtime.DEFAULT_MODEL_PATH, device="cuda", log=log.append)
