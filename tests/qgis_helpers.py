"""QGIS helpers for the Processing tests (import inside tests: QGIS must be initialised)."""

from __future__ import annotations

from typing import Any


def memory_layer(kind: str, crs: str, wkts: list[str], name: str = "kp") -> Any:
    """A memory layer of geometry ``kind`` ("MultiPoint", ...) in ``crs``, a feature per WKT."""
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer

    layer = QgsVectorLayer(f"{kind}?crs={crs}", name, "memory")
    feats = []
    for text in wkts:
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromWkt(text))
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    return layer


def recording_feedback() -> Any:
    """A ``QgsProcessingFeedback`` that keeps what it is told in ``.infos`` and ``.warnings``."""
    from qgis.core import QgsProcessingFeedback

    class RecordingFeedback(QgsProcessingFeedback):
        def __init__(self) -> None:
            super().__init__()
            self.infos: list[str] = []
            self.warnings: list[str] = []

        def pushInfo(self, text: str) -> None:  # noqa: N802 - QGIS API name
            self.infos.append(text)
            super().pushInfo(text)

        def pushWarning(self, text: str) -> None:  # noqa: N802 - QGIS API name
            self.warnings.append(text)
            super().pushWarning(text)

    return RecordingFeedback()
