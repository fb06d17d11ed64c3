r"""Write a synthetic optical/SAR GeoTIFF pair with a known, deliberately wrong SAR georeference.

    .venv/bin/python scripts/make_synthetic_pair.py --size 1024 --seed 1 --out build/synthetic
    .venv/bin/python scripts/make_synthetic_pair.py --sar-crs 3857 --sar-dtype uint16 \
        --max-shift 30 --affine 0.01 --polynomial 2

Writes ``<stem>_optical.tif`` (3 bands), ``<stem>_sar.tif`` (1 band) and ``<stem>_truth.json``
(read it back with ``sar_optical_matcher.synthetic.read_truth``) and prints the paths and the
misregistration that a co-registration should recover.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sar_optical_matcher.core.synthetic import LOOK_DIRECTIONS  # noqa: E402
from sar_optical_matcher.synthetic import (  # noqa: E402
    OPTICAL_DTYPES,
    SAR_DTYPES,
    make_georeferenced_pair,
    write_pair,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="optical image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    p.add_argument("--out", type=Path, default=Path("build/synthetic"), help="output folder")
    p.add_argument("--stem", default="pair", help="file name prefix")
    p.add_argument("--pixel-size", type=float, default=10.0, help="optical pixel size (m)")
    p.add_argument("--max-shift", type=float, default=20.0, help="max shift per axis (opt. px)")
    p.add_argument("--affine", type=float, default=0.02, help="max affine entry (0.02 = 2 %%)")
    p.add_argument("--polynomial", type=float, default=0.0, help="max quadratic term (px)")
    p.add_argument("--sar-ratio", type=float, default=1.0, help="SAR / optical pixel size")
    p.add_argument("--optical-crs", type=int, default=32633, help="optical EPSG code")
    p.add_argument("--sar-crs", type=int, default=None, help="SAR EPSG code (default: optical)")
    p.add_argument("--sar-dtype", choices=SAR_DTYPES, default="float32")
    p.add_argument("--optical-dtype", choices=OPTICAL_DTYPES, default="uint16")
    p.add_argument("--looks", type=float, default=4.0, help="speckle looks (0: no speckle)")
    p.add_argument("--incidence", type=float, default=35.0, help="incidence angle (deg)")
    p.add_argument("--look-direction", choices=list(LOOK_DIRECTIONS), default="east")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    args = parse_args(argv)
    try:
        return write(args)
    except (ValueError, OSError) as exc:  # a value out of range, an unknown EPSG, --out
        raise SystemExit(f"make_synthetic_pair.py: error: {exc}") from None


def write(args: argparse.Namespace) -> dict[str, Path]:
    """Make the pair of ``args`` and write it; ValueError says what is wrong."""
    if Path(args.stem).name != args.stem or not args.stem:
        raise ValueError(f"--stem {args.stem!r} is a file name prefix, not a path; give the "
                         "folder with --out")  # fmt: skip
    pair = make_georeferenced_pair(
        args.size,
        np.random.default_rng(args.seed),
        sar_crs_epsg=args.sar_crs,
        optical_epsg=args.optical_crs,
        pixel_size_m=args.pixel_size,
        max_shift_px=args.max_shift,
        max_affine=args.affine,
        polynomial=args.polynomial,
        sar_pixel_size_ratio=args.sar_ratio,
        looks=args.looks or None,
        incidence_deg=args.incidence,
        look_direction=args.look_direction,
    )
    paths = write_pair(pair, args.out, args.stem, args.sar_dtype, args.optical_dtype)
    for kind, path in paths.items():
        print(f"{kind:8s} {path}")
    print(pair.truth.summary())
    return paths


if __name__ == "__main__":
    main()
