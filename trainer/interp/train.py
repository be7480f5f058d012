"""Training the learned latent interpolator (``python -m trainer interp``).

The objective is the paper's (METHODS.md 1b): rebuild full clean latents from every second frame,
``x0[:, :, ::2] -> x0``, with MSE on the rebuilt (odd) frames. Clean latents come from the toy
domain (``codec.encode(domain.make_batch(...))``, fresh clips every step) or from a file or folder
of teacher latents ``[N, C, F, H, W]`` (``--latents``; the last clips are held out). Two cheap,
exact augmentations: the same task one frame later (``x0[:, :, 1::2] -> x0[:, :, 1:]``) and time
reversal (swapping the two input frames leaves the middle unchanged). Channels that are trivial
(``latent.trivial_channels``) in every pair of the held-out and first training clips are recorded as
the interpolator's ``blend_channels``: it never learns them, so it blends them at inference even
where generated latents only approximate them (the toy codec's coordinate padding; real VAE latents
have none). Runs stop and resume: every ``checkpoint_every`` steps the full state goes atomically to
``state_dir`` (outside the repository), and every random draw of step ``n`` comes from a generator
seeded by ``(seed, n)``, so a resumed run equals an unbroken one. At the end the EMA weights are
exported atomically with their held-out odd-frame MSE next to the training-free methods' in the
file's metadata.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import atomic_torch_save, load_state
from ..seeding import step_generator
from ..config import add_dataclass_flags, config_to_dict, load_config
from .latent import check_video_latent, frame_pairs, odd_frame_mse, trivial_channels
from .model import INTERPOLATION_METHODS, InterpolatorArch, LatentFunction, LatentInterpolator, save_interpolator

DEFAULT_STATE_DIR = Path.home() / ".cache" / "comfyui-stride" / "latent_interpolator"
TOY_HOLDOUT_SEED = 555_555_555  # far from the training seeds seed * 1_000_003 + step
BASELINE_METHODS = ("linear", "slerp", "motion_compensated")


@dataclass
class InterpTrainConfig:
    steps: int = 3000
    batch_size: int = 8  # clips per step; each gives up to F - 2 training triplets
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    seed: int = 0
    widths: tuple[int, ...] = (32, 64, 128)
    both_phases: bool = True  # also rebuild frames 2, 4, ... from 1, 3, ... (the same task, more pairs)
    latents: Path | None = None  # teacher latents: .safetensors/.pt file or folder; None = toy domain
    holdout_clips: int = 128
    threads: int = 1  # 0: leave torch's default
    checkpoint_every: int = 100
    eval_every: int = 500
    state_dir: Path = DEFAULT_STATE_DIR
    export_path: Path | None = None  # default: state_dir / "latent_interpolator.safetensors"
    progress: bool = True

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.holdout_clips < 1:
            raise ValueError("steps, batch_size and holdout_clips must be positive")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


# --- data -----------------------------------------------------------------------------------------

class ToyDomainLatents:
    """Fresh toy clips every step, encoded with the lossless codec (the teacher's latent space)."""

    def __init__(self, cfg: InterpTrainConfig):
        self.cfg = cfg

    def training_batch(self, step: int, generator: torch.Generator) -> torch.Tensor:
        from ..toy import codec, domain

        return codec.encode(domain.make_batch(self.cfg.batch_size, seed=self.cfg.seed * 1_000_003 + step)[0])

    def holdout(self) -> torch.Tensor:
        from ..toy import codec, domain

        return codec.encode(domain.make_batch(self.cfg.holdout_clips, seed=TOY_HOLDOUT_SEED)[0])

    def describe(self) -> str:
        return "toy domain (codec latents)"


class FileLatents:
    """Teacher latents read once from a file or a folder of files; the last clips are held out."""

    def __init__(self, cfg: InterpTrainConfig):
        self.cfg = cfg
        self.path = Path(cfg.latents)
        latents = load_latent_clips(self.path)
        holdout = min(cfg.holdout_clips, max(1, latents.shape[0] // 10))
        if latents.shape[0] <= holdout:
            raise ValueError(f"{self.path} holds {latents.shape[0]} clip(s); training needs at least 2")
        self.train, self.held_out = latents[:-holdout], latents[-holdout:]

    def training_batch(self, step: int, generator: torch.Generator) -> torch.Tensor:
        return self.train[torch.randint(self.train.shape[0], (self.cfg.batch_size,), generator=generator)]

    def holdout(self) -> torch.Tensor:
        return self.held_out

    def describe(self) -> str:
        return f"{self.path.name} ({self.train.shape[0]} training clips, {self.held_out.shape[0]} held out)"


def load_latent_clips(path: Path) -> torch.Tensor:
    """All 5-D tensors ``[N, C, F, H, W]`` of a .safetensors/.pt file, or of every such file in a folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"latents not found: {path}")
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".pt")) if path.is_dir() else [path]
    tensors = []
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(str(file))
        elif file.suffix == ".pt":
            loaded = torch.load(file, map_location="cpu", weights_only=True)
        else:
            raise ValueError(f"latent files must be .safetensors or .pt, got {file.name}")
        items = loaded.values() if isinstance(loaded, dict) else [loaded]
        tensors += [t.float() for t in items if isinstance(t, torch.Tensor) and t.ndim == 5]
    if not tensors:
        raise ValueError(f"no 5-D latent tensors [N, C, F, H, W] found in {path}")
    shapes = {tuple(t.shape[1:]) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"latents in {path} differ in [C, F, H, W]: {sorted(shapes)}")
    latents = torch.cat(tensors)
    check_video_latent(latents, f"latents in {path}", min_frames=3)
    return latents


# --- objective ------------------------------------------------------------------------------------

def training_triplets(x0: torch.Tensor, both_phases: bool = True):
    """``(start, end, middle)`` batches ``[N, C, H, W]`` for ``x0[:, :, ::2] -> x0`` (and one frame later)."""
    starts, ends, middles = [], [], []
    for offset in (0, 1) if both_phases else (0,):
        clip = x0[:, :, offset:]
        clip = clip[:, :, : clip.shape[2] - (1 - clip.shape[2] % 2)]  # an odd number of frames
        if clip.shape[2] < 3:
            continue
        b, c, _, h, w = clip.shape
        starts.append(clip[:, :, 0:-1:2].transpose(1, 2).reshape(-1, c, h, w))
        ends.append(clip[:, :, 2::2].transpose(1, 2).reshape(-1, c, h, w))
        middles.append(clip[:, :, 1::2].transpose(1, 2).reshape(-1, c, h, w))
    if not starts:
        raise ValueError(f"latents need at least 3 frames to train an interpolator, got shape {tuple(x0.shape)}")
    return torch.cat(starts), torch.cat(ends), torch.cat(middles)


def interpolation_loss(model: LatentInterpolator, x0: torch.Tensor, generator: torch.Generator,
                       both_phases: bool = True) -> torch.Tensor:
    start, end, middle = training_triplets(x0, both_phases)
    reverse = (torch.rand(start.shape[0], generator=generator) < 0.5).reshape(-1, 1, 1, 1)
    start, end = torch.where(reverse, end, start), torch.where(reverse, start, end)
    return (model(start, end) - middle).pow(2).mean()


def odd_frame_errors(latents: torch.Tensor, methods: dict[str, LatentFunction]) -> dict[str, float]:
    """Held-out MSE on the odd frames when each method rebuilds ``latents`` from ``latents[:, :, ::2]``."""
    latents = latents[:, :, : latents.shape[2] - (1 - latents.shape[2] % 2)]
    anchors = latents[:, :, ::2]
    with torch.no_grad():
        return {name: odd_frame_mse(method(anchors), latents) for name, method in methods.items()}


def constant_channels(*latents: torch.Tensor) -> tuple[int, ...]:
    """Channels trivial (blend exact) in every pair of neighbouring frames and of every second frame of
    every clip of ``latents`` (each ``[N, C, F, H, W]``): what the interpolator never sees vary."""
    always = None
    for clips in latents:
        for view in (clips, clips[:, :, ::2]):
            if view.shape[2] < 2:
                continue
            pairs = trivial_channels(*frame_pairs(view)).flatten(1).all(0)
            always = pairs if always is None else always & pairs
    return () if always is None else tuple(int(c) for c in torch.nonzero(always).flatten())


def lr_at(cfg: InterpTrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class _StopFlag:
    def __init__(self):
        self.stop = False

    def __call__(self, *_):
        self.stop = True


# --- the job ----------------------------------------------------------------------------------------

def train_interpolator(cfg: InterpTrainConfig) -> dict:
    """Train (or resume) an interpolator, export its EMA weights; returns paths, steps and held-out MSEs."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    source = FileLatents(cfg) if cfg.latents is not None else ToyDomainLatents(cfg)
    holdout = source.holdout()
    arch = InterpolatorArch(latent_channels=holdout.shape[1], widths=tuple(cfg.widths))
    state_dir = Path(cfg.state_dir)
    state_path, log_path = state_dir / "state.pt", state_dir / "log.jsonl"
    export_path = Path(cfg.export_path) if cfg.export_path else state_dir / "latent_interpolator.safetensors"

    torch.manual_seed(cfg.seed)
    model = LatentInterpolator(arch).train()
    ema = LatentInterpolator(arch).eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    first_batch = source.training_batch(0, step_generator(cfg.seed, 0, 1))
    model.blend_channels = ema.blend_channels = constant_channels(holdout, first_batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    state = load_state(state_path)
    if state is not None:
        if state["arch"] != arch.to_json():
            raise ValueError(f"{state_path} holds a different architecture {state['arch']}; "
                             f"use another --state-dir or the same --widths")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        print(f"resuming from step {start} ({state_path})", flush=True)

    def save(step: int):
        atomic_torch_save({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                           "step": step, "arch": arch.to_json(), "config": config_to_dict(cfg)}, state_path)

    def evaluate(step: int) -> dict:
        record = {"step": step, "heldout_odd_frame_mse": odd_frame_errors(holdout, {"learned": ema.interpolate})}
        state_dir.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        return record

    stop = _StopFlag()
    previous_handlers = signal.signal(signal.SIGINT, stop), signal.signal(signal.SIGTERM, stop)
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="latent interpolator", dynamic_ncols=True)
    started = time.time()
    done = start
    try:
        for step in range(start, cfg.steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, step)
            generator = step_generator(cfg.seed, step, 1)
            loss = interpolation_loss(model, source.training_batch(step, generator), generator, cfg.both_phases)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at step {step}; last good state kept at {state_path}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            with torch.no_grad():
                decay = min(cfg.ema_decay, (1 + step) / (10 + step))
                for ema_param, param in zip(ema.parameters(), model.parameters()):
                    ema_param.lerp_(param.detach(), 1 - decay)
            done = step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.5f}")
            if done % cfg.checkpoint_every == 0 or done == cfg.steps or stop.stop:
                save(done)
            if done % cfg.eval_every == 0 and done != cfg.steps:
                record = evaluate(done)
                if bar is not None:
                    bar.write(json.dumps(record))
            if stop.stop:
                print(f"\nstopped at step {done}; state saved to {state_path}; run again to resume", flush=True)
                return {"state_path": str(state_path), "steps": done, "finished": False}
    finally:
        signal.signal(signal.SIGINT, previous_handlers[0])
        signal.signal(signal.SIGTERM, previous_handlers[1])
        if bar is not None:
            bar.close()

    baselines = {name: INTERPOLATION_METHODS[name]() for name in BASELINE_METHODS}
    metrics = odd_frame_errors(holdout, {**baselines, "learned": ema.interpolate})
    evaluate(done)
    save_interpolator(ema, export_path, {
        "stride.training_steps": str(done),
        "stride.heldout_odd_frame_mse": metrics,
        "stride.heldout_clips": str(holdout.shape[0]),
        "stride.data": source.describe(),
        "stride.latent_space": "model space (what the diffusion model sees: ComfyUI LATENT after process_in)",
        "stride.config": {k: v for k, v in config_to_dict(cfg).items() if k not in ("state_dir", "export_path")},
        "stride.train_seconds_this_run": f"{time.time() - started:.0f}",
    })
    return {"export_path": str(export_path), "state_path": str(state_path), "steps": done, "finished": True,
            "heldout_odd_frame_mse": metrics}


def add_arguments(parser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="TOML or JSON file of InterpTrainConfig fields")
    add_dataclass_flags(parser, InterpTrainConfig)


def run(args) -> int:
    cfg = load_config(InterpTrainConfig, args, args.config)
    result = train_interpolator(cfg)
    print(json.dumps(result, indent=2))
    return 0
