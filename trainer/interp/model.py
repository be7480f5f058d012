"""The learned latent interpolator of Adaptive Video Distillation (METHODS.md 1b) and its file format.

This module owns ``LatentInterpolator``: a small 2-D U-Net (32/64/128 channels by default) that
reads two neighbouring latent frames concatenated on the channel axis (``2C`` channels) and
predicts the frame between them (``C`` channels) as a residual over their linear blend, so an
untrained network is exactly linear interpolation and training only has to learn the correction
(motion, occlusion). Channels whose blend is exact in a pair (``latent.trivial_channels``) are blended
and hidden from the network; so are, always, the ``blend_channels`` that were trivial in every training
pair (the toy codec's coordinate padding): the network never saw them vary, and generated latents
only approximate them, which without this would feed it inputs it was never trained on.
``interpolate`` turns ``F`` frames into ``2F - 1`` (repeatedly for factors 4, 8, ...). Weights are saved as safetensors with the architecture, training steps and metrics
in the metadata; ``DEFAULT_WEIGHTS_PATH`` is the interpolator shipped for the toy domain, trained
on its codec latents (the space the diffusion model sees, i.e. after ComfyUI's ``process_in``).
``resolve_interpolator`` turns a method name, a loaded interpolator or a callable into one
``latent -> latent`` function, which is what the interpolated sampler and the nodes consume; it can
run a learned interpolator in another compute dtype (``COMPUTE_DTYPES``: bf16 is faster on GPUs and on CPUs
with bf16 instructions). ``shipped_interpolator`` reads the shipped weights once per process
and dtype, so sampling with ``"learned"`` does not read the file on every call.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import atomic_save_safetensors
from .latent import LATENT_INTERPOLATORS, check_video_latent, frame_pairs, interpolate_latent, trivial_channels, weave

DEFAULT_WEIGHTS_PATH = Path(__file__).parent / "assets" / "toy_latent_interpolator.safetensors"
FILE_KIND = "stride_latent_interpolator"

LatentFunction = Callable[[torch.Tensor], torch.Tensor]

# compute dtypes a learned interpolator can run in, by name (sampler options are strings)
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class InterpolatorArch:
    """Shape of the U-Net: latent channels, one width per resolution level, GroupNorm groups."""

    latent_channels: int = 16
    widths: tuple[int, ...] = (32, 64, 128)
    norm_groups: int = 8

    def __post_init__(self):
        if self.latent_channels < 1 or not self.widths:
            raise ValueError(f"InterpolatorArch needs latent_channels >= 1 and at least one width, got {self}")
        if any(w % self.norm_groups for w in self.widths):
            raise ValueError(f"every width must be divisible by norm_groups={self.norm_groups}, got {self.widths}")

    @property
    def spatial_multiple(self) -> int:
        """Height and width are padded to a multiple of this (one halving per extra level)."""
        return 2 ** (len(self.widths) - 1)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "InterpolatorArch":
        values = json.loads(text)
        values["widths"] = tuple(values["widths"])
        return cls(**values)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class _UpLevel(nn.Module):
    """Upsample, merge with the encoder's skip at that resolution, refine."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.upsample_conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.merge = nn.Conv2d(2 * out_channels, out_channels, 3, padding=1)
        self.refine = _ResidualBlock(out_channels, groups)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.upsample_conv(F.interpolate(x, size=skip.shape[-2:], mode="nearest"))
        return self.refine(self.merge(torch.cat([x, skip], dim=1)))


class LatentInterpolator(nn.Module):
    """``forward(start, end) -> middle`` on frame pairs ``[N, C, H, W]``; ``interpolate(latent)`` on videos."""

    def __init__(self, arch: InterpolatorArch = InterpolatorArch()):
        super().__init__()
        self.arch = arch
        self.metadata: dict[str, str] = {}
        # channels trivial in every training pair: blended and hidden from the network at inference too
        self.blend_channels: tuple[int, ...] = ()
        widths, groups = arch.widths, arch.norm_groups
        self.stem = nn.Conv2d(2 * arch.latent_channels, widths[0], 3, padding=1)
        self.encoder = nn.ModuleList([_ResidualBlock(widths[0], groups)])
        self.downsample = nn.ModuleList()
        for narrow, wide in zip(widths[:-1], widths[1:]):
            self.downsample.append(nn.Conv2d(narrow, wide, 3, stride=2, padding=1))
            self.encoder.append(_ResidualBlock(wide, groups))
        self.decoder = nn.ModuleList(
            [_UpLevel(wide, narrow, groups) for narrow, wide in zip(reversed(widths[:-1]), reversed(widths[1:]))]
        )
        self.head = nn.Sequential(nn.GroupNorm(groups, widths[0]), nn.SiLU(),
                                  nn.Conv2d(widths[0], arch.latent_channels, 3, padding=1))
        # zero-initialised output: before training the interpolator is exactly the linear blend
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        if start.shape != end.shape or start.ndim != 4 or start.shape[1] != self.arch.latent_channels:
            raise ValueError(f"LatentInterpolator expects two [N, {self.arch.latent_channels}, H, W] batches, "
                             f"got {tuple(start.shape)} and {tuple(end.shape)}")
        h, w = start.shape[-2:]
        multiple = self.arch.spatial_multiple
        pad_h, pad_w = (-h) % multiple, (-w) % multiple
        # channels whose exact in-between is the blend are blended and hidden from the network, and so are
        # the channels it never saw vary in training
        trivial = trivial_channels(start, end)
        if self.blend_channels:
            fixed = torch.zeros(1, start.shape[1], 1, 1, dtype=torch.bool, device=start.device)
            fixed[:, list(self.blend_channels)] = True
            trivial = trivial | fixed
        blend = 0.5 * (start + end)
        pair = torch.cat([start.masked_fill(trivial, 0.0), end.masked_fill(trivial, 0.0)], dim=1)
        if pad_h or pad_w:
            pair = F.pad(pair, (0, pad_w, 0, pad_h), mode="replicate")
        x = self.encoder[0](self.stem(pair))
        skips = [x]
        for down, block in zip(self.downsample, self.encoder[1:]):
            x = block(down(x))
            skips.append(x)
        for level, skip in zip(self.decoder, reversed(skips[:-1])):
            x = level(x, skip)
        correction = self.head(x)[..., :h, :w]
        return torch.where(trivial, blend, blend + correction)

    def interpolate(self, latent: torch.Tensor, factor: int = 2) -> torch.Tensor:
        """``[B, C, F, H, W] -> [B, C, (F - 1) * factor + 1, H, W]``, originals kept; factor a power of 2.

        Runs on the latent's device and returns its dtype; the module itself is not moved (a
        copy runs elsewhere), so one loaded interpolator can serve latents on any device.
        """
        check_video_latent(latent)
        if factor < 1 or factor & (factor - 1):
            raise ValueError(f"the learned interpolator only halves time steps: "
                             f"factor must be a power of 2, got {factor}")
        parameter = next(self.parameters())
        network = self if parameter.device == latent.device else copy.deepcopy(self).to(latent.device)
        out = latent
        with torch.no_grad():
            while factor > 1:
                start, end = frame_pairs(out.to(parameter.dtype))
                out = weave(out, [network(start, end)])
                factor //= 2
        return out

    def frame_pair_method(self) -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]:
        """This network as a ``(start, end, t)`` method for ``interpolate_latent`` (t must be 0.5)."""

        def middle(start: torch.Tensor, end: torch.Tensor, t: float) -> torch.Tensor:
            if t != 0.5:
                raise ValueError(f"the learned interpolator predicts midpoints only, asked for t={t}")
            with torch.no_grad():
                return self(start, end)

        return middle


def save_interpolator(model: LatentInterpolator, path: Path | str, metadata: dict | None = None,
                      dtype: torch.dtype = torch.float16) -> Path:
    """Write the weights (``dtype``, fp16 by default: half the size, no measurable loss) atomically.

    ``metadata`` values that are not strings are stored as JSON.
    """
    tensors = {name: value.detach().to("cpu", dtype).contiguous() for name, value in model.state_dict().items()}
    meta = {"stride.kind": FILE_KIND, "stride.arch": model.arch.to_json(), "stride.dtype": str(dtype).split(".")[-1],
            "stride.blend_channels": json.dumps(list(model.blend_channels))}
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    atomic_save_safetensors(tensors, Path(path), meta)
    return Path(path)


def load_interpolator(path: Path | str | None = None, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> LatentInterpolator:
    """Load a saved interpolator (default: the shipped toy-domain one) for inference."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path) if path else DEFAULT_WEIGHTS_PATH
    if not path.exists():
        raise FileNotFoundError(f"latent interpolator weights not found at {path}")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("stride.kind") != FILE_KIND:
        raise ValueError(f"{path} is not a Stride latent interpolator (metadata stride.kind="
                         f"{metadata.get('stride.kind')!r}, expected {FILE_KIND!r})")
    model = LatentInterpolator(InterpolatorArch.from_json(metadata["stride.arch"]))
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    model.metadata = dict(metadata)
    model.blend_channels = parse_blend_channels(metadata.get("stride.blend_channels", "[]"), model.arch, path)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def parse_blend_channels(text: str, arch: InterpolatorArch, source: Path | str) -> tuple[int, ...]:
    """The ``stride.blend_channels`` metadata (a JSON list of channel indices), checked against ``arch``."""
    try:
        channels = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: stride.blend_channels is not JSON ({err})") from None
    if not isinstance(channels, list) or not all(isinstance(c, int) and 0 <= c < arch.latent_channels
                                                 for c in channels):
        raise ValueError(f"{source}: stride.blend_channels must list channel indices in [0, {arch.latent_channels}), "
                         f"got {text!r}")
    return tuple(sorted(set(channels)))


def compute_dtype(name: str) -> torch.dtype:
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"unknown interpolator compute dtype {name!r}; known: {', '.join(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


@functools.lru_cache(maxsize=None)
def shipped_interpolator(dtype: str = "float32") -> LatentInterpolator:
    """The shipped toy-domain interpolator in ``dtype``, read from disk once per process and dtype.
    Shared by every caller: use it for inference only (never train, move or cast it in place)."""
    return load_interpolator(dtype=compute_dtype(dtype))


def with_compute_dtype(network: LatentInterpolator, dtype: str) -> LatentInterpolator:
    """``network`` itself if it already runs in ``dtype``; the cached shipped copy for the shipped one;
    otherwise a cast copy (the original is left as it is)."""
    wanted = compute_dtype(dtype)
    if next(network.parameters()).dtype == wanted:
        return network
    if network is shipped_interpolator():
        return shipped_interpolator(dtype)
    return copy.deepcopy(network).to(wanted)


def _named_method(name: str) -> Callable[[], LatentFunction]:
    return lambda: (lambda latent: interpolate_latent(latent, name))


# method name -> factory of a ``latent -> 2F-1 latent`` function (factories: "learned" reads a file)
INTERPOLATION_METHODS: dict[str, Callable[[], LatentFunction]] = {
    **{name: _named_method(name) for name in LATENT_INTERPOLATORS},
    "learned": lambda: shipped_interpolator().interpolate,
}


def check_interpolator_name(name: str) -> None:
    """Raise ValueError unless ``name`` is a key of ``INTERPOLATION_METHODS`` (checked before long work starts)."""
    if name not in INTERPOLATION_METHODS:
        raise ValueError(f"unknown interpolator {name!r}; known: {', '.join(INTERPOLATION_METHODS)}")


def resolve_interpolator(spec: str | LatentInterpolator | LatentFunction, dtype: str | None = None) -> LatentFunction:
    """A ``[B, C, F, H, W] -> [B, C, 2F - 1, H, W]`` function from a method name, an interpolator or a callable.

    Names are those of ``INTERPOLATION_METHODS`` (the training-free methods and ``"learned"``, the
    shipped interpolator); a ``LatentInterpolator`` is used through ``interpolate``; any other
    callable is taken to be such a function already. ``dtype`` (a ``COMPUTE_DTYPES`` name) runs a
    learned interpolator in that dtype (``None``: its own, float32 for the shipped one); training-free
    methods and other callables compute in the latent's dtype whatever it is.
    """
    if dtype is not None:
        compute_dtype(dtype)  # an unknown name fails whatever the interpolator
        function = resolve_interpolator(spec)
        network = getattr(function, "__self__", None)
        if isinstance(network, LatentInterpolator):
            return with_compute_dtype(network, dtype).interpolate
        return function
    if isinstance(spec, str):
        if spec not in INTERPOLATION_METHODS:
            raise ValueError(f"unknown interpolator {spec!r}; known: {', '.join(INTERPOLATION_METHODS)}, "
                             f"a LatentInterpolator or a callable latent -> latent")
        return INTERPOLATION_METHODS[spec]()
    if isinstance(spec, LatentInterpolator):
        return spec.interpolate
    if callable(spec):
        return spec
    raise ValueError(f"interpolator must be a name ({', '.join(INTERPOLATION_METHODS)}), a LatentInterpolator "
                     f"or a callable, got {type(spec).__name__}")
