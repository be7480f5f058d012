"""The Denoiser protocol every sampler, schedule search, evaluation and distillation method uses.

A backend wraps one loaded video model and answers ``predict_x0(x, sigma, context)`` in the flow
convention of ``trainer.flow`` (sigma in [0, 1], x0 prediction out), whatever the model predicts
internally. ``as_kdiffusion_model`` turns a backend plus conditioning and a CFG scale into the
``model(x, sigma * s_in)`` callable the k-diffusion-style samplers in ``trainer.sampling`` take.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..sampling.positions import frame_stride, strided_positions

# the roles a distillation backend serves (teacher = frozen base, student/critic = adapters)
TEACHER, STUDENT, CRITIC = "teacher", "student", "critic"


@runtime_checkable
class Denoiser(Protocol):
    def predict_x0(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x0 prediction for the noised latent x [B, C, F, H, W] at per-sample sigma [B]."""
        ...


def guided_x0(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
              negative: torch.Tensor | None, cfg: float) -> torch.Tensor:
    """Classifier-free guidance in ComfyUI's convention: uncond + cfg * (cond - uncond).

    cfg == 1 (or no negative) is a single conditional pass. Both passes run as one batch.
    """
    if negative is None or cfg == 1.0:
        return denoiser.predict_x0(x, sigma, context)
    both = denoiser.predict_x0(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([context, negative]))
    cond, uncond = both.chunk(2)
    return uncond + cfg * (cond - uncond)


def denoiser_module(denoiser) -> torch.nn.Module | None:
    """The network behind a Denoiser: a role view's ``backend.network`` (on the ComfyUI backend
    ``backend.model`` holds only the LoRA wrappers), else a diffusers denoiser's ``model``."""
    network = getattr(getattr(denoiser, "backend", None), "network", None)
    if isinstance(network, torch.nn.Module):
        return network
    module = getattr(denoiser, "model", None)
    return module if isinstance(module, torch.nn.Module) else None


def as_kdiffusion_model(denoiser: Denoiser, context: torch.Tensor, negative: torch.Tensor | None = None,
                        cfg: float = 1.0):
    """A ``model(x, sigma_batch, **extra) -> x0`` callable for the samplers (flow convention); a
    ``model_options["transformer_options"]`` frame stride (``sampling.positions``) is honoured."""
    if negative is not None and negative.shape != context.shape:
        raise ValueError(f"negative conditioning {tuple(negative.shape)} does not match positive {tuple(context.shape)}")

    def model(x: torch.Tensor, sigma: torch.Tensor, model_options: dict | None = None, **_extra) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        stride = frame_stride((model_options or {}).get("transformer_options"))
        with strided_positions(denoiser_module(denoiser), stride):
            return guided_x0(denoiser, x, sigma, context, negative, cfg)

    return model


class RoleBackend:
    """What every role backend shares: the role set, the checks, and a Denoiser view per role."""

    roles: set[str]

    def require(self, *roles: str) -> None:
        missing = [r for r in roles if r not in self.roles]
        if missing:
            raise ValueError(f"this method needs the roles {list(roles)}; the backend lacks {missing}")

    def check_role(self, role: str) -> None:
        if role not in self.roles:
            raise ValueError(f"unknown role {role!r}; this backend has {sorted(self.roles)}")

    def view(self, role: str) -> "RoleDenoiser":
        self.check_role(role)
        return RoleDenoiser(self, role)


class RoleDenoiser:
    """A backend role seen through the Denoiser protocol."""

    def __init__(self, backend: RoleBackend, role: str):
        self.backend, self.role = backend, role

    def predict_x0(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.backend.predict_x0(x, sigma, context, self.role)
