"""Processing algorithm 'Register SAR to optical': match, RANSAC, fit, warp, GCPs, report.

The keypoint and matching steps are the same pipeline functions the two other algorithms run
(``registration`` / ``compute_correspondence.run_matching``), called directly rather than
through ``processing.run`` child algorithms: one progress bar, one cancellation check per
batch, and no intermediate layers. Nothing is written before the fit is accepted; every file
output is written under a temporary name, and all are renamed together once the last one (the
tie-point layer, which QGIS writes in place: an earlier one is kept aside until then) is
written, so a failing step leaves no partial file and an earlier result of the same names
intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal
from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
)

from sar_optical_matcher import gcp, rasters
from sar_optical_matcher import registration as reg
from sar_optical_matcher import report as rep
from sar_optical_matcher.core import files
from sar_optical_matcher.processing import common
from sar_optical_matcher.processing.compute_correspondence import (
    CorrespondenceSettings,
    correspondence_settings,
    declare_match_params,
    run_matching,
    skipped_text,
)
from sar_optical_matcher.processing.detect_keypoints import declare_detect_params
from sar_optical_matcher.processing.matching_plan import edge_far_range, edge_half_range
from sar_optical_matcher.rasters import output_driver

TIEPOINT_FIELDS = (
    ("id", int),
    ("opt_x_px", float),
    ("opt_y_px", float),
    ("sar_x_px", float),
    ("sar_y_px", float),
    ("dx_px", float),
    ("dy_px", float),
    ("confidence", float),
    ("accepted", bool),
    ("inlier", bool),
    ("res_x_px", float),
    ("res_y_px", float),
    ("residual_px", float),
    ("loo_residual_px", float),
)


@dataclass(frozen=True)
class RegisterSettings:
    """Plain values of the algorithm's parameters.

    Attributes:
        correspondence: rasters, keypoints and matching settings.
        transform: one of ``registration.TRANSFORM_KINDS``.
        residual_threshold_px: RANSAC inlier threshold, optical pixels.
        min_inliers: fewest inliers accepted (raised to the transform's minimum + 4).
        seed: RANSAC random seed.
        warp: GDAL warp settings.
        output_path: registered raster (format from its extension; GeoTIFF for .tif).
        gcp_path: ``.points`` file or ``None``.
        report_path: HTML report or ``None``.
    """

    correspondence: CorrespondenceSettings
    transform: str
    residual_threshold_px: float
    min_inliers: int
    seed: int
    warp: reg.WarpSettings
    output_path: str
    gcp_path: str | None
    report_path: str | None


class RegisterSarToOpticalAlgorithm(common.MatcherAlgorithm):
    """Register a SAR raster onto an optical raster's grid from learned correspondences."""

    RASTER_PARAMS = ("SAR", "OPTICAL")

    TRANSFORM = "TRANSFORM"
    RESIDUAL_THRESHOLD = "RESIDUAL_THRESHOLD"
    MIN_INLIERS = "MIN_INLIERS"
    SEED = "SEED"
    RESAMPLING = "RESAMPLING"
    PIXEL_SIZE = "PIXEL_SIZE"
    CREATION_OPTIONS = "CREATION_OPTIONS"
    NODATA = "NODATA"
    OUTPUT = "OUTPUT"
    OUTPUT_GCP = "OUTPUT_GCP"
    OUTPUT_TIEPOINTS = "OUTPUT_TIEPOINTS"
    OUTPUT_REPORT = "OUTPUT_REPORT"

    def name(self) -> str:  # noqa: D102
        return "registersartooptical"

    def displayName(self) -> str:  # noqa: D102
        return "Register SAR to optical"

    def shortHelpString(self) -> str:  # noqa: D102
        return common.help_html(
            "Detects keypoints on the optical raster, finds them in the SAR raster with the "
            "learned matcher, rejects outliers with RANSAC, fits the chosen transform and warps "
            "the SAR raster onto the optical grid with GDAL. Too few confident inliers is an "
            "error (no raster is written), never a silent bad warp.",
            [
                (self.TRANSFORM, "shift, affine, polynomial 1-3 or thin-plate spline"),
                (self.RESIDUAL_THRESHOLD, "RANSAC inlier threshold, optical pixels"),
                (self.MIN_INLIERS, "fewest inliers to accept the registration"),
                (self.OUTPUT, "registered SAR raster on the optical grid"),
                (self.OUTPUT_GCP, "QGIS Georeferencer .points file (tie points, inliers enabled)"),
                (self.OUTPUT_TIEPOINTS, "tie points with residuals and inlier flags"),
                (self.OUTPUT_REPORT, "HTML report: RMSE, inliers, residual plot, maps"),
            ],
        )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: D102
        declare_match_params(self)
        declare_detect_params(self, "OPTICAL")
        self._declare_fit_params()
        self._declare_outputs()

    def _declare_fit_params(self) -> None:
        common.add_param(
            self,
            QgsProcessingParameterEnum(
                self.TRANSFORM, "Transform", list(reg.TRANSFORM_KINDS), defaultValue=1
            ),
            "Model fitted to the inlier tie points (SAR pixels -> optical pixels). shift: a "
            "constant offset of the SAR's georeference, whatever the two rasters' pixel sizes, "
            "rotations and CRSs; the others also fit scale, rotation and shear (and bends). A "
            "fit predicted to be wrong somewhere between the tie points by more than the "
            "RESIDUAL_THRESHOLD (1.5x its predicted standard error: tie points on a line, along "
            "crossing roads, in a corner, too few for its terms) is refused; one predicted so "
            "along the raster's edges, where no tie point lies, is warned of.",
        )
        common.add_param(
            self,
            QgsProcessingParameterNumber(
                self.RESIDUAL_THRESHOLD,
                "RANSAC residual threshold (pixels)",
                QgsProcessingParameterNumber.Double,
                3.0,
                minValue=0.01,
            ),
            "Tie points farther than this from the fit (optical pixels) are outliers.",
        )
        common.add_param(
            self,
            QgsProcessingParameterNumber(
                self.MIN_INLIERS,
                "Minimum inliers",
                QgsProcessingParameterNumber.Integer,
                8,
                minValue=1,
                maxValue=common.MAX_INT_PARAM,
            ),
            "Registration is refused with fewer inliers (at least the transform's minimal "
            "sample + 4 are always required).",
        )
        common.add_param(
            self,
            QgsProcessingParameterNumber(
                self.SEED,
                "Random seed",
                QgsProcessingParameterNumber.Integer,
                0,
                minValue=0,
                maxValue=common.MAX_INT_PARAM,
            ),
            "Seed of the RANSAC generator (results are reproducible).",
            advanced=True,
        )
        common.add_param(
            self,
            QgsProcessingParameterEnum(
                self.RESAMPLING, "Resampling", list(reg.RESAMPLINGS), defaultValue=1
            ),
            "GDAL resampling method of the warp. Where the output is coarser than the SAR, "
            "lanczos is refused on a GDAL that misplaces its kernel there (GDAL before 3.10: "
            "up to half a SAR pixel off), and used unwidened when at most 10 % coarser.",
        )
        common.add_param(
            self,
            QgsProcessingParameterNumber(
                self.PIXEL_SIZE,
                "Output pixel size (0 = optical)",
                QgsProcessingParameterNumber.Double,
                0.0,
                minValue=0.0,
            ),
            "Pixel size of the output in optical map units; 0 keeps the optical pixel size.",
            advanced=True,
        )
        common.add_param(
            self,
            QgsProcessingParameterString(
                self.CREATION_OPTIONS,
                "Creation options of the output format (GDAL)",
                "",
                optional=True,
            ),
            "GDAL creation options of the output raster's format, KEY=VALUE separated by '|' "
            "(e.g. COMPRESS=LZW|TILED=YES for GeoTIFF). Empty: the format's defaults "
            "(DEFLATE-compressed tiles for GeoTIFF, BigTIFF where it may pass 4 GB; GDAL's own "
            "for the other formats). Lossless whatever is given, unless asked otherwise: PNG "
            "tiles for a Byte GeoPackage (GDAL's default is JPEG), REVERSIBLE=YES|QUALITY=100 "
            "for JPEG 2000; a TILE_FORMAT, QUALITY or REVERSIBLE given here wins (.jpg is "
            "always lossy). An option the format does not have, or a value it does not take, "
            "is an error.",
            advanced=True,
        )
        common.add_param(
            self,
            QgsProcessingParameterNumber(
                self.NODATA, "Output nodata", QgsProcessingParameterNumber.Double, optional=True
            ),
            "Nodata value of the output. Empty: the SAR's nodata value; for a SAR without "
            "one, a value no SAR pixel has: NaN for a float SAR (its lowest value in a "
            "GeoPackage), 0 for an integer SAR without zeros, else the type's maximum (255, "
            "65535, ...) or minimum; the log says which, and warns that those zeros stay data (set "
            "0 here where they are a no-data border). Valid SAR pixels equal to the output "
            "nodata become holes with nearest resampling (GDAL 3.6's other kernels write them "
            "one step off instead): the log warns with their count and says which. A "
            "GeoPackage records -32768 as an Int16 raster's nodata, so no other is taken there.",
            advanced=True,
        )

    def _declare_outputs(self) -> None:
        common.add_param(
            self,
            QgsProcessingParameterRasterDestination(self.OUTPUT, "Registered SAR"),
            "The SAR raster warped onto the optical grid.",
        )
        common.add_param(
            self,
            QgsProcessingParameterFileDestination(
                self.OUTPUT_GCP, "GCP file", "QGIS Georeferencer points (*.points)", optional=True
            ),
            "Tie points as a QGIS Georeferencer .points file (with #CRS), inliers enabled; "
            "the SAR side in the SAR's map coordinates, as the Georeferencer reads them. "
            "Whatever re-uses the file fits its own transform to the enabled points (the "
            "Georeferencer's or GDAL's polynomial 1 is an affine): for TRANSFORM shift, "
            "poly2, poly3 or tps that differs from the registered raster, which follows the "
            "chosen fit.",
        )
        common.add_param(
            self,
            QgsProcessingParameterFeatureSink(
                self.OUTPUT_TIEPOINTS, "Tie points", QgsProcessing.TypeVectorPoint, optional=True
            ),
            "Tie points (optical CRS) with residuals and inlier flags.",
        )
        common.add_param(
            self,
            QgsProcessingParameterFileDestination(
                self.OUTPUT_REPORT, "Report", "HTML files (*.html)", optional=True
            ),
            "Self-contained HTML report.",
        )
        self.addOutput(QgsProcessingOutputNumber("RMSE_PX", "RMSE of the inliers (pixels)"))
        self.addOutput(
            QgsProcessingOutputNumber(
                "RMSE_LOO_PX", "Leave-one-out RMSE of the inliers (pixels; the check for tps)"
            )
        )
        self.addOutput(QgsProcessingOutputNumber("N_INLIERS", "Number of inliers"))

    def settings(
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> RegisterSettings:
        """Turn the parameters into plain values (no side effects)."""
        nodata = common.optional_number(self, parameters, self.NODATA, context)
        pixel = self.parameterAsDouble(parameters, self.PIXEL_SIZE, context)
        options = self.parameterAsString(parameters, self.CREATION_OPTIONS, context) or ""
        resampling = reg.RESAMPLINGS[self.parameterAsEnum(parameters, self.RESAMPLING, context)]
        try:
            warp = reg.WarpSettings(
                resampling=resampling,
                pixel_size=pixel if pixel > 0 else None,
                creation_options=tuple(o.strip() for o in options.split("|") if o.strip()) or None,
                nodata=nodata,
            )
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from exc
        output_path = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        gcp_path = self.parameterAsFileOutput(parameters, self.OUTPUT_GCP, context) or None
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context) or None
        tiepoints = self.parameterAsOutputLayer(parameters, self.OUTPUT_TIEPOINTS, context)
        destinations = {
            self.OUTPUT: output_path,
            self.OUTPUT_GCP: gcp_path,
            self.OUTPUT_REPORT: report_path,
            self.OUTPUT_TIEPOINTS: tiepoints,
        }
        for name, path in destinations.items():  # said now, not after the matching and warp
            common.check_output_path(path, name)
        # the maps are for the report only (its 4 best inliers'); kept without one they cost
        # 65 KB a keypoint for nothing (650 MB at MAX_COUNT 10,000)
        correspondence = correspondence_settings(
            self, parameters, context, keep_maps=report_path is not None
        )
        inputs = {"SAR": correspondence.sar_path, "OPTICAL": correspondence.optical_path}
        common.check_distinct_files(destinations, inputs)
        with common.processing_errors():
            sar_info = rasters.open_raster(correspondence.sar_path)
        try:  # the SAR's band types, the nodata, the format: said before any work
            rasters.check_band_types(sar_info)
        except ValueError as exc:
            raise QgsProcessingException(f"SAR: {exc}") from exc
        g = sar_info.geotransform
        if gcp_path and (g[1] == 0 or g[5] == 0):  # it failed after the matching and warp
            raise QgsProcessingException(
                f"{self.OUTPUT_GCP}: a .points file cannot hold this SAR's pixels: its grid is "
                f"turned 90 degrees (geotransform {tuple(g)}), and QGIS's Georeferencer takes "
                "a point's column from x / gt[1] and its row from y / gt[5]. Leave "
                f"{self.OUTPUT_GCP} empty (the registered raster and the tie points are "
                "written), or warp the SAR north-up first (gdalwarp sar.tif sar_north_up.tif)"
            )
        sar_type = gdal.GetDataTypeByName(sar_info.gdal_types[0])  # one for all its bands
        if warp.nodata is not None:
            with common.processing_errors():
                reg.check_nodata_fits(warp.nodata, sar_type)
        optical = common.open_raster_checked(correspondence.optical_path, "OPTICAL")
        with common.processing_errors():  # a size in metres for a raster in degrees: 1 pixel
            out_gt = reg.output_grid(optical, warp.pixel_size)[0]
            scales = reg.georeferenced_scales(sar_info, optical, out_gt)
            if all(np.isfinite(scales)):  # a kernel this GDAL misplaces (GDAL 3.6's lanczos)
                reg.kernel_scales(warp.resampling, scales, Path(output_path).name)
        try:
            driver, name = output_driver(output_path), Path(output_path).name
            rasters.check_output(driver, sar_info.gdal_types[0], warp.creation_options, name,
                                 sar_info.band_count)  # fmt: skip
            rasters.check_output_grid(driver, out_gt, name)
        except ValueError as exc:
            raise QgsProcessingException(f"{self.OUTPUT}: {exc}") from exc
        if warp.nodata is not None:  # GPKG Int16: one nodata value only
            with common.processing_errors():
                reg.check_format_nodata(driver, sar_type, warp.nodata, name)
        return RegisterSettings(
            correspondence=correspondence,
            transform=reg.TRANSFORM_KINDS[
                self.parameterAsEnum(parameters, self.TRANSFORM, context)
            ],
            residual_threshold_px=self.parameterAsDouble(
                parameters, self.RESIDUAL_THRESHOLD, context
            ),
            min_inliers=self.parameterAsInt(parameters, self.MIN_INLIERS, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            warp=warp,
            output_path=output_path,
            gcp_path=gcp_path,
            report_path=report_path,
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
        self._refuse_infinite_pixels(s, feedback)
        optical, sar, result = run_matching(s.correspondence, feedback, 0, 70)
        if result.records and not result.counts.get("ok"):
            raise QgsProcessingException(
                f"Registration refused: none of the {len(result.records)} keypoints could be "
                f"matched ({skipped_text(result.counts)}). No output raster was written; check "
                "the rasters' nodata values, bands and overlap."
            )
        ties = reg.TiePoints.from_records(result.records)
        m = s.correspondence.match  # the edge of the map in optical pixels
        half_px = edge_half_range(m.search_size, m.template_size, result.grid_scale)
        # two CRSs: the grids' pixel mapping is no affine, so the fit runs in the SAR's CRS
        frame = reg.fit_frame(optical, sar)
        fit_ties = ties
        # a shift is an offset of the georeference: its own mapping, in the frame if there is one
        jac = rasters.pixel_jacobian(optical, sar) if frame is None else frame.linear[:, :2]
        if frame is not None:
            fit_ties = dataclasses.replace(ties, dst_px=frame.to_frame(ties.dst_px))
            feedback.pushInfo(
                f"the SAR and optical CRSs differ: their pixel grids map onto each other "
                f"through no affine (off it by up to {frame.departure_px:.2f} px over the "
                "overlap), so the transform is fitted in the SAR's CRS, at the optical's pixel "
                "scale, and the warp reprojects exactly"
            )
        with common.processing_errors():
            fit = reg.fit_tie_points(
                fit_ties,
                s.transform,
                s.residual_threshold_px,
                s.min_inliers,
                np.random.default_rng(s.seed),
                half_range=half_px,
                nominal_jacobian=jac if np.isfinite(jac).all() else None,
                far_range=edge_far_range(m.search_size, m.template_size, result.grid_scale),
            )
        n_in = int(fit.inliers.sum())
        feedback.pushInfo(
            f"{n_in} inliers of {fit.n_accepted} usable matches, RMSE "
            f"{fit.rmse_px:.3f} px, leave-one-out RMSE {fit.loo_rmse_px:.3f} px ({s.transform})"
        )
        # no tie point lies within the border, and spaced keypoints leave ~half their
        # spacing free along it: that band is not counted as extrapolated
        d = s.correspondence.detect
        border = d.border_px + d.min_distance_px / 2
        sizes = (sar.width, sar.height), (optical.width, optical.height)
        share = reg.extrapolated_share(fit, fit_ties, *sizes, border)
        fit.extra["extrapolated_share"] = share
        with common.processing_errors():  # refuses a fit set by ill-placed tie points' noise
            reg.check_predicted_error(fit, fit_ties, *sizes, s.residual_threshold_px, border)
        # judged where tie points can lie; the border band is warped too, by extrapolation
        band = reg.check_border_band(fit, fit_ties, *sizes, s.residual_threshold_px, border)
        feedback.pushInfo(predicted_error_text(fit))
        if band is not None:
            feedback.pushWarning(band)
        if s.transform in reg.BENDING_KINDS and share > reg.MAX_EXTRAPOLATED_SHARE:
            feedback.pushWarning(extrapolation_warning(fit, share))
        if s.transform == "tps":
            feedback.pushWarning(
                "a thin-plate spline passes through every inlier, so its RMSE and residuals "
                f"are 0 by construction; judge it by the leave-one-out RMSE "
                f"({fit.loo_rmse_px:.3f} px: each inlier against the fit made without it)"
            )
        outputs: dict[str, Any] = {self.OUTPUT: s.output_path}
        # every file is written under a temporary name and renamed only once all outputs,
        # the tie-point layer included, are written: a failure leaves earlier results intact.
        # QGIS writes the tie-point layer in place: an earlier one is kept aside until the
        # renames are done (the stage exits first), and put back if anything failed
        with common.processing_errors(), contextlib.ExitStack() as in_place:
            with files.staged_outputs() as stage:
                reg.warp_sar(
                    sar,
                    optical,
                    fit,
                    stage.path(s.output_path),
                    s.warp,
                    common.canceled_callback(feedback),
                    common.progress_callback(feedback, 70, 95),
                    final_name=Path(s.output_path).name,
                    log=feedback.pushInfo,
                    warn=feedback.pushWarning,
                    frame=frame,
                )
                if s.gcp_path:
                    common.raise_if_canceled(feedback)
                    write_gcp_file(stage.path(s.gcp_path), ties, fit, optical, sar)
                    outputs[self.OUTPUT_GCP] = s.gcp_path
                common.raise_if_canceled(feedback)
                if s.report_path:
                    data = report_data(s, ties, fit, result, optical, frame)
                    rep.write_report(stage.path(s.report_path), data)
                    outputs[self.OUTPUT_REPORT] = s.report_path
                common.raise_if_canceled(feedback)  # the tie-point layer is the last output
                layer = common.keep_earlier_layer(self, parameters, context, self.OUTPUT_TIEPOINTS)
                in_place.enter_context(layer)
                dest = self._write_tiepoints(parameters, context, ties, fit, result, optical)
                if dest is not None:
                    outputs[self.OUTPUT_TIEPOINTS] = dest
        feedback.setProgress(100)
        outputs.update({"RMSE_PX": fit.rmse_px, "RMSE_LOO_PX": fit.loo_rmse_px, "N_INLIERS": n_in})
        return outputs

    def _refuse_infinite_pixels(self, s: RegisterSettings, feedback: Any) -> None:
        """A ringing RESAMPLING over infinite SAR pixels, refused before the matching.

        Where the refusal is sure (``reg.check_infinite_pixels_up_front``); the pixels near
        the optical's edge are counted by ``warp_sar`` once the fit is known.
        """
        if s.warp.resampling not in reg.RINGING_KERNELS:
            return
        c = s.correspondence
        with common.processing_errors():
            ds, sar = rasters.open_dataset(c.sar_path)
            optical = rasters.open_raster(c.optical_path)
            grid = reg.matching_grid(optical, sar, c.match.match_pixel_size)
            far = edge_far_range(c.match.search_size, c.match.template_size, grid.scale)
            reg.check_infinite_pixels_up_front(
                ds, sar, optical, s.warp.resampling, Path(s.output_path).name, far,
                common.canceled_callback(feedback),
            )  # fmt: skip

    def _write_tiepoints(self, parameters, context, ties, fit, result, optical) -> Any:
        res = fit.residual_xy_px
        loo = fit.loo_residual_xy_px if fit.loo_residual_xy_px is not None else res * np.nan
        rows = [
            (
                r.id,
                r.opt_x_px,
                r.opt_y_px,
                r.sar_x_px,
                r.sar_y_px,
                r.dx_px,
                r.dy_px,
                r.confidence,
                bool(ties.accepted[i]),
                bool(fit.inliers[i]),
                res[i, 0],
                res[i, 1],
                float(np.hypot(res[i, 0], res[i, 1])),
                float(np.hypot(loo[i, 0], loo[i, 1])),
            )
            for i, r in enumerate(result.records)
        ]
        xy = reg.pixel_to_map(optical.geotransform, ties.dst_px)
        return common.write_points_layer(
            self, parameters, context, self.OUTPUT_TIEPOINTS, TIEPOINT_FIELDS, xy, rows
        )


def extrapolation_warning(fit: reg.FitResult, share: float) -> str:
    """The log's warning that a bending fit is extrapolated over ``share`` of the overlap."""
    return (
        f"the {int(fit.inliers.sum())} inlier tie points cover only {100 * (1 - share):.0f} % "
        f"of the overlap: the '{fit.kind}' transform is extrapolated over the other "
        f"{100 * share:.0f} %, where it bends unchecked by any tie point (residuals and RMSE say "
        "nothing there). Use TRANSFORM affine, or spread the keypoints over the overlap: a "
        "higher SPREAD (1: every part of the scene gets its share before the strongest "
        "corners), a higher MAX_COUNT, or a KEYPOINTS layer"
    )


def predicted_error_text(fit: reg.FitResult) -> str:
    """The log's line on how far the fit may be wrong between and beyond the tie points."""
    inner = fit.extra.get("predicted_error_px", float("nan"))
    band = fit.extra.get("predicted_error_band_px", float("nan"))
    if not np.isfinite(inner):
        return (
            f"predicted error over the overlap: not estimated for a '{fit.kind}' fit (judge it "
            "by the leave-one-out RMSE)"
        )
    edge = f"{band:.3f} px in the border band" if np.isfinite(band) else "no border band"
    return (
        f"predicted error over the overlap: up to {inner:.3f} px inside the keypoints' border, "
        f"{edge} (standard error of the '{fit.kind}' fit, "
        f"propagated from its {int(fit.inliers.sum())} inliers' residuals; RMSE at the tie "
        f"points {fit.rmse_px:.3f} px)"
    )


def write_gcp_file(
    path: str | Path, ties: reg.TiePoints, fit: reg.FitResult, optical: Any, sar: Any
) -> Path:
    """Accepted tie points as a Georeferencer ``.points`` file; inliers enabled."""
    ok = ties.accepted
    table = gcp.make_table(
        map_xy=reg.pixel_to_map(optical.geotransform, ties.dst_px[ok]),
        source_xy=gcp.source_from_pixels(ties.src_px[ok], sar.geotransform),
        crs_wkt=optical.crs_wkt,
        enabled=fit.inliers[ok],
        residual_xy=fit.residual_xy_px[ok],
    )
    return gcp.write_points(path, table)


def report_data(
    s: RegisterSettings,
    ties: reg.TiePoints,
    fit: reg.FitResult,
    result: Any,
    optical: Any,
    frame: reg.FitFrame | None = None,
) -> rep.ReportData:
    """What the HTML report shows."""
    summary = {
        "SAR raster": s.correspondence.sar_path,
        "optical raster": s.correspondence.optical_path,
        "model": s.correspondence.match.model_path or "shipped default",
        "transform": fit.kind,
        "keypoints": len(ties.accepted),
        "accepted matches": int(ties.accepted.sum()),
        "usable matches (accepted, peak inside the map)": fit.n_accepted,
        "RANSAC inliers": int(fit.inliers.sum()),
        "residual threshold (px)": s.residual_threshold_px,
        "RMSE (optical px)": fit.rmse_px,
        "RMSE (map units)": map_unit_rmse(fit, optical.geotransform),
        "leave-one-out RMSE (optical px)": fit.loo_rmse_px,
        "overlap outside the inliers' hull (extrapolated)": fit.extra.get(
            "extrapolated_share", float("nan")
        ),
        "predicted error inside the keypoints' border, max standard error (optical px)": (
            fit.extra.get("predicted_error_px", float("nan"))
        ),
        "predicted error in the border band, max standard error (optical px)": (
            fit.extra.get("predicted_error_band_px", float("nan"))
        ),
        "RANSAC seed": s.seed,
    }
    if frame is not None:
        summary["fitted in"] = (
            "the SAR's CRS at the optical's pixel scale (the CRSs differ; the grids' pixel "
            f"mapping departs from an affine by up to {frame.departure_px:.3f} px)"
        )
    if fit.kind in ("shift", "affine", "poly1"):
        to = "optical px" if frame is None else "frame px"
        summary[f"SAR px -> {to} [A | t]"] = np.array2string(
            fit.transform.affine_matrix(), precision=4
        )
    conf = {int(r.id): float(r.confidence) for r in result.records}
    inlier_ids = set(int(i) for i in ties.ids[fit.inliers])
    maps = sorted(
        ((i, m) for i, m in reg.iter_maps(result.maps, result.records) if i in inlier_ids),
        key=lambda p: -conf.get(p[0], 0.0),
    )[:4]
    tp = np.column_stack([ties.dst_px, fit.residual_xy_px])
    keep = np.isfinite(tp).all(axis=1)
    return rep.ReportData(
        title="SAR to optical registration",
        summary=summary,
        tie_points=tp[keep],
        inliers=fit.inliers[keep],
        maps=maps,
        ids=[int(i) for i in ties.ids[keep]],  # the layer's and the map captions' ids
    )


def map_unit_rmse(fit: reg.FitResult, gt: Any) -> float:
    """The inliers' RMSE in optical map units.

    Each pixel residual goes through the geotransform's 2 x 2 matrix, so rectangular and
    rotated pixels count right (not RMSE x pixel width).
    """
    jac = np.array([[gt[1], gt[2]], [gt[4], gt[5]]], np.float64)
    res = np.asarray(fit.residual_xy_px, np.float64)[np.asarray(fit.inliers, bool)]
    return reg.rms_length(res @ jac.T)
