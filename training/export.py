"""Export both encoders to one ONNX file carrying the model contract (see ``model.contract``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from sar_optical_matcher.model.contract import METADATA_KEY, ModelContract
from training.models import DenseEncoder, Encoder

OPSET = 17


class ExportGraph(nn.Module):
    """Both dense encoders side by side with L2-normalised outputs."""

    def __init__(self, optical: Encoder, sar: Encoder) -> None:
        """Wrap the two trained encoders (used in eval mode)."""
        super().__init__()
        self.optical = DenseEncoder(optical)
        self.sar = DenseEncoder(sar)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Return (optical_descriptors, sar_descriptors), each (B, D, h, w), unit length on D."""
        return (
            F.normalize(self.optical(optical), dim=1, eps=1e-12),
            F.normalize(self.sar(sar), dim=1, eps=1e-12),
        )


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = ExportGraph(optical, sar).eval()
    t, s = contract.template_size, contract.search_size
    dummy = (torch.zeros(1, 1, t, t), torch.zeros(1, 1, s, s))
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad():
            torch.onnx.export(
                graph,
                dummy,
                tmp,
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
        model = onnx.load(tmp)
        entry = model.metadata_props.add()
        entry.key = METADATA_KEY
        entry.value = contract.to_json()
        model.producer_name = "sar_optical_matcher.training"
        model.doc_string = f"SAR-Optical Matcher model {contract.name} {contract.version}"
        onnx.checker.check_model(model)
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
