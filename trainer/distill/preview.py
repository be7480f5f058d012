"""Sample previews while a student trains: the same prompts and noise every time, so a run's
previews show how the student changes, not how the noise does.

Every ``preview_every`` steps the loop samples the student (its own step list, no CFG, its
method's sampler) for up to ``PREVIEW_CLIPS`` prompts of the run's data and writes one file per
preview into ``<out>/<name>_previews/``: a frame grid PNG (one row per prompt) when the data can
be decoded without a VAE (the toy domain), otherwise the latents (``latents`` [n, C, F, H, W], in
the model's own normalised latent space, the same layout ``--real-latents`` files use).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

PREVIEW_CLIPS = 4
PREVIEW_SEED = 20_241_122


@dataclass
class PreviewPrompts:
    context: torch.Tensor  # [n, tokens, dim]
    latent_shape: tuple[int, ...]  # [n, C, F, H, W]
    decode: Callable[[torch.Tensor], torch.Tensor] | None  # latents -> videos [n, 3, F, H, W] in [0, 1]


@torch.no_grad()
def sample_student(backend, schedule, method: str, prompts: PreviewPrompts, device: torch.device) -> torch.Tensor:
    """The student's samples for the preview prompts from fixed noise (float32, on the CPU)."""
    from ..backends.base import STUDENT, as_kdiffusion_model
    from ..eval.evaluate import student_sampling_setup
    from ..sampling.samplers import sampler_registry

    setup = student_sampling_setup(method, schedule.step_list, schedule.shift, "preview", schedule.gamma)
    options = dict(setup.sampler_options)
    if setup.sampler != "stride_flow":  # samplers that re-noise draw from a seeded stream
        options.setdefault("seed", PREVIEW_SEED)
    sigmas = schedule.sigmas.to(device)
    noise = torch.randn(prompts.latent_shape, generator=torch.Generator().manual_seed(PREVIEW_SEED)).to(device)
    model = as_kdiffusion_model(backend.view(STUDENT), prompts.context.to(device))
    return sampler_registry()[setup.sampler](model, noise * sigmas[0], sigmas, **options).float().cpu()


def write_preview(latents: torch.Tensor, prompts: PreviewPrompts, directory: Path, step: int) -> Path:
    """Writes ``step_<step>.png`` (decodable data) or ``step_<step>.safetensors``, atomically."""
    from ..checkpoint import atomic_save_safetensors, atomic_write_bytes

    directory = Path(directory)
    if prompts.decode is not None:
        from ..eval.report import frame_grid_png

        path = directory / f"step_{step:06d}.png"
        atomic_write_bytes(frame_grid_png(prompts.decode(latents).clamp(0, 1)), path)
        return path
    path = directory / f"step_{step:06d}.safetensors"
    atomic_save_safetensors({"latents": latents.contiguous()}, path, {"stride.preview_step": str(step)})
    return path
