"""Training configuration: nested dataclasses, YAML load/save, ``--set`` overrides, stable hash.

Every hyper-parameter of the paper (Hughes & Schmitt 2019, Sec. 3.3 and 4.1) is a field here, with
the paper's value as default unless stated otherwise. The :func:`config_hash` (sha256 of the
canonical JSON of everything that changes the trained weights) is recorded in every checkpoint
and in the exported model contract, so a model can always be traced back to its configuration.
The ``run`` section (output folder, device, logging) does not change the weights and is
excluded from the hash.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

#: ``model.front_end`` values (``training.models.Encoder`` builds them).
FRONT_ENDS = ("learned", "oriented_gradients")
#: ``optim.select_by`` values: validation shares within 1/3, 1 and 3 px.
SELECT_BY = ("acc_1_3px", "acc_1px", "acc_3px")
#: ``model.latent`` values: the paper's pooled vector code, or a spatial code map.
LATENTS = ("vector", "map")


@dataclass
class DataConfig:
    """Where the pairs come from and how patches are cut.

    Attributes:
        sources: list of source specs, each a dict with ``kind`` in ``synthetic`` (``n_scenes``,
            ``size_px``, ``seed``), ``3mos`` (``root``; optional ``offsets_px`` and
            ``tile_offsets_px``: measured label corrections per scene and per tile,
            ``scripts/measure_offsets.py``), ``sen12`` (``root``), ``gdal``
            (``sar``, ``optical``, optional ``scene``); forwarded to ``training.sources``. Any
            spec may set ``repeat`` (integer >= 1, default 1): its training pairs are drawn
            that many times per epoch (each time with a fresh window and augmentation), to
            weight scarce real tiles over synthetic scenes. The labelled/unlabelled split is
            made per pair before repeating, so all copies of a pair share its label status.
        split_fractions: (train, validation, test) fractions of the *scenes* (never patches).
        holdout_scenes: scene names forced into the test split.
        validation_scenes: scene names forced into the validation split (model selection and
            confidence calibration use them; never training, never the held-out test).
        search_size_px: side S of the cut patch pair / SAR search region (paper: 256).
        template_size_px: side T of the optical template and the SAR window (paper: 128).
        max_keypoints_per_scene: Harris corners kept per scene larger than S.
        min_distance_px: non-maximum suppression spacing of the corners (paper: 128).
        random_crops_per_scene: extra random S x S crops per scene larger than S (0: none).
        random_windows: draw the template window anywhere in the S x S pair (the SAR window
            moves with it) instead of always at the centre: each training batch draws fresh
            windows, the validation/test sets one fixed (seeded) window per pair. Without it a
            256 px tile (3MOS) yields one positive only, and validation could not tell a
            matcher from one that always answers "centre".
        negative_min_shift_px: a negative SAR window is at least this far (Chebyshev) from the
            true one. 8 px: a 128 window shifted by 8 px still shares 88 % of its pixels, so
            closer negatives would contradict the positives (the paper's correspondence maps
            peak with a spread of a few px); farther ones are drawn uniformly, as in the paper.
        supervision_ratio: share of the training pairs that are labelled (paper: 1, .75, .5,
            .25, .05); the labelled subset is chosen with the seed and oversampled.
        low_percentile: lower stretch percentile of the preprocessing.
        high_percentile: upper stretch percentile of the preprocessing.
        max_val_pairs: cap on validation pairs evaluated per epoch (dense maps cost time).
        val_windows_per_pair: with ``random_windows``, each validation pair is used this many
            times, each with its own fixed (seeded) template window: more validation samples
            from few real tiles (e.g. 10 tiles x 4), so that model selection is less noisy.
    """

    sources: list[dict[str, Any]] = field(
        default_factory=lambda: [{"kind": "synthetic", "n_scenes": 8, "size_px": 512, "seed": 0}]
    )
    split_fractions: tuple[float, float, float] = (0.8, 0.2, 0.0)
    holdout_scenes: list[str] = field(default_factory=list)
    validation_scenes: list[str] = field(default_factory=list)
    search_size_px: int = 256
    template_size_px: int = 128
    max_keypoints_per_scene: int = 64
    min_distance_px: int = 128
    random_crops_per_scene: int = 0
    random_windows: bool = True
    negative_min_shift_px: int = 8
    supervision_ratio: float = 1.0
    low_percentile: float = 2.0
    high_percentile: float = 98.0
    max_val_pairs: int = 200
    val_windows_per_pair: int = 1


@dataclass
class ModelConfig:
    """Network shape (see ``training.models.EncoderSpec``).

    Attributes:
        widths: encoder channels per stage. Default (16, 32, 64, 64) rather than VGG11's
            (64, 128, 256, 512): ~1.6 M parameters, a CPU training step of batch 32 takes
            about 1 s and a full 129 x 129 dense map about 0.14 s per keypoint in onnxruntime on
            2 cores, so the model can be trained on a laptop and runs in QGIS without a GPU.
        convs_per_stage: convolutions per stage; (2, 1, 1, 2) keeps the dense map exact.
        descriptor_size: channels D of the latent code: its length for a ``vector`` code
            (paper: 256), its channels at each position for a ``map`` code.
        critic_hidden: sizes of the critic's two hidden layers (decreasing).
        identical_init: start the SAR autoencoder from a copy of the optical one's random
            initial weights. They share no weights and diverge in training; at step 0 the pair
            is a random-feature template matcher instead of two unrelated functions.
        front_end: ``"learned"`` (the paper) or ``"oriented_gradients"``: the first conv of
            both encoders fixed to sign-free oriented derivatives (``training.models``).
        orientations: channels of the oriented-gradient front end.
        latent: ``"vector"`` (the paper: pooled stages, fully connected head, one D-vector per
            patch) or ``"map"`` (no pooling, stage i's convs dilated by 2^i, 1x1 head: a
            D x k x k code map; ``training.models``).
        position_norm: ``map`` only: L2-normalise the code at every position (CFOG's
            per-pixel normalisation), so bright scatterers cannot dominate a window's cosine.
    """

    widths: tuple[int, ...] = (16, 32, 64, 64)
    convs_per_stage: tuple[int, ...] = (2, 1, 1, 2)
    descriptor_size: int = 256
    critic_hidden: tuple[int, int] = (128, 64)
    identical_init: bool = False
    front_end: str = "learned"
    orientations: int = 8
    latent: str = "vector"
    position_norm: bool = False


@dataclass
class LossConfig:
    """Loss terms (paper eq. 1, 4, 7, 8) and their weights.

    Attributes:
        margin: contrastive margin m on the squared distance of L2-normalised codes, which lies
            in [0, 4] (= 2 - 2 cos). m = 1 pushes negatives to cos <= 0.5: a clear gap in the
            correspondence map without asking overlapping windows to be orthogonal (m = 2).
        prior_std: standard deviation of the isotropic Gaussian prior p(z) on the raw codes. The
            paper writes N(0, 5); we read 5 as the VARIANCE, so the default std is sqrt(5).
        w_recon: weight of the reconstruction term (per-pixel mean squared error, both images).
        w_match: weight of the contrastive matching term (labelled batches only).
        w_adv: weight of the encoders' adversarial term (eq. 8).
        dense_negative_radius_px: r > 0 adds a dense term (``dense_kind``) on each labelled
            positive: the template against all windows within +-r px of the true one (one
            dense pass over a (T + 2r)^2 region). 0: the paper's single random negative only.
        dense_negative_max_items: at most this many positives of a batch get the dense term
            (its cost grows with (T + 2r)^2 per item: ~10 windows' worth at r = 16 on a CPU).
        dense_kind: ``"hinge"`` (eq. 4 against every window, ``dense_contrastive_loss``) or
            ``"infonce"`` (cross-entropy of the whole map at the true offset,
            ``dense_infonce_loss``): the argmax decision the matcher takes.
        temperature: softmax temperature of the ``infonce`` term (on cosines).
        dense_ignore_px: ``infonce``: windows this close (Chebyshev px) to the true one are
            left out of the softmax.
        w_dense: weight of the dense term.
    """

    margin: float = 1.0
    prior_std: float = math.sqrt(5.0)
    w_recon: float = 1.0
    w_match: float = 1.0
    w_adv: float = 1.0
    dense_negative_radius_px: int = 0
    dense_negative_max_items: int = 8
    dense_kind: str = "hinge"
    temperature: float = 0.07
    dense_ignore_px: int = 1
    w_dense: float = 1.0


@dataclass
class OptimConfig:
    """Optimisers and schedule (paper Sec. 3.3).

    Attributes:
        epochs: training epochs (paper: 100).
        batch_size: global batch size (split over DDP ranks).
        lr_max: peak learning rate of the one-cycle schedule (paper range 5e-5 .. 5e-4).
        pct_start: share of the cycle spent warming up.
        div_factor: initial lr = lr_max / div_factor (5e-4 / 10 = 5e-5, the paper's lower end).
        betas: Adam betas (kept fixed: the one-cycle momentum cycling is off).
        weight_decay: Adam weight decay.
        critic_lr: SGD learning rate of the critic.
        critic_momentum: SGD momentum of the critic.
        critic_weight_decay: SGD weight decay of the critic.
        critic_steps: critic updates per encoder update.
        critic_clip: critic weights are clipped to [-clip, clip] after each update.
        select_by: validation figure that picks ``checkpoint_best.pt`` (highest wins, the later
            epoch on a tie): ``acc_1_3px``, ``acc_1px`` or ``acc_3px`` (shares of validation
            matches within 1/3, 1 or 3 px).
    """

    epochs: int = 100
    batch_size: int = 32
    lr_max: float = 5e-4
    pct_start: float = 0.3
    div_factor: float = 10.0
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 1e-4
    critic_lr: float = 4e-3
    critic_momentum: float = 0.9
    critic_weight_decay: float = 3e-4
    critic_steps: int = 5
    critic_clip: float = 0.1
    select_by: str = "acc_1_3px"


@dataclass
class AugmentConfig:
    """Augmentation (paper Sec. 3.3); the same flips/scale for both images of a labelled pair.

    Attributes:
        flip_p: probability of a horizontal and (independently) a vertical flip.
        transpose_p: probability of transposing (rows <-> columns) before the flips; with
            flips it gives all 8 rotations/reflections of the square (paper: 0, not used).
        optical_noise_std: std of Gaussian noise added to the [0, 1] optical image.
        scale_p: probability of an intensity scaling.
        scale_range: range of the intensity scale factor.
        gamma_p: probability of a contrast (gamma) change ``unit ** g`` of an image, drawn for
            each image of a pair independently (sensors render the two modalities with
            different tone curves; not in the paper: 0 there).
        gamma_range: range of ``g`` (log-uniform).
        sar_noise_std: extra additive noise on the [0, 1] SAR image, its std uniform in
            [0, sar_noise_std] per image (more speckle than the training sensors show; on
            log/display data multiplicative speckle is additive). 0: off (the paper).
        zoom_p: probability of a geometric zoom of a pair: both images (the SAR search region
            and the optical region the template is cut from) resampled bilinearly about their
            centre by one factor, the label scaled with them; pixels from outside the pair are
            invalid (NaN). Ground sampling distances other than the training sensors'. Needs
            ``data.random_windows``. 0: off (the paper).
        zoom_range: range of the zoom factor (log-uniform; > 1 enlarges the structures).
    """

    flip_p: float = 0.5
    transpose_p: float = 0.0
    optical_noise_std: float = 0.02
    scale_p: float = 0.2
    scale_range: tuple[float, float] = (0.95, 1.05)
    gamma_p: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.4)
    sar_noise_std: float = 0.0
    zoom_p: float = 0.0
    zoom_range: tuple[float, float] = (0.8, 1.25)


@dataclass
class RunConfig:
    """How the run is executed; not part of the config hash.

    Attributes:
        out_dir: output folder (checkpoints, metrics, plots, logs).
        device: ``auto``, ``cpu`` or ``cuda``.
        amp: mixed precision: ``bf16``, ``fp16`` or ``none``. On CUDA as given; on a CPU
            only ``bf16``, and only where the CPU has native bf16 (else fp32): ``loop.amp_mode``.
        checkpoint_every_steps: also checkpoint every N steps inside an epoch (0: epochs only).
        progress: show tqdm bars.
        tensorboard: write TensorBoard event files.
        num_threads: torch CPU threads (0: torch's default).
    """

    out_dir: str = "runs/default"
    device: str = "auto"
    amp: str = "bf16"
    checkpoint_every_steps: int = 0
    progress: bool = True
    tensorboard: bool = True
    num_threads: int = 0


@dataclass
class TrainConfig:
    """The whole configuration of a training run."""

    name: str = "sar-optical-matcher"
    version: str = "0.1.0"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        """Validate the values that would otherwise fail late."""
        self._check_table()
        self._check_relations()
        choices = {
            "run.amp": (self.run.amp, ("bf16", "fp16", "none")),
            "optim.select_by": (self.optim.select_by, SELECT_BY),
            "loss.dense_kind": (self.loss.dense_kind, ("hinge", "infonce")),
            "model.front_end": (self.model.front_end, FRONT_ENDS),
            "model.latent": (self.model.latent, LATENTS),
            "run.device": (self.run.device, ("auto", "cpu", "cuda")),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {value!r}")
        for spec in self.data.sources:
            rep = spec.get("repeat", 1) if isinstance(spec, dict) else 1
            if isinstance(rep, bool) or not isinstance(rep, int) or rep < 1:
                raise ValueError(
                    f"data.sources: repeat must be an integer >= 1 (times a source's pairs are "
                    f"drawn per epoch), got {rep!r} in {spec}"
                )

    def _check_table(self) -> None:
        for key, ok, need in _RANGES:
            section, _, name = key.rpartition(".")
            value = getattr(getattr(self, section) if section else self, name)
            if not ok(value):
                raise ValueError(f"{key} must be {need}, got {_shown(value)}")

    def _check_relations(self) -> None:
        """Values that are valid alone but not together."""
        if self.optim.critic_steps < 1 and self.loss.w_adv != 0:
            raise ValueError(
                f"optim.critic_steps must be >= 1 while loss.w_adv is {self.loss.w_adv} (the "
                "critic would never be trained); set loss.w_adv=0 to train without the term"
            )
        if self.data.low_percentile >= self.data.high_percentile:
            raise ValueError(
                f"data.low_percentile ({self.data.low_percentile}) must be below "
                f"data.high_percentile ({self.data.high_percentile})"
            )
        if self.data.search_size_px < self.data.template_size_px + 2:
            # the model contract's least: a correspondence map of 3 x 3 offsets
            raise ValueError(
                "data.search_size_px must be >= data.template_size_px + 2 (a correspondence map "
                f"of at least 3 x 3 offsets), got {self.data.search_size_px} and "
                f"{self.data.template_size_px}"
            )
        radius = self.loss.dense_negative_radius_px
        if self.data.template_size_px + 2 * radius > self.data.search_size_px:
            raise ValueError(
                f"loss.dense_negative_radius_px ({radius}) must be <= (data.search_size_px - "
                "data.template_size_px) / 2: the dense neighbourhood must fit the search region"
            )
        if self.loss.dense_kind == "hinge" and 0 < radius < self.data.negative_min_shift_px:
            # windows closer than the shift are no negatives: a centred neighbourhood had none
            raise ValueError(
                f"loss.dense_negative_radius_px ({radius}) must be >= data.negative_min_shift_px "
                f"({self.data.negative_min_shift_px}) with loss.dense_kind hinge: the dense "
                "term's negatives lie that far from the true window"
            )
        half_span = (self.data.search_size_px - self.data.template_size_px) // 2
        if self.data.negative_min_shift_px > half_span:
            # a true window at the centre has no window this far: the batch fails, at once
            # (fixed windows) or at the first unlucky random window, hours into a run
            raise ValueError(
                f"data.negative_min_shift_px ({self.data.negative_min_shift_px}) must be <= "
                f"(data.search_size_px - data.template_size_px) / 2 = {half_span}, so that a "
                "negative window fits wherever the true one lies"
            )
        if self.augment.zoom_p > 0 and not self.data.random_windows:
            raise ValueError(
                "augment.zoom_p > 0 needs data.random_windows: true (the template is cut from "
                "the zoomed optical region)"
            )


def _positive(v: float) -> bool:
    return math.isfinite(v) and v > 0


def _non_negative(v: float) -> bool:
    return math.isfinite(v) and v >= 0


def _probability(v: float) -> bool:
    return 0.0 <= v <= 1.0


def _shown(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


#: (key, test, what the value must be): values that torch or numpy would refuse only late, with
#: their own words (a ZeroDivisionError for div_factor 0), or would take silently (lr_max 0
#: trains nothing, flip_p 2 is flip_p 1, max_val_pairs 0 validates nothing and no
#: checkpoint_best.pt is ever written).
_RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("seed", lambda v: 0 <= v < 2**32, "an integer in [0, 2**32 - 1]"),
    ("data.supervision_ratio", _probability, "in [0, 1] (e.g. 0.25 for 25 %)"),
    ("data.max_keypoints_per_scene", lambda v: v >= 1, ">= 1 (Harris corners kept per scene)"),
    ("data.min_distance_px", lambda v: v >= 0, ">= 0 px (the corners' spacing; paper: 128)"),
    ("data.random_crops_per_scene", lambda v: v >= 0, ">= 0 (0: none)"),
    ("data.val_windows_per_pair", lambda v: v >= 1, ">= 1"),
    (
        "data.negative_min_shift_px",  # 0 lets the true window be a "negative"
        lambda v: v >= 1,
        ">= 1 (a negative window's least distance from the true one, px)",
    ),
    ("data.template_size_px", lambda v: v >= 8, ">= 8 px (the model contract's least template)"),
    ("data.max_val_pairs", lambda v: v >= 1, ">= 1 (validation pairs matched an epoch)"),
    (
        "data.split_fractions",
        lambda v: min(v) >= 0 and v[0] > 0,
        "3 shares >= 0 of (train, validation, test), the train share > 0, e.g. [0.8, 0.2, 0.0]",
    ),
    ("data.low_percentile", lambda v: 0 <= v < 100, "in [0, 100)"),
    ("data.high_percentile", lambda v: 0 < v <= 100, "in (0, 100]"),
    ("optim.batch_size", lambda v: v >= 2, ">= 2"),
    ("optim.epochs", lambda v: v >= 1, ">= 1"),
    ("loss.prior_std", _positive, "> 0"),
    ("loss.margin", _positive, "> 0"),
    ("loss.temperature", _positive, "> 0 (e.g. 0.07)"),
    ("model.descriptor_size", lambda v: v >= 1, ">= 1"),
    ("model.widths", lambda v: all(w >= 1 for w in v), "channel counts >= 1"),
    ("model.critic_hidden", lambda v: min(v) >= 1, "2 layer sizes >= 1"),
    ("loss.w_recon", _non_negative, ">= 0 (0 switches the term off)"),
    ("loss.w_match", _non_negative, ">= 0"),
    ("loss.w_adv", _non_negative, ">= 0 (0 switches the term off)"),
    ("loss.w_dense", _non_negative, ">= 0"),
    ("loss.dense_negative_radius_px", lambda v: v >= 0, ">= 0 (0: no dense term)"),
    ("loss.dense_negative_max_items", lambda v: v >= 1, ">= 1"),
    ("loss.dense_ignore_px", lambda v: v >= 0, ">= 0"),
    ("optim.lr_max", _positive, "> 0 (the one-cycle peak learning rate, e.g. 5e-4)"),
    ("optim.div_factor", _positive, "> 0 (the first learning rate is lr_max / div_factor)"),
    ("optim.pct_start", lambda v: 0 < v < 1, "in (0, 1) (share of the cycle warming up)"),
    ("optim.betas", lambda v: all(0 <= b < 1 for b in v), "2 Adam betas in [0, 1)"),
    ("optim.weight_decay", _non_negative, ">= 0"),
    ("optim.critic_lr", _positive, "> 0"),
    ("optim.critic_momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.critic_weight_decay", _non_negative, ">= 0"),
    ("optim.critic_steps", lambda v: v >= 0, ">= 0"),
    ("optim.critic_clip", _positive, "> 0"),
    ("augment.flip_p", _probability, "a probability in [0, 1]"),
    ("augment.transpose_p", _probability, "a probability in [0, 1]"),
    ("augment.scale_p", _probability, "a probability in [0, 1]"),
    ("augment.optical_noise_std", _non_negative, ">= 0"),
    ("augment.sar_noise_std", _non_negative, ">= 0"),
    ("augment.gamma_p", _probability, "a probability in [0, 1]"),
    ("augment.gamma_range", lambda v: 0 < v[0] <= v[1], "positive and ordered, e.g. [0.7, 1.4]"),
    ("augment.zoom_p", _probability, "a probability in [0, 1]"),
    (
        "augment.zoom_range",
        lambda v: 0.5 <= v[0] <= v[1] <= 2.0,
        "ordered within [0.5, 2], e.g. [0.8, 1.25]",
    ),
    (
        "augment.scale_range",
        lambda v: 0 < v[0] <= v[1],
        "positive and ordered, e.g. [0.95, 1.05]",
    ),
    ("run.checkpoint_every_steps", lambda v: v >= 0, ">= 0 (0: at epoch ends only)"),
    ("run.num_threads", lambda v: v >= 0, ">= 0 (0: torch's default)"),
)


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "augment": AugmentConfig,
    "run": RunConfig,
}


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"config section {where!r} must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {unknown} in {where!r}; valid keys: {sorted(known)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = key if where == "<root>" else f"{where}.{key}"
        kwargs[key] = value if key in _SECTIONS else _typed(value, hints[key], name)
    return kwargs


def _typed(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against the field's type (lists become tuples where a tuple is due).

    YAML and ``--set`` give ints for floats ("1" for 1.0) and, in YAML 1.1, strings for
    exponents ("5e-4"): both are taken as floats. Nothing else is converted: a string is never
    a bool or a number, so ``random_windows="false"`` is an error, not a true value.
    """
    if hint in _SCALARS:
        return _scalar(value, hint, key)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list, e.g. {_example(args)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_typed(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(
                f"{key} must be a list of {len(args)} values, e.g. {_example(args)}, got {value!r}"
            )
        return tuple(_typed(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list and not isinstance(value, list):
        raise ValueError(f"{key} must be a list, got {value!r}")
    if origin is list:
        return [_typed(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict and not isinstance(value, dict):
        raise ValueError(f"{key} must be a mapping, got {value!r}")
    return value  # dict[str, Any], Any


_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _scalar(value: Any, hint: type, key: str) -> Any:
    is_bool = isinstance(value, bool)
    if hint is bool and is_bool:
        return value
    if hint is int and isinstance(value, int) and not is_bool:
        return value
    if hint is float and isinstance(value, (int, float)) and not is_bool:
        return float(value)
    if hint is float and isinstance(value, str):
        return _as_float(value, key)
    if hint is str and isinstance(value, str):
        return value
    raise ValueError(f"{key} must be {_SCALARS[hint]}, got {value!r}")


def _example(args: tuple[Any, ...]) -> str:
    kinds = [a for a in args if a is not Ellipsis]
    return (
        "["
        + ", ".join("1" if a is int else "1.0" for a in kinds)
        + (", ...]" if Ellipsis in args else "]")
    )


def _as_float(value: str, key: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {value!r}") from None


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from plain data; unknown keys raise ``ValueError``."""
    raw = copy.deepcopy(raw or {})
    top = _build(TrainConfig, raw, "<root>")
    for name, cls in _SECTIONS.items():
        if name in top:
            top[name] = cls(**_build(cls, top[name], name))
    return TrainConfig(**top)


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain data (tuples become lists) for YAML/JSON."""
    return json.loads(json.dumps(asdict(cfg)))


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config and apply ``section.key=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise ValueError(
            f"config file {path} not found{where}; give a training YAML file, e.g. "
            "training/configs/default.yaml"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    return config_from_dict(apply_overrides(raw, overrides or []))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what went wrong and where (line, column; 1-based)."""
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{what}{where}"


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested dict (returns a copy).

    A numeric part indexes a list: ``data.sources.0.repeat=3`` sets the first source's
    ``repeat``. Values are YAML (``data.sources.0.tile_offsets_px={GF3_plain/3: [-9.8, -0.8]}``).
    """
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        node: Any = raw
        parts = key.strip().split(".")
        for i, part in enumerate(parts):
            index: int | str = part
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ValueError(
                        f"override {key!r}: {'.'.join(parts[:i])} is a list of {len(node)}; "
                        f"index it with 0..{len(node) - 1}, not {part!r}"
                    )
                index = int(part)
            elif not isinstance(node, dict):
                raise ValueError(f"override {key!r}: {'.'.join(parts[:i])} holds no keys")
            if i == len(parts) - 1:
                try:
                    node[index] = yaml.safe_load(value)
                except yaml.YAMLError as exc:
                    raise ValueError(
                        f"override {item!r}: the value is not valid YAML ({_yaml_problem(exc)}); "
                        "quote text, and close brackets: key=[1, 2]"
                    ) from None
            else:
                node = node.setdefault(index, {}) if isinstance(node, dict) else node[index]
    return raw


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the config as YAML."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# Keys added after runs were made, whose default changes nothing: left out of the hash while at
# their dataclass default, so the runs made before them (the shipped 0.3.0 one included) keep
# their hash and can still be resumed.
_HASH_NEUTRAL: tuple[tuple[str, str], ...] = (
    ("augment", "gamma_p"),
    ("augment", "gamma_range"),
    ("augment", "sar_noise_std"),
    ("augment", "zoom_p"),
    ("augment", "zoom_range"),
)


def config_hash(cfg: TrainConfig) -> str:
    """sha256 of the canonical JSON of every section that changes the weights (not ``run``)."""
    data = config_to_dict(cfg)
    data.pop("run")
    defaults = config_to_dict(TrainConfig())
    for section, key in _HASH_NEUTRAL:
        if data[section][key] == defaults[section][key]:
            data[section].pop(key)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
