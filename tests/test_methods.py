"""Distillation methods on a tiny random Wan with real LoRA adapters (no mocks, CPU, seconds): a shared
contract for every method (one step trains the student LoRA and never the base, finite float metrics, roles
enforced, an exact resume), then ADV's terms against direct computations. GPD and AVDM2 have their own
files (test_method_gpd.py, test_method_avdm2.py); the shared tiny Wan is in method_harness.py.
"""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch

from trainer import flow
from trainer.sampling import analytic
from trainer.backends.base import CRITIC, STUDENT, TEACHER
from trainer.distill.config import DistillConfig
from trainer.distill.loop import adapter_state, load_adapter_state
from trainer.methods import method_registry
from trainer.methods.adv import AdvConfig, AdvMethod
from trainer.methods.avdm2 import Avdm2Config
from trainer.methods.base import (DistillBatch, InterpolatedSimulation, MethodContext, StudentSchedule, randn,
                                  sample_sigma, student_step_input)
from trainer.sampling.positions import strided_positions
from trainer.methods.gan import r1_penalty
from trainer.methods.gpd import GpdConfig, GpdMethod
from trainer.methods.losses import dmd_loss
from trainer.sampling.samplers import sample_stride_flow

from method_harness import SHAPE, SCHEDULE, build, make_backend, toy_batch, base_state, lora_state, CONFIGS
from method_harness import one_thread  # noqa: F401 (module-scoped autouse fixture: one CPU thread)


# ---- the shared contract

def test_registry_and_config_know_every_method():
    assert set(method_registry()) >= {"adv", "gpd", "avdm2"}
    cfg = DistillConfig(method="gpd")
    assert isinstance(getattr(cfg, cfg.method), GpdConfig)
    assert isinstance(DistillConfig().avdm2, Avdm2Config)
    for name, cls in method_registry().items():
        assert cls.name == name and cls.config_class is type(getattr(DistillConfig(), name))


@pytest.mark.parametrize("name", ["adv", "gpd", "avdm2"])
def test_one_step_trains_student_lora_and_never_the_base(name):
    method = build(name)
    backend = method.backend
    base, student = base_state(backend), lora_state(backend, STUDENT)
    metrics = method.train_step(toy_batch(0), 0)
    assert metrics and all(isinstance(v, (int, float)) and math.isfinite(v) for v in metrics.values()), metrics
    if name != "adv":  # adv reports the exit/step indices as ints; the new methods report floats only
        assert all(isinstance(v, float) for v in metrics.values()), metrics
    after = lora_state(backend, STUDENT)
    assert any(not torch.equal(a, b) for a, b in zip(student, after)), "student LoRA did not change"
    for key, value in base_state(backend).items():
        assert torch.equal(value, base[key]), f"base parameter {key} changed"


@pytest.mark.parametrize("name", ["adv", "avdm2"])
def test_critic_role_is_required(name):
    with pytest.raises(ValueError, match="critic"):
        method_registry()[name](MethodContext(make_backend(critic=False), SCHEDULE), CONFIGS[name]())


def test_gpd_needs_no_critic():
    GpdMethod(MethodContext(make_backend(critic=False), SCHEDULE), GpdConfig())


def _checkpoint(method) -> bytes:
    buffer = io.BytesIO()
    torch.save({"adapters": adapter_state(method.backend),
                "optimizers": {n: o.state_dict() for n, o in method.optimizers().items()},
                "method_state": method.state_dict()}, buffer)
    return buffer.getvalue()


def _restore(name: str, blob: bytes, with_method_state: bool = True):
    state = torch.load(io.BytesIO(blob), weights_only=False)
    method = build(name, make_backend(lora_seed=123))  # a different init: only the checkpoint can match
    load_adapter_state(method.backend, state["adapters"])
    for opt_name, opt in method.optimizers().items():
        opt.load_state_dict(state["optimizers"][opt_name])
    if with_method_state:
        method.load_state_dict(state["method_state"])
    return method


def _assert_same_state(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same_state(a[key], b[key])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("name", ["adv", "gpd", "avdm2"])
def test_resume_restores_exactly(name):
    # gpd: steps 0-1 are stage 0, step 2 starts stage 1 (the frozen copy is taken), step 3 uses it
    warm = 3 if name == "gpd" else 2
    method = build(name)
    for step in range(warm):
        method.train_step(toy_batch(step), step)
    blob = _checkpoint(method)
    resumed = _restore(name, blob)
    _assert_same_state(method.state_dict(), resumed.state_dict())
    expected = method.train_step(toy_batch(warm), warm)
    assert resumed.train_step(toy_batch(warm), warm) == expected
    # the method's own state matters: without it the same step differs (so the check above can fail)
    assert _restore(name, blob, with_method_state=False).train_step(toy_batch(warm), warm) != expected


def test_shared_dmd_loss_matches_adv():
    """losses.dmd_loss is the normalised DMD of ADV; same draws, same loss (guards against drift)."""
    backend = make_backend()
    with torch.no_grad():
        for p in backend.trainable_parameters(CRITIC):
            p.normal_(0, 0.05)  # a critic that differs from the teacher
    adv = AdvMethod(MethodContext(backend, SCHEDULE), AdvConfig())
    x_hat = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    batch = toy_batch(1)
    expected, _ = adv.dmd_loss(x_hat, batch)
    batch.generator.manual_seed(1001)
    sigma = sample_sigma(SHAPE[0], batch.generator, x_hat.device, adv.cfg.dmd_shift, adv.cfg.dmd_sigma_min,
                         adv.cfg.dmd_sigma_max)
    loss, metrics = dmd_loss(backend, x_hat, sigma, randn(SHAPE, batch.generator, x_hat.device), batch.context,
                             batch.negative, adv.cfg.teacher_cfg)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6) and float(loss) > 0
    assert metrics["dmd"] == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("target", ["data", "teacher", "mixed"])
def test_adv_regression_targets_match_an_independent_computation(target):
    """L_reg regresses the student's velocity at one of its own sigmas on the data's velocity
    (published), on the CFG teacher's velocity of the same noised input (guided as
    uncond + s (cond - uncond) of the teacher's velocities, computed here without the method's
    helpers), or on their mean; the constant weighting exposes the raw loss."""
    backend = make_backend()
    with torch.no_grad():
        for p in backend.trainable_parameters(STUDENT):
            p.normal_(0, 0.05)  # a student that differs from the teacher
    cfg = AdvConfig(regression_weighting="constant", regression_target=target, teacher_cfg=3.0)
    adv = AdvMethod(MethodContext(backend, SCHEDULE), cfg)
    batch = toy_batch(2)
    loss, metrics = adv.regression_loss(batch)

    generator = torch.Generator().manual_seed(1002)
    k = int(torch.randint(SCHEDULE.steps, (), generator=generator))
    noise = torch.randn(batch.real_latents.shape, generator=generator)
    sigma = SCHEDULE.sigmas[k].expand(SHAPE[0])
    noisy = (1 - sigma.view(-1, 1, 1, 1, 1)) * batch.real_latents + sigma.view(-1, 1, 1, 1, 1) * noise
    with torch.no_grad():
        student = backend.predict_velocity(noisy, sigma, batch.context, STUDENT)
        cond = backend.predict_velocity(noisy, sigma, batch.context, TEACHER)
        uncond = backend.predict_velocity(noisy, sigma, batch.negative, TEACHER)
    data_v, teacher_v = noise - batch.real_latents, uncond + 3.0 * (cond - uncond)
    expected = {"data": data_v, "teacher": teacher_v, "mixed": 0.5 * (data_v + teacher_v)}[target]
    assert metrics["reg_step"] == k
    value = float(loss.detach())
    assert value == pytest.approx(float((student - expected).pow(2).mean()), rel=1e-4) and value > 0
    loss.backward()  # the student's graph is kept; the teacher's target carries none
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backend.trainable_parameters(STUDENT))


def test_adv_teacher_target_is_zero_for_a_student_equal_to_an_unguided_teacher():
    """With the student's LoRA at its zero initialisation and CFG 1 the target is the student's own
    prediction; any guidance makes it non-zero."""
    losses_at = {}
    for scale in (1.0, 3.0):
        adv = AdvMethod(MethodContext(make_backend(), SCHEDULE),
                        AdvConfig(regression_weighting="constant", regression_target="teacher", teacher_cfg=scale))
        losses_at[scale] = float(adv.regression_loss(toy_batch(3))[0])
    assert losses_at[1.0] < 1e-10 < 1e-4 < losses_at[3.0]


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_adv_regression_scale_multiplies_only_the_regression_term(scale):
    """The generator loss is L_DMD + scale * L_reg (constant weighting: L_reg is the raw loss; no
    temporal term), built from the same draws whatever the scale."""
    cfg = AdvConfig(generator_every=1, regression_weighting="constant", temporal="none", regression_scale=scale)
    metrics = AdvMethod(MethodContext(make_backend(), SCHEDULE), cfg).train_step(toy_batch(4), 0)
    assert metrics["reg"] > 0 and metrics["dmd"] > 0
    assert metrics["generator_loss"] == pytest.approx(metrics["dmd"] + scale * metrics["reg"], rel=1e-5)


def test_adv_regression_fade_lowers_the_weight_linearly_then_leaves_the_term_out():
    cfg = AdvConfig(regression_scale=2.0, regression_fade_steps=4)
    assert [cfg.regression_weight(s) for s in range(6)] == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0]
    assert AdvConfig(regression_scale=2.0).regression_weight(10_000) == 2.0  # published: constant
    assert AdvConfig(adaptive_regression=False).regression_weight(0) == 0.0
    with pytest.raises(ValueError, match="regression_fade_steps"):
        AdvConfig(regression_fade_steps=-1)

    def step_metrics(step: int, **overrides) -> dict:
        cfg = AdvConfig(generator_every=1, regression_weighting="constant", temporal="none", **overrides)
        return AdvMethod(MethodContext(make_backend(), SCHEDULE), cfg).train_step(toy_batch(4), step)

    early, late = step_metrics(1, regression_fade_steps=4), step_metrics(4, regression_fade_steps=4)
    assert early["generator_loss"] == pytest.approx(early["dmd"] + 0.75 * early["reg"], rel=1e-5)
    # from step N on (and at scale 0) the regression is not computed at all: no term, no teacher call
    for metrics in (late, step_metrics(0, regression_scale=0.0)):
        assert "reg" not in metrics and metrics["generator_loss"] == pytest.approx(metrics["dmd"], rel=1e-6)


def test_adv_gan_term_adds_to_the_generator_loss_and_trains_only_the_head_besides_the_loras():
    """gan_weight > 0: L_G gains gan_weight * softplus(-D(x_hat)) and the discriminator head learns after
    the critic; the frozen base never changes; gan_weight 0 (published) builds no discriminator at all."""
    weight = 0.5
    cfg = AdvConfig(generator_every=1, regression_weighting="constant", temporal="none", gan_weight=weight,
                    gan_head_channels=8, discriminator_lr=1e-2)
    method = AdvMethod(MethodContext(make_backend(), SCHEDULE), cfg)
    assert set(method.optimizers()) == {"generator", "critic", "discriminator"}
    base = base_state(method.backend)
    head = [p.detach().clone() for p in method.head_params]
    metrics = method.train_step(toy_batch(4), 0)
    assert metrics["adv_g"] > 0 and {"adv_d", "discriminator_grad_norm"} <= set(metrics)
    assert metrics["generator_loss"] == pytest.approx(metrics["dmd"] + metrics["reg"] + weight * metrics["adv_g"],
                                                      rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(head, method.head_params)), "the head did not learn"
    for key, value in base_state(method.backend).items():
        assert torch.equal(value, base[key]), f"base parameter {key} changed"

    plain = AdvMethod(MethodContext(make_backend(), SCHEDULE), AdvConfig(generator_every=1))
    assert plain.discriminator is None and set(plain.optimizers()) == {"generator", "critic"}
    assert "head" not in plain.state_dict() and "adv_g" not in plain.train_step(toy_batch(4), 0)


def test_adv_gan_head_is_resumed_and_a_state_without_it_is_refused():
    cfg = AdvConfig(generator_every=1, gan_weight=1.0, gan_head_channels=8, discriminator_lr=1e-2)
    trained = AdvMethod(MethodContext(make_backend(), SCHEDULE), cfg)
    trained.train_step(toy_batch(4), 0)
    fresh = AdvMethod(MethodContext(make_backend(), SCHEDULE), cfg)
    fresh.load_state_dict(trained.state_dict())
    for a, b in zip(trained.discriminator.head.state_dict().values(), fresh.discriminator.head.state_dict().values()):
        assert torch.equal(a, b)
    without = AdvMethod(MethodContext(make_backend(), SCHEDULE), AdvConfig()).state_dict()
    with pytest.raises(ValueError, match="no discriminator head"):
        fresh.load_state_dict(without)
    for bad in ({"gan_weight": -1.0}, {"gan_sigma_max": 0.0}, {"gan_sigma_max": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AdvConfig(**bad)


def test_r1_penalty_matches_the_analytic_gradient_of_the_mean_logit():
    """D = mean over locations of a per-location logit; two feature maps, one linear in it and one quadratic:
    grad_f1 = w / L, grad_f2 = 2 f2 / L, so |grad|^2 per clip = |w|^2 / L + 4 sum(f2^2) / L^2."""
    generator = torch.Generator().manual_seed(0)
    f1 = torch.randn(3, 4, 2, 3, 3, generator=generator).requires_grad_(True)
    f2 = torch.randn(3, 5, 2, 3, 3, generator=generator).requires_grad_(True)
    w = torch.randn(4, generator=generator)
    logits = (f1 * w.view(1, 4, 1, 1, 1)).sum(1, keepdim=True) + f2.pow(2).sum(1, keepdim=True)
    locations = 2 * 3 * 3
    expected = w.pow(2).sum() / locations + 4 * f2.detach().pow(2).flatten(1).sum(1) / locations ** 2
    assert float(r1_penalty(logits, [f1, f2]).detach()) == pytest.approx(float(expected.mean()), rel=1e-5)


def test_adv_gan_r1_penalty_adds_to_the_discriminator_loss_and_changes_its_update():
    """gan_r1_weight > 0: the head's loss is the GAN loss plus r1 / 2 * penalty (logged as adv_r1), so the
    head takes a different step than without it from the same start; negative weights are refused."""
    def head_after_one_step(r1_weight):
        torch.manual_seed(3)  # the same head initialisation for both runs
        cfg = AdvConfig(generator_every=1, regression_weighting="constant", temporal="none", gan_weight=0.5,
                        gan_head_channels=8, discriminator_lr=1e-2, gan_r1_weight=r1_weight)
        method = AdvMethod(MethodContext(make_backend(), SCHEDULE), cfg)
        metrics = method.train_step(toy_batch(4), 0)
        return metrics, [p.detach().clone() for p in method.head_params]

    plain_metrics, plain_head = head_after_one_step(0.0)
    r1_metrics, r1_head = head_after_one_step(1e4)
    assert "adv_r1" not in plain_metrics and r1_metrics["adv_r1"] > 0
    assert r1_metrics["adv_d"] == pytest.approx(plain_metrics["adv_d"], rel=1e-5)  # logged: the GAN loss alone
    assert any(not torch.allclose(a, b) for a, b in zip(plain_head, r1_head)), "the penalty did not reach the head"
    with pytest.raises(ValueError, match="gan_r1_weight"):
        AdvConfig(gan_r1_weight=-1.0)
    with pytest.raises(ValueError, match="r1_weight"):
        Avdm2Config(r1_weight=-1.0)


def test_adv_gan_term_needs_real_latents():
    method = AdvMethod(MethodContext(make_backend(), SCHEDULE),
                       AdvConfig(generator_every=2, gan_weight=1.0, gan_head_channels=8, adaptive_regression=False))
    with pytest.raises(ValueError, match="real latents"):
        method.train_step(toy_batch(4, real=False), 1)


def test_adv_regression_from_step_skips_the_first_step_indices():
    """The regression draws its step index from [regression_from_step, steps); the published default
    draws every index, so index 0 (pure noise) appears within a few draws."""
    def drawn(first: int) -> set[int]:
        adv = AdvMethod(MethodContext(make_backend(), SCHEDULE),
                        AdvConfig(regression_weighting="constant", regression_from_step=first))
        return {adv.regression_loss(toy_batch(seed))[1]["reg_step"] for seed in range(8)}

    assert drawn(0) == {0, 1, 2}
    assert drawn(1) == {1, 2}
    assert drawn(2) == {2}
    with pytest.raises(ValueError, match="regression_from_step 3 and regression_until_step 0 leave none"):
        AdvMethod(MethodContext(make_backend(), SCHEDULE), AdvConfig(regression_from_step=3))


def test_adv_regression_until_step_leaves_out_the_last_step_indices():
    """``regression_until_step`` ends the drawn range (exclusive); 0 keeps every index through the last."""
    def drawn(first: int, until: int) -> set[int]:
        adv = AdvMethod(MethodContext(make_backend(), SCHEDULE),
                        AdvConfig(regression_weighting="constant", regression_from_step=first,
                                  regression_until_step=until))
        return {adv.regression_loss(toy_batch(seed))[1]["reg_step"] for seed in range(8)}

    assert drawn(0, 0) == {0, 1, 2}
    assert drawn(0, 2) == {0, 1}
    assert drawn(1, 2) == {1}
    with pytest.raises(ValueError, match="leave none"):
        AdvMethod(MethodContext(make_backend(), SCHEDULE), AdvConfig(regression_from_step=2, regression_until_step=2))
    with pytest.raises(ValueError, match="past the student's 3 steps"):
        AdvMethod(MethodContext(make_backend(), SCHEDULE), AdvConfig(regression_until_step=4))
    with pytest.raises(ValueError, match="regression_until_step must be >= 0"):
        AdvConfig(regression_until_step=-1)


def _perturbed_student(seed: int = 7):
    backend = make_backend()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in backend.trainable_parameters(STUDENT):
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)  # a student that differs from the teacher
    return backend


def _student_input_by_hand(backend, batch: DistillBatch) -> tuple[torch.Tensor, int]:
    """The student's input at a random exit index of its own sampling, with backward simulation's draws
    (exit index, start noise, re-noise) replayed from velocities, without the method's helpers."""
    generator, sigmas = batch.generator, SCHEDULE.sigmas
    k = int(torch.randint(SCHEDULE.steps, (), generator=generator))
    x = torch.randn(SHAPE, generator=generator) * sigmas[0]
    with torch.no_grad():
        for i in range(k):
            x0 = x - sigmas[i] * backend.predict_velocity(x, sigmas[i].expand(SHAPE[0]), batch.context, STUDENT)
            x = (1 - sigmas[i + 1]) * x0 + sigmas[i + 1] * torch.randn(SHAPE, generator=generator)
    return x, k


def test_adv_onpolicy_guidance_regresses_the_students_own_step_on_the_cfg_teacher():
    """The on-policy term is the mean squared distance between the student's x0 at the input its
    own sampling reaches (same draws as backward simulation: exit index, start noise, re-noise) and
    the CFG teacher's x0 there, computed here from the teacher's velocities without the method's
    helpers; the generator loss adds it with its weight."""
    cfg = AdvConfig(generator_every=1, adaptive_regression=False, temporal="none", onpolicy_weight=0.5,
                    teacher_cfg=3.0)
    metrics = AdvMethod(MethodContext(_perturbed_student(), SCHEDULE), cfg).train_step(toy_batch(5), 0)

    backend, batch = _perturbed_student(), toy_batch(5)
    sigmas = SCHEDULE.sigmas
    x, k = _student_input_by_hand(backend, batch)
    with torch.no_grad():
        sigma = sigmas[k].expand(SHAPE[0])
        student = x - sigmas[k] * backend.predict_velocity(x, sigma, batch.context, STUDENT)
        cond = backend.predict_velocity(x, sigma, batch.context, TEACHER)
        uncond = backend.predict_velocity(x, sigma, batch.negative, TEACHER)
    teacher = x - sigmas[k] * (uncond + 3.0 * (cond - uncond))
    expected = float((student - teacher).pow(2).mean())
    assert metrics["exit_index"] == k
    assert metrics["onpolicy"] == pytest.approx(expected, rel=1e-3) and expected > 0
    assert metrics["generator_loss"] == pytest.approx(metrics["dmd"] + 0.5 * metrics["onpolicy"], rel=1e-5)
    assert "onpolicy" not in AdvMethod(MethodContext(_perturbed_student(), SCHEDULE),
                                       AdvConfig(generator_every=1)).train_step(toy_batch(5), 0)


def test_euler_to_clean_converges_to_the_exact_flow_map_of_gaussian_data():
    """On Gaussian data the probability-flow map is known in closed form (analytic.flow_transport);
    Euler integration with the exact denoiser approaches it at first order as the grid gets finer."""
    data = analytic.make_gaussian_data()
    x = analytic.flow_initial_noise() * 0.8 + 0.2 * data.mean
    exact = analytic.flow_transport(data, x, 0.8, 0.0)
    denoiser = analytic.flow_denoiser(data)
    errors = [float((flow.euler_to_clean(denoiser, x, flow.shifted_grid(0.8, n, 3.0)) - exact).abs().max())
              for n in (1, 4, 64)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.1 * errors[1]  # first order: 16x steps, ~16x less
    assert denoiser.calls == 1 + 4 + 64


def test_shifted_grid_is_evenly_spaced_before_the_warp_and_ends_at_zero():
    grid = flow.shifted_grid(0.75, 3, 3.0)
    # sigma = 3u / (1 + 2u) inverted by hand: u = sigma / (3 - 2 sigma) = 0.5 for 0.75
    expected = [0.75] + [3 * u / (1 + 2 * u) for u in (1 / 3, 1 / 6, 0.0)]
    assert grid.tolist() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="steps"):
        flow.shifted_grid(0.5, 0, 3.0)
    with pytest.raises(ValueError, match="end in 0"):
        flow.euler_to_clean(lambda x, s: x, torch.zeros(1), torch.tensor([1.0, 0.5]))


def test_adv_onpolicy_target_with_teacher_steps_is_the_cfg_teachers_euler_solution():
    """With two teacher steps the target is one Euler step of the CFG teacher to the midpoint (in
    unwarped time) of the student's sigma and 0, then the CFG teacher's x0 there; computed here by hand."""
    shift = SCHEDULE.shift
    cfg = AdvConfig(generator_every=1, adaptive_regression=False, temporal="none", onpolicy_weight=1.0,
                    onpolicy_teacher_steps=2, teacher_cfg=3.0)
    metrics = AdvMethod(MethodContext(_perturbed_student(), SCHEDULE), cfg).train_step(toy_batch(5), 0)

    backend, batch = _perturbed_student(), toy_batch(5)
    sigmas = SCHEDULE.sigmas
    x, k = _student_input_by_hand(backend, batch)

    def velocity(x, s, role, context):
        return backend.predict_velocity(x, torch.full((SHAPE[0],), float(s)), context, role)

    def cfg_x0(x, s):
        cond, uncond = velocity(x, s, TEACHER, batch.context), velocity(x, s, TEACHER, batch.negative)
        return x - s * (uncond + 3.0 * (cond - uncond))

    with torch.no_grad():
        s = float(sigmas[k])
        student = x - s * velocity(x, s, STUDENT, batch.context)
        u_mid = 0.5 * s / (shift - (shift - 1) * s)
        s_mid = shift * u_mid / (1 + (shift - 1) * u_mid)
        x_mid = x + (s_mid - s) * (x - cfg_x0(x, s)) / s  # Euler along v = (x - x0) / s
        teacher = cfg_x0(x_mid, s_mid)
    expected = float((student - teacher).pow(2).mean())
    assert metrics["exit_index"] == k
    assert metrics["onpolicy"] == pytest.approx(expected, rel=1e-3) and expected > 0
    one_step = AdvMethod(MethodContext(_perturbed_student(), SCHEDULE),
                         AdvConfig(**{**cfg.__dict__, "onpolicy_teacher_steps": 1})).train_step(toy_batch(5), 0)
    assert abs(one_step["onpolicy"] - expected) > 1e-3 * expected  # the second step changes the target


def test_adv_rejects_zero_onpolicy_teacher_steps():
    with pytest.raises(ValueError, match="onpolicy_teacher_steps"):
        AdvConfig(onpolicy_teacher_steps=0)


LOW_SCHEDULE = StudentSchedule((1000.0, 500.0, 250.0), 1.0)  # low sigmas: the head's x0 weighs in


def _interpolated_input_by_hand(backend, stride: int) -> torch.Tensor:
    batch = toy_batch(5)
    generator, sigmas = batch.generator, LOW_SCHEDULE.sigmas
    x = torch.randn(SHAPE, generator=generator) * sigmas[0]
    assert float(torch.rand((), generator=generator)) < 1.0  # the path's draw
    with torch.no_grad(), strided_positions(backend.model, stride):
        half = x[:, :, ::2]
        x0 = half - sigmas[0] * backend.predict_velocity(half, sigmas[0].expand(SHAPE[0]), batch.context, STUDENT)
    full = torch.stack([x0[:, :, 0], 0.5 * (x0[:, :, 0] + x0[:, :, 1]), x0[:, :, 1]], dim=2)
    x = (1 - sigmas[1]) * full + sigmas[1] * torch.randn(SHAPE, generator=generator)
    with torch.no_grad():
        x0 = x - sigmas[1] * backend.predict_velocity(x, sigmas[1].expand(SHAPE[0]), batch.context, STUDENT)
    return (1 - sigmas[2]) * x0 + sigmas[2] * torch.randn(SHAPE, generator=generator)


def test_interpolated_simulation_runs_the_head_on_every_second_frame_then_interpolates():
    """The student's input at step 2 along interpolated sampling's path with switch 1, rebuilt by hand:
    step 0 on frames 0 and 2 numbered 0 and 2, linear interpolation of its x0, re-noise, step 1 at full length."""
    interp = InterpolatedSimulation(switch_index=1, probability=1.0, interpolator="linear")
    backend = _perturbed_student()
    x_in, k = student_step_input(backend, toy_batch(5), LOW_SCHEDULE, exit_index=2, interp=interp)
    assert k == 2
    assert torch.allclose(x_in, _interpolated_input_by_hand(backend, stride=2), atol=1e-5)
    # the positions matter: numbered 0, 1 the half-length step gives another input
    assert (x_in - _interpolated_input_by_hand(backend, stride=1)).abs().max() > 1e-3


def test_student_simulation_with_gamma_0_is_ddim_and_gamma_1_ignores_the_implied_noise():
    """Backward simulation re-noises as the student's sampler does: with gamma 0 the input at step 2 is
    what the deterministic DDIM sampler (``sample_stride_flow``, order 1) reaches from the same start
    noise in two steps; with gamma 1 it does not depend on the noise the input implies at all."""
    from trainer.backends.base import as_kdiffusion_model

    backend, batch = _perturbed_student(), toy_batch(5)
    ddim_schedule = StudentSchedule(SCHEDULE.step_list, SCHEDULE.shift, gamma=0.0)
    x_in, k = student_step_input(backend, toy_batch(5), ddim_schedule, exit_index=2)
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1005)) * SCHEDULE.sigmas[0]
    model = as_kdiffusion_model(backend.view(STUDENT), batch.context)
    with torch.no_grad():
        ddim = sample_stride_flow(model, start, SCHEDULE.sigmas[:3], order=1)  # stops at sigma_2
    assert k == 2 and torch.allclose(x_in, ddim, atol=1e-5)
    fresh, _ = student_step_input(backend, toy_batch(5), SCHEDULE, exit_index=2)
    assert (fresh - ddim).abs().max() > 0.1  # the default re-noises with fresh noise
    partial, _ = student_step_input(backend, toy_batch(5), StudentSchedule(SCHEDULE.step_list, SCHEDULE.shift, 0.5),
                                    exit_index=2)
    assert (partial - ddim).abs().max() > 1e-3 and (partial - fresh).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"gamma is a share of fresh noise in \[0, 1\]"):
        StudentSchedule(SCHEDULE.step_list, SCHEDULE.shift, gamma=-0.1)


def test_interpolated_simulation_leaves_steps_before_the_switch_alone():
    interp = InterpolatedSimulation(switch_index=2, probability=1.0, interpolator="linear")
    backend = _perturbed_student()
    with_interp, _ = student_step_input(backend, toy_batch(5), SCHEDULE, exit_index=1, interp=interp)
    plain, _ = student_step_input(backend, toy_batch(5), SCHEDULE, exit_index=1)
    assert torch.equal(with_interp, plain)


def test_interpolated_simulation_rejects_bad_settings():
    with pytest.raises(ValueError, match="probability"):
        InterpolatedSimulation(1, 1.5)
    with pytest.raises(ValueError, match="unknown interpolator"):
        InterpolatedSimulation(1, 0.5, "cubic")
    with pytest.raises(ValueError, match="switch index 3 must be below"):
        AdvMethod(MethodContext(make_backend(), SCHEDULE), AdvConfig(interp_switch=3))
    with pytest.raises(ValueError, match="switch index"):
        AdvConfig(interp_switch=-1)
    with pytest.raises(ValueError, match="probability"):  # checked even while the simulation is off
        AdvConfig(interp_probability=2.0)
    with pytest.raises(ValueError, match="unknown interpolator"):
        AdvConfig(interp_interpolator="cubic")
    even = DistillBatch(toy_batch(5).context, toy_batch(5).negative, (2, 16, 4, 8, 8), None, torch.Generator())
    with pytest.raises(ValueError, match="odd number of latent frames"):
        student_step_input(make_backend(), even, SCHEDULE, exit_index=2, interp=InterpolatedSimulation(1, 1.0, "linear"))


def test_adv_rejects_a_negative_onpolicy_weight():
    with pytest.raises(ValueError, match="onpolicy_weight"):
        AdvConfig(onpolicy_weight=-1.0)


def test_adv_rejects_a_negative_regression_scale():
    with pytest.raises(ValueError, match="regression_scale"):
        AdvConfig(regression_scale=-0.5)


def test_adv_rejects_an_unknown_regression_target():
    with pytest.raises(ValueError, match="regression_target"):
        AdvConfig(regression_target="latents")


def test_adv_without_real_latents_switches_off_every_term_that_needs_them():
    from trainer.methods.adv import PUBLISHED_TEMPORAL_WEIGHT

    main_job = DistillConfig().adv
    assert main_job.temporal == "distribution" and main_job.gan_weight > 0 and main_job.adaptive_regression
    bare = main_job.without_real_latents()
    assert (bare.adaptive_regression, bare.gan_weight, bare.marginal_weight) == (False, 0.0, 0.0)
    assert (bare.temporal, bare.temporal_weight) == ("hinge", PUBLISHED_TEMPORAL_WEIGHT)
    assert (bare.generator_lr, bare.teacher_cfg, bare.dmd_shift) == (main_job.generator_lr, main_job.teacher_cfg,
                                                                     main_job.dmd_shift)
    # a temporal loss that needs no reference is kept as it is
    kept = AdvConfig(temporal="none", temporal_weight=0.3).without_real_latents()
    assert (kept.temporal, kept.temporal_weight) == ("none", 0.3)
    # and the result trains on prompts alone: one step without real latents
    backend = make_backend()
    method = AdvMethod(MethodContext(backend, SCHEDULE), dataclasses.replace(bare, generator_every=1))
    metrics = method.train_step(toy_batch(0, real=False), 0)
    assert "reg" not in metrics and "adv_g" not in metrics and math.isfinite(metrics["generator_loss"])
