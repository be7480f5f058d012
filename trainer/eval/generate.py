"""Sampling the toy domain for evaluation: sampling setups, the evaluation prompt set, generation.

A ``SamplingSetup`` names everything that decides a sample besides the model and the noise:
steps, CFG scale, sampler (a key of ``trainer.sampling.samplers.sampler_registry()``) and schedule (a key of
``SCHEDULES``). ``generate`` runs one setup over a prompt list in batches from per-clip seeds, so
two setups evaluated on the same prompts start from the same noise, and returns decoded clips
plus the wall-clock seconds spent in the model.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from .. import flow
from ..backends.base import Denoiser, as_kdiffusion_model
from ..sampling import schedules
from ..sampling.samplers import sampler_registry
from ..toy import codec, domain, text


@dataclass
class SamplingSetup:
    name: str
    steps: int
    cfg: float = 1.0
    sampler: str = "stride_flow"
    sampler_options: dict = field(default_factory=dict)
    schedule: str = "shifted"
    shift: float = 3.0
    step_list: tuple[float, ...] = ()

    def __post_init__(self):
        if self.sampler not in sampler_registry():
            raise ValueError(f"unknown sampler {self.sampler!r}; known: {', '.join(sampler_registry())}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; known: {', '.join(SCHEDULES)}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    @property
    def nfe(self) -> int:
        """Model evaluations per clip (CFG doubles them)."""
        return self.steps * (2 if self.cfg != 1.0 else 1)

    def sigmas(self, latent_shape) -> torch.Tensor:
        return torch.as_tensor(SCHEDULES[self.schedule](self, latent_shape), dtype=torch.float32)


def _shifted(setup: SamplingSetup, _shape) -> torch.Tensor:
    return flow.shift_sigma(schedules.linear_sigmas(setup.steps), setup.shift)


def _student(setup: SamplingSetup, _shape) -> torch.Tensor:
    if len(setup.step_list) != setup.steps:
        raise ValueError(f"setup {setup.name}: step_list {setup.step_list} does not have {setup.steps} entries")
    return schedules.student_sigmas(list(setup.step_list), setup.shift)


def _token(setup: SamplingSetup, shape) -> torch.Tensor:
    return schedules.token_aware_sigmas(shape, setup.steps)[0]


SCHEDULES: dict[str, Callable] = {"shifted": _shifted, "student": _student, "token": _token}


@dataclass(frozen=True)
class EvalSet:
    """Prompts and per-clip seeds: every attribute combination, ``repeats`` times. With ``max_clips``
    (quick checks) the first ``max_clips`` of them in ``domain.balanced_attributes`` order, so that a
    subset holds every shape, colour, direction and speed about equally often."""

    repeats: int = 1
    seed: int = 1234
    max_clips: int | None = None

    def attributes(self) -> list[domain.ClipAttributes]:
        if self.max_clips is None:
            return domain.all_attributes() * self.repeats
        return (domain.balanced_attributes() * self.repeats)[: self.max_clips]

    def key(self) -> dict:
        """What identifies the clips (for recorded rows): the fields, and for a subset how it is chosen."""
        return asdict(self) | ({} if self.max_clips is None else {"subset": "balanced"})

    def clip_seeds(self) -> list[int]:
        return [self.seed * 100_003 + i for i in range(len(self.attributes()))]

    def prompts_and_seeds(self) -> tuple[list[str], list[int]]:
        """One prompt and one noise seed per clip, in order."""
        return [a.prompt for a in self.attributes()], self.clip_seeds()


def latent_shape(batch: int) -> tuple[int, ...]:
    cfg = domain.DomainConfig()
    return (batch, codec.LATENT_CHANNELS, cfg.frames, cfg.height // 2, cfg.width // 2)


def initial_noise(seeds: list[int]) -> torch.Tensor:
    return torch.cat([torch.randn(latent_shape(1), generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.no_grad()
def generate_chunk(denoiser: Denoiser, setup: SamplingSetup, prompts: list[str], seeds: list[int]) -> tuple[torch.Tensor, float]:
    """Sample one batch, one clip per (prompt, seed): (videos [N, 3, F, H, W] in [0, 1], model seconds)."""
    sample_fn = sampler_registry()[setup.sampler]
    context = text.encode_prompts(prompts)
    negative = torch.zeros_like(context) if setup.cfg != 1.0 else None
    model = as_kdiffusion_model(denoiser, context, negative, setup.cfg)
    noise = initial_noise(seeds)
    sigmas = setup.sigmas(tuple(noise.shape))
    options = dict(setup.sampler_options)
    if setup.sampler != "stride_flow":  # samplers that draw fresh noise get a seed per chunk
        options.setdefault("seed", seeds[0])
    t0 = time.perf_counter()
    # ComfyUI's convention for an empty latent: x = sigma_max * noise (pure noise when sigma_max is 1)
    latent = sample_fn(model, noise * sigmas[0], sigmas, **options)
    seconds = time.perf_counter() - t0
    return codec.decode(latent), seconds


def chunks(count: int, batch_size: int) -> list[slice]:
    return [slice(start, start + batch_size) for start in range(0, count, batch_size)]


def generate(denoiser: Denoiser, setup: SamplingSetup, prompts: list[str], seeds: list[int],
             batch_size: int = 32) -> tuple[torch.Tensor, float]:
    """Sample one clip per (prompt, seed); returns (videos [N, 3, F, H, W] in [0, 1], model seconds)."""
    return generate_interleaved(denoiser, [setup], prompts, seeds, batch_size)[0]


def generate_interleaved(denoiser: Denoiser, setups: list[SamplingSetup], prompts: list[str], seeds: list[int],
                         batch_size: int = 32) -> list[tuple[torch.Tensor, float]]:
    """``generate`` for several setups, chunk by chunk in turn (setup 1, 2, ... on chunk 1, then on chunk 2),
    so a change in the machine's speed during the run weighs on every setup alike and their seconds compare
    fairly. The videos are those ``generate`` gives: every chunk's sampling depends only on its own seeds."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    videos: list[list[torch.Tensor]] = [[] for _ in setups]
    seconds = [0.0] * len(setups)
    for part in chunks(len(prompts), batch_size):
        for i, setup in enumerate(setups):
            chunk_videos, chunk_seconds = generate_chunk(denoiser, setup, prompts[part], seeds[part])
            videos[i].append(chunk_videos)
            seconds[i] += chunk_seconds
    return [(torch.cat(v), s) for v, s in zip(videos, seconds)]


def data_videos(eval_set: EvalSet, seed_offset: int = 50_000_000) -> torch.Tensor:
    """Held-out real clips with the eval set's attributes (other seeds than any training batch)."""
    attrs, seeds = eval_set.attributes(), eval_set.clip_seeds()
    return torch.stack([domain.render_clip(a, s + seed_offset) for a, s in zip(attrs, seeds)])
