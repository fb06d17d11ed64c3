"""Benchmark: end-to-end Register SAR to optical on large synthetic pairs, per stage.

For each size a synthetic pair is written in bounded memory (``make_large_pair.py``: tiled
GeoTIFFs up to 8192^2, VRT mosaics above), then ONE fresh child process per size runs the
steps of the Processing algorithm (``processing/register.py``) with the same pipeline
functions: open rasters + model, keypoints (tile by tile), matching, RANSAC fit, GDAL warp,
outputs (GCP file + HTML report). It reports wall time and peak RSS (``VmHWM``) after each
stage, so memory growth can be pinned to a stage; peak RSS must not grow with the raster size.

With a model that cannot match (``--random-model``: random weights, no trained model yet) the
fit is refused, as it must be; the fit and warp stages then run on the TRUE tie points
(keypoint -> same pixel, see ``make_large_pair.py``) so that their cost is still measured, and
the table says so.

    .venv/bin/python scripts/bench_register.py --random-model --sizes 2048 4096 8192
    .venv/bin/python scripts/bench_register.py --sizes 20000 --keypoints 200
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sar_optical_matcher.core.files import check_destination, write_text_atomic  # noqa: E402
from sar_optical_matcher.model.runtime import read_contract  # noqa: E402
from scripts.bench_correspondence import (  # noqa: E402
    RANDOM_SPECS,
    check_json_destination,
    machine,
    peak_rss_mb,
    run_child,
    write_random_model,
)

STAGES = ("open", "keypoints", "matching", "fit", "warp", "outputs")
VRT_ABOVE_PX = 8192


def _generate(folder: str, size: int, fmt: str, seed: int, tile: int, queue: Any) -> None:
    """Child: write the pair (its memory is not the benchmark's)."""
    from scripts.make_large_pair import make_large_pair

    try:
        start = time.perf_counter()
        out = make_large_pair(folder, size, np.random.default_rng(seed), fmt=fmt, tile_px=tile)
        queue.put(
            {
                "optical": str(out["optical"]),
                "sar": str(out["sar"]),
                "format": fmt,
                "seconds": time.perf_counter() - start,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    except Exception as exc:  # reported by the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _model_child(folder: str, size: str, queue: Any) -> None:
    """Child: export the random model (torch stays out of the parent)."""
    try:
        queue.put(str(write_random_model(Path(folder), size)))
    except Exception as exc:  # reported by the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


class _Clock:
    """Per-stage wall time and peak RSS after each stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.rss_mb: dict[str, float] = {"start": peak_rss_mb()}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = now - self._t
        self.rss_mb[stage] = peak_rss_mb()
        self._t = time.perf_counter()


def _fit(reg: Any, ties: Any, xy: np.ndarray, half: int) -> tuple[Any, str]:
    """RANSAC fit; when the model's matches are refused, the fit of the true tie points."""
    try:
        return reg.fit_tie_points(ties, "affine", 3.0, 8, np.random.default_rng(0), half), "ok"
    except reg.RegistrationError:
        truth = reg.TiePoints(xy.copy(), xy.copy(), np.ones(len(xy), bool), np.arange(len(xy)))
        fit = reg.fit_tie_points(truth, "affine", 3.0, 1, np.random.default_rng(0), half)
        return fit, "refused (warp from the true tie points)"


def _outputs(out: Path, ties: Any, fit: Any, result: Any, optical: Any, sar: Any) -> None:
    """The algorithm's file outputs besides the raster: GCP file and HTML report."""
    from sar_optical_matcher import report as rep
    from sar_optical_matcher.processing.register import report_data, write_gcp_file

    write_gcp_file(str(out / "registered.points"), ties, fit, optical, sar)
    settings = SimpleNamespace(
        correspondence=SimpleNamespace(sar_path=sar.path, optical_path=optical.path,
                                       match=SimpleNamespace(model_path="benchmark")),
        residual_threshold_px=3.0, seed=0,
    )  # fmt: skip
    rep.write_report(out / "report.html", report_data(settings, ties, fit, result, optical))


def _register(job: dict[str, Any], queue: Any) -> None:
    """Child: the Register SAR to optical steps on one pair, timed stage by stage."""
    try:
        queue.put(_register_steps(job))
    except Exception as exc:  # reported by the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _register_steps(job: dict[str, Any]) -> dict[str, Any]:
    """Open, keypoints, matching, fit, warp, outputs; wall time and peak RSS per stage."""
    import warnings

    warnings.filterwarnings("ignore", message="Unable to import Axes3D")
    # What a QGIS session has loaded before the algorithm starts: not timed as a stage.
    import matplotlib.pyplot  # noqa: F401
    import onnxruntime  # noqa: F401
    from osgeo import gdal

    import sar_optical_matcher.processing.register  # noqa: F401
    from sar_optical_matcher import rasters
    from sar_optical_matcher import registration as reg
    from sar_optical_matcher.model.runtime import read_contract

    clock = _Clock()
    optical, sar = rasters.open_raster(job["optical"], 1), rasters.open_raster(job["sar"], 1)
    c = read_contract(job["model"])
    match = reg.MatchSettings(job["model"], c.template_size, c.search_size, device=job["device"],
                              batch_size=job["batch"], keep_maps=True)  # fmt: skip
    matcher = reg.load_matcher(match)
    clock.lap("open")
    border = c.search_size
    side = max(optical.width - 2 * border, 1)
    spacing = float(np.clip(side / np.sqrt(job["keypoints"]) / 1.5, 16, 128))
    detect = reg.DetectSettings(band=1, min_distance_px=spacing, max_count=job["keypoints"],
                                border_px=border)  # fmt: skip
    xy = reg.detect_keypoints_tiled(optical, detect).xy_px
    clock.lap("keypoints")
    result = reg.compute_matches(optical, 1, sar, 1, xy, matcher, match)
    clock.lap("matching")
    ties = reg.TiePoints.from_records(result.records)
    fit, status = _fit(reg, ties, xy, (c.search_size - c.template_size) // 2)
    corners = np.array([[0, 0], [optical.width, 0], [0, optical.height],
                        [optical.width, optical.height]], float)  # fmt: skip
    error = float(np.abs(fit.transform.apply(corners) - corners).max())
    clock.lap("fit")
    out = Path(job["out"])
    reg.warp_sar(sar, optical, fit, out / "registered.tif", reg.WarpSettings())
    clock.lap("warp")
    _outputs(out, ties, fit, result, optical, sar)
    clock.lap("outputs")
    return {
        "size_px": optical.width, "keypoints": len(xy), "min_distance_px": spacing,
        "accepted": int(ties.accepted.sum()), "inliers": int(fit.inliers.sum()),
        "fit": status, "fit_max_error_px": error, "seconds": clock.seconds,
        "total_seconds": sum(clock.seconds.values()), "peak_rss_mb": clock.rss_mb,
        "provider": matcher.provider, "gdal_cachemax_mb": gdal.GetCacheMax() / 2**20,
        "output_mb": (out / "registered.tif").stat().st_size / 2**20,
    }  # fmt: skip


def bench_size(args: argparse.Namespace, size: int, model: str, work: Path) -> dict[str, Any]:
    """Generate one pair, register it in a fresh process, delete the outputs."""
    fmt = args.format if args.format != "auto" else ("vrt" if size > VRT_ABOVE_PX else "gtiff")
    folder = work / f"pair_{size}"
    data = run_child(_generate, str(folder), size, fmt, args.seed, args.tile)
    out = work / f"out_{size}"
    out.mkdir(parents=True, exist_ok=True)
    job = {"optical": data["optical"], "sar": data["sar"], "model": model, "out": str(out),
           "device": args.device, "batch": args.batch, "keypoints": args.keypoints}  # fmt: skip
    figures = run_child(_register, job)
    figures.update(format=fmt, generate_seconds=data["seconds"])
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    return figures


def format_table(rows: list[dict[str, Any]]) -> str:
    """One line per size: stage times (s), total, peak RSS after each stage (MiB)."""
    head = (f"{'size':>6} {'fmt':>5} {'kp':>4} {'inl':>4} "
            + "".join(f"{s[:8]:>9}" for s in STAGES) + f"{'total s':>9}  peak RSS MiB "
            + "/".join(STAGES) + "  fit")  # fmt: skip
    lines = [head]
    for r in rows:
        rss = "/".join(f"{r['peak_rss_mb'][s]:.0f}" for s in STAGES)
        lines.append(
            f"{r['size_px']:>6} {r['format']:>5} {r['keypoints']:>4} {r['inliers']:>4} "
            + "".join(f"{r['seconds'][s]:>9.2f}" for s in STAGES)
            + f"{r['total_seconds']:>9.1f}  {rss}  {r['fit']}, max err "
            f"{r['fit_max_error_px']:.2f} px"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--size", type=int, default=None, help="one size (e.g. 20000), overrides")
    p.add_argument("--keypoints", type=int, default=200, help="keypoints to detect (100..400)")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: shipped)")
    p.add_argument("--random-model", nargs="?", const="default", choices=sorted(RANDOM_SPECS))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--batch", type=int, default=8, help="keypoints per matching batch")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "gtiff", "vrt"],
        help="pair format (auto: GeoTIFF up to 8192 px, VRT mosaic above)",
    )
    p.add_argument("--tile", type=int, default=512, help="side of the synthetic scenes tiled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    p.add_argument("--keep", action="store_true", help="keep pairs and outputs")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)
    if args.size is not None:
        args.sizes = [args.size]
    if args.keypoints < 1 or args.batch < 1 or args.tile < 256 or min(args.sizes) < args.tile:
        p.error("need --keypoints >= 1, --batch >= 1, --tile >= 256 and every size >= --tile")
    check_json_destination(p, args.json)
    # before the pairs are generated (minutes at 20,000 px), not in the child after them
    try:
        if args.workdir is not None:
            check_destination(args.workdir, folder=True)
        if args.model is not None:
            read_contract(args.model)
    except (ValueError, RuntimeError) as exc:  # ModelError, MissingDependencyError
        p.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every size, print the table, return the figures."""
    import onnxruntime

    from sar_optical_matcher.model.runtime import default_model_path

    args = parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_register_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.random_model:
            model = run_child(_model_child, str(work), args.random_model)
        else:
            model = str(args.model or default_model_path())
        print(
            f"machine: {machine()}; onnxruntime {onnxruntime.__version__}; model "
            f"{args.random_model and 'random ' + args.random_model or model}",
            flush=True,
        )
        rows = []
        for size in args.sizes:
            rows.append(bench_size(args, size, model, work))
            print(format_table(rows[-1:]).splitlines()[-1] if rows[1:] else format_table(rows),
                  flush=True)  # fmt: skip
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(format_table(rows))
    if args.json:
        write_text_atomic(args.json, json.dumps({"machine": machine(), "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
