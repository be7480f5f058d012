"""The toy text encoder: a prompt -> ``[tokens, 4096]`` conditioning from a shipped table.

Wan 2.1 expects umT5 hidden states of width 4096. The toy domain's prompts name four attributes
(colour, shape, direction, speed); each known word has a fixed 4096-d vector in
``assets/text_table.safetensors`` (generated once from a seed and shipped, so every machine and
every future torch version sees the same numbers). A prompt becomes four tokens in the fixed order
colour, shape, direction, speed; the empty prompt (the CFG negative) is all zeros.

The tokens are contextual, as umT5's hidden states are: token ``i`` is its own word's vector plus
``CONTEXT_MIX`` times the other words' vectors, rescaled to unit variance. Why: with one vector
per word and nothing shared, a teacher's softmax cross-attention settles on the salient colour
and shape tokens within a few hundred steps, the direction and speed tokens then get almost no
attention weight and hence almost no gradient, and the teacher never learns motion words (run v2
at 2,800 steps predicted the same x0, to 5 decimals, for all four directions). With every token
carrying a share of every word, whatever token the attention picks passes the motion words on.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .domain import ATTRIBUTE_VALUES, parse_prompt

TEXT_DIM = 4096
TOKENS = len(ATTRIBUTE_VALUES)
TABLE_PATH = Path(__file__).parent / "assets" / "text_table.safetensors"
TABLE_SEED = 20261122
CONTEXT_MIX = 0.5


def vocabulary() -> list[str]:
    return [word for values in ATTRIBUTE_VALUES.values() for word in values]


def build_table(seed: int = TABLE_SEED) -> dict[str, torch.Tensor]:
    """The word table, one N(0, 1) vector per word (only used to create the shipped file)."""
    gen = torch.Generator().manual_seed(seed)
    return {word: torch.randn(TEXT_DIM, generator=gen) for word in vocabulary()}


def write_table(path: Path = TABLE_PATH) -> None:
    save_file({k: v.contiguous() for k, v in build_table().items()}, str(path))


@lru_cache(maxsize=1)
def _table() -> dict[str, torch.Tensor]:
    if not TABLE_PATH.exists():
        raise FileNotFoundError(f"toy text table missing at {TABLE_PATH}; the checkout is incomplete")
    return load_file(str(TABLE_PATH))


def encode_prompt(prompt: str) -> torch.Tensor:
    """One prompt -> [TOKENS, 4096]. Empty or whitespace-only prompts give zeros."""
    if not prompt.strip():
        return torch.zeros(TOKENS, TEXT_DIM)
    attrs = parse_prompt(prompt)
    table = _table()
    words = [attrs.colour, attrs.shape, attrs.direction, attrs.speed]
    return _contextual(torch.stack([table[w] for w in words]))


def _contextual(word_vectors: torch.Tensor) -> torch.Tensor:
    """[T, D] independent word vectors -> [T, D] tokens that each carry every word (unit variance)."""
    n = word_vectors.shape[0]
    mix = torch.full((n, n), CONTEXT_MIX)
    mix.fill_diagonal_(1.0)
    mix = mix / mix.pow(2).sum(1, keepdim=True).sqrt()
    return mix @ word_vectors


def encode_prompts(prompts: list[str]) -> torch.Tensor:
    """A batch of prompts -> [B, TOKENS, 4096]."""
    if not prompts:
        raise ValueError("encode_prompts needs at least one prompt")
    return torch.stack([encode_prompt(p) for p in prompts])
