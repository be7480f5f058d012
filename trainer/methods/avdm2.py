"""AVDM2 (METHODS.md section 3): video adversarial distribution matching plus 2-D score
distribution matching, on one frozen Wan base with student and critic LoRAs.

- ADM, a diffusion-GAN (``gan.FeatureDiscriminator``): the discriminator is the frozen teacher's first
  half, tapped at the patch embedding and three depths, plus a trainable PatchGAN-style head. Real
  and student videos are both forward-diffused to ``sigma ~ U[0, gan_sigma_max]`` (0.5T) first.
  Non-saturating losses; the discriminator update runs the teacher under ``no_grad`` (only the head
  learns), the generator term with autograd on, so the gradient reaches the student's sample
  through the frozen teacher.
- SDM: ``sdm_frames`` random frames of each student video become 1-frame videos
  ``[B*K, C, 1, H, W]``, re-noised at ``sigma ~ U[sdm_sigma_min, sdm_sigma_max]`` (0.2T-0.98T); the
  DMD gradient uses the video teacher (with CFG) as the 2-D teacher and the critic LoRA as the 2-D
  fake score (``losses.dmd_loss``, the same normalised form ADV uses). The critic learns the flow
  loss on those 1-frame student samples.
- Student inputs by backward simulation; two-timescale updates: the discriminator head and the
  critic take ``critic_updates`` steps (each on a fresh student sample drawn without gradients)
  per generator step. Learning rates warm up linearly over ``warmup_steps``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import flow
from ..backends.base import CRITIC, STUDENT
from .base import DistillBatch, DistillMethod, backward_simulation, rand, randn, velocity_loss_per_sample
from .gan import (DISCRIMINATOR_CONTEXTS, FeatureDiscriminator, TeacherFeatures,  # noqa: F401 (re-exported)
                  default_feature_blocks, tokens_to_grid)
from .losses import dmd_loss


@dataclass
class Avdm2Config:
    generator_lr: float = 2e-5
    discriminator_lr: float = 2e-5
    critic_lr: float = 2e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    warmup_steps: int = 500
    grad_clip: float = 10.0
    critic_updates: int = 2  # discriminator and critic steps per generator step
    gan_weight: float = 1.0
    gan_sigma_max: float = 0.5  # real and student videos are noised to sigma ~ U[0, gan_sigma_max]
    discriminator_context: str = "prompt"  # a key of DISCRIMINATOR_CONTEXTS
    feature_blocks: tuple[int, ...] = ()  # teacher blocks tapped; () = three depths in the first half
    tap_patch_embedding: bool = True
    head_channels: int = 64
    r1_weight: float = 0.0  # R1 penalty on the head's real features (gan.r1_penalty); 0: off, as published
    sdm_weight: float = 1.0
    sdm_frames: int = 2  # K frames per video for the 2-D score distribution matching
    sdm_sigma_min: float = 0.2
    sdm_sigma_max: float = 0.98
    teacher_cfg: float = 6.0  # ComfyUI convention uncond + s (cond - uncond)

    def __post_init__(self):
        if self.critic_updates < 1 or self.sdm_frames < 1 or self.head_channels < 1 or self.warmup_steps < 0:
            raise ValueError("critic_updates, sdm_frames and head_channels must be >= 1, warmup_steps >= 0")
        if not 0 < self.gan_sigma_max <= 1:
            raise ValueError(f"gan_sigma_max must be in (0, 1], got {self.gan_sigma_max}")
        if not self.r1_weight >= 0:
            raise ValueError(f"r1_weight must be >= 0 (0: off), got {self.r1_weight}")
        if not 0 <= self.sdm_sigma_min < self.sdm_sigma_max <= 1:
            raise ValueError("need 0 <= sdm_sigma_min < sdm_sigma_max <= 1")
        if self.discriminator_context not in DISCRIMINATOR_CONTEXTS:
            raise ValueError(f"discriminator_context must be one of {sorted(DISCRIMINATOR_CONTEXTS)}, "
                             f"got {self.discriminator_context!r}")
        if any(b < 0 for b in self.feature_blocks):
            raise ValueError(f"feature_blocks must be non-negative block indices, got {self.feature_blocks}")


class Avdm2Method(DistillMethod):
    name = "avdm2"
    required_roles = ("teacher", "student", "critic")
    config_class = Avdm2Config

    def __init__(self, ctx, cfg: Avdm2Config):
        super().__init__(ctx, cfg)
        self.discriminator = FeatureDiscriminator(self.backend, cfg.feature_blocks, cfg.tap_patch_embedding,
                                                  cfg.head_channels, cfg.gan_sigma_max, cfg.discriminator_context,
                                                  r1_weight=cfg.r1_weight)
        self.features, self.head = self.discriminator.features, self.discriminator.head
        self.student_params = self.backend.trainable_parameters(STUDENT)
        self.critic_params = self.backend.trainable_parameters(CRITIC)
        self.head_params = list(self.head.parameters())
        self.base_lrs = {"generator": cfg.generator_lr, "discriminator": cfg.discriminator_lr, "critic": cfg.critic_lr}
        groups = {"generator": self.student_params, "discriminator": self.head_params, "critic": self.critic_params}
        self._optimizers = {name: torch.optim.AdamW(params, lr=self.base_lrs[name], betas=cfg.betas,
                                                    weight_decay=cfg.weight_decay)
                            for name, params in groups.items()}

    def optimizers(self):
        return self._optimizers

    def state_dict(self) -> dict:
        return {"head": {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])

    # -- pieces
    def sdm_sigma(self, count: int, batch: DistillBatch, device) -> torch.Tensor:
        low, high = self.cfg.sdm_sigma_min, self.cfg.sdm_sigma_max
        return low + (high - low) * rand((count,), batch.generator, device)

    def frames_as_videos(self, x: torch.Tensor, batch: DistillBatch):
        """K random distinct frames per video as 1-frame videos ``[B*K, C, 1, H, W]``, with the
        matching (repeated) conditioning."""
        b, c, f, h, w = x.shape
        k = min(self.cfg.sdm_frames, f)
        picks = rand((b, f), batch.generator, x.device).argsort(dim=1)[:, :k]  # [B, K]
        frames = x.transpose(1, 2)[torch.arange(b, device=x.device).unsqueeze(1), picks]  # [B, K, C, H, W]
        frames = frames.reshape(b * k, c, 1, h, w)
        negative = None if batch.negative is None else batch.negative.repeat_interleave(k, dim=0)
        return frames, batch.context.repeat_interleave(k, dim=0), negative

    def real_latents(self, batch: DistillBatch) -> torch.Tensor:
        real = batch.real_latents
        if real is None:
            raise ValueError("AVDM2's discriminator needs real video latents (batch.real_latents): give "
                             "--real-latents with --embeddings, or train on the toy domain")
        return real

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, batch: DistillBatch):
        return self.discriminator.discriminator_loss(real, fake, batch)

    def critic_loss(self, fake: torch.Tensor, batch: DistillBatch) -> torch.Tensor:
        frames, context, _ = self.frames_as_videos(fake.detach(), batch)
        sigma = self.sdm_sigma(frames.shape[0], batch, frames.device)
        noise = randn(frames.shape, batch.generator, frames.device)
        pred_v = self.backend.predict_velocity(flow.add_noise(frames, noise, sigma), sigma, context, CRITIC)
        return velocity_loss_per_sample(pred_v, frames, noise).mean()

    def generator_loss(self, x_hat: torch.Tensor, batch: DistillBatch) -> tuple[torch.Tensor, dict]:
        metrics: dict[str, float] = {}
        loss = x_hat.new_zeros(())
        if self.cfg.gan_weight > 0:
            adversarial = self.discriminator.generator_loss(x_hat, batch)
            loss = loss + self.cfg.gan_weight * adversarial
            metrics["adv_g"] = float(adversarial.detach())
        if self.cfg.sdm_weight > 0:
            frames, context, negative = self.frames_as_videos(x_hat, batch)
            sigma = self.sdm_sigma(frames.shape[0], batch, frames.device)
            sdm, parts = dmd_loss(self.backend, frames, sigma, randn(frames.shape, batch.generator, frames.device),
                                  context, negative, self.cfg.teacher_cfg)
            loss = loss + self.cfg.sdm_weight * sdm
            metrics.update(sdm=parts["dmd"], sdm_grad_norm=parts["dmd_grad_norm"])
        return loss, metrics

    def warm_up(self, step: int) -> float:
        factor = min(1.0, (step + 1) / self.cfg.warmup_steps) if self.cfg.warmup_steps else 1.0
        for name, opt in self._optimizers.items():
            for group in opt.param_groups:
                group["lr"] = self.base_lrs[name] * factor
        return factor

    # -- one iteration
    def train_step(self, batch: DistillBatch, step: int) -> dict[str, float]:
        real = self.real_latents(batch)
        metrics: dict[str, float] = {"lr_factor": self.warm_up(step)}
        sums: dict[str, float] = {}
        for _ in range(self.cfg.critic_updates):
            with torch.no_grad():
                fake, _ = backward_simulation(self.backend, batch, self.schedule)
            d_loss, parts = self.discriminator_loss(real, fake, batch)
            parts["discriminator_grad_norm"] = self._step("discriminator", d_loss, self.head_params, self.cfg.grad_clip)
            critic = self.critic_loss(fake, batch)
            parts["critic_loss"] = float(critic.detach())
            parts["critic_grad_norm"] = self._step("critic", critic, self.critic_params, self.cfg.grad_clip)
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value / self.cfg.critic_updates
        metrics.update(sums)

        x_hat, exit_index = backward_simulation(self.backend, batch, self.schedule)
        loss, parts = self.generator_loss(x_hat, batch)
        metrics.update(parts)
        metrics["generator_loss"] = float(loss.detach())
        metrics["generator_grad_norm"] = self._step("generator", loss, self.student_params, self.cfg.grad_clip)
        metrics["exit_index"] = float(exit_index)
        return metrics
