"""onnxruntime wrapper: load a SAR-Optical Matcher model, validate it, compute descriptors and maps.

onnxruntime is imported lazily (inside functions) so the plugin loads without it and every
algorithm can say exactly what to install. The ONNX file is validated without the ``onnx``
package: a minimal protobuf reader (:func:`_read_header`) gets the IR version, the opsets and the
metadata, then an onnxruntime session and one smoke run check the graph against the contract.

Shapes: T = template size, S = search size, m = S - T + 1, D = code channels (descriptor_size),
k = code block side (code_size), r = T - k + 1 the encoders' receptive field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sar_optical_matcher.core.correlation import (
    normalised_descriptors,
    smooth_maps,
    window_cosine_maps,
)
from sar_optical_matcher.model.contract import METADATA_KEY, ModelContract

DEFAULT_MODEL_PATH = Path(__file__).parent / "default.onnx"
REEXPORT_HINT = "re-export the model with `python -m training export`"
DEVICES = ("auto", "cpu", "cuda")
METHODS = ("dense", "per_window")
WINDOW_BATCH = 256


class MissingDependencyError(RuntimeError):
    """onnxruntime (or another runtime dependency) is not installed."""


class ModelError(ValueError):
    """The model file is missing, unreadable or does not fit the model contract."""


def _import_ort() -> Any:
    """Import onnxruntime lazily, with an install hint if it is missing."""
    try:
        import onnxruntime
    except ImportError as exc:
        if not (isinstance(exc, ModuleNotFoundError) and exc.name == "onnxruntime"):
            # Installed but broken: "install onnxruntime" would send the user in a circle.
            raise MissingDependencyError(
                f"onnxruntime is installed but cannot be imported ({type(exc).__name__}: "
                f"{exc}); reinstall it into the Python that runs QGIS (`python -m pip install "
                "--force-reinstall onnxruntime`, on Windows in the 'OSGeo4W Shell'). On Windows "
                "'DLL load failed' usually means the Microsoft Visual C++ Redistributable is "
                "missing; an error about numpy means onnxruntime was built for another numpy "
                "version than the one QGIS uses. Then restart QGIS."
            ) from exc
        raise MissingDependencyError(
            "SAR-Optical Matcher needs the Python package onnxruntime to run its models. Install "
            "it into the Python that runs QGIS: `pip install onnxruntime` (CPU) or "
            "`pip install onnxruntime-gpu` (NVIDIA CUDA). On Windows run the command in the "
            "'OSGeo4W Shell' that comes with QGIS (`python -m pip install onnxruntime`); on "
            "macOS use the Python of your QGIS installation; on Debian 12 / Ubuntu 23.04 and "
            "later, whose system Python refuses pip ('externally-managed-environment'), run "
            "`python3 -m pip install --user --break-system-packages onnxruntime`. Then restart "
            "QGIS."
        ) from exc
    return onnxruntime


# --- minimal protobuf reader for the top level of an ONNX ModelProto ---------------------------


@dataclass(frozen=True)
class _Header:
    ir_version: int
    opsets: dict[str, int]
    metadata: dict[str, str]
    has_graph: bool


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Decode one protobuf message level into (field number, int or bytes) pairs."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, value))
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("length-delimited field runs past the end of the file")
            out.append((number, buf[pos : pos + size]))
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != len(buf):
        raise ValueError("message runs past the end of the file")
    return out


def _pair(raw: bytes, key_field: int, value_field: int) -> tuple[str, str | int]:
    items = dict(_fields(raw))
    key, value = items.get(key_field, b""), items.get(value_field, b"")
    text = key.decode("utf-8") if isinstance(key, bytes) else str(key)
    return text, value.decode("utf-8") if isinstance(value, bytes) else value


def _read_header(data: bytes) -> _Header:
    """IR version, opsets and metadata of a serialised ModelProto (raises ValueError)."""
    ir_version, opsets, metadata, has_graph = 0, {}, {}, False
    for number, value in _fields(data):
        if number == 1 and isinstance(value, int):
            ir_version = value
        elif number == 7 and isinstance(value, bytes):
            has_graph = True
        elif number == 8 and isinstance(value, bytes):
            domain, version = _pair(value, 1, 2)
            opsets[domain or "ai.onnx"] = int(version or 0)
        elif number == 14 and isinstance(value, bytes):
            key, text = _pair(value, 1, 2)
            metadata[key] = str(text)
    if ir_version <= 0 or not has_graph:
        raise ValueError("no IR version or no graph")
    return _Header(ir_version, opsets, metadata, has_graph)


# --- validation ----------------------------------------------------------------------------------


def _load_header(path: Path) -> tuple[_Header, bytes]:
    """The header of ``path`` and the file's bytes (raises :class:`ModelError`)."""
    if path.is_dir():
        raise ModelError(
            f"model file {str(path)!r} is a folder, not an .onnx file; choose the .onnx file "
            "in it"
        )
    if not path.is_file():
        raise ModelError(f"model file {str(path)!r} does not exist; choose an existing .onnx file")
    data = path.read_bytes()
    try:
        return _read_header(data), data
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"{path.name} is not an ONNX model or is truncated/corrupt ({exc}, {len(data)} bytes); "
            "choose a SAR-Optical Matcher .onnx file, or download/copy it again"
        ) from exc


def _parse_contract(path: Path, header: _Header) -> ModelContract:
    if METADATA_KEY not in header.metadata:
        keys = sorted(header.metadata) or "none"
        raise ModelError(
            f"{path.name} is an ONNX model but not a SAR-Optical Matcher model: its metadata has "
            f"no {METADATA_KEY!r} entry (found: {keys}); {REEXPORT_HINT}"
        )
    try:
        contract = ModelContract.from_json(header.metadata[METADATA_KEY])
        raw = contract.training.get("confidence_model")
        if raw is not None:  # checked now, not after keypoint detection
            from sar_optical_matcher.core.peaks import ConfidenceModel

            ConfidenceModel.from_dict(raw)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path.name}: invalid model contract: {exc}") from exc
    return contract


def _session_error(path: Path, header: _Header, exc: Exception, ort: Any) -> ModelError:
    """Turn an onnxruntime load failure into an actionable message."""
    text = str(exc)
    opset = header.opsets.get("ai.onnx", 0)
    ir_max = re.search(r"max supported IR version: (\d+)", text)
    if ir_max:
        return ModelError(
            f"{path.name} has ONNX IR version {header.ir_version}, your onnxruntime "
            f"{ort.__version__} supports up to {ir_max.group(1)}; upgrade onnxruntime "
            "(`pip install -U onnxruntime`) or export the model with an older onnx package"
        )
    op_max = re.search(r"support for domain ai\.onnx is till opset (\d+)", text)
    if op_max or "opset" in text.lower():
        limit = op_max.group(1) if op_max else "an older opset"
        return ModelError(
            f"{path.name} needs opset {opset}, your onnxruntime {ort.__version__} supports up to "
            f"{limit}; upgrade onnxruntime (`pip install -U onnxruntime`) or re-export the model "
            "with a lower opset"
        )
    return ModelError(
        f"onnxruntime {ort.__version__} cannot load {path.name}: {text.strip()[-400:]}; the file "
        f"may be corrupt or not a SAR-Optical Matcher model ({REEXPORT_HINT})"
    )


def _check_io(path: Path, session: Any, contract: ModelContract) -> None:
    """Graph input/output names, ranks, channel dims and dtypes against the contract."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    want_in = (contract.optical_input, contract.sar_input)
    want_out = (contract.optical_output, contract.sar_output)
    if set(inputs) != set(want_in) or not set(want_out) <= set(outputs):
        raise ModelError(
            f"{path.name} has inputs {sorted(inputs)} and outputs {sorted(outputs)}, the contract "
            f"needs inputs {list(want_in)} and outputs {list(want_out)}: a single-encoder file or "
            f"a model of another tool? {REEXPORT_HINT}"
        )
    for arg in [inputs[n] for n in want_in] + [outputs[n] for n in want_out]:
        shape = list(arg.shape)
        if len(shape) != 4 or arg.type != "tensor(float)":
            raise ModelError(
                f"{path.name}: {arg.name!r} is {arg.type} of rank {len(shape)}, expected a float32 "
                f"(batch, channels, height, width) tensor; {REEXPORT_HINT}"
            )
        if arg.name in want_in and isinstance(shape[1], int) and shape[1] != 1:
            raise ModelError(
                f"{path.name}: input {arg.name!r} has {shape[1]} channels, SAR-Optical Matcher "
                f"feeds one band per modality; {REEXPORT_HINT}"
            )
        if arg.name in want_in and isinstance(shape[0], int):
            # a batch fixed at 2 passed the load check's batch of two and failed after
            # keypoint detection, on the first batch of 8
            raise ModelError(
                f"{path.name}: input {arg.name!r}: its batch dimension is fixed at {shape[0]} "
                "(the plugin feeds batches of any size); export with a dynamic batch axis; "
                f"{REEXPORT_HINT}"
            )
        if arg.name == contract.sar_input and any(isinstance(n, int) for n in shape[2:]):
            raise ModelError(
                f"{path.name}: input {arg.name!r} has a fixed height or width ({shape[2]} x "
                f"{shape[3]}); the SAR encoder must take any size from {contract.template_size} "
                f"px up (one pass per search region); {REEXPORT_HINT}"
            )


def _smoke_run(path: Path, session: Any, contract: ModelContract) -> None:
    """Run two templates and three regions of another size.

    Checks T, D, k, that no branch is swapped, that the batch dimensions are free and
    independent (the plugin feeds a one-patch dummy to the branch it does not need) and that
    the outputs are finite.
    """
    t, d, k = contract.template_size, contract.descriptor_size, contract.code_size
    rng = np.random.default_rng(0)  # preprocessed inputs are roughly zero-mean, unit-std
    feeds = {
        contract.optical_input: rng.standard_normal((2, 1, t, t)).astype(np.float32),
        contract.sar_input: rng.standard_normal((3, 1, t + 1, t + 2)).astype(np.float32),
    }
    try:
        opt, sar = session.run([contract.optical_output, contract.sar_output], feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        text = str(exc).strip()[-200:]
        why = (
            "its batch dimension is fixed (the plugin feeds several patches at once)"
            if "index: 0" in text
            else "the network was built for another patch size"
        )
        raise ModelError(
            f"{path.name} fails on two {t}x{t} templates (the contract's template size) and "
            f"three {t + 1}x{t + 2} SAR regions: {why} ({text}); {REEXPORT_HINT}"
        ) from exc
    if not (np.isfinite(opt).all() and np.isfinite(sar).all()):
        raise ModelError(
            f"{path.name} outputs NaN or infinite descriptors on ordinary inputs: its weights "
            f"are broken (a diverged training?); {REEXPORT_HINT}"
        )
    want_opt, want_sar = (2, d, k, k), (3, d, k + 1, k + 2)
    if opt.shape == want_sar and sar.shape == want_opt:
        raise ModelError(
            f"{path.name}: the optical output is computed from the SAR input and vice versa (input "
            f"names swapped between the modalities); {REEXPORT_HINT}"
        )
    if opt.shape != want_opt or sar.shape != want_sar:
        raise ModelError(
            f"{path.name}: two {t}x{t} templates give optical descriptors {opt.shape} and three "
            f"{t + 1}x{t + 2} regions SAR descriptors {sar.shape}; the contract expects "
            f"{want_opt} and {want_sar}: the contract's template_size/descriptor_size/code_size "
            f"do not fit the network; {REEXPORT_HINT}"
        )


def _open(
    path: str | Path, providers: Sequence[str], threads: int | None = None, strict: bool = False
) -> tuple[ModelContract, Any]:
    """Contract and checked session of ``path`` on ``providers``.

    ``strict``: the first provider or nothing (onnxruntime's Python session otherwise moves
    itself to the CPU when a run fails on the GPU, and says so only on stdout).
    """
    ort = _import_ort()
    path = Path(path)
    header, data = _load_header(path)
    contract = _parse_contract(path, header)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 or None (all cores), got {threads}")
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    # A non-ASCII path (a Windows user name like 'José' or '田中' in the QGIS profile that holds
    # the plugin and its default model) made onnxruntime on Windows fail in
    # InferenceSession::Initialize ('No mapping for the Unicode character exists in the target
    # multi-byte code page', microsoft/onnxruntime#27724): such a model is loaded from its
    # bytes, already read. ASCII paths are passed as paths (external weights still resolve).
    source: str | bytes = str(path) if str(path).isascii() else data
    try:
        session = ort.InferenceSession(source, sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise _session_error(path, header, exc, ort) from exc
    if strict and hasattr(session, "disable_fallback"):
        session.disable_fallback()
    _check_io(path, session, contract)
    _smoke_run(path, session, contract)
    return contract, session


def read_contract(path: str | Path) -> ModelContract:
    """Read and fully validate a model file; return its contract.

    Args:
        path: the ``.onnx`` file.

    Returns:
        The model contract stored in the ONNX metadata.

    Raises:
        ModelError: the file is missing, not ONNX, truncated, has no/invalid contract, needs a
            newer onnxruntime, or its graph does not fit the contract.
        MissingDependencyError: onnxruntime is not installed.
    """
    contract, _ = _open(path, ["CPUExecutionProvider"], threads=1)
    return contract


def resolve_providers(device: str = "auto") -> list[str]:
    """Execution providers of onnxruntime for ``device`` (``"auto"``, ``"cpu"`` or ``"cuda"``)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    ort = _import_ort()
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise MissingDependencyError(
            f"device 'cuda' requested but onnxruntime {ort.__version__} has no CUDA support "
            f"(available: {', '.join(available)}); install `onnxruntime-gpu` with matching "
            "CUDA/cuDNN libraries, or choose device 'auto' or 'cpu'"
        )
    if device == "cpu" or not has_cuda:
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def default_model_path() -> Path:
    """The model shipped with the plugin; raises :class:`ModelError` if it is missing."""
    if not DEFAULT_MODEL_PATH.is_file():
        raise ModelError(
            f"the default model {DEFAULT_MODEL_PATH} is missing from this plugin installation; "
            "reinstall the plugin or choose a model file (.onnx) explicitly"
        )
    return DEFAULT_MODEL_PATH


class Canceled(Exception):  # noqa: N818 - the user canceled, not an error condition
    """The user canceled the computation (raised from inside long loops)."""


def _as_stack(name: str, array: np.ndarray, min_side: int, exact_side: int | None) -> np.ndarray:
    """Check a (B, H, W) stack of preprocessed square patches; return it as float32."""
    arr = np.asarray(array)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty (B, H, W) stack of square patches, got shape {arr.shape}; "
            "stack single patches with np.stack or patch[None]"
        )
    if exact_side is not None and arr.shape[1] != exact_side:
        raise ValueError(f"{name} must be {exact_side}x{exact_side} (template), got {arr.shape}")
    if arr.shape[1] < min_side:
        raise ValueError(f"{name} must be at least {min_side}x{min_side}, got {arr.shape}")
    if arr.dtype.kind != "f":
        raise ValueError(
            f"{name} has dtype {arr.dtype}; feed preprocessed float32 patches "
            "(sar_optical_matcher.core.preprocessing.preprocess)"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN/Inf; preprocess() sets invalid pixels to 0")
    return arr


class OnnxMatcher:
    """A validated model in an onnxruntime session.

    Attributes:
        path: the model file.
        contract: its :class:`ModelContract`.
        provider: the execution provider that actually runs (e.g. ``"CPUExecutionProvider"``).
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        threads: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """Load and validate ``path`` (see :func:`read_contract`) for ``device``."""
        ort = _import_ort()
        self.path = Path(path)
        providers = resolve_providers(device)
        note = ""
        try:
            self.contract, self._session = _open(self.path, providers, threads, device == "cuda")
        except ModelError as exc:  # the load check ran on the GPU: the GPU may be what failed
            if providers[0] != "CUDAExecutionProvider":
                raise
            if device == "cuda":
                raise ModelError(
                    f"{exc} (this ran on CUDAExecutionProvider: a failure of the GPU, its CUDA "
                    "or cuDNN libraries or its memory reads the same; DEVICE cpu tells the two "
                    "apart)"
                ) from exc
            self.contract, self._session = _open(self.path, ["CPUExecutionProvider"], threads)
            why = str(exc)[-200:]
            note = f"; the CUDA session failed the load check ({why}), the CPU passed it"
        self.provider: str = self._session.get_providers()[0]
        if log is None:
            import logging

            log = logging.getLogger(__name__).info
        self._log = log
        if device == "cuda" and self.provider != "CUDAExecutionProvider":
            raise MissingDependencyError(
                f"device 'cuda' requested but onnxruntime fell back to {self.provider}; check the "
                "CUDA and cuDNN libraries required by your onnxruntime-gpu version"
            )
        message = (
            f"SAR-Optical Matcher: running {self.contract.name} {self.contract.version} with "
            f"{self.provider} (onnxruntime {ort.__version__})"
        )
        if self.contract.map_smoothing_px > 0:
            message += f"; correspondence maps smoothed by {self.contract.map_smoothing_px:g} px"
        log(message + note)

    def _run(self, optical: np.ndarray | None, sar: np.ndarray | None) -> list[np.ndarray]:
        c = self.contract
        dummy = np.zeros((1, 1, c.template_size, c.template_size), np.float32)
        feeds = {
            c.optical_input: dummy if optical is None else optical[:, None],
            c.sar_input: dummy if sar is None else sar[:, None],
        }
        try:
            out = self._session.run([c.optical_output, c.sar_output], feeds)
        except Exception as exc:  # onnxruntime's own types (Fail, InvalidArgument, EPFail, ...)
            n = len(optical if optical is not None else sar if sar is not None else [])
            raise ModelError(
                f"onnxruntime ({self.provider}) failed on a batch of {n} patch(es): "
                f"{str(exc).strip()[-300:]}; a smaller BATCH_SIZE needs less memory, and "
                "DEVICE cpu avoids GPU limits"
            ) from exc
        now = self._session.get_providers()[0]
        if now != self.provider:  # onnxruntime's own fallback after a GPU failure (not 'cuda')
            self._log(
                f"SAR-Optical Matcher: onnxruntime moved the session from {self.provider} to "
                f"{now} after a failure there; the rest runs with {now} (DEVICE cuda refuses "
                "instead)"
            )
            self.provider = now
        return out

    def optical_descriptors(self, templates: np.ndarray) -> np.ndarray:
        """Unit descriptors of preprocessed templates (B, T, T) float32 -> (B, D k^2) float32."""
        t = self.contract.template_size
        arr = _as_stack("templates", templates, t, t)
        return normalised_descriptors(self._run(arr, None)[0])

    def sar_descriptors_dense(self, regions: np.ndarray) -> np.ndarray:
        """Code maps of SAR regions (B, S, S) -> (B, D, S - r + 1, S - r + 1), not normalised.

        The descriptor of the window at (x, y) is the k x k block at (x, y), flattened and
        L2-normalised (``model.contract``); with k = 1 each position is one window's code.
        """
        arr = _as_stack("regions", regions, self.contract.template_size, None)
        return self._run(None, arr)[1]

    def sar_descriptors_windows(self, windows: np.ndarray) -> np.ndarray:
        """Unit descriptors of individual SAR windows (B, T, T) -> (B, D k^2) (the paper's way)."""
        t = self.contract.template_size
        arr = _as_stack("windows", windows, t, t)
        return normalised_descriptors(self._run(None, arr)[1])

    def correspondence_maps(
        self,
        templates: np.ndarray,
        regions: np.ndarray,
        method: str = "dense",
        batch_size: int = 8,
        progress: Callable[[float], None] | None = None,
        is_canceled: Callable[[], bool] | None = None,
        smoothing_px: float | None = None,
    ) -> np.ndarray:
        """Correspondence maps: cosine of each template with every window of its search region.

        Each map is smoothed by the contract's ``map_smoothing_px`` (0: the raw cosine map),
        so its peak is the match; that is the map every caller (matching, evaluation,
        calibration, the plugin's map output) sees.

        Args:
            templates: (B, T, T) float32 preprocessed optical templates.
            regions: (B, S, S) float32 preprocessed SAR search regions (any S >= T).
            method: ``"dense"`` (one pass per region) or ``"per_window"`` (the paper's
                reference: every window encoded separately, in batches of 256 windows).
            batch_size: regions per onnxruntime call (dense).
            progress: called with 0..100.
            is_canceled: polled once per batch; when it returns True, :class:`Canceled` is raised.
            smoothing_px: Gaussian sigma (px) instead of the contract's; 0 gives the raw cosine
                map (e.g. to compare with the paper's per-window cosines).

        Returns:
            (B, m, m) float32 with ``map[b, dy, dx]`` = cosine of template b and the window of
            region b whose top-left corner is at ``(dx, dy)`` (smoothed as above); m = S - T + 1.
        """
        t = self.contract.template_size
        tpl = _as_stack("templates", templates, t, t)
        reg = _as_stack("regions", regions, t, None)
        if len(tpl) != len(reg):
            raise ValueError(f"{len(tpl)} templates but {len(reg)} regions; pass one region each")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        sigma = self.contract.map_smoothing_px if smoothing_px is None else smoothing_px
        if not 0.0 <= sigma < float("inf"):
            raise ValueError(f"smoothing_px must be a finite number >= 0, got {smoothing_px!r}")
        m = reg.shape[1] - t + 1
        maps = np.empty((len(tpl), m, m), np.float32)
        step = batch_size if method == "dense" else 1
        for start in range(0, len(tpl), step):
            if is_canceled is not None and is_canceled():
                raise Canceled("correspondence maps canceled")
            sl = slice(start, start + step)
            if method == "dense":
                opt, sar = self._run(tpl[sl], reg[sl])
                raw = window_cosine_maps(opt, sar)
            else:
                raw = self._per_window_map(tpl[sl], reg[start], is_canceled)
            maps[sl] = smooth_maps(raw, sigma)
            if progress is not None:
                progress(100.0 * min(start + step, len(tpl)) / len(tpl))
        return maps

    def _per_window_map(
        self, template: np.ndarray, region: np.ndarray, is_canceled: Callable[[], bool] | None
    ) -> np.ndarray:
        t = self.contract.template_size
        m = region.shape[0] - t + 1
        # (m, m, T, T) view of the region; a reshape to (m * m, T, T) would copy every window
        # at once (1.1 GB for T = 128, S = 256): only one batch of windows is copied at a time.
        windows = np.lib.stride_tricks.sliding_window_view(region, (t, t))
        opt = self.optical_descriptors(template)[0]
        scores = np.empty(m * m, np.float32)
        for start in range(0, m * m, WINDOW_BATCH):
            if is_canceled is not None and is_canceled():
                raise Canceled("correspondence maps canceled")
            rows, cols = np.divmod(np.arange(start, min(start + WINDOW_BATCH, m * m)), m)
            chunk = windows[rows, cols]  # (batch, T, T), a copy of these windows only
            scores[start : start + len(chunk)] = self.sar_descriptors_windows(chunk) @ opt
        return scores.reshape(1, m, m)
