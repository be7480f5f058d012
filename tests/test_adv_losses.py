"""ADV's temporal and distribution-matching losses as plain tensor functions (no model): the frame-difference
Wasserstein-1 distance, the anchored energy loss, the 1-D optimal transport helper and the sliced latent W1,
each against values known in closed form or a controlled corruption (shimmer, colours drawn to grey)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.methods.adv import (TEMPORAL_LOSSES, AdvConfig, anchored_energy_loss, frame_difference_energy,
                                 frame_difference_w1)
from trainer.methods.losses import sliced_latent_w1, w1_to_reference


def _moving_block(frames: int = 6, size: int = 8, shimmer: float = 0.0, seed: int = 0) -> torch.Tensor:
    """[1, 2, F, size, size]: a 2x2 block moving one location per frame over a static textured background,
    plus independent per-frame noise of std ``shimmer`` on the background."""
    g = torch.Generator().manual_seed(seed)
    background = torch.randn(1, 2, 1, size, size, generator=g).expand(1, 2, frames, size, size).clone()
    for t in range(frames):
        background[:, :, t, 2:4, t:t + 2] = 3.0
    noise = torch.randn(background.shape, generator=g) * shimmer
    return background + noise * (background != 3.0)


def test_frame_difference_w1_is_zero_on_the_reference_distribution_and_exact_on_known_ones():
    x = torch.randn(2, 3, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    assert float(frame_difference_w1(x, x.clone())) == 0.0
    # any reference batch with the same distribution (here the same clips twice, through the quantile path)
    assert float(frame_difference_w1(x, torch.cat([x, x]))) == pytest.approx(0.0, abs=1e-6)
    # against a static reference it is the mean |frame difference|
    expected = (x[:, :, 1:] - x[:, :, :-1]).abs().mean()
    assert float(frame_difference_w1(x, torch.zeros(3, 3, 5, 4, 4))) == pytest.approx(float(expected), rel=1e-6)
    # linear ramps in time: every |difference| is a (student) and b (reference), so W1 = |a - b|
    t = torch.arange(5, dtype=torch.float32).view(1, 1, 5, 1, 1)
    assert float(frame_difference_w1((0.7 * t).expand(2, 3, 5, 4, 4), (0.2 * t).expand(1, 3, 5, 4, 4))) == \
        pytest.approx(0.5, rel=1e-6)
    with pytest.raises(ValueError, match="same channels and frames"):
        frame_difference_w1(x, x[:, :2])


def test_frame_difference_w1_sees_background_shimmer_that_the_energy_match_barely_does():
    reference = _moving_block()
    w1 = [float(frame_difference_w1(_moving_block(shimmer=s), reference)) for s in (0.0, 0.01, 0.02, 0.04)]
    assert w1[0] == 0.0 and w1[1] < w1[2] < w1[3]
    # the energy the anchored loss matches, dominated by the moving block, moves by under 1% at shimmer 0.04;
    # W1 is of the shimmer's own size (a difference of two N(0, 0.04^2) draws has mean |.| 0.045)
    energy = [float(frame_difference_energy(_moving_block(shimmer=s)).mean()) for s in (0.0, 0.04)]
    assert abs(energy[1] / energy[0] - 1) < 0.01
    assert w1[3] > 0.02
    # a gradient step on W1 lowers the shimmer (the background's frame differences) and keeps the motion
    x = _moving_block(shimmer=0.04).requires_grad_(True)
    frame_difference_w1(x, reference).backward()
    stepped = (x - 0.01 * x.grad.sign()).detach()
    assert float(frame_difference_w1(stepped, reference)) < w1[3]
    assert float(frame_difference_energy(stepped).mean()) == pytest.approx(energy[1], rel=0.05)


def test_anchored_energy_loss_matches_log_energy_on_the_channels_the_reference_moves():
    reference = _moving_block()
    student = 1.5 * _moving_block(seed=1)  # every frame difference 1.5x: energy 2.25x on both channels
    expected = math.log(2.25) ** 2
    assert float(anchored_energy_loss(student, student / 1.5)) == pytest.approx(expected, rel=1e-4)
    # a channel the reference holds constant (the toy codec's padding) is left out, however the student moves it
    padded_reference = torch.cat([student / 1.5, torch.zeros(1, 1, *student.shape[2:])], dim=1)
    padded_student = torch.cat([student, torch.randn(1, 1, *student.shape[2:])], dim=1)
    assert float(anchored_energy_loss(padded_student, padded_reference)) == pytest.approx(expected, rel=1e-4)
    assert float(anchored_energy_loss(student, torch.zeros_like(student))) == 0.0
    assert float(anchored_energy_loss(reference, reference)) == pytest.approx(0.0, abs=1e-10)


def test_w1_to_reference_exact_values():
    g = torch.Generator().manual_seed(3)
    values = torch.randn(3, 50, generator=g)
    assert float(w1_to_reference(values, values[:, torch.randperm(50, generator=g)])) == 0.0
    assert float(w1_to_reference(values + 0.25, values)) == pytest.approx(0.25, rel=1e-5)  # a shift by c: |c|
    assert float(w1_to_reference(values, values.repeat(1, 3))) == pytest.approx(0.0, abs=1e-6)  # same law, other n
    with pytest.raises(ValueError, match="same K"):
        w1_to_reference(values, values[:2])


def test_sliced_latent_w1_sees_the_joint_of_channels_and_ignores_constant_ones():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(2, 1, 3, 8, 8, generator=g)
    b = torch.randn(2, 1, 3, 8, 8, generator=g)
    coloured = torch.cat([a, b], dim=1)  # independent channels: a spread of "chroma" a - b
    # b's values in a's rank order: each channel keeps its values, but the two rise and fall together (grey)
    greyed = torch.cat([a, b.flatten().sort().values[a.flatten().argsort().argsort()].view_as(a)], dim=1)
    directions = torch.randn(16, 2, generator=g)
    # per channel the two have the same values, so any per-channel (marginal) comparison sees nothing
    for c in range(2):
        assert float(w1_to_reference(greyed[:, c].reshape(1, -1), coloured[:, c].reshape(1, -1))) == 0.0
    assert float(sliced_latent_w1(coloured, coloured.flip(0), directions)) == pytest.approx(0.0, abs=1e-6)
    assert float(sliced_latent_w1(greyed, coloured, directions)) > 0.1
    # a channel the reference holds constant is left out, whatever the samples put there
    pad = torch.full((2, 1, 3, 8, 8), 5.0)
    noisy_pad = torch.randn(2, 1, 3, 8, 8, generator=g)
    assert float(sliced_latent_w1(torch.cat([greyed, noisy_pad], 1), torch.cat([coloured, pad], 1), directions)) == \
        pytest.approx(float(sliced_latent_w1(greyed, coloured, directions)), rel=1e-6)
    with pytest.raises(ValueError, match="varying channels"):
        sliced_latent_w1(greyed, coloured, torch.randn(16, 3))


def test_adv_marginal_term_config_is_checked():
    with pytest.raises(ValueError, match="marginal_weight"):
        AdvConfig(marginal_weight=-1.0)
    with pytest.raises(ValueError, match="marginal_slices"):
        AdvConfig(marginal_slices=0)


def test_distribution_temporal_loss_needs_real_latents_and_weighs_w1():
    cfg = AdvConfig(temporal="distribution", temporal_weight=0.25)
    x, reference = _moving_block(shimmer=0.03), _moving_block()
    loss, metrics = TEMPORAL_LOSSES["distribution"](x, reference, cfg)
    assert float(loss) == pytest.approx(0.25 * float(frame_difference_w1(x, reference)), rel=1e-6)
    assert metrics["temporal"] > 0
    with pytest.raises(ValueError, match="needs real latents"):
        TEMPORAL_LOSSES["distribution"](x, None, cfg)
