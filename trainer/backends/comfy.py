"""The ComfyUI backend: teacher, student and critic roles over a ComfyUI ModelPatcher.

With ``nodes/`` the only code that imports ComfyUI. The input MODEL is never mutated: the backend
clones the ModelPatcher and attaches its LoRAs as *weight wrappers* of the clone (the mechanism
ComfyUI's own TrainLoraNode uses), so they exist only while the clone is loaded. One wrapper per
adapted weight holds a down/up pair per role and adds ``up @ down * alpha / rank`` for the role
that is active; with the teacher active it adds nothing. Every other wrapped weight is passed
through a copy when it is an inference tensor (ComfyUI loads models under ``inference_mode``, and
autograd may not save inference tensors for backward). Predictions go through
``BaseModel.apply_model``, i.e. ComfyUI's x0 contract; distillation needs a flow (CONST) model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..lora.targets import preset_modules
from .base import STUDENT, TEACHER, RoleBackend


class _ActiveRole:
    def __init__(self):
        self.role: str | None = None


class RoleLoraWrapper(nn.Module):
    """Weight wrapper adding the active role's low-rank delta to one weight."""

    def __init__(self, weight_shape: torch.Size, specs: dict, active: _ActiveRole):
        super().__init__()
        out_features, in_features = weight_shape[0], math.prod(weight_shape[1:])
        self.active = active
        self.scales = {role: spec.alpha / spec.rank for role, spec in specs.items()}
        # names contain "lora_" so the trainer loop's resume state picks them up
        self.lora_down = nn.ParameterDict({
            role: nn.Parameter(torch.randn(spec.rank, in_features) / math.sqrt(in_features))
            for role, spec in specs.items()})
        self.lora_up = nn.ParameterDict({role: nn.Parameter(torch.zeros(out_features, spec.rank))
                                         for role, spec in specs.items()})

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        role = self.active.role
        if role is None or role not in self.lora_down:
            return _trainable_view(weight)
        delta = (self.lora_up[role] @ self.lora_down[role]).reshape(weight.shape) * self.scales[role]
        return weight + delta.to(device=weight.device, dtype=weight.dtype)


def _trainable_view(weight: torch.Tensor) -> torch.Tensor:
    return weight.clone() if weight.is_inference() else weight


class _InferenceTensorGuard(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _trainable_view(weight)


class ComfyLoraBackend(RoleBackend):
    """Roles over a cloned ComfyUI ModelPatcher; the same interface as ``WanLoraBackend``."""

    def __init__(self, model_patcher, student, critic=None, targets: str = "attn_ffn"):
        import comfy.model_management
        import comfy.model_sampling

        model_sampling = model_patcher.get_model_object("model_sampling")
        if not isinstance(model_sampling, comfy.model_sampling.CONST):
            raise ValueError(f"distillation needs a flow-matching video model (Wan, LTX, HunyuanVideo); this MODEL "
                             f"uses {type(model_sampling).__name__}")
        self.patcher = model_patcher.clone()
        self.active = _ActiveRole()
        specs = {STUDENT: student, **({"critic": critic} if critic is not None else {})}
        self.roles = {TEACHER, *specs}
        wanted = set(preset_modules(targets))
        self.model = nn.ModuleDict()  # every trainable wrapper, keyed by its module name
        diffusion_model = self.patcher.model.diffusion_model
        for name, module in diffusion_model.named_modules():
            if not hasattr(module, "weight_function"):
                continue
            key = f"diffusion_model.{name}"
            block_relative = name.split(".", 2)[-1] if name.startswith("blocks.") else None
            if block_relative in wanted and getattr(module, "weight", None) is not None and module.weight.ndim == 2:
                wrapper = RoleLoraWrapper(module.weight.shape, specs, self.active)
                self.model[name.replace(".", "__")] = wrapper
                self.patcher.add_weight_wrapper(f"{key}.weight", wrapper)
            elif getattr(module, "weight", None) is not None:
                self.patcher.add_weight_wrapper(f"{key}.weight", _InferenceTensorGuard())
            if getattr(module, "bias", None) is not None:  # layer norms save their bias for backward
                self.patcher.add_weight_wrapper(f"{key}.bias", _InferenceTensorGuard())
        if not len(self.model):
            raise ValueError(f"no module of this model matches the LoRA targets {targets!r}: is it a Wan model?")
        comfy.model_management.load_models_gpu([self.patcher], force_full_load=True)
        self.model.to(comfy.model_management.get_torch_device())
        self.patcher.model.requires_grad_(False)
        from ..lora.export import teacher_fingerprint

        self.teacher_fingerprint = teacher_fingerprint(self.patcher.model.state_dict())

    @property
    def device(self) -> torch.device:
        import comfy.model_management

        return comfy.model_management.get_torch_device()

    @property
    def network(self) -> nn.Module:
        """The diffusion network itself (ComfyUI's ``diffusion_model``): what
        ``sampling.positions.strided_positions`` strides and the discriminator's feature taps hook into."""
        return self.patcher.model.diffusion_model

    def predict_x0(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, role: str) -> torch.Tensor:
        self.check_role(role)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        previous, self.active.role = self.active.role, (None if role == TEACHER else role)
        try:
            return self.patcher.model.apply_model(x, sigma, c_crossattn=context).float()
        finally:
            self.active.role = previous

    def predict_velocity(self, x, sigma, context, role: str) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).expand(x.shape[0])
        x0 = self.predict_x0(x, sigma, context, role)
        return (x.float() - x0) / sigma.view(-1, *([1] * (x.ndim - 1))).clamp_min(1e-6)

    def trainable_parameters(self, role: str) -> list[nn.Parameter]:
        if role == TEACHER:
            raise ValueError("the teacher is frozen; it has no trainable parameters")
        return [p for w in self.model.values() for p in (w.lora_down[role], w.lora_up[role])]

    def comfy_lora_state_dict(self, role: str = STUDENT) -> dict[str, torch.Tensor]:
        """The role's LoRA in ComfyUI's native keys (what LoraLoaderModelOnly reads)."""
        out = {}
        for key, wrapper in self.model.items():
            name = f"diffusion_model.{key.replace('__', '.')}"
            down, up = wrapper.lora_down[role].detach(), wrapper.lora_up[role].detach()
            out[f"{name}.lora_down.weight"] = down.float().cpu().contiguous()
            out[f"{name}.lora_up.weight"] = up.float().cpu().contiguous()
            out[f"{name}.alpha"] = torch.tensor(wrapper.scales[role] * down.shape[0], dtype=torch.float32)
        return out

    def export_lora(self, role: str, path, metadata: dict):
        from ..lora.export import write_stride_lora

        return write_stride_lora(self.comfy_lora_state_dict(role), path, metadata)
