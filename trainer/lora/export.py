"""Stride LoRA files: ComfyUI-native keys, Stride metadata, and loading them back into diffusers.

A Stride LoRA holds, for every adapted module, exactly three tensors under the original Wan module
name: ``diffusion_model.<module>.lora_down.weight`` (peft's lora_A, ``[rank, in]``),
``.lora_up.weight`` (peft's lora_B, ``[out, rank]``) and ``.alpha`` (a scalar; ComfyUI and peft both
scale the update by ``alpha / rank``). Those are the keys ComfyUI's LoraLoaderModelOnly loads
without any Wan-specific mapping, and the keys diffusers' Wan LoRA converter reads. The safetensors
metadata (all strings) records how the LoRA must be sampled (method, student step list, shift) and
which teacher it was distilled from (``teacher_fingerprint``), so a node can configure itself from
the file and refuse a mismatched base. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import atomic_save_safetensors
from ..sampling.samplers import check_gamma
from .inject import activate_adapter, keep_requires_grad, lora_layers, lora_parameters
from .targets import diffusers_module_to_wan, wan_module_to_diffusers

FORMAT_VERSION = 1
KEY_PREFIX = "diffusion_model."
KEY_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")
METADATA_PREFIX = "stride."
FINGERPRINT_SAMPLES_PER_TENSOR = 256


def _strict_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}: {value!r}")
    return value


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # raises TypeError for values JSON cannot hold


def _gamma(value: Any) -> float:
    return check_gamma(value, "student_gamma")


def _step_list(value: Any) -> str:
    steps = [float(step) for step in value]
    if not steps:
        raise ValueError("student_step_list must not be empty")
    return json.dumps(steps)


# metadata field -> (encode to the stored string, decode the stored string). The caller gives the
# first four; config and metrics default to {}, student_gamma to 1 (files written before it existed
# read as 1 too); format_version, lora_rank and lora_alpha are written by export_comfy_lora itself.
_REQUIRED_FIELDS = ("method", "student_step_list", "shift", "teacher_fingerprint")
_FIELDS: dict[str, tuple[Callable[[Any], str], Callable[[str], Any]]] = {
    "method": (_strict_str, str),
    "student_step_list": (_step_list, lambda s: [float(v) for v in json.loads(s)]),
    "shift": (lambda v: repr(float(v)), float),
    "teacher_fingerprint": (_strict_str, str),
    "config": (_json, json.loads),
    "metrics": (_json, json.loads),
    "student_gamma": (lambda v: repr(_gamma(v)), _gamma),
    "format_version": (lambda v: str(int(v)), int),
    "lora_rank": (lambda v: str(int(v)), int),
    "lora_alpha": (lambda v: repr(float(v)), float),
}
_WRITTEN_BY_EXPORT = ("format_version", "lora_rank", "lora_alpha")
# fields added after format 1 shipped: a file without one reads as this value (fresh noise, as before)
_ADDED_LATER = {"student_gamma": 1.0}
_DEFAULTS = {"config": {}, "metrics": {}, **_ADDED_LATER}  # what export writes for a field not given


# ---- teacher fingerprint

def _is_adapter_key(key: str) -> bool:
    return any(part.startswith(("lora_", "dora_")) for part in key.split("."))


def teacher_fingerprint(model_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """A stable hash of a teacher's weights: sha256 over the sorted weight names (original Wan
    names), their shapes and up to 256 evenly strided values of each in float32. Reads a few
    hundred values per tensor, not every byte, so it is cheap for a 14B model; LoRA parameters are
    ignored, so the teacher under an adapter has the same fingerprint. The same for a diffusers
    model, an original-Wan state dict and a ComfyUI model's ``state_dict()`` holding the same
    weights, at any precision that holds them exactly (a bf16 file and the fp32 model loaded from it)."""
    from ..toy.teacher import diffusers_to_wan_keys

    if isinstance(model_or_state_dict, torch.nn.Module):
        state = model_or_state_dict.state_dict()
    else:
        state = model_or_state_dict
    if any(k.startswith(KEY_PREFIX) for k in state):  # a ComfyUI model: only its diffusion model is the teacher
        state = {k: v for k, v in state.items() if k.startswith(KEY_PREFIX)}
    # one naming whatever the source: diffusers (LoRA-injected or not), an original-Wan file, ComfyUI's model
    base = {k.removeprefix(KEY_PREFIX).replace(".base_layer.", "."): v for k, v in state.items() if not _is_adapter_key(k)}
    named = sorted(diffusers_to_wan_keys(base).items())
    digest = hashlib.sha256()
    for key, tensor in named:
        flat = tensor.detach().reshape(-1)
        stride = max(1, flat.numel() // FINGERPRINT_SAMPLES_PER_TENSOR)
        sample = flat[::stride][:FINGERPRINT_SAMPLES_PER_TENSOR].to(device="cpu", dtype=torch.float32)
        digest.update(key.encode())
        digest.update(json.dumps(list(tensor.shape)).encode())
        digest.update(sample.contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---- export

def comfy_lora_state_dict(model: torch.nn.Module, adapter_name: str, dtype: torch.dtype | None = None
                          ) -> dict[str, torch.Tensor]:
    """One adapter of a peft-injected diffusers Wan model as ComfyUI-native LoRA tensors."""
    tensors: dict[str, torch.Tensor] = {}
    for module_name, layer in lora_layers(model, adapter_name):
        if getattr(layer, "use_dora", {}).get(adapter_name, False):
            raise ValueError("DoRA adapters are not exported: ComfyUI-native LoRA keys here are plain LoRA")
        down = layer.lora_A[adapter_name].weight.detach()
        up = layer.lora_B[adapter_name].weight.detach()
        rank = down.shape[0]
        # peft multiplies by scaling = lora_alpha / r (or / sqrt(r) with rsLoRA); ComfyUI by alpha / rank
        alpha = float(layer.scaling[adapter_name]) * rank
        prefix = KEY_PREFIX + diffusers_module_to_wan(module_name)
        out_dtype = dtype or down.dtype
        tensors[prefix + ".lora_down.weight"] = down.to(device="cpu", dtype=out_dtype).contiguous()
        tensors[prefix + ".lora_up.weight"] = up.to(device="cpu", dtype=out_dtype).contiguous()
        tensors[prefix + ".alpha"] = torch.tensor(alpha, dtype=torch.float32)
    if not tensors:
        raise ValueError(f"adapter {adapter_name!r} adapts no module")
    return tensors


def encode_stride_metadata(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Validate caller metadata and turn it into ``stride.*`` string entries."""
    allowed = set(_FIELDS) - set(_WRITTEN_BY_EXPORT)
    unknown = sorted(set(metadata) - allowed)
    if unknown:
        raise ValueError(f"unknown Stride LoRA metadata keys {unknown}; allowed: {sorted(allowed)}")
    missing = [k for k in _REQUIRED_FIELDS if k not in metadata]
    if missing:
        raise ValueError(f"Stride LoRA metadata is missing {missing}")
    values = {**_DEFAULTS, **metadata}
    encoded = {}
    for key, value in values.items():
        try:
            encoded[METADATA_PREFIX + key] = _FIELDS[key][0](value)
        except (TypeError, ValueError) as err:
            raise type(err)(f"Stride LoRA metadata {key!r}: {err}") from err
    return encoded


def export_comfy_lora(model: torch.nn.Module, adapter_name: str, path: Path | str, metadata: Mapping[str, Any],
                      dtype: torch.dtype | None = None) -> Path:
    """Write one adapter as a ComfyUI-native Stride LoRA file (atomically); return its path.

    ``metadata`` needs ``method`` (str), ``student_step_list`` (timesteps or sigmas), ``shift``,
    ``teacher_fingerprint`` (see ``teacher_fingerprint``) and may hold ``config`` and ``metrics``
    (JSON-serialisable dicts) and ``student_gamma`` (the share of fresh noise its sampler re-noises
    with). ``dtype`` casts the LoRA matrices (default: as trained)."""
    return write_stride_lora(comfy_lora_state_dict(model, adapter_name, dtype), path, metadata)


def write_stride_lora(tensors: Mapping[str, torch.Tensor], path: Path | str, metadata: Mapping[str, Any]) -> Path:
    """Write LoRA tensors already in ComfyUI keys with the Stride metadata, atomically."""
    check_comfy_lora_keys(tensors)  # raises for anything ComfyUI would not load
    header = encode_stride_metadata(metadata)
    first_down = next(v for k, v in tensors.items() if k.endswith(".lora_down.weight"))
    first_alpha = next(v for k, v in tensors.items() if k.endswith(".alpha"))
    header[METADATA_PREFIX + "format_version"] = str(FORMAT_VERSION)
    header[METADATA_PREFIX + "lora_rank"] = str(first_down.shape[0])
    header[METADATA_PREFIX + "lora_alpha"] = repr(float(first_alpha))
    path = Path(path)
    atomic_save_safetensors(dict(tensors), path, header)
    return path


# ---- reading

def read_stride_metadata(path: Path | str) -> dict[str, Any]:
    """The parsed Stride metadata of a LoRA file (``student_step_list`` as list[float], ``shift``
    as float, ``config``/``metrics`` as dicts, ...). A clear error if the file is not a Stride LoRA."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    if METADATA_PREFIX + "format_version" not in header:
        raise ValueError(f"{path} is not a Stride LoRA (no '{METADATA_PREFIX}format_version' metadata)")
    version = int(header[METADATA_PREFIX + "format_version"])
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: Stride LoRA format {version} is newer than this reader ({FORMAT_VERSION})")
    parsed = {}
    for key, (_, decode) in _FIELDS.items():
        stored = header.get(METADATA_PREFIX + key)
        if stored is None and key in _ADDED_LATER:
            parsed[key] = _ADDED_LATER[key]
            continue
        if stored is None:
            raise ValueError(f"{path}: Stride LoRA metadata lacks '{METADATA_PREFIX}{key}'")
        parsed[key] = decode(stored)
    return parsed


def check_comfy_lora_keys(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Validate ComfyUI-native Stride LoRA keys; return the adapted original Wan module names."""
    modules: dict[str, set[str]] = {}
    for key in tensors:
        suffix = next((s for s in KEY_SUFFIXES if key.endswith(s)), None)
        if not key.startswith(KEY_PREFIX) or suffix is None:
            raise ValueError(f"unexpected key {key!r} in a Stride LoRA: expected '{KEY_PREFIX}<module>' + one of "
                             f"{KEY_SUFFIXES}")
        modules.setdefault(key[len(KEY_PREFIX):-len(suffix)], set()).add(suffix)
    incomplete = sorted(m for m, found in modules.items() if found != set(KEY_SUFFIXES))
    if incomplete:
        raise ValueError(f"modules without all of {KEY_SUFFIXES}: {incomplete[:5]}")
    for module in modules:
        wan_module_to_diffusers(module)  # raises for a module no preset can adapt
    return sorted(modules)


def load_comfy_lora_into_diffusers(model: torch.nn.Module, path: Path | str, adapter_name: str) -> list[str]:
    """Load a Stride LoRA file (ComfyUI-native keys, as ``export_comfy_lora`` writes; other key
    layouts are refused before diffusers sees them) into a diffusers ``WanTransformer3DModel`` as a
    new adapter, the way diffusers' ``WanPipeline.load_lora_weights`` does: the key conversion is
    diffusers' own (``_convert_non_diffusers_wan_lora_to_diffusers``, reached through the public
    ``WanLoraLoaderMixin.lora_state_dict``), which folds ``alpha / rank`` into the matrices.
    Returns the adapted diffusers module names. The new adapter is left active and frozen; the
    ``requires_grad`` of everything else is left as it was."""
    from diffusers.loaders import WanLoraLoaderMixin
    from safetensors.torch import load_file

    if adapter_name in (getattr(model, "peft_config", {}) or {}):
        raise ValueError(f"a LoRA adapter named {adapter_name!r} is already on this model")
    tensors = load_file(str(path))
    check_comfy_lora_keys(tensors)
    converted = WanLoraLoaderMixin.lora_state_dict(tensors)
    with keep_requires_grad(model):
        model.load_lora_adapter(converted, prefix="transformer", adapter_name=adapter_name)
    expected = sorted({k.removeprefix("transformer.").rsplit(".lora_", 1)[0] for k in converted})
    loaded = sorted(name for name, _ in lora_layers(model, adapter_name))
    if loaded != expected:
        raise ValueError(f"{path}: diffusers loaded LoRA weights for {len(loaded)} modules, the file has "
                         f"{len(expected)}; first differences: {sorted(set(expected) ^ set(loaded))[:5]}")
    for param in lora_parameters(model, adapter_name):
        param.requires_grad_(False)
    activate_adapter(model, adapter_name)
    return loaded
