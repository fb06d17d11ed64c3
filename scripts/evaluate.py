"""Evaluate the learned matcher and the classical peers side by side on identical samples.

Examples::

    python scripts/evaluate.py --data 3mos:../shared/data/3mos:SEN_city,GF3_plain --out build/eval
    python scripts/evaluate.py --model m.onnx --data synthetic:8 --methods learned,cfog,ncc
    python scripts/evaluate.py --data gdal:opt.tif,sar.tif --samples-per-pair 50
    python scripts/evaluate.py --data gdal:pair_optical.tif,pair_sar.tif \
        --truth pair_optical=pair_truth.json --samples-per-pair 50
    python scripts/evaluate.py --data sen12:../shared/data/sen12:ROIs1158_spring_1,ROIs2017_winter

A ``gdal`` pair's truth is its georeference (the SAR resampled onto the optical's matching
grid): for a pair whose SAR is known to be off by a constant shift, give that shift with
``--scene-offset <optical file stem>=X,Y`` in optical pixels; for any other known
misregistration give its ground-truth transform with ``--truth <optical file stem>=FILE.json``:
the ``<stem>_truth.json`` that ``scripts/make_synthetic_pair.py`` writes (shift, affine and
quadratic terms, any two CRSs), or a plain affine ``{"optical_px_to_sar_px": [[a, b, c], [d, e,
f]]}``. The SAR is then sampled through that transform, and the record is co-registered
exactly. A SAR pixel more than 1.5x the optical's is matched on the plugin's coarser grid (the
SAR's pixel size): a shift is converted to its pixels, and that pair's errors are in them.

Writes to ``--out``: ``results.json`` (config, figures per method, per-sample errors),
``results.md`` (the table; with both ``learned`` and ``cfog``, also how often the two agree and
how often the truth scores their agreed matches right), ``histograms.png`` (paper Fig. 4: error
histogram with the mean and the 1-percentile), ``precision.png`` (precision of accepted matches
and share kept vs the confidence threshold), ``maps.png`` (paper Fig. 5: template, search region
and each method's map) and, with ``--calibrate-confidence``, ``confidence_model.json`` (a
logistic confidence model fitted per method on these samples; store the ``learned`` one in the
model contract as ``training["confidence_model"]``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sar_optical_matcher.core import classical, files, peaks  # noqa: E402
from sar_optical_matcher.model.runtime import MissingDependencyError, OnnxMatcher  # noqa: E402
from training import evaluation_harness as harness  # noqa: E402
from training.cli import non_negative_int, positive_int  # noqa: E402

ALL_METHODS = ("learned", *classical.METHODS)
SYNTHETIC_SEED_OFFSET = 10_000  # synthetic evaluation scenes never share a seed with training
#: --template / --search without a model to take them from (the shipped model's sizes)
DEFAULT_TEMPLATE, DEFAULT_SEARCH = 128, 256


def load_records(spec: str, seed: int, truths: dict[str, Any] | None = None) -> list[Any]:
    r"""PairRecords of one ``--data`` specification (see ``--help``).

    A path may start with a Windows drive letter (``3mos:C:\data\3mos:SEN_city``,
    ``sen12:D:/sen12``): its colon is not a separator (:func:`split_path`).
    """
    from training import sources

    kind, _, rest = spec.partition(":")
    if kind in ("3mos", "sen12"):
        root, scenes = _root_and_scenes(kind, rest, spec)
        if kind == "3mos":
            return sources.load_3mos(root or "../shared/data/3mos", scenes=scenes)
        if not root:
            raise ValueError(f"--data {spec!r}: sen12 needs its folder, e.g. sen12:DIR[:SCENES]")
        return sources.load_sen12(root, scenes=scenes)
    if kind == "synthetic":
        n, _, size = rest.partition(":")
        try:
            count, side = int(n or 4), int(size or 512)
        except ValueError:
            raise ValueError(
                f"--data synthetic:N[:SIZE] needs whole numbers (e.g. synthetic:8:1024), got "
                f"{spec!r}"
            ) from None
        return sources.load_synthetic(count, side, seed + SYNTHETIC_SEED_OFFSET)
    if kind == "gdal":  # its scene is the optical file's stem, and --truth names it so
        optical, sar = _gdal_paths(rest)
        truth = (truths or {}).get(Path(optical).stem)
        if truth is None:
            return [sources.load_gdal_pair(optical, sar)]
        return [sources.load_gdal_pair(optical, sar, truth=truth)]
    hint = ""
    if _is_drive(spec):
        hint = f" ({spec[:3]}... is a Windows path: put the kind first, e.g. 3mos:{spec})"
    raise ValueError(
        f"unknown --data kind {kind!r}{hint}; use 3mos:ROOT[:SCENES], synthetic:N[:SIZE], "
        "sen12:DIR[:SCENES] or gdal:OPTICAL.tif,SAR.tif"
    )


def _is_drive(text: str) -> bool:
    r"""Whether ``text`` starts with a Windows drive letter (``C:\`` or ``C:/``)."""
    return (
        len(text) >= 3
        and text[0].isascii()
        and text[0].isalpha()
        and text[1] == ":"
        and (text[2] in "\\/")
    )


def split_path(text: str) -> tuple[str, str | None]:
    r"""``"ROOT:REST"`` -> ``(ROOT, REST)``, ``"ROOT"`` -> ``(ROOT, None)``.

    The path ends at its first colon, unless that colon is a Windows drive letter's (a letter
    then ``:`` then ``\`` or ``/``, as in ``C:\data``), which stays in the path.
    """
    start = 2 if _is_drive(text) else 0
    cut = text.find(":", start)
    return (text, None) if cut < 0 else (text[:cut], text[cut + 1 :])


def _root_and_scenes(kind: str, rest: str, spec: str) -> tuple[str, list[str] | None]:
    """ROOT and SCENES of a ``3mos`` / ``sen12`` spec's part after ``KIND:``."""
    root, scenes = split_path(rest)
    if scenes is not None and ":" in scenes:
        raise ValueError(
            f"--data {spec!r}: {kind}:ROOT[:SCENE,...] has one ':' between the folder and the "
            f"scenes, got the scenes {scenes!r}; separate scenes with ',' (a Windows folder "
            "keeps its drive letter: 3mos:C:\\data\\3mos:SEN_city)"
        )
    return root, _split(scenes or "")


def _gdal_paths(rest: str) -> tuple[str, str]:
    """OPTICAL and SAR of a ``gdal:OPTICAL,SAR`` spec's part after ``gdal:``.

    A path may hold a comma of its own: where the text has more than one, it is cut at the
    one comma whose two sides are both existing files (none, or more than one: an error that
    says so).
    """
    paths = _split(rest)
    if paths is not None and len(paths) == 2:
        return paths[0], paths[1]
    if paths is None or len(paths) < 2:
        raise ValueError(f"--data gdal needs OPTICAL.tif,SAR.tif, got {rest!r}")
    parts = rest.split(",")
    cuts = [(",".join(parts[:i]), ",".join(parts[i:])) for i in range(1, len(parts))]
    found = [c for c in cuts if all(p and os.path.isfile(p) for p in c)]
    if len(found) == 1:
        return found[0]
    why = (
        "no comma splits it into two existing files"
        if not found
        else f"{len(found)} commas split it into two existing files: "
        + "; ".join(f"{a!r} and {b!r}" for a, b in found)
    )
    raise ValueError(
        f"--data gdal:{rest}: {len(parts) - 1} commas, and gdal:OPTICAL.tif,SAR.tif has one "
        f"between the two files; {why}. Check both paths, or rename the file whose name holds "
        "a comma"
    )


def _split(text: str) -> list[str] | None:
    items = [t for t in text.split(",") if t]
    return items or None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", help="ONNX model (default: the shipped model if present)")
    p.add_argument(
        "--data",
        action="append",
        required=True,
        help="3mos:ROOT[:SCENE,...] | synthetic:N[:SIZE] | sen12:DIR[:SCENE,...] (scene keys "
        "like ROIs1158_spring_1 or season folders like ROIs1158_spring) | gdal:OPT.tif,SAR.tif "
        "(repeatable; a Windows path keeps its drive letter: 3mos:C:\\data\\3mos:SEN_city; a "
        "gdal path may hold commas where one comma alone splits the text into two files)",
    )
    p.add_argument("--methods", default=",".join(ALL_METHODS), help="comma-separated methods")
    p.add_argument(
        "--samples-per-pair", type=positive_int, default=1, help="samples per pair record"
    )
    p.add_argument(
        "--max-records", type=non_negative_int, default=0, help="random subset of records (0: all)"
    )
    p.add_argument(
        "--template",
        type=int,
        help=f"template side T (px; default: the model's with 'learned', else {DEFAULT_TEMPLATE})",
    )
    p.add_argument(
        "--search",
        type=int,
        help=f"search region side S (px; default: the model's with 'learned', else "
        f"{DEFAULT_SEARCH})",
    )
    p.add_argument("--max-rotation", type=float, default=0.0, help="template rotation (deg)")
    p.add_argument("--max-scale", type=float, default=0.0, help="template scale, 1 +- this")
    p.add_argument("--subpixel", action="store_true", help="continuous true offsets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch", type=positive_int, default=8, help="samples per batch")
    p.add_argument("--correct-px", type=float, default=3.0, help="a match is correct within")
    p.add_argument("--threshold", type=float, default=0.5, help="confidence threshold in table")
    p.add_argument(
        "--maps", type=non_negative_int, default=4, help="samples shown in maps.png (0: none)"
    )
    p.add_argument(
        "--cfog-sigma", type=float, default=0.8, help="CFOG spatial smoothing (px, paper 0.8)"
    )
    p.add_argument(
        "--scene-offset",
        action="append",
        default=[],
        metavar="SCENE=X,Y",
        help="replace the ground-truth offset_xy_px of a scene's records (repeatable): the "
        "SAR's misregistration relative to the optical in optical-raster pixels (x, y), e.g. a "
        "measured registration bias (scripts/measure_offsets.py) or, for a gdal pair (whose "
        "scene is its optical file's stem), the shift make_synthetic_pair.py prints (a pair "
        "matched on a coarser grid gets it in grid pixels); results against the data set's "
        "own truth are the ones to report as such",
    )
    p.add_argument(
        "--truth",
        action="append",
        default=[],
        metavar="SCENE=FILE.json",
        help="a gdal pair's ground-truth transform (repeatable; SCENE: its optical file's "
        "stem): make_synthetic_pair.py's <stem>_truth.json (shift, affine, quadratic, any "
        'CRSs) or {"optical_px_to_sar_px": [[a, b, c], [d, e, f]]} (optical pixel -> true SAR '
        "pixel, centres at +0.5); the SAR is sampled through it instead of its georeference",
    )
    p.add_argument("--calibrate-confidence", action="store_true")
    p.add_argument("--out", default="build/evaluation", help="output folder")
    args = p.parse_args(argv)
    if not (math.isfinite(args.correct_px) and args.correct_px > 0):  # -1 or nan: AUC NaN,
        # precision 0 in results.json, said by nothing (calibrate_confidence refuses them)
        p.error(f"--correct-px must be a number > 0 (pixels), got {args.correct_px}")
    if not 0.0 <= args.threshold <= 1.0:  # 2 gave "kept @2 0.0%"; nan failed after matching
        p.error(f"--threshold must be a confidence in [0, 1], got {args.threshold}")
    # with 'learned' a size not given is the model's, known once it is opened (open_methods)
    if "learned" not in args.methods.split(",") or None not in (args.template, args.search):
        message = size_error(*sample_sizes(args))
        if message:
            p.error(message)
    if not (0.0 <= args.max_rotation <= 45.0 and 0.0 <= args.max_scale < 0.5):
        p.error(
            f"--max-rotation {args.max_rotation:g} --max-scale {args.max_scale:g}: the rotation "
            "must be in [0, 45] degrees and the scale in [0, 0.5)"
        )
    return args


def sample_sizes(args: argparse.Namespace) -> tuple[int, int]:
    """``(--template, --search)``, each the default where not given."""
    t, s = args.template, args.search
    return (DEFAULT_TEMPLATE if t is None else t), (DEFAULT_SEARCH if s is None else s)


def size_error(template: int, search: int) -> str | None:
    """What is wrong with a template side in a search region side (None: nothing)."""
    if 2 <= template <= search:
        return None
    return (
        f"--template {template} --search {search}: the template side must be >= 2 and at most "
        f"the search region's (the default model's: {DEFAULT_TEMPLATE} in {DEFAULT_SEARCH})"
    )


def resolve_methods(args: argparse.Namespace) -> tuple[list[str], Path | None]:
    """The methods to run and the model path (None when ``learned`` is not run)."""
    from sar_optical_matcher.model.runtime import DEFAULT_MODEL_PATH

    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(ALL_METHODS))
    if unknown or not methods:
        raise SystemExit(f"unknown methods {unknown}; choose from {', '.join(ALL_METHODS)}")
    if "learned" not in methods:
        return methods, None
    model = Path(args.model) if args.model else DEFAULT_MODEL_PATH
    if not model.is_file():
        if args.model:
            raise SystemExit(f"model {model} not found")
        rest = [m for m in methods if m != "learned"]
        if not rest:
            raise SystemExit(
                f"no shipped model at {model} and no other method asked for: pass --model "
                "M.onnx (e.g. runs/default/model.onnx after make train-default) or --methods "
                "with a classical method"
            )
        print(f"note: no shipped model at {model}; skipping 'learned' (pass --model)")
        return rest, None
    return methods, model


def parse_scene_offsets(items: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``["SCENE=X,Y", ...]`` -> ``{scene: (x, y)}`` (``--scene-offset``)."""
    out = {}
    for item in items:
        scene, _, xy = item.partition("=")
        try:
            x, y = (float(v) for v in xy.split(","))
        except ValueError:
            raise SystemExit(f"--scene-offset needs SCENE=X,Y (pixels), got {item!r}") from None
        out[scene] = (x, y)
    return out


def parse_truths(items: Sequence[str]) -> dict[str, Any]:
    """``["SCENE=FILE.json", ...]`` -> ``{scene: sources.PairTruth}`` (``--truth``), read."""
    from training import sources

    out: dict[str, Any] = {}
    for item in items:
        scene, sep, path = item.partition("=")
        if not (sep and scene and path):
            raise SystemExit(f"--truth needs SCENE=FILE.json (SCENE: the optical file's stem), "
                             f"got {item!r}")  # fmt: skip
        if scene in out:
            raise SystemExit(f"--truth {scene}=... is given twice")
        try:
            out[scene] = sources.read_pair_truth(path)
        except ValueError as exc:
            raise SystemExit(f"--truth {item}: {exc}") from None
    return out


def check_truths(records: list[Any], truths: dict[str, Any], offsets: Sequence[str]) -> None:
    """Each ``--truth`` names one gdal pair, which no ``--scene-offset`` names too."""
    for scene, truth in truths.items():
        pairs = [r.name for r in records if r.scene == scene and r.source == "gdal"]
        if not pairs:
            gdal = sorted({r.scene for r in records if r.source == "gdal"})
            raise SystemExit(
                f"--truth {scene}=...: no gdal pair in --data has an optical file of stem "
                f"{scene!r} (a truth is for gdal pairs; their stems: {gdal or 'none'})"
            )
        if len(pairs) > 1:
            raise SystemExit(
                f"--truth {scene}=... would be the truth of {len(pairs)} gdal pairs whose "
                f"optical files share the stem {scene!r} ({', '.join(pairs)}): give them "
                "distinct optical file names, one per truth"
            )
        if scene in parse_scene_offsets(offsets):
            raise SystemExit(
                f"--truth and --scene-offset both give {scene}'s truth: the truth file holds "
                "the whole transform, shift included; drop the --scene-offset"
            )
        print(f"note: {pairs[0]} is sampled through its {truth.kind} truth {truth.path}")


def with_scene_offsets(records: list[Any], items: Sequence[str]) -> list[Any]:
    """The records with each ``--scene-offset SCENE=X,Y`` replacing its scene's offset.

    X, Y are pixels of the optical raster (a 3MOS tile's, a gdal optical file's): a gdal pair
    matched on a coarser grid (``PairRecord.grid_scale``, a SAR pixel > 1.5x the optical's)
    gets ``(X, Y) / grid_scale`` grid pixels, the unit of its samples and errors.
    """
    offsets = parse_scene_offsets(items)
    scenes = sorted({r.scene for r in records})
    unknown = set(offsets) - set(scenes)
    if unknown:
        raise SystemExit(
            f"--scene-offset names scenes {sorted(unknown)} not in --data; its scenes are "
            f"{scenes}"
        )
    for scene in offsets:  # a gdal pair's scene is its optical file's stem, not unique
        pairs = [r.name for r in records if r.scene == scene and r.source == "gdal"]
        if len(pairs) > 1:
            raise SystemExit(
                f"--scene-offset {scene}=... would give one shift to {len(pairs)} gdal pairs "
                f"whose optical files share the stem {scene!r} ({', '.join(pairs)}): give them "
                "distinct optical file names (make_synthetic_pair.py --stem), one per truth"
            )
    out = []
    for r in records:
        if r.scene in offsets:
            x, y = offsets[r.scene]
            s = float(r.grid_scale)
            if s != 1.0:
                print(
                    f"note: {r.name} is matched on a grid of {s:.4g} optical pixels a pixel: "
                    f"--scene-offset {r.scene}={x:g},{y:g} (optical px) is ({x / s:.4g}, "
                    f"{y / s:.4g}) grid px, and its errors are in grid px"
                )
            r = dataclasses.replace(r, offset_xy_px=(x / s, y / s))
        out.append(r)
    return out


def unique_names(records: list[Any]) -> list[Any]:
    """The records, a name shared by several (gdal pairs of equal file names) made ``name#k``.

    Per-record figures (``agreed_residuals``, the per-sample ``record``) group by name: two
    pairs of one name would pass for one.
    """
    seen: dict[str, int] = {}
    for r in records:
        seen[r.name] = seen.get(r.name, 0) + 1
    count: dict[str, int] = {}
    out = []
    for r in records:
        if seen[r.name] > 1:
            count[r.name] = count.get(r.name, 0) + 1
            r = dataclasses.replace(r, name=f"{r.name}#{count[r.name]}")
        out.append(r)
    return out


def build_samples(args: argparse.Namespace) -> list[harness.Sample]:
    """Load the records of every ``--data`` and cut the samples (seeded)."""
    truths = parse_truths(args.truth)
    records = [r for spec in args.data for r in load_records(spec, args.seed, truths)]
    check_truths(records, truths, args.scene_offset)
    records = with_scene_offsets(unique_names(records), args.scene_offset)
    rng = np.random.default_rng(args.seed)
    if args.max_records and len(records) > args.max_records:
        keep = np.sort(rng.choice(len(records), args.max_records, replace=False))
        records = [records[i] for i in keep]
    if not records:
        raise SystemExit("no pair records found in --data")
    return harness.make_samples(
        records,
        args.samples_per_pair,
        *sample_sizes(args),
        rng=rng,
        max_rotation_deg=args.max_rotation,
        max_scale=args.max_scale,
        subpixel=args.subpixel,
    )


def open_methods(args: argparse.Namespace) -> tuple[list[str], OnnxMatcher | None]:
    """The methods to run and the opened model (None without ``learned``), checked.

    Called before the samples are cut: a misspelt ``--methods``, a bad model or ``--device``
    and sample sizes the model cannot match fail before the data are read.

    Sets ``args.template`` / ``args.search`` where not given: the model's sizes with
    ``learned``, else the defaults.

    Raises:
        SystemExit: an unknown method or a missing model (:func:`resolve_methods`).
        ValueError: the model is not usable, or ``--template`` / ``--search`` are not its sizes.
    """
    methods, model_path = resolve_methods(args)
    if model_path is None:
        args.template, args.search = sample_sizes(args)
        message = size_error(args.template, args.search)
        if message:
            raise ValueError(message)
        return methods, None
    matcher = OnnxMatcher(model_path, device=args.device, log=print)
    c = matcher.contract
    given = (args.template, args.search)
    # a size not given is the model's: the samples every method sees are cut to its sizes
    args.template = c.template_size if args.template is None else args.template
    args.search = c.search_size if args.search is None else args.search
    if (args.template, args.search) != (c.template_size, c.search_size):
        shown = " ".join(
            f"--{k} {v}" for k, v in zip(("template", "search"), given) if v is not None
        )
        raise ValueError(
            f"model {c.name} matches {c.template_size} px templates in {c.search_size} px "
            f"regions, not {shown}: leave out --template / --search (the model's sizes are "
            "the default), or drop 'learned' from --methods"
        )
    return methods, matcher


def model_provenance(matcher: OnnxMatcher) -> dict[str, Any]:
    """What results.json records of the model ``learned`` ran (``--model`` is None if shipped).

    The resolved path, the file's SHA-256, the contract's name and version, and whether the
    confidence is the contract's calibrated model or the default one.
    """
    import hashlib

    c = matcher.contract
    return {
        "path": str(matcher.path.resolve()),
        "sha256": hashlib.sha256(matcher.path.read_bytes()).hexdigest(),
        "name": c.name,
        "version": c.version,
        "confidence_model": "contract" if c.training.get("confidence_model") else "default",
    }


def run_all(
    args: argparse.Namespace,
    samples: list[harness.Sample],
    opened: tuple[list[str], OnnxMatcher | None] | None = None,
) -> tuple[list[harness.Predictions], dict[str, Any]]:
    """Run every method on the same samples; returns predictions and the fitted models.

    ``opened`` is :func:`open_methods`'s result (None: opened here, before any method runs).
    """
    methods, matcher = opened if opened is not None else open_methods(args)
    results, fitted = [], {}
    for name in methods:
        conf_model = None
        if name == "learned":
            assert matcher is not None  # open_methods opens the model of 'learned'
            stored = matcher.contract.training.get("confidence_model")
            conf_model = peaks.ConfidenceModel.from_dict(stored) if stored else None
            fn = harness.learned_map_fn(matcher, args.batch)
        elif name == "cfog":
            fn = harness.classical_map_fn(partial(classical.cfog_map, sigma_px=args.cfog_sigma))
        else:
            fn = harness.classical_map_fn(name)
        pred = harness.run_method(
            samples,
            fn,
            args.batch,
            name=name,
            keep_maps=args.maps,
            confidence_model=conf_model,
            similarity_range=classical.SIMILARITY_RANGE.get(name, (-1.0, 1.0)),
        )
        results.append(pred)
        correct = pred.error_px <= args.correct_px
        if args.calibrate_confidence and 0 < correct.sum() < correct.size:
            fitted[name] = peaks.fit_confidence_model(pred.features, correct).to_dict()
    return results, fitted


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def histogram_title(pred: harness.Predictions, correct_px: float) -> str:
    """Title of one histogram panel: the method and its share within ``correct_px``."""
    return f"{pred.method}: {np.mean(pred.error_px <= correct_px):.0%} <= {correct_px:g} px"


def plot_histograms(
    preds: Sequence[harness.Predictions], path: Path, correct_px: float = 3.0
) -> None:
    """Paper Fig. 4: per-method error histogram, dashed mean (black) and 1-percentile (blue)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(preds), figsize=(3.2 * len(preds), 2.8), squeeze=False)
    top = max(float(np.percentile(np.concatenate([p.error_px for p in preds]), 99)), 10.0)
    bins = np.linspace(0.0, top, 41)
    for ax, p in zip(axes[0], preds):
        ax.hist(np.minimum(p.error_px, top), bins=bins, color="0.6")
        ax.axvline(float(p.error_px.mean()), color="k", ls="--", label="mean")
        ax.axvline(float(np.percentile(p.error_px, 1)), color="b", ls="--", label="1-percentile")
        ax.set_title(histogram_title(p, correct_px), fontsize=9)
        ax.set_xlabel("error (px)")
    axes[0][0].set_ylabel("matches")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_precision(summaries: Sequence[dict[str, Any]], path: Path) -> None:
    """Precision of accepted matches and share kept vs threshold (model / cross-validated)."""
    plt = _pyplot()
    fig, (ax_p, ax_k) = plt.subplots(1, 2, figsize=(9, 3.2))
    for i, s in enumerate(summaries):
        color = f"C{i}"
        for key, ls in (("confidence", "-"), ("confidence_cv", ":")):
            c = s[key]
            label = f"{s['method']} ({'model' if ls == '-' else 'cv'}, AUC {c['auc']:.2f})"
            ax_p.plot(c["thresholds"], c["precision"], ls, color=color, label=label)
            ax_k.plot(c["thresholds"], c["kept"], ls, color=color)
    ax_p.set(
        xlabel="confidence threshold", ylabel=f"precision (<= {summaries[0]['correct_px']:g} px)"
    )
    ax_k.set(xlabel="confidence threshold", ylabel="share of matches kept")
    ax_p.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_maps(
    samples: Sequence[harness.Sample], preds: Sequence[harness.Predictions], path: Path
) -> None:
    """Paper Fig. 5: per sample, the template, the SAR region (true window) and each map."""
    plt = _pyplot()
    rows = min(len(p.maps) for p in preds)
    cols = 2 + len(preds)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.1 * rows), squeeze=False)
    for i in range(rows):
        k = int(preds[0].map_indices[i])  # every method kept the same samples
        s = samples[k]
        dx, dy = s.true_offset_xy_px
        t = s.template.shape[0]
        axes[i][0].imshow(s.template, cmap="gray")
        axes[i][1].imshow(s.region, cmap="gray")
        axes[i][1].add_patch(plt.Rectangle((dx - 0.5, dy - 0.5), t, t, fill=False, ec="r"))
        for j, p in enumerate(preds):
            ax = axes[i][2 + j]
            ax.imshow(p.maps[i], cmap="jet")
            ax.plot(dx, dy, "wx", ms=8)
            ax.set_title(f"{p.method}: {p.error_px[k]:.1f} px", fontsize=8)
        axes[i][0].set_title(s.record, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float as None (JSON null), through dicts and lists.

    A figure that could not be measured (precision with nothing accepted, an AUC of one class)
    was written as a bare ``NaN``, which strict readers (jq, ``JSON.parse``) refuse.
    """
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    return value


def write_outputs(
    args: argparse.Namespace,
    samples: list[harness.Sample],
    preds: list[harness.Predictions],
    fitted: dict[str, Any],
) -> list[dict[str, Any]]:
    """Write JSON, markdown, figures (and the calibrated models); return the summaries.

    All of them are written under temporary names and renamed together at the end, so a failure
    leaves an earlier run's outputs whole; a ``maps.png`` or ``confidence_model.json`` of an
    earlier run that this one does not write is removed (it would pass for this run's).
    """
    out = Path(args.out)
    # the table's threshold is one of the curves' thresholds, not its nearest neighbour
    thresholds = sorted({*harness.DEFAULT_THRESHOLDS, float(args.threshold)})
    summaries = [harness.summarise(p, args.correct_px, thresholds) for p in preds]
    table = harness.markdown_table(summaries, args.threshold)
    config = dict(vars(args))
    per_sample = {
        "record": [s.record for s in samples],
        "true_offset_xy_px": [list(s.true_offset_xy_px) for s in samples],
        **{p.method: np.round(p.error_px, 3).tolist() for p in preds},
    }
    # what the precision curves are computed from, so they can be recomputed from this file
    doc_samples = {
        "scene": [s.scene for s in samples],
        "sensor": [s.sensor for s in samples],
        "pred_offset_xy_px": {p.method: np.round(p.pred_offset_xy_px, 3).tolist() for p in preds},
        "confidence": {p.method: np.round(p.confidence, 4).tolist() for p in preds},
    }
    per_sample.update(doc_samples)
    doc: dict[str, Any] = {"config": config, "summaries": summaries, "errors_px": per_sample}
    by_name = {p.method: p for p in preds}
    if "learned" in by_name and "cfog" in by_name:
        # how far the ground truth itself limits any confidence (harness.agreement)
        rows = harness.agreement(by_name["learned"], by_name["cfog"], correct_px=args.correct_px)
        doc["agreement_learned_cfog"] = rows
        table += "\n" + harness.agreement_table(rows, "learned", "cfog", args.correct_px)
        agree_px = 1.0  # agreement radius, and the spread of one shared residual
        tiles = harness.agreed_residuals(
            by_name["learned"], by_name["cfog"], [s.record for s in samples], agree_px
        )
        doc["agreed_residuals_per_record"] = tiles
        off = [
            t for t in tiles if t["residual_px"] > args.correct_px and t["spread_px"] <= agree_px
        ]
        table += (
            f"\nRecords with >= 2 matches both agree on (within {agree_px:g} px) that share one "
            f"residual (spread <= {agree_px:g} px) farther than {args.correct_px:g} px from the "
            "truth: "
            f"{len(off)} of {len(tiles)}"
            + "".join(
                f"\n- {t['group']}: {t['n_agreed']} matches at "
                f"({t['residual_xy_px'][0]:+.1f}, {t['residual_xy_px'][1]:+.1f}) px, "
                f"spread {t['spread_px']:.1f} px"
                for t in off
            )
            + "\n"
        )
    with files.staged_outputs() as stage:
        stage.path(out / "results.json").write_text(
            json.dumps(strict_json(doc), indent=1, default=str, allow_nan=False)
        )
        stage.path(out / "results.md").write_text(
            f"# Evaluation ({len(samples)} samples)\n\n{table}"
        )
        plot_histograms(preds, stage.path(out / "histograms.png"), args.correct_px)
        plot_precision(summaries, stage.path(out / "precision.png"))
        if args.maps:
            plot_maps(samples, preds, stage.path(out / "maps.png"))
        if fitted:
            stage.path(out / "confidence_model.json").write_text(
                json.dumps(strict_json(fitted), indent=1, allow_nan=False)
            )
    for name, written in (("maps.png", args.maps), ("confidence_model.json", fitted)):
        if not written:
            (out / name).unlink(missing_ok=True)
    print(table)
    return summaries


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        try:  # before any matching: a run of hours must not end in a folder it cannot write
            files.check_destination(args.out, folder=True)
        except ValueError as exc:
            raise ValueError(f"--out: {exc}") from None
        opened = open_methods(args)  # before the data are read: --methods, the model
        if opened[1] is not None:  # results.json says which model 'learned' was
            args.model_used = model_provenance(opened[1])
        samples = build_samples(args)
        print(f"{len(samples)} samples from {len({s.record for s in samples})} pairs")
        repeated = harness.repeated_samples(samples)
        if repeated:
            print(f"warning: {repeated} (--samples-per-pair)", file=sys.stderr)
        preds, fitted = run_all(args, samples, opened)
        write_outputs(args, samples, preds, fitted)
    # bad --data, sizes, model, --device, --out: said, not dumped
    except (ValueError, OSError, MissingDependencyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (outputs are atomic)
        print(f"interrupted: {args.out} keeps what it held before this run", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
