"""Pretraining the tiny Wan teacher on the synthetic domain (``python -m trainer toy pretrain``).

Rectified-flow training with CFG dropout, an EMA of the weights, bf16 autocast and optional
``torch.compile`` on the CPU. Runs take hours here, so they stop and restart: every
``checkpoint_every`` steps the full state (weights, EMA, optimizer, step) is written atomically to
``state_dir`` (outside the repository), and every random draw of step ``n`` comes from generators
seeded by ``(seed, n)``, so a resumed run continues exactly as an unbroken one would.
Validation logs the EMA model's loss with the right prompt and with the direction or speed word
swapped: a teacher that ignores motion words shows no gap between them (TOY_FEASIBILITY.md).
"""

from __future__ import annotations

import json
import math
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import flow
from ..backends.diffusers_wan import DiffusersWanDenoiser
from ..checkpoint import atomic_torch_save, load_state
from ..seeding import step_generator
from . import codec, domain, text
from .teacher import TeacherArch, arch_metadata, build_diffusers_wan, save_wan_file

DEFAULT_STATE_DIR = Path.home() / ".cache" / "comfyui-stride" / "toy_teacher"


@dataclass
class PretrainConfig:
    steps: int = 20000
    batch_size: int = 16
    lr: float = 4e-4
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    cfg_dropout: float = 0.1
    sigma_logit_mean: float = 0.3  # more high-noise samples: where the prompt decides the layout
    sigma_logit_std: float = 1.0
    padding_loss_weight: float = 0.1
    seed: int = 0
    num_heads: int = 2
    num_layers: int = 3
    ffn_dim: int = 512
    bf16: bool = True
    compile: bool = True
    threads: int = 0  # 0: leave torch's default
    checkpoint_every: int = 200
    validate_every: int = 250
    state_dir: Path = DEFAULT_STATE_DIR
    # motion curriculum: from step curriculum_from, objects start on the midline of their path
    # (cross_spread curriculum_spread) with little jitter, widening linearly to the full domain
    # over curriculum_steps (0: off). With the full domain from the start the teacher learns colour
    # and shape but leaves direction words unused for thousands of steps; on near-deterministic
    # trajectories the same model starts using them within ~150 steps (measured).
    curriculum_from: int = 0
    curriculum_steps: int = 0
    curriculum_spread: float = 0.15
    curriculum_jitter: float = 1.0
    # motion warm-up, before the curriculum: motion_warmup_steps steps from motion_warmup_from on
    # one colour, one shape and one speed (so the prompts differ only in direction) on midline
    # starts, at high noise only. Measured from a teacher that ignored direction words: the
    # direction-swap gap reached 0.06 within 250 such steps, and kept growing (0.008 -> 0.021 in
    # 150 steps) once every attribute came back; without the warm-up it stayed at 0.
    motion_warmup_from: int = 0
    motion_warmup_steps: int = 0
    # share of every batch drawn at high noise (sigma ~ U[0.8, 0.99]), where the prompt decides the layout
    high_sigma_share: float = 0.0
    init_from: Path | None = None  # with no resume state: start from compact weights (e.g. the shipped file)
    progress: bool = True

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")
        if not 0 <= self.cfg_dropout < 1:
            raise ValueError("cfg_dropout must be in [0, 1)")
        if self.curriculum_steps < 0 or self.curriculum_from < 0 or not 0 <= self.curriculum_spread <= 1:
            raise ValueError("curriculum_steps and curriculum_from must be >= 0, curriculum_spread in [0, 1]")
        if self.motion_warmup_steps < 0 or self.motion_warmup_from < 0 or not 0 <= self.high_sigma_share <= 1:
            raise ValueError("motion_warmup_* must be >= 0 and high_sigma_share in [0, 1]")

    @property
    def arch(self) -> TeacherArch:
        return TeacherArch(self.num_heads, self.num_layers, self.ffn_dim)


def domain_at(cfg: PretrainConfig, step: int) -> domain.DomainConfig:
    """The training domain of step ``step`` (the curriculum's stage, or the full domain)."""
    full = domain.DomainConfig()
    if cfg.curriculum_steps <= 0 or step < cfg.curriculum_from:
        return full
    progress = min(1.0, (step - cfg.curriculum_from) / cfg.curriculum_steps)
    return domain.DomainConfig(
        cross_spread=cfg.curriculum_spread + progress * (full.cross_spread - cfg.curriculum_spread),
        start_jitter_px=cfg.curriculum_jitter + progress * (full.start_jitter_px - cfg.curriculum_jitter),
    )


def in_motion_warmup(cfg: PretrainConfig, step: int) -> bool:
    return cfg.motion_warmup_from <= step < cfg.motion_warmup_from + cfg.motion_warmup_steps


MOTION_WARMUP_ATTRIBUTES = ("red", "square", "slowly")  # colour, shape, speed held fixed


def _warmup_batch(cfg: PretrainConfig, step: int):
    """One colour, shape and speed, a random direction each, midline starts (the curriculum's narrowest)."""
    gen = step_generator(cfg.seed, step, 2)
    colour, shape, speed = MOTION_WARMUP_ATTRIBUTES
    attrs = [domain.ClipAttributes(shape, colour, domain.DIRECTIONS[int(torch.randint(4, (), generator=gen))], speed)
             for _ in range(cfg.batch_size)]
    narrow = domain.DomainConfig(cross_spread=cfg.curriculum_spread, start_jitter_px=cfg.curriculum_jitter)
    return domain.render_clips(attrs, gen, narrow), attrs


def training_batch(cfg: PretrainConfig, step: int):
    """Everything random about step `step`: clean latents, noise, sigmas, context, dropout."""
    warmup = in_motion_warmup(cfg, step)
    if warmup:
        videos, attrs = _warmup_batch(cfg, step)
    else:
        videos, attrs = domain.make_batch(cfg.batch_size, seed=cfg.seed * 1_000_003 + step, cfg=domain_at(cfg, step))
    x0 = codec.encode(videos)
    gen = step_generator(cfg.seed, step, 1)
    noise = torch.randn(x0.shape, generator=gen)
    sigma = torch.sigmoid(cfg.sigma_logit_mean + cfg.sigma_logit_std * torch.randn(cfg.batch_size, generator=gen))
    high = cfg.batch_size if warmup else round(cfg.high_sigma_share * cfg.batch_size)
    if high:
        sigma[:high] = 0.8 + 0.19 * torch.rand(high, generator=step_generator(cfg.seed, step, 3))
    context = text.encode_prompts([a.prompt for a in attrs])
    drop = torch.rand(cfg.batch_size, generator=gen) < cfg.cfg_dropout
    context[drop] = 0.0
    return x0, noise, sigma, context


def flow_loss(model, x0, noise, sigma, context, padding_weight: float, bf16: bool) -> torch.Tensor:
    x_sigma = flow.add_noise(x0, noise, sigma)
    pred = DiffusersWanDenoiser(model, torch.bfloat16 if bf16 else None).predict_velocity(x_sigma, sigma, context)
    err = (pred - flow.velocity_target(x0, noise)).pow(2)
    mask = codec.data_channel_mask(err).flatten()
    channel_weights = mask + padding_weight * (1 - mask)
    per_channel = err.mean(dim=(2, 3, 4))  # [B, C]
    return (per_channel * channel_weights).sum(1).mean() / channel_weights.sum()


def lr_at(cfg: PretrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


_SWAP = {"left": "right", "right": "left", "up": "down", "down": "up", "slowly": "quickly", "quickly": "slowly"}


@torch.no_grad()
def validation_losses(model, cfg: PretrainConfig, n: int = 32, sigma_range: tuple[float, float] = (0.3, 0.95),
                      seed: int = 987_654_321) -> dict[str, float]:
    """Loss on held-out clips with the true prompt, motion words swapped, and no prompt."""
    videos, attrs = domain.make_batch(n, seed=seed)
    x0 = codec.encode(videos)
    gen = torch.Generator().manual_seed(4242)
    noise = torch.randn(x0.shape, generator=gen)
    sigma = torch.linspace(*sigma_range, n)
    variants = {
        "true": [a.prompt for a in attrs],
        "swap_direction": [a.prompt.replace(a.direction, _SWAP[a.direction]) for a in attrs],
        "swap_speed": [a.prompt.replace(a.speed, _SWAP[a.speed]) for a in attrs],
        "null": [""] * n,
    }
    out = {}
    for name, prompts in variants.items():
        ctx = text.encode_prompts(prompts)
        out[name] = float(flow_loss(model, x0, noise, sigma, ctx, 0.0, cfg.bf16))
    return out


class _StopFlag:
    def __init__(self):
        self.stop = False

    def __call__(self, *_):
        self.stop = True


def pretrain(cfg: PretrainConfig) -> Path:
    """Train (or resume) the toy teacher; returns the state file path."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # bf16 autocast feeds bf16 activations to fp32 RMSNorm weights; harmless, but noisy
    warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
    state_dir = Path(cfg.state_dir)
    state_path = state_dir / "state.pt"
    log_path = state_dir / "log.jsonl"
    torch.manual_seed(cfg.seed)
    model = build_diffusers_wan(cfg.arch).train()
    ema = build_diffusers_wan(cfg.arch).eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    start = 0
    state = load_state(state_path)
    if state is not None:
        if state["arch"] != arch_metadata(cfg.arch):
            raise ValueError(f"{state_path} holds a different architecture {state['arch']}; "
                             f"use another --state-dir or the same arch flags")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        print(f"resuming from step {start} ({state_path})", flush=True)
    elif cfg.init_from is not None:
        start = _init_from_compact(model, ema, Path(cfg.init_from))
        print(f"no resume state in {state_dir}; continuing from the compact weights {cfg.init_from} "
              f"(step {start}; fresh optimizer moments)", flush=True)
    forward_model = torch.compile(model) if cfg.compile else model

    def save(step: int):
        atomic_torch_save({"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
                           "step": step, "arch": arch_metadata(cfg.arch), "config": repr(cfg)}, state_path)

    stop = _StopFlag()
    previous = signal.signal(signal.SIGINT, stop), signal.signal(signal.SIGTERM, stop)
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="toy pretrain", dynamic_ncols=True)
    t0, step = time.time(), start
    try:
        for step in range(start, cfg.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            x0, noise, sigma, context = training_batch(cfg, step)
            loss = flow_loss(forward_model, x0, noise, sigma, context, cfg.padding_loss_weight, cfg.bf16)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}; last good state kept at {state_path}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            with torch.no_grad():
                decay = min(cfg.ema_decay, (1 + step) / (10 + step))
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(pm.detach(), 1 - decay)
            done = step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}", gnorm=f"{float(gnorm):.2f}")
            record = None
            if done % cfg.validate_every == 0 or done == cfg.steps:
                record = {"step": done, "loss": loss.item(), "elapsed_s": round(time.time() - t0, 1),
                          "val": validation_losses(ema, cfg)}
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                save(done)
            if record is not None:
                state_dir.mkdir(parents=True, exist_ok=True)
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                if bar is not None:
                    bar.write(json.dumps(record))
            if stop.stop:
                save(done)
                print(f"\nstopped at step {done}; state saved to {state_path}", flush=True)
                break
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
        if bar is not None:
            bar.close()
    return state_path


def _init_from_compact(model, ema, path: Path) -> int:
    """Load a compact (EMA, bf16) teacher file, or another run's state.pt, into model and EMA; return its step.

    Used on a machine where the full resume state is gone: the optimizer restarts, everything
    else (weights, step, hence data and learning-rate schedule) continues."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from .teacher import wan_to_diffusers_keys

    if path.suffix == ".pt":  # another run's full state: its raw weights and EMA, not its optimizer
        state = load_state(path)
        if state is None:
            raise FileNotFoundError(f"no pretraining state at {path}")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        return int(state["step"])
    weights = wan_to_diffusers_keys(load_file(str(path)))
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    ema.load_state_dict(model.state_dict())
    return int(meta.get("stride.steps", 0))


def export(cfg: PretrainConfig, out_path: Path, weights: str = "ema") -> Path:
    """Write the EMA (what ships) or raw (``weights="model"``: best to continue training from, while
    the EMA still averages over a changed curriculum) weights of the saved state as a compact bf16
    original-keys Wan file."""
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    state = load_state(Path(cfg.state_dir) / "state.pt")
    if state is None:
        raise FileNotFoundError(f"no pretraining state in {cfg.state_dir}")
    model = build_diffusers_wan(cfg.arch)
    model.load_state_dict(state[weights])
    meta = {"stride.kind": "toy_wan_teacher", "stride.steps": str(state["step"]), "stride.weights": weights,
            **{f"stride.arch.{k}": v for k, v in arch_metadata(cfg.arch).items()}}
    save_wan_file(model, out_path, meta)
    return out_path


def probe(path: Path, weights: str = "model", n: int = 48) -> dict[str, dict[str, float]]:
    """How much the prompt's words matter to a teacher: the flow loss on held-out clips with the
    true prompt, and how much it rises with the direction or speed word swapped or no prompt, at
    high noise (sigma 0.85-0.97, where the prompt decides the layout) and mid noise (0.6-0.85).

    ``path``: a pretraining ``state.pt`` (``weights`` picks "model" or "ema") or a compact file."""
    from .teacher import load_teacher_any

    path = Path(path)
    if path.suffix == ".pt":
        state = load_state(path)
        if state is None:
            raise FileNotFoundError(f"no pretraining state at {path}")
        arch = TeacherArch(**{k: int(v) for k, v in state["arch"].items()})
        model = build_diffusers_wan(arch)
        model.load_state_dict(state[weights])
        step = state["step"]
    else:
        model, step = load_teacher_any(path), None
    model.eval()
    cfg = PretrainConfig()
    out = {"step": step}
    for name, band in {"high_noise": (0.85, 0.97), "mid_noise": (0.6, 0.85)}.items():
        losses = validation_losses(model, cfg, n, band, seed=55_555)
        out[name] = {"true": losses["true"], **{f"gap_{k}": losses[k] - losses["true"] for k in losses if k != "true"}}
    return out
