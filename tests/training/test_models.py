"""The encoder's dense (a trous) evaluation equals the paper's per-window procedure."""

from __future__ import annotations

import pytest
import torch

from training.models import Decoder, DenseEncoder, Encoder, EncoderSpec, Matcher


def _randomised(spec: EncoderSpec, seed: int) -> Encoder:
    torch.manual_seed(seed)
    enc = Encoder(spec)
    for m in enc.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return enc.eval()


def test_receptive_field_is_the_patch() -> None:
    spec = EncoderSpec()
    assert spec.receptive_field == spec.patch_size == 128
    assert spec.final_size == 5


def test_odd_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="odd or empty"):
        EncoderSpec(convs_per_stage=(1, 1, 2, 2))


@pytest.mark.parametrize(
    ("widths", "front_end"),
    [
        ((4, 8, 8, 8), "learned"),
        ((16, 32, 64, 64), "learned"),
        ((4, 8, 8, 8), "oriented_gradients"),
    ],
)
def test_dense_equals_per_window(widths: tuple[int, ...], front_end: str) -> None:
    spec = EncoderSpec(widths=widths, descriptor_size=32, front_end=front_end)
    enc = _randomised(spec, 0)
    x = torch.randn(2, 1, 160, 170)
    offsets = [(0, 0), (32, 42), (17, 5), (31, 0)]
    with torch.no_grad():
        dense = DenseEncoder(enc)(x)
        assert dense.shape == (2, 32, 33, 43)
        windows = torch.cat([x[:, :, y : y + 128, x0 : x0 + 128] for y, x0 in offsets])
        ref = enc(windows).view(len(offsets), 2, 32)
    for i, (y, x0) in enumerate(offsets):
        torch.testing.assert_close(dense[:, :, y, x0], ref[i], atol=1e-4, rtol=1e-4)


def test_encoder_rejects_wrong_patch_size() -> None:
    with pytest.raises(ValueError, match="128x128"):
        Encoder(EncoderSpec())(torch.zeros(1, 1, 120, 128))


def test_shapes_of_all_parts() -> None:
    spec = EncoderSpec(widths=(4, 8, 8, 8), descriptor_size=16)
    m = Matcher(spec)
    x = torch.rand(3, 1, 128, 128)
    z, rec = m.sar(x)
    assert z.shape == (3, 16) and rec.shape == (3, 1, 128, 128)
    assert (rec >= 0).all()  # ReLU output: reconstructs the [0, 1] patch
    assert m.critic(z).shape == (3,)
    assert sum(p.numel() for p in m.sar.parameters()) > 0
    assert not set(map(id, m.sar.parameters())) & set(map(id, m.optical.parameters()))
    with pytest.raises(ValueError, match="power of two"):
        Decoder(EncoderSpec(patch_size=96))


def test_oriented_gradients_by_hand() -> None:
    """A vertical step of height 8: central difference 4 beside it, times |cos t| at angle t."""
    from training.models import OrientedGradients

    fe = OrientedGradients(1, 4)  # 0, 45, 90, 135 degrees
    x = torch.zeros(1, 1, 5, 6)
    x[..., 3:] = 8.0  # step between columns 2 and 3
    out = fe(x)
    assert out.shape == (1, 4, 3, 4)
    # Sobel x / 8 on a step of 8: (8 - 0) / 2 = 4 at the two columns touching the step
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 4.0, 4.0, 0.0]))
    c = 4 * torch.cos(torch.tensor(torch.pi / 4)).item()
    torch.testing.assert_close(out[0, :, 1, 1], torch.tensor([4.0, c, 0.0, c]), atol=1e-6, rtol=0)
    # the sign of the contrast does not matter
    torch.testing.assert_close(fe(-x), out)
    assert not list(fe.parameters())  # fixed: nothing to train
    assert "weight" in fe.state_dict()  # saved with the model


def test_oriented_front_end_replaces_the_first_conv_only() -> None:
    learned = Encoder(EncoderSpec(widths=(4, 8, 8, 8), descriptor_size=16))
    fixed = Encoder(
        EncoderSpec(widths=(4, 8, 8, 8), descriptor_size=16, front_end="oriented_gradients")
    )
    n_learned = sum(isinstance(m, torch.nn.Conv2d) for m in learned.features)
    n_fixed = sum(isinstance(m, torch.nn.Conv2d) for m in fixed.features)
    assert n_fixed == n_learned - 1
    assert fixed.spec.receptive_field == 128
    with pytest.raises(ValueError, match="front_end"):
        EncoderSpec(front_end="sobel")
