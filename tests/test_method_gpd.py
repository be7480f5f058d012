"""GPD on the tiny random Wan: stages, CFG annealing, the online target against direct computations,
and the frequency losses."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.backends.base import STUDENT, TEACHER, as_kdiffusion_model
from trainer.methods.base import MethodContext
from trainer.methods.gpd import GpdConfig, GpdMethod, fine_sigmas, swapped_weights
from trainer.methods.losses import spectral_loss, temporal_spectral_loss
from trainer.sampling.samplers import sample_stride_flow

from method_harness import SHAPE, SCHEDULE, make_backend, toy_batch
from method_harness import one_thread  # noqa: F401 (module-scoped autouse fixture: one CPU thread)

# ---- GPD

def test_gpd_stages_jumps_and_cfg_annealing():
    cfg = GpdConfig(num_stages=4, stage_steps=10)
    assert [cfg.stage_of(s) for s in (0, 9, 10, 19, 20, 30, 39, 40, 10_000)] == [0, 0, 1, 1, 2, 3, 3, 3, 3]
    assert [cfg.jump(s) for s in range(4)] == [1, 2, 4, 8]
    assert cfg.teacher_cfg(0) == 6.0 and cfg.teacher_cfg(3) == 1.5
    assert cfg.teacher_cfg(1) == pytest.approx(4.5) and cfg.teacher_cfg(2) == pytest.approx(3.0)
    assert GpdConfig(num_stages=1).teacher_cfg(0) == 6.0
    # the fine grid holds every student sigma; the last stage's jumps are the student's own steps
    grid = fine_sigmas(SCHEDULE, cfg.fine_per_student_interval)
    assert len(grid) == SCHEDULE.steps * 8 + 1
    assert torch.allclose(grid[::cfg.jump(3)], SCHEDULE.sigmas, atol=1e-6)
    assert (grid[1:] < grid[:-1]).all() and grid[-1] == 0


def test_gpd_default_stage_length_fits_every_stage_into_the_run():
    auto = GpdConfig(num_stages=4)
    with pytest.raises(ValueError, match="for_run"):
        auto.stage_of(0)
    fitted = auto.for_run(400)
    assert fitted.stage_steps == 100
    assert [fitted.stage_of(s) for s in (0, 99, 100, 299, 300, 399)] == [0, 0, 1, 2, 3, 3]
    assert GpdConfig(num_stages=4, stage_steps=150).for_run(400).stage_steps == 150  # explicit lengths are kept
    assert GpdConfig(num_stages=4).for_run(2).stage_steps == 1


def test_gpd_train_step_reports_stage_and_cfg_at_boundaries():
    method = GpdMethod(MethodContext(make_backend(), SCHEDULE), GpdConfig(num_stages=3, stage_steps=1))
    seen = [method.train_step(toy_batch(s), s) for s in range(3)]
    assert [m["stage"] for m in seen] == [0.0, 1.0, 2.0]
    assert [m["teacher_cfg"] for m in seen] == [6.0, 3.75, 1.5]
    assert [m["jump"] for m in seen] == [1.0, 2.0, 4.0]
    assert method.previous_student is not None


def test_gpd_first_stage_target_is_the_teachers_multistep_solution():
    backend = make_backend()
    method = GpdMethod(MethodContext(backend, SCHEDULE), GpdConfig(num_stages=2, first_stage_jump=2))
    batch = toy_batch(2)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    sigmas = method.sigmas
    for index in (0, len(sigmas) - 3):  # from pure noise, and the last jump that lands on sigma 0
        target = method.target_end(x, index, 0, batch)
        # the same two CFG teacher steps through an independent code path: the DDIM (= Euler) sampler
        teacher = as_kdiffusion_model(backend.view(TEACHER), batch.context, batch.negative, cfg=6.0)
        direct = sample_stride_flow(teacher, x, sigmas[index:index + 3], order=1)
        assert torch.allclose(target, direct, atol=1e-5), (target - direct).abs().max()
        unguided = sample_stride_flow(as_kdiffusion_model(backend.view(TEACHER), batch.context),
                                      x, sigmas[index:index + 3], order=1)
        assert not torch.allclose(target, unguided, atol=1e-3)  # the guidance is really applied


def test_gpd_later_stage_target_uses_the_frozen_previous_student_then_the_teacher():
    backend = make_backend()
    method = GpdMethod(MethodContext(backend, SCHEDULE), GpdConfig(num_stages=3))
    params = backend.trainable_parameters(STUDENT)
    gen = torch.Generator().manual_seed(4)
    frozen = [torch.randn(p.shape, generator=gen) * 0.05 for p in params]
    live = [torch.randn(p.shape, generator=gen) * 0.05 for p in params]
    method.previous_student = frozen
    with torch.no_grad():
        for p, value in zip(params, live):
            p.copy_(value)
    batch, stage, index = toy_batch(3), 2, 4
    x = torch.randn(SHAPE, generator=gen)
    target = method.target_end(x, index, stage, batch)
    assert all(torch.equal(p, value) for p, value in zip(params, live)), "live student weights not restored"

    sigmas, k, cfg = method.sigmas, 4, method.cfg.teacher_cfg(stage)
    with torch.no_grad(), swapped_weights(params, frozen):
        y = x
        for m in range(index, index + k - 1):
            v = backend.predict_velocity(y, sigmas[m].expand(2), batch.context, STUDENT)
            y = y + (sigmas[m + 1] - sigmas[m]) * v
    teacher = as_kdiffusion_model(backend.view(TEACHER), batch.context, batch.negative, cfg=cfg)
    direct = sample_stride_flow(teacher, y, sigmas[index + k - 1:index + k + 1], order=1)
    assert torch.allclose(target, direct, atol=1e-5)
    with torch.no_grad(), swapped_weights(params, live):  # with the live student instead it differs
        z = x
        for m in range(index, index + k - 1):
            z = z + (sigmas[m + 1] - sigmas[m]) * backend.predict_velocity(z, sigmas[m].expand(2), batch.context,
                                                                           STUDENT)
    assert not torch.allclose(target, sample_stride_flow(teacher, z, sigmas[index + k - 1:index + k + 1], order=1),
                              atol=1e-4)


def test_gpd_real_start_point_needs_real_latents():
    method = GpdMethod(MethodContext(make_backend(), SCHEDULE), GpdConfig(start_point="real", stage_steps=150))
    with pytest.raises(ValueError, match="real latents"):
        method.train_step(toy_batch(0, real=False), 0)
    assert math.isfinite(method.train_step(toy_batch(0), 0)["loss"])


def _wave(freq_w: int, shape=(1, 2, 4, 16, 16)) -> torch.Tensor:
    w = torch.arange(shape[-1], dtype=torch.float32)
    return torch.cos(2 * math.pi * freq_w * w / shape[-1]).expand(shape).clone()


def test_frequency_loss_zero_parseval_and_high_pass():
    x = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    assert spectral_loss(x, x.clone()) == 0 and temporal_spectral_loss(x, x.clone()) == 0
    y = torch.randn_like(x)
    # gamma 0, no focal weights: the orthonormal FFT keeps energy, the loss is the plain MSE
    assert float(spectral_loss(x, y, gamma=0.0)) == pytest.approx(float((x - y).pow(2).mean()), rel=1e-5)
    # same pixel energy, 7 cycles vs 1 cycle across the width: the loss scales as (7/1)^(2 gamma)
    zero = torch.zeros(1, 2, 4, 16, 16)
    low, high = _wave(1), _wave(7)
    assert float(low.pow(2).mean()) == pytest.approx(float(high.pow(2).mean()))
    for gamma in (0.5, 1.0, 2.0):
        ratio = spectral_loss(high, zero, gamma) / spectral_loss(low, zero, gamma)
        assert float(ratio) == pytest.approx(7 ** (2 * gamma), rel=1e-4)
    # a difference that is constant in space and time is pure DC: no high-pass weight at all
    assert float(spectral_loss(zero + 1.0, zero, 1.0)) == pytest.approx(0.0, abs=1e-10)
    # focal weights (detached, max 1) can only lower it and keep zero at zero
    assert 0 < float(spectral_loss(x, y, 1.0, focal_alpha=1.0)) < float(spectral_loss(x, y, 1.0))


def test_temporal_frequency_term_sees_frame_order_not_static_offsets():
    x = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    swapped = x[:, :, [1, 0, 2, 3]]
    assert float(temporal_spectral_loss(swapped, x)) > 1e-3
    assert float(temporal_spectral_loss(x + 0.7, x)) == pytest.approx(0.0, abs=1e-10)  # same on every frame
    # slow (1 cycle over 8 frames) vs fast (3 cycles) flicker of equal energy: high-pass in time
    t = torch.arange(8, dtype=torch.float32).view(1, 1, 8, 1, 1)
    slow = torch.cos(2 * math.pi * t / 8).expand(1, 1, 8, 2, 2)
    fast = torch.cos(2 * math.pi * 3 * t / 8).expand(1, 1, 8, 2, 2)
    zero = torch.zeros(1, 1, 8, 2, 2)
    ratio = temporal_spectral_loss(fast, zero) / temporal_spectral_loss(slow, zero)
    assert float(ratio) == pytest.approx(9.0, rel=1e-4)
    # one frame: nothing temporal to compare
    assert float(temporal_spectral_loss(x[:, :, :1] + 1, x[:, :, :1])) == 0.0
