"""The evaluation's own video network: an attribute classifier whose penultimate layer is the feature
space of the toy Fréchet distance.

No feature network can be downloaded for the synthetic domain, so the project trains one (METHODS.md
section 6). ``VideoClassifier`` is a small 3-D convolutional network on a clip and its frame
differences: a per-frame full-resolution stem, three 3x3x3 blocks of 32/64/96 channels with max
pooling between them, a spatial max per frame (time is kept, so the order of events survives), a
128-d layer-normalised feature and four linear heads for shape, colour, direction and speed.
``train_classifier`` trains it on fresh clips, half with ``start="uniform"`` (so direction and
speed can only be read from motion, not from where the object starts) and half with the teacher's
directional starts. Augmentations mimic generated-video artefacts (blur, noise, colour and
brightness jitter, per-frame flicker, sub-pixel frame jitter, down/up-sampling) but move frames by
at most a quarter pixel, so speed stays readable; they are phased in over the first 30% of
training. Training is deterministic by seed and the shipped weights
(``assets/toy_video_classifier.safetensors``, float32, about 1.4 MB) carry their config, held-out
accuracies, step count and wall-clock time as metadata. Retrain with
``python -m trainer toy classifier [--steps N] [--seed S] [--out PATH]`` (one thread by default).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import atomic_save_safetensors
from ..toy.domain import ATTRIBUTE_VALUES, ClipAttributes, DomainConfig, make_batch

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "assets" / "toy_video_classifier.safetensors"
ATTRIBUTES = ("shape", "colour", "direction", "speed")
# held-out clips come from a seed range that training (2 * (seed * 1e6 + step) + 0/1) never reaches
HELD_OUT_SEED = 7_000_000_000_000
START_MODES = ("uniform", "directional")


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture and training schedule of the toy video classifier."""

    stem_channels: int = 16
    channels: tuple = (32, 64, 96)
    feature_dim: int = 128
    time_bins: int = 9  # one per frame of a toy clip
    steps: int = 1200
    batch_size: int = 32  # half uniform starts, half directional starts
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    # augmented share of each batch: 0 at the start, rising linearly to augment_share by
    # augment_ramp * steps (heavily augmented clips from step 0 kept circle and square apart
    # at chance for 500 steps; clean clips first let the corner detectors form)
    augment_share: float = 0.8
    augment_ramp: float = 0.3
    seed: int = 0
    held_out_clips: int = 512  # per start mode
    log_every: int = 100

    def to_json(self) -> str:
        return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()})

    @classmethod
    def from_json(cls, text: str) -> "ClassifierConfig":
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known})


def _conv_norm_act(in_channels: int, out_channels: int, kernel: tuple) -> nn.Sequential:
    padding = tuple(k // 2 for k in kernel)
    return nn.Sequential(nn.Conv3d(in_channels, out_channels, kernel, padding=padding), nn.BatchNorm3d(out_channels), nn.GELU())


class VideoClassifier(nn.Module):
    """Clips [B, 3, F, H, W] in [0, 1] (H, W divisible by 8) -> 128-d features and attribute logits.

    A per-frame full-resolution stem, then three 3x3x3 blocks with 2x2 max pooling between them.
    Max (not average, not strided) pooling keeps one-pixel details: a square's corner against a
    circle's arc. Space is max-pooled per frame, time is kept, so "which way did it move first"
    survives, which decides the direction label when the object bounces off a border later on.
    Uses BatchNorm: call ``eval()`` before ``features`` (``load_classifier`` returns it in eval mode).
    """

    def __init__(self, cfg: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.cfg = cfg
        in_channels = 2 * 3  # frames and their forward differences
        self.stem = _conv_norm_act(in_channels, cfg.stem_channels, (1, 3, 3))
        blocks, previous = [], cfg.stem_channels
        for width in cfg.channels:
            blocks.append(_conv_norm_act(previous, width, (3, 3, 3)))
            previous = width
        self.blocks = nn.ModuleList(blocks)
        self.to_feature = nn.Linear(previous * cfg.time_bins, cfg.feature_dim)
        self.feature_norm = nn.LayerNorm(cfg.feature_dim)
        self.heads = nn.ModuleDict({name: nn.Linear(cfg.feature_dim, len(ATTRIBUTE_VALUES[name])) for name in ATTRIBUTES})

    def _prepare(self, videos: torch.Tensor) -> torch.Tensor:
        if videos.ndim != 5 or videos.shape[1] != 3:
            raise ValueError(f"expected videos [B, 3, F, H, W], got shape {tuple(videos.shape)}")
        if videos.shape[-1] % 8 or videos.shape[-2] % 8 or videos.shape[2] < 2:
            raise ValueError(f"need >= 2 frames with height and width divisible by 8, got {tuple(videos.shape[2:])}")
        x = (videos.float() - 0.5) * 2.0
        diff = F.pad(x[:, :, 1:] - x[:, :, :-1], (0, 0, 0, 0, 0, 1))
        return torch.cat([x, diff], dim=1)

    def features(self, videos: torch.Tensor) -> torch.Tensor:
        """[B, 3, F, H, W] -> [B, feature_dim]; the space of the toy Fréchet distance."""
        x = F.max_pool3d(self.stem(self._prepare(videos)), (1, 2, 2))
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index < len(self.blocks) - 1:
                x = F.max_pool3d(x, (1, 2, 2))
        per_frame = x.amax((3, 4))  # [B, C, F]
        per_bin = F.adaptive_avg_pool1d(per_frame, self.cfg.time_bins)
        return self.feature_norm(self.to_feature(per_bin.flatten(1)))

    def logits(self, videos: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(videos)
        return {name: head(feats) for name, head in self.heads.items()}

    def forward(self, videos: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.logits(videos)

    @torch.no_grad()
    def predict(self, videos: torch.Tensor, chunk: int = 64) -> dict[str, torch.Tensor]:
        """Predicted label indices per attribute, {name: LongTensor [B]} (indices into domain tuples)."""
        parts = [self.logits(videos[i : i + chunk].to(self._device())) for i in range(0, len(videos), chunk)]
        return {name: torch.cat([p[name] for p in parts]).argmax(-1).cpu() for name in ATTRIBUTES}

    @torch.no_grad()
    def embed(self, videos: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """``features`` without gradients, in chunks, on CPU: [B, feature_dim] float32."""
        parts = [self.features(videos[i : i + chunk].to(self._device())).float().cpu() for i in range(0, len(videos), chunk)]
        return torch.cat(parts) if parts else torch.zeros(0, self.cfg.feature_dim)

    def _device(self) -> torch.device:
        return next(self.parameters()).device


def labels_tensor(attrs: list[ClipAttributes]) -> dict[str, torch.Tensor]:
    """{attribute: LongTensor [B]} of ground-truth label indices."""
    rows = [a.labels() for a in attrs]
    return {name: torch.tensor([r[name] for r in rows], dtype=torch.long) for name in ATTRIBUTES}


# ---------------------------------------------------------------------------------------------
# augmentations: each draws from one generator, so a step's batch is a pure function of the seed


def _gaussian_blur(videos: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-clip separable spatial blur; sigma [B] in pixels (0 leaves a clip unchanged)."""
    radius = 2
    offsets = torch.arange(-radius, radius + 1, dtype=videos.dtype)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    kernel = kernel / kernel.sum(-1, keepdim=True)  # [B, 5]
    b, c, f, h, w = videos.shape
    x = videos.permute(0, 1, 2, 3, 4).reshape(1, b * c * f, h, w)
    weights = kernel.repeat_interleave(c * f, dim=0)  # [B*C*F, 5]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), weights[:, None, None, :], groups=b * c * f)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), weights[:, None, :, None], groups=b * c * f)
    return x.reshape(b, c, f, h, w)


def _shift_frames(videos: torch.Tensor, shift_xy: torch.Tensor) -> torch.Tensor:
    """Translate every frame by its own sub-pixel (dx, dy); shift_xy [B, F, 2] in pixels."""
    b, c, f, h, w = videos.shape
    frames = videos.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    theta = torch.zeros(b * f, 2, 3, dtype=videos.dtype)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -shift_xy.reshape(-1, 2)[:, 0] * 2.0 / w
    theta[:, 1, 2] = -shift_xy.reshape(-1, 2)[:, 1] * 2.0 / h
    grid = F.affine_grid(theta, (b * f, c, h, w), align_corners=False)
    moved = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return moved.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def augment_videos(videos: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Generated-video artefacts on a batch [B, 3, F, H, W]; deterministic given ``gen``."""
    b, c, f, h, w = videos.shape

    def chance(p: float) -> torch.Tensor:
        return (torch.rand(b, generator=gen) < p).float()

    def uniform(lo: float, hi: float, *shape) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=gen)

    x = videos
    # sub-pixel frame jitter, at most 0.25 px per frame: the slow/quick gap is >= 1.1 px per frame,
    # and a clip that bounces on its first step shows a first step >= 1 px shorter than the next
    jitter = uniform(-0.25, 0.25, b, f, 2) * chance(0.25)[:, None, None]
    x = _shift_frames(x, jitter)
    # blur: a smooth generator output or a soft decoder
    sigma = uniform(0.3, 0.9, b) * chance(0.35)
    x = torch.where(sigma[:, None, None, None, None] > 0, _gaussian_blur(x, sigma), x)
    # down/up-sampling: blocky low-resolution generations
    low_res = chance(0.1).bool()
    if low_res.any():
        small = F.interpolate(x[low_res].reshape(-1, c * f, h, w), scale_factor=0.5, mode="area")
        x = x.clone()
        x[low_res] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).reshape(-1, c, f, h, w)
    # colour: per-channel gain, brightness offset, and saturation change around grey
    on = chance(0.8)[:, None, None, None, None]
    gain = 1.0 + uniform(-0.07, 0.07, b, 3)[:, :, None, None, None] * on
    offset = uniform(-0.05, 0.05, b)[:, None, None, None, None] * on
    grey = x.mean(1, keepdim=True)
    saturation = 1.0 + uniform(-0.2, 0.2, b)[:, None, None, None, None] * on
    x = grey + (x - grey) * saturation
    x = x * gain + offset
    # per-frame brightness flicker
    flicker = torch.randn(b, 1, f, 1, 1, generator=gen) * 0.02 * chance(0.3)[:, None, None, None, None]
    x = x + flicker
    # additive noise
    noise_std = uniform(0.0, 0.05, b) * chance(0.5)
    x = x + torch.randn(x.shape, generator=gen) * noise_std[:, None, None, None, None]
    return x.clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# training and evaluation


def training_batch(step: int, cfg: ClassifierConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Fresh clips for one step: half uniform starts, half directional; deterministic by (seed, step)."""
    half = cfg.batch_size // 2
    base = cfg.seed * 1_000_000 + step
    uniform_videos, uniform_attrs = make_batch(half, 2 * base, DomainConfig(start="uniform"))
    directional_videos, directional_attrs = make_batch(cfg.batch_size - half, 2 * base + 1, DomainConfig())
    videos = torch.cat([uniform_videos, directional_videos])
    return videos, labels_tensor(uniform_attrs + directional_attrs)


def held_out_clips(start: str, clips: int, seed_offset: int = 0) -> tuple[torch.Tensor, list[ClipAttributes]]:
    """Clean clips never seen in training (a separate seed range) for one start mode."""
    seed = HELD_OUT_SEED + seed_offset * 2 + START_MODES.index(start)
    return make_batch(clips, seed, DomainConfig(start=start))


def evaluate_accuracy(model: VideoClassifier, videos: torch.Tensor, attrs: list[ClipAttributes]) -> dict[str, float]:
    was_training = model.training
    model.eval()
    predicted = model.predict(videos)
    model.train(was_training)
    truth = labels_tensor(attrs)
    return {name: float((predicted[name] == truth[name]).float().mean()) for name in ATTRIBUTES}


def _augment_share_of_batch(videos: torch.Tensor, step: int, cfg: ClassifierConfig) -> torch.Tensor:
    share = cfg.augment_share * min(1.0, step / max(1.0, cfg.augment_ramp * cfg.steps))
    if share <= 0:
        return videos
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    augmented = augment_videos(videos, gen)
    chosen = torch.rand(videos.shape[0], generator=gen) < share
    return torch.where(chosen[:, None, None, None, None], augmented, videos)


def _learning_rate(step: int, cfg: ClassifierConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_classifier(cfg: ClassifierConfig = ClassifierConfig(), out_path: Path | str = DEFAULT_WEIGHTS) -> dict:
    """Train on fresh domain clips, save the weights atomically, return held-out metrics.

    The metrics are measured on the trained weights in eval mode, on ``held_out_clips``
    clean clips of each start mode: ``{"uniform": {attr: acc}, "directional": {...}, "min": x, ...}``.
    """
    torch.manual_seed(cfg.seed)
    model = VideoClassifier(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    started = time.time()
    model.train()
    running = {}
    for step in range(cfg.steps):
        videos, labels = training_batch(step, cfg)
        videos = _augment_share_of_batch(videos, step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, cfg)
        logits = model(videos)
        losses = {name: F.cross_entropy(logits[name], labels[name]) for name in ATTRIBUTES}
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        for name, value in losses.items():
            running[name] = 0.9 * running.get(name, value.item()) + 0.1 * value.item()
        if cfg.log_every and (step + 1) % cfg.log_every == 0:
            elapsed = time.time() - started
            parts = " ".join(f"{k}={v:.3f}" for k, v in running.items())
            print(f"step {step + 1}/{cfg.steps} {elapsed:.0f}s loss {parts}", flush=True)
    train_seconds = time.time() - started

    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    model.eval()
    metrics: dict = {}
    for start in START_MODES:
        videos, attrs = held_out_clips(start, cfg.held_out_clips)
        metrics[start] = evaluate_accuracy(model, videos, attrs)
    metrics["min"] = min(min(m.values()) for k, m in metrics.items() if k in START_MODES)
    metrics["train_steps"] = cfg.steps
    metrics["train_seconds"] = round(train_seconds, 1)
    metadata = {
        "format": "stride-toy-video-classifier-v1",
        "config": cfg.to_json(),
        "held_out_accuracy": json.dumps({k: metrics[k] for k in START_MODES}),
        "held_out_clips_per_mode": str(cfg.held_out_clips),
        "train_steps": str(cfg.steps),
        "train_seconds": f"{train_seconds:.1f}",
        "torch_threads": str(torch.get_num_threads()),
    }
    atomic_save_safetensors(state, Path(out_path), metadata)
    return metrics


def load_classifier(path: Path | str | None = None, device: str | torch.device = "cpu") -> VideoClassifier:
    """Load shipped (or freshly trained) weights into an eval-mode ``VideoClassifier``."""
    from safetensors import safe_open

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.exists():
        raise FileNotFoundError(
            f"classifier weights not found at {path}; train them with `python -m trainer toy classifier`"
        )
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    cfg = ClassifierConfig.from_json(metadata["config"]) if "config" in metadata else ClassifierConfig()
    model = VideoClassifier(cfg)
    model.load_state_dict(state)
    return model.to(device).eval()


def classifier_metadata(path: Path | str | None = None) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(Path(path) if path is not None else DEFAULT_WEIGHTS), framework="pt") as handle:
        return dict(handle.metadata() or {})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=ClassifierConfig.steps)
    parser.add_argument("--seed", type=int, default=ClassifierConfig.seed)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)


def run(args: argparse.Namespace) -> int:
    """``python -m trainer toy classifier``: train and write the evaluation classifier."""
    torch.set_num_threads(args.threads)
    metrics = train_classifier(ClassifierConfig(steps=args.steps, seed=args.seed), args.out)
    print(json.dumps(metrics, indent=2))
    return 0
