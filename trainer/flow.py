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


def unshift_sigma(sigma, shift: float):
    """Inverse of ``shift_sigma``."""
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return sigma / (shift - (shift - 1) * sigma)


def shifted_grid(sigma_from: float, steps: int, shift: float) -> torch.Tensor:
    """``steps + 1`` sigmas from ``sigma_from`` down to 0, evenly spaced before the shift warp."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    start = float(unshift_sigma(torch.as_tensor(float(sigma_from)), shift))
    grid = shift_sigma(torch.linspace(start, 0.0, steps + 1), shift)
    grid[0] = float(sigma_from)  # exact, not through the round trip
    return grid


def euler_to_clean(x0_fn, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Integrate the flow ODE from ``sigmas[0]`` to ``sigmas[-1] == 0`` with Euler steps.

    ``x0_fn(x, sigma)`` returns the x0 prediction; one step is ``x <- x0 + (s_next / s) (x - x0)``,
    the Euler step along ``v = (x - x0) / s``, so the last step returns the x0 prediction itself.
    """
    if float(sigmas[-1]) != 0.0 or len(sigmas) < 2:
        raise ValueError("sigmas must hold at least two values and end in 0")
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        x0 = x0_fn(x, s)
        x = x0 if s_next == 0 else x0 + (s_next / s) * (x - x0)
    return x


def _per_sample(sigma, like: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(-1, *([1] * (like.ndim - 1)))
