"""Processing algorithm 'Detect keypoints' (shell; filled in by the provider issue)."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException


class DetectKeypointsAlgorithm(QgsProcessingAlgorithm):
    """Detect keypoints."""

    def name(self) -> str:  # noqa: D102
        return "detectkeypoints"

    def displayName(self) -> str:  # noqa: N802, D102
        return "Detect keypoints"

    def group(self) -> str:  # noqa: D102
        return "SAR-optical matching"

    def groupId(self) -> str:  # noqa: N802, D102
        return "sarmatching"

    def createInstance(self) -> DetectKeypointsAlgorithm:  # noqa: N802, D102
        return type(self)()

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802, D102
        pass

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802, D102
        raise QgsProcessingException("Detect keypoints is not implemented yet")
