"""Cases run by test_gui_and_modeler.py in their own process: dialogs, batch, modeler.

Offscreen Qt: the dialogs are built from the parameter definitions exactly as the Processing
toolbox builds them, their widgets are set, and the parameters they hand to the algorithm are
checked; a model chaining Detect keypoints into Register SAR to optical is saved, reloaded and
run on the known synthetic pair.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from tests.processing import (  # noqa: F401
    MATCH_PARAMS,
    Pair,
    provider_fixture,
    synthetic_pair_fixture,
    twin_model_fixture,
)

ALGORITHMS = ("detectkeypoints", "computecorrespondence", "registersartooptical")


@pytest.fixture(name="processing_gui")
def processing_gui_fixture(provider, monkeypatch: pytest.MonkeyPatch):
    """Processing's own GUI classes (the toolbox's dialog and the batch dialog).

    pytest-qgis's stand-in ``iface`` lacks the browser model that QGIS's own interface gives
    the parameter widgets; it gets one.
    """
    from qgis import utils
    from qgis.gui import QgsBrowserGuiModel

    gui = pytest.importorskip("processing.gui.AlgorithmDialog")
    batch = pytest.importorskip("processing.gui.BatchAlgorithmDialog")
    model = None
    if utils.iface is not None and not hasattr(utils.iface, "browserModel"):
        model = QgsBrowserGuiModel()
        monkeypatch.setattr(utils.iface, "browserModel", lambda: model, raising=False)
    yield gui.AlgorithmDialog, batch.BatchAlgorithmDialog
    if model is not None:  # left to interpreter exit, it outlives QGIS (segfault at exit)
        from qgis.PyQt import sip

        sip.delete(model)


def _dispose(dialog) -> None:
    """Close and delete a dialog now, and collect the reference cycles of its wrappers now.

    A dialog left to Python's exit outlives QGIS (segfault). So do the cycles its Python
    wrappers leave once it is deleted: the collector found them whenever it next ran, which
    moved with unrelated code (a longer registration.py made it run during pytest's exit, rc
    139 after all cases passed).
    """
    from qgis.PyQt import sip

    dialog.close()
    sip.delete(dialog)
    gc.collect()


def _alg(provider, name: str):
    alg = provider.algorithm(name)
    assert alg is not None, f"the provider has no {name!r}"
    return alg.create()


@pytest.mark.parametrize("name", ALGORITHMS)
def test_the_toolbox_dialog_has_a_widget_for_every_parameter(
    provider, processing_gui, name: str
) -> None:
    from qgis.core import QgsProcessingParameterDefinition

    dialog_cls, _ = processing_gui
    alg = _alg(provider, name)
    dialog = dialog_cls(alg, False, None)
    panel = dialog.mainWidget()
    wanted = {
        p.name()
        for p in alg.parameterDefinitions()
        if not p.flags() & QgsProcessingParameterDefinition.FlagHidden
    }
    assert set(panel.wrappers) == wanted
    # advanced parameters stay under "Advanced parameters", the inputs above them
    advanced = {
        p.name()
        for p in alg.parameterDefinitions()
        if p.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    }
    assert "SPREAD" in advanced and "MAX_COUNT" not in advanced
    spread = panel.wrappers["SPREAD"].wrappedWidget()
    assert (spread.minimum(), spread.maximum(), spread.value()) == (0.0, 1.0, 0.5)
    _dispose(dialog)


def test_the_dialogs_widgets_reach_the_algorithm(
    provider, processing_gui, synthetic_pair: Pair, twin_model: Path, tmp_path: Path
) -> None:
    """Values set in the dialog's widgets are the ones the algorithm's settings read."""
    from qgis.core import QgsProcessingContext, QgsProject, QgsRasterLayer

    dialog_cls, _ = processing_gui
    sar = QgsRasterLayer(str(synthetic_pair.sar), "sar")
    optical = QgsRasterLayer(str(synthetic_pair.optical), "optical")
    assert sar.isValid() and optical.isValid()
    QgsProject.instance().addMapLayers([sar, optical])
    try:
        alg = _alg(provider, "registersartooptical")
        dialog = dialog_cls(alg, False, None)
        wrappers = dialog.mainWidget().wrappers
        values = {
            "SAR": sar,
            "OPTICAL": optical,
            "MODEL": str(twin_model),
            "SPREAD": 0.25,
            "MAX_COUNT": 77,
            "TRANSFORM": 3,  # TRANSFORM_KINDS: shift, affine, poly1, poly2, ...
            "RESIDUAL_THRESHOLD": 1.25,
            "OUTPUT": str(tmp_path / "gui.tif"),
        }
        context = QgsProcessingContext()
        context.setProject(QgsProject.instance())
        for key, value in values.items():
            wrappers[key].setParameterValue(value, context)
        params = dialog.createProcessingParameters()
        ok, message = alg.checkParameterValues(params, context)
        assert ok, message
        s = alg.settings(params, context)
        assert s.correspondence.detect.spread == 0.25
        assert s.correspondence.detect.max_count == 77
        assert (s.transform, s.residual_threshold_px) == ("poly2", 1.25)
        assert s.output_path == str(tmp_path / "gui.tif")
        _dispose(dialog)
    finally:
        QgsProject.instance().removeMapLayers([sar.id(), optical.id()])


@pytest.mark.parametrize("name", ALGORITHMS)
def test_the_batch_dialog_builds_a_row_per_run(provider, processing_gui, name: str) -> None:
    _, batch_cls = processing_gui
    alg = _alg(provider, name)
    dialog = batch_cls(alg, None)
    panel = dialog.mainWidget()
    panel.addRow()
    assert panel.batchRowCount() == 2  # the first row plus the one added
    _dispose(dialog)


def test_batch_rows_run_with_their_own_values(
    provider, processing_gui, synthetic_pair: Pair, tmp_path: Path
) -> None:
    """Two rows of Detect keypoints set in the batch table, run as the batch dialog runs them."""
    import processing
    from qgis.core import QgsProcessingContext, QgsVectorLayer

    _, batch_cls = processing_gui
    alg = _alg(provider, "detectkeypoints")
    dialog = batch_cls(alg, None)
    panel = dialog.mainWidget()
    panel.addRow()
    context = QgsProcessingContext()
    rows = [(synthetic_pair.optical, 30), (synthetic_pair.sar, 12)]
    for row, (raster, count) in enumerate(rows):
        for key, value in (
            ("INPUT", str(raster)),
            ("MAX_COUNT", count),
            ("MIN_DISTANCE", 24),
            ("BORDER", 56),
        ):
            wrapper = panel.wrappers[row][panel.parameter_to_column[key]]
            wrapper.setParameterValue(value, context)
        out = panel.tblParameters.cellWidget(row + 1, panel.parameter_to_column["OUTPUT"])
        out.setValue(str(tmp_path / f"row{row}.gpkg"))
    for row, (_, count) in enumerate(rows):
        params, ok = panel.parametersForRow(row)
        assert ok, f"row {row} refused: {params}"
        assert params["MAX_COUNT"] == count
        res = processing.run(alg, params)
        layer = QgsVectorLayer(res["OUTPUT"], "kp", "ogr")
        assert layer.isValid() and layer.featureCount() == count  # the pair has corners enough
    _dispose(dialog)


def _chain(pair: Pair, model: Path):
    """A model: Detect keypoints on the optical, their layer into Register SAR to optical."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    m = QgsProcessingModelAlgorithm("detect then register", "tests")
    for name in ("sar", "optical"):
        m.addModelParameter(
            QgsProcessingParameterRasterLayer(name, name), QgsProcessingModelParameter(name)
        )
    param = QgsProcessingModelChildParameterSource.fromModelParameter
    value = QgsProcessingModelChildParameterSource.fromStaticValue

    detect = QgsProcessingModelChildAlgorithm("sarmatcher:detectkeypoints")
    detect.setChildId("detect")
    detect.addParameterSources("INPUT", [param("optical")])
    for key, v in (("MIN_DISTANCE", 24), ("BORDER", 56), ("MAX_COUNT", 60)):
        detect.addParameterSources(key, [value(v)])
    detect.addParameterSources("OUTPUT", [value("TEMPORARY_OUTPUT")])
    m.addChildAlgorithm(detect)

    register = QgsProcessingModelChildAlgorithm("sarmatcher:registersartooptical")
    register.setChildId("register")
    register.addParameterSources("SAR", [param("sar")])
    register.addParameterSources("OPTICAL", [param("optical")])
    register.addParameterSources(
        "KEYPOINTS", [QgsProcessingModelChildParameterSource.fromChildOutput("detect", "OUTPUT")]
    )
    for key, v in {
        "MODEL": str(model),
        **MATCH_PARAMS,
        "RESIDUAL_THRESHOLD": 1.5,
        "TRANSFORM": 1,
    }.items():
        register.addParameterSources(key, [value(v)])
    outputs = {}
    for key in ("OUTPUT", "OUTPUT_REPORT"):
        out = QgsProcessingModelOutput(key.lower())
        out.setChildId("register")
        out.setChildOutputName(key)
        outputs[key.lower()] = out
    register.setModelOutputs(outputs)
    m.addChildAlgorithm(register)
    return m


def test_a_saved_model_chaining_detect_into_register_runs(
    provider, synthetic_pair: Pair, twin_model: Path, tmp_path: Path
) -> None:
    import processing
    from osgeo import gdal
    from qgis.core import QgsProcessingModelAlgorithm

    built = _chain(synthetic_pair, twin_model)
    path = tmp_path / "chain.model3"
    assert built.toFile(str(path))
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(path)), "the saved .model3 does not load"
    assert sorted(model.childAlgorithms()) == ["detect", "register"]
    out_tif, out_html = tmp_path / "registered.tif", tmp_path / "report.html"
    res = processing.run(
        model,
        {
            "sar": str(synthetic_pair.sar),
            "optical": str(synthetic_pair.optical),
            "register:output": str(out_tif),
            "register:output_report": str(out_html),
        },
    )
    assert Path(res["register:output"]) == out_tif and out_tif.exists()
    html = out_html.read_text(encoding="utf-8")
    assert "RMSE (optical px)" in html
    # the registered SAR lies where the optical does: its grid is the optical's
    warped = gdal.Open(str(out_tif))
    ref = gdal.Open(str(synthetic_pair.optical))
    assert np.allclose(warped.GetGeoTransform(), ref.GetGeoTransform())
    a = warped.ReadAsArray().astype(np.float64)[40:-40, 40:-40]
    b = ref.ReadAsArray().astype(np.float64)[40:-40, 40:-40]
    # the synthetic SAR is an intensity transform of the optical: registered, they correlate at
    # 0.995 (a one-pixel shift of the registered raster: 0.954, three pixels: 0.774)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
