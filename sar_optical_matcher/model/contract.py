"""The model contract: the one definition of what a SAR-Optical Matcher ONNX file is.

A model is ONE ONNX file holding both encoders as two independent sub-graphs:

* input ``optical``  float32 (B_o, 1, H_o, W_o), H_o, W_o >= template_size, preprocessed;
  output ``optical_descriptors`` float32 (B_o, D, H_o - T + 1, W_o - T + 1);
* input ``sar``      float32 (B_s, 1, H_s, W_s), H_s, W_s >= template_size, preprocessed;
  output ``sar_descriptors`` float32 (B_s, D, H_s - T + 1, W_s - T + 1).

Each output holds the L2-normalised descriptor of every T x T window of its input (dense,
exact evaluation of the encoder, see ``training.models.DenseEncoder``); a T x T input gives the
plain per-window descriptor (1 x 1 map). Both inputs must be fed on every run (ONNX has no
optional inputs): a branch that is not needed gets a T x T dummy.

The contract travels as JSON in the ONNX ``metadata_props`` under :data:`METADATA_KEY` and is
read back from onnxruntime's ``custom_metadata_map``. Training imports this module, never the
other way round.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sar_optical_matcher.core.preprocessing import PreprocessSpec

METADATA_KEY = "sar_optical_matcher.contract"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelContract:
    """What the plugin needs to know about a model, and checks before running it.

    Attributes:
        name: human-readable model name.
        version: model version string.
        template_size: side T of the optical template and of each SAR window (paper: 128).
        search_size: side S of the SAR search region (paper: 256).
        descriptor_size: length D of the latent code.
        sar: preprocessing of the SAR input (normalised over the search region).
        optical: preprocessing of the optical input (normalised over the template).
        optical_input: name of the optical graph input.
        sar_input: name of the SAR graph input.
        optical_output: name of the optical descriptor output.
        sar_output: name of the SAR descriptor output.
        format_version: version of this contract's layout.
        training: free-form provenance (config hash, seed, data, metrics, parity, ...).
    """

    name: str
    version: str
    template_size: int = 128
    search_size: int = 256
    descriptor_size: int = 256
    sar: PreprocessSpec = field(default_factory=lambda: PreprocessSpec("sar", mean=0.5, std=0.2))
    optical: PreprocessSpec = field(
        default_factory=lambda: PreprocessSpec("optical", mean=0.45, std=0.15)
    )
    optical_input: str = "optical"
    sar_input: str = "sar"
    optical_output: str = "optical_descriptors"
    sar_output: str = "sar_descriptors"
    format_version: int = FORMAT_VERSION
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Validate sizes and modalities."""
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"model contract format {self.format_version} is not supported by this plugin "
                f"(expects {FORMAT_VERSION}); update the plugin or re-export the model"
            )
        if self.template_size < 8 or self.search_size < self.template_size:
            raise ValueError(
                f"need 8 <= template_size <= search_size, got {self.template_size}, "
                f"{self.search_size}"
            )
        if self.descriptor_size < 1:
            raise ValueError("descriptor_size must be positive")
        if self.sar.modality != "sar" or self.optical.modality != "optical":
            raise ValueError("contract preprocessing modalities are swapped or wrong")

    @property
    def map_size(self) -> int:
        """Side of the correspondence map: S - T + 1 (paper: 129)."""
        return self.search_size - self.template_size + 1

    def to_json(self) -> str:
        """Serialise for the ONNX metadata."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelContract:
        """Parse the JSON stored in a model; raises ``ValueError`` with the reason."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"model contract is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError("model contract must be a JSON object")
        try:
            raw["sar"] = PreprocessSpec(**raw["sar"])
            raw["optical"] = PreprocessSpec(**raw["optical"])
            return cls(**raw)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"model contract is incomplete or has unknown fields: {exc}") from exc
