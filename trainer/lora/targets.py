"""Which Wan modules a LoRA adapts, as data.

One table pairs each adaptable linear inside a transformer block under its original Wan name
(the name ComfyUI uses and LoRA files carry: ``blocks.N.self_attn.q``) with its diffusers
``WanTransformer3DModel`` name (``blocks.N.attn1.to_q``). Named presets are lists of those in-block
names; selecting a preset against a model's module names gives the full names to hand to peft.
Pure data and string functions: no torch, no diffusers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Original Wan (= ComfyUI) in-block module name -> diffusers WanTransformer3DModel in-block name.
WAN_TO_DIFFUSERS_BLOCK_MODULES: dict[str, str] = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    # image-conditioning projections; only image-to-video Wan models have them
    "cross_attn.k_img": "attn2.add_k_proj",
    "cross_attn.v_img": "attn2.add_v_proj",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
DIFFUSERS_TO_WAN_BLOCK_MODULES: dict[str, str] = {v: k for k, v in WAN_TO_DIFFUSERS_BLOCK_MODULES.items()}

_ATTENTION = (
    "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
    "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
    "cross_attn.k_img", "cross_attn.v_img",
)
_FFN = ("ffn.0", "ffn.2")

# Preset name -> in-block Wan module names it adapts (modules a model lacks are simply not selected).
TARGET_PRESETS: dict[str, tuple[str, ...]] = {
    "attn_ffn": _ATTENTION + _FFN,
    "attn": _ATTENTION,
    # VideoX-Fun's Wan LoRA targets (q, k, v, ffn.0, ffn.2): no output projections
    "qkv_ffn": ("self_attn.q", "self_attn.k", "self_attn.v", "cross_attn.q", "cross_attn.k", "cross_attn.v") + _FFN,
}
DEFAULT_PRESET = "attn_ffn"

_BLOCK_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _split_block_name(name: str) -> tuple[str, str]:
    match = _BLOCK_NAME.match(name)
    if match is None:
        raise ValueError(f"not a Wan transformer block module name: {name!r} (expected 'blocks.<N>.<module>')")
    return match.group(1), match.group(2)


def diffusers_module_to_wan(name: str) -> str:
    """``blocks.3.attn2.to_out.0`` -> ``blocks.3.cross_attn.o``."""
    index, inner = _split_block_name(name)
    if inner not in DIFFUSERS_TO_WAN_BLOCK_MODULES:
        raise ValueError(f"{name!r} is not a LoRA-adaptable diffusers Wan module; known in-block names: "
                         f"{sorted(DIFFUSERS_TO_WAN_BLOCK_MODULES)}")
    return f"blocks.{index}.{DIFFUSERS_TO_WAN_BLOCK_MODULES[inner]}"


def wan_module_to_diffusers(name: str) -> str:
    """``blocks.3.cross_attn.o`` -> ``blocks.3.attn2.to_out.0``."""
    index, inner = _split_block_name(name)
    if inner not in WAN_TO_DIFFUSERS_BLOCK_MODULES:
        raise ValueError(f"{name!r} is not a LoRA-adaptable Wan module; known in-block names: "
                         f"{sorted(WAN_TO_DIFFUSERS_BLOCK_MODULES)}")
    return f"blocks.{index}.{WAN_TO_DIFFUSERS_BLOCK_MODULES[inner]}"


def preset_modules(preset: str) -> tuple[str, ...]:
    """The in-block Wan module names of a preset; a clear error for an unknown preset."""
    if preset not in TARGET_PRESETS:
        raise ValueError(f"unknown LoRA target preset {preset!r}; known presets: {sorted(TARGET_PRESETS)}")
    return TARGET_PRESETS[preset]


def select_diffusers_targets(module_names: Iterable[str], preset: str) -> list[str]:
    """The full diffusers module names (of those given, e.g. a model's ``named_modules``) a preset adapts."""
    wanted = {WAN_TO_DIFFUSERS_BLOCK_MODULES[m] for m in preset_modules(preset)}
    selected = []
    for name in module_names:
        match = _BLOCK_NAME.match(name)
        if match is not None and match.group(2) in wanted:
            selected.append(name)
    return sorted(selected, key=_block_sort_key)


def _block_sort_key(name: str) -> tuple[int, str]:
    index, inner = _split_block_name(name)
    return int(index), inner
