"""The QGIS plugin object: registers the Processing provider, nothing modal."""

from __future__ import annotations

from qgis.core import QgsApplication

from sar_optical_matcher.processing.provider import PROVIDER_ID, SarOpticalMatcherProvider


class SarOpticalMatcherPlugin:
    """Adds the provider in ``initProcessing`` (so ``qgis_process`` finds it too)."""

    def __init__(self, iface) -> None:
        """Keep the interface; nothing is loaded yet."""
        self.iface = iface
        self.provider: SarOpticalMatcherProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API name
        """Create and register the provider (once: QGIS may call this and initGui)."""
        if self.provider is not None:
            return
        registry = QgsApplication.processingRegistry()
        if registry.providerById(PROVIDER_ID) is not None:
            # Another copy (e.g. a second plugin folder) already serves these algorithms;
            # registering ours would fail and QGIS would delete the object under us.
            return
        provider = SarOpticalMatcherProvider()
        if registry.addProvider(provider):
            self.provider = provider

    def initGui(self) -> None:  # noqa: N802 - QGIS API name
        """Called by the desktop application; the provider is all the GUI there is."""
        self.initProcessing()

    def unload(self) -> None:
        """Remove the provider."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
