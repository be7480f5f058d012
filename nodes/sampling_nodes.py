"""SAMPLER nodes for SamplerCustom / SamplerCustomAdvanced, over ``trainer.sampling.samplers``."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..trainer.sampling import samplers

CATEGORY = "Stride/sampling"


def _model_noise_scaling(sample_fn):
    """Give a library sampler the model's own re-noising rule (flow, eps, v alike)."""

    def fn(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        model_sampling = model.inner_model.inner_model.model_sampling
        return sample_fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                         noise_scaling=model_sampling.noise_scaling, **options)

    return fn


def make_sampler(name: str, **options) -> comfy.samplers.KSAMPLER:
    """A ComfyUI SAMPLER for any sampler of ``trainer.sampling.samplers.sampler_registry()``."""
    return comfy.samplers.KSAMPLER(_model_noise_scaling(samplers.sampler_registry()[name]), extra_options=options)


class StrideConsistencySampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StrideConsistencySampler",
            display_name="Stride Consistency Sampler (LCM/TCD)",
            category=CATEGORY,
            description="Few-step sampler for distilled students: predict x0, re-noise to the next sigma. "
            "gamma 1 re-noises with fresh noise (LCM), 0 is deterministic (DDIM), in between is TCD-style.",
            inputs=[
                io.Float.Input("gamma", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="share of fresh noise when re-noising: 1 = LCM, 0 = deterministic"),
                io.Int.Input("noise_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="seed of the re-noising noise (the initial noise comes from the NOISE input)"),
            ],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, gamma: float, noise_seed: int) -> io.NodeOutput:
        return io.NodeOutput(make_sampler("stride_consistency", gamma=gamma, seed=noise_seed))


class StrideFlowSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StrideFlowSampler",
            display_name="Stride Deterministic Few-Step Sampler",
            category=CATEGORY,
            description="Deterministic few-step ODE sampler (DDIM for order 1, DPM-Solver++(2M) style for order 2) "
            "that works with flow, eps and v models through ComfyUI's x0 contract.",
            inputs=[io.Int.Input("order", default=2, min=1, max=2, tooltip="1 = DDIM/Euler, 2 = second-order multistep")],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, order: int) -> io.NodeOutput:
        return io.NodeOutput(make_sampler("stride_flow", order=order))


NODES = [StrideConsistencySampler, StrideFlowSampler]
