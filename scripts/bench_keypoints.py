"""Benchmark: Register's tiled keypoint detection on a large synthetic optical raster.

One pair from ``make_large_pair.py`` (a VRT mosaic above 8192 px), then ONE fresh child
process per variant runs ``registration.detect_keypoints_tiled`` and reports its wall time
and the process's peak RSS (``VmHWM``):

- ``spread0``: SPREAD 0 (strongest first; since stop 33 the tiles pass every local maximum to
  the streaming merge, as with a spread);
- ``held``: SPREAD 0.5 with every tile's local maxima held until one merge at the end
  (``keypoints.merge_keypoints``, the detection before the streaming merge);
- ``stream``: SPREAD 0.5 with the streaming merge (``core.keypoint_merge.TileMerger``).

``held`` and ``stream`` must return the same keypoints; the table says whether they do.

    .venv/bin/python scripts/bench_keypoints.py --size 20000
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench_correspondence import machine, peak_rss_mb, run_child  # noqa: E402

VARIANTS = {"spread0": 0.0, "held": 0.5, "stream": 0.5}


def _generate(folder: str, size: int, queue: Any) -> None:
    """Child: write the pair (its memory is not the benchmark's)."""
    from scripts.make_large_pair import make_large_pair

    try:
        fmt = "vrt" if size > 8192 else "gtiff"
        out = make_large_pair(folder, size, np.random.default_rng(0), fmt=fmt)
        queue.put(str(out["optical"]))
    except Exception as exc:  # reported by the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


HELD: dict[str, int] = {"added": 0, "most": 0}  # points added to / held by the merge


class _HoldAll:
    """The merge before the streaming one: every tile's points held, one merge at the end."""

    def __init__(self, boxes: Any, *args: Any, **kwargs: Any) -> None:
        self.parts: list[Any] = []
        self.args, self.kwargs = args, kwargs

    def add(self, part: Any) -> None:
        self.parts.append(part)
        HELD["added"] += len(part)
        HELD["most"] = HELD["added"]

    def result(self) -> Any:
        from sar_optical_matcher.core.keypoints import merge_keypoints

        return merge_keypoints(self.parts, *self.args, **self.kwargs)


def _counting(base: Any) -> Any:
    """``TileMerger`` that records the points added and the most held at once."""

    class Counting(base):  # type: ignore[misc, valid-type]
        def add(self, part: Any) -> None:
            super().add(part)
            HELD["added"] += len(part)
            HELD["most"] = self.peak_held

    return Counting


def _detect(job: dict[str, Any], queue: Any) -> None:
    """Child: one detection, timed; peak RSS before (rasters open) and after."""
    try:
        from sar_optical_matcher import rasters
        from sar_optical_matcher import registration as reg

        if job["flush_min"] is not None:  # settle sooner: small rasters stream too
            reg.kp_merge._FLUSH_MIN = job["flush_min"]
        merger = _HoldAll if job["variant"] == "held" else _counting(reg.kp_merge.TileMerger)
        reg.kp_merge.TileMerger = merger  # type: ignore[misc]
        optical = rasters.open_raster(job["optical"], 1)
        settings = reg.DetectSettings(min_distance_px=job["spacing"], max_count=job["max_count"],
                                      border_px=128, spread=VARIANTS[job["variant"]])  # fmt: skip
        rss0, start = peak_rss_mb(), time.perf_counter()
        k = reg.detect_keypoints_tiled(optical, settings)
        seconds = time.perf_counter() - start
        digest = hashlib.sha256(k.xy_px.tobytes() + k.response.tobytes()).hexdigest()[:12]
        queue.put({"variant": job["variant"], "seconds": seconds, "rss_open_mb": rss0,
                   "peak_rss_mb": peak_rss_mb(), "keypoints": len(k), "digest": digest,
                   "points_added": HELD["added"], "points_held": HELD["most"]})  # fmt: skip
    except Exception as exc:  # reported by the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Generate the pair, run each variant in a fresh process, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=20000, help="raster side in pixels (>= 512)")
    p.add_argument("--max-count", type=int, default=500)
    p.add_argument("--spacing", type=float, default=128.0, help="MIN_DISTANCE in pixels")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument(
        "--flush-min", type=int, default=None,
        help="settle the streaming merge after this many new points (default: the library's "
        "65,536; below that count a raster is merged once, at the end)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.size < 512 or args.max_count < 1 or args.spacing < 1:
        p.error("need --size >= 512, --max-count >= 1 and --spacing >= 1")
    if args.flush_min is not None and args.flush_min < 1:
        p.error(f"--flush-min must be >= 1, got {args.flush_min}")
    work = Path(tempfile.mkdtemp(prefix="bench_keypoints_"))
    try:
        optical = run_child(_generate, str(work), args.size)
        print(f"machine: {machine()}", flush=True)
        rows = []
        for variant in args.variants:
            job = {"optical": optical, "variant": variant, "spacing": args.spacing,
                   "max_count": args.max_count, "flush_min": args.flush_min}  # fmt: skip
            rows.append(run_child(_detect, job))
            r = rows[-1]
            print(f"{args.size:>6} px {r['variant']:>8}: {r['seconds']:7.1f} s, peak RSS "
                  f"{r['peak_rss_mb']:6.0f} MiB (rasters open: {r['rss_open_mb']:.0f}), "
                  f"{r['keypoints']} keypoints, digest {r['digest']}; merge held at most "
                  f"{r['points_held']:,} of {r['points_added']:,} points", flush=True)  # fmt: skip
        same = {r["digest"] for r in rows if r["variant"] in ("held", "stream")}
        if len(same) == 1 and sum(r["variant"] in ("held", "stream") for r in rows) == 2:
            print("held and stream: identical keypoints")
        elif len(same) > 1:
            print("held and stream: DIFFERENT keypoints")
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
