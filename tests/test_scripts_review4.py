"""Regression tests of ``scripts/evaluate.py``'s ``--data`` and sample-size options.

* ``--data``: a Windows path's drive letter (``3mos:C:\\data\\3mos:SEN_city``) was split at
  its colon, so the root became ``C`` and the rest the scene list;
* ``--template`` / ``--search``: default to the model contract's sizes for ``learned``.
"""

from __future__ import annotations

from typing import Any

import pytest

from scripts import evaluate
from training import sources


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """The loaders ``load_records`` calls, recorded instead of run (no data needed)."""
    seen: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    for name in ("load_3mos", "load_sen12", "load_gdal_pair"):
        monkeypatch.setattr(
            sources, name, lambda *a, _n=name, **k: seen.append((_n, a, k)) or ["record"]
        )
    return seen


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (r"3mos:C:\data\3mos:SEN_city", ("load_3mos", (r"C:\data\3mos",), ["SEN_city"])),
        (r"3mos:C:\data\3mos", ("load_3mos", (r"C:\data\3mos",), None)),
        ("3mos:c:/data/3mos:SEN_city,GF3_plain",
         ("load_3mos", ("c:/data/3mos",), ["SEN_city", "GF3_plain"])),
        ("sen12:D:/sen12", ("load_sen12", ("D:/sen12",), None)),
        (r"sen12:D:\sen12:ROIs1158_spring_1",
         ("load_sen12", (r"D:\sen12",), ["ROIs1158_spring_1"])),
        # the forms without a drive letter, as before
        ("3mos:../shared/data/3mos:SEN_city",
         ("load_3mos", ("../shared/data/3mos",), ["SEN_city"])),
        ("3mos::SEN_city", ("load_3mos", ("../shared/data/3mos",), ["SEN_city"])),
        ("3mos", ("load_3mos", ("../shared/data/3mos",), None)),
        ("sen12:/data/sen12:ROIs2017_winter",
         ("load_sen12", ("/data/sen12",), ["ROIs2017_winter"])),
        ("3mos:C:SEN_city", ("load_3mos", ("C",), ["SEN_city"])),  # a folder named C, no drive
    ],
)  # fmt: skip
def test_data_paths_keep_a_windows_drive_letter(spec, expected, calls) -> None:
    """Before: ``3mos:C:\\data\\3mos:SEN_city`` loaded root 'C' with the scenes
    ['\\data\\3mos:SEN_city'], ``sen12:D:/sen12`` root 'D' with the scenes ['/sen12']."""
    assert evaluate.load_records(spec, 0) == ["record"]
    name, args, kwargs = calls[0]
    assert (name, args, kwargs["scenes"]) == expected


def test_gdal_paths_with_drive_letters(calls) -> None:
    evaluate.load_records(r"gdal:C:\a\opt.tif,C:\a\sar.tif", 0)
    assert calls == [("load_gdal_pair", (r"C:\a\opt.tif", r"C:\a\sar.tif"), {})]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (r"3mos:C:\data:SEN_city:GF3_plain",
         r"3mos:ROOT\[:SCENE,...\] has one ':' between the folder and the scenes, got the "
         r"scenes 'SEN_city:GF3_plain'; separate scenes with ','"),
        ("sen12:/data:a:b", r"sen12:ROOT\[:SCENE,...\] has one ':'"),
        ("sen12:", r"--data 'sen12:': sen12 needs its folder, e.g. sen12:DIR\[:SCENES\]"),
        ("sen12::ROIs1158_spring_1", "sen12 needs its folder"),
        (r"C:\data\3mos:SEN_city",
         r"unknown --data kind 'C' \(C:\\... is a Windows path: put the kind first, e.g. "
         r"3mos:C:\\data\\3mos:SEN_city\)"),
        ("gdal:C:/a/opt.tif", r"--data gdal needs OPTICAL.tif,SAR.tif, got 'C:/a/opt.tif'"),
    ],
)  # fmt: skip
def test_a_malformed_data_spec_says_what_is_wrong(spec, message, calls) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate.load_records(spec, 0)
    assert calls == []
