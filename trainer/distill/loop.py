"""The distillation trainer loop: Method x Backend x data x config, with nothing lost on a stop.

The loop is small on purpose: it builds the backend (one frozen base with student and critic
LoRAs), the method from the registry and the data source, then calls ``method.train_step`` and
takes care of what every method needs: a progress bar with losses and ETA, an atomic resume
state every ``checkpoint_every`` steps (LoRA weights of every adapter, optimizers, the method's
own state, the step), a stop with a diagnostic on NaN/inf that keeps the last good state,
Ctrl-C/SIGTERM that saves before leaving, and data parallelism under ``accelerate launch`` (each
process draws its own data; LoRA gradients are all-reduced before every optimizer step; only the
main process writes files).
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backends.base import STUDENT
from ..backends.wan_lora import WanLoraBackend
from ..checkpoint import atomic_torch_save, load_state
from ..config import changed_flags, config_to_dict
from ..lora.inject import LoraSpec
from ..methods import method_registry
from ..methods.base import DistillBatch, MethodContext, NonFiniteLoss, StudentSchedule
from .config import DistillConfig
from ..seeding import step_generator
from .data import EmbeddingData, ToyData, cached_prompt_embeddings
from .ema import StudentEMA
from .preview import PREVIEW_CLIPS, sample_student, write_preview


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_environment(cls) -> "Distributed":
        import os

        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from accelerate import PartialState

        # initialises the process group accelerate launch prepared: NCCL on GPUs, gloo on CPUs
        state = PartialState(cpu=not torch.cuda.is_available())
        return cls(state.process_index, state.num_processes)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sync_gradients(self, params) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= self.world

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def pick_device(name: str, dist: "Distributed | None" = None) -> torch.device:
    """``auto``: this process's GPU under accelerate (LOCAL_RANK), the first GPU, or the CPU."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        import os

        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if dist and dist.world > 1 else 0)
    return torch.device(name)


def build_backend(cfg: DistillConfig, device: torch.device) -> WanLoraBackend:
    from ..toy.teacher import load_teacher_any

    from ..lora.export import teacher_fingerprint

    model = load_teacher_any(cfg.teacher).to(device)
    fingerprint = teacher_fingerprint(model)  # of the base weights, before adapters rename them
    student = LoraSpec(rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=cfg.lora_targets)
    critic = LoraSpec(rank=cfg.critic_rank, alpha=float(cfg.critic_rank), targets=cfg.lora_targets)
    autocast = torch.bfloat16 if cfg.bf16 else None
    backend = WanLoraBackend(model, student, critic, autocast, cfg.gradient_checkpointing)
    backend.teacher_fingerprint = fingerprint
    return backend


def build_data(cfg: DistillConfig, rank: int):
    seed = cfg.seed + 1000 * rank
    embeddings = cfg.embeddings
    if cfg.prompts is not None:
        embeddings = cached_prompt_embeddings(Path(cfg.prompts), cfg.negative_prompt, cfg.resolved_state_dir)
    if embeddings is None:
        if cfg.real_latents is not None:
            raise ValueError("real_latents needs embeddings for its prompts; without embeddings the toy domain is used")
        return ToyData(cfg.batch_size, seed)
    shape = (cfg.batch_size, 16, cfg.latent_frames, cfg.latent_height, cfg.latent_width)
    return EmbeddingData.from_files(embeddings, cfg.batch_size, seed, shape, cfg.real_latents)


def adapter_state(backend: WanLoraBackend) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in backend.model.named_parameters() if "lora_" in n}


def load_adapter_state(backend: WanLoraBackend, state: dict[str, torch.Tensor]) -> None:
    params = dict(backend.model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise ValueError(f"resume state has LoRA tensors this model lacks (different rank or targets?): {missing[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            if params[name].shape != value.shape:
                raise ValueError(f"resume state {name} has shape {tuple(value.shape)}, model {tuple(params[name].shape)}")
            params[name].copy_(value)


class _StopRequest:
    def __init__(self):
        self.requested = False

    def __call__(self, *_):
        self.requested = True


@dataclass
class DistillOutcome:
    backend: WanLoraBackend
    schedule: StudentSchedule
    steps_done: int
    state_path: Path
    history: list[dict]
    stopped_early: bool
    seconds: float


def distill(cfg: DistillConfig, stop_check=None, on_step=None, backend=None, data=None) -> DistillOutcome:
    """Train (or resume) a student LoRA. ``stop_check()`` returning True stops like Ctrl-C does
    (used by the ComfyUI node for Cancel); ``on_step(step, total, metrics)`` reports progress.
    ``backend`` and ``data`` replace the ones the config describes (the ComfyUI node passes a
    ``ComfyLoraBackend`` and the graph's conditioning)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist = Distributed.from_environment()
    device = pick_device(cfg.device, dist)
    torch.manual_seed(cfg.seed)  # LoRA initialisation is identical on every process
    schedule = StudentSchedule(tuple(cfg.student_step_list), cfg.shift, cfg.student_gamma)
    registry = method_registry()
    if cfg.method not in registry:
        raise ValueError(f"unknown method {cfg.method!r}; known: {', '.join(sorted(registry))}")
    method_cls = registry[cfg.method]
    if cfg.student_gamma != 1.0 and "gamma" not in method_cls.student_sampler[1]:
        raise ValueError(f"student_gamma {cfg.student_gamma}: {cfg.method} students sample with "
                         f"{method_cls.student_sampler[0]}, which draws no fresh noise (leave it at 1)")
    backend = backend if backend is not None else build_backend(cfg, device)
    method_cfg = getattr(cfg, cfg.method, None) or method_cls.config_class()
    if hasattr(method_cfg, "for_run"):  # settings that depend on the run's length (GPD's stage length)
        method_cfg = method_cfg.for_run(cfg.steps)
    method = method_cls(MethodContext(backend, schedule, dist.sync_gradients), method_cfg)
    data = data if data is not None else build_data(cfg, dist.rank)
    needs_real = method_cfg.real_latent_terms() if hasattr(method_cfg, "real_latent_terms") else []
    if needs_real and not getattr(data, "has_real_latents", True):
        raise ValueError(f"{cfg.method}'s {', '.join(needs_real)} learn from real latents and this run has none: give "
                         f"--real-latents, or distil from prompts alone with "
                         f"{' '.join(changed_flags(method_cfg, method_cfg.without_real_latents(), cfg.method))}")
    ema = (StudentEMA(backend.trainable_parameters(STUDENT), cfg.student_ema, cfg.student_ema_ramp)
           if cfg.student_ema else None)

    state_path = cfg.resolved_state_dir / "state.pt"
    start, history = 0, []
    state = load_state(state_path) if cfg.resume else None
    if state is not None:
        if state["method"] != cfg.method:
            raise ValueError(f"{state_path} is a {state['method']} run; use another --name or --no-resume")
        load_adapter_state(backend, state["adapters"])
        for name, opt in method.optimizers().items():
            opt.load_state_dict(state["optimizers"][name])
        method.load_state_dict(state["method_state"])
        _load_ema_state(ema, state, state_path)
        start, history = state["step"], state.get("history", [])

    def save(step: int) -> None:
        if dist.is_main:
            atomic_torch_save({"step": step, "method": cfg.method, "adapters": adapter_state(backend),
                               "optimizers": {n: o.state_dict() for n, o in method.optimizers().items()},
                               "method_state": method.state_dict(), "history": history,
                               "student_ema": None if ema is None else ema.state_dict(),
                               "config": config_to_dict(cfg)}, state_path)
        dist.barrier()

    initial_checksum = _adapter_checksum(backend)
    stop = _StopRequest()
    previous = (signal.signal(signal.SIGINT, stop), signal.signal(signal.SIGTERM, stop)) \
        if _in_main_thread() else None
    bar = None
    if cfg.progress and dist.is_main:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=f"distill {cfg.method}", dynamic_ncols=True)
    step, stopped, previews = start, False, None
    t0 = time.time()
    try:
        for step in range(start, cfg.steps):
            step_data = data.batch(step)
            batch = DistillBatch(step_data.context.to(device), step_data.negative.to(device),
                                 step_data.latent_shape,
                                 None if step_data.real_latents is None else step_data.real_latents.to(device),
                                 step_generator(cfg.seed + 1000 * dist.rank, step + 1_000_000),
                                 real_paired=step_data.real_paired)
            try:
                metrics = method.train_step(batch, step)
                bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
                if bad:
                    raise NonFiniteLoss(f"non-finite metrics {bad}")
            except NonFiniteLoss as err:
                good = history[-1]["step"] if history else start
                raise NonFiniteLoss(f"step {step}: {err}. Stopped; the last good state (step {good}) is kept at "
                                    f"{state_path}. Check the inputs or lower the learning rate, then rerun to "
                                    f"resume from it.") from None
            done = step + 1
            if ema is not None:
                ema.update()
            history.append({"step": done, **{k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}})
            if bar is not None:
                bar.update(1)
                shown = {k: f"{v:.4f}" for k, v in metrics.items() if k in ("dmd", "critic_loss", "reg", "temporal",
                                                                            "loss", "adv_g", "adv_d")}
                bar.set_postfix(shown)
            if on_step is not None:
                on_step(done, cfg.steps, metrics)
            if cfg.preview_every and done % cfg.preview_every == 0 and dist.is_main:
                previews = previews or data.preview_prompts(PREVIEW_CLIPS)
                with ema.applied() if ema is not None else nullcontext():
                    clips = sample_student(backend, schedule, cfg.method, previews, device)
                written = write_preview(clips, previews, Path(cfg.out) / f"{cfg.name}_previews", done)
                if bar is not None:
                    bar.write(f"preview: {written}")
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                save(done)
            if stop.requested or (stop_check is not None and stop_check()):
                save(done)
                stopped = True
                if bar is not None:
                    bar.write(f"stopped at step {done}; state saved to {state_path} (rerun to resume)")
                break
        else:
            step = cfg.steps - 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])
        if bar is not None:
            bar.close()
    steps_done = history[-1]["step"] if history else start
    if ema is not None:  # export and evaluation take the average; the saved state keeps the raw weights
        ema.copy_to_params()
    if dist.world > 1:  # lets users (and the tests) see that every process holds the same LoRA
        _print_rank_checksum(dist.rank, backend, initial_checksum)
    return DistillOutcome(backend, schedule, steps_done, state_path, history, stopped, time.time() - t0)


def _load_ema_state(ema: StudentEMA | None, state: dict, state_path: Path) -> None:
    saved = state.get("student_ema")
    if (ema is None) != (saved is None):
        had = "with" if saved is not None else "without"
        raise ValueError(f"{state_path} was trained {had} a student EMA and this run sets student_ema "
                         f"{'off' if ema is None else 'on'}; keep the setting, or use another --name or --no-resume")
    if ema is not None:
        ema.load_state_dict(saved)


def _adapter_checksum(backend: WanLoraBackend) -> str:
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(adapter_state(backend).items()):
        digest.update(name.encode())
        digest.update(tensor.float().numpy().tobytes())
    return digest.hexdigest()[:16]


def _print_rank_checksum(rank: int, backend: WanLoraBackend, initial: str) -> None:
    import json

    checksum = _adapter_checksum(backend)
    print("STRIDE_RANK_CHECKSUM " + json.dumps({"rank": rank, "checksum": checksum, "changed": checksum != initial}),
          flush=True)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def student_metadata(cfg: DistillConfig, schedule: StudentSchedule, teacher_fingerprint: str, metrics: dict) -> dict:
    return {"method": cfg.method, "student_step_list": list(schedule.step_list), "shift": schedule.shift,
            "student_gamma": schedule.gamma, "teacher_fingerprint": teacher_fingerprint,
            "config": config_to_dict(cfg), "metrics": metrics}


def export_student(outcome: DistillOutcome, cfg: DistillConfig, path: Path, metrics: dict) -> Path:
    meta = student_metadata(cfg, outcome.schedule, outcome.backend.teacher_fingerprint, metrics)
    return outcome.backend.export_lora(STUDENT, Path(path), meta)
