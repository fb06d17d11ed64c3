"""Model contract and the onnxruntime encoder wrapper."""

from sar_optical_matcher.model.contract import FORMAT_VERSION, METADATA_KEY, ModelContract

__all__ = ["FORMAT_VERSION", "METADATA_KEY", "ModelContract"]
