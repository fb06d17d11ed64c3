"""Loss terms of the semi-supervised adversarial matcher (Hughes & Schmitt 2019, eq. 1-8).

Sums over the data set in the paper become means over the batch here, so that the loss scale
does not depend on the batch size (and so that DDP's gradient averaging gives the same update
as one process with the whole batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def reconstruction_loss(target: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Eq. 1 for one modality as the per-pixel mean squared error.

    The paper writes ``||I - I~||_2``; we use the mean of the squared differences: independent
    of the patch size and smooth at zero (the plain norm has an unbounded gradient there).

    Args:
        target: (B, C, H, W) float, the [0, 1] input patch.
        recon: (B, C, H, W) float, the decoder output.

    Returns:
        Scalar tensor.
    """
    if target.shape != recon.shape:
        raise ValueError(f"target {tuple(target.shape)} and recon {tuple(recon.shape)} differ")
    return F.mse_loss(recon.float(), target.float())


def contrastive_loss(
    z_optical: torch.Tensor, z_sar: torch.Tensor, label: torch.Tensor, margin: float
) -> torch.Tensor:
    """Eq. 4 on L2-normalised codes, averaged over the batch.

    ``y d + (1 - y) max(0, m - d)`` with ``d = ||z_o/|z_o| - z_s/|z_s| ||^2`` in [0, 4].

    Args:
        z_optical: (B, D) raw optical codes, or (B, D, k, k) code maps (flattened here).
        z_sar: raw SAR codes of the same shape.
        label: (B,) 1 for corresponding pairs, 0 for non-corresponding ones.
        margin: m, on the squared distance.

    Returns:
        Scalar tensor.
    """
    if z_optical.shape != z_sar.shape or z_optical.ndim not in (2, 4):
        raise ValueError("z_optical and z_sar must both be (B, D) or both (B, D, k, k)")
    if label.shape != z_optical.shape[:1]:
        raise ValueError(f"label must be (B,), got {tuple(label.shape)}")
    zo, zs = z_optical.float().flatten(1), z_sar.float().flatten(1)
    d = (F.normalize(zo, dim=1) - F.normalize(zs, dim=1)).pow(2).sum(1)
    y = label.float()
    return (y * d + (1.0 - y) * F.relu(margin - d)).mean()


def critic_loss(
    score_sar: torch.Tensor, score_optical: torch.Tensor, score_prior: torch.Tensor
) -> torch.Tensor:
    """Eq. 7 (Wasserstein critic): mean of ``Dis(z_s) + Dis(z_o) - 2 Dis(z_p)``.

    Args:
        score_sar: (B,) critic scores of SAR codes.
        score_optical: (B,) critic scores of optical codes.
        score_prior: (B,) critic scores of prior samples.

    Returns:
        Scalar tensor (minimised by the critic).
    """
    return (
        score_sar.float().mean() + score_optical.float().mean() - 2.0 * score_prior.float().mean()
    )


def adversarial_loss(score_sar: torch.Tensor, score_optical: torch.Tensor) -> torch.Tensor:
    """The encoders' term of eq. 8: ``-(Dis(z_s) + Dis(z_o))``, averaged over the batch."""
    return -(score_sar.float().mean() + score_optical.float().mean())


def sample_prior(
    n: int, dim: int, prior_std: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(n, dim) samples of the prior N(0, prior_std^2 I) (paper: variance 5)."""
    z = torch.randn(n, dim, generator=generator, device=generator.device)
    return (z * prior_std).to(device)


def _box_sums(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H, W) -> (B, H - h + 1, W - w + 1) sums of every h x w window (float64 integral)."""
    ii = F.pad(x.double().cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    return ii[:, h:, w:] - ii[:, :-h, w:] - ii[:, h:, :-w] + ii[:, :-h, :-w]


def window_cosine(z_optical: torch.Tensor, dense_sar: torch.Tensor) -> torch.Tensor:
    """Cosine of each optical code with the code of every window of its SAR code map.

    The torch twin of ``core.correlation.window_cosine_maps`` (differentiable).

    Args:
        z_optical: (B, D) vector codes or (B, D, k, k) code maps of the templates.
        dense_sar: (B, D, H, W) SAR code maps (``models.DenseEncoder``).

    Returns:
        (B, H - k + 1, W - k + 1) float32 cosines.
    """
    z = z_optical.float()
    dense = dense_sar.float()
    if z.ndim == 2:
        z = z[:, :, None, None]
    kh, kw = z.shape[-2:]
    if kh == kw == 1:
        zo = F.normalize(z[:, :, 0, 0], dim=1)
        return torch.einsum("bd,bdhw->bhw", zo, F.normalize(dense, dim=1))
    size = dense.shape[-2:]
    spectrum = torch.fft.rfft2(dense, s=size) * torch.fft.rfft2(z, s=size).conj()
    num = torch.fft.irfft2(spectrum.sum(1), s=size)[:, : size[0] - kh + 1, : size[1] - kw + 1]
    energy = _box_sums(dense.pow(2).sum(1), kh, kw).clamp_min(1e-12)
    norm = (energy * z.pow(2).sum((1, 2, 3)).double().clamp_min(1e-12)[:, None, None]).sqrt()
    return num / norm.float()


def _chebyshev_from(true_xy: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(B, h, w) Chebyshev distance (px) of every map position to the (B, 2) true (x, y)."""
    b, h, w = shape
    tx, ty = true_xy[:, 0].long().view(b, 1, 1), true_xy[:, 1].long().view(b, 1, 1)
    yy = torch.arange(h, device=true_xy.device).view(1, h, 1)
    xx = torch.arange(w, device=true_xy.device).view(1, 1, w)
    return torch.maximum((yy - ty).abs(), (xx - tx).abs())


def dense_contrastive_loss(
    z_optical: torch.Tensor,
    dense_sar: torch.Tensor,
    true_xy: torch.Tensor,
    margin: float,
    min_shift: int,
) -> torch.Tensor:
    """Eq. 4 of one template against every SAR window of a neighbourhood (one dense pass).

    The paper pairs each template with ONE random off-centre SAR crop as its negative; here
    every window of the neighbourhood at least ``min_shift`` px (Chebyshev) from the true one is
    a negative, so each positive meets hundreds of hard, nearby negatives for about the cost of
    two windows. The positive term is the squared distance at the true offset; the negative
    term the hinge ``max(0, m - d^2)`` averaged over the negatives that violate the margin
    (averaging over all of them would drown the few hard ones among the many easy ones).

    Args:
        z_optical: (B, D) raw optical codes or (B, D, k, k) code maps.
        dense_sar: (B, D, H, W) raw dense SAR code maps of the neighbourhood regions, whose
            (h, w) = (H - k + 1, W - k + 1) windows are compared.
        true_xy: (B, 2) int64, (x, y) of the true window in the (h, w) map.
        margin: m, on the squared distance of unit codes (in [0, 4]).
        min_shift: windows closer than this (Chebyshev, px) to the true one are not negatives.

    Returns:
        Scalar loss: mean over the batch of positive term + negative term.
    """
    d2 = 2.0 - 2.0 * window_cosine(z_optical, dense_sar)
    b = d2.shape[0]
    idx = torch.arange(b, device=d2.device)
    tx, ty = true_xy[:, 0].long(), true_xy[:, 1].long()
    pos = d2[idx, ty, tx]
    far = _chebyshev_from(true_xy, d2.shape) >= min_shift
    hinge = F.relu(margin - d2) * far
    active = (hinge > 0).sum(dim=(1, 2)).clamp(min=1)
    neg = hinge.sum(dim=(1, 2)) / active
    return (pos + neg).mean()


def dense_infonce_loss(
    z_optical: torch.Tensor,
    dense_sar: torch.Tensor,
    true_xy: torch.Tensor,
    temperature: float,
    ignore_radius: int = 1,
) -> torch.Tensor:
    """Cross-entropy of the correspondence map: the true window against all the others.

    The matcher's answer is the argmax of the cosine map over all offsets, so this term trains
    exactly that decision: ``-log softmax(cos / t)`` at the true offset over every window of the
    neighbourhood (InfoNCE with the whole map as the candidate set). Windows closer than
    ``ignore_radius`` (Chebyshev, > 0) to the true one are left out of the softmax: a 1 px
    shift shares 99 % of the pixels and lies within the reference data's own error.

    Args:
        z_optical: (B, D) raw optical codes or (B, D, k, k) code maps.
        dense_sar: (B, D, H, W) raw dense SAR code maps of the neighbourhood regions, whose
            (h, w) = (H - k + 1, W - k + 1) windows are compared.
        true_xy: (B, 2) int64, (x, y) of the true window in the (h, w) map.
        temperature: t > 0; smaller sharpens the map's peak.
        ignore_radius: neighbours with 0 < Chebyshev distance <= this are not candidates.

    Returns:
        Scalar loss: mean over the batch.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = window_cosine(z_optical, dense_sar) / temperature
    w = logits.shape[2]
    tx, ty = true_xy[:, 0].long(), true_xy[:, 1].long()
    cheb = _chebyshev_from(true_xy, logits.shape)
    near = (cheb > 0) & (cheb <= ignore_radius)
    logits = logits.masked_fill(near, float("-inf")).flatten(1)
    return F.cross_entropy(logits, ty * w + tx)
