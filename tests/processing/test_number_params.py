"""Number and band parameters given text, and Detect keypoints' OUTPUT checked up front.

QGIS accepts any text for an *optional* number or band parameter, and ``parameterAsDouble`` /
``parameterAsInt`` then fall back to the default: Register's ``NODATA=abc`` (or a modeler
expression that gives NULL) wrote nodata 0 over valid 0-valued pixels, and ``BAND=abc`` read
band 1, each with rc 0 and no word. Detect keypoints wrote into an OUTPUT whose folder is a file
only after the whole detection, with a bare ``[Errno 17] File exists``.
"""

from __future__ import annotations

import math

import pytest

from tests.processing import (  # noqa: F401
    MATCH_PARAMS,
    Pair,
    provider_fixture,
    synthetic_pair_fixture,
    twin_model_fixture,
)


def _register_params(pair: Pair, model, out, **kw) -> dict:
    return {
        "SAR": str(pair.sar),
        "OPTICAL": str(pair.optical),
        "MODEL": str(model),
        **MATCH_PARAMS,
        "OUTPUT": str(out / "reg.tif"),
        **kw,
    }


@pytest.mark.parametrize(
    ("alg", "key", "value", "message"),
    [
        ("registersartooptical", "NODATA", "abc",
         "NODATA: 'abc' is not a number; give one, or leave it empty"),
        ("detectkeypoints", "BAND", "abc", "BAND: 'abc' is not a band number"),
        ("computecorrespondence", "SAR_BAND", "two", "SAR_BAND: 'two' is not a band number"),
        ("computecorrespondence", "OPTICAL_BAND", "1.5", "OPTICAL_BAND: '1.5' is not a whole"),
    ],
)  # fmt: skip
def test_text_for_a_number_is_refused_before_any_work(
    alg, key, value, message, provider, synthetic_pair, twin_model, tmp_path
) -> None:
    import processing
    from qgis.core import QgsProcessingException

    out = tmp_path / "out"
    out.mkdir()
    if alg == "detectkeypoints":
        params = {"INPUT": str(synthetic_pair.optical), "OUTPUT": str(out / "kp.gpkg")}
    elif alg == "computecorrespondence":
        params = _register_params(synthetic_pair, twin_model, out)
        params["MATCHES"] = str(params.pop("OUTPUT")).replace("reg.tif", "m.gpkg")
    else:
        params = _register_params(synthetic_pair, twin_model, out)
    with pytest.raises(QgsProcessingException) as err:
        processing.run(f"sarmatcher:{alg}", {**params, key: value})
    assert message in str(err.value), str(err.value)
    assert list(out.iterdir()) == []  # refused before anything was written


def test_optional_number_reads_expressions_and_refuses_text(provider) -> None:
    from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProperty
    from qgis.PyQt.QtCore import QVariant

    from sar_optical_matcher.processing.common import optional_number
    from sar_optical_matcher.processing.register import RegisterSarToOpticalAlgorithm

    alg = RegisterSarToOpticalAlgorithm()
    alg.initAlgorithm()
    ctx = QgsProcessingContext()

    def read(raw):
        return optional_number(alg, {"NODATA": raw}, "NODATA", ctx)

    # not given: no value, "", NULL, an expression giving NULL (parameterAsDouble made it 0)
    assert [read(v) for v in (None, "", QVariant(), QgsProperty.fromExpression("NULL"))] == [
        None
    ] * 4
    assert read(QgsProperty.fromExpression("3 + 4")) == 7.0
    assert read("-9999") == -9999.0 and read(0) == 0.0 and math.isnan(read("nan"))
    with pytest.raises(QgsProcessingException, match=r"^NODATA: 'abc' is not a number"):
        read("abc")
    with pytest.raises(QgsProcessingException, match=r"^NODATA: 'x' is not a number"):
        read(QgsProperty.fromExpression("'x'"))


def test_register_nodata_from_a_null_expression_is_the_sars_own(
    provider, synthetic_pair, twin_model, tmp_path
) -> None:
    from qgis.core import QgsProcessingContext, QgsProperty

    from sar_optical_matcher.processing.register import RegisterSarToOpticalAlgorithm

    alg = RegisterSarToOpticalAlgorithm()
    alg.initAlgorithm()
    ctx = QgsProcessingContext()
    params = _register_params(synthetic_pair, twin_model, tmp_path)
    null = {**params, "NODATA": QgsProperty.fromExpression("NULL")}
    assert alg.settings(null, ctx).warp.nodata is None  # was 0.0
    assert alg.settings(params, ctx).warp.nodata is None
    assert alg.settings({**params, "NODATA": "-5"}, ctx).warp.nodata == -5.0


def test_number_value_problem_leaves_numbers_lists_and_expressions_alone(provider) -> None:
    from qgis.core import QgsProperty

    from sar_optical_matcher.processing.common import number_value_problem
    from sar_optical_matcher.processing.compute_correspondence import (
        ComputeCorrespondenceAlgorithm,
    )

    alg = ComputeCorrespondenceAlgorithm()
    alg.initAlgorithm()
    band = alg.parameterDefinition("SAR_BAND")
    threshold = alg.parameterDefinition("CONFIDENCE_THRESHOLD")
    for raw in (None, "", 2, "2", 2.0, QgsProperty.fromExpression("1 + 1"), [1, 2]):
        assert number_value_problem(band, raw) is None, raw
    for raw in ("0.5", 0.25, "1e-1"):
        assert number_value_problem(threshold, raw) is None, raw
    assert number_value_problem(threshold, "high") == (
        "CONFIDENCE_THRESHOLD: 'high' is not a number; give one, or leave it empty"
    )
    assert number_value_problem(alg.parameterDefinition("MODEL"), "abc") is None  # not a number


def test_detect_keypoints_checks_its_output_before_detecting(provider, synthetic_pair, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    with pytest.raises(QgsProcessingException) as err:
        processing.run(
            "sarmatcher:detectkeypoints",
            {"INPUT": str(synthetic_pair.optical), "OUTPUT": str(a_file / "kp.gpkg")},
        )
    text = str(err.value)
    assert text.startswith(f"OUTPUT: cannot write {a_file / 'kp.gpkg'}: {a_file} is a file"), text
    assert a_file.read_text() == "not a folder"
