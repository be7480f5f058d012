"""Strided temporal positions: telling a video model that its latent frames are ``stride`` apart.

Interpolated sampling (``interpolated.py``) runs its first steps on every second latent frame. A
model that numbers those frames 0, 1, 2, ... takes them for a short clip at the full frame rate and
moves things by its usual per-frame amount, so once the prediction is interpolated back to full
length every motion runs at half speed. Numbering them 0, 2, 4, ... (their places in the full clip)
lets it generate the subsampled clip itself. Video transformers place frames through rotary
position embeddings, so this is a change to the positions the model computes for one call.

The stride travels with the model call the ComfyUI way, as ``transformer_options["stride_frame_stride"]``
inside ``extra_args["model_options"]`` (``with_frame_stride``), together with a ComfyUI
``diffusion_model`` wrapper that applies it (``comfy_wrapper``, plain Python: ComfyUI calls it with
an executor whose ``class_obj`` is the diffusion model). The project's own diffusers path reads the
same key (``backends.base.as_kdiffusion_model``). How a model's positions are strided is a registry
keyed by the model's class name or a base class's (``POSITION_ADAPTERS``): ComfyUI's ``WanModel`` (Wan 2.1/2.2) and
diffusers' ``WanTransformer3DModel``. A model without an adapter raises a clear error that names the
sampler option to turn strided positions off.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

FRAME_STRIDE_KEY = "stride_frame_stride"
WRAPPER_KEY = "stride_strided_positions"
_DIFFUSION_MODEL = "diffusion_model"  # comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL


@contextmanager
def _comfy_wan(model, stride: int) -> Iterator[None]:
    """ComfyUI ``WanModel``: ``rope_encode(t, ...)`` with ``steps_t`` positions spread over the full length."""
    original = model.rope_encode

    def rope_encode(t, h, w, t_start=0, steps_t=None, steps_h=None, steps_w=None, device=None, dtype=None):
        if steps_t is not None or model.patch_size[0] != 1:
            raise ValueError("strided temporal positions: this Wan call already sets its own temporal positions")
        full = (t - 1) * stride + 1  # linspace(t_start, t_start + full - 1, steps=t): every stride-th position
        return original(full, h, w, t_start=t_start, steps_t=t, steps_h=steps_h, steps_w=steps_w, device=device,
                        dtype=dtype)

    model.rope_encode = rope_encode
    try:
        yield
    finally:
        del model.rope_encode  # the class's method again


@contextmanager
def _diffusers_wan(model, stride: int) -> Iterator[None]:
    """diffusers ``WanTransformer3DModel``: the rotary table of the full length, every stride-th frame."""
    rope = model.rope
    original = rope.forward

    def forward(hidden_states: torch.Tensor):
        batch, channels, frames, height, width = hidden_states.shape
        p_t = rope.patch_size[0]
        full_frames = ((frames // p_t - 1) * stride + 1) * p_t
        cos, sin = original(torch.empty(batch, channels, full_frames, height, width, device="meta"))  # only its shape is read
        per_frame = cos.shape[1] // (full_frames // p_t)

        def pick(table: torch.Tensor) -> torch.Tensor:
            kept = table.reshape(1, full_frames // p_t, per_frame, *table.shape[2:])[:, ::stride]
            return kept.reshape(1, -1, *table.shape[2:])

        return pick(cos), pick(sin)

    rope.forward = forward
    try:
        yield
    finally:
        del rope.forward


POSITION_ADAPTERS: dict[str, Callable] = {"WanModel": _comfy_wan, "WanTransformer3DModel": _diffusers_wan}


@contextmanager
def strided_positions(model: torch.nn.Module, stride: int) -> Iterator[None]:
    """Within the block, ``model`` numbers its latent frames 0, stride, 2 * stride, ..."""
    if stride == 1:
        yield
        return
    adapter = next((POSITION_ADAPTERS[c.__name__] for c in type(model).__mro__ if c.__name__ in POSITION_ADAPTERS), None)
    if adapter is None:
        raise ValueError(f"strided temporal positions are not known for {type(model).__name__} (known: "
                         f"{', '.join(POSITION_ADAPTERS)}); set the interpolated sampler's temporal_positions "
                         f"to 'contiguous'")
    with adapter(model, stride):
        yield


def frame_stride(transformer_options: dict | None) -> int:
    return int((transformer_options or {}).get(FRAME_STRIDE_KEY, 1))


def comfy_wrapper(executor, *args, **kwargs):
    """A ComfyUI ``diffusion_model`` wrapper: the call runs with the stride its transformer_options carry.
    ``WanModel._forward(x, timestep, context, clip_fea, time_dim_concat, transformer_options, ...)``."""
    options = kwargs.get("transformer_options", args[5] if len(args) > 5 else None)
    with strided_positions(executor.class_obj, frame_stride(options)):
        return executor(*args, **kwargs)


def with_frame_stride(extra_args: dict, stride: int) -> dict:
    """A copy of a sampler's ``extra_args`` whose model calls number frames ``stride`` apart (1: unchanged)."""
    if stride == 1:
        return extra_args
    model_options = dict(extra_args.get("model_options") or {})
    transformer_options = dict(model_options.get("transformer_options") or {})
    wrappers = {kind: dict(by_key) for kind, by_key in (transformer_options.get("wrappers") or {}).items()}
    wrappers.setdefault(_DIFFUSION_MODEL, {})[WRAPPER_KEY] = [comfy_wrapper]
    transformer_options.update({FRAME_STRIDE_KEY: int(stride), "wrappers": wrappers})
    model_options["transformer_options"] = transformer_options
    return {**extra_args, "model_options": model_options}
