"""A diffusion-GAN discriminator on the frozen teacher's features, shared by AVDM2 (its ADM term) and
ADV's optional adversarial term.

``TeacherFeatures`` runs the teacher role (adapters off) with forward hooks on the patch embedding
and on ``model.blocks[i]`` at chosen depths (by default three across the first half,
``default_feature_blocks``), reshapes each tap's tokens ``[B, N, D]`` back to the patch grid
``[B, D, F', H', W']`` and stops the forward after the deepest tap (a pre-hook on the next block
raises; the rest of the model never runs). ``DiscriminatorHead`` has one 3-D conv branch per tap on
per-token normalised features, concatenates them and maps them to a logit per patch location (the
loss averages over locations, PatchGAN-style). ``FeatureDiscriminator`` forward-diffuses real and
student videos to ``sigma ~ U[0, sigma_max]`` and scores them with non-saturating losses:
D ``softplus(-D(real)) + softplus(D(fake))``, G ``softplus(-D(fake))``. With ``r1_weight`` > 0 the
discriminator's loss adds an R1 penalty ``r1_weight / 2 * |grad_f D(f)|^2`` on the real clips' features
``f``, the head's input (ADD, arXiv 2311.17042, penalises its discriminator heads on their feature inputs
the same way), ``D(f)`` being the head's mean logit per clip: it keeps the head from growing so sharp
around the data that the generator's term turns into large, uninformative gradients. For the discriminator update
the teacher runs under ``no_grad`` (only the head learns); for the generator term it runs with
autograd on, so the gradient reaches the student's sample through the frozen teacher.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import flow
from ..backends.base import TEACHER
from .base import DistillBatch, rand, randn
from .losses import discriminator_loss, generator_adversarial_loss

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


def patch_size(model: nn.Module) -> tuple[int, ...]:
    """The Wan patch size ``(t, h, w)``: diffusers keeps it in ``config``, ComfyUI's ``WanModel`` as an attribute."""
    size = getattr(getattr(model, "config", None), "patch_size", None)
    if size is None:
        size = getattr(model, "patch_size", None)
    if size is None:
        raise ValueError(f"{type(model).__name__} has no patch size: the discriminator's feature taps need a Wan-style "
                         f"patch-embedded transformer")
    return tuple(size)


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
        self.patch_size = patch_size(model)

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


def r1_penalty(logits: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
    """``|grad_f D(f)|^2`` per clip, averaged over the batch: ``D`` is the mean of each clip's logits
    ``[B, 1, ...]`` and ``f`` every feature map ``[B, ...]`` it was computed from (which must require
    grad). The graph is kept, so the penalty trains the head."""
    score = logits.flatten(1).float().mean(1).sum()  # clips are independent: one backward gives every clip's gradient
    grads = torch.autograd.grad(score, features, create_graph=True)
    return sum(g.float().pow(2).flatten(1).sum(1) for g in grads).mean()


class FeatureDiscriminator:
    """Teacher features plus a trainable head: the discriminator's and the generator's GAN losses."""

    def __init__(self, backend, feature_blocks: tuple[int, ...] = (), tap_patch_embedding: bool = True,
                 head_channels: int = 64, sigma_max: float = 0.5, context: str = "prompt", r1_weight: float = 0.0):
        if not 0 < sigma_max <= 1:
            raise ValueError(f"the discriminator's sigma_max must be in (0, 1], got {sigma_max}")
        if not r1_weight >= 0:
            raise ValueError(f"the discriminator's r1_weight must be >= 0 (0: no penalty), got {r1_weight}")
        if context not in DISCRIMINATOR_CONTEXTS:
            raise ValueError(f"discriminator context must be one of {sorted(DISCRIMINATOR_CONTEXTS)}, got {context!r}")
        model = backend.network
        blocks = feature_blocks or default_feature_blocks(len(model.blocks))
        self.backend, self.sigma_max, self.context_key, self.r1_weight = backend, sigma_max, context, r1_weight
        self.features = TeacherFeatures(model, blocks, tap_patch_embedding)
        self.head = DiscriminatorHead(self.features.dim, len(self.features), head_channels).to(backend.device)

    def context(self, batch: DistillBatch) -> torch.Tensor:
        return DISCRIMINATOR_CONTEXTS[self.context_key](batch)

    def noised_features(self, x: torch.Tensor, context: torch.Tensor, batch: DistillBatch) -> list[torch.Tensor]:
        """Teacher features of clean videos ``x`` forward-diffused to ``sigma ~ U[0, sigma_max]``."""
        sigma = rand((x.shape[0],), batch.generator, x.device) * self.sigma_max
        noisy = flow.add_noise(x, randn(x.shape, batch.generator, x.device), sigma)
        return self.features(self.backend, noisy, sigma, context)

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, batch: DistillBatch):
        """The head's loss on real latents against (detached) student samples; the teacher runs without a graph."""
        context = self.context(batch)
        if context.shape[0] != real.shape[0] or context.shape[0] != fake.shape[0]:
            raise ValueError(f"real latents ({real.shape[0]}), student samples ({fake.shape[0]}) and "
                             f"conditioning ({context.shape[0]}) must have the same batch size")
        with torch.no_grad():  # only the head learns here: no graph through the teacher
            real_features = self.noised_features(real, context, batch)
            fake_features = self.noised_features(fake.detach(), context, batch)
        if self.r1_weight > 0:
            real_features = [f.requires_grad_(True) for f in real_features]
        real_logits, fake_logits = self.head(real_features), self.head(fake_features)
        loss = discriminator_loss(real_logits, fake_logits)
        metrics = {"adv_d": float(loss.detach()), "adv_d_real": float(real_logits.detach().mean()),
                   "adv_d_fake": float(fake_logits.detach().mean())}
        if self.r1_weight > 0:
            penalty = r1_penalty(real_logits, real_features)
            loss = loss + 0.5 * self.r1_weight * penalty
            metrics["adv_r1"] = float(penalty.detach())
        return loss, metrics

    def generator_loss(self, x_hat: torch.Tensor, batch: DistillBatch) -> torch.Tensor:
        """``softplus(-D(x_hat))``; its gradient reaches ``x_hat`` through the frozen teacher and leaves
        the head without gradients."""
        self.head.requires_grad_(False)
        try:
            logits = self.head(self.noised_features(x_hat, self.context(batch), batch))
        finally:
            self.head.requires_grad_(True)
        return generator_adversarial_loss(logits)
