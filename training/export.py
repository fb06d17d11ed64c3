"""Export both encoders to one ONNX file carrying the model contract (see ``model.contract``)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from sar_optical_matcher.core.files import atomic_output, check_destination
from sar_optical_matcher.model.contract import METADATA_KEY, ModelContract
from training.models import DenseEncoder, Encoder

OPSET = 17
#: Checkpoint entries an export reads.
_STATE_KEYS = (
    "config",
    "model",
    "specs",
    "history",
    "config_hash",
    "epoch",
    "global_step",
    "best_acc",
    "sources",
    "torch_version",
)


class ExportGraph(nn.Module):
    """Both dense encoders side by side: the code maps of the model contract (not normalised)."""

    def __init__(self, optical: Encoder, sar: Encoder) -> None:
        """Wrap the two trained encoders (used in eval mode)."""
        super().__init__()
        self.optical = DenseEncoder(optical)
        self.sar = DenseEncoder(sar)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Return (optical_descriptors, sar_descriptors), each a (B, D, h, w) code map.

        The runtime normalises each window's k x k block (``core.correlation``); normalising
        per position here would be wrong for k > 1 and is redundant for k = 1.
        """
        return self.optical(optical), self.sar(sar)


def export_onnx(optical: Encoder, sar: Encoder, contract: ModelContract, path: str | Path) -> Path:
    """Write the ONNX model with the contract in its metadata, atomically.

    Args:
        optical: trained optical encoder.
        sar: trained SAR encoder.
        contract: the model contract (names and sizes must match the encoders).
        path: destination ``.onnx`` file.

    Returns:
        The written path.
    """
    import onnx

    if optical.spec.descriptor_size != contract.descriptor_size:
        raise ValueError("contract descriptor_size differs from the encoders'")
    if optical.spec.patch_size != contract.template_size:
        raise ValueError("contract template_size differs from the encoders' patch size")
    if optical.spec.code_size != contract.code_size:
        raise ValueError(
            f"contract code_size {contract.code_size} differs from the encoders' "
            f"({optical.spec.code_size})"
        )
    path = _destination(path)
    graph = ExportGraph(optical, sar).eval()
    t, s = contract.template_size, contract.search_size
    dummy = (torch.zeros(1, 1, t, t), torch.zeros(1, 1, s, s))
    with atomic_output(path) as tmp:
        with torch.no_grad():
            torch.onnx.export(
                graph,
                dummy,
                str(tmp),
                input_names=[contract.optical_input, contract.sar_input],
                output_names=[contract.optical_output, contract.sar_output],
                dynamic_axes={
                    contract.optical_input: {
                        0: "batch_optical",
                        2: "height_optical",
                        3: "width_optical",
                    },
                    contract.sar_input: {0: "batch_sar", 2: "height_sar", 3: "width_sar"},
                    contract.optical_output: {
                        0: "batch_optical",
                        2: "map_h_optical",
                        3: "map_w_optical",
                    },
                    contract.sar_output: {0: "batch_sar", 2: "map_h_sar", 3: "map_w_sar"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
        model = onnx.load(str(tmp))
        entry = model.metadata_props.add()
        entry.key = METADATA_KEY
        entry.value = contract.to_json()
        model.producer_name = "sar_optical_matcher.training"
        model.doc_string = f"SAR-Optical Matcher model {contract.name} {contract.version}"
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
    return path


def _destination(path: str | Path) -> Path:
    """``path`` as a model file to write: not a folder, its folder creatable."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give the model file, e.g. {path}/model.onnx")
    check_destination(path)
    return path


def refuse_checkpoint_out(path: str | Path) -> None:
    """Refuse to write a model over a training checkpoint (``--out`` = ``--checkpoint``).

    The export replaced it, said nothing and exited 0: the run's weights were gone.
    """
    from training.checkpoint import MAGIC

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(MAGIC))
    except OSError:  # missing, a folder, unreadable: _destination says what is wrong
        return
    if head == MAGIC:
        raise ValueError(
            f"--out {path} is a training checkpoint: the model would replace it; give the "
            "model a file of its own, e.g. model.onnx"
        )


def set_contract(path: str | Path, contract: ModelContract) -> None:
    """Replace the contract in an exported model's metadata (atomically, graph untouched)."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    props = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, contract.to_json()
    with atomic_output(path) as tmp:
        onnx.save(model, str(tmp))


def check_parity(
    optical: Encoder, sar: Encoder, path: str | Path, contract: ModelContract, seed: int = 0
) -> dict[str, float]:
    """Max abs difference between torch and onnxruntime (CPU) on random inputs.

    Checks both branches: a batch of two optical templates (T x T: one window's code) and a SAR
    search region (S x S, the full dense code map), plus a non-square optical region.

    Returns:
        ``{"optical": diff, "sar": diff, "optical_region": diff, "max": diff}``.
    """
    import onnxruntime as ort

    t, s = contract.template_size, contract.search_size
    gen = torch.Generator().manual_seed(seed)
    cases = {
        "optical": (torch.randn(2, 1, t, t, generator=gen), torch.randn(1, 1, t, t, generator=gen)),
        "sar": (torch.randn(1, 1, t, t, generator=gen), torch.randn(1, 1, s, s, generator=gen)),
        "optical_region": (
            torch.randn(1, 1, t + 3, t + 9, generator=gen),
            torch.randn(1, 1, t, t, generator=gen),
        ),
    }
    graph = ExportGraph(optical, sar).eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: dict[str, float] = {}
    for name, (opt, sr) in cases.items():
        with torch.no_grad():
            ref = graph(opt, sr)
        got = session.run(
            None, {contract.optical_input: opt.numpy(), contract.sar_input: sr.numpy()}
        )
        k = 1 if name == "sar" else 0
        out[name] = float((torch.from_numpy(got[k]) - ref[k]).abs().max())
    out["max"] = max(out.values())
    return out


def export_checked(
    optical: Encoder,
    sar: Encoder,
    contract: ModelContract,
    path: str | Path,
    tolerance: float = 1e-4,
) -> tuple[Path, dict[str, float]]:
    """Export, re-open with onnxruntime, check parity, record it in the contract.

    Raises:
        ValueError: the ONNX outputs differ from torch by more than ``tolerance`` (nothing is
            written; an earlier file at ``path`` is kept).
    """
    import dataclasses

    path = _destination(path)
    # exported, checked and given its final contract under a temporary name: a failed check
    # leaves an earlier model of that name as it was
    with atomic_output(path) as tmp:
        export_onnx(optical, sar, contract, tmp)
        parity = check_parity(optical, sar, tmp, contract)
        if not parity["max"] < tolerance:
            raise ValueError(
                f"ONNX export differs from torch by {parity['max']:.3g} (> {tolerance:g}) "
                f"({parity}); the file was not written. Check the onnx/onnxruntime versions."
            )
        training = dict(contract.training, onnx_parity_max_abs_diff=parity["max"])
        set_contract(tmp, dataclasses.replace(contract, training=training))
    return path, parity


def export_checkpoint(
    checkpoint: str | Path,
    path: str | Path,
    name: str | None = None,
    version: str | None = None,
    map_smoothing_px: float = 0.0,
) -> tuple[Path, ModelContract]:
    """Export a training checkpoint to ONNX with its full contract (parity-checked).

    The contract records the TRAINING-SET preprocessing statistics, and in ``training``: the
    config hash, seed, data sources, completed epochs, the last and best validation metrics,
    the torch version and the ONNX parity. ``map_smoothing_px`` (the contract's Gaussian on the
    correspondence map before the peak; 0: the raw cosine map, which training validates on) is
    an inference setting chosen after training; it does not touch the weights.

    Returns:
        (written path, contract as written).
    """
    from sar_optical_matcher.core.preprocessing import PreprocessSpec
    from training.checkpoint import CheckpointError, load_checkpoint, load_weights, require_keys
    from training.config import config_from_dict
    from training.loop import build_matcher

    refuse_checkpoint_out(path)
    state = load_checkpoint(checkpoint)
    fix = "export it with the code version that trained it, or retrain"
    require_keys(state, checkpoint, _STATE_KEYS, fix)
    try:
        cfg = config_from_dict(state["config"])
        matcher = build_matcher(cfg)
    except ValueError as exc:  # a config key or model shape this code does not know
        raise CheckpointError(
            f"{checkpoint}: its config does not build a model with this code ({exc}); {fix}"
        ) from None
    load_weights(matcher, state["model"], checkpoint, fix)
    history = list(state["history"])
    last = history[-1] if history else {}
    val = {k: finite_or_none(v) for k, v in last.items() if k.startswith("val_")}
    contract = ModelContract(
        name=name or cfg.name,
        version=version or cfg.version,
        template_size=cfg.data.template_size_px,
        search_size=cfg.data.search_size_px,
        descriptor_size=cfg.model.descriptor_size,
        code_size=matcher.spec.code_size,
        map_smoothing_px=float(map_smoothing_px),
        sar=PreprocessSpec(**state["specs"]["sar"]),
        optical=PreprocessSpec(**state["specs"]["optical"]),
        training={
            "config_hash": state["config_hash"],
            "seed": cfg.seed,
            "data_sources": list(state["sources"]),
            **_splits(state),
            "supervision_ratio": cfg.data.supervision_ratio,
            "epochs": int(state["epoch"]),
            "global_step": int(state["global_step"]),
            "validation": val,
            "selected_by": f"val_{cfg.optim.select_by}",
            "best_val": finite_or_none(state["best_acc"]),
            "torch_version": str(state["torch_version"]),
        },
    )
    out, parity = export_checked(matcher.optical.encoder, matcher.sar.encoder, contract, path)
    contract = dataclasses_replace_training(contract, onnx_parity_max_abs_diff=parity["max"])
    return out, contract


def _splits(state: dict) -> dict[str, list[str]]:
    """The scenes of each split, as the run made them; empty for checkpoints before 0.3.8.

    ``data_sources`` lists every scene loaded, the held-out ones included.
    """
    splits = state.get("splits")
    if not splits:
        return {}
    names = {"train": "train_scenes", "val": "validation_scenes", "test": "held_out_scenes"}
    return {names[k]: list(v) for k, v in splits.items()}


def dataclasses_replace_training(contract: ModelContract, **extra: object) -> ModelContract:
    """A copy of ``contract`` with ``extra`` added to its ``training`` dict."""
    import dataclasses

    return dataclasses.replace(contract, training=dict(contract.training, **extra))


def finite_or_none(value: object) -> float | None:
    """JSON-safe number: NaN/Inf (e.g. no validation split) become None."""
    v = float(value)  # type: ignore[arg-type]
    return v if math.isfinite(v) else None
