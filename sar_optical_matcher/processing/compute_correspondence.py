"""Processing algorithm 'Compute correspondence' (shell; filled in by the provider issue)."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException


class ComputeCorrespondenceAlgorithm(QgsProcessingAlgorithm):
    """Compute correspondence."""

    def name(self) -> str:  # noqa: D102
        return "computecorrespondence"

    def displayName(self) -> str:  # noqa: N802, D102
        return "Compute correspondence"

    def group(self) -> str:  # noqa: D102
        return "SAR-optical matching"

    def groupId(self) -> str:  # noqa: N802, D102
        return "sarmatching"

    def createInstance(self) -> ComputeCorrespondenceAlgorithm:  # noqa: N802, D102
        return type(self)()

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802, D102
        pass

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802, D102
        raise QgsProcessingException("Compute correspondence is not implemented yet")
