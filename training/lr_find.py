"""Learning-rate range test (Smith & Topin 2017, as used by Hughes & Schmitt 2019, Sec. 3.3).

The autoencoders' learning rate grows exponentially from ``lr_start`` (1e-7) over consecutive
batches of the real training step (critic phase included) while the loss is recorded. The
objective that is judged is ``w_recon L_recon + w_match L_match`` (the adversarial term is a
two-player game value, not something that decreases). The suggested range is the stretch of
steepest smooth descent of the smoothed loss over log10(lr): where the slope is at least half
as steep as at its steepest point. Its upper end is the one-cycle ``lr_max``, and
``lr_max / lower end`` a sensible ``div_factor``.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np

from sar_optical_matcher.core.files import staged_outputs
from training.config import TrainConfig
from training.data import Datasets

log = logging.getLogger(__name__)


class _ManualLR:
    """Stands in for the one-cycle scheduler: the range test sets the rate itself."""

    def step(self) -> None:
        """No-op."""

    def get_last_lr(self) -> list[float]:
        """Unused."""
        return [float("nan")]


def suggest_range(lr: np.ndarray, loss: np.ndarray, beta: float = 0.9) -> dict[str, float]:
    """Suggested learning-rate range from a range test.

    Args:
        lr: (N,) increasing learning rates.
        loss: (N,) loss per batch (raw; smoothed here with a bias-corrected EMA).
        beta: EMA factor.

    Returns:
        ``steepest_lr``, ``lr_low``, ``lr_high`` (the range of steepest smooth descent).
    """
    lr, loss = np.asarray(lr, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if lr.shape != loss.shape or lr.size < 5:
        raise ValueError("need at least 5 (lr, loss) points of equal length; run more steps")
    smooth = smooth_loss(loss, beta)
    ok = np.isfinite(smooth)
    x, y = np.log10(lr[ok]), smooth[ok]
    slope = np.gradient(y, x)
    lo_i = max(1, len(x) // 10)  # the first points carry the EMA's start-up transient
    core = slope[lo_i:]
    i = lo_i + int(np.argmin(core))
    steep = slope[i]
    a = b = i
    while a > lo_i and slope[a - 1] <= 0.5 * steep:
        a -= 1
    while b < len(x) - 1 and slope[b + 1] <= 0.5 * steep:
        b += 1
    return {
        "steepest_lr": float(10 ** x[i]),
        "lr_low": float(10 ** x[a]),
        "lr_high": float(10 ** x[b]),
    }


def smooth_loss(loss: np.ndarray, beta: float = 0.9) -> np.ndarray:
    """Bias-corrected exponential moving average."""
    out, avg = np.empty(len(loss)), 0.0
    for k, v in enumerate(loss):
        avg = beta * avg + (1 - beta) * v
        out[k] = avg / (1 - beta ** (k + 1))
    return out


def check_range_args(steps: int, lr_start: float, lr_end: float) -> None:
    """Raise ``ValueError`` unless ``0 < lr_start < lr_end`` and ``steps >= 5``."""
    if not 0 < lr_start < lr_end or steps < 5:
        raise ValueError(
            f"need 0 < --lr-start < --lr-end and --steps >= 5, got {lr_start:g}, {lr_end:g} "
            f"and {steps}"
        )


def lr_range_test(
    cfg: TrainConfig,
    data: Datasets,
    out_dir: str | Path,
    steps: int = 100,
    lr_start: float = 1e-7,
    lr_end: float = 1.0,
) -> dict[str, float]:
    """Run the range test; writes ``lr_find.csv`` and ``lr_find.png`` into ``out_dir``.

    Stops early when the smoothed loss exceeds 4x its minimum or is not finite.

    Returns:
        The suggestion of :func:`suggest_range` plus ``steps`` run.
    """
    import torch

    from training.loop import NonFiniteLossError, Trainer, _seed_of

    check_range_args(steps, lr_start, lr_end)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, data, out)
    trainer.sched = _ManualLR()  # type: ignore[assignment]
    rates = lr_start * (lr_end / lr_start) ** (np.arange(steps) / (steps - 1))
    rows: list[dict[str, float]] = []
    best, avg, epoch, plan = math.inf, 0.0, 0, trainer._plan(0)
    for k, rate in enumerate(rates):
        if k and k % len(plan) == 0:
            epoch += 1
            plan = trainer._plan(epoch)
        for group in trainer.opt.param_groups:
            group["lr"] = float(rate)
        b = k % len(plan)
        gen = torch.Generator(device=trainer.device).manual_seed(_seed_of(cfg.seed, epoch, b, 0, 9))
        try:
            terms = trainer.train_step(trainer._batch(plan[b], epoch, b).to(trainer.device), gen)
        except NonFiniteLossError:
            log.info("loss diverged (not finite) at lr %.3g; range test stopped", rate)
            break
        objective = cfg.loss.w_match * float(terms["match"])
        if trainer.use_recon:  # w_recon 0: not computed (NaN), and 0 x NaN would spoil the curve
            objective += cfg.loss.w_recon * float(terms["recon"])
        avg = 0.9 * avg + 0.1 * objective
        smoothed = avg / (1 - 0.9 ** (k + 1))
        rows.append(
            {
                "step": k,
                "lr": float(rate),
                "objective": objective,
                "loss": float(terms["loss"]),
                "smoothed": smoothed,
            }
        )
        best = min(best, smoothed)
        if k > 5 and smoothed > 4 * best:
            break
    if len(rows) < 5:
        raise ValueError(
            f"the loss was not finite after {len(rows)} of {steps} steps (at lr {rate:.3g}): too "
            "few points for a suggestion; lower --lr-end, or check the data and run.amp"
        )
    result = suggest_range(
        np.array([r["lr"] for r in rows]), np.array([r["objective"] for r in rows])
    )
    result["steps"] = float(len(rows))
    # both files or neither: a failure (or a kill) while writing keeps an earlier pair whole
    with staged_outputs() as stage:
        with open(stage.path(out / "lr_find.csv"), "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        _plot(stage.path(out / "lr_find.png"), rows, result)
    return result


def _plot(path: Path, rows: list[dict[str, float]], result: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    lr = [r["lr"] for r in rows]
    ax.plot(lr, [r["objective"] for r in rows], alpha=0.4, label="recon + match per batch")
    ax.plot(lr, [r["smoothed"] for r in rows], label="smoothed")
    ax.axvspan(
        result["lr_low"],
        result["lr_high"],
        color="g",
        alpha=0.15,
        label=f"suggested {result['lr_low']:.2g} .. {result['lr_high']:.2g}",
    )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
