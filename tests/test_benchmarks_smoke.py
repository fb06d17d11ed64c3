"""Smoke tests of the benchmark scripts on tiny settings (no timing assertions).

Each script runs end to end as a user runs it (a subprocess) with a tiny random model, prints
its table and writes its JSON; the figures that do not depend on the machine are checked:
dense and per-window maps agree, a random model is refused by the registration, the large pair
generator's mosaics and geotransforms hold the ground truth the benchmark relies on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from scripts.make_large_pair import make_large_pair, sar_geotransform

ROOT = Path(__file__).resolve().parent.parent


def _run(script: str, *args: str) -> str:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_bench_correspondence_tiny(tmp_path: Path) -> None:
    out = tmp_path / "corr.json"
    text = _run(
        "bench_correspondence.py",
        "--random-model",
        "tiny",
        "--reference-keypoints",
        "2",
        "--dense-keypoints",
        "4",
        "--batch",
        "2",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    for row in ("per-window (runtime)", "per-window (paper)", "dense batched", "x paper"):
        assert row in text
    fig = json.loads(out.read_text())
    for path in ("per_window", "per_window_strided"):
        assert fig["max_abs_map_difference_vs_dense"][path] <= 1e-4
        assert fig["same_peak_every_keypoint"][path] is True
    assert fig["provider"] == "CPUExecutionProvider"
    flop = fig["gflop_per_keypoint"]
    # tiny model, 17 x 17 windows: the paper's strided encoder does less work per window than
    # the dense graph run on one window, and the dense map shares work between the windows
    assert flop["per_window"] > flop["per_window_strided"] > 5 * flop["dense"] > 0
    assert fig["windows_timed"] == dict.fromkeys(fig["keypoints"], 17 * 17)
    assert all(v > 0 for v in fig["peak_rss_mb"].values())


def test_bench_correspondence_tiny_code_map_model(tmp_path: Path) -> None:
    """A code-map model: no pooling to undo, so both per-window paths are the same encoder."""
    out = tmp_path / "corr.json"
    args = ["--random-model", "tiny-map", "--reference-keypoints", "1", "--dense-keypoints", "2"]
    _run("bench_correspondence.py", *args, "--batch", "2", "--threads", "1", "--json", str(out))
    fig = json.loads(out.read_text())
    for path in ("per_window", "per_window_strided"):
        assert fig["max_abs_map_difference_vs_dense"][path] <= 1e-4
        assert fig["same_peak_every_keypoint"][path] is True
    flop = fig["gflop_per_keypoint"]
    assert flop["per_window"] == flop["per_window_strided"] > 5 * flop["dense"] > 0


def test_bench_correspondence_partial_reference(tmp_path: Path) -> None:
    out = tmp_path / "corr.json"
    text = _run(
        "bench_correspondence.py",
        "--random-model",
        "tiny",
        "--reference-windows",
        "50",
        "--dense-keypoints",
        "1",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    assert "extrapolated" in text
    fig = json.loads(out.read_text())
    # 50 rounded up to one whole batch of 256 of the 289 windows (the full map's batch size)
    assert fig["windows_timed"]["per_window_strided"] == 256
    assert fig["same_peak_every_keypoint"]["per_window_strided"] is None
    assert fig["max_abs_map_difference_vs_dense"]["per_window_strided"] <= 1e-4


def test_bench_correspondence_cuda_without_gpu_is_a_clear_error() -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("a CUDA onnxruntime is installed here")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_correspondence.py"), "--random-model",
         "tiny", "--device", "cuda", "--reference-keypoints", "1", "--dense-keypoints", "1"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "onnxruntime-gpu" in proc.stderr


def test_bench_register_tiny(tmp_path: Path) -> None:
    out = tmp_path / "reg.json"
    text = _run(
        "bench_register.py",
        "--random-model",
        "tiny",
        "--sizes",
        "512",
        "--tile",
        "256",
        "--keypoints",
        "30",
        "--json",
        str(out),
    )
    assert "open/keypoints/matching/fit/warp/outputs" in text
    (row,) = json.loads(out.read_text())["rows"]
    assert row["size_px"] == 512 and row["format"] == "gtiff"
    assert 7 <= row["keypoints"] <= 30
    # random weights cannot match: the registration refuses, the warp uses the true tie points
    assert row["fit"].startswith("refused")
    assert row["fit_max_error_px"] < 1e-6
    assert set(row["seconds"]) == {"open", "keypoints", "matching", "fit", "warp", "outputs"}
    assert row["output_mb"] > 0


def test_bench_train_step_tiny(tmp_path: Path) -> None:
    out = tmp_path / "new" / "train.json"  # its folder was not created: FileNotFoundError
    text = _run("bench_train_step.py", "--tiny", "--steps", "1", "--threads", "1",
                "--json", str(out))  # fmt: skip
    rows = (
        "shipped, fp32 (w_recon 1, w_adv 0.1)",
        "matching terms only, fp32 (w_recon 0, w_adv 0)",
        "all terms computed",
        "bf16 autocast",
    )
    for row in rows:
        assert row in text
    fig = json.loads(out.read_text())
    assert fig["batch_size"] == 4 and fig["threads"] == 1
    assert len(fig["seconds_per_step"]) == 4
    assert all(0 < s < 60 for s in fig["seconds_per_step"].values())


def test_sar_geotransform_places_pixels_as_stated() -> None:
    shift, affine = np.array([7.5, -3.25]), np.array([[4e-4, -2e-4], [1e-4, 3e-4]])
    gt = sar_geotransform(1000, 10.0, shift, affine)
    p = np.array([[0.0, 0.0], [1000.0, 250.0], [333.0, 999.0]])
    sar_map = np.column_stack([gt[0] + p[:, 0] * gt[1] + p[:, 1] * gt[2],
                               gt[3] + p[:, 0] * gt[4] + p[:, 1] * gt[5]])  # fmt: skip
    q = p + shift + (p - 500.0) @ affine.T
    opt_map = np.column_stack([500_000.0 + 10.0 * q[:, 0], 5_200_000.0 - 10.0 * q[:, 1]])
    np.testing.assert_allclose(sar_map, opt_map, atol=1e-6)


def test_large_pair_mosaics_share_their_layout(tmp_path: Path) -> None:
    out = make_large_pair(tmp_path, 600, np.random.default_rng(3), fmt="vrt", tile_px=256,
                          n_scenes=3)  # fmt: skip
    opt = gdal.Open(str(out["optical"])).ReadAsArray()
    sar = gdal.Open(str(out["sar"])).ReadAsArray()
    assert opt.shape == (3, 600, 600) and sar.shape == (600, 600)
    tiles = [
        (
            gdal.Open(str(tmp_path / f"tile{k}_optical.tif")).ReadAsArray(),
            gdal.Open(str(tmp_path / f"tile{k}_sar.tif")).ReadAsArray(),
        )
        for k in range(3)
    ]
    for y in range(0, 600, 256):
        for x in range(0, 600, 256):
            block = opt[:, y : y + 256, x : x + 256]
            h, w = block.shape[1:]
            k = next(k for k, (o, _) in enumerate(tiles) if np.array_equal(o[:, :h, :w], block))
            np.testing.assert_array_equal(sar[y : y + h, x : x + w], tiles[k][1][:h, :w])
    truth = json.loads(out["truth"].read_text())
    assert truth["sar_px_to_optical_px"] == "identity"
    np.testing.assert_allclose(truth["shift_px"], out["shift_px"])


def test_bench_keypoints_tiny() -> None:
    """Four tiles (2400 px) settled after each (--flush-min 1): the streaming merge really drops
    points as the tiles come (at the default 65,536 a small raster was merged once, at the
    end, so "identical" compared one merge with another), and still matches the held one."""
    text = _run("bench_keypoints.py", "--size", "2400", "--max-count", "100", "--spacing", "48",
                "--flush-min", "1")  # fmt: skip
    assert "held and stream: identical keypoints" in text
    assert text.count(" px ") == 3  # one line per variant
    held = {
        m.group(1): (int(m.group(2).replace(",", "")), int(m.group(3).replace(",", "")))
        for m in re.finditer(r"px +(\w+):.*held at most ([\d,]+) of ([\d,]+) points", text)
    }
    assert held["held"][0] == held["held"][1] > 10_000
    assert held["stream"][0] < held["stream"][1] == held["held"][1]


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        # 0 was taken as "all m*m windows": a 4 GB, multi-minute map
        ("bench_correspondence", ["--reference-windows", "0"], "--reference-windows"),
        # tracebacks before
        ("bench_train_step", ["--threads", "-1"], "--threads >= 0, got 5 and -1"),
        ("bench_train_step", ["--device", "gpu"], "invalid choice: 'gpu'"),
        ("bench_train_step", ["--config", "/nonexistent/x.yaml"], "not found"),
        ("bench_register", ["--workdir", "{file}/sub"], "is a file|not a folder|cannot"),
        # refused only after the pair was generated (minutes at 20,000 px)
        ("bench_register", ["--batch", "0"], "--batch >= 1"),
        ("bench_register", ["--model", "{tmp}/none.onnx"], "does not exist"),
    ],
)
def test_benchmarks_refuse_bad_arguments_up_front(
    script: str, argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import importlib

    (tmp_path / "afile").write_text("x")
    argv = [a.format(file=tmp_path / "afile", tmp=tmp_path) for a in argv]
    module = importlib.import_module(f"scripts.{script}")
    entry = getattr(module, "parse_args", None) or module.main
    with pytest.raises(SystemExit) as info:
        entry(argv)
    assert info.value.code == 2
    assert re.search(message, capsys.readouterr().err), message


def test_bench_window_chunks_are_the_windows_in_raster_order() -> None:
    """``_windows`` copies one batch (the reshape of the whole view had copied all m*m)."""
    from scripts.bench_correspondence import _windows

    region = np.random.default_rng(0).random((20, 20)).astype(np.float32)
    every = np.lib.stride_tricks.sliding_window_view(region, (8, 8)).reshape(-1, 8, 8)
    for first, stop in ((0, 1), (5, 37), (160, 169)):
        chunk = _windows(region, 8, first, stop)
        assert chunk.shape == (stop - first, 1, 8, 8) and chunk.flags.c_contiguous
        np.testing.assert_array_equal(chunk[:, 0], every[first:stop])
