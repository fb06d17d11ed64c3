"""The QGIS plugin object: registers the Processing provider, nothing modal."""

from __future__ import annotations

from typing import Any

from qgis.core import Qgis, QgsApplication, QgsMessageLog

PLUGIN_NAME = "SAR-Optical Matcher"


class SarOpticalMatcherPlugin:
    """Adds the provider in ``initProcessing`` (so ``qgis_process`` finds it too)."""

    def __init__(self, iface) -> None:
        """Keep the interface; nothing is loaded yet."""
        self.iface = iface
        self.provider: Any = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API name
        """Create and register the provider (once: QGIS may call this and initGui)."""
        if self.provider is not None:
            return
        try:
            from sar_optical_matcher.processing.provider import (
                PROVIDER_ID,
                SarOpticalMatcherProvider,
            )
        except ModuleNotFoundError as exc:  # scipy (keypoints, peaks): needed for anything
            top = (exc.name or "").partition(".")[0]
            if not top or top == "sar_optical_matcher":
                raise  # a broken install of the plugin itself: its traceback is the report
            self._missing(top)
            return
        registry = QgsApplication.processingRegistry()
        if registry.providerById(PROVIDER_ID) is not None:
            # Another copy (e.g. a second plugin folder) already serves these algorithms;
            # registering ours would fail and QGIS would delete the object under us.
            return
        provider = SarOpticalMatcherProvider()
        if registry.addProvider(provider):
            self.provider = provider

    def _missing(self, name: str) -> None:
        """Say which package is missing and how to install it (log and message bar)."""
        text = (
            f"{PLUGIN_NAME} cannot load: the Python package '{name}' is missing from the Python "
            f"that runs QGIS. Install it (`pip install {name}`; Debian/Ubuntu: `sudo apt-get "
            f"install python3-{name}`; Windows: in the OSGeo4W Shell) and restart QGIS."
        )
        QgsMessageLog.logMessage(text, PLUGIN_NAME, Qgis.Critical)
        if self.iface is not None and hasattr(self.iface, "messageBar"):
            self.iface.messageBar().pushCritical(PLUGIN_NAME, text)

    def initGui(self) -> None:  # noqa: N802 - QGIS API name
        """Called by the desktop application; the provider is all the GUI there is."""
        self.initProcessing()

    def unload(self) -> None:
        """Remove the provider."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
