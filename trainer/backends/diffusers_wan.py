"""The diffusers backend: a ``WanTransformer3DModel`` (flow model) behind the Denoiser protocol.

Wan predicts the flow velocity at timestep ``1000 * sigma``; ``predict_x0`` converts it with
``x0 = x - sigma * v``. bf16 autocast is used when asked (on CUDA, or on the CPU where it is
faster for these small models); inputs and outputs stay float32.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .. import flow


@dataclass
class DiffusersWanDenoiser:
    model: torch.nn.Module
    autocast_dtype: torch.dtype | None = None

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def predict_velocity(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        with self._autocast(x.device):
            out = self.model(hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=context,
                             return_dict=False)[0]
        return out.float()

    def predict_x0(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        return flow.x0_from_velocity(x.float(), self.predict_velocity(x, sigma, context), sigma)
