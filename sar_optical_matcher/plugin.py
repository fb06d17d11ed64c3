"""The QGIS plugin object: registers the Processing provider, nothing modal."""

from __future__ import annotations

from qgis.core import QgsApplication

from sar_optical_matcher.processing.provider import SarOpticalMatcherProvider


class SarOpticalMatcherPlugin:
    """Adds the provider in ``initProcessing`` (so ``qgis_process`` finds it too)."""

    def __init__(self, iface) -> None:
        """Keep the interface; nothing is loaded yet."""
        self.iface = iface
        self.provider: SarOpticalMatcherProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API name
        """Create and register the provider."""
        self.provider = SarOpticalMatcherProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS API name
        """Called by the desktop application; the provider is all the GUI there is."""
        self.initProcessing()

    def unload(self) -> None:
        """Remove the provider."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
