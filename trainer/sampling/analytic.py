"""Closed-form diffusion on Gaussian data: the independent reference the sampling tests check against.

Data ``x0 ~ N(mu, s^2)`` element-wise, with a different ``mu`` and ``s`` for every element of a
small ``[B, C, F, H, W]`` float64 tensor. For a noising ``x = a(sigma) x0 + sigma * eps`` the
marginal of each element is ``N(a mu, a^2 s^2 + sigma^2)``, so the exact denoiser ``E[x0 | x]`` is
linear in ``x`` and the probability-flow ODE maps the standardised value
``z = (x - a mu) / sqrt(a^2 s^2 + sigma^2)`` unchanged from one noise level to another. Two
parameterisations are covered: flow (``a = 1 - sigma``, Wan/ComfyUI CONST) and EPS (``a = 1``,
variance exploding, ComfyUI EPS). Nothing here imports the project: it is written from the
formulas alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SHAPE = (1, 2, 5, 3, 3)


@dataclass
class GaussianData:
    mean: torch.Tensor
    std: torch.Tensor


def make_gaussian_data(shape=SHAPE, seed: int = 0, temporal: bool = False) -> GaussianData:
    """Per-element means and standard deviations; ``temporal`` makes the mean a smooth per-frame drift."""
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(shape, generator=generator, dtype=torch.float64)
    std = 0.3 + torch.rand(shape, generator=generator, dtype=torch.float64)
    if temporal:
        frames = torch.arange(shape[2], dtype=torch.float64).reshape(1, 1, -1, 1, 1)
        mean = 0.3 * mean + 1.5 * torch.sin(0.7 * frames + mean)
    return GaussianData(mean, std)


def _view(sigma, like: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=like.dtype)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(-1, *([1] * (like.ndim - 1)))


# --- flow: x = (1 - sigma) x0 + sigma eps -----------------------------------------------------

def flow_noise_scaling(sigma, noise, latent):
    sigma = _view(sigma, noise)
    return sigma * noise + (1 - sigma) * latent


def flow_denoiser(data: GaussianData):
    """``model(x, sigma)`` returning the exact ``E[x0 | x]``; counts its calls in ``.calls``."""

    def model(x, sigma, **extra_args):
        model.calls += 1
        sigma = _view(sigma, x)
        signal = 1 - sigma
        gain = signal * data.std**2 / (signal**2 * data.std**2 + sigma**2)
        return data.mean + gain * (x - signal * data.mean)

    model.calls = 0
    return model


def flow_transport(data: GaussianData, x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
    """Exact probability-flow map of ``x`` from ``sigma_from`` to ``sigma_to`` (0 gives the clean sample)."""
    a_from, a_to = 1 - sigma_from, 1 - sigma_to
    z = (x - a_from * data.mean) / torch.sqrt(a_from**2 * data.std**2 + sigma_from**2)
    return a_to * data.mean + torch.sqrt(a_to**2 * data.std**2 + sigma_to**2) * z


def flow_initial_noise(shape=SHAPE, seed: int = 1) -> torch.Tensor:
    """Pure noise, which is the flow latent at sigma 1."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- eps (variance exploding): x = x0 + sigma eps -----------------------------------------------

def eps_noise_scaling(sigma, noise, latent):
    return _view(sigma, noise) * noise + latent


def eps_denoiser(data: GaussianData):
    def model(x, sigma, **extra_args):
        model.calls += 1
        sigma = _view(sigma, x)
        return data.mean + data.std**2 / (data.std**2 + sigma**2) * (x - data.mean)

    model.calls = 0
    return model


def eps_transport(data: GaussianData, x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
    z = (x - data.mean) / torch.sqrt(data.std**2 + sigma_from**2)
    return data.mean + torch.sqrt(data.std**2 + sigma_to**2) * z


def eps_initial_latent(data: GaussianData, sigma_max: float, shape=SHAPE, seed: int = 1) -> torch.Tensor:
    """A sample of the exact marginal at ``sigma_max``: ``mu + sqrt(s^2 + sigma^2) z``."""
    z = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return data.mean + torch.sqrt(data.std**2 + sigma_max**2) * z


def rms(x: torch.Tensor) -> float:
    return math.sqrt(float(x.pow(2).mean()))
