"""Benchmark: time of one training step of the default recipe, variants side by side.

Same config (``training/configs/default.yaml`` unless ``--config``), same batches, one process,
variants timed in turn after a warm-up step each:

* ``shipped, fp32``: the config's weights (0.3.0: the paper's objective, ``w_recon = 1``,
  ``w_adv = 0.1``); a term with weight 0 is not computed;
* ``matching terms only, fp32``: ``w_recon = w_adv = 0`` (the 0.2.0 recipe, the ablation of
  ``make experiment``), decoders and critic skipped;
* ``matching terms only, fp32, all terms computed``: the same weights, but decoders and critic
  run anyway and their terms enter the loss with weight 0 (how the loop worked before it
  skipped them);
* ``shipped, bf16 autocast``: the shipped variant under CPU/GPU bf16 autocast.

The batches are cut from random images of the training sizes (256 px pairs, 128 px templates):
the cost of a step depends on the shapes, not on the pixels. Prints seconds per step and the
ratio to ``shipped, fp32``; ``--json`` writes the figures.

    .venv/bin/python scripts/bench_train_step.py
    .venv/bin/python scripts/bench_train_step.py --steps 2 --tiny    # smoke test sizes
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sar_optical_matcher.core.files import write_text_atomic  # noqa: E402
from sar_optical_matcher.core.preprocessing import PreprocessSpec  # noqa: E402
from scripts.bench_correspondence import check_json_destination  # noqa: E402
from training.config import TrainConfig, load_config  # noqa: E402
from training.data import Datasets, PatchSet  # noqa: E402
from training.loop import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: ``--set``-style overrides that shrink the model and batch for ``--tiny`` (smoke tests)
TINY = [
    "model.widths=[4, 6]",
    "model.convs_per_stage=[2, 1]",
    "model.descriptor_size=4",
    "model.critic_hidden=[16, 8]",
    "optim.batch_size=4",
    "loss.dense_negative_max_items=2",
]


def random_patch_set(n: int, search: int, template: int, seed: int = 0) -> PatchSet:
    """``n`` pairs of smooth random images with the template at the centre of the region."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, search // 8, search // 8), dtype=np.float32)
    sar = np.kron(base, np.ones((8, 8), np.float32)) + 0.1 * rng.random(
        (n, search, search), dtype=np.float32
    )
    sar /= sar.max()
    c = (search - template) // 2
    optical = sar[:, c : c + template, c : c + template].copy()
    truth = np.full((n, 2), float(c))
    return PatchSet(
        sar,
        optical,
        truth,
        ["bench"] * n,
        [f"p{i}" for i in range(n)],
        optical_region=sar.copy(),
        offset_xy_px=np.zeros((n, 2)),
    )


def time_variant(
    cfg: TrainConfig, data: Datasets, steps: int, compute_all: bool = False, amp: str = "none"
) -> float:
    """Median seconds of ``steps`` training steps (after one warm-up step)."""
    torch.manual_seed(0)
    trainer = Trainer(cfg, data, out_dir=Path("/nonexistent-bench-out"))
    if compute_all:
        trainer.use_recon = trainer.use_adv = True
        trainer.ae.decode = True
    trainer.amp = amp
    plan = trainer._plan(0)
    times = []
    for k in range(steps + 1):
        batch = trainer._batch(plan[k % len(plan)], 0, k % len(plan)).to(trainer.device)
        gen = torch.Generator(device=trainer.device).manual_seed(k)
        start = time.perf_counter()
        trainer.train_step(batch, gen)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        if k:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "training/configs/default.yaml"))
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--tiny", action="store_true", help="tiny model and batch (smoke test)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.threads < 0:
        ap.error(f"--steps must be >= 1 and --threads >= 0, got {args.steps} and {args.threads}")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no CUDA device here; use --device cpu")
    check_json_destination(ap, args.json)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"run.device={args.device}", "run.progress=false", "run.tensorboard=false"]
    overrides += TINY if args.tiny else []
    try:
        shipped = load_config(args.config, overrides)
    except ValueError as exc:  # a missing or invalid --config
        ap.error(str(exc))
    if shipped.optim.epochs < args.steps + 2:
        # the one-cycle schedule has epochs x (at least 1) steps; --steps 160 stepped past its
        # end (the rate a step runs at does not change its time)
        overrides.append(f"optim.epochs={args.steps + 2}")
        shipped = load_config(args.config, overrides)
    matching = load_config(args.config, [*overrides, "loss.w_recon=0.0", "loss.w_adv=0.0"])
    batch = shipped.optim.batch_size
    train = random_patch_set(2 * batch, shipped.data.search_size_px, shipped.data.template_size_px)
    spec = (PreprocessSpec("sar", mean=0.5, std=0.3), PreprocessSpec("optical", mean=0.5, std=0.3))
    data = Datasets(train, train, train, spec[0], spec[1], ["bench"])
    w = shipped.loss
    variants = [
        (f"shipped, fp32 (w_recon {w.w_recon:g}, w_adv {w.w_adv:g})", shipped, False, "none"),
        ("matching terms only, fp32 (w_recon 0, w_adv 0)", matching, False, "none"),
        ("matching terms only, fp32, all terms computed", matching, True, "none"),
        ("shipped, bf16 autocast", shipped, False, "bf16"),
    ]
    figures: dict[str, float] = {}
    for name, cfg, compute_all, amp in variants:
        figures[name] = time_variant(cfg, data, args.steps, compute_all, amp)
    base = figures[variants[0][0]]
    print(
        f"training step, batch {batch}, {torch.get_num_threads()} threads, {args.device}, "
        f"{platform.processor() or platform.machine()}, median of {args.steps} steps"
    )
    print(f"{'variant':<52} {'s/step':>8} {'x shipped':>10}")
    for name, sec in figures.items():
        print(f"{name:<52} {sec:>8.3f} {sec / base:>10.2f}")
    if args.json:  # its folder is created (a fresh clone has no build/)
        write_text_atomic(
            args.json,
            json.dumps(
                {
                    "batch_size": batch,
                    "threads": torch.get_num_threads(),
                    "device": args.device,
                    "seconds_per_step": figures,
                },
                indent=2,
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
