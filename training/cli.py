"""Command line: ``python -m training {train,lr-find,evaluate,export}``.

Examples::

    python -m training train --config training/configs/default.yaml --out runs/exp1
    python -m training train --config training/configs/default.yaml --out runs/exp1 --resume
    torchrun --nproc_per_node=2 -m training train --config ... --out runs/ddp   # DDP
    python -m training lr-find --config training/configs/default.yaml --out runs/lr
    python -m training evaluate --checkpoint runs/exp1/checkpoint_best.pt --split test
    python -m training export --checkpoint runs/exp1/checkpoint_best.pt --out model.onnx

``--set section.key=value`` overrides any config value (YAML syntax), e.g.
``--set optim.epochs=5 --set data.supervision_ratio=0.25``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from training.config import TrainConfig, apply_overrides, config_from_dict, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("train", "train (or --resume) a model"),
        ("lr-find", "learning-rate range test"),
        ("evaluate", "matching accuracy of a checkpoint"),
        ("export", "export a checkpoint to ONNX with its contract"),
    ):
        s = sub.add_parser(name, help=help_)
        if name != "export":  # export takes the checkpoint's own config, whole
            s.add_argument("--config", help="YAML config (evaluate: default from checkpoint)")
            s.add_argument(
                "--set",
                dest="overrides",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="override a config value, e.g. optim.epochs=5",
            )
        s.add_argument("--out", help="output folder (train, lr-find, evaluate) or .onnx file")
        if name == "train":
            s.add_argument(
                "--resume", action="store_true", help="continue exactly from OUT/checkpoint_last.pt"
            )
        if name == "lr-find":
            s.add_argument("--steps", type=int, default=100)
            s.add_argument("--lr-start", type=float, default=1e-7)
            s.add_argument("--lr-end", type=float, default=1.0)
        if name in ("evaluate", "export"):
            s.add_argument("--checkpoint", required=True, help="checkpoint_*.pt of a run")
        if name == "evaluate":
            s.add_argument("--split", choices=("val", "test", "train"), default="val")
            s.add_argument("--max-pairs", type=positive_int, default=1000)
        if name == "export":
            s.add_argument("--name", help="model name (default: config name)")
            s.add_argument("--version", help="model version (default: config version)")
            s.add_argument(
                "--map-smoothing-px",
                type=float,
                default=0.0,
                help="Gaussian sigma (px) on the correspondence map before its peak "
                "(default 0: the raw cosine map, as validated in training)",
            )
    return p


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (an argparse type; also the experiment and evaluation scripts')."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (an argparse type of the evaluation script)."""
    return _int_at_least(text, 0)


def _config(args: argparse.Namespace, fallback: dict | None = None) -> TrainConfig:
    if args.config:
        cfg = load_config(args.config, args.overrides)
    elif fallback is not None:
        cfg = config_from_dict(apply_overrides(fallback, args.overrides))
    else:
        raise ValueError(f"`{args.command}` needs --config CONFIG.yaml")
    if args.out and args.command in ("train", "lr-find"):
        cfg.run.out_dir = args.out
    return cfg


def check_out_folder(out: str | None, what: str) -> None:
    """Refuse an ``--out`` folder that cannot be made or written, before any work is done.

    Nothing is created here: a run that fails later leaves no empty folder behind.
    """
    if not out:
        return
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file; give a folder for the {what}")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--out {path}: {parent} is a file, not a folder; give another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {path}: {parent} is not writable; give another --out")


def _evaluate(args: argparse.Namespace) -> dict:
    import torch

    from sar_optical_matcher.core.files import write_text_atomic
    from sar_optical_matcher.core.preprocessing import PreprocessSpec
    from training.checkpoint import load_checkpoint, load_weights, require_keys
    from training.data import build_datasets
    from training.evaluate import matching_accuracy
    from training.loop import build_matcher

    check_out_folder(args.out, "evaluation report")
    state = load_checkpoint(args.checkpoint)
    require_keys(
        state,
        args.checkpoint,
        ("config", "model", "specs"),
        "evaluate a checkpoint_*.pt written by `python -m training train`",
    )
    cfg = _config(args, state["config"])
    matcher = build_matcher(cfg)
    fix = (
        "leave --config out to use the checkpoint's own config"
        if args.config
        else "evaluate it with the code version that trained it"
    )
    load_weights(matcher, state["model"], args.checkpoint, fix)
    specs = (PreprocessSpec(**state["specs"]["sar"]), PreprocessSpec(**state["specs"]["optical"]))
    data = build_datasets(cfg.data, cfg.seed, cache_dir=Path(args.checkpoint).parent)
    split = getattr(data, args.split)
    if len(split) == 0:
        raise ValueError(
            f"the {args.split} split is empty under this config (data.split_fractions "
            f"{list(cfg.data.split_fractions)}, holdout_scenes {cfg.data.holdout_scenes}, "
            f"validation_scenes {cfg.data.validation_scenes}); choose another --split or "
            "--config"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = matching_accuracy(matcher.to(device), split, specs, device, args.max_pairs)
    report: dict = dict(result, split=args.split, checkpoint=str(args.checkpoint))
    if args.out:
        write_text_atomic(
            Path(args.out) / f"evaluate_{args.split}.json", json.dumps(report, indent=1)
        )
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    from training.loop import NonFiniteLossError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out: Path | None = None
    previous = _on_sigterm(args.command == "train")
    try:
        if args.command == "train":
            from training.loop import run_training

            cfg = _config(args)
            out = Path(cfg.run.out_dir)
            history = run_training(cfg, resume=args.resume)
            print(json.dumps(history[-1] if history else {}, indent=1))
        elif args.command == "lr-find":
            from training.data import build_datasets
            from training.loop import encoder_spec
            from training.lr_find import check_range_args, lr_range_test

            check_range_args(args.steps, args.lr_start, args.lr_end)  # before the data are built
            cfg = _config(args)
            check_out_folder(cfg.run.out_dir, "learning-rate test")
            encoder_spec(cfg)
            result = lr_range_test(
                cfg,
                build_datasets(cfg.data, cfg.seed, cache_dir=cfg.run.out_dir),
                cfg.run.out_dir,
                args.steps,
                args.lr_start,
                args.lr_end,
            )
            print(json.dumps(result, indent=1))
        elif args.command == "evaluate":
            print(json.dumps(_evaluate(args), indent=1))
        else:
            from training.export import export_checkpoint

            if not args.out:
                raise ValueError("export needs --out MODEL.onnx")
            path, contract = export_checkpoint(
                args.checkpoint, args.out, args.name, args.version, args.map_smoothing_px
            )
            print(
                json.dumps(
                    {
                        "path": str(path),
                        "map_smoothing_px": contract.map_smoothing_px,
                        "training": contract.training,
                    },
                    indent=1,
                )
            )
    except (ValueError, OSError) as exc:  # CheckpointError and unwritable --out included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted{_resume_hint(out)}", file=sys.stderr)
        return 130
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _on_sigterm(train: bool) -> Any:
    """For ``train``: SIGTERM stops as Ctrl-C does (``loop.sigterm_handler``); the old handler.

    None where nothing was installed (another command, or not the main thread).
    """
    if not train or threading.current_thread() is not threading.main_thread():
        return None
    from training.loop import sigterm_handler

    return signal.signal(signal.SIGTERM, sigterm_handler)


def _resume_hint(out: Path | None) -> str:
    """What an interrupted ``train`` can do next: resume only where a checkpoint is."""
    if out is None:
        return ""
    from training.checkpoint import CheckpointError, load_checkpoint
    from training.loop import LAST

    try:
        state = load_checkpoint(out / LAST)
    except CheckpointError:
        return f"; no {out / LAST} was written, so there is nothing to resume: train again"
    return (
        f"; {out / LAST} was saved after step {int(state['global_step'])} "
        f"({int(state['epoch'])} epoch(s) done): continue with --resume (and the same --config "
        "and --out)"
    )
