"""SAR-Optical Matcher QGIS plugin.

QGIS calls :func:`classFactory` with the ``QgisInterface``; the package's pure-Python parts
(``core``, ``model``) import without QGIS.
"""


def classFactory(iface):  # noqa: N802 - name fixed by QGIS
    """Return the plugin instance (QGIS entry point)."""
    from sar_optical_matcher.plugin import SarOpticalMatcherPlugin

    return SarOpticalMatcherPlugin(iface)
