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
        z_optical: (B, D) raw optical codes.
        z_sar: (B, D) raw SAR codes.
        label: (B,) 1 for corresponding pairs, 0 for non-corresponding ones.
        margin: m, on the squared distance.

    Returns:
        Scalar tensor.
    """
    if z_optical.shape != z_sar.shape or z_optical.ndim != 2:
        raise ValueError("z_optical and z_sar must both be (B, D)")
    if label.shape != z_optical.shape[:1]:
        raise ValueError(f"label must be (B,), got {tuple(label.shape)}")
    d = (F.normalize(z_optical.float(), dim=1) - F.normalize(z_sar.float(), dim=1)).pow(2).sum(1)
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


def _cosine_map(z_optical: torch.Tensor, dense_sar: torch.Tensor) -> torch.Tensor:
    """(B, h, w) cosine of each optical code (B, D) with its dense SAR codes (B, D, h, w)."""
    zo = F.normalize(z_optical.float(), dim=1)
    ds = F.normalize(dense_sar.float(), dim=1)
    return torch.einsum("bd,bdhw->bhw", zo, ds)


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
        z_optical: (B, D) raw optical codes.
        dense_sar: (B, D, h, w) raw dense SAR codes of the neighbourhood regions.
        true_xy: (B, 2) int64, (x, y) of the true window in the (h, w) map.
        margin: m, on the squared distance of unit codes (in [0, 4]).
        min_shift: windows closer than this (Chebyshev, px) to the true one are not negatives.

    Returns:
        Scalar loss: mean over the batch of positive term + negative term.
    """
    d2 = 2.0 - 2.0 * _cosine_map(z_optical, dense_sar)
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
        z_optical: (B, D) raw optical codes.
        dense_sar: (B, D, h, w) raw dense SAR codes of the neighbourhood regions.
        true_xy: (B, 2) int64, (x, y) of the true window in the (h, w) map.
        temperature: t > 0; smaller sharpens the map's peak.
        ignore_radius: neighbours with 0 < Chebyshev distance <= this are not candidates.

    Returns:
        Scalar loss: mean over the batch.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = _cosine_map(z_optical, dense_sar) / temperature
    w = logits.shape[2]
    tx, ty = true_xy[:, 0].long(), true_xy[:, 1].long()
    cheb = _chebyshev_from(true_xy, logits.shape)
    near = (cheb > 0) & (cheb <= ignore_radius)
    logits = logits.masked_fill(near, float("-inf")).flatten(1)
    return F.cross_entropy(logits, ty * w + tx)
