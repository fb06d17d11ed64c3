"""The training loop: semi-supervised adversarial autoencoders (Hughes & Schmitt 2019, Sec. 3).

One step (= one batch, labelled or unlabelled, alternating):

1. both autoencoders encode and reconstruct their images (autocast: see :func:`amp_mode`);
2. the shared critic is updated ``critic_steps`` (5) times on the batch's codes (detached) against
   fresh prior samples, eq. 7, weights clipped after each update. Re-using the batch's codes
   instead of encoding 5 new batches keeps one encoder pass per step (6x cheaper on a CPU);
3. the autoencoders take one Adam step on ``w_recon L_recon + w_match L_match - w_adv Dis(z)``
   (eq. 5, 8; the matching term on labelled batches only); the one-cycle schedule advances.

A term whose weight is 0 is not computed: ``w_recon = 0`` skips the decoders in step 1,
``w_adv = 0`` skips step 2 and the critic score (``scripts/bench_train_step.py`` measures the
saving); the skipped terms are logged as NaN.

Determinism: every random draw of a step (negatives, augmentation, prior samples) comes from
generators seeded by (seed, epoch, batch, rank), and the batch plan from (seed, epoch), so a
resumed run replays exactly the batches and draws the uninterrupted run would have made.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from sar_optical_matcher.core.files import atomic_output
from training import losses
from training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    require_keys,
    rng_state,
    save_checkpoint,
)
from training.config import (
    AugmentConfig,
    TrainConfig,
    config_from_dict,
    config_hash,
    config_to_dict,
    save_config,
)
from training.data import (
    Batch,
    BatchPlan,
    Datasets,
    epoch_plan,
    make_batch,
    repeated,
    split_labelled,
    unit_spec,
)
from training.evaluate import matching_accuracy
from training.models import Critic, DenseEncoder, EncoderSpec, Matcher, code_vectors

#: Checkpoint entries a resume reads (``Trainer.load`` and ``_check_same_data``).
_RESUME_KEYS = (
    "config_hash", "config", "model", "opt", "critic_opt", "sched", "scaler", "rng", "epoch",
    "batch_in_epoch", "global_step", "history", "best_acc", "specs", "sources",
)  # fmt: skip

log = logging.getLogger(__name__)
LAST, BEST = "checkpoint_last.pt", "checkpoint_best.pt"
NO_AUG = AugmentConfig(flip_p=0.0, optical_noise_std=0.0, scale_p=0.0)
TERMS = ("loss", "recon", "match", "adv", "critic")
#: Positions of each ``map`` code the critic scores (``models.code_vectors``); vector codes are
#: scored whole.
CRITIC_POSITIONS_PER_CODE = 16


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf; the run stopped and the last good checkpoint is kept."""


class _AutoEncoders(nn.Module):
    """Both autoencoders as one module (one DDP wrapper, one forward per step).

    With ``decode=False`` (reconstruction weight 0) only the encoders run: the decoders would
    contribute nothing to the loss (their cost is small beside the dense pass at full size,
    see ``docs/performance.md``). Their reconstructions are then ``None``.
    """

    def __init__(self, matcher: Matcher, decode: bool = True) -> None:
        super().__init__()
        self.sar, self.optical = matcher.sar, matcher.optical
        self.decode = decode

    def forward(
        self, sar: torch.Tensor, optical: torch.Tensor, sar_region: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, ...]:
        if self.decode:
            z_s, r_s = self.sar(sar)
            z_o, r_o = self.optical(optical)
        else:
            z_s, r_s = self.sar.encoder(sar), None
            z_o, r_o = self.optical.encoder(optical), None
        dense = None if sar_region is None else DenseEncoder(self.sar.encoder)(sar_region)
        return z_s, r_s, z_o, r_o, dense


def encoder_spec(cfg: TrainConfig) -> EncoderSpec:
    """The encoders' shape of ``cfg`` (checked: raises ``ValueError`` if it does not fit)."""
    return EncoderSpec(
        tuple(cfg.model.widths),
        tuple(cfg.model.convs_per_stage),
        cfg.model.descriptor_size,
        1,
        cfg.data.template_size_px,
        cfg.model.front_end,
        cfg.model.orientations,
        cfg.model.latent,
        cfg.model.position_norm,
    )


def build_matcher(cfg: TrainConfig) -> Matcher:
    """The networks of ``cfg.model`` (initialised from torch's current RNG)."""
    spec = encoder_spec(cfg)
    matcher = Matcher(spec)
    hidden = (int(cfg.model.critic_hidden[0]), int(cfg.model.critic_hidden[1]))
    matcher.critic = Critic(spec.descriptor_size, hidden)
    if cfg.model.identical_init:
        matcher.sar.load_state_dict(matcher.optical.state_dict())  # a copy, not shared
    return matcher


def _seed_of(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0]) >> 1


class Trainer:
    """Trains a :class:`Matcher` on :class:`Datasets`; rank 0 writes all outputs."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: Datasets,
        out_dir: str | Path | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        """Build models, optimisers and schedule (seeded by ``cfg.seed``)."""
        self.cfg, self.data, self.rank, self.world = cfg, data, rank, world_size
        self.out = Path(out_dir or cfg.run.out_dir)
        self.device = _device(cfg.run.device, rank)
        self.specs = (data.sar_spec, data.optical_spec)
        self.hash = config_hash(cfg)
        torch.manual_seed(cfg.seed)
        self.matcher = build_matcher(cfg).to(self.device)
        # Terms with weight 0 are not computed at all (no decoder pass, no critic updates):
        # they would not change the encoders' update, only cost time. They are logged as NaN.
        self.use_recon = cfg.loss.w_recon != 0
        self.use_adv = cfg.loss.w_adv != 0
        self.ae: nn.Module = _AutoEncoders(self.matcher, decode=self.use_recon)
        self.critic: nn.Module = self.matcher.critic
        if world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ae = nn.parallel.DistributedDataParallel(
                self.ae, device_ids=ids, find_unused_parameters=not self.use_recon
            )
            self.critic = nn.parallel.DistributedDataParallel(self.critic, device_ids=ids)
        o = cfg.optim
        ratio = cfg.data.supervision_ratio
        labelled, unlabelled = split_labelled(len(data.train), ratio, cfg.seed)
        if ratio > 0 and len(labelled) == 0:  # the matching terms would never be computed
            raise ValueError(
                f"data.supervision_ratio {ratio} labels none of the {len(data.train)} training "
                f"pairs (round({ratio} x {len(data.train)}) = 0); raise it to at least "
                f"{1 / len(data.train):.3g} (one pair), or set 0 for a run without labels"
            )
        self.labelled = repeated(labelled, data.train.repeat)
        self.unlabelled = repeated(unlabelled, data.train.repeat)
        self.steps_per_epoch = len(self._plan(0))
        ae_params = list(self.matcher.sar.parameters()) + list(self.matcher.optical.parameters())
        self.opt = torch.optim.Adam(
            ae_params, lr=o.lr_max / o.div_factor, betas=o.betas, weight_decay=o.weight_decay
        )
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt,
            max_lr=o.lr_max,
            total_steps=o.epochs * self.steps_per_epoch,
            pct_start=o.pct_start,
            div_factor=o.div_factor,
            cycle_momentum=False,
        )
        self.critic_opt = torch.optim.SGD(
            self.matcher.critic.parameters(),
            lr=o.critic_lr,
            momentum=o.critic_momentum,
            weight_decay=o.critic_weight_decay,
        )
        self.amp = amp_mode(cfg.run.amp, self.device)
        if rank == 0:
            log.info("training on %s, mixed precision: %s", self.device, self.amp)
            log.info(
                "%d training pairs (%d labelled), %d draws an epoch with source repeats, "
                "%d steps an epoch",
                len(data.train),
                len(labelled),
                len(self.labelled) + len(self.unlabelled),
                self.steps_per_epoch,
            )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.epoch, self.batch_in_epoch, self.global_step = 0, 0, 0
        self.history: list[dict[str, float]] = []
        self.best_acc = -math.inf
        self.last_lr = float("nan")
        #: set by :func:`sigterm_handler`: stop at the next step boundary, saved
        self.stop_requested = False

    # -- one step -------------------------------------------------------------------------
    def _plan(self, epoch: int) -> list[BatchPlan]:
        return epoch_plan(
            self.labelled, self.unlabelled, self.cfg.optim.batch_size, self.cfg.seed, epoch
        )

    def _batch(self, plan: BatchPlan, epoch: int, b: int) -> Batch:
        rng = np.random.default_rng([self.cfg.seed, epoch, b, self.rank, 3])
        part = plan.shard(self.rank, self.world)
        return make_batch(
            self.data.train,
            part.index,
            part.label,
            self.specs,
            self.cfg.augment,
            self.cfg.data.negative_min_shift_px,
            rng,
            random_windows=self.cfg.data.random_windows,
            unit_optical=unit_spec("optical", self.cfg.data),
            dense_radius=self.cfg.loss.dense_negative_radius_px,
        )

    def _autocast(self) -> Any:
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp != "none")

    def _critic_updates(self, z: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        o, n = self.cfg.optim, z.shape[0] // 2
        loss = torch.zeros((), device=self.device)
        for _ in range(o.critic_steps):
            prior = losses.sample_prior(n, z.shape[1], self.cfg.loss.prior_std, gen, self.device)
            score = self.critic(torch.cat([z, prior]))
            loss = losses.critic_loss(score[:n], score[n : 2 * n], score[2 * n :])
            self.critic_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.critic_opt.step()
            with torch.no_grad():
                for p in self.matcher.critic.parameters():
                    p.clamp_(-o.critic_clip, o.critic_clip)
        return loss.detach()

    def train_step(self, batch: Batch, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """One critic phase and one autoencoder update; returns the detached loss terms."""
        w = self.cfg.loss
        with self._autocast():
            sel = self._dense_items(batch)
            region = None if sel is None else batch.sar_region[sel]  # type: ignore[index]
            z_s, r_s, z_o, r_o, dense = self.ae(batch.sar, batch.optical, region)
        z_s, z_o = z_s.float(), z_o.float()
        skipped = torch.tensor(float("nan"), device=self.device)
        vectors = (
            code_vectors(torch.cat([z_s, z_o]), CRITIC_POSITIONS_PER_CODE, gen)
            if self.use_adv
            else None
        )
        l_critic = self._critic_updates(vectors.detach(), gen) if vectors is not None else skipped
        critic = self.matcher.critic
        critic.requires_grad_(False)  # no critic gradients (nor DDP hooks) in this backward
        try:
            l_adv, l_rec = skipped, skipped
            if vectors is not None:
                score = critic(vectors)
                half = len(vectors) // 2
                l_adv = losses.adversarial_loss(score[:half], score[half:])
            if self.use_recon:
                assert r_s is not None and r_o is not None  # decoded when use_recon
                l_rec = losses.reconstruction_loss(
                    batch.sar_target, r_s
                ) + losses.reconstruction_loss(batch.optical_target, r_o)
            l_match = torch.zeros((), device=self.device)
            if batch.label is not None:
                l_match = losses.contrastive_loss(z_o, z_s, batch.label, w.margin)
            if dense is not None and sel is not None and batch.region_true_xy is not None:
                if w.dense_kind == "infonce":
                    l_dense = losses.dense_infonce_loss(
                        z_o[sel], dense, batch.region_true_xy[sel], w.temperature, w.dense_ignore_px
                    )
                else:
                    l_dense = losses.dense_contrastive_loss(
                        z_o[sel],
                        dense,
                        batch.region_true_xy[sel],
                        w.margin,
                        self.cfg.data.negative_min_shift_px,
                    )
                l_match = l_match + w.w_dense * l_dense
            loss = w.w_match * l_match
            if self.use_recon:
                loss = loss + w.w_recon * l_rec
            if self.use_adv:
                loss = loss + w.w_adv * l_adv
            terms = {
                "loss": loss.detach(),
                "recon": l_rec.detach(),
                "match": l_match.detach(),
                "adv": l_adv.detach(),
                "critic": l_critic,
            }
            self._check_finite(terms)
            if not loss.requires_grad:
                # an unlabelled batch with both unsupervised terms off: nothing to learn from;
                # the schedule still advances so the run keeps its planned length (torch warns
                # when this precedes the first optimiser step; the order is intended here)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    self.sched.step()
                return terms
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            scale = self.scaler.get_scale() if self.scaler.is_enabled() else 0.0
            self.scaler.step(self.opt)
            self.scaler.update()
            self.last_lr = float(self.opt.param_groups[0]["lr"])  # the rate this step used
            # fp16: a step the scaler skipped (inf/NaN gradients, scale lowered) does not
            # advance the one-cycle schedule either
            if not self.scaler.is_enabled() or self.scaler.get_scale() >= scale:
                self.sched.step()
        finally:
            critic.requires_grad_(True)
        return terms

    def _dense_items(self, batch: Batch) -> torch.Tensor | None:
        """Indices of the positives (at most ``dense_negative_max_items``) for the dense term."""
        if batch.sar_region is None or batch.label is None:
            return None
        pos = torch.nonzero(batch.label == 1).flatten()[: self.cfg.loss.dense_negative_max_items]
        return pos if len(pos) else None

    def _check_finite(self, terms: dict[str, torch.Tensor]) -> None:
        skipped = {"recon": not self.use_recon, "adv": not self.use_adv}
        skipped["critic"] = skipped["adv"]
        computed = [v for k, v in terms.items() if not skipped.get(k, False)]
        bad = torch.tensor(
            [0.0 if all(torch.isfinite(v) for v in computed) else 1.0], device=self.device
        )
        if self.world > 1:
            dist.all_reduce(bad)
        if bad.item() > 0:
            values = {k: float(v) for k, v in terms.items()}
            raise NonFiniteLossError(
                f"loss is not finite at epoch {self.epoch + 1}, step {self.global_step + 1} "
                f"({values}); stopped without saving, the last good checkpoint "
                f"{self.out / LAST} is kept. Lower optim.lr_max (see `python -m training "
                "lr-find`), check the data for NaN/Inf pixels, or set run.amp=none."
            )

    # -- epochs ---------------------------------------------------------------------------
    def fit(
        self,
        resume: bool = False,
        max_epochs: int | None = None,
        on_step: Callable[[Trainer], None] | None = None,
    ) -> list[dict[str, float]]:
        """Train to ``cfg.optim.epochs`` (or stop after ``max_epochs`` in total).

        Args:
            resume: continue from ``out_dir/checkpoint_last.pt``.
            max_epochs: stop after this many completed epochs without changing the schedule.
            on_step: called after every optimiser step (tests use it to inject faults).

        Returns:
            The per-epoch metric history.
        """
        if resume:
            self.load(self.out / LAST)
        elif self.rank == 0:
            refuse_earlier_run(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out / "config.yaml")
        if self.rank == 0 and len(self.data.val) == 0:
            log.warning(
                "no validation pairs (data.split_fractions %s, validation_scenes %s): no epoch "
                "is selected and %s is not written; export %s instead",
                list(self.cfg.data.split_fractions),
                self.cfg.data.validation_scenes,
                BEST,
                LAST,
            )
        end = min(self.cfg.optim.epochs, max_epochs or self.cfg.optim.epochs)
        _ACTIVE.append(self)  # under DDP the ranks agree on the stop (_stop_agreed)
        try:
            return self._fit_epochs(end, on_step)
        finally:
            if self in _ACTIVE:
                _ACTIVE.remove(self)

    def _fit_epochs(
        self, end: int, on_step: Callable[[Trainer], None] | None
    ) -> list[dict[str, float]]:
        while self.epoch < end:
            if self._stop_agreed():  # the epoch just ended was saved
                raise KeyboardInterrupt
            sums = self._run_epoch(on_step)
            row = {"epoch": float(self.epoch + 1), "lr": self.last_lr}
            row.update({f"train_{k}": v for k, v in sums.items()})
            if self.rank == 0:
                row.update(self.validate())
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self.history.append(row)
            if self.rank == 0:
                self._end_of_epoch(row)
            if self.world > 1:
                dist.barrier()
        return self.history

    def _run_epoch(self, on_step: Callable[[Trainer], None] | None) -> dict[str, float]:
        self.matcher.train()
        plan = self._plan(self.epoch)
        sums = torch.zeros(len(TERMS), dtype=torch.float64)
        bar = tqdm(
            total=len(plan),
            initial=self.batch_in_epoch,
            leave=False,
            desc=f"epoch {self.epoch + 1}/{self.cfg.optim.epochs}",
            disable=self.rank != 0 or not self.cfg.run.progress,
        )
        for b in range(self.batch_in_epoch, len(plan)):
            batch = self._batch(plan[b], self.epoch, b).to(self.device)
            gen = torch.Generator(device=self.device)
            gen.manual_seed(_seed_of(self.cfg.seed, self.epoch, b, self.rank, 5))
            terms = self.train_step(batch, gen)
            sums += torch.tensor([float(terms[k]) for k in TERMS], dtype=torch.float64)
            self.global_step, self.batch_in_epoch = self.global_step + 1, b + 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(terms['loss']):.4f}")
            every = self.cfg.run.checkpoint_every_steps
            if every and self.global_step % every == 0 and b + 1 < len(plan) and self.rank == 0:
                self.save(self.out / LAST)
            if on_step is not None:
                on_step(self)
            if self._stop_agreed() and b + 1 < len(plan):  # the epoch's last step: saved below
                bar.close()
                self.save(self.out / LAST)
                raise KeyboardInterrupt
        bar.close()
        if self.world > 1:
            dist.all_reduce(sums)
            sums /= self.world
            self._sync_buffers()
        # A resumed partial epoch only averages its own batches: ``batches`` (train_batches in
        # metrics.csv) says how many, against the epoch's full count for the others.
        n = max(len(plan) - int(self._resumed_from), 1)
        self._resumed_from = 0
        return {**{k: float(v) / n for k, v in zip(TERMS, sums)}, "batches": float(n)}

    _resumed_from = 0

    def _stop_agreed(self) -> bool:
        """Whether to stop here: asked of this process or, under DDP, of any rank.

        Under DDP every rank then sets ``stop_requested`` and stops at the same step. A
        scheduler's SIGTERM reaches the ranks at different moments (torchrun forwards its
        own to every worker); a rank stopping alone left the others waiting in their next
        all-reduce. Under DDP this is one collective: every rank calls it at the same points
        (after each step, before each epoch).
        """
        if self.world > 1:
            flag = torch.tensor([float(self.stop_requested)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.stop_requested = bool(flag.item())
        return self.stop_requested

    def _sync_buffers(self) -> None:
        """Average the BatchNorm running statistics over the ranks (each saw its own shard).

        DDP keeps parameters identical but only broadcasts buffers before a forward pass, so
        after the last step every rank holds its own statistics; averaging them makes every
        rank (and the checkpoint) hold the same model.
        """
        for buf in self.matcher.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf)
                buf /= self.world
            else:
                dist.broadcast(buf, 0)

    def validate(self) -> dict[str, float]:
        """Validation losses (positives and negatives, no augmentation) and matching accuracy."""
        val = self.data.val
        if len(val) == 0:
            return {}
        self.matcher.eval()
        n = min(len(val), self.cfg.data.max_val_pairs)
        rng = np.random.default_rng([self.cfg.seed, 23])
        sums, count = np.zeros(2), 0
        with torch.no_grad():
            for start in range(0, n, 32):
                index = np.arange(start, min(start + 32, n))
                label = (index % 2).astype(np.int64)  # alternate positives and negatives
                b = make_batch(
                    val, index, label, self.specs, NO_AUG, self.cfg.data.negative_min_shift_px, rng
                ).to(self.device)
                z_s, r_s = self.matcher.sar(b.sar)
                z_o, r_o = self.matcher.optical(b.optical)
                rec = losses.reconstruction_loss(b.sar_target, r_s) + losses.reconstruction_loss(
                    b.optical_target, r_o
                )
                match = losses.contrastive_loss(
                    z_o, z_s, torch.from_numpy(label).to(z_o.device), self.cfg.loss.margin
                )
                sums += len(index) * np.array([float(rec), float(match)])
                count += len(index)
        out = {"val_recon": float(sums[0] / count), "val_match": float(sums[1] / count)}
        acc = matching_accuracy(
            self.matcher, val, self.specs, self.device, self.cfg.data.max_val_pairs
        )
        out.update({f"val_{k}": v for k, v in acc.items()})
        self.matcher.train()
        return out

    def _end_of_epoch(self, row: dict[str, float]) -> None:
        acc = row.get(f"val_{self.cfg.optim.select_by}", float("nan"))
        is_best = math.isfinite(acc) and acc >= self.best_acc
        if is_best:
            self.best_acc = acc
            # best first: a run killed between the two saves keeps its new best epoch (the
            # last checkpoint of the previous epoch still resumes, one epoch earlier)
            self.save(self.out / BEST)
        self.save(self.out / LAST)
        _write_logs(self.out, self.history, self.cfg.run.tensorboard)
        log.info(
            "epoch %d: %s", int(row["epoch"]), ", ".join(f"{k}={v:.4g}" for k, v in row.items())
        )

    # -- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly (weights_only-loadable)."""
        return {
            "format": 1,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "config_hash": self.hash,
            "config": config_to_dict(self.cfg),
            "model": self.matcher.state_dict(),
            "opt": self.opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "sched": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "history": [{k: float(v) for k, v in row.items()} for row in self.history],
            "best_acc": self.best_acc,
            "specs": {"sar": self.specs[0].to_dict(), "optical": self.specs[1].to_dict()},
            "sources": list(self.data.sources),
            "splits": {
                name: sorted(set(getattr(self.data, name).scenes))
                for name in ("train", "val", "test")
            },
            "world_size": self.world,
            "torch_version": str(torch.__version__),
        }

    def save(self, path: Path) -> None:
        """Atomic checkpoint (rank 0 only)."""
        if self.rank == 0:
            save_checkpoint(self.state(), path)

    def _check_same_data(self, state: dict[str, Any], path: Path) -> None:
        """Refuse a checkpoint whose run trained on other data (sources, statistics, length).

        The config hash does not see a data folder's contents. On other data the one-cycle
        schedule, restored with the old length, fails in torch hours later ("Tried to step ...
        times"), or the run silently continues on other data.
        """
        steps = self.cfg.optim.epochs * self.steps_per_epoch
        now = {"sar": self.specs[0].to_dict(), "optical": self.specs[1].to_dict()}
        diffs = []
        if list(state["sources"]) != list(self.data.sources):
            diffs.append(f"sources {state['sources']} -> {list(self.data.sources)}")
        if not all(_same_specs(state["specs"][m], now[m]) for m in now):
            diffs.append(f"preprocessing statistics {state['specs']} -> {now}")
        if int(state["sched"]["total_steps"]) != steps:
            diffs.append(f"{state['sched']['total_steps']} -> {steps} steps in all")
        if diffs:
            raise CheckpointError(
                f"{path} was trained on other data than this config now loads ("
                f"{'; '.join(diffs)}); resume with the run's data (its patches_*.npz cache in "
                "the run folder, if deleted), or train into a new --out"
            )

    def load(self, path: Path) -> None:
        """Restore a checkpoint of the same configuration."""
        state = load_checkpoint(path, map_location=self.device)
        require_keys(state, path, _RESUME_KEYS, "resume a checkpoint_last.pt of a run")
        if state["config_hash"] != self.hash:
            diffs = config_diffs(state["config"], config_to_dict(self.cfg))
            own = self.out / "config.yaml"
            use = f"--config {own}" if own.is_file() else "the config it was trained with"
            raise CheckpointError(
                f"{path} was trained under another config (hash {state['config_hash'][:12]}, "
                f"now {self.hash[:12]}): {'; '.join(diffs) or 'a key this code hashes anew'}; "
                f"resume with the run's own config ({use}), or train into a new --out"
            )
        self._check_same_data(state, path)
        if int(state.get("world_size", 1)) != self.world and self.rank == 0:
            log.warning(
                "%s was trained on %s rank(s), resumed on %d: the same batches, but other "
                "augmentation draws (seeded per rank) than an uninterrupted run",
                path,
                state.get("world_size", 1),
                self.world,
            )
        load_weights(
            self.matcher,
            state["model"],
            path,
            "resume with the code version that wrote it, or train into a new --out",
        )
        self.opt.load_state_dict(state["opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.sched.load_state_dict(state["sched"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        self.epoch, self.batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])
        self.global_step = int(state["global_step"])
        self.history, self.best_acc = list(state["history"]), float(state["best_acc"])
        self._resumed_from = self.batch_in_epoch


def config_diffs(old: dict[str, Any], new: dict[str, Any], width: int = 60) -> list[str]:
    """``"section.key old -> new"`` for each key the weights depend on that differs.

    The ``run`` section (device, threads, output) is left out, as the config hash leaves it
    out. A key ``old`` lacks (a config of code before the key) counts as its default: it is
    listed only where ``new`` differs from the default, as ``(absent: default X)``; a key
    ``new`` lacks shows as ``(absent)``. Long values are cut to ``width`` chars.
    """

    def shown(v: Any) -> str:
        text = "(absent)" if v is _ABSENT else repr(v)
        return text if len(text) <= width else text[: width - 3] + "..."

    filled = _with_defaults(old)
    out = []
    for section in sorted((set(old) | set(new)) - {"run"}):
        a, b = old.get(section, _ABSENT), new.get(section, _ABSENT)
        if a is _ABSENT and isinstance(filled.get(section), dict):
            a = {}  # a section added after the old config: its keys are its defaults
        if isinstance(a, dict) and isinstance(b, dict):
            pairs = [
                (f"{section}.{k}", a.get(k, _ABSENT), b.get(k, _ABSENT), k)
                for k in sorted(set(a) | set(b))
            ]
        else:
            pairs = [(section, a, b, None)]
        for key, x, y, k in pairs:
            default = filled.get(section, {}).get(k, _ABSENT) if k is not None else _ABSENT
            if x is _ABSENT and default is not _ABSENT:
                if default == y:
                    continue
                out.append(f"{key} (absent: default {shown(default)}) -> {shown(y)}")
            elif x != y:
                out.append(f"{key} {shown(x)} -> {shown(y)}")
    return out


def _with_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` completed with the defaults of the keys it lacks ({} where this code rejects it)."""
    try:
        return config_to_dict(config_from_dict(raw))
    except (ValueError, TypeError):  # e.g. a key this code no longer knows: nothing filled
        return {}


_ABSENT = object()


def _same_specs(saved: dict[str, Any], now: dict[str, Any]) -> bool:
    return saved.keys() == now.keys() and all(
        saved[k] == now[k]
        if isinstance(now[k], str)
        else math.isclose(float(saved[k]), float(now[k]), rel_tol=1e-6)
        for k in now
    )


#: The trainer of this process while it trains, for the SIGTERM handler.
_ACTIVE: list[Trainer] = []


def sigterm_handler(signum: int, frame: Any) -> None:
    """SIGTERM (e.g. a batch scheduler's or ``kill``'s) as a clean stop, like Ctrl-C.

    While a trainer runs its steps, it is asked to stop at the next step boundary, where it
    saves ``checkpoint_last.pt`` (a state exact resume can continue) and raises
    ``KeyboardInterrupt``; under DDP every rank stops at the first step boundary after any of
    them was asked (torchrun forwards its SIGTERM to each); elsewhere (or at a
    second SIGTERM) ``KeyboardInterrupt`` is raised at once, and the atomic writes delete
    their temporary files.
    """
    pending = [t for t in _ACTIVE if not t.stop_requested]
    if not pending:
        raise KeyboardInterrupt
    for trainer in pending:
        trainer.stop_requested = True
    log.warning("SIGTERM: stopping after this step, saving %s", pending[0].out / LAST)


def run_training(
    cfg: TrainConfig,
    resume: bool = False,
    out_dir: str | Path | None = None,
    data: Datasets | None = None,
) -> list[dict[str, float]]:
    """Train from a config, single process or under ``torchrun`` (DDP, env:// rendezvous).

    With ``WORLD_SIZE`` > 1 in the environment, every rank joins the process group (NCCL on
    CUDA, gloo on CPU), builds the same datasets, trains its share of each global batch; rank 0
    validates and writes. Returns the per-epoch metric history.
    """
    from training.data import build_datasets

    encoder_spec(cfg)  # a model that does not fit the patch size: said before the data
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if cfg.run.num_threads:
        torch.set_num_threads(cfg.run.num_threads)
    if world > 1 and cfg.optim.batch_size % world:
        raise ValueError(
            f"optim.batch_size {cfg.optim.batch_size} is not divisible by the "
            f"{world} ranks; choose a multiple of the world size"
        )
    if world > 1 and not dist.is_initialized():
        cuda = _device(cfg.run.device, rank).type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo")
    out = Path(out_dir or cfg.run.out_dir)
    if not resume and rank == 0:  # before the data are built: said at once
        refuse_earlier_run(out)
    if resume and not (out / LAST).is_file():  # said before the data are built (and cached
        # into a mistyped --out: 23 s and a 199 MB patch cache on the 3MOS tiles, then this)
        raise CheckpointError(
            f"checkpoint {out / LAST} not found; check the --out folder, or train without "
            "--resume"
        )
    try:
        data = data or build_datasets(cfg.data, cfg.seed, cache_dir=cfg.run.out_dir)
        trainer = Trainer(cfg, data, out_dir, rank, world)
        return trainer.fit(resume=resume)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def refuse_earlier_run(out: Path) -> None:
    """A fresh run must not start in a folder holding another run's checkpoints.

    It would overwrite ``checkpoint_last.pt`` and leave the earlier ``checkpoint_best.pt``
    (which export and the experiment script take) from the other run.
    """
    if out.is_file():
        raise ValueError(f"--out {out} is a file; give a folder for the run")
    earlier = [name for name in (LAST, BEST) if (out / name).exists()]
    if earlier:
        raise ValueError(
            f"{out} already holds a run ({', '.join(earlier)}); continue it with --resume, or "
            "train into a new --out folder (or delete that run's checkpoints first)"
        )


def cpu_supports_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - older or stripped torch builds
        return False


def amp_mode(requested: str, device: torch.device) -> str:
    """The mixed precision a run actually uses for ``run.amp = requested`` on ``device``.

    CUDA: as requested. CPU: ``bf16`` only where the CPU computes bf16 natively (measured on
    an AMX Xeon by ``scripts/bench_train_step.py``: 0.62x the fp32 step time); where bf16
    would be emulated no gain is expected, and fp16 is not used on a CPU (no gradient scaling
    there), so both fall back to fp32 (``none``).
    """
    if device.type == "cuda":
        return requested
    return "bf16" if requested == "bf16" and cpu_supports_bf16() else "none"


def _device(name: str, rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("run.device=cuda but no CUDA device is visible; use run.device=cpu")
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(name)


def _write_logs(out: Path, history: list[dict[str, float]], tensorboard: bool) -> None:
    """metrics.csv, loss_curves.png and TensorBoard scalars from the full history.

    The CSV and the figure are each written under a temporary name and renamed over the
    previous epoch's: never left truncated.
    """
    keys = sorted({k for row in history for k in row}, key=lambda k: (k != "epoch", k))
    with atomic_output(out / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(out / "tb")) as tb:
            row = history[-1]
            for k, v in row.items():
                if k != "epoch" and math.isfinite(v):
                    tb.add_scalar(k.replace("_", "/", 1), v, int(row["epoch"]))
    with atomic_output(out / "loss_curves.png") as tmp:
        _plot(tmp, history)


#: The panels of loss_curves.png: the metrics each one draws.
PANELS = (
    ("train_recon", "val_recon"),
    ("train_match", "val_match"),
    ("val_acc_1_3px", "val_acc_1px", "val_acc_3px"),
)


def plotted_series(history: list[dict[str, float]]) -> list[list[tuple[str, list[float]]]]:
    """Per panel of :data:`PANELS`, the ``(metric, value per epoch)`` series it draws.

    A metric no epoch has a finite value of (the validation's, in a run without validation
    pairs) is left out: matplotlib would draw nothing and warn of a legend without artists.
    """
    out = []
    for names in PANELS:
        series = [(k, [r.get(k, math.nan) for r in history]) for k in names]
        out.append([(k, ys) for k, ys in series if any(math.isfinite(y) for y in ys)])
    return out


def _plot(path: Path, history: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(14, 4))
    for ax, names, series in zip(axes, PANELS, plotted_series(history)):
        for k, ys in series:
            ax.plot(ep, ys, marker="o", label=k)
        ax.set_xlabel("epoch")
        if series:
            ax.legend()
        else:  # e.g. no validation pairs: say so rather than leave a blank panel
            text = f"no values of {', '.join(names)}"
            ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
