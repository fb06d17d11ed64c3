"""onnxruntime wrapper: load a SAR-Optical Matcher model, validate it, compute descriptors and maps.

onnxruntime is imported lazily (inside functions) so the plugin loads without it and every
algorithm can say exactly what to install. The ONNX file is validated without the ``onnx``
package: a minimal protobuf reader (:func:`_read_header`) gets the IR version, the opsets and the
metadata, then an onnxruntime session and one smoke run check the graph against the contract.

Shapes: T = template size, S = search size, m = S - T + 1, D = descriptor size.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
        raise MissingDependencyError(
            "SAR-Optical Matcher needs the Python package onnxruntime to run its models. Install "
            "it into the Python that runs QGIS: `pip install onnxruntime` (CPU) or "
            "`pip install onnxruntime-gpu` (NVIDIA CUDA). On Windows run the command in the "
            "'OSGeo4W Shell' that comes with QGIS (`python -m pip install onnxruntime`); on "
            "macOS/Linux use the Python of your QGIS installation. Then restart QGIS."
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


def _pair(raw: bytes, key_field: int, value_field: int) -> tuple[str, Any]:
    items = dict(_fields(raw))
    key = items.get(key_field, b"")
    key = key.decode("utf-8") if isinstance(key, bytes) else str(key)
    value = items.get(value_field, b"")
    return key, value.decode("utf-8") if isinstance(value, bytes) else value


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


def _load_header(path: Path) -> _Header:
    if not path.is_file():
        raise ModelError(f"model file {str(path)!r} does not exist; choose an existing .onnx file")
    data = path.read_bytes()
    try:
        return _read_header(data)
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
        return ModelContract.from_json(header.metadata[METADATA_KEY])
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path.name}: invalid model contract: {exc}") from exc


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


def _smoke_run(path: Path, session: Any, contract: ModelContract) -> None:
    """Run once with different sizes per branch: checks T, D and that no branch is swapped."""
    t, d = contract.template_size, contract.descriptor_size
    feeds = {
        contract.optical_input: np.zeros((1, 1, t, t), np.float32),
        contract.sar_input: np.zeros((1, 1, t + 1, t + 2), np.float32),
    }
    try:
        opt, sar = session.run([contract.optical_output, contract.sar_output], feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(
            f"{path.name} fails on a {t}x{t} template, the contract's template size; the network "
            f"was built for another patch size ({str(exc).strip()[-200:]}); {REEXPORT_HINT}"
        ) from exc
    if opt.shape == (1, d, 2, 3) and sar.shape == (1, d, 1, 1):
        raise ModelError(
            f"{path.name}: the optical output is computed from the SAR input and vice versa (input "
            f"names swapped between the modalities); {REEXPORT_HINT}"
        )
    if opt.shape != (1, d, 1, 1) or sar.shape != (1, d, 2, 3):
        raise ModelError(
            f"{path.name}: a {t}x{t} template gives optical descriptors {opt.shape} and a "
            f"{t + 1}x{t + 2} region SAR descriptors {sar.shape}; the contract expects "
            f"(1, {d}, 1, 1) and (1, {d}, 2, 3): the contract's template_size/descriptor_size do "
            f"not fit the network; {REEXPORT_HINT}"
        )


def _open(
    path: str | Path, providers: Sequence[str], threads: int | None = None
) -> tuple[ModelContract, Any]:
    ort = _import_ort()
    path = Path(path)
    header = _load_header(path)
    contract = _parse_contract(path, header)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1 or None (all cores), got {threads}")
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise _session_error(path, header, exc, ort) from exc
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
    """onnxruntime execution providers for ``device`` (``"auto"``, ``"cpu"`` or ``"cuda"``)."""
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
