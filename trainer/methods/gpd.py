"""Guided Progressive Distillation (METHODS.md section 2): trajectory regression, prompts only.

Stages run over a fine teacher grid: the student's sigmas with every interval subdivided
``first_stage_jump * 2**(num_stages - 1)`` times in the unshifted timestep and warped by the
student's shift (so every student sigma is on the grid). Stage ``s`` trains jumps of
``k = first_stage_jump * 2**s`` fine intervals; the last stage's jumps are the student's own step
list. The stage is ``step // stage_steps`` (capped at the last; ``stage_steps`` 0 splits the run's
steps evenly), so stage boundaries are a pure function of the step and the run length and survive a resume. The same LoRA continues from stage to stage.

One iteration:
1. start point ``x_i`` at a random stage-grid sigma: from pure noise, the current student's own
   stage-sized Euler jumps without gradients (``start_point="student"``, what inference sees), or
   a real latent noised to ``sigma_i`` (``"real"``).
2. online target: Euler steps over the ``k`` fine sub-intervals of the jump, the first ``k - 1`` by
   the frozen previous-stage student, the last by the teacher with CFG; in the first stage the
   teacher takes every sub-step (with ``first_stage_jump = 1`` that stage is guidance
   distillation at the fine step size). ``v* = (x_i - x_end) / (sigma_i - sigma_end)``.
3. ``L = ||v_theta(x_i) - v*||^2 + freq_weight * (L_freq + temporal_freq_weight * L_freq_t)`` with
   the frequency terms on the x0 predictions the student's and the target velocity imply at
   ``x_i`` (``losses.spectral_loss``, ``losses.temporal_spectral_loss``).
The teacher's CFG scale is annealed linearly per stage from ``cfg_start`` (6.0) to ``cfg_end``
(1.5), ComfyUI convention. Students trained this way follow the probability-flow ODE: sample them
with a deterministic sampler (``sample_stride_flow`` order 1 = Euler) on the student sigmas.

The frozen previous-stage student is a detached copy of the student LoRA tensors taken when a
stage begins; the target pass swaps it into the student adapter under ``no_grad`` and restores the
live weights afterwards (``swapped_weights``). No third adapter is registered: the backend, the
exporter and the resume state keep seeing exactly student and critic, and the copy (a LoRA's
size) travels in this method's ``state_dict``.
"""

from __future__ import annotations

from contextlib import contextmanager
import dataclasses
from dataclasses import dataclass

import torch

from .. import flow
from ..backends.base import STUDENT, TEACHER, guided_x0
from ..flow import shift_sigma
from .base import DistillBatch, DistillMethod, StudentSchedule, randn
from .losses import spectral_loss, temporal_spectral_loss


@dataclass
class GpdConfig:
    lr: float = 1e-4  # LoRA learning rate (the paper's is unpublished)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    num_stages: int = 4
    # iterations per stage ("about 150" in the report); 0: the run's steps split evenly over the stages,
    # so a short run still reaches the last stage, whose jumps are the student's own step list
    stage_steps: int = 0
    first_stage_jump: int = 1  # fine (teacher) intervals per student jump in the first stage
    cfg_start: float = 6.0  # teacher CFG of the first stage (ComfyUI convention)
    cfg_end: float = 1.5  # ... of the last stage, linear in between
    start_point: str = "student"  # a key of START_POINTS
    freq_weight: float = 1.0
    freq_gamma: float = 1.0  # radial high-pass exponent
    freq_focal_alpha: float = 0.0  # 0: no focal weights
    temporal_freq_weight: float = 1.0
    temporal_freq_gamma: float = 1.0

    def __post_init__(self):
        if self.num_stages < 1 or self.stage_steps < 0 or self.first_stage_jump < 1:
            raise ValueError("num_stages and first_stage_jump must be >= 1, stage_steps >= 0 (0: steps / num_stages)")
        if self.start_point not in START_POINTS:
            raise ValueError(f"start_point must be one of {sorted(START_POINTS)}, got {self.start_point!r}")
        if min(self.cfg_start, self.cfg_end) < 1.0:
            raise ValueError("cfg_start and cfg_end must be >= 1 (1 = no guidance)")
        if min(self.freq_weight, self.temporal_freq_weight, self.freq_gamma, self.temporal_freq_gamma,
               self.freq_focal_alpha) < 0:
            raise ValueError("frequency weights and exponents must be >= 0")

    def for_run(self, total_steps: int) -> "GpdConfig":
        """With ``stage_steps`` 0, the stage length that fits ``num_stages`` into ``total_steps``."""
        if self.stage_steps:
            return self
        return dataclasses.replace(self, stage_steps=max(1, total_steps // self.num_stages))

    @property
    def fine_per_student_interval(self) -> int:
        return self.first_stage_jump * 2 ** (self.num_stages - 1)

    def jump(self, stage: int) -> int:
        """Fine intervals per student jump in ``stage``."""
        return self.first_stage_jump * 2 ** stage

    def stage_of(self, step: int) -> int:
        if self.stage_steps < 1:
            raise ValueError("stage_steps is 0 (auto): resolve it with for_run(total_steps) first")
        return min(step // self.stage_steps, self.num_stages - 1)

    def teacher_cfg(self, stage: int) -> float:
        if self.num_stages == 1:
            return self.cfg_start
        return self.cfg_start + (self.cfg_end - self.cfg_start) * stage / (self.num_stages - 1)


def fine_sigmas(schedule: StudentSchedule, subdivisions: int) -> torch.Tensor:
    """The teacher grid: each student interval split into ``subdivisions`` equal parts in the
    unshifted timestep, warped by the student's shift; contains every student sigma, ends in 0."""
    unshifted = torch.tensor([*schedule.step_list, 0.0], dtype=torch.float64) / 1000.0
    parts = [torch.linspace(float(a), float(b), subdivisions + 1, dtype=torch.float64)[:-1]
             for a, b in zip(unshifted[:-1], unshifted[1:])]
    grid = torch.cat([*parts, unshifted[-1:]])
    return shift_sigma(grid, schedule.shift).to(torch.float32)


def euler_step(x: torch.Tensor, velocity: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One probability-flow Euler step; to sigma 0 it lands exactly on the implied x0."""
    return x + (sigma_next - sigma) * velocity


@contextmanager
def swapped_weights(params: list[torch.nn.Parameter], values: list[torch.Tensor]):
    """Temporarily load ``values`` into ``params`` (in place, no autograd record); the previous
    values come back on exit, also after an exception. No graph may hold ``params`` meanwhile."""
    with torch.no_grad():
        live = [p.detach().clone() for p in params]
        for p, value in zip(params, values):
            p.copy_(value)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(params, live):
                p.copy_(value)


# ---- where the regression starts: (method, batch, fine index, stage) -> x at fine_sigmas[index]

def _start_from_student(method: "GpdMethod", batch: DistillBatch, index: int, stage: int) -> torch.Tensor:
    sigmas, k = method.sigmas, method.cfg.jump(stage)
    x = randn(batch.latent_shape, batch.generator, method.backend.device) * sigmas[0]
    with torch.no_grad():
        for start in range(0, index, k):
            v = method.velocity(x, sigmas[start], batch.context, STUDENT)
            x = euler_step(x, v, float(sigmas[start]), float(sigmas[start + k]))
    return x


def _start_from_real(method: "GpdMethod", batch: DistillBatch, index: int, _stage: int) -> torch.Tensor:
    real = batch.real_latents
    if real is None:
        raise ValueError("GPD start_point='real' needs real latents (batch.real_latents); use start_point='student'")
    sigma = method.sigmas[index].to(real.device)
    return flow.add_noise(real, randn(real.shape, batch.generator, real.device), sigma)


START_POINTS = {"student": _start_from_student, "real": _start_from_real}


class GpdMethod(DistillMethod):
    student_sampler = ("stride_flow", {"order": 1})  # trajectory students follow the ODE
    name = "gpd"
    required_roles = ("teacher", "student")
    config_class = GpdConfig

    def __init__(self, ctx, cfg: GpdConfig):
        super().__init__(ctx, cfg)
        self.student_params = self.backend.trainable_parameters(STUDENT)
        names = {id(p): n for n, p in self.backend.model.named_parameters()}
        self.student_names = [names[id(p)] for p in self.student_params]
        self._optimizers = {
            "generator": torch.optim.AdamW(self.student_params, lr=cfg.lr, betas=cfg.betas,
                                           weight_decay=cfg.weight_decay),
        }
        self.sigmas = fine_sigmas(self.schedule, cfg.fine_per_student_interval)
        self.stage = -1  # the stage the last train_step ran in (-1: none yet)
        self.previous_student: list[torch.Tensor] | None = None  # frozen weights of the last stage

    def optimizers(self):
        return self._optimizers

    def state_dict(self) -> dict:
        previous = None if self.previous_student is None else \
            {n: t.detach().cpu().clone() for n, t in zip(self.student_names, self.previous_student)}
        return {"stage": self.stage, "previous_student": previous}

    def load_state_dict(self, state: dict) -> None:
        self.stage = int(state["stage"])
        previous = state["previous_student"]
        if previous is None:
            self.previous_student = None
            return
        missing = [n for n in self.student_names if n not in previous]
        if missing or len(previous) != len(self.student_names):
            raise ValueError(f"GPD state's previous-stage student does not match this student LoRA "
                             f"(different rank or targets?); missing e.g. {missing[:3]}")
        tensors = []
        for name, param in zip(self.student_names, self.student_params):
            if previous[name].shape != param.shape:
                raise ValueError(f"GPD previous-stage {name} has shape {tuple(previous[name].shape)}, "
                                 f"the student {tuple(param.shape)}")
            tensors.append(previous[name].to(param.device, param.dtype).clone())
        self.previous_student = tensors

    # -- pieces
    def velocity(self, x: torch.Tensor, sigma, context: torch.Tensor, role: str) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        return self.backend.predict_velocity(x, sigma, context, role)

    def teacher_velocity(self, x: torch.Tensor, sigma, batch: DistillBatch, cfg_scale: float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        x0 = guided_x0(self.backend.view(TEACHER), x, sigma, batch.context, batch.negative, cfg_scale)
        return flow.velocity_from_x0(x.float(), x0, sigma)

    def enter_stage(self, stage: int) -> None:
        """At a stage boundary the current student becomes the frozen previous-stage student."""
        if stage > 0:
            self.previous_student = [p.detach().clone() for p in self.student_params]
        self.stage = stage

    def target_end(self, x: torch.Tensor, index: int, stage: int, batch: DistillBatch) -> torch.Tensor:
        """x at ``sigmas[index + k]`` from x at ``sigmas[index]``: the frozen previous-stage student
        over the first k - 1 fine sub-intervals (the teacher in the first stage), the CFG teacher
        over the last."""
        sigmas, k, cfg_scale = self.sigmas, self.cfg.jump(stage), self.cfg.teacher_cfg(stage)
        with torch.no_grad():
            x = x.float()
            if stage > 0:
                with swapped_weights(self.student_params, self.previous_student):
                    for m in range(index, index + k - 1):
                        x = euler_step(x, self.velocity(x, sigmas[m], batch.context, STUDENT),
                                       float(sigmas[m]), float(sigmas[m + 1]))
                first_teacher = index + k - 1
            else:
                first_teacher = index
            for m in range(first_teacher, index + k):
                x = euler_step(x, self.teacher_velocity(x, sigmas[m], batch, cfg_scale),
                               float(sigmas[m]), float(sigmas[m + 1]))
        return x

    # -- one iteration
    def train_step(self, batch: DistillBatch, step: int) -> dict[str, float]:
        stage = self.cfg.stage_of(step)
        if stage != self.stage:
            self.enter_stage(stage)
        k = self.cfg.jump(stage)
        jumps = (len(self.sigmas) - 1) // k
        index = k * int(torch.randint(jumps, (), generator=batch.generator))
        sigma, sigma_end = float(self.sigmas[index]), float(self.sigmas[index + k])

        x = START_POINTS[self.cfg.start_point](self, batch, index, stage).float()
        x_end = self.target_end(x, index, stage, batch)  # before the graph: the swap writes in place
        target_v = (x - x_end) / (sigma - sigma_end)
        pred_v = self.velocity(x, sigma, batch.context, STUDENT)
        velocity = (pred_v - target_v).pow(2).flatten(1).mean(1).mean()
        loss, metrics = velocity, {"velocity": float(velocity.detach())}
        if self.cfg.freq_weight > 0:
            pred_x0, target_x0 = x - sigma * pred_v, x - sigma * target_v
            freq = spectral_loss(pred_x0, target_x0, self.cfg.freq_gamma, self.cfg.freq_focal_alpha)
            temporal = temporal_spectral_loss(pred_x0, target_x0, self.cfg.temporal_freq_gamma,
                                              self.cfg.freq_focal_alpha)
            loss = loss + self.cfg.freq_weight * (freq + self.cfg.temporal_freq_weight * temporal)
            metrics.update(freq=float(freq.detach()), freq_temporal=float(temporal.detach()))
        metrics.update(loss=float(loss.detach()), stage=float(stage), jump=float(k), sigma=sigma,
                       teacher_cfg=self.cfg.teacher_cfg(stage))
        metrics["grad_norm"] = self._step("generator", loss, self.student_params, self.cfg.grad_clip)
        return metrics
