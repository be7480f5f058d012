"""Where a distillation step's conditioning and real latents come from.

``ToyData`` draws prompts and real clips from the synthetic domain (the embedded default).
``EmbeddingData`` serves precomputed text embeddings (computed once with the user's text encoder
and cached in a safetensors file: ``context`` [N, tokens, dim], optional ``negative``) and,
optionally, real latents from a file or folder for the regression and adversarial terms.
Every draw of step ``n`` comes from a generator seeded by ``(seed, n)``, so resumed runs see the
same data an unbroken run would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..seeding import step_generator
from ..toy import codec, domain, text


@dataclass
class StepData:
    context: torch.Tensor
    negative: torch.Tensor
    real_latents: torch.Tensor | None
    latent_shape: tuple[int, ...]
    real_paired: bool = True  # real_latents[i] shows prompt context[i]


class ToyData:
    has_real_latents = True  # every batch renders its prompts' clips

    def __init__(self, batch_size: int, seed: int):
        self.batch_size, self.seed = batch_size, seed

    def batch(self, step: int) -> StepData:
        videos, attrs = domain.make_batch(self.batch_size, seed=self.seed * 1_000_003 + step + 7)
        context = text.encode_prompts([a.prompt for a in attrs])
        real = codec.encode(videos)
        return StepData(context, torch.zeros_like(context), real, tuple(real.shape))

    def preview_prompts(self, count: int):
        """``count`` prompts spread over every attribute combination; toy latents decode without a VAE."""
        from .preview import PreviewPrompts

        attrs = domain.all_attributes()
        chosen = attrs[:: max(1, len(attrs) // count)][:count]
        return PreviewPrompts(text.encode_prompts([a.prompt for a in chosen]), toy_latent_shape(len(chosen)),
                              codec.decode)


def load_latents(path: Path) -> torch.Tensor:
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no .safetensors latent files in {path}")
    tensors = []
    for file in files:
        data = load_file(str(file))
        if "latents" not in data:
            raise ValueError(f"{file} has no 'latents' tensor (keys: {sorted(data)})")
        latents = data["latents"]
        if latents.ndim != 5:
            raise ValueError(f"{file}: latents must be [N, C, F, H, W], got {tuple(latents.shape)}")
        tensors.append(latents.float())
    return torch.cat(tensors)


class EmbeddingData:
    """Precomputed prompt embeddings (and optional real latents), drawn at random each step.

    Used by ``--embeddings`` files (``from_files``) and by the ComfyUI node (the graph's
    conditioning). Real latents given one per prompt are kept paired with their prompts."""

    def __init__(self, context: torch.Tensor, negative: torch.Tensor | None, batch_size: int, seed: int,
                 latent_shape: tuple[int, ...], real: torch.Tensor | None = None):
        self.context = context.float()
        if self.context.ndim != 3 or self.context.shape[0] == 0:
            raise ValueError(f"context must be [N >= 1, tokens, dim], got {tuple(self.context.shape)}")
        self.negative = negative
        if self.negative is not None and self.negative.shape[1:] != self.context.shape[1:]:
            raise ValueError(f"negative {tuple(self.negative.shape)} does not match context {tuple(self.context.shape)}")
        self.real = real
        self.has_real_latents = real is not None
        self.batch_size, self.seed = batch_size, seed
        self.latent_shape = (batch_size, *(self.real.shape[1:] if self.real is not None else latent_shape[1:]))

    @classmethod
    def from_files(cls, embeddings: Path, batch_size: int, seed: int, latent_shape: tuple[int, ...],
                   real_latents: Path | None = None) -> "EmbeddingData":
        data = load_file(str(embeddings))
        if "context" not in data:
            raise ValueError(f"{embeddings} has no 'context' tensor (keys: {sorted(data)})")
        real = load_latents(real_latents) if real_latents else None
        return cls(data["context"], data.get("negative"), batch_size, seed, latent_shape, real)

    def batch(self, step: int) -> StepData:
        gen = step_generator(self.seed, step)
        idx = torch.randint(self.context.shape[0], (self.batch_size,), generator=gen)
        context = self.context[idx]
        negative = (self.negative[torch.zeros_like(idx)] if self.negative is not None and self.negative.shape[0] == 1
                    else self.negative[idx] if self.negative is not None else torch.zeros_like(context))
        real = None
        if self.real is not None:
            # one real latent per prompt: keep the pairs; otherwise an independent draw, unpaired
            real_idx = idx if self.paired else torch.randint(self.real.shape[0], (self.batch_size,), generator=gen)
            real = self.real[real_idx]
        return StepData(context, negative, real, self.latent_shape, self.paired)

    def preview_prompts(self, count: int):
        """The first ``count`` prompts; their latents need the model's VAE, so they are saved as latents."""
        from .preview import PreviewPrompts

        context = self.context[:count]
        return PreviewPrompts(context, (context.shape[0], *self.latent_shape[1:]), None)

    @property
    def paired(self) -> bool:
        """Real latents count as captioned by the prompts when there is exactly one per prompt."""
        return self.real is not None and self.real.shape[0] == self.context.shape[0]


def toy_latent_shape(batch_size: int) -> tuple[int, ...]:
    cfg = domain.DomainConfig()
    return (batch_size, codec.LATENT_CHANNELS, cfg.frames, cfg.height // 2, cfg.width // 2)


def read_prompt_file(path: Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompt file not found: {path}")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"{path} has no prompts (one per line)")
    return prompts


def cached_prompt_embeddings(path: Path, negative_prompt: str, cache_dir: Path) -> Path:
    """Encode a prompt file once with the toy text encoder; later runs reuse the cached file.

    The cache is keyed by the prompts, the negative and the encoder table, so editing the file
    re-encodes. Real Wan teachers need umT5 embeddings: encode them in ComfyUI (or elsewhere) and
    pass ``--embeddings``."""
    import hashlib

    from ..checkpoint import atomic_save_safetensors

    prompts = read_prompt_file(path)
    identity = json.dumps([prompts, negative_prompt, text.CONTEXT_MIX], ensure_ascii=False).encode()
    key = hashlib.sha256(identity + text.TABLE_PATH.read_bytes()).hexdigest()[:16]
    cached = Path(cache_dir) / f"prompt_embeddings-{key}.safetensors"
    if not cached.exists():
        try:
            context = text.encode_prompts(prompts)
            negative = text.encode_prompts([negative_prompt])
        except ValueError as err:
            raise ValueError(f"{path}: {err} (prompt files are encoded with the toy text encoder; for a real Wan "
                             f"teacher give precomputed umT5 embeddings with --embeddings)") from None
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors({"context": context, "negative": negative}, cached,
                                {"stride.kind": "prompt_embeddings", "stride.source": str(path)})
    return cached
