"""Adaptive Video Distillation (METHODS.md section 1a), the project's primary method.

Generator objective ``L_G = L_DMD + w * L_reg + [L_temp >= hinge] * temporal_weight * L_temp``:
- ``L_DMD``: distribution matching with a CFG teacher ("real score") and a LoRA critic ("fake
  score") on the student's backward-simulated samples, re-noised at shift-warped timesteps; the
  gradient ``(x_fake - x_real)`` is normalised per sample by ``mean|x_hat - x_real|``.
- critic: the ordinary flow loss on re-noised student samples, every iteration; the generator
  updates every ``generator_every`` iterations (``dfake_gen_update_ratio``).
- ``L_reg``: the student's flow loss on real latents at its own step list, weighted adaptively per
  step index, ``w = 1 - sigmoid(3 (L_reg - EMA_k))`` with ``EMA_k <- 0.95 EMA_k + 0.05 L_reg``;
  per sample as published, or per location (``regression_weighting="spatial"``). Its target is
  the data's velocity as published (``regression_target="data"``); as an option the CFG teacher's
  velocity on the same noised input (``"teacher"``: guidance distillation at the student's own
  timesteps) or the mean of the two (``"mixed"``, which equals half of each loss up to a constant).
- ``L_temp``: ``-log(mean_{c,h,w} Var_frames(x_hat) + 1e-6)`` with the published hinge, or the
  teacher-anchored variant that matches per-channel frame-difference energy to real data, or (not in
  the paper) the per-channel Wasserstein-1 distance between the distributions of ``|frame difference|``
  in the student's samples and in real latents, which sees a static background's shimmer that an
  energy dominated by the moving object does not.
- optional, not in the paper (``gan_weight`` > 0, DMD2's GAN term): ``+ gan_weight * softplus(-D(x_hat))``
  with ``D`` a head on the frozen teacher's features (``gan.FeatureDiscriminator``, the discriminator
  AVDM2 uses), trained on real latents against the student's samples after every critic step. DMD
  matches the teacher; this term pulls towards the data, which a student can then match better than
  its teacher sampled in few steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import flow
from ..backends.base import CRITIC, STUDENT, TEACHER, guided_x0
from . import losses
from .base import (DistillBatch, DistillMethod, InterpolatedSimulation, backward_simulation, randn, sample_sigma,
                   student_step_input, velocity_loss_per_sample)
from .gan import FeatureDiscriminator


PUBLISHED_TEMPORAL_WEIGHT = 0.05  # the temporal hinge's weight in AdvConfig (and the ablations' anchored variant)
REFERENCE_TEMPORAL = ("anchored", "distribution")  # temporal losses measured against real latents


@dataclass
class AdvConfig:
    generator_lr: float = 2e-6
    critic_lr: float = 2e-6
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    generator_every: int = 5
    teacher_cfg: float = 6.0  # ComfyUI convention uncond + s (cond - uncond); METHODS' g = 5 is s = 6
    dmd_shift: float = 5.0
    dmd_sigma_min: float = 0.02
    dmd_sigma_max: float = 0.98
    adaptive_regression: bool = True  # False: no L_reg at all (the ablation "adv_no_adaptive")
    regression_weighting: str = "per_sample"  # "per_sample" (published), "spatial", or "constant"
    regression_ema: float = 0.95
    regression_sharpness: float = 3.0
    regression_target: str = "data"  # "data" (published), "teacher" (CFG teacher velocity) or "mixed"
    regression_scale: float = 1.0  # multiplies L_reg (published: 1, the adaptive weight alone)
    regression_from_step: int = 0  # L_reg at the student's step indices >= this (0: all, published)
    # not in the paper: L_reg only at step indices < this (0: through the last step, published); with
    # regression_from_step it draws the index from [from, until)
    regression_until_step: int = 0
    # not in the paper: 0 keeps L_reg's weight constant (published); N > 0 lowers it linearly from
    # regression_scale at step 0 to 0 at step N and leaves L_reg out from then on (DMD alone finishes the run)
    regression_fade_steps: int = 0
    # not in the paper: weight of an on-policy guidance regression, the student's x0 at the input its own
    # sampling gives it regressed on the CFG teacher's x0 for that input (0: off)
    onpolicy_weight: float = 0.0
    # teacher Euler steps from the student's input down to sigma 0 that make the on-policy target (1: the
    # teacher's own x0 prediction; more: its flow-ODE solution, a sharp target instead of a posterior mean)
    onpolicy_teacher_steps: int = 1
    # not in the paper: train on interpolated sampling's path too (base.InterpolatedSimulation); 0: off
    interp_switch: int = 0
    interp_probability: float = 0.5
    interp_interpolator: str = "learned"
    # not in the paper (DMD2's GAN term): weight of a non-saturating diffusion-GAN generator loss whose
    # discriminator is a head on the frozen teacher's features (trainer/methods/gan.py), trained on real
    # latents against the student's samples at every critic step; 0: off (published ADV)
    gan_weight: float = 0.0
    gan_sigma_max: float = 0.5  # real and student videos are noised to sigma ~ U[0, gan_sigma_max] for it
    discriminator_lr: float = 2e-4
    gan_head_channels: int = 64
    gan_r1_weight: float = 0.0  # R1 penalty on the discriminator head's real features (gan.r1_penalty); 0: off
    # not in the paper: weight of a sliced W1 between the per-location latent vectors of the student's
    # samples and of real latents (losses.sliced_latent_w1, ``marginal_slices`` random directions per step),
    # which keeps the colours of what the temporal terms make still (a static background drawn to grey); 0: off
    marginal_weight: float = 0.0
    marginal_slices: int = 32
    spatial_window: int = 3
    # "hinge" (published), "anchored" (data-anchored frame-difference energy), "distribution" (not in the
    # paper: W1 between the |frame difference| distributions of student samples and real latents), "none"
    temporal: str = "hinge"
    temporal_weight: float = PUBLISHED_TEMPORAL_WEIGHT
    temporal_hinge: float = 0.8

    def __post_init__(self):
        if self.regression_weighting not in WEIGHTINGS:
            raise ValueError(f"regression_weighting must be one of {sorted(WEIGHTINGS)}, got {self.regression_weighting!r}")
        if self.regression_target not in REGRESSION_TARGETS:
            raise ValueError(f"regression_target must be one of {sorted(REGRESSION_TARGETS)}, got {self.regression_target!r}")
        if self.temporal not in TEMPORAL_LOSSES:
            raise ValueError(f"temporal must be one of {sorted(TEMPORAL_LOSSES)}, got {self.temporal!r}")
        if self.generator_every < 1:
            raise ValueError("generator_every must be >= 1")
        if self.regression_from_step < 0:
            raise ValueError(f"regression_from_step must be >= 0, got {self.regression_from_step}")
        if self.regression_until_step < 0:
            raise ValueError(f"regression_until_step must be >= 0 (0: through the last step), got "
                             f"{self.regression_until_step}")
        if not self.onpolicy_weight >= 0:
            raise ValueError(f"onpolicy_weight must be >= 0, got {self.onpolicy_weight}")
        if self.onpolicy_teacher_steps < 1:
            raise ValueError(f"onpolicy_teacher_steps must be >= 1, got {self.onpolicy_teacher_steps}")
        if not self.regression_scale >= 0:
            raise ValueError(f"regression_scale must be >= 0, got {self.regression_scale}")
        if not self.gan_weight >= 0:
            raise ValueError(f"gan_weight must be >= 0 (0: off), got {self.gan_weight}")
        if not 0 < self.gan_sigma_max <= 1:
            raise ValueError(f"gan_sigma_max must be in (0, 1], got {self.gan_sigma_max}")
        if not self.gan_r1_weight >= 0:
            raise ValueError(f"gan_r1_weight must be >= 0 (0: off), got {self.gan_r1_weight}")
        if not self.marginal_weight >= 0:
            raise ValueError(f"marginal_weight must be >= 0 (0: off), got {self.marginal_weight}")
        if self.marginal_slices < 1:
            raise ValueError(f"marginal_slices must be >= 1, got {self.marginal_slices}")
        if self.regression_fade_steps < 0:
            raise ValueError(f"regression_fade_steps must be >= 0 (0: no fade), got {self.regression_fade_steps}")
        InterpolatedSimulation(self.interp_switch, self.interp_probability, self.interp_interpolator)  # checks them

    def real_latent_terms(self) -> list[str]:
        """The terms of these settings that learn from real latents (empty: prompts alone suffice)."""
        return [name for name, on in (("adaptive regression", self.adaptive_regression), ("GAN", self.gan_weight > 0),
                                      ("marginal", self.marginal_weight > 0),
                                      (f"{self.temporal} temporal loss", self.temporal in REFERENCE_TEMPORAL))
                if on]

    def without_real_latents(self) -> "AdvConfig":
        """These settings with every term that learns from real latents switched off: no regression, GAN or
        marginal term, and a temporal loss that needs a reference (``distribution``, ``anchored``) replaced by
        the published hinge at ``PUBLISHED_TEMPORAL_WEIGHT``. For teachers distilled from prompts alone."""
        temporal = ({"temporal": "hinge", "temporal_weight": PUBLISHED_TEMPORAL_WEIGHT}
                    if self.temporal in REFERENCE_TEMPORAL else {})
        return dataclasses.replace(self, adaptive_regression=False, gan_weight=0.0, marginal_weight=0.0, **temporal)

    def regression_weight(self, step: int) -> float:
        """L_reg's weight at training step ``step`` (0-based)."""
        if not self.adaptive_regression:
            return 0.0
        if not self.regression_fade_steps:
            return self.regression_scale
        return self.regression_scale * max(0.0, 1.0 - step / self.regression_fade_steps)

    @property
    def interpolated_simulation(self) -> InterpolatedSimulation | None:
        if not self.interp_switch:
            return None
        return InterpolatedSimulation(self.interp_switch, self.interp_probability, self.interp_interpolator)


# ---- temporal regularisers: (x_hat, reference latents or None, cfg) -> (loss, metrics)

def temporal_variance_loss(x_hat: torch.Tensor) -> torch.Tensor:
    return -torch.log(x_hat.float().var(dim=2).mean() + 1e-6)


def _hinge(x_hat, _reference, cfg: AdvConfig):
    loss = temporal_variance_loss(x_hat)
    active = float(loss.detach() >= cfg.temporal_hinge)
    return active * cfg.temporal_weight * loss, {"temporal": float(loss.detach()), "temporal_active": active}


def frame_difference_energy(x: torch.Tensor) -> torch.Tensor:
    """Per-channel mean squared frame difference, [C]."""
    return (x[:, :, 1:] - x[:, :, :-1]).float().pow(2).mean(dim=(0, 2, 3, 4))


def _anchored(x_hat, reference, cfg: AdvConfig):
    if reference is None:
        raise ValueError("the anchored temporal loss needs real latents (or teacher samples) as reference")
    loss = anchored_energy_loss(x_hat, reference)
    return cfg.temporal_weight * loss, {"temporal": float(loss.detach()), "temporal_active": 1.0}


def anchored_energy_loss(x_hat: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean over channels of ``(log E(x_hat) - log E(reference))^2``, ``E`` the per-channel frame-difference
    energy, over the channels that change between the reference's frames. A channel the reference holds
    constant (the toy codec's x, y and zero padding) has no energy to match: with ``log(0 + 1e-6)`` as its
    target it made 99.7% of this loss (measured on 8 of a GAN student's samples against 8 data clips: 14.72
    of 14.76), pushing channels that decoding ignores while Adam's normalisation shrank the other terms' steps."""
    target = frame_difference_energy(reference).detach()
    moving = target > 0
    if not bool(moving.any()):
        return x_hat.new_zeros((), dtype=torch.float32)
    energy = frame_difference_energy(x_hat)[moving.to(x_hat.device)]
    return (torch.log(energy + 1e-6) - torch.log(target[moving] + 1e-6).to(energy.device)).pow(2).mean()


def frame_difference_magnitudes(x: torch.Tensor) -> torch.Tensor:
    """``|x[:, :, t+1] - x[:, :, t]|`` per channel, every clip, pair and location: [C, B * (F-1) * H * W]."""
    return (x[:, :, 1:] - x[:, :, :-1]).abs().float().transpose(0, 1).flatten(1)


def frame_difference_w1(x_hat: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the 1-D Wasserstein-1 distance between the distributions of ``|frame
    difference|`` in ``x_hat`` and in ``reference`` (the same channels, any batch size). Every value gets a
    gradient: the bulk of small differences, a static background's shimmer, is pushed to the reference's
    (zero where the data's background stands still), the few large ones, motion, to the reference's motion."""
    if x_hat.shape[1] != reference.shape[1] or x_hat.shape[2] != reference.shape[2]:
        raise ValueError(f"student samples {tuple(x_hat.shape)} and reference {tuple(reference.shape)} need the "
                         f"same channels and frames")
    if x_hat.shape[2] < 2:
        return x_hat.new_zeros((), dtype=torch.float32)
    return losses.w1_to_reference(frame_difference_magnitudes(x_hat), frame_difference_magnitudes(reference.detach()))


def _distribution(x_hat, reference, cfg: AdvConfig):
    if reference is None:
        raise ValueError("the frame-difference distribution loss needs real latents as reference")
    loss = frame_difference_w1(x_hat, reference)
    return cfg.temporal_weight * loss, {"temporal": float(loss.detach()), "temporal_active": 1.0}


def _no_temporal(x_hat, _reference, _cfg):
    return x_hat.new_zeros(()), {}


TEMPORAL_LOSSES = {"hinge": _hinge, "anchored": _anchored, "distribution": _distribution, "none": _no_temporal}


# ---- adaptive regression weights: (loss map [B, F, H, W], ema, cfg) -> (weighted loss, batch mean)

def _weights_per_sample(loss_map, ema, cfg: AdvConfig):
    per_sample = loss_map.flatten(1).mean(1)
    weight = 1 - torch.sigmoid(cfg.regression_sharpness * (per_sample.detach() - ema))
    return (weight * per_sample).mean(), per_sample.detach().mean(), weight.mean()


def _weights_spatial(loss_map, ema, cfg: AdvConfig):
    window = cfg.spatial_window
    pooled = F.avg_pool3d(loss_map.detach().unsqueeze(1), kernel_size=(1, window, window), stride=1,
                          padding=(0, window // 2, window // 2), count_include_pad=False).squeeze(1)
    weight = 1 - torch.sigmoid(cfg.regression_sharpness * (pooled - ema))
    return (weight * loss_map).mean(), loss_map.detach().mean(), weight.mean()


def _weights_constant(loss_map, _ema, _cfg):
    return loss_map.mean(), loss_map.detach().mean(), loss_map.new_ones(())


# ---- regression targets: (backend, noisy, sigma, real, noise, batch, cfg) -> target velocity

def _target_data(_backend, _noisy, _sigma, real, noise, _batch, _cfg):
    return flow.velocity_target(real, noise)


@torch.no_grad()
def _target_teacher(backend, noisy, sigma, _real, _noise, batch: DistillBatch, cfg: AdvConfig):
    x0 = guided_x0(backend.view(TEACHER), noisy, sigma, batch.real_context, batch.negative, cfg.teacher_cfg)
    return flow.velocity_from_x0(noisy, x0, sigma)


def _target_mixed(backend, noisy, sigma, real, noise, batch, cfg):
    data = _target_data(backend, noisy, sigma, real, noise, batch, cfg)
    return 0.5 * (data + _target_teacher(backend, noisy, sigma, real, noise, batch, cfg))


REGRESSION_TARGETS = {"data": _target_data, "teacher": _target_teacher, "mixed": _target_mixed}


WEIGHTINGS = {"per_sample": _weights_per_sample, "spatial": _weights_spatial, "constant": _weights_constant}


class AdvMethod(DistillMethod):
    name = "adv"
    required_roles = ("teacher", "student", "critic")
    config_class = AdvConfig

    def __init__(self, ctx, cfg: AdvConfig):
        super().__init__(ctx, cfg)
        if cfg.adaptive_regression:
            first, until = self.regression_step_range
            if until > self.schedule.steps:
                raise ValueError(f"regression_until_step {cfg.regression_until_step} is past the student's "
                                 f"{self.schedule.steps} steps")
            if first >= until:
                raise ValueError(f"regression_from_step {cfg.regression_from_step} and regression_until_step "
                                 f"{cfg.regression_until_step} leave none of the student's "
                                 f"{self.schedule.steps} steps for the regression")
        self.interp = cfg.interpolated_simulation
        if self.interp is not None:
            self.interp.check(self.schedule)
        self.student_params = self.backend.trainable_parameters(STUDENT)
        self.critic_params = self.backend.trainable_parameters(CRITIC)
        self._optimizers = {
            "generator": torch.optim.AdamW(self.student_params, lr=cfg.generator_lr, betas=cfg.betas,
                                           weight_decay=cfg.weight_decay),
            "critic": torch.optim.AdamW(self.critic_params, lr=cfg.critic_lr, betas=cfg.betas,
                                        weight_decay=cfg.weight_decay),
        }
        self.discriminator = None
        if cfg.gan_weight > 0:
            self.discriminator = FeatureDiscriminator(self.backend, head_channels=cfg.gan_head_channels,
                                                      sigma_max=cfg.gan_sigma_max, r1_weight=cfg.gan_r1_weight)
            self.head_params = list(self.discriminator.head.parameters())
            self._optimizers["discriminator"] = torch.optim.AdamW(self.head_params, lr=cfg.discriminator_lr,
                                                                  betas=cfg.betas, weight_decay=cfg.weight_decay)
        # running average of the regression loss per student step index (-1: not seen yet)
        self.regression_ema = torch.full((self.schedule.steps,), -1.0)

    def optimizers(self):
        return self._optimizers

    def state_dict(self) -> dict:
        state = {"regression_ema": self.regression_ema.clone()}
        if self.discriminator is not None:
            state["head"] = {k: v.detach().cpu().clone() for k, v in self.discriminator.head.state_dict().items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        self.regression_ema = state["regression_ema"].clone()
        if self.discriminator is not None:
            if "head" not in state:
                raise ValueError("this resume state has no discriminator head: it was saved with gan_weight 0")
            self.discriminator.head.load_state_dict(state["head"])

    # -- losses
    def dmd_loss(self, x_hat: torch.Tensor, batch: DistillBatch) -> tuple[torch.Tensor, dict]:
        device = x_hat.device
        sigma = sample_sigma(x_hat.shape[0], batch.generator, device, self.cfg.dmd_shift,
                             self.cfg.dmd_sigma_min, self.cfg.dmd_sigma_max)
        noise = randn(x_hat.shape, batch.generator, device)
        return losses.dmd_loss(self.backend, x_hat, sigma, noise, batch.context, batch.negative, self.cfg.teacher_cfg)

    def critic_loss(self, x_hat: torch.Tensor, batch: DistillBatch) -> torch.Tensor:
        device = x_hat.device
        sigma = sample_sigma(x_hat.shape[0], batch.generator, device, self.cfg.dmd_shift,
                             self.cfg.dmd_sigma_min, self.cfg.dmd_sigma_max)
        noise = randn(x_hat.shape, batch.generator, device)
        noisy = flow.add_noise(x_hat.detach(), noise, sigma)
        pred_v = self.backend.predict_velocity(noisy, sigma, batch.context, CRITIC)
        return velocity_loss_per_sample(pred_v, x_hat.detach(), noise).mean()

    def onpolicy_loss(self, x_hat: torch.Tensor, x_in: torch.Tensor, sigma: torch.Tensor,
                      batch: DistillBatch) -> torch.Tensor:
        """Mean squared distance of the student's x0 to the CFG teacher's answer for the same input: its x0
        prediction (``onpolicy_teacher_steps`` 1) or its flow-ODE solution in that many Euler steps on a grid
        evenly spaced before the student schedule's shift warp."""
        teacher, count = self.backend.view(TEACHER), x_in.shape[0]

        def teacher_x0(x, s):
            s = torch.as_tensor(s, dtype=torch.float32, device=x.device).expand(count)
            return guided_x0(teacher, x, s, batch.context, batch.negative, self.cfg.teacher_cfg)

        with torch.no_grad():
            grid = flow.shifted_grid(float(sigma), self.cfg.onpolicy_teacher_steps, self.schedule.shift)
            target = flow.euler_to_clean(teacher_x0, x_in, grid)
        return (x_hat.float() - target.float()).pow(2).mean()

    def marginal_loss(self, x_hat: torch.Tensor, batch: DistillBatch) -> torch.Tensor:
        """``losses.sliced_latent_w1`` of the student's samples to the batch's real latents along
        ``marginal_slices`` directions drawn from the batch's generator."""
        real = batch.real_latents
        if real is None:
            raise ValueError("the marginal (sliced W1) term needs real latents: give --real-latents or use the toy domain")
        varying = int(losses.varying_channels(real).sum())
        directions = randn((self.cfg.marginal_slices, varying), batch.generator, x_hat.device)
        return losses.sliced_latent_w1(x_hat, real, directions)

    @property
    def regression_step_range(self) -> tuple[int, int]:
        """``[first, until)``: the student step indices the regression draws from."""
        return self.cfg.regression_from_step, self.cfg.regression_until_step or self.schedule.steps

    def regression_loss(self, batch: DistillBatch) -> tuple[torch.Tensor, dict]:
        real = batch.real_latents
        if real is None:
            raise ValueError("adaptive regression needs real latents: give --real-latents or use the toy domain")
        device = real.device
        first, until = self.regression_step_range
        k = first + int(torch.randint(until - first, (), generator=batch.generator))
        sigma = self.schedule.sigmas[k].to(device).expand(real.shape[0])
        noise = randn(real.shape, batch.generator, device)
        noisy = flow.add_noise(real, noise, sigma)
        target = REGRESSION_TARGETS[self.cfg.regression_target](self.backend, noisy, sigma, real, noise, batch, self.cfg)
        pred_v = self.backend.predict_velocity(noisy, sigma, batch.real_context, STUDENT)
        loss_map = (pred_v - target).pow(2).mean(1)  # [B, F, H, W]
        ema = self.regression_ema[k]
        current = float(loss_map.detach().mean())
        if ema < 0:  # first visit of this step index: start the average at the current loss
            ema = torch.tensor(current)
        weighted, observed, mean_weight = WEIGHTINGS[self.cfg.regression_weighting](loss_map, ema.to(device), self.cfg)
        self.regression_ema[k] = self.cfg.regression_ema * ema + (1 - self.cfg.regression_ema) * float(observed)
        return weighted, {"reg": float(observed), "reg_weight": float(mean_weight), "reg_step": k}

    # -- one iteration
    def train_step(self, batch: DistillBatch, step: int) -> dict[str, float]:
        if self.discriminator is not None and batch.real_latents is None:  # before any update of this step
            raise ValueError("ADV's GAN term needs real latents: give --real-latents or use the toy domain")
        metrics: dict[str, float] = {}
        update_generator = step % self.cfg.generator_every == 0
        if update_generator:
            x_in, exit_index = student_step_input(self.backend, batch, self.schedule, interp=self.interp)
            sigma = self.schedule.sigmas[exit_index].to(x_in.device)
            x_hat = self.backend.predict_x0(x_in, sigma, batch.context, STUDENT)
            loss, parts = self.dmd_loss(x_hat, batch)
            metrics.update(parts)
            if self.cfg.onpolicy_weight > 0:
                onpolicy = self.onpolicy_loss(x_hat, x_in, sigma, batch)
                loss = loss + self.cfg.onpolicy_weight * onpolicy
                metrics["onpolicy"] = float(onpolicy.detach())
            reg_weight = self.cfg.regression_weight(step)
            if reg_weight > 0:
                reg, parts = self.regression_loss(batch)
                loss = loss + reg_weight * reg
                metrics.update(parts)
            if self.cfg.marginal_weight > 0:
                marginal = self.marginal_loss(x_hat, batch)
                loss = loss + self.cfg.marginal_weight * marginal
                metrics["marginal"] = float(marginal.detach())
            temp, parts = TEMPORAL_LOSSES[self.cfg.temporal](x_hat, batch.real_latents, self.cfg)
            loss = loss + temp
            metrics.update(parts)
            if self.discriminator is not None:
                adversarial = self.discriminator.generator_loss(x_hat, batch)
                loss = loss + self.cfg.gan_weight * adversarial
                metrics["adv_g"] = float(adversarial.detach())
            metrics["generator_loss"] = float(loss.detach())
            metrics["generator_grad_norm"] = self._step("generator", loss, self.student_params, self.cfg.grad_clip)
            metrics["exit_index"] = exit_index
            x_hat = x_hat.detach()
        else:
            with torch.no_grad():
                x_hat, _ = backward_simulation(self.backend, batch, self.schedule, interp=self.interp)
        critic = self.critic_loss(x_hat, batch)
        metrics["critic_loss"] = float(critic.detach())
        metrics["critic_grad_norm"] = self._step("critic", critic, self.critic_params, self.cfg.grad_clip)
        if self.discriminator is not None:
            d_loss, parts = self.discriminator.discriminator_loss(batch.real_latents, x_hat, batch)
            metrics.update(parts)
            metrics["discriminator_grad_norm"] = self._step("discriminator", d_loss, self.head_params,
                                                            self.cfg.grad_clip)
        return metrics
