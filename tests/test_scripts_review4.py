"""Regression tests of ``scripts/evaluate.py``'s ``--data`` and sample-size options.

* ``--data``: a Windows path's drive letter (``3mos:C:\\data\\3mos:SEN_city``) was split at
  its colon, so the root became ``C`` and the rest the scene list; ``gdal:OPTICAL,SAR`` was
  cut at every comma, so a path holding one could not be given;
* ``--template`` / ``--search``: default to the model contract's sizes for ``learned``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
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


def test_gdal_paths_with_a_comma_in_a_name(calls, tmp_path, monkeypatch) -> None:
    """``gdal:OPTICAL,SAR`` cut every comma: a path holding one could not be given. Now the
    text is cut at the one comma whose two sides are existing files; where none or several
    are, the error says so (and nothing is loaded)."""
    folder = tmp_path / "run 3, June"
    folder.mkdir()
    opt, sar = folder / "opt,1.tif", folder / "sar.tif"
    for path in (opt, sar):
        path.write_bytes(b"")
    evaluate.load_records(f"gdal:{opt},{sar}", 0)
    assert calls == [("load_gdal_pair", (str(opt), str(sar)), {})]
    calls.clear()
    with pytest.raises(ValueError, match=r"5 commas, and gdal:OPTICAL.tif,SAR.tif has one "
                       r"between the two files; no comma splits it into two existing files\. "
                       r"Check both paths"):  # fmt: skip
        evaluate.load_records(f"gdal:{opt},{folder / 'sar,2.tif'}", 0)
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b,c", "a,b", "c"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match=r"2 commas split it into two existing files: 'a' and "
                       r"'b,c'; 'a,b' and 'c'"):  # fmt: skip
        evaluate.load_records("gdal:a,b,c", 0)
    assert calls == []


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


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory):
    """A twin model whose contract matches 64 px templates in 96 px regions (not 128 in 256)."""
    from tests.model_fixtures import make_twin_model

    return make_twin_model(tmp_path_factory.mktemp("model") / "small.onnx")


def test_sample_sizes_default_to_the_models(small_model, tmp_path, capsys) -> None:
    """Before: --template / --search defaulted to 128 / 256, so a model of other sizes failed
    with 'matches 64 px templates in 96 px regions, not --template 128 --search 256' unless
    both were given by hand."""
    import json

    out = tmp_path / "eval"
    argv = ["--model", str(small_model), "--data", "synthetic:2:256", "--methods", "learned,ncc",
            "--samples-per-pair", "4", "--device", "cpu", "--maps", "0",
            "--out", str(out)]  # fmt: skip
    assert evaluate.main(argv) == 0, capsys.readouterr().err
    doc = json.loads((out / "results.json").read_text())
    assert (doc["config"]["template"], doc["config"]["search"]) == (64, 96)
    # every method matched the model's geometry: offsets within the 96 - 64 = 32 px span
    offsets = np.asarray(doc["errors_px"]["true_offset_xy_px"])
    assert offsets.shape == (8, 2) and offsets.min() >= 0 and offsets.max() <= 32
    learned = next(s for s in doc["summaries"] if s["method"] == "learned")
    assert learned["n"] == 8


@pytest.mark.parametrize(
    ("given", "shown"),
    [(["--search", "128"], "not --search 128:"),
     (["--template", "300"], "not --template 300:"),
     (["--template", "128", "--search", "256"], "not --template 128 --search 256:")],
)  # fmt: skip
def test_sizes_other_than_the_models_are_refused(small_model, tmp_path, capsys, given, shown):
    argv = ["--model", str(small_model), "--data", "synthetic:1:256", "--device", "cpu",
            "--methods", "ncc,learned", *given, "--out", str(tmp_path / "eval")]  # fmt: skip
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert f"matches 64 px templates in 96 px regions, {shown} leave out --template" in err
    assert not (tmp_path / "eval").exists()


def test_sizes_without_a_model_are_the_defaults(capsys) -> None:
    args = evaluate.parse_args(["--data", "synthetic:1:256", "--methods", "ncc,cfog"])
    assert evaluate.open_methods(args) == (["ncc", "cfog"], None)
    assert (args.template, args.search) == (128, 256)
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--data", "synthetic:1", "--methods", "ncc", "--search", "100"])
    assert "--template 128 --search 100: the template side must be >= 2" in capsys.readouterr().err
