"""Few-step samplers with the k-diffusion signature, for every model parameterisation.

This module owns the project's samplers: ``fn(model, x, sigmas, extra_args=None, callback=None,
disable=None, **options)`` where ``model(x, sigma * s_in, **extra_args)`` returns the denoised x0
prediction (ComfyUI's contract, METHODS.md notation), so the same function drives flow, eps and v
models. The sampler never assumes a parameterisation: it takes ComfyUI's
``model_sampling.noise_scaling(sigma, noise, latent)`` (or the flow convention when none is
given), which is affine ``x = a(sigma) * latent + b(sigma) * noise``, and reads the two
coefficients off it by probing with zeros and ones. From there every step is written in terms of
``a``, ``b`` and the implied noise ``eps_hat = (x - a * x0) / b``: re-noising ("lcm"-style,
TCD-style partial stochasticity, or deterministic DDIM) and a DPM-Solver++(2M) multistep in data
prediction with ``lambda = log(a / b)``. ``b`` equals sigma for ComfyUI's EPS, V_PREDICTION, EDM
and CONST (flow) model types. The module imports no ComfyUI; ``SAMPLERS`` maps the names the node
pack registers to the functions.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..flow import add_noise

NoiseScaling = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def flow_noise_scaling(sigma: torch.Tensor, noise: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """The flow convention ``sigma * noise + (1 - sigma) * latent`` (ComfyUI's CONST)."""
    return add_noise(latent, noise, sigma)


def validate_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """Raise ValueError unless ``sigmas`` is 1-D, has at least 2 entries and strictly decreases.

    Only the last entry may be 0 (then the sampler returns a clean sample); a list that stops
    above 0 is valid too (a split schedule) and returns a sample at that noise level.
    """
    sigmas = torch.as_tensor(sigmas)
    if sigmas.ndim != 1:
        raise ValueError(f"sigmas must be a 1-D tensor, got shape {tuple(sigmas.shape)}")
    if sigmas.numel() < 2:
        raise ValueError(f"sigmas needs at least 2 entries (start and end), got {sigmas.numel()}")
    if not torch.isfinite(sigmas).all():
        raise ValueError(f"sigmas must be finite, got {sigmas.tolist()}")
    if not (sigmas[1:] < sigmas[:-1]).all():
        raise ValueError(f"sigmas must be strictly decreasing, got {sigmas.tolist()}")
    if sigmas[-1] < 0:
        raise ValueError(f"sigmas must be non-negative, got {sigmas.tolist()}")
    return sigmas


def check_gamma(gamma: float, name: str = "gamma") -> float:
    """``gamma``, the share of fresh noise when re-noising, as a float; a clear error outside [0, 1]."""
    gamma = float(gamma)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"{name} is a share of fresh noise in [0, 1], got {gamma}")
    return gamma


def mix_noise(implied: torch.Tensor, fresh: torch.Tensor, gamma: float) -> torch.Tensor:
    """``sqrt(1 - gamma) * implied + sqrt(gamma) * fresh``: unit variance for any gamma when both are
    standard normal, so gamma 1 is exactly fresh noise and gamma 0 exactly the implied noise (DDIM)."""
    return math.sqrt(1.0 - gamma) * implied + math.sqrt(gamma) * fresh


def sample_stride_consistency(
    model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback=None,
    disable=None,
    gamma: float = 1.0,
    seed: int | None = None,
    noise_scaling: NoiseScaling | None = None,
) -> torch.Tensor:
    """Consistency ("lcm"-style) sampling: predict x0, re-noise it to the next sigma.

    The re-noising noise is ``sqrt(1 - gamma) * eps_hat + sqrt(gamma) * z``: gamma 1 draws fresh
    noise every step (ComfyUI's ``lcm``, what distilled Wan LoRAs are trained for), gamma 0 reuses
    the noise implied by the prediction (deterministic DDIM, identical to ``sample_stride_flow``
    with order 1), values in between give TCD-style partial stochasticity; both terms have unit
    variance for any gamma when ``eps_hat`` is standard normal. ``z`` comes from a generator
    seeded with ``seed`` (or ``extra_args["seed"]``, which ComfyUI fills with the noise seed) on
    ``x``'s device; with neither, from the global RNG. ``disable`` (a progress bar flag in
    k-diffusion) is accepted and ignored.
    """
    check_gamma(gamma)
    extra_args = {} if extra_args is None else extra_args
    sigmas = validate_sigmas(sigmas).to(x.device)
    noise_scaling = flow_noise_scaling if noise_scaling is None else noise_scaling
    if seed is None:
        seed = extra_args.get("seed")
    draw_noise = _noise_source(x, seed)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i] * s_in, sigmas[i + 1] * s_in
        denoised = model(x, sigma, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised
            break
        a, b = noise_coefficients(noise_scaling, sigma, x)
        a_next, b_next = noise_coefficients(noise_scaling, sigma_next, x)
        noise = (x - a * denoised) / b
        if gamma > 0:  # gamma 0 draws nothing: exactly DDIM
            noise = mix_noise(noise, draw_noise(), gamma)
        x = a_next * denoised + b_next * noise
    return x


def sample_stride_flow(
    model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback=None,
    disable=None,
    order: int = 2,
    noise_scaling: NoiseScaling | None = None,
) -> torch.Tensor:
    """Deterministic few-step solver of the probability-flow ODE in data prediction.

    order 1 is DDIM, ``x_next = a_next * x0 + b_next * eps_hat`` (exact Euler for a flow model).
    order 2 is DPM-Solver++(2M): the same update with x0 replaced by the multistep estimate
    ``(1 + 1/(2r)) * x0 - 1/(2r) * x0_prev``, ``r = h_prev / h`` and ``h`` the step in
    ``lambda = log(a / b)``. For EPS models (a = 1, b = sigma) this is k-diffusion's ``dpmpp_2m``;
    for flow models (a = 1 - sigma) it is the flow-matching DPM-Solver++(2M). The first step, and
    any step after one from sigma where a = 0 (flow sigma 1, lambda = -inf), is first order.
    The step to sigma 0 is first order too and therefore returns the plain last x0 prediction, as
    k-diffusion does: extrapolating x0 there has no lambda step to scale it (h is infinite).
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    extra_args = {} if extra_args is None else extra_args
    sigmas = validate_sigmas(sigmas).to(x.device)
    noise_scaling = flow_noise_scaling if noise_scaling is None else noise_scaling
    s_in = x.new_ones([x.shape[0]])
    previous_denoised = None
    previous_log_snr = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i] * s_in, sigmas[i + 1] * s_in
        denoised = model(x, sigma, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised
            break
        a, b = noise_coefficients(noise_scaling, sigma, x)
        a_next, b_next = noise_coefficients(noise_scaling, sigma_next, x)
        log_snr, log_snr_next = _half_log_snr(a, b), _half_log_snr(a_next, b_next)
        estimate = denoised
        if order == 2 and previous_denoised is not None:
            h, h_previous = log_snr_next - log_snr, log_snr - previous_log_snr
            if torch.isfinite(h_previous).all():
                inverse_2r = h / (2.0 * h_previous)
                estimate = (1.0 + inverse_2r) * denoised - inverse_2r * previous_denoised
        # The DPM-Solver++ exponential-integrator step written without exp/log: it is DDIM with
        # the multistep estimate standing in for x0.
        x = a_next * estimate + b_next * (x - a * estimate) / b
        previous_denoised, previous_log_snr = denoised, log_snr
    return x


def noise_coefficients(noise_scaling: NoiseScaling, sigma: torch.Tensor, like: torch.Tensor):
    """``(a, b)`` with ``noise_scaling(sigma, noise, latent) == a * latent + b * noise``.

    Probed with per-sample zeros and ones shaped ``[B, 1, ..., 1]`` (cheap, and broadcastable to
    ``like``); fresh tensors every call because ComfyUI's EPS ``noise_scaling`` adds in place.
    """
    probe_shape = (like.shape[0],) + (1,) * (like.ndim - 1)
    zeros = lambda: torch.zeros(probe_shape, dtype=like.dtype, device=like.device)  # noqa: E731
    ones = lambda: torch.ones(probe_shape, dtype=like.dtype, device=like.device)  # noqa: E731
    data_coefficient = noise_scaling(sigma, zeros(), ones())
    noise_coefficient = noise_scaling(sigma, ones(), zeros())
    return data_coefficient, noise_coefficient


def _half_log_snr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # lambda = log(a / b); -inf where a = 0 (pure noise), which the order-2 step treats as "no history".
    return torch.log(a) - torch.log(b)


def _noise_source(x: torch.Tensor, seed: int | None):
    if seed is None:
        return lambda: torch.randn(x.shape, dtype=x.dtype, device=x.device)
    generator = torch.Generator(device=x.device)
    generator.manual_seed(int(seed))
    return lambda: torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)


SAMPLERS = {
    "stride_consistency": sample_stride_consistency,
    "stride_flow": sample_stride_flow,
}


def sampler_registry() -> dict:
    """Every Stride sampler by name: these plus the interpolated few-step sampler."""
    from .interpolated import INTERPOLATED_SAMPLERS

    return {**SAMPLERS, **INTERPOLATED_SAMPLERS}
