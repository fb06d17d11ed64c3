"""Regression tests of what a new user and a CI runner meet: set-up, evaluation, calibration.

* ``install.sh``: a ``.venv`` that ``python3 -m venv`` left without pip (Debian without
  ``python3-venv``) is recreated, not reused until ``pip`` is not found;
* ``evaluate.py``: an ``--out`` it cannot write, a model or ``--device`` it cannot use, are
  refused before any matching; its outputs are renamed together and an earlier run's optional
  outputs do not pass for this run's; bad counts are argument errors; an unknown
  ``--scene-offset`` scene lists the scenes there are;
* ``calibrate_confidence.py``: a missing model or an unwritable ``--out`` is said before the
  calibration's matching, without a traceback;
* ``measure_offsets.py`` / ``measure_pixel_scale.py``: a bad ``--data`` is one error line;
* benchmarks: an unwritable ``--json`` is refused before measuring;
* ``run_experiment.py``: a failed evaluation stops it (never an earlier run's results);
* ``make_large_pair.py``: a failed rerun leaves no stale truth and no half-written raster;
* ``build_zip.py``: the model ships, the zip stays small, a failed build leaves nothing;
* the version in ``pyproject.toml`` is the plugin's (``metadata.txt``, its changelog's first).
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import calibrate_confidence, evaluate

ROOT = Path(__file__).resolve().parent.parent


# -- install.sh --------------------------------------------------------------------------


def _install(repo: Path) -> subprocess.CompletedProcess[str]:
    # the copy installs nothing (empty requirements); its final import check finds numpy and
    # osgeo in the system site-packages and stand-ins for torch and onnxruntime (modules
    # without package metadata: the script's pip never sees, let alone removes, a real one)
    stubs = repo / "stubs"
    stubs.mkdir(exist_ok=True)
    (stubs / "torch.py").write_text('__version__ = "stub"\n')
    (stubs / "onnxruntime.py").write_text(
        '__version__ = "stub"\n\ndef get_available_providers():\n    return []\n'
    )
    env = dict(os.environ, PYTHONPATH=str(stubs))
    return subprocess.run(
        ["bash", str(repo / "scripts" / "install.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_install_lists_the_debian_package_that_gives_python3_its_venv() -> None:
    """Without python3-venv, Debian's ``python3 -m venv`` stops at ensurepip."""
    script = (ROOT / "scripts" / "install.sh").read_text()
    line = next(x for x in script.splitlines() if x.startswith("APT_PACKAGES="))
    assert "python3-venv" in line.split("=", 1)[1].strip('"').split()


def test_one_matplotlib_the_one_qgis_uses() -> None:
    """pip's matplotlib 3.9 in the --system-site-packages venv met Debian's mpl_toolkits 3.6 and
    warned "Unable to import Axes3D" on every import (the demo, every report and plot)."""
    script = (ROOT / "scripts" / "install.sh").read_text()
    line = next(x for x in script.splitlines() if x.startswith("APT_PACKAGES="))
    assert "python3-matplotlib" in line.split("=", 1)[1].strip('"').split()
    pins = (ROOT / "requirements.txt").read_text().splitlines()
    assert not [x for x in pins if x.split("==")[0].strip().lower() == "matplotlib"]
    pytest.importorskip("matplotlib")
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c",
         "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot, mpl_toolkits.mplot3d;"
         "print(matplotlib.__file__)"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-500:]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/python3").is_file(), reason="install.sh is for Debian")
def test_install_recreates_a_venv_left_without_pip(tmp_path: Path) -> None:
    """``python3 -m venv`` without ensurepip leaves bin/python and no pip: install.sh took the
    venv as made and failed on every later run ('.venv/bin/pip: No such file or directory')
    until the user deleted it."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "install.sh", repo / "scripts" / "install.sh")
    for name in ("requirements.txt", "requirements-cpu.txt", "requirements-gpu.txt"):
        (repo / name).write_text("# nothing to install in this test\n")
    venv = repo / ".venv"
    subprocess.run(
        ["/usr/bin/python3", "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
    )
    assert (venv / "bin" / "python").exists() and not (venv / "bin" / "pip").exists()
    run = _install(repo)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "creating .venv" in run.stdout and "install: ok" in run.stdout
    assert (venv / "bin" / "pip").is_file()
    again = _install(repo)  # idempotent: nothing created or installed the second time
    assert again.returncode == 0, again.stdout + again.stderr
    assert "creating" not in again.stdout and "installing" not in again.stdout


# -- evaluate.py -------------------------------------------------------------------------


def test_evaluate_refuses_an_unwritable_out_before_any_matching(tmp_path, monkeypatch, capsys):
    """--out under a file: every method ran (minutes for make evaluate), then
    'error: [Errno 20] Not a directory'."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    calls: list[object] = []
    monkeypatch.setattr(evaluate, "build_samples", lambda args: calls.append(args) or [])
    argv = ["--data", "synthetic:1:256", "--methods", "ncc", "--out", str(blocker / "eval")]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out: cannot write") and "is a file, not a folder" in err
    assert calls == []


def _run_eval(out: Path, *extra: str) -> None:
    argv = ["--data", "synthetic:2:256", "--methods", "ncc,cfog", "--samples-per-pair", "3"]
    assert evaluate.main([*argv, "--maps", "2", "--out", str(out), *extra]) == 0


def test_evaluate_outputs_are_one_run_and_renamed_together(tmp_path, monkeypatch):
    """A failure while plotting left the new results.json beside the old figures; a run with
    --maps 0 or without --calibrate-confidence left the earlier run's maps.png and
    confidence_model.json as if they were its own."""
    out = tmp_path / "eval"
    _run_eval(out, "--calibrate-confidence", "--correct-px", "1.5")  # cfog: 2 of 6 correct
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(first) == ["confidence_model.json", "histograms.png", "maps.png",
                             "precision.png", "results.json", "results.md"]  # fmt: skip
    assert json.loads(first["results.json"])["config"]["samples_per_pair"] == 3

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(evaluate, "plot_precision", broken)
    argv = ["--data", "synthetic:2:256", "--methods", "ncc", "--samples-per-pair", "1"]
    assert evaluate.main([*argv, "--out", str(out)]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # no new, no partial file
    monkeypatch.undo()

    _run_eval(out, "--maps", "0")  # the last --maps wins
    assert sorted(p.name for p in out.iterdir()) == [
        "histograms.png", "precision.png", "results.json", "results.md"]  # fmt: skip


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--batch", "--batch: must be an integer >= 1, got '0'"),
        ("--maps", "--maps: must be an integer >= 0, got '-1'"),
        ("--max-records", "--max-records: must be an integer >= 0, got '-1'"),
    ],  # fmt: skip
)
def test_evaluate_counts_are_argument_errors(option: str, message: str, capsys) -> None:
    """--batch 0 and --maps -1 failed after the matching ('need at least one sample and batch
    >= 1', 'Number of samples, -1, must be non-negative'), --max-records -1 with 'negative
    dimensions are not allowed'."""
    value = "0" if option == "--batch" else "-1"
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--data", "synthetic:1", option, value])
    assert message in capsys.readouterr().err


def test_an_unknown_scene_offset_lists_the_scenes_there_are() -> None:
    """A gdal pair's scene is its optical file's stem: the error named only the wrong scene."""
    records = evaluate.load_records("synthetic:2:64", 0)
    with pytest.raises(SystemExit, match=r"\['pair'\] not in --data; its scenes are "
                       r"\['synthetic-0', 'synthetic-1'\]"):  # fmt: skip
        evaluate.with_scene_offsets(records, ["pair=1,2"])
    moved = evaluate.with_scene_offsets(records, ["synthetic-1=1,-2"])
    assert [r.offset_xy_px for r in moved] == [(0.0, 0.0), (1.0, -2.0)]


def test_evaluate_opens_the_model_before_any_method_runs(monkeypatch, tmp_path, capsys):
    """--device cuda without CUDA: the methods before 'learned' ran, then a
    MissingDependencyError traceback."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("a CUDA onnxruntime is installed here")
    from training import evaluation_harness

    calls: list[object] = []
    monkeypatch.setattr(evaluation_harness, "run_method", lambda *a, **k: calls.append(a))
    argv = ["--data", "synthetic:1:256", "--methods", "ncc,learned", "--device", "cuda"]
    assert evaluate.main([*argv, "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device 'cuda' requested") and "onnxruntime-gpu" in err
    assert calls == [] and not (tmp_path / "eval").exists()


# -- calibrate_confidence.py -------------------------------------------------------------


def test_calibrate_confidence_checks_model_and_out_before_matching(tmp_path, monkeypatch):
    """A missing model was a ModelError traceback; an --out under a file a FileExistsError
    traceback after the whole calibration had run."""
    from training import evaluation_harness

    calls: list[object] = []
    monkeypatch.setattr(evaluation_harness, "run_method", lambda *a, **k: calls.append(a))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    model = ROOT / "sar_optical_matcher" / "model" / "default.onnx"
    base = ["--data", "synthetic:1:256"]
    with pytest.raises(SystemExit, match=r"^calibrate_confidence.py: error: model file .*"
                       "does not exist"):  # fmt: skip
        calibrate_confidence.main([*base, "--model", str(tmp_path / "no.onnx"), "--out",
                                   str(tmp_path / "c.onnx")])  # fmt: skip
    with pytest.raises(SystemExit, match=r"^calibrate_confidence.py: error: cannot write .*"
                       "is a file, not a folder"):  # fmt: skip
        calibrate_confidence.main([*base, "--model", str(model), "--out",
                                   str(blocker / "c.onnx")])  # fmt: skip
    assert calls == []


@pytest.mark.parametrize(
    "option, message",
    [("--samples-per-pair=0", "--samples-per-pair must be >= 1, got 0"),
     ("--correct-px=-3", "--correct-px must be > 0 (pixels), got -3.0"),
     ("--seed=-1", "--seed must be in [0, 2^32 - 1], got -1")],  # was numpy's, after the load
)  # fmt: skip
def test_calibrate_confidence_counts_are_argument_errors(option, message, tmp_path, capsys):
    """--samples-per-pair 0 ran the model, then failed in the harness's words (n_per_record)."""
    model = ROOT / "sar_optical_matcher" / "model" / "default.onnx"
    with pytest.raises(SystemExit) as exc:
        calibrate_confidence.main(["--data", "synthetic:1:256", "--model", str(model), option,
                                   "--out", str(tmp_path / "c.onnx")])  # fmt: skip
    assert exc.value.code == 2 and message in capsys.readouterr().err


# -- measure_offsets.py / measure_pixel_scale.py ----------------------------------------


@pytest.mark.parametrize("script", ["measure_offsets", "measure_pixel_scale"])
def test_measure_scripts_say_a_bad_data_spec_in_one_line(script: str, tmp_path: Path) -> None:
    """README's commands with a mistyped --data printed a traceback."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{script}.py"), "--data", f"3mos:{tmp_path}/no"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"{script}.py: error: 3MOS folder")


# -- benchmarks --------------------------------------------------------------------------


def test_benchmarks_refuse_an_unwritable_json_before_measuring(tmp_path, monkeypatch, capsys):
    """--json under a file failed after the whole benchmark (bench_register at 20,000 px: tens
    of minutes) with a traceback."""
    from scripts import bench_correspondence, bench_register, bench_train_step

    blocker = tmp_path / "file"
    blocker.write_text("x")
    json_arg = ["--json", str(blocker / "figures.json")]
    calls: list[object] = []
    monkeypatch.setattr(bench_train_step, "load_config", lambda *a: calls.append(a))
    runs = [(bench_correspondence.parse_args, ["--random-model", "tiny"]),
            (bench_register.parse_args, ["--random-model", "tiny"]),
            (bench_train_step.main, ["--tiny"])]  # fmt: skip
    for run, argv in runs:
        with pytest.raises(SystemExit) as exc:
            run([*argv, *json_arg])
        assert exc.value.code == 2
        assert "--json: cannot write" in capsys.readouterr().err
    assert calls == []


# -- run_experiment.py -------------------------------------------------------------------


def test_experiment_stops_when_an_evaluation_fails(tmp_path, monkeypatch, capsys):
    """evaluate.main's exit status was ignored: a failed evaluation (it said 'error: ...' and
    wrote nothing) put the results.json an earlier run had left in its folder into the table."""
    import argparse

    from scripts import run_experiment as rx

    args = argparse.Namespace(out=tmp_path / "exp", data="3mos:ROOT:A", synthetic="synthetic:2",
                              samples_per_pair=1, synthetic_samples_per_pair=1)  # fmt: skip
    for kind in ("real", "synthetic"):
        stale = args.out / "eval_sup025" / kind
        stale.mkdir(parents=True)
        (stale / "results.json").write_text(json.dumps({"summaries": [{"median_px": 1.0}]}))
    monkeypatch.setattr(evaluate, "main", lambda argv: 2)
    with pytest.raises(SystemExit, match=r"evaluating .*m.onnx on 3mos:ROOT:A failed"):
        rx.evaluate(args, 0.25, tmp_path / "m.onnx")


# -- make_large_pair.py ------------------------------------------------------------------


def test_a_failed_large_pair_leaves_no_stale_truth_and_no_partial_raster(tmp_path, monkeypatch):
    """A rerun that failed while copying the SAR left the new optical beside the earlier run's
    truth_512.json (another shift), and GDAL's half-written copy under its final name."""
    import numpy as np
    from osgeo import gdal

    from scripts import make_large_pair as mlp

    first = mlp.make_large_pair(tmp_path, 512, np.random.default_rng(0), tile_px=256, n_scenes=1)
    assert first["truth"].is_file()
    old_sar = first["sar"].read_bytes()
    real = gdal.Translate

    def fails_on_the_sar(dest, src, **kwargs):
        if "sar" in Path(src).name:
            Path(dest).write_bytes(b"half a GeoTIFF")
            return None
        return real(dest, src, **kwargs)

    monkeypatch.setattr(gdal, "Translate", fails_on_the_sar)
    with pytest.raises(RuntimeError, match="GDAL could not write"):
        mlp.make_large_pair(tmp_path, 512, np.random.default_rng(1), tile_px=256, n_scenes=1)
    assert not (tmp_path / "truth_512.json").exists()
    assert first["sar"].read_bytes() == old_sar
    assert not [p.name for p in tmp_path.iterdir() if "partial" in p.name]
    with pytest.raises(SystemExit, match="make_large_pair.py: error: need n_scenes >= 1"):
        mlp.main(["--size", "512", "--tile", "256", "--scenes", "0", "--out", str(tmp_path)])


# -- build_zip.py ------------------------------------------------------------------------


def test_zip_ships_the_model_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    """--out a folder: an IsADirectoryError traceback and a .zip.partial left beside it."""
    import zipfile

    from scripts import build_zip as bz

    path = bz.build_zip(tmp_path / "p.zip")
    names = zipfile.ZipFile(path).namelist()
    assert "sar_optical_matcher/model/default.onnx" in names
    assert path.stat().st_size <= 20e6  # the plugin repository's and the brief's bound
    folder = tmp_path / "dist"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a folder; give the zip's file name"):
        bz.build_zip(folder)
    real = bz.plugin_files

    def missing_file(root=bz.ROOT):
        return [*real(root), (tmp_path / "gone.py", "gone.py")]

    monkeypatch.setattr(bz, "plugin_files", missing_file)
    with pytest.raises(FileNotFoundError):
        bz.build_zip(tmp_path / "q.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist", "p.zip"]


def _plugin_tree(root: Path) -> None:
    pkg = root / "sar_optical_matcher"
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "model" / "default.onnx").write_bytes(b"onnx")
    (pkg / "scratch.py").write_text("print('trial')\n")
    (pkg / "model" / "trial.onnx").write_bytes(b"trial")
    (root / "metadata.txt").write_text("[general]\n")
    (root / "LICENSE").write_text("license\n")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_zip_packs_only_tracked_files_of_a_checkout(tmp_path):
    """An untracked scratch script and trial model in the plugin folder went into the zip."""
    import zipfile

    from scripts import build_zip as bz

    repo = tmp_path / "repo"
    _plugin_tree(repo)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "add", "sar_optical_matcher/__init__.py",
         "sar_optical_matcher/model/default.onnx", "metadata.txt", "LICENSE"],
        check=True,
    )  # fmt: skip
    names = zipfile.ZipFile(bz.build_zip(tmp_path / "p.zip", repo)).namelist()
    assert sorted(names) == [
        "sar_optical_matcher/LICENSE",
        "sar_optical_matcher/__init__.py",
        "sar_optical_matcher/metadata.txt",
        "sar_optical_matcher/model/default.onnx",
    ]
    assert bz.untracked_files(repo) == [
        "sar_optical_matcher/model/trial.onnx",
        "sar_optical_matcher/scratch.py",
    ]
    # not the top of a checkout (a source archive unpacked inside another repository): all
    inner = repo / "unpacked"
    _plugin_tree(inner)
    names = zipfile.ZipFile(bz.build_zip(tmp_path / "q.zip", inner)).namelist()
    assert "sar_optical_matcher/scratch.py" in names and len(names) == 6
    assert bz.untracked_files(inner) == []


# -- versions ----------------------------------------------------------------------------


def test_pyproject_version_is_the_plugin_version() -> None:
    """pyproject.toml said 0.3.2 while metadata.txt released 0.3.3."""
    meta = configparser.ConfigParser()  # as QGIS reads it
    meta.read(ROOT / "metadata.txt")
    version = meta["general"]["version"]
    assert meta["general"]["changelog"].startswith(f"{version}: ")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'\nversion = "{version}"\n' in pyproject
