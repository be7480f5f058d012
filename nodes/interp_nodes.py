"""Latent interpolation nodes, over ``trainer.interp`` and ``trainer.sampling.interpolated``.

``StrideLatentInterpolate`` adds frames between the latent frames of a LATENT; the training-free
methods work on ComfyUI's LATENT as it is (any model family), while the learned interpolator was
trained in model space (the toy codec latents, what a Wan 2.1 model sees after
``latent_formats.Wan21.process_in``), so for it the node converts with ``process_in`` before and
``process_out`` after. ``StrideLatentInterpolatorLoader`` loads the shipped toy-domain
interpolator or a file from ``models/latent_interpolators``. ``StrideInterpolatedSampler`` is a
SAMPLER running the first steps on every second latent frame; inside a sampler latents are
already in model space, so it needs no conversion.
"""

from __future__ import annotations

import os

from comfy_api.latest import io

from ..trainer.interp.latent import check_video_latent, interpolate_latent
from ..trainer.interp.model import (DEFAULT_WEIGHTS_PATH, INTERPOLATION_METHODS, LatentInterpolator,
                                    load_interpolator, resolve_interpolator)
from ..trainer.sampling.interpolated import BASE_SAMPLER_OPTIONS, TEMPORAL_POSITIONS
from .sampling_nodes import make_sampler

CATEGORY = "Stride/interpolation"
INTERPOLATOR_FOLDER = "latent_interpolators"  # under ComfyUI's models directory
SHIPPED_INTERPOLATOR = f"(shipped) {DEFAULT_WEIGHTS_PATH.name}"

LatentInterpolatorType = io.Custom("STRIDE_LATENT_INTERPOLATOR")


def _interpolator_folder() -> str:
    import folder_paths

    return os.path.join(folder_paths.models_dir, INTERPOLATOR_FOLDER)


def _interpolator_files() -> list[str]:
    folder = _interpolator_folder()
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder) if name.endswith(".safetensors"))


def _wan21_format():
    import comfy.latent_formats

    return comfy.latent_formats.Wan21()


def _interpolator_input(optional_tooltip: str) -> io.Input:
    return LatentInterpolatorType.Input("interpolator", optional=True, tooltip=optional_tooltip)


class StrideLatentInterpolate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StrideLatentInterpolate",
            display_name="Stride Latent Interpolate (frames)",
            category=CATEGORY,
            description="Adds frames between the latent frames of a video LATENT: F frames become (F-1)*factor+1, the "
            "originals kept. linear/slerp/motion_compensated need no training and work for any model; learned uses "
            "the Stride latent interpolator (Wan 2.1 16-channel latents, converted to model space and back).",
            inputs=[
                io.Latent.Input("samples"),
                io.Combo.Input("method", options=list(INTERPOLATION_METHODS), default="motion_compensated"),
                io.Int.Input("factor", default=2, min=1, max=8,
                             tooltip="frames per original interval; the learned method needs a power of 2"),
                _interpolator_input("a loaded interpolator; used when method is 'learned' (default: the shipped one)"),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, samples, method: str, factor: int,
                interpolator: LatentInterpolator | None = None) -> io.NodeOutput:
        latent = samples["samples"]
        check_video_latent(latent, "the LATENT")
        if method == "learned":
            network = interpolator if interpolator is not None else load_interpolator()
            if latent.shape[1] != network.arch.latent_channels:
                raise ValueError(f"the learned interpolator works on {network.arch.latent_channels}-channel "
                                 f"Wan 2.1 latents, this LATENT has {latent.shape[1]} channels; "
                                 f"use a training-free method")
            latent_format = _wan21_format()
            rebuilt = network.interpolate(latent_format.process_in(latent.float()), factor)
            out = latent_format.process_out(rebuilt).to(latent.dtype)
        else:
            out = interpolate_latent(latent, method, factor)
        # a per-frame noise mask no longer matches the new frame count
        kept = {k: v for k, v in samples.items() if k not in ("samples", "noise_mask")}
        return io.NodeOutput({**kept, "samples": out})


class StrideLatentInterpolatorLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StrideLatentInterpolatorLoader",
            display_name="Stride Latent Interpolator Loader",
            category=CATEGORY,
            description="Loads a learned latent interpolator: the one shipped with the pack (trained on the toy domain) "
            f"or a .safetensors file from models/{INTERPOLATOR_FOLDER} (trained with `python -m trainer interp`).",
            inputs=[io.Combo.Input("interpolator_name", options=[SHIPPED_INTERPOLATOR, *_interpolator_files()],
                                   default=SHIPPED_INTERPOLATOR)],
            outputs=[LatentInterpolatorType.Output()],
        )

    @classmethod
    def execute(cls, interpolator_name: str) -> io.NodeOutput:
        if interpolator_name == SHIPPED_INTERPOLATOR:
            return io.NodeOutput(load_interpolator(DEFAULT_WEIGHTS_PATH))
        if interpolator_name not in _interpolator_files():
            raise FileNotFoundError(f"no latent interpolator {interpolator_name!r} in {_interpolator_folder()}")
        return io.NodeOutput(load_interpolator(os.path.join(_interpolator_folder(), interpolator_name)))


class StrideInterpolatedSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StrideInterpolatedSampler",
            display_name="Stride Interpolated Few-Step Sampler",
            category=CATEGORY,
            description="Runs the first steps on every second latent frame (about half the tokens, a quarter of the "
            "attention cost), interpolates the x0 prediction back to full length, re-noises it and finishes at full "
            "length. Needs an odd latent frame count >= 3 (Wan: 8k+1 video frames) and a text-to-video model.",
            inputs=[
                io.Int.Input("switch_index", default=1, min=0, max=1000,
                             tooltip="number of steps run at half length; 0 = plain base sampler"),
                io.Float.Input("gamma", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="share of fresh noise when re-noising (consistency base sampler): "
                               "1 = LCM, 0 = DDIM"),
                io.Int.Input("noise_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="seed of the re-noising noise (the initial noise comes from the NOISE input)"),
                io.Combo.Input("method", options=list(INTERPOLATION_METHODS), default="linear",
                               tooltip="how the half-length x0 prediction is brought back to full length"),
                io.Combo.Input("base_sampler", options=list(BASE_SAMPLER_OPTIONS), default="stride_consistency"),
                # optional: graphs saved before this input existed still validate (and get strided)
                io.Combo.Input("temporal_positions", options=list(TEMPORAL_POSITIONS), default="strided", optional=True,
                               tooltip="strided: the half-length steps number their frames 0, 2, 4, ... (their places "
                               "in the full clip), so motion keeps its speed; contiguous: 0, 1, 2, ... (halves the speed "
                               "of motion; for models without strided positions, which Wan has)"),
                _interpolator_input("a loaded interpolator; when connected it is used whatever the method"),
            ],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, switch_index: int, gamma: float, noise_seed: int, method: str, base_sampler: str,
                temporal_positions: str = "strided", interpolator: LatentInterpolator | None = None) -> io.NodeOutput:
        if interpolator is None and method == "learned":
            interpolator = load_interpolator()  # once here, not once per sampling run
        chosen = interpolator if interpolator is not None else method
        resolve_interpolator(chosen)  # an unknown method fails now, not in the middle of sampling
        options = {"switch_index": switch_index, "gamma": gamma, "seed": noise_seed, "interpolator": chosen,
                   "base_sampler": base_sampler, "temporal_positions": temporal_positions}
        return io.NodeOutput(make_sampler("stride_interpolated", **options))


NODES = [StrideLatentInterpolate, StrideLatentInterpolatorLoader, StrideInterpolatedSampler]
