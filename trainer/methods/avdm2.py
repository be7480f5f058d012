"""AVDM2 (METHODS.md section 3): video adversarial distribution matching plus 2-D score
distribution matching, on one frozen Wan base with student and critic LoRAs.

- ADM, a diffusion-GAN: the discriminator is the frozen teacher's first half plus a trainable head.
  ``TeacherFeatures`` runs the teacher role (adapters off) with forward hooks on the patch
  embedding and on ``model.blocks[i]`` at three depths across the first half of the blocks
  (``default_feature_blocks``), reshapes each tap's tokens ``[B, N, D]`` back to the patch grid
  ``[B, D, F', H', W']`` and stops the forward after the deepest tap (a pre-hook on the next block
  raises; the second half never runs). ``DiscriminatorHead`` has one 3-D conv branch per tap on
  per-token normalised features, concatenates them and maps them to a logit per patch location
  (the loss averages over locations, PatchGAN-style). Real and student videos are both
  forward-diffused to ``sigma ~ U[0, gan_sigma_max]`` (0.5T) first. Non-saturating losses:
  D ``softplus(-D(real)) + softplus(D(fake))``, G ``softplus(-D(fake))``. For the discriminator
  update the teacher runs under ``no_grad`` (only the head learns); for the generator term it runs
  with autograd on, so the gradient reaches the student's sample through the frozen teacher.
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

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import flow
from ..backends.base import CRITIC, STUDENT, TEACHER
from .base import DistillBatch, DistillMethod, backward_simulation, rand, randn, velocity_loss_per_sample
from .losses import discriminator_loss, dmd_loss, generator_adversarial_loss


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
        if not 0 <= self.sdm_sigma_min < self.sdm_sigma_max <= 1:
            raise ValueError("need 0 <= sdm_sigma_min < sdm_sigma_max <= 1")
        if self.discriminator_context not in DISCRIMINATOR_CONTEXTS:
            raise ValueError(f"discriminator_context must be one of {sorted(DISCRIMINATOR_CONTEXTS)}, "
                             f"got {self.discriminator_context!r}")
        if any(b < 0 for b in self.feature_blocks):
            raise ValueError(f"feature_blocks must be non-negative block indices, got {self.feature_blocks}")


# conditioning the discriminator sees: "prompt" uses the batch's prompts where real latents are
# paired with them (the toy domain, or one real latent per prompt) and the negative where they are
# not; "negative" (the empty prompt) always
DISCRIMINATOR_CONTEXTS = {"prompt": lambda batch: batch.real_context, "negative": lambda batch: batch.negative}


def default_feature_blocks(num_blocks: int) -> tuple[int, ...]:
    """Three depths spread over the first half: the outputs of blocks ceil(h/3)-1, ceil(2h/3)-1 and
    h-1 with h = ceil(num_blocks / 2) (30 blocks: 4, 9, 14; 40 blocks: 6, 13, 19); fewer when the
    model is too shallow to have three distinct ones."""
    half = math.ceil(num_blocks / 2)
    return tuple(sorted({max(0, math.ceil(half * j / 3) - 1) for j in (1, 2, 3)}))


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """``[B, N, D]`` tokens -> ``[B, D, F', H', W']``, the inverse of the Wan patch embedding's
    ``flatten(2).transpose(1, 2)`` (tokens in (F', H', W') raster order)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


class _StopForward(Exception):
    """Raised by a pre-hook once every tapped feature is captured: the rest of the model is skipped."""


class TeacherFeatures:
    """Hidden states of the frozen teacher at the patch embedding and after chosen blocks, as grids."""

    def __init__(self, model: nn.Module, blocks: tuple[int, ...], tap_patch_embedding: bool = True):
        num_blocks = len(model.blocks)
        bad = [b for b in blocks if b >= num_blocks]
        if bad:
            raise ValueError(f"feature blocks {bad} do not exist; the model has {num_blocks} blocks")
        if not blocks and not tap_patch_embedding:
            raise ValueError("the discriminator needs at least one feature tap")
        self.model, self.blocks = model, tuple(sorted(set(blocks)))
        self.taps: list[tuple[str, nn.Module]] = ([("patch_embedding", model.patch_embedding)]
                                                  if tap_patch_embedding else [])
        self.taps += [(f"blocks.{b}", model.blocks[b]) for b in self.blocks]
        deepest = self.blocks[-1] if self.blocks else -1
        self.stop_at = model.blocks[deepest + 1] if deepest + 1 < num_blocks else None
        self.dim = model.patch_embedding.out_channels
        self.patch_size = tuple(model.config.patch_size)

    def __len__(self) -> int:
        return len(self.taps)

    def __call__(self, backend, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> list[torch.Tensor]:
        """``[B, D, F', H', W']`` per tap, shallow to deep; differentiable w.r.t. ``x`` unless run
        under ``no_grad``."""
        captured: dict[str, torch.Tensor] = {}

        def capture(name):
            def hook(_module, _args, output):
                captured[name] = output
            return hook

        def stop(_module, _args):
            raise _StopForward

        handles = [module.register_forward_hook(capture(name)) for name, module in self.taps]
        if self.stop_at is not None:
            handles.append(self.stop_at.register_forward_pre_hook(stop))
        try:
            backend.predict_velocity(x, sigma, context, TEACHER)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        grid = tuple(size // patch for size, patch in zip(x.shape[2:], self.patch_size))
        # the patch embedding (a Conv3d) already gives a grid; block outputs are tokens
        return [(tokens_to_grid(captured[name], grid) if captured[name].ndim == 3 else captured[name]).float()
                for name, _module in self.taps]


class DiscriminatorHead(nn.Module):
    """One 3-D conv branch per feature tap, concatenated, a final conv to one logit per location."""

    def __init__(self, dim: int, num_taps: int, channels: int = 64):
        super().__init__()
        groups = math.gcd(8, channels)

        def branch():
            return nn.Sequential(nn.Conv3d(dim, channels, 3, padding=1), nn.GroupNorm(groups, channels), nn.SiLU(),
                                 nn.Conv3d(channels, channels, 3, padding=1), nn.SiLU())

        self.branches = nn.ModuleList(branch() for _ in range(num_taps))
        self.out = nn.Sequential(nn.Conv3d(channels * num_taps, channels, 1), nn.SiLU(), nn.Conv3d(channels, 1, 1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.branches):
            raise ValueError(f"the head has {len(self.branches)} branches, got {len(features)} feature maps")
        # per-token normalisation: DiT hidden states have a few channels of very large magnitude
        normed = [F.layer_norm(f.movedim(1, -1), f.shape[1:2]).movedim(-1, 1) for f in features]
        return self.out(torch.cat([b(f) for b, f in zip(self.branches, normed)], dim=1))


class Avdm2Method(DistillMethod):
    name = "avdm2"
    required_roles = ("teacher", "student", "critic")
    config_class = Avdm2Config

    def __init__(self, ctx, cfg: Avdm2Config):
        super().__init__(ctx, cfg)
        model = self.backend.model
        blocks = cfg.feature_blocks or default_feature_blocks(len(model.blocks))
        self.features = TeacherFeatures(model, blocks, cfg.tap_patch_embedding)
        self.head = DiscriminatorHead(self.features.dim, len(self.features), cfg.head_channels).to(self.backend.device)
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
    def gan_features(self, x: torch.Tensor, context: torch.Tensor, batch: DistillBatch) -> list[torch.Tensor]:
        """Teacher features of clean videos ``x`` forward-diffused to ``sigma ~ U[0, gan_sigma_max]``."""
        sigma = self.gan_sigma(x.shape[0], batch, x.device)
        noisy = flow.add_noise(x, randn(x.shape, batch.generator, x.device), sigma)
        return self.features(self.backend, noisy, sigma, context)

    def gan_sigma(self, count: int, batch: DistillBatch, device) -> torch.Tensor:
        return rand((count,), batch.generator, device) * self.cfg.gan_sigma_max

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
        context = DISCRIMINATOR_CONTEXTS[self.cfg.discriminator_context](batch)
        if context.shape[0] != real.shape[0] or context.shape[0] != fake.shape[0]:
            raise ValueError(f"real latents ({real.shape[0]}), student samples ({fake.shape[0]}) and "
                             f"conditioning ({context.shape[0]}) must have the same batch size")
        with torch.no_grad():  # only the head learns here: no graph through the teacher
            real_features = self.gan_features(real, context, batch)
            fake_features = self.gan_features(fake, context, batch)
        real_logits, fake_logits = self.head(real_features), self.head(fake_features)
        loss = discriminator_loss(real_logits, fake_logits)
        return loss, {"adv_d": float(loss.detach()), "adv_d_real": float(real_logits.detach().mean()),
                      "adv_d_fake": float(fake_logits.detach().mean())}

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
            context = DISCRIMINATOR_CONTEXTS[self.cfg.discriminator_context](batch)
            self.head.requires_grad_(False)  # the generator step must not leave gradients on the head
            try:  # autograd on through the frozen teacher: the gradient reaches x_hat
                logits = self.head(self.gan_features(x_hat, context, batch))
            finally:
                self.head.requires_grad_(True)
            adversarial = generator_adversarial_loss(logits)
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
