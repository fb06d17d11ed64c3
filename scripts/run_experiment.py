"""The paper's experiment (Hughes & Schmitt 2019, Sec. 4.2) as one command.

Trains the matcher at 100/75/50/25/5 % supervision with everything else fixed (config, data,
seed, epochs), exports each model, evaluates each on the same held-out samples, and writes the
table and the five error histograms (paper Fig. 4) into ``docs/results.md`` between the markers
``<!-- experiment:start -->`` and ``<!-- experiment:end -->``.

    .venv/bin/python scripts/run_experiment.py --epochs 40          # full (hours on a CPU)
    .venv/bin/python scripts/run_experiment.py --epochs 8 --out runs/experiment_short
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RATIOS = (1.0, 0.75, 0.5, 0.25, 0.05)
START, END = "<!-- experiment:start -->", "<!-- experiment:end -->"
HELD_OUT = "3mos:../shared/data/3mos:RCM_city,RCM_plain,SEN_plain,GF3_water,Redarsat_hills"


def run(cmd: list[str]) -> None:
    """Run a command, echoing it; stop the experiment if it fails.

    It runs in the caller's folder, as this script's own checks and evaluations do, so a
    relative ``--out`` or ``--config`` names one place for all of them (it ran in the
    repository: a level trained into the repository's ``runs/`` and its evaluation then
    found no model); the repository is put on ``PYTHONPATH`` for ``-m training``.
    """
    print("+", " ".join(cmd), flush=True)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": path})
    if done.returncode:
        raise SystemExit(f"error: `{' '.join(cmd[1:4])} ...` failed (exit status "
                         f"{done.returncode}; its message is above)")  # fmt: skip


def level_tag(ratio: float) -> str:
    """A supervision level's folder and figure name: ``sup050`` for 0.5."""
    return f"sup{int(round(ratio * 100)):03d}"


def level_overrides(args: argparse.Namespace, ratio: float) -> list[str]:
    """The ``--set`` overrides of one level: only the supervision ratio depends on the level."""
    return [
        f"data.supervision_ratio={ratio}",
        f"optim.epochs={args.epochs}",
        # the paper's semi-supervised objective, reconstruction + adversarial terms, set
        # explicitly (the shipped config has them on since 0.3.0; --w-recon 0 --w-adv 0 ablates)
        f"loss.w_recon={args.w_recon}",
        f"loss.w_adv={args.w_adv}",
    ]


def check_kept_run(out: Path, args: argparse.Namespace, overrides: list[str]) -> None:
    """Refuse to reuse a level's model that was trained with other settings.

    The run's ``config.yaml`` (written by the trainer) must hash like the config this command
    would train (``training.config.config_hash``: every section that changes the weights; the
    ``name`` and ``version`` labels are ignored); otherwise the table would carry this
    command's line over another run's model, e.g. after changing ``--epochs`` or ``--w-adv``
    with the same ``--out``.
    """
    import dataclasses

    from training.config import config_hash, load_config

    saved = out / "config.yaml"
    if not saved.is_file():
        print(f"note: {out} has no config.yaml; its model is kept unchecked", flush=True)
        return
    now = load_config(args.config, overrides)
    then = dataclasses.replace(load_config(saved), name=now.name, version=now.version)
    if config_hash(then) != config_hash(now):
        raise SystemExit(
            f"{out / 'model.onnx'} was trained with other settings than `--config {args.config}` "
            f"{' '.join('--set ' + o for o in overrides)} (see {saved}): rerun with --force "
            "to retrain it, or choose another --out"
        )


def train_and_export(args: argparse.Namespace, ratio: float) -> Path:
    """Train one supervision level (skipped when its model exists) and return the model."""
    tag = level_tag(ratio)
    out = args.out / tag
    model = out / "model.onnx"
    overrides = level_overrides(args, ratio)
    if model.is_file() and not args.force:
        check_kept_run(out, args, overrides)
        return model
    py = sys.executable
    cmd = [py, "-m", "training", "train", "--config", str(args.config), "--out", str(out)]
    for item in overrides:
        cmd += ["--set", item]
    if args.force:  # retrain from scratch: the earlier run's checkpoints go (the trainer
        # refuses a fresh run beside them, and --resume would re-export the same model)
        for name in ("checkpoint_last.pt", "checkpoint_best.pt", "model.onnx"):
            (out / name).unlink(missing_ok=True)
    elif (out / "checkpoint_last.pt").is_file():
        cmd.append("--resume")
    run(cmd)
    run(
        [
            py,
            "-m",
            "training",
            "export",
            "--checkpoint",
            str(out / "checkpoint_best.pt"),
            "--out",
            str(model),
            "--name",
            f"experiment-{tag}",
        ]
    )
    return model


def evaluate(args: argparse.Namespace, ratio: float, model: Path) -> dict[str, Any]:
    """Evaluate one model on the held-out real and the unseen synthetic samples.

    The seed is fixed, so every supervision level sees identical samples. Returns the real
    summary with the synthetic one under ``"synthetic"``.
    """
    from scripts import evaluate as ev

    tag = level_tag(ratio)
    found = {}
    sets = (
        ("real", args.data, args.samples_per_pair),
        ("synthetic", args.synthetic, args.synthetic_samples_per_pair),
    )
    for kind, data, per_pair in sets:
        out = args.out / f"eval_{tag}" / kind
        status = ev.main(
            [
                "--model",
                str(model),
                "--data",
                data,
                "--methods",
                "learned",
                "--samples-per-pair",
                str(per_pair),
                "--seed",
                "0",
                "--maps",
                "4",
                "--out",
                str(out),
            ]
        )
        if status != 0:  # its results.json, if there is one, is an earlier run's
            raise SystemExit(f"evaluating {model} on {data} failed (the error is above)")
        found[kind] = json.loads((out / "results.json").read_text())["summaries"][0]
        found[kind]["histogram"] = out / "histograms.png"
    summary = found["real"]
    summary["synthetic"] = found["synthetic"]
    return summary


def write_doc(
    doc: Path, rows: list[tuple[float, dict[str, Any]]], args: argparse.Namespace
) -> None:
    """Replace the experiment section of ``doc`` with the table and histograms.

    The new text is built (and the markers checked) before anything is written; every file
    (histograms, then the document) is written under a temporary name and renamed, so an
    interrupted or refused update leaves the earlier document whole.
    """
    from sar_optical_matcher.core.files import staged_outputs
    from training.evaluation_harness import fmt_figure

    img_dir = doc.parent / "img"
    lines = [
        START,
        f"Supervision experiment: `scripts/run_experiment.py --epochs {args.epochs} "
        f"--w-recon {args.w_recon:g} --w-adv {args.w_adv:g}` "
        f"(config `{args.config}`, seed fixed, only `data.supervision_ratio` varies); "
        f"evaluated on `{args.data}` ({args.samples_per_pair} samples per tile) and "
        f"`{args.synthetic}` ({args.synthetic_samples_per_pair} per pair), uniform offsets over "
        "the 256 px search region.",
        "",
        "Real: the held-out 3MOS scenes; synthetic: `" + args.synthetic + "` with evaluation "
        "seeds (never the training scenes). Histograms below are of the real samples.",
        "",
        "| supervision | real <=1 px | real <=3 px | real <=5 px | real median px | real mean px "
        "| real AUC | synthetic <=3 px | synthetic <=5 px | synthetic median px |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for ratio, s in rows:
        syn = s["synthetic"]
        lines.append(
            f"| {ratio:.0%} | {s['within_1px']:.1%} | {s['within_3px']:.1%} | "
            f"{s['within_5px']:.1%} | {s['median_px']:.1f} | {s['mean_px']:.1f} | "
            f"{fmt_figure(s['confidence']['auc'], '.2f')} | {syn['within_3px']:.1%} | "
            f"{syn['within_5px']:.1%} | {syn['median_px']:.1f} |"
        )
    # the histograms side by side under their supervision level, as the paper's Fig. 4
    images = []
    for ratio, _ in rows:
        name = f"experiment_{level_tag(ratio)}.png"
        images.append(f"![{ratio:.0%} supervision](img/{name})")
    lines += [
        "",
        "| " + " | ".join(f"{ratio:.0%} supervision" for ratio, _ in rows) + " |",
        "|" + " --- |" * len(rows),
        "| " + " | ".join(images) + " |",
        END,
    ]
    text = replace_section(doc.read_text() if doc.is_file() else "# Results\n", lines)
    # histograms and document staged together, renamed only once all are written: a failed
    # document write had left the new histograms under the old table
    with staged_outputs() as stage:
        for ratio, s in rows:
            name = f"experiment_{level_tag(ratio)}.png"
            stage.path(img_dir / name).write_bytes(Path(s["histogram"]).read_bytes())
        stage.path(doc).write_text(text, encoding="utf-8")


def replace_section(text: str, lines: list[str]) -> str:
    """``text`` with its one experiment section (START..END) replaced by ``lines``.

    Without markers the section is appended under its own heading. Markers that do not form
    exactly one START..END pair are refused: replacing from a START to the end of the file
    would delete whatever follows it.
    """
    starts, ends = text.count(START), text.count(END)
    if starts == ends == 0:
        return text.rstrip() + "\n\n## The paper's experiment\n\n" + "\n".join(lines) + "\n"
    if starts != 1 or ends != 1 or text.index(END) < text.index(START):
        raise ValueError(
            f"the document has {starts} {START} and {ends} {END} marker(s), not one pair in "
            "that order: fix the markers by hand, nothing was written"
        )
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return head + "\n".join(lines) + tail


def parse_ratios(text: str) -> list[float]:
    """``--ratios``: comma-separated supervision shares in (0, 1], each once."""
    try:
        ratios = [float(r) for r in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"needs comma-separated numbers in (0, 1], e.g. 1,0.5,0.05; got {text!r}"
        ) from None
    bad = [r for r in ratios if not 0.0 < r <= 1.0]
    if bad:
        raise argparse.ArgumentTypeError(
            f"supervision shares must be in (0, 1] (0.05 for 5 %), got {', '.join(map(str, bad))}"
        )
    if len(set(ratios)) != len(ratios):
        raise argparse.ArgumentTypeError(f"a supervision share is given twice in {text!r}")
    tags: dict[str, float] = {}
    for r in ratios:  # 0.5 and 0.504 shared sup050: the second replaced the first's model
        if level_tag(r) in tags:
            raise argparse.ArgumentTypeError(
                f"supervision shares {tags[level_tag(r)]:g} and {r:g} both name the level "
                f"{level_tag(r)} (whole percents): give shares at least 1 % apart"
            )
        tags[level_tag(r)] = r
    return ratios


def check_before_training(args: argparse.Namespace, ratios: list[float]) -> None:
    """Every level's training config and both evaluation sets, before the first level trains.

    A level trains for minutes to hours: an ``--epochs 0``, a negative ``--w-adv`` or a
    misspelt ``--data`` scene used to fail only after the levels before it had trained.
    (Whether a share labels at least one pair is known only once the trainer has built the
    data; it says so at its first level.)
    """
    from scripts import evaluate as ev
    from training.config import load_config

    try:
        configs = [load_config(args.config, level_overrides(args, ratio)) for ratio in ratios]
        real = ev.load_records(args.data, 0)
        ev.load_records(args.synthetic, 0)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None
    held_out = set(configs[0].data.holdout_scenes) if configs else set()
    trained = sorted({r.scene for r in real if r.source == "3mos"} - held_out)
    if trained:  # the table is headed "the held-out 3MOS scenes" (helper-74 scored SEN_city)
        raise SystemExit(
            f"error: --data has 3MOS scenes {trained} that {args.config} does not hold out "
            f"(data.holdout_scenes: {sorted(held_out)}): the levels would be scored on scenes "
            "they train on, under a table of held-out scenes; give held-out scenes only"
        )


def main(argv: list[str] | None = None) -> int:
    """Train, export and evaluate every supervision level, then write the document."""
    from training.cli import positive_int

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=Path("training/configs/default.yaml"))
    p.add_argument("--ratios", type=parse_ratios, default=list(RATIOS))
    p.add_argument("--epochs", type=positive_int, default=40)
    p.add_argument("--w-recon", type=float, default=1.0, help="reconstruction weight (paper: 1)")
    p.add_argument(
        "--w-adv", type=float, default=0.1, help="adversarial weight (paper: 1; at 1 it diverged)"
    )
    p.add_argument("--data", default=HELD_OUT, help="evaluation data (scripts/evaluate.py)")
    p.add_argument("--synthetic", default="synthetic:8:1024", help="second evaluation set")
    p.add_argument("--samples-per-pair", type=positive_int, default=2, help="per real tile")
    p.add_argument("--synthetic-samples-per-pair", type=positive_int, default=6)
    p.add_argument("--out", type=Path, default=Path("runs/experiment"))
    p.add_argument("--doc", type=Path, default=Path("docs/results.md"))
    p.add_argument("--force", action="store_true", help="retrain existing models")
    args = p.parse_args(argv)
    check_before_training(args, args.ratios)
    rows = []
    for ratio in args.ratios:
        rows.append((ratio, evaluate(args, ratio, train_and_export(args, ratio))))
    write_doc(args.doc, rows, args)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
