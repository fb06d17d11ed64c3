"""Co-registered SAR/optical pair records: the one input format of the trainer and evaluation.

Loaders for each source (synthetic scenes, 3MOS tiles, SEN1-2 folders, GDAL raster pairs) return
lists of :class:`PairRecord`. numpy only (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PairRecord:
    """One co-registered SAR/optical pair on a common pixel grid.

    Attributes:
        sar: (H, W) float32 raw SAR values (scale given by ``sar_scale``).
        optical: (H, W) float32 raw optical values, one band (RGB is reduced to luminance).
        sar_scale: ``"linear"`` (amplitude/intensity) or ``"db"`` (already logarithmic, or an
            8-bit display rendering), see ``core.preprocessing``.
        scene: split key; pairs of one scene/region always fall into the same split.
        sensor: SAR sensor name (e.g. ``"SEN"``, ``"GF3"``, ``"synthetic"``).
        source: ``"synthetic"``, ``"3mos"``, ``"sen12"`` or ``"gdal"``.
        name: unique, human-readable identifier.
        valid: optional (H, W) bool mask of pixels valid in both images.
        offset_xy_px: known residual misregistration (x, y) of the SAR relative to the optical in
            pixels (e.g. the GF-3 x bias of 3MOS), (0, 0) when perfectly registered.
    """

    sar: np.ndarray
    optical: np.ndarray
    sar_scale: str
    scene: str
    sensor: str
    source: str
    name: str
    valid: np.ndarray | None = None
    offset_xy_px: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        """Check shapes and the scale."""
        if self.sar.ndim != 2 or self.sar.shape != self.optical.shape:
            raise ValueError(
                f"{self.name}: SAR {self.sar.shape} and optical {self.optical.shape} must be "
                "2-D and equally shaped"
            )
        if self.sar_scale not in ("linear", "db"):
            raise ValueError(f"{self.name}: sar_scale must be 'linear' or 'db'")
        if self.valid is not None and self.valid.shape != self.sar.shape:
            raise ValueError(f"{self.name}: valid mask shape differs from the images")
