"""The synthetic video domain: procedural clips of one moving shape, with a prompt per clip.

This module owns the data the toy teacher is trained on and measured against. A clip is one
anti-aliased shape (circle, square, triangle) of one colour moving at constant velocity over a
static textured or gradient background, bouncing off the borders, sometimes passing behind an
occluding bar. Everything is deterministic by seed and there is no limit on the number of clips.

Why these choices (see TOY_FEASIBILITY.md): two earlier tries learned colour quickly but never
learned motion, because the direction word carried almost no information the model could not
already read from the noisy input. Here the start position depends on the direction (an object
moving left starts near the right border), so at high noise the direction and speed words decide
where the object is in every frame and the teacher has a strong reason to use them. The
evaluation's attribute classifier is trained with ``start="uniform"`` clips instead, so it can
only read motion from motion, not from where the object happens to be.

Sizes: 9 frames of 32 x 32. 32 px is the smallest size where a 12 px shape still shows its
outline after 2x2 unshuffle and 2x2 patching (one token = 4 x 4 px); 9 frames (odd) lets the
latent interpolator halve the clip to 5 frames and rebuild 9, as Wan's 4k+1 frame counts do.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
DIRECTIONS = ("left", "right", "up", "down")
SPEEDS = ("slowly", "quickly")

COLOUR_RGB = {
    "red": (0.92, 0.16, 0.12),
    "green": (0.15, 0.82, 0.22),
    "blue": (0.18, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.15),
}
# unit displacement per frame, (dx, dy) in pixels, y pointing down
DIRECTION_VECTORS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


@dataclass(frozen=True)
class DomainConfig:
    """Size and motion parameters of the synthetic domain."""

    frames: int = 9
    height: int = 32
    width: int = 32
    radius: float = 6.0
    speed_px: dict = field(default_factory=lambda: {"slowly": 2.0, "quickly": 4.0})
    start: str = "directional"  # "directional" (teacher data) or "uniform" (classifier data)
    start_jitter_px: float = 6.0
    # how much of the free range the coordinate across the motion spans (1: all of it; small values
    # put every object on the midline, a curriculum that makes the prompt decide almost everything)
    cross_spread: float = 1.0
    occlusion_prob: float = 0.15

    def __post_init__(self):
        if self.frames < 2 or self.height < 16 or self.width < 16:
            raise ValueError("the toy domain needs at least 2 frames of 16 x 16 pixels")
        if self.height % 2 or self.width % 2:
            raise ValueError("height and width must be even (2x2 pixel unshuffle)")
        if not 0.0 <= self.cross_spread <= 1.0:
            raise ValueError(f"cross_spread must be in [0, 1], got {self.cross_spread}")
        if self.start not in ("directional", "uniform"):
            raise ValueError(f"start must be 'directional' or 'uniform', got {self.start!r}")


@dataclass(frozen=True)
class ClipAttributes:
    """The ground truth of one clip; the prompt is derived from it."""

    shape: str
    colour: str
    direction: str
    speed: str

    @property
    def prompt(self) -> str:
        return f"a {self.colour} {self.shape} moving {self.direction} {self.speed}"

    def labels(self) -> dict[str, int]:
        return {
            "shape": SHAPES.index(self.shape),
            "colour": COLOURS.index(self.colour),
            "direction": DIRECTIONS.index(self.direction),
            "speed": SPEEDS.index(self.speed),
        }


ATTRIBUTE_VALUES = {"shape": SHAPES, "colour": COLOURS, "direction": DIRECTIONS, "speed": SPEEDS}


def parse_prompt(prompt: str) -> ClipAttributes:
    """Inverse of ``ClipAttributes.prompt``; raises ValueError naming the unknown words."""
    words = prompt.lower().replace(",", " ").split()
    found = {}
    for name, values in ATTRIBUTE_VALUES.items():
        hits = [w for w in words if w in values]
        if len(hits) != 1:
            raise ValueError(
                f"prompt {prompt!r} must name exactly one {name} out of {', '.join(values)}"
            )
        found[name] = hits[0]
    return ClipAttributes(**found)


def all_attributes() -> list[ClipAttributes]:
    return [
        ClipAttributes(s, c, d, v)
        for s in SHAPES
        for c in COLOURS
        for d in DIRECTIONS
        for v in SPEEDS
    ]


def balanced_attributes() -> list[ClipAttributes]:
    """``all_attributes`` reordered so that every prefix is balanced: in the first n clips each value of
    each attribute (shape, colour, direction, speed) occurs as often as the others, give or take one.
    Greedy: the next clip is the unused combination whose values have occurred least so far (ties: the
    earlier one in ``all_attributes``). A prefix of ``all_attributes`` is not balanced (its first 48
    clips hold no triangle)."""
    counts: Counter = Counter()  # (attribute, value index) -> clips so far
    left, ordered = all_attributes(), []
    while left:
        pick = min(left, key=lambda a: sum(counts[item] for item in a.labels().items()))
        left.remove(pick)
        ordered.append(pick)
        counts.update(pick.labels().items())
    return ordered


def _shape_coverage(shape: str, xs: torch.Tensor, ys: torch.Tensor, cx: float, cy: float, r: float):
    """Anti-aliased coverage in [0, 1] of a shape centred at (cx, cy) on a pixel grid."""
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        sdf = torch.sqrt(dx * dx + dy * dy) - r
    elif shape == "square":
        half = r * 0.85
        sdf = torch.maximum(dx.abs(), dy.abs()) - half
    elif shape == "triangle":
        # upward equilateral triangle inscribed in radius r, as the max of three half-planes
        ny = dy - r * 0.2
        edges = [
            ny - r * 0.55,  # bottom edge
            -(math.sqrt(3) / 2) * dx - 0.5 * ny - r * 0.55,
            (math.sqrt(3) / 2) * dx - 0.5 * ny - r * 0.55,
        ]
        sdf = torch.stack(edges).amax(0)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    return (0.5 - sdf).clamp(0.0, 1.0)


def _background(gen: torch.Generator, h: int, w: int) -> torch.Tensor:
    """A dark, low-saturation background: a gradient or a smooth texture. [3, H, W]."""
    base = 0.12 + 0.18 * torch.rand(3, generator=gen)
    base = base.mean() + 0.35 * (base - base.mean())  # keep it greyish
    if torch.rand((), generator=gen) < 0.5:
        angle = 2 * math.pi * torch.rand((), generator=gen).item()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        ramp = math.cos(angle) * xs + math.sin(angle) * ys
        tint = 0.08 * (torch.rand(3, generator=gen) - 0.5)
        img = base[:, None, None] + (0.07 + tint[:, None, None]) * ramp[None]
    else:
        coarse = torch.rand(1, 1, h // 8, w // 8, generator=gen)
        tex = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
        img = base[:, None, None] + 0.12 * (tex - 0.5)
    return img.clamp(0.0, 1.0)


def _trajectory(start: float, velocity: float, frames: int, low: float, high: float) -> list[float]:
    """Positions of a point moving at constant velocity, reflected at [low, high]."""
    positions, pos, vel = [], start, velocity
    for _ in range(frames):
        positions.append(pos)
        pos += vel
        if pos < low:
            pos, vel = 2 * low - pos, -vel
        elif pos > high:
            pos, vel = 2 * high - pos, -vel
    return positions


def render_clip(attrs: ClipAttributes, seed: int, cfg: DomainConfig = DomainConfig()) -> torch.Tensor:
    """Render one clip as a float tensor [3, F, H, W] in [0, 1]; deterministic by seed."""
    gen = torch.Generator().manual_seed(int(seed))
    f, h, w, r = cfg.frames, cfg.height, cfg.width, cfg.radius
    background = _background(gen, h, w)
    dir_x, dir_y = DIRECTION_VECTORS[attrs.direction]
    speed = cfg.speed_px[attrs.speed] * (0.85 + 0.3 * torch.rand((), generator=gen).item())

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand((), generator=gen).item()

    margin = r + 1.0
    if cfg.start == "directional":
        near = margin + uniform(0.0, cfg.start_jitter_px)
        along_x = w - near if dir_x < 0 else near
        along_y = h - near if dir_y < 0 else near
        cx = along_x if dir_x != 0 else w / 2 + cfg.cross_spread * (uniform(margin, w - margin) - w / 2)
        cy = along_y if dir_y != 0 else h / 2 + cfg.cross_spread * (uniform(margin, h - margin) - h / 2)
    else:
        cx, cy = uniform(margin, w - margin), uniform(margin, h - margin)
    xs_traj = _trajectory(cx, dir_x * speed, f, margin - 0.5, w - margin + 0.5)
    ys_traj = _trajectory(cy, dir_y * speed, f, margin - 0.5, h - margin + 0.5)

    occluder = None
    if torch.rand((), generator=gen) < cfg.occlusion_prob:
        # a static grey bar across the path, 3 px wide
        pos = uniform(0.3, 0.7)
        grey = 0.45 + 0.15 * torch.rand((), generator=gen).item()
        occluder = (dir_x == 0, pos, grey)  # horizontal bar for vertical motion

    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    colour = torch.tensor(COLOUR_RGB[attrs.colour])
    colour = (colour + 0.05 * (torch.rand(3, generator=gen) - 0.5)).clamp(0, 1)
    video = torch.empty(3, f, h, w)
    for t in range(f):
        cover = _shape_coverage(attrs.shape, xs, ys, xs_traj[t], ys_traj[t], r)
        frame = background * (1 - cover) + colour[:, None, None] * cover
        if occluder is not None:
            horizontal, pos, grey = occluder
            if horizontal:
                y0 = int(pos * h)
                frame[:, y0 : y0 + 3, :] = grey
            else:
                x0 = int(pos * w)
                frame[:, :, x0 : x0 + 3] = grey
        video[:, t] = frame
    return video


def sample_attributes(gen: torch.Generator) -> ClipAttributes:
    pick = lambda values: values[int(torch.randint(len(values), (), generator=gen))]  # noqa: E731
    return ClipAttributes(pick(SHAPES), pick(COLOURS), pick(DIRECTIONS), pick(SPEEDS))


def make_batch(batch_size: int, seed: int, cfg: DomainConfig = DomainConfig()):
    """A batch of clips [B, 3, F, H, W] and their attributes, deterministic by seed."""
    gen = torch.Generator().manual_seed(int(seed))
    attrs = [sample_attributes(gen) for _ in range(batch_size)]
    return render_clips(attrs, gen, cfg), attrs


def render_clips(attrs: list[ClipAttributes], gen: torch.Generator, cfg: DomainConfig = DomainConfig()) -> torch.Tensor:
    """One clip per attribute set [B, 3, F, H, W], each with a fresh clip seed drawn from ``gen``."""
    clip_seeds = torch.randint(0, 2**62, (len(attrs),), generator=gen).tolist()
    return torch.stack([render_clip(a, s, cfg) for a, s in zip(attrs, clip_seeds)])
