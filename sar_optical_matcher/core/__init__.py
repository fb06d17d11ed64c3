"""Pure numpy core of SAR-Optical Matcher: no QGIS, GDAL or onnxruntime imports here.

Pixel convention (used everywhere in the project):
    * arrays are indexed ``[row, col]``; points are ``(x, y)`` with x = column, y = row;
    * ``(x, y)`` are continuous pixel coordinates whose integer values are pixel *corners*:
      the centre of pixel ``[r, c]`` is ``(c + 0.5, r + 0.5)``, exactly as in GDAL's
      geotransform (``x_map = gt[0] + x * gt[1] + y * gt[2]``);
    * names carry their frame: ``_px`` for pixels, ``_map`` for map units (the raster's CRS).

A *window offset* (dx, dy) of a correspondence map is the integer top-left corner of the SAR
window relative to the search region's top-left corner; offset (dx, dy) = ((S - T) // 2,
(S - T) // 2) (integer division, as matching, registration and training cut their windows) means
"no shift" for template size T and search size S.
"""
