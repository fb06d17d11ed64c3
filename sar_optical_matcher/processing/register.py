"""Processing algorithm 'Register SAR to optical' (shell; filled in by the provider issue)."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException


class RegisterSarToOpticalAlgorithm(QgsProcessingAlgorithm):
    """Register SAR to optical."""

    def name(self) -> str:  # noqa: D102
        return "registersartooptical"

    def displayName(self) -> str:  # noqa: N802, D102
        return "Register SAR to optical"

    def group(self) -> str:  # noqa: D102
        return "SAR-optical matching"

    def groupId(self) -> str:  # noqa: N802, D102
        return "sarmatching"

    def createInstance(self) -> RegisterSarToOpticalAlgorithm:  # noqa: N802, D102
        return type(self)()

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802, D102
        pass

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802, D102
        raise QgsProcessingException("Register SAR to optical is not implemented yet")
