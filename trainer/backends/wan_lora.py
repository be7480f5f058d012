"""One frozen Wan base serving three roles: teacher, student (a LoRA) and critic (a second LoRA).

DMD-style distillation needs a teacher ("real score"), a student (generator) and a critic ("fake
score", a copy of the teacher trained on student samples). Holding three copies of a 14B model
is what makes published recipes need 8 GPUs; here one copy of the base carries two peft adapters
and each forward call activates exactly the role it needs (the teacher is the base with adapters
disabled). ``view(role)`` shows a role through the Denoiser protocol, so samplers, CFG and the
evaluation run unchanged on any role.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.utils.checkpoint

from .. import flow
from ..lora.inject import LoraSpec, active_state, add_lora, lora_parameters, restore_state, use_adapter
from .base import CRITIC, STUDENT, TEACHER, RoleBackend


class WanLoraBackend(RoleBackend):
    """A diffusers ``WanTransformer3DModel`` with student/critic adapters on a frozen base."""

    def __init__(self, model: torch.nn.Module, student: LoraSpec, critic: LoraSpec | None = None,
                 autocast_dtype: torch.dtype | None = None, gradient_checkpointing: bool = False):
        self.model = model
        model.requires_grad_(False)
        add_lora(model, student, STUDENT)
        self.roles = {TEACHER, STUDENT}
        if critic is not None:
            add_lora(model, critic, CRITIC)
            self.roles.add(CRITIC)
        self.autocast_dtype = autocast_dtype
        if gradient_checkpointing:
            model.enable_gradient_checkpointing(gradient_checkpointing_func=self._checkpoint_with_adapter)

    def _checkpoint_with_adapter(self, block, *args, **kwargs):
        """Gradient checkpointing that recomputes a block with the adapter that ran it.

        The plain checkpoint re-runs blocks during backward with whatever adapter is active then
        (silently wrong critic gradients, errors for the teacher); record the role at forward time
        and restore it inside the recomputed function.
        """
        state = active_state(self.model)

        def run(*inner_args, **inner_kwargs):
            current = active_state(self.model)
            if current != state:
                restore_state(self.model, state)
            try:
                return block(*inner_args, **inner_kwargs)
            finally:
                if current != state:
                    restore_state(self.model, current)

        return torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def network(self) -> torch.nn.Module:
        """The diffusion network itself: what ``sampling.positions.strided_positions`` strides and the
        discriminator's feature taps (``methods.gan``) hook into."""
        return self.model

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def predict_velocity(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, role: str) -> torch.Tensor:
        self.check_role(role)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        adapter = None if role == TEACHER else role
        with use_adapter(self.model, adapter), self._autocast(x.device):
            out = self.model(hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=context,
                             return_dict=False)[0]
        return out.float()

    def predict_x0(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, role: str) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        return flow.x0_from_velocity(x.float(), self.predict_velocity(x, sigma, context, role), sigma)

    def trainable_parameters(self, role: str) -> list[torch.nn.Parameter]:
        if role == TEACHER:
            raise ValueError("the teacher is frozen; it has no trainable parameters")
        return lora_parameters(self.model, role)

    def export_lora(self, role: str, path, metadata: dict):
        """Write the role's adapter as a ComfyUI-native Stride LoRA file."""
        from ..lora.export import export_comfy_lora

        return export_comfy_lora(self.model, role, path, metadata)
