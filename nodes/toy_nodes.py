"""Nodes for the embedded toy domain: the shipped tiny Wan teacher, its text encoder and codec.

They let toy workflows run in ComfyUI with nothing downloaded. The toy latents live in ComfyUI's
Wan 2.1 LATENT space: ComfyUI normalises Wan latents (``latent_formats.Wan21.process_in``) before
the model sees them, so the codec output is mapped through ``process_out`` on the way in and
``process_in`` on the way out, and the model sees exactly the codec latents it was trained on.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..trainer.toy import codec, domain, text
from ..trainer.toy.teacher import WEIGHTS_PATH

CATEGORY = "Stride/toy"


def _wan21_format():
    import comfy.latent_formats

    return comfy.latent_formats.Wan21()


class StrideToyTeacherLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StrideToyTeacherLoader",
            display_name="Stride Toy Wan Teacher",
            category=CATEGORY,
            description="Loads the tiny Wan 2.1 teacher shipped with the pack (trained on the synthetic shapes domain) "
            "through ComfyUI's stock diffusion-model loader.",
            inputs=[],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        import comfy.sd

        if not WEIGHTS_PATH.exists():
            raise FileNotFoundError(f"toy teacher weights missing at {WEIGHTS_PATH}; reinstall the pack")
        return io.NodeOutput(comfy.sd.load_diffusion_model(str(WEIGHTS_PATH)))


class StrideToyTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StrideToyTextEncode",
            display_name="Stride Toy Text Encode",
            category=CATEGORY,
            description="Encodes toy prompts ('a red square moving left quickly') into Wan-shaped [tokens, 4096] "
            "conditioning. One prompt per line makes a batch. An empty prompt is the CFG negative.",
            inputs=[io.String.Input("prompt", multiline=True, default="a red square moving left quickly")],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, prompt: str) -> io.NodeOutput:
        lines = [line for line in prompt.splitlines() if line.strip()] or [""]
        try:
            embeddings = text.encode_prompts(lines)
        except ValueError as err:
            raise ValueError(f"Stride toy prompt not understood: {err}") from None
        return io.NodeOutput([[embeddings, {}]])


class StrideToyEmptyLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        cfg = domain.DomainConfig()
        return io.Schema(
            node_id="StrideToyEmptyLatent",
            display_name="Stride Toy Empty Latent",
            category=CATEGORY,
            description=f"An empty toy-domain video latent: {cfg.frames} frames of {cfg.height}x{cfg.width} pixels.",
            inputs=[io.Int.Input("batch_size", default=1, min=1, max=64)],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, batch_size: int) -> io.NodeOutput:
        cfg = domain.DomainConfig()
        samples = torch.zeros(batch_size, codec.LATENT_CHANNELS, cfg.frames, cfg.height // 2, cfg.width // 2)
        return io.NodeOutput({"samples": samples})


class StrideToyDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StrideToyDecode",
            display_name="Stride Toy Decode",
            category=CATEGORY,
            description="Decodes toy-domain latents to frames (the lossless toy codec, no VAE).",
            inputs=[io.Latent.Input("samples")],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, samples) -> io.NodeOutput:
        latent = _wan21_format().process_in(samples["samples"].float())
        return io.NodeOutput(codec.video_to_images(codec.decode(latent)))


class StrideToyEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        cfg = domain.DomainConfig()
        return io.Schema(
            node_id="StrideToyEncode",
            display_name="Stride Toy Encode",
            category=CATEGORY,
            description="Encodes frames into toy-domain latents (lossless; frames per clip as in the toy domain).",
            inputs=[io.Image.Input("images"), io.Int.Input("frames_per_clip", default=cfg.frames, min=1, max=1024)],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, images, frames_per_clip: int) -> io.NodeOutput:
        video = codec.images_to_video(images.float(), frames_per_clip)
        return io.NodeOutput({"samples": _wan21_format().process_out(codec.encode(video))})


NODES = [StrideToyTeacherLoader, StrideToyTextEncode, StrideToyEmptyLatent, StrideToyDecode, StrideToyEncode]
