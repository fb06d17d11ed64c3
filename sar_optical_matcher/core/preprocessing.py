"""Patch preprocessing, defined once and used by training and inference alike.

Steps, per modality (parameters recorded in the model contract, see ``model.contract``):

1. SAR only: linear amplitude or intensity is converted to decibels (``10 log10``); data that is
   already logarithmic (dB) or an 8-bit display rendering is left as it is. Because step 2 is a
   per-patch stretch, amplitude and intensity give the same result (dB differ by a factor 2).
2. Robust stretch to [0, 1] between the ``low``/``high`` percentiles of the patch's valid pixels.
   This makes the models independent of the data type (uint8, uint16, float) and of the sensor's
   calibration. SAR is stretched over the whole *search region*, optical over the *template*.
3. Standardisation with the training set's mean and std (paper: SAR N(0.5, 0.2), optical
   N(0.45, 0.15)); invalid (nodata/NaN) pixels are set to 0 after it, i.e. to the mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from numbers import Real
from typing import Literal

import numpy as np

SarScale = Literal["auto", "linear", "db"]
SAR_SCALES: tuple[str, ...] = ("auto", "linear", "db")


@dataclass(frozen=True)
class PreprocessSpec:
    """Preprocessing of one modality.

    Attributes:
        modality: ``"sar"`` or ``"optical"``.
        low_percentile: lower stretch percentile (0-100).
        high_percentile: upper stretch percentile (0-100).
        mean: mean of the [0, 1]-stretched training patches.
        std: standard deviation of the [0, 1]-stretched training patches.
    """

    modality: str
    low_percentile: float = 2.0
    high_percentile: float = 98.0
    mean: float = 0.5
    std: float = 0.2

    def __post_init__(self) -> None:
        """Validate the fields."""
        if self.modality not in ("sar", "optical"):
            raise ValueError(f"modality must be 'sar' or 'optical', not {self.modality!r}")
        for key in ("low_percentile", "high_percentile", "mean", "std"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, Real):
                # a list read from a model's JSON failed as "truth value of an array is ambiguous"
                raise ValueError(
                    f"{self.modality} preprocessing: {key} must be a number, got {value!r}"
                )
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise ValueError("need 0 <= low_percentile < high_percentile <= 100")
        if not (np.isfinite(self.mean) and np.isfinite(self.std) and self.std > 0):
            raise ValueError(f"invalid standardisation mean={self.mean} std={self.std}")

    def to_dict(self) -> dict[str, float | str]:
        """Plain-JSON form for the model metadata."""
        return asdict(self)


#: Share of negative values above which ``auto`` takes SAR data as dB. Calibrated linear
#: intensity keeps a few negative pixels where thermal noise was subtracted (0.3 % in a
#: speckled scene): any negative value made it dB, and it was matched without its log.
DB_NEGATIVE_SHARE = 0.01


def resolve_sar_scale(values: np.ndarray, sar_scale: str = "auto") -> str:
    """Decide whether SAR values are linear (amplitude/intensity) or already logarithmic.

    ``auto``: 8-bit data and data more than :data:`DB_NEGATIVE_SHARE` negative are taken as
    logarithmic/display data ("db"); any other data (uint16, float >= 0 but for a few noise-
    subtracted pixels) as linear amplitude or intensity.

    Args:
        values: SAR pixels (any shape, any dtype); only valid pixels should be passed.
        sar_scale: ``"auto"``, ``"linear"`` or ``"db"``.

    Returns:
        ``"linear"`` or ``"db"``.
    """
    if sar_scale not in SAR_SCALES:
        raise ValueError(f"sar_scale must be one of {SAR_SCALES}, not {sar_scale!r}")
    if sar_scale != "auto":
        return sar_scale
    if values.dtype == np.uint8:
        return "db"
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if finite.size and float(np.count_nonzero(finite < 0)) > DB_NEGATIVE_SHARE * finite.size:
        return "db"
    return "linear"


def sar_to_db(values: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Linear amplitude/intensity to decibels, ``10 log10(max(v, floor))`` (float32)."""
    v = np.asarray(values, dtype=np.float64)
    return (10.0 * np.log10(np.maximum(v, floor))).astype(np.float32)


def _usable(x: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Finite and valid pixels as a bool mask; ``valid`` may be bool or 0/non-zero numbers."""
    ok = np.isfinite(x)
    if valid is None:
        return ok
    v = np.asarray(valid)
    if v.shape != x.shape:
        raise ValueError(f"valid mask shape {v.shape} differs from patch shape {x.shape}")
    # astype(bool): ``uint8_mask & bool_array`` stays uint8 and would index by integers.
    return ok & v.astype(bool)


def stretch_unit(
    patch: np.ndarray,
    low_percentile: float,
    high_percentile: float,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Stretch ``patch`` to [0, 1] between two percentiles of its valid pixels.

    Args:
        patch: (H, W) array of any numeric dtype.
        low_percentile: lower percentile (0-100).
        high_percentile: upper percentile (0-100).
        valid: optional (H, W) mask of valid pixels (bool, or 0 = invalid as in a GDAL mask
            band); NaN/Inf are always invalid.

    Returns:
        (H, W) float32 in [0, 1]; invalid pixels are NaN. A constant patch maps to 0.5.
    """
    x = np.asarray(patch, dtype=np.float32)
    ok = _usable(x, valid)
    out = np.full(x.shape, np.nan, dtype=np.float32)
    if not ok.any():
        return out
    lo, hi = np.percentile(x[ok], [low_percentile, high_percentile])
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        out[ok] = 0.5
        return out
    out[ok] = np.clip((x[ok] - lo) / (hi - lo), 0.0, 1.0)
    return out


def preprocess(
    patch: np.ndarray,
    spec: PreprocessSpec,
    valid: np.ndarray | None = None,
    sar_scale: str = "auto",
) -> np.ndarray:
    """Full preprocessing of one patch (see module docstring).

    Args:
        patch: (H, W) raw pixels of one band.
        spec: the modality's preprocessing from the model contract.
        valid: optional (H, W) mask of valid pixels (e.g. not nodata; bool or 0/non-zero).
        sar_scale: for SAR, ``"auto"``, ``"linear"`` or ``"db"`` (ignored for optical).

    Returns:
        (H, W) float32, standardised; invalid pixels are 0 (the training mean).
    """
    if patch.ndim != 2:
        raise ValueError(f"preprocess expects a 2-D patch, got shape {patch.shape}")
    x = patch
    if spec.modality == "sar":
        mask = _usable(patch, valid)
        if resolve_sar_scale(patch[mask], sar_scale) == "linear":
            x = sar_to_db(patch)
    unit = stretch_unit(x, spec.low_percentile, spec.high_percentile, valid)
    out = (unit - spec.mean) / spec.std
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


def valid_fraction(patch: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Share of finite (and valid) pixels in ``patch``."""
    ok = _usable(np.asarray(patch, dtype=np.float32), valid)
    return float(ok.mean()) if ok.size else 0.0
