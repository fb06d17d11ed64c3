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


# --- the code-map latent ------------------------------------------------------------------------

MAP_SPEC = EncoderSpec(
    widths=(8, 8), convs_per_stage=(3, 2), descriptor_size=6, front_end="oriented_gradients",
    latent="map",
)  # fmt: skip


def test_map_spec_arithmetic() -> None:
    # convs at dilations 1, 1, 1 (stage 0, front end first) and 2, 2: each widens the field by 2d
    assert MAP_SPEC.dilations == (1, 1, 1, 2, 2)
    assert MAP_SPEC.receptive_field == 1 + 2 * 7 == 15
    assert MAP_SPEC.code_size == 128 - 15 + 1 == 114
    assert EncoderSpec().code_size == 1  # the paper's vector code
    with pytest.raises(ValueError, match="receptive field"):
        EncoderSpec(widths=(4,) * 4, convs_per_stage=(1, 1, 1, 8), latent="map")
    with pytest.raises(ValueError, match="latent"):
        EncoderSpec(latent="grid")


@pytest.mark.parametrize("front_end", ["learned", "oriented_gradients"])
def test_map_code_of_a_window_is_a_block_of_the_region_code(front_end: str) -> None:
    spec = EncoderSpec(widths=(4, 8), convs_per_stage=(2, 2), descriptor_size=5,
                       patch_size=32, front_end=front_end, latent="map")  # fmt: skip
    enc = _randomised(spec, 1)
    k = spec.code_size
    x = torch.randn(2, 1, 50, 47)
    with torch.no_grad():
        dense = DenseEncoder(enc)(x)
        assert dense.shape == (2, 5, 50 - spec.receptive_field + 1, 47 - spec.receptive_field + 1)
        for y, x0 in [(0, 0), (18, 15), (7, 3)]:
            code = enc(x[:, :, y : y + 32, x0 : x0 + 32])
            assert code.shape == (2, 5, k, k)
            torch.testing.assert_close(dense[:, :, y : y + k, x0 : x0 + k], code)
    # pooling-free: the map trunk is convs (with the stage dilations), BN and LeakyReLU only
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in enc.modules())
    convs = [m for m in enc.features if isinstance(m, torch.nn.Conv2d)]
    learned_convs = spec.dilations[1:] if front_end == "oriented_gradients" else spec.dilations
    assert [c.dilation[0] for c in convs] == list(learned_convs)


def test_map_decoder_mirrors_the_encoder_and_critic_scores_positions() -> None:
    from training.models import MapDecoder, code_vectors

    m = Matcher(MAP_SPEC)
    x = torch.rand(3, 1, 128, 128)
    z, rec = m.sar(x)
    assert z.shape == (3, 6, 114, 114) and rec.shape == (3, 1, 128, 128)
    assert (rec >= 0).all()
    dilations = [c.dilation[0] for c in m.sar.decoder.up if isinstance(c, torch.nn.ConvTranspose2d)]
    assert dilations == [2, 2, 1, 1, 1]
    gen = torch.Generator().manual_seed(0)
    vec = code_vectors(z, 4, gen)
    assert vec.shape == (12, 6) and m.critic(vec).shape == (12,)
    # every picked row is the D-vector at one position of its own code
    flat = z.detach().flatten(2).transpose(1, 2)
    for n in range(3):
        for row in vec[4 * n : 4 * n + 4].detach():
            assert (flat[n] == row).all(dim=1).any()
    vector_code = torch.randn(5, 6)
    assert code_vectors(vector_code, 4, gen) is vector_code
    with pytest.raises(ValueError, match="map"):
        MapDecoder(EncoderSpec())
