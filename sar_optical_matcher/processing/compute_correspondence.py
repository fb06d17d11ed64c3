"""Processing algorithm 'Compute correspondence': match optical keypoints in the SAR raster."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import numpy as np
from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBand,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from sar_optical_matcher import registration as reg
from sar_optical_matcher.core import files
from sar_optical_matcher.core.geotransform import points_in_box
from sar_optical_matcher.matching import MIN_VALID_FRACTION
from sar_optical_matcher.processing import common
from sar_optical_matcher.processing.detect_keypoints import (
    declare_detect_params,
    detect_settings_from,
    mask_given,
)
from sar_optical_matcher.processing.matching_plan import (
    MATCH_FIELDS,
    CorrespondenceSettings,
    check_overlap,
    detection_on_sar,
    edge_peak_warning,
    edge_peaks,
    empty_result,
    no_keypoints_message,
    select_layer_keypoints,
    skipped_text,
)


class ComputeCorrespondenceAlgorithm(common.MatcherAlgorithm):
    """For each optical keypoint, the SAR position found by the model, with its quality."""

    RASTER_PARAMS = ("SAR", "OPTICAL")

    SAR = "SAR"
    SAR_BAND = "SAR_BAND"
    OPTICAL = "OPTICAL"
    OPTICAL_BAND = "OPTICAL_BAND"
    KEYPOINTS = "KEYPOINTS"
    MODEL = "MODEL"
    TEMPLATE_SIZE = "TEMPLATE_SIZE"
    SEARCH_SIZE = "SEARCH_SIZE"
    SAR_SCALE = "SAR_SCALE"
    DEVICE = "DEVICE"
    BATCH_SIZE = "BATCH_SIZE"
    MATCH_PIXEL_SIZE = "MATCH_PIXEL_SIZE"
    CONFIDENCE_THRESHOLD = "CONFIDENCE_THRESHOLD"
    OUTPUT_MAPS = "OUTPUT_MAPS"
    MATCHES = "MATCHES"

    def name(self) -> str:  # noqa: D102
        return "computecorrespondence"

    def displayName(self) -> str:  # noqa: D102
        return "Compute correspondence"

    def shortHelpString(self) -> str:  # noqa: D102
        return common.help_html(
            "For each optical keypoint, the optical template is compared with every window of "
            "the SAR search region (warped into the optical pixel grid from the georeferencing) "
            "by a learned descriptor (Hughes &amp; Schmitt 2019). The peak of the correspondence "
            "map (cosine similarities, smoothed as the model file says: a 1 px Gaussian for the "
            "shipped model) gives the SAR position; its sharpness gives a confidence in [0, 1].",
            [
                (self.SAR, "SAR raster"),
                (self.OPTICAL, "optical raster"),
                (self.KEYPOINTS, "optional keypoints (any CRS); detected when not set"),
                (self.MODEL, "ONNX model; empty = the model shipped with the plugin"),
                (self.TEMPLATE_SIZE + "/" + self.SEARCH_SIZE, "must equal the model's sizes"),
                (self.CONFIDENCE_THRESHOLD, "matches below it are flagged not accepted"),
                (self.MATCHES, "match point layer in the optical CRS"),
                (self.OUTPUT_MAPS, "optional folder of correspondence-map GeoTIFFs"),
            ],
        )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: D102
        declare_match_params(self)
        declare_detect_params(self, self.OPTICAL)
        common.add_param(
            self,
            QgsProcessingParameterFolderDestination(
                self.OUTPUT_MAPS, "Correspondence maps folder", optional=True, createByDefault=False
            ),
            "Optional folder: one GeoTIFF map_<id>.tif per matched keypoint (the id of the "
            "Matches layer in 5 digits or more: id 12 is map_00012.tif; skipped keypoints get "
            "none), in the optical CRS. Each pixel is one "
            "candidate SAR window (pixel (j, i): window offset (j, i) in the search region), "
            "valued by its cosine similarity (smoothed as the model says), and placed where "
            "that window puts the keypoint: the peak lies at the found position, keypoint + "
            "(dx_px, dy_px). Pixels are matching-grid pixels (the optical pixel, or larger, see "
            "MATCH_PIXEL_SIZE). Maps of earlier runs in the folder are not removed.",
            advanced=True,
        )
        common.add_param(
            self,
            QgsProcessingParameterFeatureSink(
                self.MATCHES, "Matches", QgsProcessing.TypeVectorPoint
            ),
            "Point layer at the optical keypoints (optical CRS): id, opt_x_px/opt_y_px, "
            "dx_px/dy_px (optical pixels), sar_x_px/sar_y_px (SAR pixels), the positions in map "
            "units (opt_x_map/opt_y_map in the optical CRS; sar_x_map/sar_y_map in the SAR "
            "raster's CRS, where the SAR's own georeference puts the match), score, "
            "second_score, ratio, spread_px (optical pixels), confidence, accepted, "
            "status (a skipped keypoint's status says why; its match figures are NULL). A "
            "shapefile keeps 10 characters of a field name (second_score becomes "
            "second_sco); GeoPackage keeps them all.",
        )

    def settings(
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> CorrespondenceSettings:
        """Turn the parameters into plain values (no side effects)."""
        return correspondence_settings(self, parameters, context)

    def processAlgorithm(  # noqa: D102
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        if feedback is None:  # QgsProcessingAlgorithm.run(..., feedback=None) passes None
            feedback = QgsProcessingFeedback()
        s = self.settings(parameters, context)
        optical, sar, result = run_matching(s, feedback, 0, 90, allow_empty=True)
        records = result.records
        m = s.match
        n_matched = sum(1 for r in records if r.status == "ok")
        edge = edge_peaks(records, m.search_size, m.template_size, result.grid_scale)
        if edge.any():  # no evidence (Register does not fit them either), however confident
            for r, on_edge in zip(records, edge):
                r.accepted = r.accepted and not on_edge
            feedback.pushWarning(edge_peak_warning(int(edge.sum()), n_matched, m.search_size,
                                                   m.template_size, result.grid_scale))  # fmt: skip
        n_ok = sum(1 for r in records if r.accepted)
        feedback.pushInfo(f"{len(records)} keypoints: {n_matched} matched, {n_ok} accepted")
        common.raise_if_canceled(feedback)  # before the first output is created
        outputs: dict[str, Any] = {}
        # the maps are renamed into their folder only once the match layer is written; QGIS
        # writes that layer in place: an earlier one is kept aside until the maps are renamed
        # (the stage exits first), and put back if anything failed
        rows = [[getattr(r, name) for name, _ in MATCH_FIELDS] for r in records]
        xy = np.array([[r.opt_x_map, r.opt_y_map] for r in records], np.float64)
        with common.processing_errors(), contextlib.ExitStack() as in_place:
            with files.staged_outputs() as stage:
                if s.maps_folder:
                    reg.write_map_rasters(
                        s.maps_folder,
                        records,
                        result.maps,
                        optical,
                        s.match.search_size,
                        s.match.template_size,
                        result.grid_scale,
                        stage=stage,
                    )
                    outputs[self.OUTPUT_MAPS] = s.maps_folder
                layer = common.keep_earlier_layer(self, parameters, context, self.MATCHES)
                in_place.enter_context(layer)
                dest = common.write_points_layer(
                    self, parameters, context, self.MATCHES, MATCH_FIELDS, xy, rows
                )
                if dest is None:
                    raise QgsProcessingException(self.invalidSinkError(parameters, self.MATCHES))
        feedback.setProgress(100)
        outputs[self.MATCHES] = dest
        return outputs


A = ComputeCorrespondenceAlgorithm


def declare_match_params(alg: QgsProcessingAlgorithm) -> None:
    """Declare the raster, keypoint and model parameters (shared with Register)."""
    common.add_param(
        alg,
        QgsProcessingParameterRasterLayer(A.SAR, "SAR raster"),
        "The SAR raster (amplitude, intensity or dB; uint8/uint16/float).",
    )
    common.add_param(
        alg,
        QgsProcessingParameterBand(A.SAR_BAND, "SAR band", 1, A.SAR, optional=True),
        "Band of the SAR raster to match (e.g. VV); default 1.",
    )
    common.add_param(
        alg,
        QgsProcessingParameterRasterLayer(A.OPTICAL, "Optical raster"),
        "The optical reference raster; outputs use its CRS and grid.",
    )
    common.add_param(
        alg,
        QgsProcessingParameterBand(A.OPTICAL_BAND, "Optical band", 1, A.OPTICAL, optional=True),
        "Band of the optical raster to match; default 1.",
    )
    common.add_param(
        alg,
        QgsProcessingParameterFeatureSource(
            A.KEYPOINTS, "Keypoints", [QgsProcessing.TypeVectorPoint], optional=True
        ),
        "Optional point layer (any CRS, reprojected to the optical CRS); its points inside "
        "EXTENT and MASK (where given) are matched, and the match layer's id is the point's "
        "index in it (0 = its first point in feature-id order; every part of a multipoint "
        "counts; also with 'Selected features only', so that a selected point keeps its id). "
        "When not set, keypoints are detected on the optical raster (MIN_DISTANCE, MAX_COUNT, "
        "SPREAD, BORDER) where a search region of valid SAR data and a valid optical template "
        "lie around them; a layer's points are all matched, unspread (those off the SAR data "
        "are skipped as nodata_sar, those on optical nodata as nodata_optical).",
    )
    common.add_param(
        alg,
        QgsProcessingParameterFile(A.MODEL, "Model (ONNX)", extension="onnx", optional=True),
        "A SAR-Optical Matcher ONNX model; empty: the model shipped with the plugin.",
    )
    for key, label, default in (
        (A.TEMPLATE_SIZE, "Template size (pixels)", 128),
        (A.SEARCH_SIZE, "Search region size (pixels)", 256),
    ):
        common.add_param(
            alg,
            QgsProcessingParameterNumber(
                key,
                label,
                QgsProcessingParameterNumber.Integer,
                default,
                minValue=8,
                maxValue=common.MAX_PATCH_PX,
            ),
            f"{label}; must equal the model's (paper: template 128, search 256), in pixels "
            "of the matching grid (MATCH_PIXEL_SIZE). The misregistration that can be found "
            "is at most (search - template) / 2 matching-grid pixels: +/-64 optical px on the "
            "optical grid, +/-128 optical px where the automatic grid takes a SAR pixel of 2 "
            "optical px. Detected keypoints lie where the optical template and the SAR search "
            f"region have valid data (at least {MIN_VALID_FRACTION:.0%} of their pixels, as "
            "matching requires).",
            advanced=True,
        )
    common.add_param(
        alg,
        QgsProcessingParameterEnum(
            A.SAR_SCALE, "SAR values", common.SAR_SCALE_LABELS, defaultValue=0
        ),
        "How the SAR values are scaled: auto-detect (once for the band: 8-bit values, or "
        "more than 1 % negative ones, are dB/display data, anything else linear, a few "
        "negatives from thermal-noise subtraction included; the log says which), linear "
        "amplitude/intensity (converted to dB; refused for a band whose values are mostly "
        "negative, i.e. dB), or already dB.",
    )
    common.add_param(
        alg,
        QgsProcessingParameterEnum(A.DEVICE, "Device", list(common.DEVICE_OPTIONS), defaultValue=0),
        "auto: CUDA if onnxruntime-gpu sees a GPU, else CPU.",
        advanced=True,
    )
    common.add_param(
        alg,
        QgsProcessingParameterNumber(
            A.BATCH_SIZE,
            "Batch size (keypoints)",
            QgsProcessingParameterNumber.Integer,
            4,
            minValue=1,
            maxValue=1024,
        ),
        "Keypoints per model run; cancellation is checked per batch. Each keypoint of a batch "
        "holds its search region's code map (default model: 16 x 242 x 242 values, ~4 MB) plus "
        "onnxruntime's working memory (~8 MB per layer of the default model): 4 keeps matching "
        "well under 0.5 GB, larger batches gain only a few percent on a CPU.",
        advanced=True,
    )
    common.add_param(
        alg,
        QgsProcessingParameterNumber(
            A.CONFIDENCE_THRESHOLD,
            "Confidence threshold",
            QgsProcessingParameterNumber.Double,
            0.5,
            minValue=0.0,
            maxValue=1.0,
        ),
        "Matches whose confidence (sharp single peak = high) is below it are not accepted. A "
        "peak on the edge of the search range (|dx_px| or |dy_px| at (search - template) / 2 "
        "matching-grid pixels) is no evidence, whatever its confidence: Compute correspondence "
        "does not accept it, Register does not fit it.",
    )
    common.add_param(
        alg,
        QgsProcessingParameterNumber(
            A.MATCH_PIXEL_SIZE,
            "Matching pixel size (0 = automatic)",
            QgsProcessingParameterNumber.Double,
            0.0,
            minValue=0.0,
        ),
        "Pixel size, in optical map units, of the grid the templates and search regions are "
        "resampled onto for matching. 0: the optical grid, or the SAR's pixel size where that "
        "is more than 1.5x the optical's (the model was trained on pairs of one pixel size, "
        "3.5-12.5 m). Results are always in optical pixels and map units.",
        advanced=True,
    )


def correspondence_settings(
    alg: QgsProcessingAlgorithm,
    parameters: dict[str, Any],
    context: QgsProcessingContext,
    keep_maps: bool = False,
) -> CorrespondenceSettings:
    """CorrespondenceSettings from the parameters declared by :func:`declare_match_params`."""
    sar_path = common.raster_path(alg, parameters, A.SAR, context)
    optical_path = common.raster_path(alg, parameters, A.OPTICAL, context)
    optical_band = alg.parameterAsInt(parameters, A.OPTICAL_BAND, context)
    keypoints = keypoint_ids = None
    source = alg.parameterAsSource(parameters, A.KEYPOINTS, context)
    if source is not None:
        crs = alg.parameterAsRasterLayer(parameters, A.OPTICAL, context).crs()
        keypoints, fids = common.points_in_crs(source, crs, context)
        keypoint_ids = common.point_indices_in_layer(parameters, A.KEYPOINTS, context, fids)
    maps = None
    if A.OUTPUT_MAPS in parameters and parameters.get(A.OUTPUT_MAPS):
        maps = alg.parameterAsString(parameters, A.OUTPUT_MAPS, context) or None
        common.check_output_path(maps, A.OUTPUT_MAPS, folder=True)
    if A.MATCHES in parameters:
        matches = alg.parameterAsOutputLayer(parameters, A.MATCHES, context)
        common.check_output_path(matches, A.MATCHES)
        common.check_distinct_files(
            {A.MATCHES: matches}, {A.SAR: sar_path, A.OPTICAL: optical_path}
        )
    model = alg.parameterAsFile(parameters, A.MODEL, context) or None
    match = reg.MatchSettings(
        model_path=model,
        template_size=alg.parameterAsInt(parameters, A.TEMPLATE_SIZE, context),
        search_size=alg.parameterAsInt(parameters, A.SEARCH_SIZE, context),
        sar_scale=common.SAR_SCALE_OPTIONS[alg.parameterAsEnum(parameters, A.SAR_SCALE, context)],
        device=common.DEVICE_OPTIONS[alg.parameterAsEnum(parameters, A.DEVICE, context)],
        batch_size=alg.parameterAsInt(parameters, A.BATCH_SIZE, context),
        confidence_threshold=alg.parameterAsDouble(parameters, A.CONFIDENCE_THRESHOLD, context),
        keep_maps=keep_maps or maps is not None,
        match_pixel_size=alg.parameterAsDouble(parameters, A.MATCH_PIXEL_SIZE, context),
    )
    return CorrespondenceSettings(
        sar_path=sar_path,
        sar_band=alg.parameterAsInt(parameters, A.SAR_BAND, context),
        optical_path=optical_path,
        optical_band=optical_band,
        keypoints_map=keypoints,
        keypoint_ids=keypoint_ids,
        detect=detect_settings_from(alg, parameters, context, A.OPTICAL, optical_band),
        match=match,
        maps_folder=maps,
        masked=mask_given(parameters),
    )


def run_matching(
    s: CorrespondenceSettings,
    feedback: QgsProcessingFeedback,
    start: float,
    stop: float,
    allow_empty: bool = False,
) -> tuple[Any, Any, Any]:
    """Open rasters and model, get keypoints, match; progress from ``start`` to ``stop`` %.

    Args:
        s: the settings.
        feedback: progress, cancellation and log.
        start: progress (%) at the start.
        stop: progress (%) at the end.
        allow_empty: with no keypoints, warn and return an empty result instead of raising.

    Returns:
        (optical RasterInfo, SAR RasterInfo, MatchResult).
    """
    optical = common.open_raster_checked(s.optical_path, A.OPTICAL, s.optical_band)
    sar = common.open_raster_checked(s.sar_path, A.SAR, s.sar_band)
    canceled = common.canceled_callback(feedback)
    log: Callable[[str], None] = feedback.pushInfo
    mid = start + 0.1 * (stop - start)
    with common.processing_errors():
        # the model logs its name, version and onnxruntime provider once, as it opens
        matcher = reg.load_matcher(s.match, log=log)
        for note in (
            common.non_square_warning(optical, A.OPTICAL),
            common.non_square_warning(sar, A.SAR),
        ):
            if note:
                feedback.pushWarning(note)
        grid = reg.matching_grid(optical, sar, s.match.match_pixel_size)
        if grid.note:
            (feedback.pushWarning if grid.warning else feedback.pushInfo)(grid.note)
        check_overlap(optical, sar, s.match.search_size, grid.scale, s.match.match_pixel_size)
        xy_px, ids = _keypoints(s, optical, sar, grid.scale, feedback, canceled, start, mid)
        if len(xy_px) == 0:
            layer_points = -1 if s.keypoints_map is None else len(s.keypoints_map)
            why = no_keypoints_message(s.keypoints_map is not None, s.masked, layer_points)
            if not allow_empty:
                raise QgsProcessingException(why)
            feedback.pushWarning(f"{why}; the output layer is empty")
            return optical, sar, empty_result(s)
        result = reg.compute_matches(
            optical,
            s.optical_band,
            sar,
            s.sar_band,
            xy_px,
            matcher,
            s.match,
            common.progress_callback(feedback, mid, stop),
            canceled,
            grid,
            warn=feedback.pushWarning,
        )
    for rec in result.records:  # ids of the input keypoints, not of the ones left to match
        rec.id = int(ids[rec.id])
    if s.match.sar_scale == "auto":
        feedback.pushInfo(f"SAR values taken as {result.sar_scale} (SAR_SCALE auto)")
    skipped = {k: v for k, v in result.counts.items() if k != "ok"}
    if skipped:
        feedback.pushWarning(f"keypoints skipped: {skipped_text(skipped)}")
    return optical, sar, result


def _keypoints(
    s: CorrespondenceSettings, optical: Any, sar: Any, grid_scale: float,
    feedback: QgsProcessingFeedback, canceled: Callable[[], bool], start: float, stop: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(N, 2) optical pixel keypoints and their (N,) int ids: detected, or the layer's.

    Detected: where a search region of valid SAR data and a valid optical template lie
    around them (:func:`detection_on_sar`); the layer's: those on the optical raster and
    inside EXTENT and MASK. An id is the keypoint's index among all detected / all the
    layer's points, so the match layer's ``id`` still names the input point when others were
    left out.
    """
    if s.keypoints_map is None:
        with common.processing_errors():  # a search region of valid SAR around each keypoint
            detect = detection_on_sar(s.detect, optical, sar, s.sar_band, s.match.search_size,
                                      grid_scale, s.match.template_size)  # fmt: skip
            kps = reg.detect_keypoints_tiled(
                optical, detect, common.progress_callback(feedback, start, stop), canceled
            )
        feedback.pushInfo(
            f"{len(kps.xy_px)} keypoints detected on the optical raster, where a search region "
            "of valid SAR data and a valid optical template lie around them"
        )
        xy = np.asarray(kps.xy_px, np.float64).reshape(-1, 2)
        return xy, np.arange(len(xy))
    xy_map = s.keypoints_map
    xy_px = reg.map_to_pixel(optical.geotransform, xy_map)
    polygons = "MASK" if s.masked else "EXTENT"  # a reprojected EXTENT's outline, or MASK
    filters = [
        ("EXTENT", points_in_box(xy_map, s.detect.extent_map)),
        (polygons, common.points_in_polygons(xy_map, s.detect.mask_wkt)),
    ]
    kept, warnings = select_layer_keypoints(xy_px, optical.width, optical.height, filters)
    for text in warnings:
        feedback.pushWarning(text)
    ids = kept if s.keypoint_ids is None else s.keypoint_ids[kept]
    return xy_px[kept], ids
