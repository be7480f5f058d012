"""What every distillation method shares: the batch it receives, the student's step list and the
backward simulation that produces student samples, and the method contract.

A method owns its losses, its optimizers and its internal state (for example the adaptive
regression's running averages). ``train_step`` runs one iteration and returns a flat dict of
float metrics; the trainer loop around it handles checkpoints, progress, NaN stops and data
parallelism (it hands the method ``sync_gradients``, which all-reduces LoRA gradients when
several processes train together and does nothing otherwise).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from .. import flow
from ..backends.base import STUDENT
from ..sampling import schedules
from ..sampling.samplers import check_gamma, mix_noise

if TYPE_CHECKING:
    from ..backends.wan_lora import WanLoraBackend


@dataclass
class DistillBatch:
    context: torch.Tensor  # [B, tokens, dim] positive conditioning
    negative: torch.Tensor  # [B, tokens, dim] negative conditioning (CFG of the teacher)
    latent_shape: tuple[int, ...]  # [B, C, F, H, W] of the videos the student generates
    real_latents: torch.Tensor | None = None  # clean real latents for regression / adversarial terms
    generator: torch.Generator | None = None  # all randomness of this step
    # True when real_latents[i] is a video of prompt context[i] (the toy domain, or real latents given
    # one per prompt); False: unpaired real videos, which conditional terms must see with `negative`
    real_paired: bool = True

    @property
    def real_context(self) -> torch.Tensor:
        """The conditioning that belongs with ``real_latents``: the prompts if paired, else the negative."""
        return self.context if self.real_paired else self.negative


@dataclass(frozen=True)
class StudentSchedule:
    """The student's training timesteps (e.g. 1000,900,757,522) warped by ``shift``, and ``gamma``, the
    share of fresh noise when it re-noises its x0 prediction between steps (``sample_stride_consistency``:
    1 is fresh noise, ComfyUI's ``lcm``; below 1 part of the noise the input implies is kept, as in TCD).
    Training simulates the student's sampling with it and the LoRA's metadata carries it to inference."""

    step_list: tuple[float, ...] = (1000.0, 900.0, 757.0, 522.0)
    shift: float = 5.0
    gamma: float = 1.0

    def __post_init__(self):
        schedules.validate_step_list(list(self.step_list))
        if self.shift <= 0:
            raise ValueError(f"shift must be positive, got {self.shift}")
        check_gamma(self.gamma, "student gamma")

    @property
    def sigmas(self) -> torch.Tensor:
        """The student's sampling sigmas, ending in 0."""
        return torch.as_tensor(schedules.student_sigmas(list(self.step_list), self.shift), dtype=torch.float32)

    @property
    def steps(self) -> int:
        return len(self.step_list)


def randn(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=generator).to(device) if generator is not None else torch.randn(shape, device=device)


def rand(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator).to(device) if generator is not None else torch.rand(shape, device=device)


@dataclass(frozen=True)
class InterpolatedSimulation:
    """Backward simulation along interpolated sampling's path (``sampling.interpolated``), so the student
    learns the steps that follow the switch from the inputs interpolated sampling gives them.

    With probability ``probability`` a sample whose exit index is at least ``switch_index`` runs its
    first ``switch_index`` steps on every second latent frame (strided temporal positions), has the last
    x0 prediction interpolated to full length by ``interpolator`` and re-noised with fresh noise, and
    goes on at full length. 0 for ``switch_index`` turns it off.
    """

    switch_index: int = 0
    probability: float = 0.5
    interpolator: str = "learned"

    def __post_init__(self):
        if self.switch_index < 0:
            raise ValueError(f"the interpolated simulation's switch index must be >= 0, got {self.switch_index}")
        if not 0 <= self.probability <= 1:
            raise ValueError(f"the interpolated simulation's probability must be in [0, 1], got {self.probability}")
        from ..interp.model import check_interpolator_name

        check_interpolator_name(self.interpolator)

    def check(self, schedule: StudentSchedule) -> None:
        """Raise ValueError unless the switch index lies inside the schedule (the latents' frame count is
        checked where they are subsampled, ``_interpolated_head``)."""
        if self.switch_index >= schedule.steps:
            raise ValueError(f"the interpolated simulation's switch index {self.switch_index} must be below the "
                             f"student's {schedule.steps} steps (at least one full-length step follows the switch)")


def backward_simulation(backend: WanLoraBackend, batch: DistillBatch, schedule: StudentSchedule,
                        exit_index: int | None = None,
                        interp: InterpolatedSimulation | None = None) -> tuple[torch.Tensor, int]:
    """Generate student samples the way inference will, differentiating only the last step.

    Runs the student's consistency steps (predict x0, re-noise with fresh noise to the next
    sigma) from pure noise; the steps before a random exit index run without gradients, the
    exit step's x0 prediction keeps its graph (DMD2 / Self-Forcing backward simulation).
    """
    x, exit_index = student_step_input(backend, batch, schedule, exit_index, interp)
    return backend.predict_x0(x, schedule.sigmas[exit_index].to(x.device), batch.context, STUDENT), exit_index


@torch.no_grad()
def student_step_input(backend: WanLoraBackend, batch: DistillBatch, schedule: StudentSchedule,
                       exit_index: int | None = None,
                       interp: InterpolatedSimulation | None = None) -> tuple[torch.Tensor, int]:
    """The noisy input the student sees at step ``exit_index`` (random when None) of its own
    sampling from pure noise: the steps before it run without gradients. With ``interp`` (and its
    draw) the steps before its switch index run as interpolated sampling runs them."""
    device = backend.device
    sigmas = schedule.sigmas.to(device)
    if exit_index is None:
        exit_index = int(torch.randint(schedule.steps, (), generator=batch.generator))
    x = randn(batch.latent_shape, batch.generator, device) * sigmas[0]
    start = 0
    if interp is not None and interp.switch_index and exit_index >= interp.switch_index:
        if float(rand((), batch.generator, device)) < interp.probability:
            x, start = _interpolated_head(backend, batch, sigmas, x, interp, schedule.gamma), interp.switch_index
    for i in range(start, exit_index):
        x0 = backend.predict_x0(x, sigmas[i], batch.context, STUDENT)
        x = renoise(x, x0, sigmas[i], sigmas[i + 1], schedule.gamma, batch.generator)
    return x, exit_index


def renoise(x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, gamma: float,
            generator: torch.Generator | None) -> torch.Tensor:
    """The student's input at ``sigma_next`` after predicting ``x0`` from ``x`` at ``sigma``, as
    ``sample_stride_consistency`` makes it: noise ``sqrt(1 - gamma) * eps_hat + sqrt(gamma) * z`` with
    ``eps_hat`` the noise ``x`` implies (flow: ``x = (1 - sigma) x0 + sigma eps``) and ``z`` fresh."""
    noise = randn(x.shape, generator, x.device)
    if gamma < 1.0:
        implied = (x.float() - (1.0 - sigma) * x0.float()) / sigma
        noise = mix_noise(implied, noise, gamma)
    return flow.add_noise(x0, noise, sigma_next)


def _interpolated_head(backend, batch: DistillBatch, sigmas: torch.Tensor, x: torch.Tensor,
                       interp: InterpolatedSimulation, interp_gamma: float = 1.0) -> torch.Tensor:
    """Steps ``0 .. switch - 1`` on ``x[:, :, ::2]`` with strided positions (re-noised with ``interp_gamma``,
    the student's gamma), then the last x0 prediction interpolated to full length and re-noised to
    ``sigmas[switch]`` with fresh noise, as ``sample_stride_interpolated`` does."""
    from ..sampling.interpolated import check_subsamplable
    from ..sampling.positions import strided_positions

    check_subsamplable(x)
    switch = interp.switch_index
    half = x[:, :, ::2]
    with strided_positions(backend.network, 2):
        for i in range(switch):
            x0 = backend.predict_x0(half, sigmas[i], batch.context, STUDENT)
            if i < switch - 1:
                half = renoise(half, x0, sigmas[i], sigmas[i + 1], interp_gamma, batch.generator)
    full = _latent_interpolator(interp.interpolator)(x0).to(x.dtype)
    return flow.add_noise(full, randn(x.shape, batch.generator, x.device), sigmas[switch])


@functools.lru_cache(maxsize=None)
def _latent_interpolator(name: str):
    """Resolved once per name: ``learned`` reads its weights file."""
    from ..interp.model import resolve_interpolator

    return resolve_interpolator(name)


def sample_sigma(count: int, generator, device, shift: float, low: float, high: float) -> torch.Tensor:
    """Uniform timesteps warped by ``shift`` and clamped to [low, high] (METHODS.md 1a)."""
    return flow.shift_sigma(rand((count,), generator, device), shift).clamp(low, high)


def velocity_loss_per_sample(pred_v: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return (pred_v - flow.velocity_target(x0, noise)).pow(2).flatten(1).mean(1)


class NonFiniteLoss(FloatingPointError):
    """A loss became NaN or inf; raised before it can reach the weights."""


SyncFn = Callable[[list[torch.nn.Parameter]], None]


def no_sync(_params) -> None:
    return None


@dataclass
class MethodContext:
    backend: WanLoraBackend
    schedule: StudentSchedule
    sync_gradients: SyncFn = no_sync


class DistillMethod:
    """Base class: subclasses set ``name``/``required_roles`` and implement ``train_step``."""

    name = "base"
    required_roles: tuple[str, ...] = ()
    config_class: type = object
    # how the trained student is sampled: a sampler name of trainer.sampling and its options
    student_sampler: tuple[str, dict] = ("stride_consistency", {"gamma": 1.0})

    def __init__(self, ctx: MethodContext, cfg):
        ctx.backend.require(*self.required_roles)
        self.ctx, self.cfg = ctx, cfg
        self.backend, self.schedule = ctx.backend, ctx.schedule

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, batch: DistillBatch, step: int) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None

    def _step(self, name: str, loss: torch.Tensor, params: list[torch.nn.Parameter], clip: float) -> float:
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLoss(f"{name} loss is {float(loss.detach())}")
        opt = self.optimizers()[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.ctx.sync_gradients(params)
        norm = torch.nn.utils.clip_grad_norm_(params, clip) if clip > 0 else torch.tensor(0.0)
        opt.step()
        return float(norm)
