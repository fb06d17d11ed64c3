"""Networks of the semi-supervised matcher (Hughes & Schmitt 2019, Fig. 2).

The encoder is VGG11-style (3x3 conv + BatchNorm + LeakyReLU(0.2)) with every convolution
*valid* (no padding). Zero padding would make a window's features depend on where the window's
border falls, so the features of the 16,641 windows of a search region could not be shared.
Without padding the encoder is translation equivariant. Its latent code comes in two layouts
(``EncoderSpec.latent``):

* ``"vector"`` (the paper): stages end in 2x2 max-pooling and a fully connected layer over the
  final map (written as a convolution) gives one D-vector per 128 px patch.
  :class:`DenseEncoder` evaluates it at *every* offset of a larger region with dilated ("a
  trous") convolutions and stride-1 pooling: exactly the per-window codes of the paper's
  sliding window at a fraction of the cost (issue 5).
* ``"map"``: the same trunk evaluated a trous WITHOUT the pooling (stage i's convs dilated by
  2^i, which is where the pooled network's later stages sample) and a 1x1 head: the code is a
  D x k x k map of the patch (k = patch - receptive field + 1). It keeps the spatial layout that
  the vector code has to squeeze into 256 numbers, so the cosine of two codes is a normalised
  cross-correlation of learned feature maps, sharp at the true offset. The encoder is its own
  dense evaluation: a region's code map holds every window's code as a k x k block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from training.config import FRONT_ENDS, LATENTS

LEAKY_SLOPE = 0.2


@dataclass(frozen=True)
class EncoderSpec:
    """Shape of one encoder.

    Attributes:
        widths: channels of each stage; a stage is ``convs_per_stage[i]`` valid 3x3 convs then a
            2x2 max-pool.
        convs_per_stage: number of convolutions per stage. The default (2, 1, 1, 2) keeps every
            pre-pooling size even (128 -> 124 -> 62 -> 60 -> 30 -> 28 -> 14 -> 10 -> 5), so the
            receptive field is exactly the patch: no pixel of the template is ignored and the
            dense map over an S x S region is exactly (S - P + 1)^2. VGG11's (1, 1, 2, 2, 2)
            with valid convs would drop pixels at odd sizes.
        descriptor_size: length of the latent code z.
        in_channels: input bands (1: one band per modality).
        patch_size: side of the square input patch (the template size).
        front_end: ``"learned"`` (the paper: the first 3x3 conv is trained) or
            ``"oriented_gradients"``: the first 3x3 conv is fixed to ``orientations`` oriented
            Sobel derivatives followed by their absolute value (the sign-free gradient
            channels of CFOG, Ye et al. 2019), then BatchNorm + LeakyReLU as every block. Same
            size and receptive field as the learned conv, so the dense map stays exact.
        orientations: channels of the oriented-gradient front end (angles over [0, pi)).
        latent: ``"vector"`` (pooled stages + fully connected head: one D-vector per patch) or
            ``"map"`` (no pooling, stage i dilated by 2^i, 1x1 head: a D x k x k code map);
            see the module docstring.
        position_norm: ``map`` only: L2-normalise the code at every position (as CFOG
            normalises its feature vector per pixel), so that every position of a window weighs
            the same in the cosine and a few bright scatterers cannot dominate it.
    """

    widths: tuple[int, ...] = (16, 32, 64, 64)
    convs_per_stage: tuple[int, ...] = (2, 1, 1, 2)
    descriptor_size: int = 256
    in_channels: int = 1
    patch_size: int = 128
    front_end: str = "learned"
    orientations: int = 8
    latent: str = "vector"
    position_norm: bool = False

    def __post_init__(self) -> None:
        """Check that the stages fit the patch size."""
        if len(self.widths) != len(self.convs_per_stage) or not self.widths:
            raise ValueError("widths and convs_per_stage must be non-empty and equally long")
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f"front_end {self.front_end!r} unknown; use one of {FRONT_ENDS}")
        if self.latent not in LATENTS:
            raise ValueError(f"latent {self.latent!r} unknown; use one of {LATENTS}")
        if self.front_end == "oriented_gradients" and self.orientations < 2:
            raise ValueError(f"orientations must be >= 2, got {self.orientations}")
        if self.position_norm and self.latent != "map":
            raise ValueError("position_norm needs latent 'map' (a vector code has one position)")
        if min(self.convs_per_stage) < 1:
            raise ValueError(f"every stage needs a convolution, got {self.convs_per_stage}")
        if self.latent == "map":
            if self.receptive_field > self.patch_size:
                raise ValueError(
                    f"the map encoder's receptive field ({self.receptive_field} px) exceeds the "
                    f"{self.patch_size} px patch; use fewer or less dilated stages"
                )
            return
        size = self.patch_size
        for n_convs in self.convs_per_stage:
            size -= 2 * n_convs
            if size < 2 or size % 2:
                raise ValueError(
                    f"patch_size {self.patch_size} with stages {self.convs_per_stage} gives an "
                    f"odd or empty map ({size}) before pooling; pixels would be dropped and the "
                    "dense evaluation would not cover the patch exactly"
                )
            size //= 2

    @property
    def dilations(self) -> tuple[int, ...]:
        """Dilation of every 3x3 conv of a ``map`` encoder (stage i: 2^i), front end included."""
        return tuple(2**i for i, n in enumerate(self.convs_per_stage) for _ in range(n))

    @property
    def code_size(self) -> int:
        """Side k of a patch's code: 1 for ``vector``, patch - receptive field + 1 for ``map``."""
        return 1 if self.latent == "vector" else self.patch_size - self.receptive_field + 1

    @property
    def final_size(self) -> int:
        """Side of the feature map entering the fully connected layer (``vector``)."""
        size = self.patch_size
        for n_convs in self.convs_per_stage:
            size = (size - 2 * n_convs) // 2
        return size

    @property
    def receptive_field(self) -> int:
        """Side of the input region one code position depends on (``vector``: the patch)."""
        if self.latent == "map":
            return 1 + 2 * sum(self.dilations)
        rf, stride = 1, 1
        for n_convs in self.convs_per_stage:
            rf += 2 * n_convs * stride + stride
            stride *= 2
        return rf + (self.final_size - 1) * stride


class OrientedGradients(nn.Module):
    """Fixed valid 3x3 conv to ``n`` oriented Sobel derivatives, then ``abs`` (no parameters).

    Channel k is ``|cos(t_k) d/dx + sin(t_k) d/dy|`` with ``t_k = k pi / n``: the magnitude of
    the directional derivative, blind to the sign of the contrast. SAR and optical often show
    the same boundary with opposite contrast; these channels are the modality-invariant start
    CFOG builds on, and the trained layers above learn which structures to trust. The kernel
    is a buffer, so it is saved with the model and never trained.
    """

    def __init__(self, in_channels: int, n: int) -> None:
        """``n`` orientations over [0, pi), each summing the ``in_channels`` bands."""
        super().__init__()
        sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
        angles = torch.arange(n, dtype=torch.float64) * torch.pi / n
        kernels = [float(torch.cos(a)) * sobel_x + float(torch.sin(a)) * sobel_x.T for a in angles]
        weight = torch.stack(kernels)[:, None].repeat(1, in_channels, 1, 1) / in_channels
        self.weight: torch.Tensor
        self.register_buffer("weight", weight)
        self.out_channels = n

    def forward(self, x: torch.Tensor, dilation: int = 1) -> torch.Tensor:
        """(B, C, H, W) -> (B, n, H - 2 dilation, W - 2 dilation)."""
        return F.conv2d(x, self.weight, dilation=dilation).abs()


def _conv_block(c_in: int, c_out: int, dilation: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=0, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(LEAKY_SLOPE),
    ]


class Encoder(nn.Module):
    """Patch encoder: (B, C, P, P) -> latent code, (B, D) (``vector``) or (B, D, k, k) (``map``).

    The code is not normalised here; the descriptor is the L2-normalised flattened code.
    """

    def __init__(self, spec: EncoderSpec) -> None:
        """Build the stages from ``spec``."""
        super().__init__()
        self.spec = spec
        pooled = spec.latent == "vector"
        layers: list[nn.Module] = []
        c_in = spec.in_channels
        for stage, (width, n_convs) in enumerate(
            zip(spec.widths, spec.convs_per_stage, strict=True)
        ):
            dilation = 1 if pooled else 2**stage
            for k in range(n_convs):
                if stage == 0 and k == 0 and spec.front_end == "oriented_gradients":
                    fixed = OrientedGradients(c_in, spec.orientations)
                    layers += [fixed, nn.BatchNorm2d(fixed.out_channels), nn.LeakyReLU(LEAKY_SLOPE)]
                    c_in = fixed.out_channels
                    continue
                layers += _conv_block(c_in, width, dilation)
                c_in = width
            if pooled:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        # vector: the fully connected layer, as a conv whose kernel covers the whole final map;
        # map: a 1x1 conv, the same linear map at every position.
        self.head = nn.Conv2d(c_in, spec.descriptor_size, spec.final_size if pooled else 1)
        # BatchNorm on the latent code. A freshly initialised BN-VGG trunk gives nearly the same
        # code for every input (cosine ~ 1), where the contrastive gradient 2 (a - b) vanishes:
        # our first default runs sat exactly at that collapse (matching loss 0.5 + 1.0). This
        # removes the common component; in eval mode it is a per-channel affine map, so the
        # dense evaluation stays exact.
        self.head_norm = nn.BatchNorm2d(spec.descriptor_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode patches of exactly ``patch_size``; returns (B, D) or (B, D, k, k)."""
        p = self.spec.patch_size
        if x.shape[-2:] != (p, p):
            raise ValueError(f"Encoder expects {p}x{p} patches, got {tuple(x.shape[-2:])}")
        code = self.code_map(x)
        return code.flatten(1) if self.spec.latent == "vector" else code

    def code_map(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk and head on any input of at least the receptive field: (B, D, h, w).

        For a ``map`` encoder this is its dense evaluation (BatchNorm in the module's mode);
        for a ``vector`` encoder it is only meaningful on a patch (use :class:`DenseEncoder`).
        """
        code = self.head_norm(self.head(self.features(x)))
        return F.normalize(code, dim=1, eps=1e-6) if self.spec.position_norm else code


def _batch_norm(x: torch.Tensor, layer: nn.BatchNorm2d) -> torch.Tensor:
    """``layer`` applied to a dense map, always with its running statistics.

    Also in training (the dense matching loss): batch statistics of a few highly correlated
    neighbourhoods differ from those of a batch of windows, and letting them into the running
    statistics made the trained encoder's eval-mode maps peak in the wrong place (measured:
    cosine 0.62 at the true window, 0.80 elsewhere). With running statistics the dense term
    trains exactly the function inference runs; the window batches alone update the statistics.
    """
    return F.batch_norm(
        x,
        layer.running_mean,
        layer.running_var,
        layer.weight,
        layer.bias,
        training=False,
        eps=layer.eps,
    )


class DenseEncoder(nn.Module):
    """All-offset evaluation of an :class:`Encoder` (shares its weights and BN statistics).

    Input (B, C, H, W) with H, W >= patch_size; output (B, D, H - r + 1, W - r + 1) (r the
    receptive field) where the code of window ``inp[b, :, y:y + P, x:x + P]`` is the k x k block
    ``out[b, :, y:y + k, x:x + k]`` (up to float rounding; k = 1 for ``vector``).

    ``vector``: the a trous evaluation below, whose BatchNorm layers always use their running
    statistics. ``map``: the encoder's own :meth:`Encoder.code_map` (fully convolutional,
    BatchNorm in the module's mode: a region's positions have the statistics of a batch of
    windows, so in training they normalise with batch statistics like the window passes).
    """

    def __init__(self, encoder: Encoder) -> None:
        """Wrap ``encoder``; its BatchNorm layers are used with their running statistics."""
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dense codes at every window offset."""
        if self.encoder.spec.latent == "map":
            return self.encoder.code_map(x)
        dilation = 1
        for layer in self.encoder.features:
            if isinstance(layer, nn.Conv2d):
                x = F.conv2d(x, layer.weight, layer.bias, dilation=dilation)
            elif isinstance(layer, OrientedGradients):
                x = layer(x, dilation)
            elif isinstance(layer, nn.BatchNorm2d):
                x = _batch_norm(x, layer)
            elif isinstance(layer, nn.LeakyReLU):
                x = F.leaky_relu(x, LEAKY_SLOPE)
            elif isinstance(layer, nn.MaxPool2d):
                x = F.max_pool2d(x, 2, stride=1, dilation=dilation)
                dilation *= 2
            else:  # pragma: no cover - the encoder is built above
                raise TypeError(f"unsupported layer {layer!r}")
        head = self.encoder.head
        return _batch_norm(
            F.conv2d(x, head.weight, head.bias, dilation=dilation), self.encoder.head_norm
        )


class Decoder(nn.Module):
    """Latent code (B, D) -> reconstructed patch (B, C, P, P) in [0, inf) (ReLU output).

    A linear layer to a 4x4 map, stride-2 3x3 transposed convs + ReLU up to the patch size,
    then a 3x3 conv + ReLU (paper, Sec. 3.1).
    """

    def __init__(self, spec: EncoderSpec, widths: Sequence[int] | None = None) -> None:
        """Build a decoder mirroring ``spec``."""
        super().__init__()
        start = 4
        n_up = (spec.patch_size // start).bit_length() - 1
        if start * 2**n_up != spec.patch_size:
            raise ValueError("patch_size must be 4 times a power of two")
        chans = list(widths or [max(spec.widths[-1] // 2**i, 8) for i in range(n_up + 1)])
        if len(chans) != n_up + 1:
            raise ValueError(f"decoder needs {n_up + 1} widths, got {len(chans)}")
        self.start = start
        self.fc = nn.Linear(spec.descriptor_size, chans[0] * start * start)
        ups: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            ups += [
                nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
                nn.ReLU(),
            ]
        self.up = nn.Sequential(*ups)
        last = nn.Conv2d(chans[-1], spec.in_channels, 3, padding=1)
        self.out = nn.Sequential(last, nn.ReLU())
        # The targets are [0, 1] images (mean ~0.45): starting the output at 0.5 keeps the
        # paper's final ReLU alive. With the default init about half the output pixels start
        # negative, and once the codes move the whole output can die (zero gradient), which
        # froze the reconstruction loss at E[x^2] in our first default run.
        assert last.bias is not None  # created with bias=True above
        nn.init.constant_(last.bias, 0.5)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decode (B, D) codes."""
        x = self.fc(z).view(z.shape[0], -1, self.start, self.start)
        return self.out(self.up(x))


class MapDecoder(nn.Module):
    """Code map (B, D, k, k) -> reconstructed patch (B, C, P, P) in [0, inf) (ReLU output).

    The mirror of a ``map`` encoder: a 1x1 conv + ReLU, then one 3x3 transposed conv + ReLU per
    encoder conv in reverse order, each with that conv's dilation (a valid 3x3 conv of dilation
    d shrinks the map by 2d, its transposed conv grows it back), then a 3x3 conv + ReLU (paper,
    Sec. 3.1). The paper's transposed convs have stride 2 because its encoder pools; this
    encoder replaces the pooling by dilation, so the decoder dilates instead of striding.
    """

    def __init__(self, spec: EncoderSpec) -> None:
        """Build a decoder mirroring the ``map`` encoder of ``spec``."""
        super().__init__()
        if spec.latent != "map":
            raise ValueError("MapDecoder needs a 'map' encoder spec; use Decoder for 'vector'")
        widths = [w for w, n in zip(spec.widths, spec.convs_per_stage) for _ in range(n)]
        c_in = widths[-1]
        layers: list[nn.Module] = [nn.Conv2d(spec.descriptor_size, c_in, 1), nn.ReLU()]
        for width, dilation in zip(reversed(widths), reversed(spec.dilations)):
            layers += [nn.ConvTranspose2d(c_in, width, 3, dilation=dilation), nn.ReLU()]
            c_in = width
        self.up = nn.Sequential(*layers)
        last = nn.Conv2d(c_in, spec.in_channels, 3, padding=1)
        self.out = nn.Sequential(last, nn.ReLU())
        assert last.bias is not None  # created with bias=True above
        nn.init.constant_(last.bias, 0.5)  # as Decoder: keeps the final ReLU alive

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decode (B, D, k, k) code maps."""
        return self.out(self.up(z))


class Critic(nn.Module):
    """Shared Wasserstein critic: three FC layers of decreasing size, LeakyReLU(0.2).

    It scores D-vectors: the whole code of a ``vector`` encoder, the code at one position of a
    ``map`` encoder (:func:`code_vectors`).
    """

    def __init__(self, descriptor_size: int, hidden: tuple[int, int] = (128, 64)) -> None:
        """Build D -> hidden[0] -> hidden[1] -> 1."""
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(descriptor_size, hidden[0]),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(hidden[0], hidden[1]),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(hidden[1], 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Critic score per code, (B,)."""
        return self.net(z).squeeze(-1)


def code_vectors(z: torch.Tensor, per_code: int, generator: torch.Generator) -> torch.Tensor:
    """The D-vectors the critic compares with the prior.

    A ``vector`` code (N, D) is returned as it is. A ``map`` code (N, D, k, k) gives
    ``per_code`` positions of each code (uniform, from ``generator``): (N * per_code, D), code
    n's vectors at rows ``n * per_code ...``. The prior N(0, s^2 I) on a flattened code map is
    the same prior on every position's D-vector, so a critic of position vectors pulls the whole
    code map to it at a fraction of the cost of a critic over D k^2 inputs.
    """
    if z.ndim == 2:
        return z
    n, d, h, w = z.shape
    positions = z.flatten(2).transpose(1, 2)  # (N, h w, D)
    pick = torch.randint(0, h * w, (n, per_code), generator=generator, device=generator.device)
    rows = torch.arange(n, device=z.device)[:, None]
    return positions[rows, pick.to(z.device)].reshape(n * per_code, d)


class AutoEncoder(nn.Module):
    """One modality's adversarial autoencoder (encoder + decoder)."""

    def __init__(self, spec: EncoderSpec) -> None:
        """Build encoder and decoder for ``spec``."""
        super().__init__()
        self.encoder = Encoder(spec)
        self.decoder: nn.Module = Decoder(spec) if spec.latent == "vector" else MapDecoder(spec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (raw latent code z, reconstruction)."""
        z = self.encoder(x)
        return z, self.decoder(z)


class Matcher(nn.Module):
    """Both autoencoders and the shared critic."""

    def __init__(self, spec: EncoderSpec) -> None:
        """Build two independent autoencoders (no shared weights) and one critic."""
        super().__init__()
        self.spec = spec
        self.sar = AutoEncoder(spec)
        self.optical = AutoEncoder(spec)
        self.critic = Critic(spec.descriptor_size)
