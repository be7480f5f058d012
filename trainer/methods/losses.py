"""Loss pieces more than one distillation method uses, as plain functions of tensors (and a backend).

- ``dmd_loss``: the distribution-matching gradient of DMD/DMD2 in the normalised form of
  METHODS.md 1a, ``grad = (x_fake - x_real) / mean|x_hat - x_real|``,
  ``L = 0.5 ||x_hat - sg(x_hat - grad)||^2``. The caller chooses the noise level and the noise,
  so video DMD (ADV) and per-frame score distribution matching (AVDM2's SDM) share it.
- ``spectral_loss`` / ``temporal_spectral_loss``: the latent frequency constraint of GPD
  (METHODS.md 2, exact form unpublished): an orthonormal FFT over (F, H, W) per channel weighted
  by a radial high-pass ``(|omega| / omega_max)^gamma``, optionally times detached focal weights
  ``|dF|^alpha`` (Focal Frequency Loss), and the same over the frame axis alone.
- ``discriminator_loss`` / ``generator_adversarial_loss``: the non-saturating GAN pair.
- ``w1_to_reference`` / ``sliced_latent_w1``: 1-D Wasserstein-1 distances of sample values to a
  reference's (per row), and over random projections of per-location latent vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import flow
from ..backends.base import CRITIC, TEACHER, guided_x0


# ---- distribution matching

def dmd_loss(backend, x_hat: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, context: torch.Tensor,
             negative: torch.Tensor | None, teacher_cfg: float, fake_role: str = CRITIC) -> tuple[torch.Tensor, dict]:
    """DMD loss of the student samples ``x_hat`` re-noised at per-sample ``sigma`` with ``noise``.

    The teacher ("real score", with CFG in ComfyUI's convention) and ``fake_role`` ("fake score")
    run without gradients; only ``x_hat`` carries a graph. Returns the loss and float metrics.
    """
    noisy = flow.add_noise(x_hat.detach(), noise, sigma)
    with torch.no_grad():
        x_real = guided_x0(backend.view(TEACHER), noisy, sigma, context, negative, teacher_cfg)
        x_fake = backend.predict_x0(noisy, sigma, context, fake_role)
        scale = (x_hat.detach() - x_real).abs().flatten(1).mean(1).clamp_min(1e-6)
        grad = (x_fake - x_real) / scale.view(-1, *([1] * (x_hat.ndim - 1)))
    loss = 0.5 * F.mse_loss(x_hat.float(), (x_hat - grad).detach().float(), reduction="mean")
    return loss, {"dmd": float(loss.detach()), "dmd_grad_norm": float(grad.flatten(1).norm(dim=1).mean())}


# ---- 1-D optimal transport to a reference distribution

def w1_to_reference(values: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the 1-D Wasserstein-1 distance between ``values`` [K, n] (with a graph) and
    ``reference`` [K, m] (any m, no graph): each row's sorted values against the reference row's quantile
    function at the levels ``(i + 0.5) / n`` (linearly interpolated where m != n). Every value gets a
    gradient, towards the reference value of its rank."""
    if values.ndim != 2 or reference.ndim != 2 or values.shape[0] != reference.shape[0]:
        raise ValueError(f"values {tuple(values.shape)} and reference {tuple(reference.shape)} must be [K, n] "
                         f"and [K, m] with the same K")
    ordered, _ = values.float().sort(dim=1)
    with torch.no_grad():
        target = reference.float().to(ordered.device)
        n = ordered.shape[1]
        if target.shape[1] != n:
            levels = (torch.arange(n, device=target.device, dtype=torch.float32) + 0.5) / n
            target = torch.quantile(target, levels, dim=1).T
        else:
            target = target.sort(dim=1).values
    return (ordered - target).abs().mean()


def _per_location(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, ...]`` -> ``[B * ..., C]``: one row per location, in float."""
    return x.float().movedim(1, -1).reshape(-1, x.shape[1])


def varying_channels(reference: torch.Tensor) -> torch.Tensor:
    """Boolean ``[C]``: the channels of ``reference`` [B, C, ...] whose values are not all the same."""
    return _per_location(reference).std(0) > 0


def sliced_latent_w1(x: torch.Tensor, reference: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """W1 between the distributions of per-location latent vectors of ``x`` [B, C, ...] and of ``reference``
    [B', C, ...], along ``directions`` [K, C'] (sliced Wasserstein). Channels are first standardised by the
    reference's per-channel mean and standard deviation; channels the reference holds constant (C - C' of
    them) are left out. Sees what per-channel marginals do not, e.g. colours drawn towards grey: every
    channel keeps its spread while the channels' joint (a pixel's chroma) narrows."""
    if x.shape[1] != reference.shape[1]:
        raise ValueError(f"samples have {x.shape[1]} channels, the reference {reference.shape[1]}")
    with torch.no_grad():
        ref = _per_location(reference)
        mean, std = ref.mean(0), ref.std(0)
        kept = std > 0  # varying_channels(reference), from the std already at hand
        if directions.shape[1] != int(kept.sum()):
            raise ValueError(f"{directions.shape[1]}-d directions for {int(kept.sum())} varying channels")
        directions = directions.float() / directions.float().norm(dim=1, keepdim=True).clamp_min(1e-12)
        ref_proj = ((ref[:, kept] - mean[kept]) / std[kept]) @ directions.T
    flat = _per_location(x)
    kept, mean, std, directions = (t.to(flat.device) for t in (kept, mean, std, directions))
    proj = ((flat[:, kept] - mean[kept]) / std[kept]) @ directions.T
    return w1_to_reference(proj.T, ref_proj.T)


# ---- frequency-domain constraint

def radial_frequency_weight(sizes: tuple[int, ...], gamma: float, device=None) -> torch.Tensor:
    """``(|omega| / omega_max)^gamma`` on the FFT grid of ``sizes`` (frequencies in cycles per latent
    voxel, torch.fft order): 0 at DC for gamma > 0, all ones for gamma = 0. A 1-voxel grid is all
    DC, so it gets weight 0 (gamma > 0) or 1 (gamma = 0)."""
    axes = torch.meshgrid(*[torch.fft.fftfreq(n, device=device) for n in sizes], indexing="ij")
    radius = torch.sqrt(sum(axis.pow(2) for axis in axes))
    return (radius / radius.max().clamp_min(1e-12)).pow(gamma)


def _weighted_spectral_error(difference: torch.Tensor, weight: torch.Tensor, focal_alpha: float,
                             dims: tuple[int, ...]) -> torch.Tensor:
    """mean |weight * focal * difference|^2 over everything; focal weights are detached and
    normalised to a maximum of 1 per sample and channel, as in Focal Frequency Loss."""
    magnitude = difference.abs()
    if focal_alpha > 0:
        focal = magnitude.detach().pow(focal_alpha)
        peak = focal.amax(dim=dims, keepdim=True).clamp_min(1e-12)
        magnitude = magnitude * (focal / peak)
    return (weight * magnitude).pow(2).mean()


def spectral_loss(pred_x0: torch.Tensor, target_x0: torch.Tensor, gamma: float = 1.0,
                  focal_alpha: float = 0.0) -> torch.Tensor:
    """``mean |W (F(pred) - F(target))|^2`` with F the orthonormal FFT over (F, H, W) per channel of
    ``[B, C, F, H, W]`` latents and W the radial high-pass weight. With gamma = 0 and no focal
    weights it equals the plain MSE (Parseval)."""
    dims = (-3, -2, -1)
    difference = torch.fft.fftn(pred_x0.float() - target_x0.float(), dim=dims, norm="ortho")
    weight = radial_frequency_weight(tuple(pred_x0.shape[-3:]), gamma, pred_x0.device)
    return _weighted_spectral_error(difference, weight, focal_alpha, dims)


def temporal_spectral_loss(pred_x0: torch.Tensor, target_x0: torch.Tensor, gamma: float = 1.0,
                           focal_alpha: float = 0.0) -> torch.Tensor:
    """The same over the frame axis alone (per channel and location). With gamma > 0 the
    frame-constant (DC) part carries no weight: the term sees only how the content changes over
    time, so it reacts to motion and frame order, not to a static offset."""
    dims = (2,)
    difference = torch.fft.fft(pred_x0.float() - target_x0.float(), dim=2, norm="ortho")
    weight = radial_frequency_weight((pred_x0.shape[2],), gamma, pred_x0.device).view(1, 1, -1, 1, 1)
    return _weighted_spectral_error(difference, weight, focal_alpha, dims)


# ---- adversarial

def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN discriminator loss ``softplus(-D(real)) + softplus(D(fake))`` (means over
    samples and logit locations)."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``softplus(-D(fake)) = -log sigmoid(D(fake))``."""
    return F.softplus(-fake_logits.float()).mean()
