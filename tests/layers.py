"""QGIS memory layers for the Processing tests (import inside tests: QGIS must be initialised)."""

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
