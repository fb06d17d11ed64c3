"""Processing algorithm 'Detect keypoints': Harris corners with NMS, read tile by tile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from qgis.core import (
    QgsGeometry,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBand,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from sar_optical_matcher import registration as reg
from sar_optical_matcher.processing import common

KEYPOINT_FIELDS = (("id", int), ("x_px", float), ("y_px", float), ("response", float))


@dataclass(frozen=True)
class DetectKeypointsSettings:
    """Plain values of the algorithm's parameters.

    Attributes:
        raster_path: the optical raster file.
        detect: detection settings (band, distances, extent, mask polygons in the raster CRS).
    """

    raster_path: str
    detect: reg.DetectSettings


#: MIN_DISTANCE's largest value: past 1e154 its square overflowed into a traceback.
MAX_MIN_DISTANCE_PX = 1e9


def declare_detect_params(alg: QgsProcessingAlgorithm, parent: str, prefix: str = "") -> None:
    """Declare MIN_DISTANCE, MAX_COUNT, SPREAD, BORDER, MASK, EXTENT (shared with Register)."""
    a = DetectKeypointsAlgorithm
    common.add_param(
        alg,
        QgsProcessingParameterNumber(
            prefix + a.MIN_DISTANCE,
            "Minimum distance between keypoints (pixels)",
            QgsProcessingParameterNumber.Double,
            128.0,
            minValue=1.0,
            maxValue=MAX_MIN_DISTANCE_PX,
        ),
        "Non-maximum suppression radius: no two keypoints closer than this (optical pixels). "
        "The template size (128) avoids overlapping templates.",
    )
    common.add_param(
        alg,
        QgsProcessingParameterNumber(
            prefix + a.MAX_COUNT,
            "Maximum number of keypoints",
            QgsProcessingParameterNumber.Integer,
            500,
            minValue=1,
            maxValue=common.MAX_INT_PARAM,
        ),
        "Keep at most this many keypoints, strongest Harris response first (see SPREAD).",
    )
    common.add_param(
        alg,
        QgsProcessingParameterNumber(
            prefix + a.SPREAD,
            "Spatial spread (share of the keypoints)",
            QgsProcessingParameterNumber.Double,
            reg.DEFAULT_SPREAD,
            minValue=0.0,
            maxValue=1.0,
        ),
        f"0 to 1, default {reg.DEFAULT_SPREAD}. Share of MAX_COUNT shared out over the scene "
        "first: the search window is cut into up to SPREAD x MAX_COUNT cells and each cell's "
        "strongest corner is taken, then the rest goes to the strongest corners anywhere "
        "(SPREAD x MAX_COUNT under 1: strongest first). 0: strongest first (a contrasted part "
        "of the scene can take every keypoint, and a poly/TPS fit is then extrapolated over "
        "the rest). A cell whose best corner has under ~6 % of the strongest corner's "
        "contrast (flat water, cloud, noise) gets none.",
        advanced=True,
    )
    common.add_param(
        alg,
        QgsProcessingParameterNumber(
            prefix + a.BORDER,
            "Border margin (pixels)",
            QgsProcessingParameterNumber.Integer,
            128,
            minValue=0,
            maxValue=common.MAX_INT_PARAM,
        ),
        "Keypoints keep this distance from the raster edges so that the search region "
        "(256 px, half = 128) fits around them.",
        advanced=True,
    )
    common.add_param(
        alg,
        QgsProcessingParameterFeatureSource(
            prefix + a.MASK, "Mask polygons", [QgsProcessing.TypeVectorPolygon], optional=True
        ),
        "Optional polygon layer (any CRS): keypoints only inside its polygons.",
        advanced=True,
    )
    common.add_param(
        alg,
        QgsProcessingParameterExtent(prefix + a.EXTENT, "Extent", optional=True),
        "Optional extent: keypoints only inside it (exactly, also when it is given in another "
        "CRS than the raster's).",
        advanced=True,
    )


def detect_settings_from(
    alg: QgsProcessingAlgorithm,
    parameters: dict[str, Any],
    context: QgsProcessingContext,
    raster_param: str,
    band: int,
    prefix: str = "",
) -> reg.DetectSettings:
    """DetectSettings from the parameters declared by :func:`declare_detect_params`."""
    a = DetectKeypointsAlgorithm
    layer = alg.parameterAsRasterLayer(parameters, raster_param, context)
    crs = layer.crs()
    extent, outline = _extent(alg, parameters, prefix + a.EXTENT, context, crs)
    if extent is not None:
        _check_extent_overlaps(extent, layer.extent(), prefix + a.EXTENT, crs)
    mask = None
    source = alg.parameterAsSource(parameters, prefix + a.MASK, context)
    if source is not None:
        mask = common.polygons_wkt(source, crs, context)
        if not mask:
            raise QgsProcessingException(
                "MASK has no polygons: choose another layer or leave it empty"
            )
    if outline is not None:  # an extent reprojected into the raster CRS is no longer its bbox
        mask = _clip_to_outline(mask, outline)
    try:
        return reg.DetectSettings(
            band=band,
            min_distance_px=alg.parameterAsDouble(parameters, prefix + a.MIN_DISTANCE, context),
            max_count=alg.parameterAsInt(parameters, prefix + a.MAX_COUNT, context),
            spread=alg.parameterAsDouble(parameters, prefix + a.SPREAD, context),
            border_px=alg.parameterAsInt(parameters, prefix + a.BORDER, context),
            extent_map=extent,
            mask_wkt=mask,
        )
    except ValueError as exc:
        raise QgsProcessingException(str(exc)) from exc


def _extent(
    alg: QgsProcessingAlgorithm,
    parameters: dict[str, Any],
    name: str,
    context: QgsProcessingContext,
    crs: Any,
) -> tuple[tuple[float, float, float, float] | None, QgsGeometry | None]:
    """The EXTENT parameter in ``crs``: its bounding box, and its outline where that differs.

    An extent given in another CRS (a canvas in EPSG:3857 or 4326 over a UTM raster) becomes a
    rotated, curved quadrilateral in the raster CRS; its bounding box reaches beyond it (by
    ~70 px a side for a 20 km extent at 2 degrees of meridian convergence). The outline is
    returned then, so that the extent can be applied exactly; None where the bbox is exact.
    """
    if parameters.get(name) in (None, ""):
        return None, None
    rect = alg.parameterAsExtent(parameters, name, context, crs)
    if rect.isNull():
        return None, None
    if rect.isEmpty():  # was ignored: keypoints were then detected on the whole raster
        raise QgsProcessingException(
            f"{name} {parameters.get(name)!r} is empty (zero width or height): give an extent "
            "with xmin < xmax and ymin < ymax, or leave it empty to use the whole raster"
        )
    bbox = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
    outline = alg.parameterAsExtentGeometry(parameters, name, context, crs)
    if outline.isEmpty() or abs(outline.area() - rect.area()) <= 1e-6 * rect.area():
        return bbox, None
    return bbox, outline


def _check_extent_overlaps(
    extent: tuple[float, float, float, float], raster: Any, name: str, crs: Any
) -> None:
    """Raise when the extent (in the raster CRS) and the raster's extent do not meet.

    Without this the error was "no room for keypoints ... use ... a smaller border".
    """
    xmin, ymin, xmax, ymax = extent
    if not (
        xmin > raster.xMaximum()
        or xmax < raster.xMinimum()
        or ymin > raster.yMaximum()
        or ymax < raster.yMinimum()
    ):
        return
    raise QgsProcessingException(
        f"{name} does not overlap the raster: in the raster's CRS ({crs.authid() or 'its CRS'}) "
        f"it spans x {xmin:.10g} to {xmax:.10g}, y {ymin:.10g} to {ymax:.10g}, the raster x "
        f"{raster.xMinimum():.10g} to {raster.xMaximum():.10g}, y {raster.yMinimum():.10g} to "
        f"{raster.yMaximum():.10g}; choose an extent on the raster (and check the CRS it is "
        "given in), or leave it empty"
    )


def _clip_to_outline(mask: tuple[str, ...] | None, outline: QgsGeometry) -> tuple[str, ...]:
    """Mask polygons (WKT) limited to ``outline``: the outline itself without a mask."""
    if mask is None:
        return (outline.asWkt(),)
    parts = []
    for wkt in mask:
        clipped = QgsGeometry.fromWkt(wkt).intersection(outline)
        parts += [g.asWkt() for g in common.polygon_parts(clipped)]
    if not parts:
        raise QgsProcessingException(
            "MASK and EXTENT do not overlap: no mask polygon lies inside the extent, so there "
            "is nowhere to look for keypoints; choose an extent that covers the mask, or leave "
            "one of them empty"
        )
    return tuple(parts)


def mask_given(parameters: dict[str, Any], prefix: str = "") -> bool:
    """Whether the user gave a MASK layer (a reprojected EXTENT is applied as a mask too)."""
    return parameters.get(prefix + DetectKeypointsAlgorithm.MASK) not in (None, "")


class DetectKeypointsAlgorithm(common.MatcherAlgorithm):
    """Harris keypoints of an optical raster, as a point layer in the raster's CRS."""

    RASTER_PARAMS = ("INPUT",)

    INPUT = "INPUT"
    BAND = "BAND"
    MIN_DISTANCE = "MIN_DISTANCE"
    MAX_COUNT = "MAX_COUNT"
    SPREAD = "SPREAD"
    BORDER = "BORDER"
    MASK = "MASK"
    EXTENT = "EXTENT"
    OUTPUT = "OUTPUT"

    def name(self) -> str:  # noqa: D102
        return "detectkeypoints"

    def displayName(self) -> str:  # noqa: D102
        return "Detect keypoints"

    def shortHelpString(self) -> str:  # noqa: D102
        return common.help_html(
            "Harris corners of the optical raster with non-maximum suppression, read tile by "
            "tile; a share of them (SPREAD) is spread over the raster, one per cell. Outputs a "
            "point layer in the raster's CRS with id, pixel x/y (pixel centre = +0.5) and "
            "Harris response. It knows neither the SAR nor the model's template size, so it "
            "does not keep keypoints off optical nodata edges (a nodata triangle, a masked "
            "cloud) as the detection inside Compute correspondence and Register does: there "
            "such points are skipped at matching as nodata_optical; use MASK or EXTENT to keep "
            "away from them, or leave KEYPOINTS unset there.",
            [
                (self.INPUT, "optical raster"),
                (self.BAND, "band to detect on"),
                (self.MIN_DISTANCE, "minimum keypoint spacing, pixels"),
                (self.MAX_COUNT, "maximum number of keypoints"),
                (self.SPREAD, f"share of them spread, one per cell, 0..1 ({reg.DEFAULT_SPREAD})"),
                (self.BORDER, "distance from the raster edges, pixels"),
                (self.MASK, "optional polygons to search in"),
                (self.EXTENT, "optional extent"),
                (self.OUTPUT, "the keypoints"),
            ],
        )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: D102
        common.add_param(
            self,
            QgsProcessingParameterRasterLayer(self.INPUT, "Optical raster"),
            "The optical raster (any GDAL format, georeferenced).",
        )
        common.add_param(
            self,
            QgsProcessingParameterBand(self.BAND, "Band", 1, self.INPUT, optional=True),
            "Band of the optical raster to detect on; default 1.",
        )
        declare_detect_params(self, self.INPUT)
        common.add_param(
            self,
            QgsProcessingParameterFeatureSink(
                self.OUTPUT, "Keypoints", QgsProcessing.TypeVectorPoint
            ),
            "Point layer in the raster's CRS: id, x_px, y_px (pixel column and "
            "row of the raster, 0.5 = the first pixel's centre), response (the Harris corner "
            "measure of the band as read: its units depend on the data's, so compare it only "
            "within one raster).",
        )

    def settings(
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> DetectKeypointsSettings:
        """Turn the parameters into plain values (no side effects)."""
        path = common.raster_path(self, parameters, self.INPUT, context)
        band = self.parameterAsInt(parameters, self.BAND, context)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        common.check_output_path(output, self.OUTPUT)
        common.check_distinct_files({self.OUTPUT: output}, {self.INPUT: path})
        return DetectKeypointsSettings(
            path, detect_settings_from(self, parameters, context, self.INPUT, band)
        )

    def processAlgorithm(  # noqa: D102
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        if feedback is None:  # QgsProcessingAlgorithm.run(..., feedback=None) passes None
            feedback = QgsProcessingFeedback()
        s = self.settings(parameters, context)
        info = common.open_raster_checked(s.raster_path, self.INPUT, s.detect.band)
        if note := common.non_square_warning(info, self.INPUT):
            feedback.pushWarning(note)
        with common.processing_errors():
            keypoints = reg.detect_keypoints_tiled(
                info,
                s.detect,
                common.progress_callback(feedback, 0, 95),
                common.canceled_callback(feedback),
            )
        common.raise_if_canceled(feedback)  # before the output layer is created
        feedback.pushInfo(f"{len(keypoints.xy_px)} keypoints detected")
        if len(keypoints.xy_px) == 0:
            feedback.pushWarning(no_keypoints_warning(s.detect, mask_given(parameters)))
        xy = np.asarray(keypoints.xy_px, np.float64).reshape(-1, 2)
        rows = [(i, x, y, r) for i, ((x, y), r) in enumerate(zip(xy, keypoints.response))]
        in_place = common.keep_earlier_layer(self, parameters, context, self.OUTPUT)
        with common.processing_errors(), in_place:
            dest = common.write_points_layer(
                self, parameters, context, self.OUTPUT, KEYPOINT_FIELDS,
                reg.pixel_to_map(info.geotransform, xy), rows, raster=self.INPUT,
            )  # fmt: skip
            if dest is None:
                raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        feedback.setProgress(100)
        return {self.OUTPUT: dest}


def no_keypoints_warning(s: reg.DetectSettings, masked: bool) -> str:
    """Why detection found nothing: the MASK or EXTENT where one was given, else the raster.

    ``masked``: whether the user gave a MASK (``s.mask_wkt`` alone cannot tell: a reprojected
    EXTENT also sets it).
    """
    if masked:
        return (
            "no keypoints found inside MASK: its polygons cover no textured part of the "
            "raster's search window (do they overlap the raster, away from its BORDER?); the "
            "output layer is empty. Check the mask, or leave it empty"
        )
    where = "EXTENT" if s.extent_map is not None else "the search window"
    return (
        f"no keypoints found: the raster is constant, all nodata or textureless in {where}; "
        "the output layer is empty. Use a textured area or band, or a smaller BORDER/"
        "MIN_DISTANCE"
    )
