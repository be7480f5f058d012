"""ADV's temporal and distribution-matching losses as plain tensor functions (no model): the frame-difference
Wasserstein-1 distance, the anchored energy loss, the 1-D optimal transport helper,
the sliced latent W1 and the clip-colour W1 with its bank, each against values known in closed form or a
controlled corruption (shimmer, colours drawn to grey)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.methods.adv import (TEMPORAL_LOSSES, AdvConfig, anchored_energy_loss, frame_difference_energy,
                                 frame_difference_w1)
from trainer.methods.bank import StatisticsBank
from trainer.methods.losses import (_projected, clip_means, sliced_clip_colour_w1, sliced_latent_w1,
                                    w1_to_reference)


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


# ---- the clip-colour term: whitened sliced W1 of per-clip channel means, against a bank of real clips

def _clip_colours(count: int, tint: float, seed: int) -> torch.Tensor:
    """[count, 5] channel means: a brightness shared by three colour channels (spread 1), tints of spread
    ``tint`` on two of them, and two channels held constant (the toy codec's padding)."""
    g = torch.Generator().manual_seed(seed)
    bright = torch.randn(count, 1, generator=g)
    tints = tint * torch.randn(count, 2, generator=g)
    return torch.cat([bright + tints[:, :1], bright - tints[:, :1], bright + tints[:, 1:], torch.full((count, 2), 0.5)], 1)


def _as_clips(means: torch.Tensor) -> torch.Tensor:
    """Clips [N, C, 2, 3, 3] whose every location has the given channel means."""
    return means[:, :, None, None, None].expand(-1, -1, 2, 3, 3).clone()


def test_clip_colour_w1_is_exact_in_one_dimension():
    # one varying channel: whitening is standardisation (with the 1e-3 ridge), n == m sorts against sorts
    reference = torch.tensor([[0.0, 7.0], [1.0, 7.0], [2.0, 7.0], [3.0, 7.0]])
    samples = _as_clips(reference[[2, 0, 3, 1]] + torch.tensor([0.5, 0.0]))
    variance = float(reference[:, 0].var())
    for sign in (1.0, -1.0):  # the direction's sign does not matter
        w1 = sliced_clip_colour_w1(samples, reference, torch.tensor([[sign]]))
        assert float(w1) == pytest.approx(0.5 / math.sqrt(variance * 1.001), rel=1e-5)
    assert float(sliced_clip_colour_w1(_as_clips(reference), reference, torch.tensor([[1.0]]))) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="2-d directions for 1 varying"):
        sliced_clip_colour_w1(samples, reference, torch.ones(3, 2))
    with pytest.raises(ValueError, match="samples have 3 channels, the reference 2"):
        sliced_clip_colour_w1(torch.zeros(2, 3, 1, 1, 1), reference, torch.ones(3, 1))


def test_clip_colour_w1_sees_tints_drawn_to_grey_that_standardising_hides():
    """Clips whose tints are gone (grey) but whose brightness is right: per-channel standardisation barely
    tells them from the reference (brightness dominates each channel), whitening does."""
    reference = _clip_colours(512, tint=0.05, seed=0)
    directions = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    right = _as_clips(_clip_colours(256, tint=0.05, seed=2))
    grey = _as_clips(_clip_colours(256, tint=0.0, seed=2))
    whitened = [float(sliced_clip_colour_w1(x, reference, directions)) for x in (right, grey)]
    assert whitened[1] > 2.5 * whitened[0]  # measured: 0.31 against 0.11
    standardised = [float(w1_to_reference(*_projected(clip_means(x), reference, directions, whiten=False)))
                    for x in (right, grey)]
    assert standardised[1] < 1.1 * standardised[0]  # measured: 0.0500 against 0.0490


def test_clip_colour_w1_gradient_restores_the_tints_spread():
    reference = _clip_colours(512, tint=0.05, seed=0)
    start = _clip_colours(128, tint=0.025, seed=3)  # tints at half their spread
    x = _as_clips(start).requires_grad_(True)
    optimizer = torch.optim.SGD([x], lr=1.0)  # the loss is a mean over 128 clips: each gets 1/128 of it
    g = torch.Generator().manual_seed(4)
    for _ in range(150):
        optimizer.zero_grad()
        sliced_clip_colour_w1(x, reference, torch.randn(32, 3, generator=g)).backward()
        optimizer.step()
    spread = lambda m: float((m[:, 0] - m[:, 1]).std())  # noqa: E731
    final = clip_means(x.detach())
    assert spread(final) == pytest.approx(spread(reference), rel=0.15)
    assert spread(start) < 0.6 * spread(reference)
    assert float(final[:, 0].std()) == pytest.approx(float(start[:, 0].std()), rel=0.1)  # brightness kept
    assert torch.equal(final[:, 3:], start[:, 3:])  # constant channels get no gradient


def test_statistics_bank_keeps_the_last_clips_in_order_and_resumes():
    bank = StatisticsBank(5)
    assert len(bank) == 0 and bank.values is None
    bank.add(torch.arange(6.0).view(3, 2))
    bank.add(torch.arange(6.0, 12.0).view(3, 2).requires_grad_(True))
    assert len(bank) == 5 and torch.equal(bank.values, torch.arange(2.0, 12.0).view(5, 2))
    assert not bank.values.requires_grad
    copy = StatisticsBank(5)
    copy.load_state_dict(bank.state_dict())
    assert torch.equal(copy.values, bank.values)
    with pytest.raises(ValueError, match="holds 5 clips, these settings 4"):
        StatisticsBank(4).load_state_dict(bank.state_dict())
    with pytest.raises(ValueError, match="bank rows have 2 values, got 3"):
        bank.add(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="at least 2"):
        StatisticsBank(1)


def test_adv_colour_term_config_is_checked():
    for bad in ({"colour_weight": -1.0}, {"colour_bank": 1}, {"colour_slices": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AdvConfig(**bad)
    assert "colour" in AdvConfig(colour_weight=1.0).real_latent_terms()
    assert AdvConfig(colour_weight=1.0).without_real_latents().colour_weight == 0.0
