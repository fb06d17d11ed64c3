"""Helpers shared by the algorithms: parameter declaration, raster inputs, errors, sinks."""

from __future__ import annotations

import contextlib
import math
import os
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsFeature,
    QgsFeatureRequest,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPoint,
    QgsPointXY,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSource,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsProcessingParameterBand,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterNumber,
    QgsProcessingUtils,
    QgsProperty,
    QgsProviderRegistry,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from sar_optical_matcher.core import files
from sar_optical_matcher.core.files import check_destination

GROUP = "SAR-optical matching"
GROUP_ID = "sarmatching"
SAR_SCALE_OPTIONS = ("auto", "linear", "db")
SAR_SCALE_LABELS = [
    "auto (uint8 / negative values: dB, else linear)",
    "linear amplitude/intensity",
    "dB",
]
DEVICE_OPTIONS = ("auto", "cpu", "cuda")
#: Upper bounds of integer parameters: beyond a 32-bit int QGIS wrapped 2147483648 to 0.
MAX_INT_PARAM = 2**31 - 1
MAX_PATCH_PX = 4096

FIELD_TYPES = {int: QVariant.Int, float: QVariant.Double, str: QVariant.String, bool: QVariant.Bool}


def add_param(
    alg: QgsProcessingAlgorithm,
    param: QgsProcessingParameterDefinition,
    help_text: str,
    advanced: bool = False,
) -> QgsProcessingParameterDefinition:
    """Declare ``param`` on ``alg`` with its help string, flagged advanced if asked."""
    param.setHelp(help_text)
    if advanced:
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    alg.addParameter(param)
    return param


def help_html(intro: str, params: Sequence[tuple[str, str]]) -> str:
    """A short help string: ``intro`` and one line per parameter."""
    lines = "".join(f"<li><b>{name}</b>: {text}</li>" for name, text in params)
    return f"<p>{intro}</p><ul>{lines}</ul>"


def raster_path(
    alg: QgsProcessingAlgorithm, parameters: dict, name: str, context: QgsProcessingContext
) -> str:
    """File path of the raster parameter ``name``; explains what is wrong when it is not usable.

    The file is opened (read only) and refused as :func:`open_raster_checked` refuses it.
    """
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None or not layer.isValid():
        raise QgsProcessingException(
            f"{name}: {parameters.get(name)!r} is not a readable raster; choose a GDAL raster "
            "file (GeoTIFF, JP2, VRT, ...)"
        )
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"{name}: layer {layer.name()!r} comes from the {layer.providerType()!r} provider; "
            "only GDAL rasters are supported: save it as a GeoTIFF first"
        )
    uri = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    if uri.get("openOptions"):
        # "<path>|option:KEY=VALUE": QGIS's form, no GDAL dataset name ("does not exist")
        raise QgsProcessingException(
            f"{name}: layer {layer.name()!r} is opened with the GDAL open option(s) "
            f"{', '.join(uri['openOptions'])}, which this plugin's own reads of "
            f"{uri.get('path') or 'the file'} cannot apply; add the file again without open "
            "options, or save the layer as a GeoTIFF (Export > Save As) and choose that"
        )
    # the file itself must be usable (georeference, CRS) before EXTENT, MASK and KEYPOINTS
    # are read in the layer's CRS: a layer without one made a good EXTENT "not overlap"
    info = open_raster_checked(layer.source(), name)
    check_layer_crs(layer, info, name)
    return layer.source()


def check_layer_crs(layer: Any, info: Any, name: str, tolerance_px: float = 0.1) -> None:
    """Raise unless the CRS of raster ``layer`` places its pixels where its file's CRS does.

    The rasters are read from their files, with the files' CRSs, while KEYPOINTS, EXTENT,
    MASK and the output layers take the layer's: a CRS set in Layer Properties (EPSG:32632
    over an EPSG:32633 file) put Detect keypoints' points 530 km from where they were. The
    raster's corners and centre are transformed from the file's CRS to the layer's: the same
    CRS written otherwise (ESRI WKT, a PROJ string QGIS names IGNF:ETRS89LAEA, a compound
    CRS's horizontal part) moves them by less than ``tolerance_px`` pixels and passes.
    """
    from sar_optical_matcher import rasters

    w, h = info.width, info.height
    px = np.array([[0, 0], [w, 0], [0, h], [w, h], [w / 2, h / 2]], np.float64)
    layer_wkt = layer.crs().toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL)
    try:
        moved = rasters.map_to_pixel(info, rasters.transform_points(
            rasters.pixel_to_map(info, px), info.crs_wkt, layer_wkt))  # fmt: skip
    except ValueError:  # a layer CRS GDAL cannot read: nothing to compare
        return
    if np.all(np.abs(moved - px) < tolerance_px):  # NaN (no transform) is a difference
        return
    file_crs = QgsCoordinateReferenceSystem.fromWkt(info.crs_wkt)
    raise QgsProcessingException(
        f"{name}: layer {layer.name()!r} has the CRS {layer.crs().userFriendlyIdentifier()} "
        f"set in QGIS, but its file {Path(info.path).name} is in "
        f"{file_crs.userFriendlyIdentifier()}: the plugin reads the file, with its own CRS, so "
        "the results would not be where the layer's CRS says. Set the layer's CRS back to the "
        "file's, or, if the layer's is the right one, "
        f"{rasters.ASSIGN_CRS_HINT.replace('assign one to', 'assign it to', 1)}"
    )


def check_raster_files(parameters: dict, names: Sequence[str]) -> tuple[bool, str]:
    """``checkParameterValues`` helper: raster parameters given as file paths must open in GDAL.

    QGIS's own check reports an unreadable file as "not found"; this names the real problem
    (not a raster, corrupt, no georeference or CRS) and the fix.

    Returns:
        (ok, message).
    """
    from sar_optical_matcher import rasters

    for name in names:
        value = parameters.get(name)
        if isinstance(value, str) and value and os.path.isfile(value):
            try:
                rasters.open_raster(value)
            except ValueError as exc:
                return False, f"{name}: {exc}"
    return True, ""


def virtual_path_hint(parameters: dict, names: Sequence[str], message: str) -> str:
    """What to do where QGIS's ``message`` refuses a GDAL virtual path given as text, else "".

    QGIS 3.22's Processing does not load ``/vsizip/...`` (or any ``/vsi`` path) given as text
    and says "... not found", though GDAL opens it; as a project layer it is taken.
    """
    for name in names:
        value = parameters.get(name)
        if isinstance(value, str) and value.startswith("/vsi") and value in message:
            return (
                f". {name}: this QGIS does not take a GDAL virtual path ({value.split('/')[1]}) "
                "given as text; add it to the project as a raster layer (Layer > Add Layer > "
                "Add Raster Layer, or iface.addRasterLayer) and choose that layer, or extract "
                "the file first"
            )
    return ""


def open_raster_checked(path: str, name: str, band: int | None = None) -> Any:
    """``rasters.open_raster`` with its ValueError turned into a QgsProcessingException."""
    from sar_optical_matcher import rasters

    try:
        info = rasters.open_raster(path)
    except (ValueError, RuntimeError, OSError) as exc:
        raise QgsProcessingException(f"{name}: {exc}") from exc
    if band is not None:
        try:
            info.check_band(band, role=name if name in ("OPTICAL", "INPUT") else "SAR")
        except ValueError as exc:
            raise QgsProcessingException(f"{name}: {exc}") from exc
        palette = palette_band_error(path, band)
        if palette:
            raise QgsProcessingException(f"{name}: {palette}")
    return info


def palette_band_error(path: str, band: int) -> str | None:
    """Why a paletted band cannot be matched (its values are colour-table indices), or None.

    Index order need not follow brightness: corners were found where the index jumps and the
    shown grey changes by one level (10 of 16 keypoints off the image's corners).
    """
    from osgeo import gdal

    from sar_optical_matcher import rasters

    ds, _ = rasters.gdal_try(lambda: gdal.Open(str(path)))
    if ds is None or not 1 <= band <= ds.RasterCount:
        return None
    if ds.GetRasterBand(band).GetColorInterpretation() != gdal.GCI_PaletteIndex:
        return None
    return (
        f"band {band} of {Path(path).name} holds palette indices, not intensities (its colour "
        "table gives each index its colour, in no order of brightness); expand it first: "
        f"gdal_translate -expand gray {Path(path).name} expanded.tif (or -expand rgb)"
    )


def progress_callback(
    feedback: QgsProcessingFeedback | None, start: float, stop: float
) -> Callable[[float], None]:
    """Map a fraction in [0, 1] of one step onto the percentage range [start, stop]."""

    def report(fraction: float) -> None:
        if feedback is not None:
            f = min(1.0, max(0.0, float(fraction)))
            feedback.setProgress(start + (stop - start) * f)

    return report


def canceled_callback(feedback: QgsProcessingFeedback | None) -> Callable[[], bool]:
    """``feedback.isCanceled`` as a plain callable (always False without feedback)."""
    return (lambda: False) if feedback is None else feedback.isCanceled


CANCELED_TEXT = "Canceled by the user; partial outputs were removed."


def raise_if_canceled(feedback: QgsProcessingFeedback | None) -> None:
    """Raise QgsProcessingException when the user canceled (call before writing outputs)."""
    if feedback is not None and feedback.isCanceled():
        raise QgsProcessingException(CANCELED_TEXT)


@contextlib.contextmanager
def processing_errors() -> Iterator[None]:
    """Turn the pipeline's exceptions into ``QgsProcessingException`` with the same message."""
    try:
        yield
    except QgsProcessingException:
        raise
    except (ValueError, RuntimeError, OSError) as exc:
        name = type(exc).__name__
        text = str(exc) or name
        if name == "Canceled":
            text = CANCELED_TEXT
        raise QgsProcessingException(text) from exc


# destinations that are not plain files (QGIS memory layers, OGR/database URIs, temporary outputs)
NOT_A_FILE_PREFIXES = (
    "memory:",
    "ogr:",
    "postgis:",
    "postgres:",
    "spatialite:",
    "TEMPORARY_OUTPUT",
)


def check_output_path(path: str | None, name: str, folder: bool = False) -> None:
    """Say before any work when a file output cannot be written where it is asked for.

    ``core.files.check_destination`` for file destinations (not memory layers or database
    URIs); ``folder``: ``path`` is itself a folder of outputs.

    Raises:
        QgsProcessingException: naming the parameter, the path and the fix.
    """
    if not path or str(path).startswith(NOT_A_FILE_PREFIXES):
        return
    try:
        check_destination(path, folder=folder)
    except ValueError as exc:
        raise QgsProcessingException(f"{name}: {exc}") from exc


def _no_value(raw: Any) -> bool:
    """Whether a raw parameter value means "not given": None, "", or a NULL QVariant."""
    return raw is None or raw == "" or (isinstance(raw, QVariant) and raw.isNull())


def number_value_problem(definition: Any, raw: Any) -> str | None:
    """Why the raw value of a number or band parameter is no number, or None when it is.

    QGIS takes any text for an *optional* number or band parameter and its
    ``parameterAsDouble`` / ``parameterAsInt`` then return the default: ``NODATA=abc``
    wrote nodata 0, ``BAND=abc`` read band 1, with no word. Not checked here: no value, an
    expression (``QgsProperty``, evaluated when the algorithm runs) and a list (a band
    parameter that takes several).
    """
    is_band = isinstance(definition, QgsProcessingParameterBand)
    if not (is_band or isinstance(definition, QgsProcessingParameterNumber)):
        return None
    if _no_value(raw) or isinstance(raw, (QgsProperty, list, tuple)):
        return None
    whole = is_band or definition.dataType() == QgsProcessingParameterNumber.Integer
    try:
        value = float(raw)
    except (TypeError, ValueError):
        kind = "a band number" if is_band else ("a whole number" if whole else "a number")
        return f"{definition.name()}: {raw!r} is not {kind}; give one, or leave it empty"
    if whole and math.isfinite(value) and value != int(value):
        return f"{definition.name()}: {raw!r} is not a whole number; give one, or leave it empty"
    return None


def optional_number(
    alg: QgsProcessingAlgorithm,
    parameters: dict[str, Any],
    name: str,
    context: QgsProcessingContext,
) -> float | None:
    """An optional number parameter as a float, or None where it was not given.

    An expression is evaluated first, and one that gives NULL counts as not given (in the
    modeler or batch mode ``parameterAsDouble`` turned it into 0). Text that is no number
    is refused (``checkParameterValues`` refuses it first; this is for direct callers).

    Raises:
        QgsProcessingException: naming the parameter and the value.
    """
    raw = parameters.get(name)
    if isinstance(raw, QgsProperty):
        raw, _ok = raw.value(context.expressionContext(), None)
    if _no_value(raw):
        return None
    try:
        return float(raw)  # type: ignore[arg-type]  # text, a number or a QVariant's value
    except (TypeError, ValueError):
        raise QgsProcessingException(
            f"{name}: {raw!r} is not a number; give one, or leave it empty"
        ) from None


def check_distinct_files(destinations: dict[str, Any], inputs: dict[str, str]) -> None:
    """Raise unless each file output has a file of its own, none of them an input raster's.

    One output named like another was overwritten by it (a report over the registered raster,
    which OUTPUT then named), and OUTPUT named like the SAR replaced the input raster. An
    input is each file GDAL reads for it (``rasters.dataset_files``): a GeoPackage raster
    layer's source is ``GPKG:<file>:<table>``, and a point layer written to ``<file>`` (QGIS
    writes a GeoPackage output anew) deleted the raster in it.

    Args:
        destinations: output parameter name -> destination (memory and URIs are skipped).
        inputs: input parameter name -> GDAL dataset name of the raster.
    """
    from sar_optical_matcher import rasters

    seen: dict[str, str] = {}
    for k, name in inputs.items():
        for path in rasters.dataset_files(name):
            seen.setdefault(os.path.normcase(os.path.realpath(path)), f"the {k} input raster")
    for name, path in destinations.items():
        if not path or str(path).startswith(NOT_A_FILE_PREFIXES):
            continue
        key = os.path.normcase(os.path.realpath(str(path)))
        if key in seen:
            raise QgsProcessingException(
                f"{name}: {Path(str(path)).name} is also {seen[key]}, which writing it would "
                "replace; give each output a file name of its own, other than the inputs'"
            )
        seen[key] = f"{name}'s file"


def make_output_folder(destination: str | None) -> None:
    """Create the missing folder of a file destination (QGIS's vector writer does not)."""
    if destination and not str(destination).startswith(NOT_A_FILE_PREFIXES):
        Path(destination).parent.mkdir(parents=True, exist_ok=True)


def point_sink(
    alg: QgsProcessingAlgorithm,
    parameters: dict,
    context: QgsProcessingContext,
    key: str,
    spec: Sequence[tuple[str, type]],
    raster: str = "OPTICAL",
) -> tuple[Any, Any, QgsFields]:
    """The point-layer output ``key`` in the CRS of raster parameter ``raster``.

    Returns ``(sink, dest, fields)``; the sink is None when an optional output is not asked
    for. A file destination's missing folder is created first, as the other outputs do.
    """
    fields = make_fields(spec)
    destination = alg.parameterAsOutputLayer(parameters, key, context)
    make_output_folder(destination)
    crs = alg.parameterAsRasterLayer(parameters, raster, context).crs()
    sink, dest = alg.parameterAsSink(parameters, key, context, fields, QgsWkbTypes.Point, crs,
                                     layerOptions=layer_options(destination))  # fmt: skip
    return sink, dest, fields


def layer_options(destination: str | None) -> list[str]:
    """OGR layer options for a point output: its features kept in the order written.

    A FlatGeobuf file with its spatial index (OGR's default) stores the features sorted along
    a Hilbert curve: Detect keypoints' ``id`` N was then not the layer's N-th point, which is
    the point Compute correspondence's ``id`` N names (71 of 72 matches named another
    keypoint than the one they matched). Other formats keep the order anyway.
    """
    path = str(destination or "").split("|")[0].lower()
    if path.endswith(".fgb"):
        return ["SPATIAL_INDEX=NO"]
    if path.endswith(".csv"):  # OGR's CSV writes no geometry unless asked: the points were lost
        return ["GEOMETRY=AS_XY"]
    return []


def write_points_layer(
    alg: QgsProcessingAlgorithm,
    parameters: dict,
    context: QgsProcessingContext,
    key: str,
    spec: Sequence[tuple[str, type]],
    xy_map: np.ndarray,
    rows: Sequence[Sequence[Any]],
    raster: str = "OPTICAL",
) -> Any:
    """Create the point-layer output ``key`` (:func:`point_sink`), write ``rows``, close it.

    Returns its destination, or None for an optional output not asked for. The layer is
    closed when this returns or raises: a failed write's traceback keeps the frames that
    held the sink, whose file QGIS writes in place, and an earlier layer can only be put
    back (:func:`keep_earlier_layer`) once nothing writes there any more.
    """
    sink, dest, fields = point_sink(alg, parameters, context, key, spec, raster)
    if sink is None:
        return None
    try:
        write_point_features(sink, fields, xy_map, rows)
    except BaseException as exc:
        traceback.clear_frames(exc.__traceback__)  # the frames below this one hold the sink
        raise
    finally:
        del sink
    return dest


def keep_earlier_layer(
    alg: QgsProcessingAlgorithm, parameters: dict, context: QgsProcessingContext, key: str
) -> contextlib.AbstractContextManager[None]:
    """An earlier file at vector output ``key``'s destination kept aside while QGIS writes it.

    QGIS writes a vector output in place: a run failing midway (a full disk) or after it
    (a staged file that cannot be renamed) left a half-written layer, or a new layer beside
    the earlier run's other outputs. ``core.files.kept_until_replaced`` puts the earlier one
    back then; no-op for a temporary output, a memory layer or a database URI.
    """
    destination = alg.parameterAsOutputLayer(parameters, key, context)
    if not destination or str(destination).startswith(NOT_A_FILE_PREFIXES):
        return contextlib.nullcontext()
    return files.kept_until_replaced(destination)


#: Width of text fields (the longest value, a status such as "constant_optical", has 16
#: characters). Without one a shapefile's field was 255 wide and GDAL logged "Warning 1: Field
#: status of width 255 truncated to 254." on every run.
TEXT_FIELD_WIDTH = 32


#: Width and decimals of number fields where a format stores them (a shapefile): its default
#: Real 24.15 left 8 digits before the point, and a uint16 optical's Harris responses (1e10 to
#: 1e15) logged "Value ... of field response ... not successfully written" once a feature.
REAL_FIELD_WIDTH, REAL_FIELD_PRECISION = 24, 6


def make_fields(spec: Sequence[tuple[str, type]]) -> QgsFields:
    """QgsFields from (name, python type) pairs.

    Text fields :data:`TEXT_FIELD_WIDTH` wide, numbers :data:`REAL_FIELD_WIDTH` wide with
    :data:`REAL_FIELD_PRECISION` decimals.
    """
    fields = QgsFields()
    for name, kind in spec:
        if kind is float:
            field = QgsField(name, FIELD_TYPES[kind], len=REAL_FIELD_WIDTH,
                             prec=REAL_FIELD_PRECISION)  # fmt: skip
        else:
            field = QgsField(name, FIELD_TYPES[kind], len=TEXT_FIELD_WIDTH if kind is str else 0)
        fields.append(field)
    return fields


def points_in_crs(
    source: Any, crs: QgsCoordinateReferenceSystem, context: QgsProcessingContext
) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates in ``crs`` of a point feature source (every part), in feature-id order.

    Feature-id order, not the provider's: a selection is read in no particular order (a
    memory layer's selection 2, 3, 5, 8, 9 came as 5, 9, 8, 3, 2).

    Returns:
        ((N, 2) float64 coordinates, (N,) int64 feature id of each point).

    Raises:
        QgsProcessingException: the layer is not a point layer, or some points cannot be
            transformed to ``crs`` (usually a layer whose CRS is set wrongly).
    """
    xform = QgsCoordinateTransform(source.sourceCrs(), crs, context.transformContext())
    out, fids, bad = [], [], []
    for feature, parts in _point_features(source):
        for p in parts:
            try:
                q = xform.transform(p)
            except QgsCsException:
                q = None
            if q is None or not (math.isfinite(q.x()) and math.isfinite(q.y())):
                bad.append((feature.id(), p.x(), p.y()))
            else:
                out.append((q.x(), q.y()))
                fids.append(feature.id())
    if bad:
        fid, x, y = bad[0]
        raise QgsProcessingException(
            f"KEYPOINTS: {len(bad)} point(s) cannot be transformed from "
            f"{source.sourceCrs().authid() or 'the layer CRS'} to the optical raster's CRS "
            f"{crs.authid() or crs.description()} (first: feature {fid} at {x:g}, {y:g}); check "
            "that the layer's CRS is the one its coordinates are in, or remove those points"
        )
    return np.asarray(out, np.float64).reshape(-1, 2), np.asarray(fids, np.int64)


def _point_features(source: Any, no_attributes: bool = False) -> Iterator[tuple[Any, list]]:
    """(feature, its points) of the non-empty features of ``source``, in feature-id order."""
    request = QgsFeatureRequest().addOrderBy("$id")
    if no_attributes:
        request.setNoAttributes()
    for feature in source.getFeatures(request):
        geom = feature.geometry()
        if geom is None or geom.isEmpty():
            continue
        if QgsWkbTypes.geometryType(geom.wkbType()) != QgsWkbTypes.PointGeometry:
            raise QgsProcessingException(
                f"KEYPOINTS must be a point layer: feature {feature.id()} is a "
                f"{QgsWkbTypes.displayString(geom.wkbType())}; choose a point layer, or keep "
                "this one's points (Processing 'Extract by expression' with "
                "geometry_type($geometry) = 'Point'; 'Centroids' for lines or polygons)"
            )
        yield feature, geom.asMultiPoint() if geom.isMultipart() else [geom.asPoint()]


def point_indices_in_layer(
    parameters: dict, name: str, context: QgsProcessingContext, fids: np.ndarray
) -> np.ndarray:
    """(N,) index of each point (feature ``fids``, parts in order) among all the layer's points.

    With 'Selected features only' or a feature limit, the source is a part of a layer: each
    point gets its index in the whole layer (feature-id order, every part of a multipoint
    counted), so that a match names the same point as when the whole layer is matched (and
    as Detect keypoints' ``id``). Otherwise the source is the layer: 0, 1, ...
    """
    value = parameters.get(name)
    if not isinstance(value, QgsProcessingFeatureSourceDefinition) or (
        not value.selectedFeaturesOnly and value.featureLimit == -1
    ):
        return np.arange(len(fids))
    layer = QgsProcessingUtils.mapLayerFromString(
        value.source.valueAsString(context.expressionContext())[0], context
    )
    if layer is None:
        return np.arange(len(fids))
    first: dict[int, int] = {}
    count = 0
    for feature, parts in _point_features(layer, no_attributes=True):
        first[feature.id()] = count
        count += len(parts)
    out = np.empty(len(fids), np.int64)
    part = 0
    for i, fid in enumerate(fids):
        part = part + 1 if i and fids[i - 1] == fid else 0  # the parts of a feature follow
        out[i] = first[int(fid)] + part
    return out


def polygon_parts(geom: QgsGeometry) -> list[QgsGeometry]:
    """The non-empty polygon parts of ``geom`` (lines and points of a collection dropped)."""
    if geom.isNull():
        return []
    return [
        g
        for g in geom.asGeometryCollection()
        if g.type() == QgsWkbTypes.PolygonGeometry and not g.isEmpty()
    ]


def polygons_wkt(
    source: Any, crs: QgsCoordinateReferenceSystem, context: QgsProcessingContext
) -> tuple[str, ...]:
    """WKT of every polygon of ``source``, transformed to ``crs``; invalid ones repaired.

    Lines and points (a line layer given as MASK, a collection's parts) are no mask.

    Features are read without QGIS's invalid-geometry check: raised from inside the Python
    loop it corrupted the interpreter (a self-intersecting mask then broke the next Python
    statement). Invalid polygons are repaired with ``makeValid`` here instead.

    Raises:
        QgsProcessingException: a polygon cannot be repaired or transformed.
    """
    xform = QgsCoordinateTransform(source.sourceCrs(), crs, context.transformContext())
    out = []
    flags = QgsProcessingFeatureSource.FlagSkipGeometryValidityChecks
    for feature in source.getFeatures(QgsFeatureRequest(), flags):
        geom = QgsGeometry(feature.geometry())
        if geom.isEmpty():
            continue
        if geom.type() != QgsWkbTypes.PolygonGeometry:  # a line or point layer, a collection
            parts = polygon_parts(geom)  # its polygons alone: lines were burnt in as a mask
            if not parts:
                continue
            geom = QgsGeometry.collectGeometry(parts)
        if not geom.isGeosValid():
            # makeValid may return lines (a zero-area ring, a spike): only the polygon parts
            # are a mask; lines would be burnt in as mask pixels outside any polygon
            parts = polygon_parts(geom.makeValid())
            if not parts:
                continue  # nothing of area: an all-degenerate mask is "MASK has no polygons"
            geom = QgsGeometry.collectGeometry(parts)
            if not geom.isGeosValid():
                raise QgsProcessingException(
                    f"MASK: feature {feature.id()} has an invalid polygon that cannot be "
                    "repaired; fix it (Vector > Geometry Tools > Fix geometries) first"
                )
        try:
            geom.transform(xform)
        except QgsCsException as exc:
            raise QgsProcessingException(
                f"MASK: feature {feature.id()} cannot be transformed to the raster's CRS: {exc}"
            ) from exc
        out.append(geom.asWkt())
    return tuple(out)


def write_point_features(
    sink: Any,
    fields: QgsFields,
    xy_map: np.ndarray,
    rows: Sequence[Sequence[Any]],
    feedback: QgsProcessingFeedback | None = None,
) -> None:
    """Add one point feature per row (attributes in ``fields`` order) at ``xy_map`` (N, 2)."""
    for (x, y), row in zip(np.asarray(xy_map, np.float64).reshape(-1, 2), rows):
        feature = QgsFeature(fields)
        if np.isfinite(x) and np.isfinite(y):
            feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(float(x), float(y))))
        feature.setAttributes([_plain(v) for v in row])
        if not sink.addFeature(feature, QgsFeatureSink.FastInsert):
            raise QgsProcessingException("could not write a feature to the output layer")
        if feedback is not None and feedback.isCanceled():
            break


def _plain(value: Any) -> Any:
    """Numpy scalars to Python values (QVariant does not take numpy types); NaN to NULL."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


class MatcherAlgorithm(QgsProcessingAlgorithm):
    """What the provider's algorithms share: group, instance creation, raster file checks.

    Subclasses list the keys of their raster parameters in ``RASTER_PARAMS``.
    """

    RASTER_PARAMS: tuple[str, ...] = ()

    def group(self) -> str:  # noqa: D102
        return GROUP

    def groupId(self) -> str:  # noqa: D102
        return GROUP_ID

    def createInstance(self) -> MatcherAlgorithm:  # noqa: D102
        return type(self)()

    def checkParameterValues(  # noqa: D102
        self, parameters: dict, context: QgsProcessingContext
    ) -> tuple[bool, str]:
        from sar_optical_matcher import rasters

        ok, message = check_raster_files(parameters, self.RASTER_PARAMS)
        if not ok:
            return ok, message
        for definition in self.parameterDefinitions():
            problem = number_value_problem(definition, parameters.get(definition.name()))
            if problem:
                return False, problem
        # QGIS loads each raster layer here and computes approximate band statistics for its
        # renderer: a raster without a valid pixel made GDAL print "ERROR 1: Failed to compute
        # statistics, no valid pixels found in sampling." (some formats: after the file name)
        # ahead of the algorithm's own message (Register: "nowhere on the optical raster does
        # the SAR have valid data ..."; Detect keypoints: "no keypoints" and an empty layer)
        with rasters.gdal_messages_dropped("Failed to compute statistics"):
            ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            message += virtual_path_hint(parameters, self.RASTER_PARAMS, message)
        return ok, message


def points_in_polygons(xy_map: np.ndarray, polygons_wkt: tuple[str, ...] | None) -> np.ndarray:
    """(N,) bool: points inside (or on) any of the polygons (all without polygons)."""
    if not polygons_wkt:
        return np.ones(len(xy_map), bool)
    engines = []
    for wkt in polygons_wkt:
        geom = QgsGeometry.fromWkt(wkt)
        engine = QgsGeometry.createGeometryEngine(geom.constGet())
        engine.prepareGeometry()
        engines.append(engine)
    points = [QgsPoint(float(x), float(y)) for x, y in xy_map]
    return np.array([any(e.intersects(p) for e in engines) for p in points], bool).reshape(-1)


def non_square_warning(info: Any, name: str) -> str | None:
    """The warning for pixels more than ``rasters.MAX_PIXEL_ASPECT`` : 1 on the ground, or None.

    ``name``: the parameter, OPTICAL or SAR (Compute correspondence, Register), or INPUT
    (Detect keypoints, whose raster is the optical). Matching runs on the optical pixel grid
    (or one with proportionally larger pixels), with square templates in pixels. Measured on
    a 1536 px synthetic pair (affine, 72 tie points, 93 % of the inliers within 1 px of the
    truth with square pixels): SAR 1:2 92 %, SAR 2:1 74 % (its coarse axis upsampled), optical
    1:2 83 % of 29 tie points (half the rows).
    """
    from sar_optical_matcher import rasters

    aspect = rasters.pixel_aspect(info)
    if not aspect > rasters.MAX_PIXEL_ASPECT:
        return None
    x, y, unit = rasters.ground_pixel_size(info)
    optical = name in ("OPTICAL", "INPUT")
    if not optical and unit != "map units":
        return None  # a geocoded SAR in degrees: often equal degrees, and resampled anyway
    sizes = f"{x:.4g} x {y:.4g} {unit} a pixel (column x row step, {aspect:.1f}:1)"
    if optical:
        grid = "Keypoints are detected and matched" if name == "INPUT" else "Matching runs"
        return (
            f"{name} pixels are not square on the ground: {sizes}. {grid} on the "
            f"optical pixel grid, so every template covers {aspect:.1f}x more ground along one "
            "axis than along the other, unlike the square pixels the model was trained on, and "
            "keypoints are fewer along the coarser axis: expect fewer and less accurate "
            "matches. Resample the optical to square pixels first; "
            + (
                f"e.g. `gdalwarp -tr {min(x, y):.4g} {min(x, y):.4g} -r cubic in.tif out.tif`"
                if unit == "map units"
                else f"e.g. into its UTM zone, `gdalwarp -t_srs EPSG:... -tr {min(x, y):.4g} "
                f"{min(x, y):.4g} -r cubic in.tif out.tif` (metres)"
            )
        )
    return (
        f"SAR pixels are not square on the ground: {sizes}. The SAR is resampled onto the "
        f"matching grid, its coarser axis upsampled {aspect:.1f}x, so matches are less "
        "precise along that axis; a product multilooked to square ground pixels (e.g. SNAP "
        "Multilook, 'GR square pixel') matches better"
    )
