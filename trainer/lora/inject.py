"""Named LoRA adapters on one frozen diffusers Wan transformer, and switching between them.

The trainer keeps one frozen base and several adapters on it ("student", "critic"): the teacher
is the base with every adapter disabled, the student is the base with only the student adapter
active, the critic likewise. This module owns adding an adapter (peft ``LoraConfig`` through
diffusers' ``add_adapter``, with the targets spelled out as full module names), activating exactly
one adapter or none, and listing one adapter's parameters for its optimizer. peft ties trainability
to activation (activating an adapter sets ``requires_grad`` on it and clears it on the others;
disabling clears it on all); here switching never changes ``requires_grad``: every adapter added
by ``add_lora`` stays trainable and the base stays frozen, whatever is active.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from .targets import DEFAULT_PRESET, preset_modules, select_diffusers_targets

# LoraSpec.init -> peft's init_lora_weights. Both start lora_B at zero, so a new adapter leaves the
# model's output unchanged. Inits that rewrite the base weights (pissa, olora, loftq) are left out:
# the base is shared with the teacher and the other adapters.
LORA_INITS: dict[str, bool | str] = {
    "default": True,  # peft's default: kaiming-uniform lora_A
    "gaussian": "gaussian",  # lora_A ~ N(0, 1/rank), as diffusers' LoRA training scripts use
}


@dataclass(frozen=True)
class LoraSpec:
    """One adapter's shape. The update is ``(alpha / rank) * lora_B @ lora_A``."""

    rank: int = 32
    alpha: float = 32.0
    targets: str = DEFAULT_PRESET  # a preset name from targets.TARGET_PRESETS
    dropout: float = 0.0
    init: str = "gaussian"  # a key of LORA_INITS

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank must be an integer >= 1, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if self.init not in LORA_INITS:
            raise ValueError(f"unknown LoRA init {self.init!r}; known: {sorted(LORA_INITS)}")
        preset_modules(self.targets)  # raises for an unknown preset

    def to_dict(self) -> dict:
        return asdict(self)


def _tuner_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def adapter_names(model: torch.nn.Module) -> list[str]:
    """Names of the adapters on ``model``, in the order they were added."""
    return list(getattr(model, "peft_config", {}) or {})


def require_adapter(model: torch.nn.Module, adapter_name: str) -> None:
    if adapter_name not in adapter_names(model):
        raise ValueError(f"no LoRA adapter named {adapter_name!r} on this model; it has {adapter_names(model)}")


def lora_layers(model: torch.nn.Module, adapter_name: str) -> list[tuple[str, torch.nn.Module]]:
    """(module name, peft LoRA layer) for every module that carries ``adapter_name``."""
    require_adapter(model, adapter_name)
    return [(name, m) for name, m in model.named_modules() if adapter_name in getattr(m, "lora_A", {})]


@contextmanager
def keep_requires_grad(model: torch.nn.Module) -> Iterator[None]:
    """Undo, on exit, the requires_grad changes peft makes to the model's existing parameters when
    adapters are added, loaded, activated or disabled."""
    flags = {id(p): (p, p.requires_grad) for p in model.parameters()}
    try:
        yield
    finally:
        for param, flag in flags.values():
            param.requires_grad_(flag)


def add_lora(model: torch.nn.Module, spec: LoraSpec, adapter_name: str) -> list[str]:
    """Add a trainable LoRA adapter to a diffusers ``WanTransformer3DModel``; return the adapted
    (diffusers) module names. The base weights are frozen. Which adapter is active does not change,
    except that the first adapter added becomes the active one."""
    from peft import LoraConfig

    if not adapter_name or "." in adapter_name:
        raise ValueError(f"adapter name must be non-empty and contain no '.': {adapter_name!r}")
    if adapter_name in adapter_names(model):
        raise ValueError(f"a LoRA adapter named {adapter_name!r} is already on this model ({adapter_names(model)})")
    targets = select_diffusers_targets((name for name, _ in model.named_modules()), spec.targets)
    if not targets:
        raise ValueError(f"no module of this {type(model).__name__} matches LoRA target preset {spec.targets!r}; "
                         "expected a diffusers WanTransformer3DModel")
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        init_lora_weights=LORA_INITS[spec.init],
        target_modules=targets,  # full module names: peft matches them exactly
    )
    previous = active_state(model)
    with keep_requires_grad(model), warnings.catch_warnings():
        # several adapters on one base is the point here, not the mistake peft warns about
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
        model.add_adapter(config, adapter_name=adapter_name)
    if previous is not None:
        restore_state(model, previous)
    adapter_params = {id(p) for name in adapter_names(model) for p in lora_parameters(model, name)}
    for param in model.parameters():
        if id(param) not in adapter_params:
            param.requires_grad_(False)
    for param in lora_parameters(model, adapter_name):
        param.requires_grad_(True)
    return targets


def lora_parameters(model: torch.nn.Module, adapter_name: str) -> list[torch.nn.Parameter]:
    """The parameters of one adapter (lora_A and lora_B of every adapted module), nothing else."""
    require_adapter(model, adapter_name)
    params = []
    for layer in _tuner_layers(model):
        for dict_name in layer.adapter_layer_names:  # ("lora_A", "lora_B", "lora_embedding_A", ...)
            module_dict = getattr(layer, dict_name)
            if adapter_name in module_dict:
                held = module_dict[adapter_name]
                params.extend(held.parameters() if isinstance(held, torch.nn.Module) else [held])
    return params


def active_state(model: torch.nn.Module) -> tuple[list[str], bool] | None:
    """(active adapter names, adapters disabled) or None when the model has no adapter."""
    layers = _tuner_layers(model)
    if not layers:
        return None
    return list(layers[0].active_adapters), bool(layers[0].disable_adapters)


def restore_state(model: torch.nn.Module, state: tuple[list[str], bool]) -> None:
    active, disabled = state
    with keep_requires_grad(model):
        model.set_adapter(active)
        if disabled:
            model.disable_adapters()
        else:
            model.enable_adapters()


def activate_adapter(model: torch.nn.Module, adapter_name: str | None) -> None:
    """Make exactly ``adapter_name`` active, or with None disable every adapter (the frozen base,
    i.e. the teacher). ``requires_grad`` is left as it was."""
    if adapter_name is None:
        if active_state(model) is None:
            return  # no adapters: the model already is the base
        with keep_requires_grad(model):
            model.disable_adapters()
        return
    require_adapter(model, adapter_name)
    restore_state(model, ([adapter_name], False))


def active_adapter(model: torch.nn.Module) -> str | None:
    """The one active adapter, or None when adapters are disabled (or there are none)."""
    state = active_state(model)
    if state is None or state[1]:
        return None
    active = state[0]
    if len(active) != 1:
        raise RuntimeError(f"expected one active adapter, found {active}")
    return active[0]


@contextmanager
def use_adapter(model: torch.nn.Module, adapter_name: str | None) -> Iterator[torch.nn.Module]:
    """Within the block only ``adapter_name`` is active (None: no adapter, the teacher); on exit the
    previous activation is restored, also after an exception."""
    previous = active_state(model)
    activate_adapter(model, adapter_name)
    try:
        yield model
    finally:
        if previous is not None:
            restore_state(model, previous)


def fuse_adapter(model: torch.nn.Module, adapter_name: str) -> None:
    """Merge ``adapter_name`` into the base weights and take every LoRA layer out of ``model``: it
    then computes base + adapter with plain linears at the base model's cost per call, the way
    ComfyUI's LoRA loaders patch a LoRA into the weights. For sampling a student, never for
    training (the base is changed in place). The model must carry this one adapter only."""
    require_adapter(model, adapter_name)
    others = [name for name in adapter_names(model) if name != adapter_name]
    if others:
        raise ValueError(f"fusing {adapter_name!r} would leave the other adapters {others} on a changed base")
    for layer in _tuner_layers(model):
        layer.merge(adapter_names=[adapter_name])
    model.unload_lora()  # diffusers: each tuner layer is replaced by its (now merged) base layer
