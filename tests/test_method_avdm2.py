"""AVDM2 on the tiny random Wan: feature taps, gradients through the frozen teacher, a discriminator
that learns."""

from __future__ import annotations

import pytest
import torch

from trainer.backends.base import CRITIC, STUDENT
from trainer.methods.avdm2 import (Avdm2Config, Avdm2Method, TeacherFeatures, default_feature_blocks,
                                   tokens_to_grid)
from trainer.methods.base import MethodContext, backward_simulation
from trainer.toy.teacher import TeacherArch, build_diffusers_wan

from method_harness import SHAPE, SCHEDULE, build, make_backend, toy_batch
from method_harness import one_thread  # noqa: F401 (module-scoped autouse fixture: one CPU thread)

# ---- AVDM2

def test_default_feature_blocks_spread_over_the_first_half():
    assert default_feature_blocks(30) == (4, 9, 14)
    assert default_feature_blocks(40) == (6, 13, 19)
    assert default_feature_blocks(6) == (0, 1, 2)
    assert default_feature_blocks(2) == (0,)


def test_patch_size_is_read_from_diffusers_config_or_a_comfy_style_attribute():
    from trainer.methods.gan import patch_size

    assert patch_size(build_diffusers_wan(TeacherArch(num_heads=1, num_layers=1, ffn_dim=64))) == (1, 2, 2)
    comfy_style = torch.nn.Module()
    comfy_style.patch_size = (1, 2, 2)  # ComfyUI's WanModel keeps it as a plain attribute, with no config
    assert patch_size(comfy_style) == (1, 2, 2)
    with pytest.raises(ValueError, match="no patch size"):
        patch_size(torch.nn.Linear(2, 2))


def test_tokens_to_grid_inverts_the_patch_embedding_flatten():
    grid = torch.randn(2, 5, 3, 4, 6)
    assert torch.equal(tokens_to_grid(grid.flatten(2).transpose(1, 2), (3, 4, 6)), grid)


def test_discriminator_sees_three_scales_and_skips_the_rest_of_the_teacher():
    method = build("avdm2")
    backend, model = method.backend, method.backend.model
    assert len(method.features) == 3 and len(method.head.branches) == 3
    assert [name for name, _ in method.features.taps] == ["patch_embedding", "blocks.0", "blocks.1"]
    x, sigma, context = torch.randn(SHAPE), torch.full((2,), 0.3), toy_batch(0).context
    features = method.features(backend, x, sigma, context)
    assert [tuple(f.shape) for f in features] == [(2, 128, 3, 4, 4)] * 3
    assert torch.allclose(features[0], model.patch_embedding(x))
    assert method.head(features).shape == (2, 1, 3, 4, 4)

    calls = {"blocks.0": 0, "blocks.1": 0}
    handles = [model.blocks[i].register_forward_hook(
        lambda *_a, key=f"blocks.{i}": calls.__setitem__(key, calls[key] + 1)) for i in (0, 1)]
    try:
        shallow = TeacherFeatures(model, (0,))
        assert len(shallow(backend, x, sigma, context)) == 2
        assert calls == {"blocks.0": 1, "blocks.1": 0}  # stopped after the deepest tap
    finally:
        for handle in handles:
            handle.remove()
    assert not model.blocks[1]._forward_pre_hooks and not model.blocks[0]._forward_hooks  # hooks removed
    # the forward that was cut short left the teacher and the adapters usable
    full = backend.predict_x0(x, sigma, context, STUDENT)
    assert torch.isfinite(full).all()
    with pytest.raises(ValueError, match="do not exist"):
        TeacherFeatures(model, (2,))


def test_avdm2_generator_gradient_reaches_the_student_through_the_frozen_teacher():
    method = build("avdm2")
    backend, batch = method.backend, toy_batch(0)
    method.cfg.sdm_weight = 0.0  # the adversarial term alone
    x_hat, _ = backward_simulation(backend, batch, SCHEDULE, exit_index=1)
    loss, metrics = method.generator_loss(x_hat, batch)
    assert set(metrics) == {"adv_g"}
    (grad_x,) = torch.autograd.grad(loss, x_hat, retain_graph=True)
    assert grad_x.abs().sum() > 0
    loss.backward()
    student = backend.trainable_parameters(STUDENT)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student)
    assert all(p.grad is None for p in method.head.parameters())  # the generator step leaves D alone
    assert all(p.grad is None for p in backend.trainable_parameters(CRITIC))
    assert all(p.requires_grad for p in method.head.parameters())
    # the 2-D score distribution matching term alone also trains the student
    for p in student:
        p.grad = None
    method.cfg.sdm_weight, method.cfg.gan_weight = 1.0, 0.0
    x_hat, _ = backward_simulation(backend, batch, SCHEDULE, exit_index=0)
    loss, metrics = method.generator_loss(x_hat, batch)
    assert set(metrics) == {"sdm", "sdm_grad_norm"} and metrics["sdm"] > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student)


def test_avdm2_frames_as_videos_picks_distinct_real_frames():
    method = build("avdm2")
    batch = toy_batch(0)
    x = torch.arange(SHAPE[2], dtype=torch.float32).view(1, 1, -1, 1, 1).expand(SHAPE).clone()
    x = x + 10 * torch.arange(SHAPE[0], dtype=torch.float32).view(-1, 1, 1, 1, 1)
    frames, context, negative = method.frames_as_videos(x, batch)
    k = method.cfg.sdm_frames
    assert frames.shape == (SHAPE[0] * k, SHAPE[1], 1, SHAPE[3], SHAPE[4])
    ids = frames[:, 0, 0, 0, 0].view(SHAPE[0], k)
    for b in range(SHAPE[0]):
        assert len(set(ids[b].tolist())) == k and all(10 * b <= v < 10 * b + SHAPE[2] for v in ids[b].tolist())
    assert torch.equal(context, batch.context.repeat_interleave(k, 0)) and negative.shape == context.shape


def test_avdm2_needs_real_latents():
    method = build("avdm2")
    with pytest.raises(ValueError, match="real video latents"):
        method.train_step(toy_batch(0, real=False), 0)


def test_avdm2_discriminator_learns_a_separable_pair():
    cfg = Avdm2Config(discriminator_lr=1e-2, warmup_steps=0, feature_blocks=(0, 1), head_channels=8)
    method = Avdm2Method(MethodContext(make_backend(), SCHEDULE), cfg)
    batch = toy_batch(0)
    real, fake = torch.full(SHAPE, 1.0), torch.full(SHAPE, -1.0)
    losses = []
    for _ in range(10):
        loss, _ = method.discriminator_loss(real, fake, batch)
        losses.append(float(loss.detach()))
        method._step("discriminator", loss, method.head_params, 0.0)
    assert losses[-1] < 0.5 * losses[0], losses
