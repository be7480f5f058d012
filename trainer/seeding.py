"""Per-step random generators: every random draw of step ``n`` comes from ``(seed, n, stream)``.

Why one place: pretraining, interpolator training and distillation all resume exactly by seeding
each step's generators from the step number instead of carrying a generator state, and a resumed
run must draw the same numbers as an unbroken one. ``stream`` separates independent uses within a
step (data vs noise, say).
"""

from __future__ import annotations

import torch


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for step ``step`` of a run seeded ``seed``; distinct streams never collide
    with another step's (streams below 7)."""
    if not 0 <= stream < 7:
        raise ValueError(f"stream must be in [0, 7), got {stream}")
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step) * 7 + stream)
