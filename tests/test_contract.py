"""The model contract round-trips through JSON and rejects what the plugin cannot run."""

from __future__ import annotations

import json

import pytest

from sar_optical_matcher.core.preprocessing import PreprocessSpec
from sar_optical_matcher.model.contract import FORMAT_VERSION, ModelContract


def test_round_trip_and_map_size() -> None:
    c = ModelContract(name="m", version="1", training={"seed": 3, "hash": "abc"})
    back = ModelContract.from_json(c.to_json())
    assert back == c
    assert back.map_size == 129
    assert isinstance(back.sar, PreprocessSpec) and back.sar.modality == "sar"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format_version=FORMAT_VERSION + 1), "not supported"),
        (lambda d: d.pop("sar"), "incomplete"),
        (lambda d: d.update(unknown=1), "unknown fields"),
        (lambda d: d.update(search_size=64), "template_size <= search_size - 2"),
        # a 2 x 2 map passed the load and failed in the peak analysis, after detection
        (lambda d: d.update(search_size=129), "map of at least 3 x 3 offsets.*128, 129"),
        (lambda d: d.update(sar=d["optical"], optical=d["sar"]), "swapped"),
        (lambda d: d["sar"].update(std=0.0), "standardisation"),
        (lambda d: d.update(code_size=0), "code_size must be in 1..template_size"),
        (lambda d: d.update(code_size=129), "code_size must be in 1..template_size"),
        (lambda d: d.update(format_version=1, code_size=4), "format-1 .* vector codes only"),
        (lambda d: d.update(map_smoothing_px=-0.5), "map_smoothing_px must be a number in 0..8"),
        (lambda d: d.update(map_smoothing_px=9.0), "map_smoothing_px must be a number in 0..8"),
        (lambda d: d.update(map_smoothing_px="1"), "map_smoothing_px must be a number"),
        (lambda d: d.update(map_smoothing_px=True), "map_smoothing_px must be a number"),
        (lambda d: d.update(map_smoothing_px=float("nan")), "map_smoothing_px must be a number"),
        (lambda d: d.update(format_version=2, map_smoothing_px=1.0), "format-2 .* no map smooth"),
        # a newer format adds keys: it was refused as "unknown fields", not as a newer format
        (lambda d: d.update(format_version=4, patch_stride=2), "format 4 is not supported.*update"),
        # format 3 keys left out were filled with defaults: raw maps, SAR standardised wrongly
        (lambda d: d.pop("map_smoothing_px"), "incomplete: format 3 has map_smoothing_px"),
        (lambda d: d["sar"].pop("mean"), "incomplete: format 3 has sar.mean, this one"),
        (lambda d: d.pop("format_version"), "incomplete: it has no format_version"),
        (lambda d: d.update(format_version="3"), "format_version must be an integer"),
        (lambda d: d.update(sar=[0.5]), "sar must be a JSON object"),
        # a numpy "truth value of an array is ambiguous" before
        (lambda d: d["sar"].update(mean=[0.4, 0.4]), "sar preprocessing: mean must be a number"),
        (lambda d: d["optical"].update(std=True), "optical preprocessing: std must be a number"),
        # the load check then asked numpy for 14.6 TiB (a raw MemoryError)
        (lambda d: d.update(template_size=10**6, search_size=10**6 + 2), "search_size 1000002 is"),
    ],
)
def test_invalid_contracts_are_rejected(edit, message: str) -> None:
    raw = json.loads(ModelContract(name="m", version="1").to_json())
    edit(raw)
    with pytest.raises(ValueError, match=message):
        ModelContract.from_json(json.dumps(raw))


def test_not_json() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelContract.from_json("{oops")


def test_code_map_geometry() -> None:
    c = ModelContract(name="m", version="2", descriptor_size=16, code_size=114)
    assert c.receptive_field == 15 and c.descriptor_length == 16 * 114 * 114
    assert c.code_map_size(256) == 242 and c.code_map_size(128) == c.code_size
    vector = ModelContract(name="m", version="1")
    assert vector.receptive_field == 128 and vector.descriptor_length == 256


def test_format_1_contracts_are_read_as_vector_codes() -> None:
    """A model exported before code_size existed still loads, with its meaning unchanged."""
    raw = json.loads(ModelContract(name="old", version="0.1").to_json())
    del raw["code_size"]
    raw["format_version"] = 1
    old = ModelContract.from_json(json.dumps(raw))
    assert old.code_size == 1 and old.receptive_field == old.template_size


def test_format_2_contracts_are_read_with_the_raw_map() -> None:
    """A model exported before map_smoothing_px existed (plugin <= 0.3.1) keeps its raw map."""
    raw = json.loads(ModelContract(name="old", version="0.3.0", code_size=114).to_json())
    del raw["map_smoothing_px"]
    raw["format_version"] = 2
    old = ModelContract.from_json(json.dumps(raw))
    assert old.map_smoothing_px == 0.0 and old.code_size == 114
    new = ModelContract(name="new", version="0.3.2", code_size=114, map_smoothing_px=1.0)
    assert new.format_version == FORMAT_VERSION == 3
    assert ModelContract.from_json(new.to_json()).map_smoothing_px == 1.0
