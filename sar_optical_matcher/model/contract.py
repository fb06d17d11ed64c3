"""The model contract: the one definition of what a SAR-Optical Matcher ONNX file is.

A model is ONE ONNX file holding both encoders as two independent sub-graphs, each fully
convolutional with receptive field r = T - k + 1 (T = template size, k = ``code_size``):

* input ``optical``  float32 (B_o, 1, H_o, W_o), H_o, W_o >= T, preprocessed;
  output ``optical_descriptors`` float32 (B_o, D, H_o - r + 1, W_o - r + 1);
* input ``sar``      float32 (B_s, 1, H_s, W_s), H_s, W_s >= T, preprocessed;
  output ``sar_descriptors`` float32 (B_s, D, H_s - r + 1, W_s - r + 1).

Each output is the *code map* of its input: the D-channel latent code at every position. The
descriptor of the T x T window with top-left corner (x, y) is the k x k block
``out[:, :, y:y + k, x:x + k]``, flattened to D k^2 numbers and L2-normalised; the
correspondence map is the cosine of the template's descriptor with every window's
(``core.correlation.window_cosine_maps``), smoothed by a Gaussian of ``map_smoothing_px``
(format 3; 0, the paper's raw cosine map, for formats 1 and 2) before its peak is taken. With
k = 1 this is the paper's vector code (one D-vector per window, evaluated densely,
``training.models.DenseEncoder``); with k > 1 the latent code is a spatial map and the cosine a
normalised cross-correlation of code maps. A T x T input gives exactly one window's code
block. Both inputs must be fed on every run (ONNX has no optional inputs): a branch that is not
needed gets a T x T dummy.

The contract travels as JSON in the ONNX ``metadata_props`` under :data:`METADATA_KEY` and is
read back from onnxruntime's ``custom_metadata_map``. Format 1 (before ``code_size``) is read as
``code_size = 1``; formats 1 and 2 (before ``map_smoothing_px``) as ``map_smoothing_px = 0``.
Training imports this module, never the other way round.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sar_optical_matcher.core.preprocessing import PreprocessSpec

METADATA_KEY = "sar_optical_matcher.contract"
FORMAT_VERSION = 3
#: Formats this plugin reads: 1 is format 2 with ``code_size = 1`` (vector codes only); 2 is
#: format 3 with ``map_smoothing_px = 0`` (the raw cosine map).
READABLE_FORMATS = (1, 2, 3)
#: Largest accepted map smoothing (px): beyond this the Gaussian blurs the peak away.
MAX_MAP_SMOOTHING_PX = 8.0
#: Largest accepted search size (px): the load check runs the network on patches of this order
#: (a contract claiming 10^6 px asked numpy for 14.6 TiB), and the paper's is 256.
MAX_SEARCH_SIZE = 4096
#: Keys a contract must hold (``training`` may be left out). Formats 1 and 2 came before
#: ``code_size`` and ``map_smoothing_px`` and are read with the value those formats meant; in a
#: later format a missing key would be filled with a default the model was not exported with
#: (a format-3 model without ``map_smoothing_px`` ran on raw maps, without its ``sar.mean`` on
#: wrongly standardised inputs), so it is refused.
_LATER_KEYS = {"code_size": 2, "map_smoothing_px": 3}
_SPEC_KEYS = ("modality", "low_percentile", "high_percentile", "mean", "std")


@dataclass(frozen=True)
class ModelContract:
    """What the plugin needs to know about a model, and checks before running it.

    Attributes:
        name: human-readable model name.
        version: model version string.
        template_size: side T of the optical template and of each SAR window (paper: 128).
        search_size: side S of the SAR search region, at least T + 2 (paper: 256).
        descriptor_size: channels D of the latent code at each position (the whole code for
            ``code_size`` 1); a window's descriptor has ``D * code_size**2`` numbers.
        code_size: side k of a window's code block (1: vector code; > 1: spatial code map);
            the encoders' receptive field is ``template_size - code_size + 1``.
        map_smoothing_px: standard deviation (px) of the Gaussian the correspondence map is
            smoothed with before its peak is taken (``core.correlation.smooth_maps``); 0 keeps
            the paper's raw cosine map. Chosen after training, on validation data.
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
    code_size: int = 1
    map_smoothing_px: float = 0.0
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
        """Validate types, sizes and modalities."""
        self._check_types()
        if self.format_version not in READABLE_FORMATS:
            raise ValueError(
                f"model contract format {self.format_version} is not supported by this plugin "
                f"(reads {', '.join(map(str, READABLE_FORMATS))}); update the plugin or "
                "re-export the model"
            )
        if self.format_version == 1 and self.code_size != 1:
            raise ValueError("a format-1 contract has vector codes only (code_size 1)")
        if self.search_size > MAX_SEARCH_SIZE:
            raise ValueError(
                f"search_size {self.search_size} is implausible (at most {MAX_SEARCH_SIZE} px; "
                "the paper's is 256): the contract is damaged or was written by hand; re-export "
                "the model"
            )
        if self.template_size < 8 or self.search_size < self.template_size + 2:
            raise ValueError(
                f"need 8 <= template_size <= search_size - 2 (a correspondence map of at least "
                f"3 x 3 offsets, the least a peak can be found in), got {self.template_size}, "
                f"{self.search_size}"
            )
        if self.descriptor_size < 1:
            raise ValueError("descriptor_size must be positive")
        if not 1 <= self.code_size <= self.template_size:
            raise ValueError(
                f"code_size must be in 1..template_size ({self.template_size}), got "
                f"{self.code_size}"
            )
        smoothing = self.map_smoothing_px
        if (
            isinstance(smoothing, bool)
            or not isinstance(smoothing, (int, float))
            or not 0.0 <= smoothing <= MAX_MAP_SMOOTHING_PX
        ):
            raise ValueError(
                f"map_smoothing_px must be a number in 0..{MAX_MAP_SMOOTHING_PX:g} px, got "
                f"{smoothing!r}"
            )
        if self.format_version < 3 and smoothing != 0:
            raise ValueError(
                f"a format-{self.format_version} contract has no map smoothing "
                "(map_smoothing_px 0); re-export the model"
            )
        if self.sar.modality != "sar" or self.optical.modality != "optical":
            raise ValueError("contract preprocessing modalities are swapped or wrong")

    def _check_types(self) -> None:
        """Integers are integers (64.0 crashed deep in GDAL), names strings, training a dict."""
        for key in ("template_size", "search_size", "descriptor_size", "code_size",
                    "format_version"):  # fmt: skip
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"model contract: {key} must be an integer, got {value!r}")
        for key in ("name", "version", "optical_input", "sar_input", "optical_output",
                    "sar_output"):  # fmt: skip
            if not isinstance(getattr(self, key), str):
                raise ValueError(
                    f"model contract: {key} must be a string, got {getattr(self, key)!r}"
                )
        if not isinstance(self.training, dict):
            raise ValueError(
                f"model contract: training must be a JSON object, got {self.training!r}"
            )

    @property
    def map_size(self) -> int:
        """Side of the correspondence map: S - T + 1 (paper: 129)."""
        return self.search_size - self.template_size + 1

    @property
    def receptive_field(self) -> int:
        """Side r of the input region one code position depends on: T - k + 1."""
        return self.template_size - self.code_size + 1

    @property
    def descriptor_length(self) -> int:
        """Numbers in one window's descriptor: D k^2."""
        return self.descriptor_size * self.code_size**2

    def code_map_size(self, input_size: int) -> int:
        """Side of the code map of an ``input_size`` x ``input_size`` input: S - r + 1."""
        return input_size - self.receptive_field + 1

    def to_json(self) -> str:
        """Serialise for the ONNX metadata (strict JSON: other readers refuse NaN and Inf).

        Raises:
            ValueError: a number in the contract is NaN or infinite (write null instead).
        """
        try:
            return json.dumps(asdict(self), sort_keys=True, allow_nan=False)
        except ValueError:
            raise ValueError(
                "the model contract holds a NaN or infinite number, which strict JSON readers "
                "refuse: store null (None) for a figure that could not be measured"
            ) from None

    @classmethod
    def from_json(cls, text: str) -> ModelContract:
        """Parse the JSON stored in a model; raises ``ValueError`` with the reason."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"model contract is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError("model contract must be a JSON object")
        _check_keys(raw)
        try:
            raw["sar"] = PreprocessSpec(**raw["sar"])
            raw["optical"] = PreprocessSpec(**raw["optical"])
            return cls(**raw)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"model contract is incomplete or has unknown fields: {exc}") from exc


def _check_keys(raw: dict[str, Any]) -> None:
    """The format first (a newer one may add keys), then every key that format has.

    Raises:
        ValueError: no or an unreadable ``format_version``, or keys of its format missing.
    """
    fmt = raw.get("format_version")
    if fmt is None:
        raise ValueError(
            "model contract is incomplete: it has no format_version; re-export the model"
        )
    if isinstance(fmt, bool) or not isinstance(fmt, int):
        raise ValueError(f"model contract: format_version must be an integer, got {fmt!r}")
    if fmt not in READABLE_FORMATS:
        raise ValueError(
            f"model contract format {fmt} is not supported by this plugin (reads "
            f"{', '.join(map(str, READABLE_FORMATS))}); update the plugin or re-export the model"
        )
    fields_ = [f.name for f in ModelContract.__dataclass_fields__.values() if f.name != "training"]
    missing = [k for k in fields_ if k not in raw and fmt >= _LATER_KEYS.get(k, 1)]
    for name in ("sar", "optical"):
        spec = raw.get(name)
        if spec is not None and not isinstance(spec, dict):
            raise ValueError(f"model contract: {name} must be a JSON object, got {spec!r}")
        missing += [f"{name}.{k}" for k in _SPEC_KEYS if spec is not None and k not in spec]
    if missing:
        raise ValueError(
            f"model contract is incomplete: format {fmt} has {', '.join(missing)}, this one does "
            "not (a default filled in would not be what the model was exported with); re-export "
            "the model with `python -m training export`"
        )
