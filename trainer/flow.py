"""Flow-matching conventions shared by the whole project (METHODS.md, notation).

``x_sigma = (1 - sigma) * x0 + sigma * eps``, velocity ``v = eps - x0``, ``x0 = x_sigma - sigma * v``,
timestep ``t = 1000 * sigma``, and the shift warp ``sigma' = s*sigma / (1 + (s-1)*sigma)``.
"""

from __future__ import annotations

import torch


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    sigma = _per_sample(sigma, x0)
    return (1 - sigma) * x0 + sigma * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def x0_from_velocity(x_sigma: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x_sigma - _per_sample(sigma, x_sigma) * velocity


def velocity_from_x0(x_sigma: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Inverse of x0_from_velocity; undefined at sigma = 0."""
    return (x_sigma - x0) / _per_sample(sigma, x_sigma).clamp_min(1e-8)


def shift_sigma(sigma, shift: float):
    """The flow shift warp used by Wan, SD3 and Flux schedules."""
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return shift * sigma / (1 + (shift - 1) * sigma)


def _per_sample(sigma, like: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(-1, *([1] * (like.ndim - 1)))
