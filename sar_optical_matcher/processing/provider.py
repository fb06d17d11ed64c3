"""The Processing provider 'SAR-optical matching'."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from sar_optical_matcher.processing.compute_correspondence import ComputeCorrespondenceAlgorithm
from sar_optical_matcher.processing.detect_keypoints import DetectKeypointsAlgorithm
from sar_optical_matcher.processing.register import RegisterSarToOpticalAlgorithm

PROVIDER_ID = "sarmatcher"


class SarOpticalMatcherProvider(QgsProcessingProvider):
    """Offers Detect keypoints, Compute correspondence and Register SAR to optical."""

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS API name
        """Add one instance of each algorithm."""
        for alg in (
            DetectKeypointsAlgorithm(),
            ComputeCorrespondenceAlgorithm(),
            RegisterSarToOpticalAlgorithm(),
        ):
            self.addAlgorithm(alg)

    def id(self) -> str:  # noqa: D102
        return PROVIDER_ID

    def name(self) -> str:  # noqa: D102
        return "SAR-Optical Matcher"

    def longName(self) -> str:  # noqa: N802, D102
        return "SAR-Optical Matcher (semi-supervised SAR-optical matching)"

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802, D102
        from sar_optical_matcher import rasters

        return rasters.output_extensions()

    def icon(self) -> QIcon:  # noqa: D102
        return QIcon(str(Path(__file__).resolve().parent.parent / "icon.svg"))
