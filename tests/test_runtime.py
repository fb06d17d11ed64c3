"""Model runtime: contract validation, providers, descriptors, dense vs per-window parity."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from sar_optical_matcher.core.correlation import smooth_maps
from sar_optical_matcher.model import runtime
from sar_optical_matcher.model.runtime import (
    Canceled,
    MissingDependencyError,
    ModelError,
    OnnxMatcher,
    read_contract,
    resolve_providers,
)
from tests.model_fixtures import (
    MAP_SPEC,
    SEARCH,
    TEMPLATE,
    make_bad_models,
    make_random_model,
    make_twin_model,
)

M = SEARCH - TEMPLATE + 1


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    out = make_bad_models(root / "bad")
    out["twin"] = make_twin_model(root / "twin.onnx", descriptor_size=32, widths=(4, 8, 8, 8))
    out["random"] = make_random_model(root / "random.onnx", seed=3)
    out["twin_map"] = make_twin_model(root / "twin_map.onnx", 8, (6, 8), **MAP_SPEC)
    out["random_map"] = make_random_model(root / "random_map.onnx", 8, (6, 8), 3, **MAP_SPEC)
    return out


@pytest.fixture(scope="module")
def twin(models: dict[str, Path]) -> OnnxMatcher:
    return OnnxMatcher(models["twin"], device="cpu", threads=1, log=lambda _: None)


def test_contract_read_back(models: dict[str, Path]) -> None:
    contract = read_contract(models["twin"])
    assert (contract.name, contract.template_size, contract.search_size) == ("twin", 64, 96)
    assert contract.descriptor_size == 32 and contract.map_size == M
    assert (contract.optical.mean, contract.optical.std) == (0.5, 0.2)


def test_header_reader_agrees_with_onnx(models: dict[str, Path]) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(models["twin"]))
    header = runtime._read_header(models["twin"].read_bytes())
    assert header.ir_version == model.ir_version
    assert header.opsets["ai.onnx"] == model.opset_import[0].version == 17
    assert runtime.METADATA_KEY in header.metadata


BAD = {
    "not_onnx": "not an ONNX model or is truncated",
    "empty": "not an ONNX model or is truncated",
    "truncated": "runs past the end of the file",
    "no_metadata": "no 'sar_optical_matcher.contract' entry",
    "bad_json": "not valid JSON",
    "wrong_size": "two 80x80 templates give optical descriptors (2, 8, 17, 17)",
    "wrong_channels": "input 'optical' has 3 channels",
    "swapped_inputs": "input names swapped between the modalities",
    "single_encoder": "has inputs ['optical'] and outputs ['optical_descriptors']",
    "newer_format": "contract format 4 is not supported by this plugin (reads 1, 2, 3)",
    "new_opset": "needs opset 30, your onnxruntime",
    "new_ir": "IR version 99, your onnxruntime",
    "float_size": "template_size must be an integer, got 64.0",
    "training_not_object": "training must be a JSON object, got 'oops'",
    "confidence_incomplete": "confidence model must be an object with 'weights' and 'bias'",
    "nan_weights": "outputs NaN or infinite descriptors",
    "fixed_batch": "its batch dimension is fixed",
    # passed the load check's batch of two, failed after keypoint detection on a batch of 8
    "fixed_batch_2": "input 'optical': its batch dimension is fixed at 2",
    "fixed_sar_size": "input 'sar' has a fixed height or width (128 x 128)",
}


@pytest.mark.parametrize("fault", sorted(BAD))
def test_bad_model_gives_precise_model_error(models: dict[str, Path], fault: str) -> None:
    with pytest.raises(ModelError) as info:
        read_contract(models[fault])
    message = str(info.value)
    assert BAD[fault] in message
    assert f"{fault}.onnx" in message  # names the file
    if fault == "new_opset":
        import onnxruntime

        assert f"{onnxruntime.__version__} supports up to 21" in message
        assert "upgrade onnxruntime" in message


def test_missing_file_is_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        read_contract(tmp_path / "nope.onnx")
    folder = tmp_path / "model.onnx"  # was told "does not exist"
    folder.mkdir()
    with pytest.raises(ModelError, match=r"model\.onnx' is a folder, not an \.onnx file"):
        read_contract(folder)


def test_missing_onnxruntime(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    for call in (lambda: read_contract(models["twin"]), lambda: resolve_providers("auto")):
        with pytest.raises(MissingDependencyError) as info:
            call()
        text = str(info.value)
        assert "pip install onnxruntime" in text and "onnxruntime-gpu" in text
        assert "OSGeo4W" in text


def test_a_failing_run_is_a_model_error(models: dict[str, Path]) -> None:
    """onnxruntime's own exceptions (Fail, InvalidArgument, a CUDA out-of-memory) derive from
    Exception, not RuntimeError: they reached the user as tracebacks."""
    matcher = OnnxMatcher(models["twin"], device="cpu", threads=1, log=lambda _: None)

    class Fail(Exception):  # noqa: N818 - the name onnxruntime gives it
        pass

    def out_of_memory(*_args, **_kw):
        raise Fail("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory")

    matcher._session.run = out_of_memory
    with pytest.raises(ModelError, match=r"failed on a batch of 3 patch\(es\): .*allocate "
                       r"memory; a smaller BATCH_SIZE"):  # fmt: skip
        matcher.optical_descriptors(np.zeros((3, TEMPLATE, TEMPLATE), np.float32))


def test_providers(models: dict[str, Path]) -> None:
    import onnxruntime

    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_providers("tpu")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA present: the CPU-only expectations below do not apply")
    assert resolve_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(MissingDependencyError, match="onnxruntime-gpu"):
        resolve_providers("cuda")
    lines: list[str] = []
    matcher = OnnxMatcher(models["twin"], device="auto", log=lines.append)
    assert matcher.provider == "CPUExecutionProvider"
    assert lines == [
        "SAR-Optical Matcher: running twin 0.0-test with CPUExecutionProvider "
        f"(onnxruntime {onnxruntime.__version__})"
    ]


def test_default_model_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(runtime, "DEFAULT_MODEL_PATH", tmp_path / "default.onnx")
    with pytest.raises(ModelError, match="default model .* is missing"):
        runtime.default_model_path()
    (tmp_path / "default.onnx").write_bytes(b"x")
    assert runtime.default_model_path() == tmp_path / "default.onnx"


def test_descriptors_are_unit_and_windows_match_dense(twin: OnnxMatcher) -> None:
    rng = np.random.default_rng(0)
    regions = rng.normal(size=(2, SEARCH, SEARCH)).astype(np.float32)
    dense = twin.sar_descriptors_dense(regions)  # raw code map: one vector code per window
    assert dense.shape == (2, 32, M, M)
    assert np.linalg.norm(dense, axis=1).std() > 0.01  # not normalised in the graph
    windows = np.stack([regions[1, 7 : 7 + TEMPLATE, 20 : 20 + TEMPLATE]])
    by_window = twin.sar_descriptors_windows(windows)
    np.testing.assert_allclose(np.linalg.norm(by_window, axis=1), 1.0, atol=1e-5)
    code = dense[1, :, 7, 20]
    np.testing.assert_allclose(by_window[0], code / np.linalg.norm(code), atol=1e-5)
    # twin model: the optical encoder is the SAR encoder
    np.testing.assert_allclose(twin.optical_descriptors(windows), by_window, atol=1e-6)


@pytest.mark.parametrize("name", ["twin", "random", "twin_map", "random_map"])
def test_dense_maps_equal_per_window_maps(models: dict[str, Path], name: str) -> None:
    matcher = OnnxMatcher(models[name], device="cpu", threads=1, log=lambda _: None)
    rng = np.random.default_rng(1)
    regions = rng.normal(size=(2, SEARCH, SEARCH)).astype(np.float32)
    templates = regions[:, 10 : 10 + TEMPLATE, 25 : 25 + TEMPLATE] + 0.3 * rng.normal(
        size=(2, TEMPLATE, TEMPLATE)
    ).astype(np.float32)
    dense = matcher.correspondence_maps(templates, regions, method="dense", batch_size=1)
    reference = matcher.correspondence_maps(templates, regions, method="per_window")
    assert dense.shape == reference.shape == (2, M, M) and dense.dtype == np.float32
    assert np.abs(dense - reference).max() <= 1e-4
    assert [d.argmax() for d in dense] == [r.argmax() for r in reference]
    assert np.abs(dense).max() <= 1.0 + 1e-5


@pytest.mark.parametrize("method", ["dense", "per_window"])
def test_contract_map_smoothing_is_applied_to_every_map(
    models: dict[str, Path], tmp_path: Path, method: str
) -> None:
    """A model whose contract says ``map_smoothing_px`` returns the raw maps smoothed by it."""
    import dataclasses
    import shutil

    from training.export import set_contract

    smoothed_path = tmp_path / "smoothed.onnx"
    shutil.copyfile(models["random_map"], smoothed_path)
    set_contract(
        smoothed_path,
        dataclasses.replace(read_contract(models["random_map"]), map_smoothing_px=1.5),
    )
    plain = OnnxMatcher(models["random_map"], device="cpu", threads=1, log=lambda _: None)
    lines: list[str] = []
    smoothed = OnnxMatcher(smoothed_path, device="cpu", threads=1, log=lines.append)
    assert (plain.contract.map_smoothing_px, smoothed.contract.map_smoothing_px) == (0.0, 1.5)
    assert lines[0].endswith("; correspondence maps smoothed by 1.5 px")
    rng = np.random.default_rng(6)
    regions = rng.normal(size=(2, SEARCH, SEARCH)).astype(np.float32)
    templates = regions[:, 5 : 5 + TEMPLATE, 12 : 12 + TEMPLATE].copy()
    raw = plain.correspondence_maps(templates, regions, method=method)
    got = smoothed.correspondence_maps(templates, regions, method=method)
    np.testing.assert_allclose(got, smooth_maps(raw, 1.5), atol=1e-6)
    assert np.abs(got - raw).max() > 0.01  # really smoothed, not the raw map again
    unsmoothed = smoothed.correspondence_maps(templates, regions, method=method, smoothing_px=0)
    np.testing.assert_allclose(unsmoothed, raw, atol=1e-6)  # the caller's override wins
    with pytest.raises(ValueError, match="smoothing_px must be a finite number >= 0"):
        smoothed.correspondence_maps(templates, regions, smoothing_px=-1.0)


def test_code_map_model_contract_and_descriptors(models: dict[str, Path]) -> None:
    matcher = OnnxMatcher(models["twin_map"], device="cpu", threads=1, log=lambda _: None)
    c = matcher.contract
    assert (c.code_size, c.receptive_field, c.descriptor_size) == (52, 13, 8)
    rng = np.random.default_rng(5)
    regions = rng.normal(size=(1, SEARCH, SEARCH)).astype(np.float32)
    dense = matcher.sar_descriptors_dense(regions)
    assert dense.shape == (1, 8, SEARCH - 12, SEARCH - 12)
    window = regions[:, 9 : 9 + TEMPLATE, 30 : 30 + TEMPLATE]
    desc = matcher.sar_descriptors_windows(window)
    assert desc.shape == (1, 8 * 52 * 52)
    block = dense[0, :, 9 : 9 + 52, 30 : 30 + 52].ravel()
    np.testing.assert_allclose(desc[0], block / np.linalg.norm(block), atol=1e-5)


@pytest.mark.parametrize("name", ["twin", "twin_map"])
def test_twin_models_find_an_exact_copy(models: dict[str, Path], name: str) -> None:
    twin = OnnxMatcher(models[name], device="cpu", threads=1, log=lambda _: None)
    rng = np.random.default_rng(4)
    regions = rng.normal(size=(4, SEARCH, SEARCH)).astype(np.float32)
    offsets = [(0, 0), (25, 10), (32, 32), (3, 29)]  # (dx, dy)
    templates = np.stack([r[dy : dy + TEMPLATE, dx : dx + TEMPLATE] for r, (dx, dy) in
                          zip(regions, offsets)])  # fmt: skip
    maps = twin.correspondence_maps(templates, regions)
    for cmap, (dx, dy) in zip(maps, offsets):
        assert np.unravel_index(cmap.argmax(), cmap.shape) == (dy, dx)
        assert cmap[dy, dx] == pytest.approx(1.0, abs=1e-5)
        assert np.median(cmap) < 0.9  # descriptors do not collapse (cosines spread out)


def test_progress_and_cancel(twin: OnnxMatcher) -> None:
    rng = np.random.default_rng(2)
    regions = rng.normal(size=(3, SEARCH, SEARCH)).astype(np.float32)
    templates = regions[:, :TEMPLATE, :TEMPLATE].copy()
    seen: list[float] = []
    twin.correspondence_maps(templates, regions, batch_size=2, progress=seen.append)
    assert seen == pytest.approx([200 / 3, 100.0])
    calls: list[int] = []

    def cancel_on_second() -> bool:
        calls.append(1)
        return len(calls) >= 2

    for method in ("dense", "per_window"):
        calls.clear()
        with pytest.raises(Canceled):
            twin.correspondence_maps(
                templates, regions, method=method, batch_size=1, is_canceled=cancel_on_second
            )
        assert len(calls) == 2  # stopped at the first poll that said so


def test_input_validation(twin: OnnxMatcher) -> None:
    ok_t = np.zeros((1, TEMPLATE, TEMPLATE), np.float32)
    ok_r = np.zeros((1, SEARCH, SEARCH), np.float32)
    cases = [
        (np.zeros((TEMPLATE, TEMPLATE), np.float32), ok_r, "stack of square patches"),
        (np.zeros((1, 32, 32), np.float32), ok_r, "must be 64x64"),
        (np.zeros((1, TEMPLATE, TEMPLATE), np.uint8), ok_r, "feed preprocessed float32"),
        (np.full((1, TEMPLATE, TEMPLATE), np.nan, np.float32), ok_r, "NaN/Inf"),
        (ok_t, np.zeros((2, SEARCH, SEARCH), np.float32), "1 templates but 2 regions"),
        (ok_t, np.zeros((1, 40, 40), np.float32), "at least 64x64"),
    ]
    for templates, regions, message in cases:
        with pytest.raises(ValueError, match=message):
            twin.correspondence_maps(templates, regions)
    with pytest.raises(ValueError, match="method must be one of"):
        twin.correspondence_maps(ok_t, ok_r, method="fft")


def test_shipped_default_model_passes_the_plugins_checks() -> None:
    """The model in the plugin zip opens, fits the contract and carries its calibration."""
    path = runtime.default_model_path()
    contract = runtime.read_contract(path)
    assert (contract.template_size, contract.search_size, contract.map_size) == (128, 256, 129)
    assert (contract.descriptor_size, contract.code_size, contract.receptive_field) == (16, 114, 15)
    assert contract.format_version == 3 and "confidence_model" in contract.training
    assert contract.map_smoothing_px == 1.0  # chosen on validation (docs/results.md)
    assert contract.training["onnx_parity_max_abs_diff"] < 1e-4
    assert path.stat().st_size < 20e6  # fits the plugin zip budget
