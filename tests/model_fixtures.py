"""Tiny ONNX models with known behaviour, and broken models, for the runtime/matching tests.

* :func:`make_twin_model`: both encoders have IDENTICAL random weights and identical
  preprocessing, so an image matched against a shifted copy of itself peaks at the true shift.
* :func:`make_random_model`: two DIFFERENT random encoders (for dense vs per-window parity).
* both take ``latent="map"`` (with fitting ``convs_per_stage``) for code-map models:
  :data:`MAP_SPEC`.
* :func:`make_bad_models`: one file per fault the runtime must reject with a precise message.

Sizes: template 64 (the smallest patch of a 4-stage encoder), search 96, map 33 x 33.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from sar_optical_matcher.core.preprocessing import PreprocessSpec
from sar_optical_matcher.model.contract import FORMAT_VERSION, METADATA_KEY, ModelContract
from training.export import OPSET, ExportGraph, export_onnx
from training.models import DenseEncoder, Encoder, EncoderSpec

TEMPLATE = 64
SEARCH = 96
#: EncoderSpec fields of a small code-map model: receptive field 1 + 2 (1 + 1 + 2 + 2) = 13,
#: so a 64 px template has a 52 x 52 x D code.
MAP_SPEC: dict[str, object] = {
    "latent": "map", "convs_per_stage": (2, 2), "front_end": "oriented_gradients",
}  # fmt: skip


def _contract(descriptor_size: int, name: str, **kw) -> ModelContract:
    return ModelContract(
        name=name,
        version="0.0-test",
        template_size=kw.pop("template_size", TEMPLATE),
        search_size=kw.pop("search_size", SEARCH),
        descriptor_size=descriptor_size,
        sar=PreprocessSpec("sar", mean=0.5, std=0.2),
        optical=PreprocessSpec("optical", mean=0.5, std=0.2),
        **kw,
    )


def _encoder(spec: EncoderSpec, seed: int) -> Encoder:
    """A random encoder whose descriptors do not collapse onto one direction.

    Plain random weights give descriptors dominated by a common component (every cosine ~1).
    BatchNorm statistics are therefore set from smooth random images (features centred, unit
    variance) and the head bias removes the mean code, so cosines spread over [-1, 1].
    """
    torch.manual_seed(seed)
    encoder = Encoder(spec)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(32, spec.in_channels, spec.patch_size + 8, spec.patch_size + 8,
                        generator=gen)  # fmt: skip
    smooth = torch.nn.functional.avg_pool2d(noise, 9, stride=1)
    smooth = (smooth - smooth.mean()) / smooth.std()
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration pass
            module.reset_running_stats()
    with torch.no_grad():
        encoder.train()(smooth)
        codes = encoder.eval()(smooth)
        encoder.head.bias -= codes.mean(0) if codes.ndim == 2 else codes.mean((0, 2, 3))
    return encoder


def _spec(descriptor_size: int, widths: tuple[int, ...], template_size: int, **kw) -> EncoderSpec:
    return EncoderSpec(
        widths=widths, descriptor_size=descriptor_size, patch_size=template_size, **kw
    )


def make_twin_model(
    path: str | Path,
    descriptor_size: int = 64,
    widths: tuple[int, ...] = (8, 16, 32, 64),
    seed: int = 0,
    template_size: int = TEMPLATE,
    search_size: int = SEARCH,
    **spec: object,
) -> Path:
    """Export a model whose SAR and optical encoders are the same random network.

    Matching an image against a (sub-pixel) shifted copy of itself finds the shift within
    ~0.4 px with the default widths (measured on smooth synthetic scenes). Narrow final stages
    (e.g. ``widths=(4, 8, 8, 8)``: 8 numbers per 64 x 64 template) only find exact copies.
    ``spec`` passes further ``EncoderSpec`` fields (e.g. :data:`MAP_SPEC` for a code-map model).
    """
    optical = _encoder(_spec(descriptor_size, widths, template_size, **spec), seed)
    contract = _contract(
        descriptor_size, "twin", template_size=template_size, search_size=search_size,
        code_size=optical.spec.code_size,
    )  # fmt: skip
    return export_onnx(optical, copy.deepcopy(optical), contract, path)


def make_random_model(
    path: str | Path,
    descriptor_size: int = 32,
    widths: tuple[int, ...] = (4, 8, 8, 8),
    seed: int = 0,
    **spec_kw: object,
) -> Path:
    """Export a model with two different random encoders (``spec_kw``: more spec fields)."""
    spec = _spec(descriptor_size, widths, TEMPLATE, **spec_kw)
    contract = _contract(descriptor_size, "random", code_size=spec.code_size)
    return export_onnx(_encoder(spec, seed), _encoder(spec, seed + 1), contract, path)


def _set_metadata(model, text: str | None) -> None:
    del model.metadata_props[:]
    if text is not None:
        entry = model.metadata_props.add()
        entry.key = METADATA_KEY
        entry.value = text


def _export_raw(module: torch.nn.Module, dummy: tuple, names: tuple, path: Path) -> None:
    with torch.no_grad():
        torch.onnx.export(
            module, dummy, str(path), input_names=list(names[0]), output_names=list(names[1]),
            opset_version=OPSET, dynamo=False,
        )  # fmt: skip


def _three_channel(path: Path, descriptor_size: int) -> None:
    import onnx

    spec = _spec(descriptor_size, (4, 8, 8, 8), TEMPLATE, in_channels=3)
    graph = ExportGraph(_encoder(spec, 0), _encoder(spec, 1)).eval()
    dummy = (torch.zeros(1, 3, TEMPLATE, TEMPLATE), torch.zeros(1, 3, TEMPLATE, TEMPLATE))
    names = (("optical", "sar"), ("optical_descriptors", "sar_descriptors"))
    _export_raw(graph, dummy, names, path)
    model = onnx.load(str(path))
    _set_metadata(model, _contract(descriptor_size, "rgb").to_json())
    onnx.save(model, str(path))


def _single_encoder(path: Path, descriptor_size: int) -> None:
    import onnx

    dense = DenseEncoder(_encoder(_spec(descriptor_size, (4, 8, 8, 8), TEMPLATE), 0)).eval()
    dummy = (torch.zeros(1, 1, TEMPLATE, TEMPLATE),)
    _export_raw(dense, dummy, (("optical",), ("optical_descriptors",)), path)
    model = onnx.load(str(path))
    _set_metadata(model, _contract(descriptor_size, "single").to_json())
    onnx.save(model, str(path))


def _swap_inputs(model) -> None:
    """Rename the graph inputs optical <-> sar (the outputs keep their names)."""
    rename = {"optical": "sar", "sar": "optical"}
    for value in model.graph.input:
        value.name = rename.get(value.name, value.name)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]


def make_bad_models(directory: str | Path, descriptor_size: int = 8) -> dict[str, Path]:
    """Write one broken model per fault; returns {fault name: path}.

    Faults: ``not_onnx``, ``empty``, ``truncated``, ``no_metadata``, ``bad_json``,
    ``wrong_size`` (contract template size 80, network 64), ``wrong_channels`` (3-band inputs),
    ``swapped_inputs``, ``single_encoder``, ``newer_format``, ``new_opset`` (opset 30),
    ``new_ir`` (IR version 99), ``float_size`` (template_size 64.0), ``training_not_object``,
    ``confidence_incomplete`` (no weights), ``nan_weights``, ``fixed_batch`` (batch 1 only),
    ``fixed_batch_2`` (batch 2 only: the load check's own batch), ``fixed_sar_size`` (SAR input
    128 x 128 only).
    """
    import onnx

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    good = make_twin_model(directory / "good.onnx", descriptor_size, widths=(4, 8, 8, 8))
    data = good.read_bytes()
    out = {name: directory / f"{name}.onnx" for name in (
        "not_onnx", "empty", "truncated", "no_metadata", "bad_json", "wrong_size",
        "wrong_channels", "swapped_inputs", "single_encoder", "newer_format", "new_opset",
        "new_ir", "float_size", "training_not_object", "confidence_incomplete", "nan_weights",
        "fixed_batch", "fixed_batch_2", "fixed_sar_size",
    )}  # fmt: skip
    out["not_onnx"].write_bytes(b"GIF89a this is a picture, not a model\n" * 20)
    out["empty"].write_bytes(b"")
    out["truncated"].write_bytes(data[: len(data) // 2])
    contract = json.loads(_contract(descriptor_size, "bad").to_json())
    edits = {
        "no_metadata": None,
        "bad_json": "{not json",
        "wrong_size": json.dumps({**contract, "template_size": 80, "search_size": 96}),
        "newer_format": json.dumps({**contract, "format_version": FORMAT_VERSION + 1}),
        "float_size": json.dumps({**contract, "template_size": float(contract["template_size"])}),
        "training_not_object": json.dumps({**contract, "training": "oops"}),
        "confidence_incomplete": json.dumps(
            {**contract, "training": {"confidence_model": {"kind": "logistic", "bias": 0.0}}}
        ),
    }
    for name, text in edits.items():
        model = onnx.load_from_string(data)
        _set_metadata(model, text)
        onnx.save(model, str(out[name]))
    model = onnx.load_from_string(data)
    _swap_inputs(model)
    onnx.save(model, str(out["swapped_inputs"]))
    model = onnx.load_from_string(data)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 30
    onnx.save(model, str(out["new_opset"]))
    model = onnx.load_from_string(data)
    model.ir_version = 99
    onnx.save(model, str(out["new_ir"]))
    model = onnx.load_from_string(data)
    from onnx import numpy_helper

    for init in model.graph.initializer:  # the first float weight tensor gets a NaN
        array = numpy_helper.to_array(init)
        if array.dtype.kind == "f" and array.size > 1:
            array = array.copy()
            array.flat[0] = float("nan")
            init.CopyFrom(numpy_helper.from_array(array, init.name))
            break
    onnx.save(model, str(out["nan_weights"]))
    for name, batch in (("fixed_batch", 1), ("fixed_batch_2", 2)):
        model = onnx.load_from_string(data)
        for value in model.graph.input:  # batch dimension fixed
            value.type.tensor_type.shape.dim[0].dim_value = batch
        onnx.save(model, str(out[name]))
    model = onnx.load_from_string(data)
    for value in model.graph.input:
        if value.name == "sar":
            for axis in (2, 3):
                value.type.tensor_type.shape.dim[axis].dim_value = 128
    onnx.save(model, str(out["fixed_sar_size"]))
    _three_channel(out["wrong_channels"], descriptor_size)
    _single_encoder(out["single_encoder"], descriptor_size)
    return out
