"""Benchmark: correspondence maps, per-window reference (the paper) vs the dense engine.

Same model, same inputs, side by side in one run: per-keypoint latency, keypoints/s, the speed
ratio, peak memory (RSS of a fresh child process per path) and the FLOP count of each path
(counted from the ONNX graph's Conv/Gemm/MatMul nodes with the actual input shapes). Also checks
that both paths give the same maps (max abs difference, same peak) and runs a batched variant
of the dense engine (many keypoints per onnxruntime call). Prints a table; ``--json`` writes
the figures.

    .venv/bin/python scripts/bench_correspondence.py                  # default model, CPU
    .venv/bin/python scripts/bench_correspondence.py --random-model   # no trained model yet
    .venv/bin/python scripts/bench_correspondence.py --device cuda --peak-tflops 67
    .venv/bin/python scripts/bench_correspondence.py --random-model tiny   # smoke test sizes
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sar_optical_matcher.core.correlation import normalised_descriptors  # noqa: E402
from sar_optical_matcher.core.files import check_destination, write_text_atomic  # noqa: E402
from sar_optical_matcher.model.runtime import (  # noqa: E402
    WINDOW_BATCH,
    MissingDependencyError,
    OnnxMatcher,
    default_model_path,
    read_contract,
)

#: (EncoderSpec keyword arguments, search size) of the random models ``--random-model`` writes.
RANDOM_SPECS: dict[str, tuple[dict[str, Any], int]] = {
    # the shipped architecture (training/configs/default.yaml): a 16 x 114 x 114 code map
    "default": ({"latent": "map", "widths": (32, 32), "convs_per_stage": (3, 2),
                 "descriptor_size": 16, "front_end": "oriented_gradients"}, 256),
    # the paper's vector code (the 0.1 models): 256 numbers per 128 px window
    "vector": ({}, 256),
    # 18 -> 16 -> 8 -> 6 -> 3: the smallest valid-conv encoder; search 34 gives a 17 x 17 map.
    "tiny": ({"widths": (4, 8), "convs_per_stage": (1, 1), "descriptor_size": 16,
              "patch_size": 18}, 34),
    # receptive field 9 of an 18 px template: a 10 x 10 x 4 code map
    "tiny-map": ({"latent": "map", "widths": (4, 6), "convs_per_stage": (2, 1),
                  "descriptor_size": 4, "patch_size": 18}, 34),
}  # fmt: skip


def check_json_destination(parser: argparse.ArgumentParser, path: Path | None) -> None:
    """``parser.error`` when ``--json`` cannot be written: said before the benchmark, not after."""
    if path is not None:
        try:
            check_destination(path)
        except ValueError as exc:
            parser.error(f"--json: {exc}")


def write_random_model(folder: Path, size: str = "default", seed: int = 0) -> Path:
    """Export a randomly initialised matcher of the default (or a tiny) architecture.

    BatchNorm statistics are calibrated on smooth random images so that the descriptors do not
    collapse onto one direction (cosines spread over [-1, 1], maps have a distinct peak).

    Args:
        folder: where ``random_<size>.onnx`` is written.
        size: a key of :data:`RANDOM_SPECS`: ``"default"`` (the shipped code-map architecture,
            template 128, search 256), ``"vector"`` (the paper's vector code), ``"tiny"`` or
            ``"tiny-map"``.
        seed: torch seed of the weights.

    Returns:
        The model path.
    """
    import torch

    from sar_optical_matcher.model.contract import ModelContract
    from training.export import export_onnx
    from training.models import Encoder, EncoderSpec

    if size not in RANDOM_SPECS:
        raise ValueError(f"size must be one of {sorted(RANDOM_SPECS)}, not {size!r}")
    kwargs, search = RANDOM_SPECS[size]
    spec = EncoderSpec(**kwargs)
    torch.manual_seed(seed)
    encoders = []
    for _ in range(2):
        enc = Encoder(spec)
        smooth = torch.nn.functional.avg_pool2d(
            torch.randn(8, 1, spec.patch_size + 8, spec.patch_size + 8), 9, stride=1
        )
        for module in enc.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # cumulative average over the calibration pass
        with torch.no_grad():
            enc.train()(smooth / smooth.std())
        encoders.append(enc.eval())
    contract = ModelContract(
        name=f"random-{size}", version="0.0-bench", template_size=spec.patch_size,
        search_size=search, descriptor_size=spec.descriptor_size, code_size=spec.code_size,
    )  # fmt: skip
    return export_onnx(encoders[0], encoders[1], contract, Path(folder) / f"random_{size}.onnx")


def count_macs(model_path: Path, optical_shape: tuple, sar_shape: tuple) -> tuple[float, float]:
    """Multiply-accumulates of the optical and the SAR branch for the given input shapes."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(model_path))
    for inp, shape in zip(model.graph.input, (optical_shape, sar_shape)):
        for d, v in zip(inp.type.tensor_type.shape.dim, shape):
            d.ClearField("dim_param")
            d.dim_value = v
    inferred = shape_inference.infer_shapes(model)
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in list(inferred.graph.value_info)
        + list(inferred.graph.input)
        + list(inferred.graph.output)
    }
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    branch_of = _branch_of_nodes(model)
    macs = {"optical": 0.0, "sar": 0.0}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        out = shapes.get(node.output[0])
        w = weights.get(node.input[1])
        if not out or not w:
            continue
        per_output = float(np.prod(w[1:])) if node.op_type == "Conv" else float(w[0])
        macs[branch_of.get(node.name, "sar")] += float(np.prod(out)) * per_output
    return macs["optical"], macs["sar"]


def _branch_of_nodes(model: Any) -> dict[str, str]:
    """Which graph input each node depends on (the two branches are independent)."""
    inputs = [i.name for i in model.graph.input]
    producer = {o: n for n in model.graph.node for o in n.output}
    memo: dict[str, str] = {}

    def branch(tensor: str) -> str | None:
        if tensor in inputs:
            return "optical" if tensor == inputs[0] else "sar"
        node = producer.get(tensor)
        if node is None:
            return None
        if node.name not in memo:
            for t in node.input:
                b = branch(t)
                if b:
                    memo[node.name] = b
                    break
        return memo.get(node.name)

    for n in model.graph.node:
        branch(n.output[0])
    return memo


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB).

    ``VmHWM`` of ``/proc/self/status`` where available: ``ru_maxrss`` also counts the RSS the
    process had when it was forked from its (possibly large) parent, before its ``exec``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    scale = 2.0**20 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _inputs(n: int, t: int, s: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random templates (n, t, t) and regions (n, s, s), standardised, float32."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    tpl = ndimage.uniform_filter(rng.standard_normal((n, t, t)), (0, 5, 5))
    reg = ndimage.uniform_filter(rng.standard_normal((n, s, s)), (0, 5, 5))
    return (tpl / tpl.std()).astype(np.float32), (reg / reg.std()).astype(np.float32)


def strided_model(path: Path) -> Any:
    """The paper's per-window encoder with the same weights: pooling stride 2, no dilation.

    The exported graph evaluates the encoder densely (stride-1 pooling, dilated convolutions);
    on a T x T window that computes every intermediate position at full resolution. Setting the
    pooling strides to 2 and all dilations to 1 gives back the plain strided encoder of one
    window (``training.models.Encoder``), i.e. the cost of the paper's procedure. A code-map
    encoder (``latent: map``) has no pooling: its graph on one window is already the plain
    per-window encoder, and is returned unchanged.
    """
    import onnx

    model = onnx.load(str(path))
    if not any(node.op_type == "MaxPool" for node in model.graph.node):
        return model  # a code-map encoder: no pooling, its dilations are its own; nothing to undo
    del model.graph.value_info[:]
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type in ("Conv", "MaxPool") and attr.name == "dilations":
                attr.ints[:] = [1] * len(attr.ints)
            elif node.op_type == "MaxPool" and attr.name == "strides":
                attr.ints[:] = [2] * len(attr.ints)
    return model


def _strided_session(model: Path, matcher: OnnxMatcher, threads: int | None) -> Any:
    """An onnxruntime session of :func:`strided_model` on the matcher's provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    proto = strided_model(model).SerializeToString()
    providers = [matcher.provider] + (["CPUExecutionProvider"] if matcher.provider !=
                                      "CPUExecutionProvider" else [])  # fmt: skip
    return ort.InferenceSession(proto, sess_options=options, providers=providers)


def _windows(region: np.ndarray, t: int, first: int, stop: int) -> np.ndarray:
    """(stop - first, 1, t, t) copy of windows ``first..stop`` (raster order) of ``region``.

    Only these windows are copied, as ``model.runtime``'s per-window loop does: a reshape of
    the (m, m, t, t) view to (m * m, t, t) copies all of them (1.1 GB for T = 128, S = 256),
    and that copy counted in the per-window paths' peak RSS.
    """
    view = np.lib.stride_tricks.sliding_window_view(region, (t, t))
    rows, cols = np.divmod(np.arange(first, stop), view.shape[1])
    return np.ascontiguousarray(view[rows, cols][:, None])


def _window_maps(
    run: Any, templates: np.ndarray, regions: np.ndarray, n_win: int
) -> tuple[np.ndarray, float, float]:
    """(n, m, m) maps from per-window descriptors; only the first ``n_win`` windows (rest NaN).

    ``run(optical (B, 1, T, T), sar (B, 1, T, T)) -> (optical (B, L), sar (B, L))``, unit
    descriptors of L = D k^2 numbers. Returns the maps, the seconds spent on the templates'
    descriptors (once per keypoint, whatever ``n_win``) and the seconds spent on the windows
    (the part that grows with ``n_win``, the only part to extrapolate to the full map).
    """
    t = templates.shape[1]
    m = regions.shape[1] - t + 1
    maps = np.full((len(templates), m * m), np.nan, np.float32)
    template_s = windows_s = 0.0
    for k, (tpl, reg) in enumerate(zip(templates, regions)):
        start = time.perf_counter()
        opt = run(tpl[None, None], _windows(reg, t, 0, 1))[0][0]
        template_s += time.perf_counter() - start
        start = time.perf_counter()
        for first in range(0, n_win, WINDOW_BATCH):
            chunk = _windows(reg, t, first, min(first + WINDOW_BATCH, n_win))
            maps[k, first : first + len(chunk)] = run(tpl[None, None], chunk)[1] @ opt
        windows_s += time.perf_counter() - start
    return maps.reshape(-1, m, m), template_s, windows_s


def timed_windows(requested: int | None, m2: int) -> int:
    """Windows a per-window path times: whole batches of :data:`WINDOW_BATCH`, at most m2.

    The full map is encoded in batches of ``WINDOW_BATCH`` windows; timing a partial batch (say
    50 windows) and scaling it up would extrapolate one call's fixed cost as if every 50
    windows paid it, and time a batch size the full map never runs.
    """
    if not requested:
        return m2
    return min(-(-requested // WINDOW_BATCH) * WINDOW_BATCH, m2)


def _warm_up_windows(run: Any, templates: np.ndarray, regions: np.ndarray, n_win: int) -> None:
    """One untimed call of each shape a per-window path runs (template, a batch of windows)."""
    t = templates.shape[1]
    run(templates[:1, None], _windows(regions[0], t, 0, 1))
    run(templates[:1, None], _windows(regions[0], t, 0, min(WINDOW_BATCH, n_win)))


def _time_path(job: dict[str, Any]) -> dict[str, Any]:
    """Time one path on its inputs; returns maps, seconds (extrapolated to full maps), RSS.

    Each path is warmed up by an untimed call of its own (so a per-window path's peak RSS is
    its own, never that of a dense pass); the per-window paths extrapolate only their window
    batches to the full map, the templates' descriptors are counted once per keypoint.
    """
    matcher = OnnxMatcher(job["model"], device=job["device"], threads=job["threads"],
                          log=lambda _m: None)  # fmt: skip
    c = matcher.contract
    n, batch, method = job["n"], job["batch"], job["method"]
    templates, regions = _inputs(n, c.template_size, c.search_size, job["seed"])
    m2 = c.map_size**2
    n_win = timed_windows(job.get("windows"), m2)
    if method == "per_window_strided":
        session = _strided_session(job["model"], matcher, job["threads"])

        def run(opt: np.ndarray, sar: np.ndarray) -> list[np.ndarray]:
            out = session.run([c.optical_output, c.sar_output],
                              {c.optical_input: opt, c.sar_input: sar})  # fmt: skip
            return [normalised_descriptors(o) for o in out]

    else:

        def run(opt: np.ndarray, sar: np.ndarray) -> list[np.ndarray]:
            return [
                matcher.optical_descriptors(opt[:, 0]),
                matcher.sar_descriptors_windows(sar[:, 0]),
            ]

    # Timed dense paths smooth as the model says (what users run); the maps the paths are
    # compared on (``raw``) are the cosines themselves, as the per-window paths compute them.
    smoothing = 0.0 if job.get("raw") else None
    rss_loaded = peak_rss_mb()
    if method == "dense":
        warm = min(batch, n)
        matcher.correspondence_maps(templates[:warm], regions[:warm], method="dense",
                                    batch_size=warm, smoothing_px=smoothing)  # fmt: skip
        start = time.perf_counter()
        maps = matcher.correspondence_maps(
            templates, regions, method="dense", batch_size=batch, smoothing_px=smoothing
        )
        seconds = time.perf_counter() - start
    else:
        _warm_up_windows(run, templates, regions, n_win)
        if method == "per_window" and n_win == m2:  # the runtime's own reference loop
            start = time.perf_counter()
            maps = matcher.correspondence_maps(
                templates, regions, method="per_window", smoothing_px=0.0
            )
            seconds = time.perf_counter() - start
        else:
            maps, template_s, windows_s = _window_maps(run, templates, regions, n_win)
            seconds = template_s + windows_s * m2 / n_win
    return {"maps": maps, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
            "loaded_rss_mb": rss_loaded, "provider": matcher.provider,
            "windows": n_win if method != "dense" else m2}  # fmt: skip


def _run_path(job: dict[str, Any], queue: Any) -> None:
    """Child process: :func:`_time_path`, errors reported to the parent."""
    try:
        queue.put(_time_path(job))
    except Exception as exc:  # reported by the parent, with the child's message
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_child(target: Any, *args: Any, poll_s: float = 1.0) -> Any:
    """Run ``target(*args, queue)`` in a fresh (spawned) process; return what it puts.

    A child that dies without reporting (killed for memory, an uncaught error, ``os._exit``)
    is a clear error, not a parent waiting forever on an empty queue. A reported
    ``{"error": ...}`` stops the benchmark with the child's message.
    """
    import queue as queues

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    while True:
        try:
            result = queue.get(timeout=poll_s)
            break
        except queues.Empty:
            if proc.is_alive():
                continue
            try:  # it may have reported just before it exited
                result = queue.get(timeout=poll_s)
                break
            except queues.Empty:
                proc.join()
                raise SystemExit(
                    f"benchmark child exited with code {proc.exitcode} before reporting "
                    "(a negative code is the signal that killed it, -9 often the "
                    "out-of-memory killer: try fewer keypoints, windows or a smaller batch)"
                ) from None
    proc.join()
    if isinstance(result, dict) and "error" in result:
        raise SystemExit(f"benchmark child failed: {result['error']}")
    return result


def run_in_child(**job: Any) -> dict:
    """Run :func:`_run_path` in a fresh process so that its peak RSS is its own."""
    return run_child(_run_path, job)


def flop_counts(model: Path) -> dict[str, float]:
    """FLOPs (2 x MACs) per keypoint of each path: one template + one full map."""
    c = read_contract(model)
    t, s, m = c.template_size, c.search_size, c.map_size
    opt_macs, win_macs = count_macs(model, (1, 1, t, t), (1, 1, t, t))
    _, dense_macs = count_macs(model, (1, 1, t, t), (1, 1, s, s))
    with tempfile.TemporaryDirectory() as tmp:
        import onnx

        strided = Path(tmp) / "strided.onnx"
        onnx.save(strided_model(model), str(strided))
        opt_strided, win_strided = count_macs(strided, (1, 1, t, t), (1, 1, t, t))
    dense = 2 * (dense_macs + opt_macs)
    return {"per_window": 2 * (win_macs * m * m + opt_macs),
            "per_window_strided": 2 * (win_strided * m * m + opt_strided),
            "dense": dense, "dense_batched": dense}  # fmt: skip


def _same(a: np.ndarray, b: np.ndarray) -> tuple[float, bool | None]:
    """Max abs difference where both maps are computed; same argmax (None if partial)."""
    both = np.isfinite(a) & np.isfinite(b)
    diff = float(np.abs(a[both] - b[both]).max())
    if not both.all():
        return diff, None
    return diff, bool(all(np.argmax(x) == np.argmax(y) for x, y in zip(a, b)))


def measure(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    """Run the four child processes and collect the figures."""
    common = {"model": model, "device": args.device, "threads": args.threads}
    n_ref, n_dense = args.reference_keypoints, args.dense_keypoints
    ref_job = dict(common, n=n_ref, batch=1, seed=0, windows=args.reference_windows)
    runs = {
        "per_window": run_in_child(**ref_job, method="per_window"),
        "per_window_strided": run_in_child(**ref_job, method="per_window_strided"),
        "dense": run_in_child(**common, method="dense", n=n_dense, batch=1, seed=1),
        "dense_batched": run_in_child(**common, method="dense", n=n_dense, batch=args.batch,
                                      seed=1),
        "dense_same_inputs": run_in_child(**ref_job, method="dense", raw=True),
    }  # fmt: skip
    same = runs.pop("dense_same_inputs")["maps"]
    flops = flop_counts(model)
    counts = {"per_window": n_ref, "per_window_strided": n_ref, "dense": n_dense,
              "dense_batched": n_dense}  # fmt: skip
    per_kp = {k: runs[k]["seconds"] / counts[k] for k in counts}
    checks = {k: _same(runs[k]["maps"], same) for k in ("per_window", "per_window_strided")}
    return {
        "provider": runs["dense"]["provider"],
        "seconds_per_keypoint": per_kp,
        "keypoints_per_second": {k: 1.0 / v for k, v in per_kp.items()},
        "speedup_vs_paper_per_window": {k: per_kp["per_window_strided"] / per_kp[k]
                                        for k in per_kp},
        "speedup_vs_runtime_per_window": {k: per_kp["per_window"] / per_kp[k] for k in per_kp},
        "peak_rss_mb": {k: runs[k]["peak_rss_mb"] for k in per_kp},
        "rss_after_model_load_mb": {k: runs[k]["loaded_rss_mb"] for k in per_kp},
        "gflop_per_keypoint": {k: flops[k] / 1e9 for k in per_kp},
        "achieved_gflops": {k: flops[k] / 1e9 / per_kp[k] for k in per_kp},
        "windows_timed": {k: runs[k]["windows"] for k in per_kp},
        "max_abs_map_difference_vs_dense": {k: v[0] for k, v in checks.items()},
        "same_peak_every_keypoint": {k: v[1] for k, v in checks.items()},
        "keypoints": counts,
        "batch": args.batch,
    }  # fmt: skip


def machine() -> str:
    """CPU model, logical CPUs, RAM and load average, for the record."""
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in text.splitlines()
                   if line.startswith("model name"))  # fmt: skip
    except (OSError, StopIteration):
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} logical CPUs, {ram:.0f} GiB RAM, load average {load}"


ROW_NAMES = {"per_window": "per-window (runtime)", "per_window_strided": "per-window (paper)",
             "dense": "dense", "dense_batched": "dense batched"}  # fmt: skip


def format_table(fig: dict[str, Any], peak_tflops: float | None = None) -> str:
    """The human-readable table of :func:`measure`'s figures."""
    lines = [
        f"model {fig['model']}  provider {fig['provider']}  onnxruntime {fig['onnxruntime']}",
        f"machine: {fig['machine']}  threads: {fig['threads'] or 'all'}  batch: {fig['batch']}",
        f"{'path':<22}{'kp':>4}{'windows':>8}{'s/keypoint':>12}{'kp/s':>10}{'GFLOP/kp':>10}"
        f"{'GFLOP/s':>9}{'peak RSS MiB':>13}{'x paper':>9}{'x runtime':>10}",
    ]
    for key, n in fig["keypoints"].items():
        lines.append(
            f"{ROW_NAMES[key]:<22}{n:>4d}{fig['windows_timed'][key]:>8d}"
            f"{fig['seconds_per_keypoint'][key]:>12.4f}{fig['keypoints_per_second'][key]:>10.3g}"
            f"{fig['gflop_per_keypoint'][key]:>10.4g}{fig['achieved_gflops'][key]:>9.3g}"
            f"{fig['peak_rss_mb'][key]:>13.0f}{fig['speedup_vs_paper_per_window'][key]:>9.1f}"
            f"{fig['speedup_vs_runtime_per_window'][key]:>10.1f}"
        )
    for key, diff in fig["max_abs_map_difference_vs_dense"].items():
        peak = fig["same_peak_every_keypoint"][key]
        lines.append(
            f"{ROW_NAMES[key]} vs dense (raw cosine maps): max |map difference| {diff:.2e}; "
            "same peak for every "
            f"keypoint: {'n/a (partial maps)' if peak is None else peak}"
        )
    if fig["windows_timed"]["per_window"] < fig["windows_timed"]["dense"]:
        lines.append("per-window times extrapolated from the windows timed (--reference-windows)")
    if peak_tflops:
        best = max(fig["achieved_gflops"].values()) / 1e3
        lines.append(f"fraction of the {peak_tflops:g} TFLOP/s peak: {best / peak_tflops:.1%}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: shipped)")
    p.add_argument(
        "--random-model", nargs="?", const="default", choices=sorted(RANDOM_SPECS),
        help="benchmark a random model of the default (or tiny) architecture",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument(
        "--reference-keypoints",
        type=int,
        default=1,
        help="keypoints for the per-window reference (slow: m*m windows each)",
    )
    p.add_argument(
        "--reference-windows",
        type=int,
        default=None,
        help="time only the first N windows of each per-window map, rounded up to whole "
        f"batches of {WINDOW_BATCH}, and extrapolate (default: all m*m)",
    )
    p.add_argument("--dense-keypoints", type=int, default=16)
    p.add_argument("--batch", type=int, default=8, help="keypoints per batch (batched run)")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="device peak (TFLOP/s) to report the fraction reached",
    )
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)
    windows = 1 if args.reference_windows is None else args.reference_windows  # None: all
    if min(args.reference_keypoints, args.dense_keypoints, args.batch, windows) < 1:
        p.error(
            "--reference-keypoints, --reference-windows, --dense-keypoints and --batch "
            "must be >= 1"
        )
    check_json_destination(p, args.json)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, return the figures."""
    import onnxruntime

    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_corr_") as tmp:
        if args.random_model:
            model = write_random_model(Path(tmp), args.random_model)
        elif args.model is not None:
            model = args.model
        else:
            model = default_model_path()
        try:
            figures = measure(args, model)
        except MissingDependencyError as exc:
            raise SystemExit(str(exc)) from exc
        label = f"random {args.random_model} architecture" if args.random_model else str(model)
    figures.update(model=label, machine=machine(), threads=args.threads, device=args.device,
                   onnxruntime=onnxruntime.__version__)  # fmt: skip
    print(format_table(figures, args.peak_tflops), flush=True)
    if args.json:
        write_text_atomic(args.json, json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
