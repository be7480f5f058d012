"""Interpolated few-step sampling (Adaptive Video Distillation's inference strategy, METHODS.md 1b).

This module owns ``sample_stride_interpolated``, a k-diffusion-signature sampler: the first
``switch_index`` steps run on every second latent frame (``x[:, :, ::2]``, ``(F + 1) / 2`` frames:
about half the tokens and a quarter of the attention cost), the x0 prediction of the last of them
is interpolated back to ``F`` frames (training-free or with the learned latent interpolator),
re-noised to the next sigma with fresh noise through the model's ``noise_scaling``, and the
remaining steps run at full length. Both phases are the project's own samplers from
``samplers.py`` (``base_sampler``), called unchanged; the first phase simply gets the head of the
sigma list and reports its last x0 prediction through the callback. The model is called as
``model(x, sigma * s_in, **extra_args)`` on both lengths, so it must accept a variable number of
latent frames, as Wan and every video transformer with per-call position embeddings do.
Everything happens in model space (the latent the model sees, after ComfyUI's ``process_in``),
which is the space the shipped interpolator was trained in. Per-frame conditioning that ComfyUI
keeps outside ``x`` (an inpainting ``denoise_mask``, image-to-video concat latents) is not
subsampled: masked latents are refused with a clear error.
"""

from __future__ import annotations

import torch

from ..interp.model import LatentInterpolator, compute_dtype, resolve_interpolator
from .positions import with_frame_stride
from .samplers import NoiseScaling, SAMPLERS, flow_noise_scaling, noise_coefficients, validate_sigmas

# base sampler name -> the options it takes from this sampler's (gamma, seed)
BASE_SAMPLER_OPTIONS = {
    "stride_consistency": lambda gamma, seed: {"gamma": gamma, "seed": seed},
    "stride_flow": lambda gamma, seed: {},
}

# temporal_positions -> the spacing of the subsampled frames' positions
TEMPORAL_POSITIONS = {"strided": 2, "contiguous": 1}

# the seed of each random stream, as an offset from the sampler's seed: the half-length phase,
# the re-noising at the switch and the full-length phase never share noise
_SEED_OFFSETS = {"subsampled": 0, "switch": 1, "full": 2}


def sample_stride_interpolated(
    model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback=None,
    disable=None,
    switch_index: int = 1,
    interpolator: str | LatentInterpolator | object = "linear",
    base_sampler: str = "stride_consistency",
    gamma: float = 1.0,
    seed: int | None = None,
    noise_scaling: NoiseScaling | None = None,
    temporal_positions: str = "strided",
    interpolator_dtype: str | None = None,
) -> torch.Tensor:
    """Run steps ``0 .. switch_index - 1`` on ``x[:, :, ::2]``, interpolate, finish at full length.

    ``x`` is ``[B, C, F, H, W]`` with ``F`` odd and at least 3 (so the subsampled frames include
    both ends and interpolation gives back exactly ``F``). ``switch_index`` 0 is plain
    ``base_sampler`` (identical results); ``switch_index`` equal to the number of steps runs every
    step at half length and interpolates the final sample. ``interpolator`` is a name
    (``linear``, ``slerp``, ``motion_compensated``, ``learned`` for the shipped toy-domain
    interpolator), a ``LatentInterpolator`` or any callable mapping ``[B, C, F', H, W]`` to
    ``[B, C, 2F' - 1, H, W]``. ``base_sampler`` is ``stride_consistency`` (with ``gamma`` and
    ``seed``) or ``stride_flow``. The re-noising at the switch always draws fresh noise: the
    noise implied by a half-length prediction has no counterpart on the interpolated frames.
    ``seed`` (or ``extra_args["seed"]``, which ComfyUI fills) seeds three separate streams, one
    per phase and one for the switch; with neither, the global RNG is used. The callback sees
    half-length ``x`` and ``denoised`` for the first steps, except the last of them, whose
    ``denoised`` is reported interpolated to full length. ``temporal_positions`` ``strided`` (the
    default) numbers the subsampled frames 0, 2, 4, ... so the model generates them at their places
    in the full clip (``positions.py``; Wan models); ``contiguous`` numbers them 0, 1, 2, ... as a
    short clip, which halves the speed of every motion once interpolated. ``interpolator_dtype`` (a
    name of ``interp.model.COMPUTE_DTYPES``) runs a learned interpolator in that dtype, e.g. the
    denoiser's own (``None``: the interpolator's, float32 for the shipped one).
    """
    if base_sampler not in BASE_SAMPLER_OPTIONS:
        raise ValueError(f"unknown base sampler {base_sampler!r}; known: {', '.join(BASE_SAMPLER_OPTIONS)}")
    if temporal_positions not in TEMPORAL_POSITIONS:
        raise ValueError(f"temporal_positions must be one of {', '.join(TEMPORAL_POSITIONS)}, got {temporal_positions!r}")
    if interpolator_dtype is not None:
        compute_dtype(interpolator_dtype)  # a bad name fails before any step, whatever the switch index
    extra_args = {} if extra_args is None else extra_args
    sigmas = validate_sigmas(sigmas).to(x.device)
    steps = len(sigmas) - 1
    if int(switch_index) != switch_index or not 0 <= switch_index <= steps:
        raise ValueError(f"switch_index must be an integer in [0, {steps}] (the number of steps), got {switch_index}")
    noise_scaling = flow_noise_scaling if noise_scaling is None else noise_scaling
    if seed is None:
        seed = extra_args.get("seed")
    sample_fn = SAMPLERS[base_sampler]

    def options(phase: str) -> dict:
        return BASE_SAMPLER_OPTIONS[base_sampler](gamma, None if seed is None else int(seed) + _SEED_OFFSETS[phase])

    if switch_index == 0:
        return sample_fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                         noise_scaling=noise_scaling, **BASE_SAMPLER_OPTIONS[base_sampler](gamma, seed))
    check_subsamplable(x)
    if extra_args.get("denoise_mask") is not None:
        raise ValueError("the interpolated sampler cannot run on a masked (inpainting) latent: the mask, the "
                         "source latent and its noise are held at full length outside the sampler")
    interpolate = resolve_interpolator(interpolator, interpolator_dtype)

    # 1. the high-noise steps on every second frame; the callback hands over the last x0 prediction
    last_step = {}

    def subsampled_callback(info):
        if info["i"] == switch_index - 1:  # reported below, with the x0 prediction at full length
            last_step.update(info)
        elif callback is not None:
            callback(info)

    subsampled_args = with_frame_stride(extra_args, TEMPORAL_POSITIONS[temporal_positions])
    sample_fn(model, x[:, :, ::2], sigmas[: switch_index + 1], extra_args=subsampled_args, callback=subsampled_callback,
              disable=disable, noise_scaling=noise_scaling, **options("subsampled"))

    # 2. interpolate the x0 prediction to full length and re-noise it to the next sigma
    denoised = interpolate(last_step["denoised"])
    if denoised.shape != x.shape:
        raise ValueError(f"the interpolator turned {tuple(last_step['denoised'].shape)} into "
                         f"{tuple(denoised.shape)}; the sampler needs {tuple(x.shape)}")
    denoised = denoised.to(x.dtype)
    if callback is not None:
        # ComfyUI keeps the last reported x0 as SamplerCustomAdvanced's denoised output: full length
        callback({**last_step, "denoised": denoised})
    if sigmas[switch_index] == 0:
        return denoised
    s_in = x.new_ones([x.shape[0]])
    data_coefficient, noise_coefficient = noise_coefficients(noise_scaling, sigmas[switch_index] * s_in, x)
    x = data_coefficient * denoised + noise_coefficient * _fresh_noise(x, seed, "switch")

    # 3. the remaining steps at full length, numbered as steps of the whole schedule
    def full_callback(info):
        callback({**info, "i": info["i"] + switch_index})

    return sample_fn(model, x, sigmas[switch_index:], extra_args=extra_args,
                     callback=None if callback is None else full_callback, disable=disable,
                     noise_scaling=noise_scaling, **options("full"))


def check_subsamplable(x: torch.Tensor) -> None:
    """Raise ValueError unless ``x`` is ``[B, C, F, H, W]`` with ``F`` odd and at least 3."""
    if x.ndim != 5:
        raise ValueError(f"interpolated sampling needs a video latent [B, C, F, H, W], got shape {tuple(x.shape)}")
    frames = x.shape[2]
    if frames < 3 or frames % 2 == 0:
        raise ValueError(
            f"interpolated sampling needs an odd number of latent frames >= 3 (every second frame then keeps "
            f"both ends and interpolation rebuilds exactly F frames), got {frames} in shape {tuple(x.shape)}; "
            f"for Wan 2.1 choose a video length of 8k+1 frames (33, 49, 81: 9, 13, 21 latent frames)"
        )


def _fresh_noise(x: torch.Tensor, seed: int | None, stream: str) -> torch.Tensor:
    if seed is None:
        return torch.randn(x.shape, dtype=x.dtype, device=x.device)
    generator = torch.Generator(device=x.device)
    generator.manual_seed(int(seed) + _SEED_OFFSETS[stream])
    return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)


INTERPOLATED_SAMPLERS = {"stride_interpolated": sample_stride_interpolated}
