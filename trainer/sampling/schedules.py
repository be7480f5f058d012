"""Sigma schedules for few-step and video sampling (METHODS.md section 5).

This module owns every schedule the pack offers as a ComfyUI SIGMAS value (a 1-D float32 tensor
that starts at the highest noise level and ends in 0): the step lists distilled students were
trained on, warped by their shift (``student_sigmas``, ``STUDENT_PRESETS``); the token-count-aware
shift of LTX-Video/Flux applied to a linear flow schedule (``token_aware_sigmas``); and the
published Align-Your-Steps (SVD) and Optimal-Steps (Wan) lists, log-linearly interpolated to other
step counts exactly as ComfyUI's AlignYourSteps node does (``published_sigmas``). Flow sigmas live
in [0, 1] (``t = 1000 * sigma``); the SVD list is in EDM sigmas and ``edm_to_flow_sigmas`` maps it
to flow sigmas of the same signal-to-noise ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..flow import shift_sigma

NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class StudentPreset:
    name: str
    step_list: tuple[float, ...]
    shift: float
    source: str


STUDENT_PRESETS: dict[str, StudentPreset] = {
    preset.name: preset
    for preset in (
        StudentPreset(
            "lightx2v_4step", (1000, 750, 500, 250), 5.0,
            "lightx2v Wan 2.1 step-distilled LoRAs: denoising_step_list [1000, 750, 500, 250], shift 5 "
            "(METHODS.md section 5)",
        ),
        StudentPreset(
            "self_forcing_4step", (1000, 750, 500, 250), 5.0,
            "Self-Forcing (Wan 2.1 1.3B): same denoising_step_list and shift as lightx2v",
        ),
        StudentPreset(
            "causvid_3step", (1000, 757, 522), 5.0,
            "CausVid's denoising_step_list [1000, 757, 522] with warp_denoising_step and shift 5",
        ),
        StudentPreset(
            "adv_4step", (1000, 900, 757, 522), 5.0,
            "ADV (arXiv 2603.21864, CausVid/DMD2 fork on Wan 2.1): step list [1000, 900, 757, 522], shift 5",
        ),
    )
}


def parse_step_list(text: str) -> list[float]:
    """Parse ``"1000,750,500,250"`` into floats; each in (0, 1000], strictly decreasing, non-empty."""
    parts = [part.strip() for part in str(text).replace(";", ",").split(",")]
    parts = [part for part in parts if part]
    if not parts:
        raise ValueError("step list is empty; expected e.g. '1000,750,500,250'")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"step list entry {part!r} is not a number (in {text!r})") from None
        values.append(value)
    validate_step_list(values)
    return values


def validate_step_list(step_list: Sequence[float]) -> None:
    values = [float(value) for value in step_list]
    if not values:
        raise ValueError("step list is empty")
    for value in values:
        if not (math.isfinite(value) and 0 < value <= NUM_TRAIN_TIMESTEPS):
            raise ValueError(f"step list timesteps must be in (0, {NUM_TRAIN_TIMESTEPS}], got {value:g} in {values}")
    if any(later >= earlier for earlier, later in zip(values, values[1:])):
        raise ValueError(f"step list must be strictly decreasing (highest noise first), got {values}")


def student_timesteps(step_list: Sequence[float], shift: float) -> torch.Tensor:
    """Training timesteps in (0, 1000] warped by the shift: ``1000 * shift_sigma(t / 1000, shift)``.

    ``[1000, 750, 500, 250]`` with shift 5 gives ``[1000, 937.5, 833.33, 625]``. This is the exact
    warp METHODS.md states; the original CausVid/lightx2v code indexes a 1000-step shifted grid
    that ends at sigma 0.003 instead, which moves these by under 0.5% (937.7, 834.2, 627.8).
    """
    validate_step_list(step_list)
    timesteps = torch.tensor([float(value) for value in step_list], dtype=torch.float64)
    return NUM_TRAIN_TIMESTEPS * shift_sigma(timesteps / NUM_TRAIN_TIMESTEPS, float(shift))


def student_sigmas(step_list: Sequence[float], shift: float) -> torch.Tensor:
    """SIGMAS for a distilled student: its warped timesteps / 1000, then a final 0."""
    sigmas = student_timesteps(step_list, shift) / NUM_TRAIN_TIMESTEPS
    return _as_sigmas(torch.cat([sigmas, sigmas.new_zeros(1)]))


def token_count_shift(latent_shape: Sequence[int], base_shift: float = 0.95, max_shift: float = 2.05):
    """``(mu, shift)`` from the token count of a latent, the LTX-Video/Flux rule.

    ``tokens = F * H * W`` of a ``[B, C, F, H, W]`` video latent (``F = 1`` for a ``[B, C, H, W]``
    image latent), ``mu = base + (tokens - 1024) * (max - base) / 3072`` and ``shift = exp(mu)``,
    the same line through (1024, base) and (4096, max) as ComfyUI's LTXVScheduler. It is not
    clamped: past 4096 tokens it extrapolates, so very large latents get very large shifts.
    """
    shape = tuple(int(size) for size in latent_shape)
    if len(shape) == 5:
        frames, height, width = shape[2:]
    elif len(shape) == 4:
        frames, (height, width) = 1, shape[2:]
    else:
        raise ValueError(f"latent shape must be [B, C, F, H, W] or [B, C, H, W], got {list(shape)}")
    tokens = frames * height * width
    mu = base_shift + (tokens - 1024) * (max_shift - base_shift) / 3072
    return mu, math.exp(mu)


def linear_sigmas(steps: int) -> torch.Tensor:
    """``steps`` equal steps in flow sigma from 1 to 0 (``steps + 1`` values)."""
    return torch.linspace(1.0, 0.0, _checked_steps(steps) + 1, dtype=torch.float64)


BASE_SCHEDULES = {"linear": linear_sigmas}


def token_aware_sigmas(latent_shape: Sequence[int], steps: int, base_shift: float = 0.95, max_shift: float = 2.05,
                       base: str = "linear"):
    """``(sigmas, shift)``: a base flow schedule ending in 0, warped by the token-count shift."""
    if base not in BASE_SCHEDULES:
        raise ValueError(f"unknown base schedule {base!r}; choose from {sorted(BASE_SCHEDULES)}")
    _, shift = token_count_shift(latent_shape, base_shift, max_shift)
    sigmas = shift_sigma(BASE_SCHEDULES[base](steps), shift)
    return _as_sigmas(sigmas), shift


# Align Your Steps for Stable Video Diffusion, 10 steps, EDM sigmas (ComfyUI's NOISE_LEVELS["SVD"]).
AYS_SVD = (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002)
# Optimal Steps for Wan, 20 steps, flow sigmas (ComfyUI's OptimalStepsScheduler "Wan").
OPTIMAL_STEPS_WAN = (1.0, .997, .995, .993, .991, .989, .987, .985, .98, .975, .973,
                     .968, .96, .946, .927, .902, .864, .776, .539, .208, .001)


@dataclass(frozen=True)
class PublishedSchedule:
    name: str
    values: tuple[float, ...]
    parameterisation: str  # "edm" sigmas (unbounded) or "flow" sigmas in [0, 1]
    source: str

    @property
    def native_steps(self) -> int:
        return len(self.values) - 1


PUBLISHED_SCHEDULES: dict[str, PublishedSchedule] = {
    schedule.name: schedule
    for schedule in (
        PublishedSchedule("ays_svd", AYS_SVD, "edm", "Align Your Steps (Sabour et al. 2024), SVD, 10 steps"),
        PublishedSchedule("optimal_steps_wan", OPTIMAL_STEPS_WAN, "flow",
                          "Optimal Stepsize (Pei et al. 2025), Wan, 20 steps"),
    )
}


def loglinear_interp(values: Sequence[float], n: int) -> torch.Tensor:
    """Resample a decreasing positive list to ``n`` values, linearly in log space.

    The log of the reversed (increasing) list is interpolated on ``linspace(0, 1)`` and reversed
    back, as ComfyUI's ``loglinear_interp`` (Align Your Steps) does, so results match ComfyUI.
    """
    values = np.asarray([float(value) for value in values], dtype=np.float64)
    if values.ndim != 1 or len(values) < 2 or (values <= 0).any():
        raise ValueError("loglinear_interp needs at least 2 positive values")
    if n < 2:
        raise ValueError(f"loglinear_interp needs n >= 2, got {n}")
    known_positions = np.linspace(0, 1, len(values))
    new_positions = np.linspace(0, 1, n)
    log_values = np.interp(new_positions, known_positions, np.log(values[::-1]))
    return torch.from_numpy(np.exp(log_values)[::-1].copy())


def published_sigmas(name: str, steps: int) -> torch.Tensor:
    """SIGMAS of a published schedule at ``steps`` steps: ``steps + 1`` values, the last set to 0.

    At the native step count the values are the published list (its small final sigma replaced
    by 0, as ComfyUI does); other counts are log-linearly interpolated.
    """
    if name not in PUBLISHED_SCHEDULES:
        raise ValueError(f"unknown published schedule {name!r}; choose from {sorted(PUBLISHED_SCHEDULES)}")
    schedule = PUBLISHED_SCHEDULES[name]
    steps = _checked_steps(steps)
    if steps == schedule.native_steps:
        sigmas = torch.tensor(schedule.values, dtype=torch.float64)
    else:
        sigmas = loglinear_interp(schedule.values, steps + 1)
    sigmas[-1] = 0.0
    return _as_sigmas(sigmas)


def edm_to_flow_sigmas(sigmas) -> torch.Tensor:
    """Flow sigmas with the same SNR as EDM sigmas: ``sigma / (1 + sigma)``.

    EDM ``x = x0 + s * eps`` and flow ``x = (1 - t) x0 + t * eps`` have equal SNR when
    ``t / (1 - t) = s``; the flow latent is the EDM one divided by ``1 + s``. This is how the SVD
    Align-Your-Steps list is used on a flow model (Wan, LTX, HunyuanVideo); 0 stays 0.
    """
    sigmas = torch.as_tensor(sigmas)
    if (sigmas < 0).any():
        raise ValueError("EDM sigmas must be non-negative")
    return sigmas / (1 + sigmas)


def _checked_steps(steps: int) -> int:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    return int(steps)


def _as_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    # ComfyUI's SIGMAS are float32 (calculate_sigmas); float64 sigmas can reach model code that
    # builds timestep embeddings in the sigma's dtype.
    return sigmas.to(torch.float32)
