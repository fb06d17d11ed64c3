"""A failing run keeps the earlier point layer of Detect keypoints and Compute correspondence.

QGIS writes a vector output in place, not under a temporary name: a write failing midway (a
full disk) replaced an earlier layer with a truncated one, and a failing rename of Compute
correspondence's staged map rasters left new matches beside the earlier maps.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.processing import (  # noqa: F401
    MATCH_PARAMS,
    Pair,
    provider_fixture,
    synthetic_pair_fixture,
    twin_model_fixture,
)


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _count(path: Path) -> int:
    from osgeo import ogr

    ds = ogr.Open(str(path))
    n = ds.GetLayer(0).GetFeatureCount()
    ds = None  # a layer outlives no dataset
    return n


def _disk_full_after(n: int):
    from sar_optical_matcher.processing import common

    write = common.write_point_features

    def fail(sink, fields, xy, rows, feedback=None):
        write(sink, fields, xy[:n], rows[:n])
        raise OSError(28, "No space left on device")

    return fail


def _fails_and_keeps(alg: str, params: dict, folder: Path, patch: tuple, message: str, m) -> None:
    import processing
    from qgis.core import QgsProcessingException

    earlier = _digests(folder)
    m.setattr(*patch)
    with pytest.raises(QgsProcessingException, match=message):
        processing.run(alg, params)
    m.undo()
    assert _digests(folder) == earlier, message


@pytest.mark.parametrize("ext", [".gpkg", ".shp"])
def test_detect_keypoints_failing_midway_keeps_the_earlier_layer(
    provider, synthetic_pair: Pair, tmp_path, monkeypatch, ext
) -> None:
    import processing

    from sar_optical_matcher.processing import common

    out = tmp_path / f"kp{ext}"
    params = {"INPUT": str(synthetic_pair.optical), "MAX_COUNT": 40, "MIN_DISTANCE": 12,
              "BORDER": 8, "OUTPUT": str(out)}  # fmt: skip
    processing.run("sarmatcher:detectkeypoints", params)
    n_earlier = _count(out)
    assert n_earlier > 10
    patch = (common, "write_point_features", _disk_full_after(3))
    _fails_and_keeps("sarmatcher:detectkeypoints", params, tmp_path, patch, "No space", monkeypatch)
    assert _count(out) == n_earlier
    # a run that succeeds replaces it and leaves nothing beside it
    names = sorted(_digests(tmp_path))
    processing.run("sarmatcher:detectkeypoints", {**params, "MAX_COUNT": 12})
    assert _count(out) == 12 and sorted(_digests(tmp_path)) == names


def test_compute_correspondence_failing_keeps_the_earlier_matches_and_maps(
    provider, synthetic_pair: Pair, twin_model, tmp_path, monkeypatch
) -> None:
    import processing

    from sar_optical_matcher.core import files
    from sar_optical_matcher.processing import common

    out = tmp_path / "m.gpkg"
    params = {
        "SAR": str(synthetic_pair.sar),
        "OPTICAL": str(synthetic_pair.optical),
        "MODEL": str(twin_model),
        **MATCH_PARAMS,
        "MATCHES": str(out),
        "OUTPUT_MAPS": str(tmp_path / "maps"),
    }
    processing.run("sarmatcher:computecorrespondence", params)
    n_earlier = _count(out)
    assert n_earlier > 3 and len(list((tmp_path / "maps").iterdir())) > 3

    def in_use(self):
        raise ValueError("cannot replace map_00000.tif: Permission denied")

    alg = "sarmatcher:computecorrespondence"
    for patch, message in (
        ((common, "write_point_features", _disk_full_after(3)), "No space left on device"),
        ((files.StagedOutputs, "commit", in_use), "cannot replace map_00000.tif"),
    ):
        _fails_and_keeps(alg, params, tmp_path, patch, message, monkeypatch)
    assert _count(out) == n_earlier
