"""An exponential moving average of the student's LoRA weights: a callback of the trainer loop.

Not in the three papers (AVDM2 states "no EMA"; ADV and GPD say nothing): a standard tool of
few-step generators that averages out the step-to-step jitter of a generator trained against a
moving critic. When ``DistillConfig.student_ema`` is above 0 the loop keeps an fp32 shadow of every
student LoRA tensor, updated after every training step (critic-only steps leave the weights, so
the shadow then just decays towards the same values), saves it in the resume state, samples its
previews with it, and hands the shadow to export and evaluation when the run ends. The raw
weights stay what training continues from.

The decay ramps up as in diffusers' ``EMAModel`` / timm: at update ``n`` (1-based) it is
``min(decay, (1 + n) / (ramp + n))`` with ``ramp`` 10 by default, so the average is not pinned to the
initial LoRA (whose up projections are zero) on short runs. The configured decay only binds from update
``ramp_end(decay, ramp)`` on: with ramp 10 that is update 890 for 0.99 and 1,790 for 0.995, so on a
600-step run every decay of 0.986 or more gives the same average; a smaller ramp lets it bind sooner.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch


DEFAULT_RAMP = 10.0


def ema_decay_at(decay: float, updates: int, ramp: float = DEFAULT_RAMP) -> float:
    """The decay used by update number ``updates`` (1-based)."""
    return min(decay, (1.0 + updates) / (ramp + updates))


def ramp_end(decay: float, ramp: float = DEFAULT_RAMP) -> int:
    """The first update whose decay is ``decay`` itself rather than the ramp's."""
    return max(1, math.ceil((ramp * decay - 1.0) / (1.0 - decay) - 1e-9))


class StudentEMA:
    def __init__(self, params: list[torch.nn.Parameter], decay: float, ramp: float = DEFAULT_RAMP):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"student EMA decay must be in (0, 1), got {decay}")
        if not ramp >= 1.0:
            raise ValueError(f"student EMA ramp must be >= 1 (1 + n over ramp + n), got {ramp}")
        if not params:
            raise ValueError("student EMA needs at least one trainable student tensor")
        self.decay, self.ramp = decay, ramp
        self.params = list(params)
        self.shadow = [p.detach().float().clone() for p in self.params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> float:
        """Fold the current weights into the shadow; returns the decay used."""
        self.updates += 1
        d = ema_decay_at(self.decay, self.updates, self.ramp)
        for s, p in zip(self.shadow, self.params):
            s.mul_(d).add_(p.detach().float(), alpha=1.0 - d)
        return d

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": [s.cpu().clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        shadow = state["shadow"]
        if len(shadow) != len(self.shadow) or any(a.shape != b.shape for a, b in zip(shadow, self.shadow)):
            raise ValueError("resume state's student EMA does not match this student's LoRA tensors "
                             "(different rank or targets?)")
        for s, value in zip(self.shadow, shadow):
            s.copy_(value.to(s.device))
        self.updates = int(state["updates"])

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for s, p in zip(self.shadow, self.params):
            p.copy_(s.to(p.dtype))

    @contextmanager
    def applied(self):
        """The shadow in the student's tensors for the block, the raw weights back after it."""
        raw = [p.detach().clone() for p in self.params]
        self.copy_to_params()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self.params, raw):
                    p.copy_(r)
