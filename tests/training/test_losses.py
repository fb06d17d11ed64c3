"""Each loss term against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    adversarial_loss,
    contrastive_loss,
    critic_loss,
    reconstruction_loss,
    sample_prior,
)


def test_reconstruction_is_per_pixel_mean_squared_error():
    target = torch.zeros(2, 1, 2, 2)
    recon = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [2.0, 0.0]]]])
    # squared errors 1 and 4 over 8 pixels
    assert reconstruction_loss(target, recon).item() == pytest.approx(5 / 8)
    with pytest.raises(ValueError, match="differ"):
        reconstruction_loss(target, recon[:1])


def test_contrastive_on_normalised_codes_by_hand():
    z_o = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 0.0]])
    z_s = torch.tensor([[0.0, 5.0], [0.0, 7.0], [1.0, 1.0], [-4.0, 0.0]])
    label = torch.tensor([1, 1, 0, 0])
    # unit vectors: d = |a - b|^2 = 2 - 2 cos
    d = [2.0, 0.0, 2 - 2 / math.sqrt(2), 4.0]
    m = 1.0
    expect = (d[0] + d[1] + max(0.0, m - d[2]) + max(0.0, m - d[3])) / 4
    assert contrastive_loss(z_o, z_s, label, m).item() == pytest.approx(expect, abs=1e-6)
    # margin 2: only the 45-degree negative (d = 0.586) is inside it
    expect2 = (2.0 + 0.0 + (2 - d[2]) + 0.0) / 4
    assert contrastive_loss(z_o, z_s, label, 2.0).item() == pytest.approx(expect2, abs=1e-6)
    with pytest.raises(ValueError, match="label"):
        contrastive_loss(z_o, z_s, label[:2], m)


def test_contrastive_gradient_pulls_positives_together():
    z_o = torch.tensor([[1.0, 0.0]], requires_grad=True)
    z_s = torch.tensor([[0.0, 1.0]])
    contrastive_loss(z_o, z_s, torch.tensor([1]), 1.0).backward()
    assert z_o.grad[0, 1] < 0  # moving z_o towards z_s (+y) lowers the loss


def test_critic_and_adversarial_terms_by_hand():
    s = torch.tensor([1.0, 3.0])
    o = torch.tensor([-1.0, 0.0])
    p = torch.tensor([0.5, 1.5])
    # eq. 7: mean(Dis(z_s)) + mean(Dis(z_o)) - 2 mean(Dis(z_p)) = 2 - 0.5 - 2
    assert critic_loss(s, o, p).item() == pytest.approx(-0.5)
    # eq. 8 (encoders' part): -(mean Dis(z_s) + mean Dis(z_o))
    assert adversarial_loss(s, o).item() == pytest.approx(-1.5)


def test_prior_has_variance_prior_std_squared():
    gen = torch.Generator().manual_seed(0)
    z = sample_prior(20000, 8, math.sqrt(5.0), gen, torch.device("cpu"))
    assert z.shape == (20000, 8)
    assert z.var().item() == pytest.approx(5.0, rel=0.03) and abs(z.mean().item()) < 0.03
    again = sample_prior(20000, 8, 1.0, torch.Generator().manual_seed(0), torch.device("cpu"))
    torch.testing.assert_close(again * math.sqrt(5.0), z)  # seeded: reproducible


def test_dense_contrastive_loss_by_hand() -> None:
    """Tiny map: the positive's squared distance plus the mean violated hinge of far windows."""
    from training.losses import dense_contrastive_loss

    z_o = torch.tensor([[1.0, 0.0]])
    # 1 x 2 x 3 map of codes; true window at (x=0, y=0); min_shift 2 -> only x=2 is a negative
    dense = torch.tensor([[[[1.0, 0.0, 0.6]], [[0.0, 1.0, 0.8]]]])  # codes (1,0), (0,1), (.6,.8)
    loss = dense_contrastive_loss(z_o, dense, torch.tensor([[0, 0]]), margin=1.0, min_shift=2)
    # positive d2 = 0; negative at x=2: cos 0.6 -> d2 = 0.8 -> hinge 1 - 0.8 = 0.2
    assert loss.item() == pytest.approx(0.2, abs=1e-6)
    # with a margin the negative already satisfies, only the positive term is left
    far = dense_contrastive_loss(z_o, dense, torch.tensor([[0, 0]]), margin=0.5, min_shift=2)
    assert far.item() == pytest.approx(0.0, abs=1e-6)
    moved = dense_contrastive_loss(z_o, dense, torch.tensor([[1, 0]]), margin=1.0, min_shift=1)
    # positive at x=1: d2 = 2; negatives x=0 (d2 0 -> hinge 1) and x=2 (hinge 0.2): mean 0.6
    assert moved.item() == pytest.approx(2.6, abs=1e-6)


def test_dense_infonce_loss_by_hand() -> None:
    """Cross-entropy of the cosine map at the true offset; direct neighbours left out."""
    from training.losses import dense_infonce_loss

    z_o = torch.tensor([[1.0, 0.0]])
    # 1 x 1 x 4 map: codes (1,0), (0,1), (.6,.8), (-1,0) -> cosines 1, 0, 0.6, -1
    dense = torch.tensor([[[[1.0, 0.0, 0.6, -1.0]], [[0.0, 1.0, 0.8, 0.0]]]])
    t = 0.5
    loss = dense_infonce_loss(z_o, dense, torch.tensor([[0, 0]]), t, ignore_radius=0)
    logits = [1.0 / t, 0.0, 0.6 / t, -1.0 / t]
    expected = -logits[0] + math.log(sum(math.exp(v) for v in logits))
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    # ignore_radius 1: the neighbour x=1 is no candidate
    near = dense_infonce_loss(z_o, dense, torch.tensor([[0, 0]]), t, ignore_radius=1)
    kept = [logits[0], logits[2], logits[3]]
    assert near.item() == pytest.approx(-kept[0] + math.log(sum(math.exp(v) for v in kept)))
    # the true window elsewhere (x=3, cosine -1): a large loss
    wrong = dense_infonce_loss(z_o, dense, torch.tensor([[3, 0]]), t, ignore_radius=0)
    assert wrong.item() == pytest.approx(-logits[3] + math.log(sum(math.exp(v) for v in logits)))
    assert wrong.item() > loss.item() + 3
    with pytest.raises(ValueError, match="temperature"):
        dense_infonce_loss(z_o, dense, torch.tensor([[0, 0]]), 0.0)


@pytest.mark.parametrize("k", [1, 5])
def test_window_cosine_is_the_cores_map_and_differentiable(k: int) -> None:
    """The torch map (training) equals the numpy map (plugin) for vector and map codes."""
    import numpy as np

    from sar_optical_matcher.core.correlation import window_cosine_maps
    from training.losses import window_cosine

    gen = torch.Generator().manual_seed(k)
    dense = torch.randn(2, 4, 17, 19, generator=gen)
    z = torch.randn(2, 4, k, k, generator=gen, requires_grad=True)
    got = window_cosine(z if k > 1 else z[:, :, 0, 0], dense)
    assert got.shape == (2, 17 - k + 1, 19 - k + 1)
    want = window_cosine_maps(z.detach().numpy(), dense.numpy())
    np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-5)
    got[:, 3, 2].sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_map_codes_in_the_paper_and_map_losses() -> None:
    """Code maps are flattened for eq. 4; the map cross-entropy ranks the copied block first."""
    from training.losses import dense_infonce_loss

    gen = torch.Generator().manual_seed(0)
    dense = torch.randn(1, 3, 20, 20, generator=gen)
    block = dense[:, :, 4:12, 9:17].clone()  # k = 8 block at (x, y) = (9, 4)
    # eq. 4 on maps = eq. 4 on their flattened codes
    other = torch.randn(1, 3, 8, 8, generator=gen)
    flat = contrastive_loss(block.flatten(1), other.flatten(1), torch.tensor([1.0]), 1.0)
    assert contrastive_loss(block, other, torch.tensor([1.0]), 1.0).item() == pytest.approx(
        flat.item()
    )
    right = dense_infonce_loss(block, dense, torch.tensor([[9, 4]]), 0.1, ignore_radius=1)
    wrong = dense_infonce_loss(block, dense, torch.tensor([[2, 10]]), 0.1, ignore_radius=1)
    assert right.item() < 0.05 < 5.0 < wrong.item()
