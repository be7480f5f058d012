"""Motion-compensated frame interpolation with classical optical flow: no weights to download.

This module owns pixel-space frame interpolation ("stride_flow") and its baseline ("linear_blend").
For a pair of frames A, B and a time t in (0, 1) it estimates dense DIS flow both ways (once per
pair, shared by every t), approximates the flows from time t to each neighbour with the
bidirectional linear combination of Super SloMo (Jiang et al. 2018), warps both neighbours to t
with bicubic sampling (bilinear sampling blurs fine texture enough to lose to a plain blend on
near-static clips), and blends them with occlusion-aware weights: a pixel whose source is visible
in only one neighbour takes its colour from that neighbour. Which pixels those are comes from
the flows: content entering or leaving the frame always, and optionally pixels failing the
forward-backward consistency check (off by default: with DIS's smoothed motion boundaries it
costs PSNR, see ``consistency_occlusion``). Where the two warps disagree more than the raw frames
do, the result leans back toward the plain blend; a pair that looks like a scene cut (most pixels
inconsistent, motion compensation explains little, colour histograms differ) is not warped at
all. ``iter_interpolated_frames`` walks a clip pair by pair as a generator, so only one pair's flows
are alive at a time; ComfyUI's convention is kept: ``(N - 1) * multiplier + 1`` frames, with the
originals unchanged at ``k * multiplier``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .optical_flow import (
    DIS_PRESETS,
    WARP_INTERPOLATIONS,
    backward_warp,
    dis_flow,
    occlusion_mask,
    out_of_frame_mask,
)

MIN_MULTIPLIER = 2
MAX_MULTIPLIER = 8
SCENE_CUT_FALLBACKS = ("nearest", "blend")

FlowFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]
ProgressCallback = Callable[[int, int], None]


@dataclass
class InterpolationConfig:
    """Everything that shapes an interpolation run; thresholds are in pixels or [0, 1] colour units."""

    method: str = "stride_flow"
    multiplier: int = 2
    flow_preset: str = "medium"
    warp_interpolation: str = "cubic"
    # Pixels whose source lies outside the other frame (pans, objects entering) come from one side only.
    occlusion_aware: bool = True
    # Also treat forward-backward-inconsistent pixels as one-sided. Measured on 39 real clips: -0.04 dB;
    # on a synthetic moving square: -1.1 dB (DIS smears flow ~10 px across motion boundaries, so the
    # mask is wide and the "trusted" warp is as distorted as the other).
    consistency_occlusion: bool = False
    # Forward-backward consistency (Sundaram et al.): |f_ab + f_ba| ** 2 > alpha * (|f_ab|**2 + |f_ba|**2) + beta;
    # used by consistency_occlusion and by the scene-cut test.
    occlusion_alpha: float = 0.01
    occlusion_beta: float = 0.5
    # A one-sided source only wins where the two warps disagree by more than this (mean abs colour,
    # Gaussian-averaged): elsewhere averaging both warps beats trusting a noisy occlusion mask.
    occlusion_min_disagreement: float = 0.05
    occlusion_blur_sigma: float = 2.0
    # Per-pixel fallback toward the linear blend: compares warp disagreement with raw-frame disagreement
    # over a Gaussian window of this sigma (pixels).
    confidence_sigma: float = 7.0
    confidence_gain: float = 1.0
    # Scene cut: most pixels fail the forward-backward check AND motion compensation leaves most of the
    # raw difference AND the colour histograms differ. Calibrated on 558 consecutive pairs of real
    # generated clips (none flagged; fast motion reaches 0.84 inconsistency) and 120 pairs of frames
    # from different clips (all flagged).
    scene_cut_inconsistent_fraction: float = 0.7
    scene_cut_residual_ratio: float = 0.7
    scene_cut_histogram_distance: float = 0.12
    scene_cut_fallback: str = "nearest"
    # Frames per block when filling a preallocated output tensor (interpolate_image_batch).
    chunk_size: int = 16
    # Dense flow estimator (frame_a, frame_b) -> [H, W, 2]; None means DIS with ``flow_preset``.
    flow_function: FlowFunction | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        validate_multiplier(self.multiplier)
        if self.method not in INTERPOLATORS:
            raise ValueError(f"unknown interpolation method {self.method!r}; known: {', '.join(INTERPOLATORS)}")
        if self.flow_preset not in DIS_PRESETS:
            raise ValueError(f"unknown flow_preset {self.flow_preset!r}; known: {', '.join(DIS_PRESETS)}")
        if self.warp_interpolation not in WARP_INTERPOLATIONS:
            raise ValueError(
                f"unknown warp_interpolation {self.warp_interpolation!r}; known: {', '.join(WARP_INTERPOLATIONS)}"
            )
        if self.scene_cut_fallback not in SCENE_CUT_FALLBACKS:
            raise ValueError(
                f"unknown scene_cut_fallback {self.scene_cut_fallback!r}; known: {', '.join(SCENE_CUT_FALLBACKS)}"
            )
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")


@dataclass(frozen=True)
class PairFlows:
    """Dense flows of one frame pair: ``forward`` from A to B, ``backward`` from B to A, each [H, W, 2]."""

    forward: np.ndarray
    backward: np.ndarray


@dataclass(frozen=True)
class PairAnalysis:
    """What does not depend on t: the flows, which pixels are visible in one frame only, scene cut or not."""

    flows: PairFlows
    only_in_a: np.ndarray  # float32 [H, W]: A's pixel has no counterpart in B (covered, or leaves the frame)
    only_in_b: np.ndarray
    is_scene_cut: bool


# ----------------------------------------------------------------------------------------------
# validation


def validate_multiplier(multiplier: int) -> int:
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, np.integer)):
        raise ValueError(f"multiplier must be an integer in [{MIN_MULTIPLIER}, {MAX_MULTIPLIER}], got {multiplier!r}")
    if not MIN_MULTIPLIER <= multiplier <= MAX_MULTIPLIER:
        raise ValueError(f"multiplier must be in [{MIN_MULTIPLIER}, {MAX_MULTIPLIER}], got {multiplier}")
    return int(multiplier)


def _as_frame(frame: Any, index: int | str) -> np.ndarray:
    """One frame as float32 [H, W, 3] in [0, 1] (uint8 is rescaled; torch tensors are moved to the CPU)."""
    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().float().numpy()
    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"frame {index} must be [H, W, 3] RGB, got shape {tuple(array.shape)}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"frame {index} is empty: shape {tuple(array.shape)}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return array.astype(np.float32, copy=False)


def _check_same_size(frame_a: np.ndarray, frame_b: np.ndarray, index_a: int | str, index_b: int | str) -> None:
    if frame_a.shape != frame_b.shape:
        raise ValueError(
            f"all frames must have the same size: frame {index_a} is {tuple(frame_a.shape)}, "
            f"frame {index_b} is {tuple(frame_b.shape)}"
        )


def _check_time(t: float) -> float:
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must be in [0, 1], got {t}")
    return t


# ----------------------------------------------------------------------------------------------
# pair analysis


def estimate_pair_flows(frame_a: np.ndarray, frame_b: np.ndarray, cfg: InterpolationConfig) -> PairFlows:
    if cfg.flow_function is not None:
        forward, backward = cfg.flow_function(frame_a, frame_b), cfg.flow_function(frame_b, frame_a)
    else:
        forward, backward = dis_flow(frame_a, frame_b, cfg.flow_preset), dis_flow(frame_b, frame_a, cfg.flow_preset)
    return PairFlows(np.asarray(forward, np.float32), np.asarray(backward, np.float32))


def _coerce_flows(flows: PairFlows | tuple[np.ndarray, np.ndarray], shape: tuple[int, ...]) -> PairFlows:
    if not isinstance(flows, PairFlows):
        forward, backward = flows
        flows = PairFlows(np.asarray(forward, np.float32), np.asarray(backward, np.float32))
    for name, flow in (("forward", flows.forward), ("backward", flows.backward)):
        if flow.shape != (*shape[:2], 2):
            raise ValueError(f"{name} flow must be [H, W, 2] = {(*shape[:2], 2)}, got {tuple(flow.shape)}")
    return flows


def colour_histogram_distance(frame_a: np.ndarray, frame_b: np.ndarray, bins: int = 32) -> float:
    """Mean over RGB channels of the total-variation distance between colour histograms, in [0, 1]."""
    distance = 0.0
    for channel in range(3):
        hist_a = cv2.calcHist([frame_a], [channel], None, [bins], [0.0, 1.0 + 1e-6]).ravel()
        hist_b = cv2.calcHist([frame_b], [channel], None, [bins], [0.0, 1.0 + 1e-6]).ravel()
        distance += 0.5 * float(np.abs(hist_a / max(hist_a.sum(), 1.0) - hist_b / max(hist_b.sum(), 1.0)).sum())
    return distance / 3.0


def intermediate_flows(flows: PairFlows, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Flows from time t to A and to B, from the A->B and B->A flows (Super SloMo's linear combination).

    F_t->A = -(1-t) t F_A->B + t^2 F_B->A and F_t->B = (1-t)^2 F_A->B - t(1-t) F_B->A: each mixes the
    flow sampled at the same pixel in both directions, which is right where motion is locally smooth
    and halves the error of using one direction alone near motion boundaries.
    """
    forward, backward = flows.forward, flows.backward
    flow_t_to_a = -(1.0 - t) * t * forward + t * t * backward
    flow_t_to_b = (1.0 - t) ** 2 * forward - t * (1.0 - t) * backward
    return flow_t_to_a, flow_t_to_b


def analyse_pair(
    frame_a: np.ndarray,
    frame_b: np.ndarray,
    cfg: InterpolationConfig,
    flows: PairFlows | tuple[np.ndarray, np.ndarray] | None = None,
) -> PairAnalysis:
    """Flows, one-sided visibility masks and the scene-cut decision of a pair (computed once per pair)."""
    flows = estimate_pair_flows(frame_a, frame_b, cfg) if flows is None else _coerce_flows(flows, frame_a.shape)
    inconsistent_a = occlusion_mask(flows.forward, flows.backward, cfg.occlusion_alpha, cfg.occlusion_beta)
    inconsistent_b = occlusion_mask(flows.backward, flows.forward, cfg.occlusion_alpha, cfg.occlusion_beta)
    only_in_a = out_of_frame_mask(flows.forward)
    only_in_b = out_of_frame_mask(flows.backward)
    if cfg.consistency_occlusion:
        only_in_a |= inconsistent_a
        only_in_b |= inconsistent_b
    return PairAnalysis(
        flows=flows,
        only_in_a=only_in_a.astype(np.float32),
        only_in_b=only_in_b.astype(np.float32),
        is_scene_cut=_looks_like_scene_cut(frame_a, frame_b, flows, inconsistent_a, inconsistent_b, cfg),
    )


def _looks_like_scene_cut(
    frame_a: np.ndarray,
    frame_b: np.ndarray,
    flows: PairFlows,
    inconsistent_a: np.ndarray,
    inconsistent_b: np.ndarray,
    cfg: InterpolationConfig,
) -> bool:
    inconsistent_fraction = 0.5 * (float(inconsistent_a.mean()) + float(inconsistent_b.mean()))
    if inconsistent_fraction < cfg.scene_cut_inconsistent_fraction:
        return False
    raw_difference = float(np.abs(frame_a - frame_b).mean())
    if raw_difference < 1e-3:
        return False
    flow_to_a, flow_to_b = intermediate_flows(flows, 0.5)
    residual = float(np.abs(backward_warp(frame_a, flow_to_a) - backward_warp(frame_b, flow_to_b)).mean())
    if residual < cfg.scene_cut_residual_ratio * raw_difference:
        return False
    return colour_histogram_distance(frame_a, frame_b) >= cfg.scene_cut_histogram_distance


# ----------------------------------------------------------------------------------------------
# rendering one intermediate frame


def _one_sided_trust(
    analysis: PairAnalysis,
    flow_t_to_a: np.ndarray,
    flow_t_to_b: np.ndarray,
    warp_disagreement: np.ndarray,
    cfg: InterpolationConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel of the intermediate frame, how much A alone (resp. B alone) should supply the colour.

    Where the sample taken from A exists only in A while B's sample is an ordinary two-sided pixel,
    B's warp shows something else at this spot (replicated border, the occluder), so A alone is
    right. The decision is gated by how much the two warps actually disagree there.
    """
    if not cfg.occlusion_aware:
        zeros = np.zeros_like(warp_disagreement)
        return zeros, zeros
    a_sample_only_in_a = backward_warp(analysis.only_in_a, flow_t_to_a)
    b_sample_only_in_b = backward_warp(analysis.only_in_b, flow_t_to_b)
    smoothed_disagreement = cv2.GaussianBlur(warp_disagreement, (0, 0), cfg.occlusion_blur_sigma)
    threshold = max(cfg.occlusion_min_disagreement, 1e-6)
    gate = np.clip((smoothed_disagreement - threshold) / threshold, 0.0, 1.0)
    trust_a_alone = gate * a_sample_only_in_a * (1.0 - b_sample_only_in_b)
    trust_b_alone = gate * b_sample_only_in_b * (1.0 - a_sample_only_in_a)
    return trust_a_alone, trust_b_alone


def _motion_confidence(
    frame_a: np.ndarray, frame_b: np.ndarray, warp_disagreement: np.ndarray, cfg: InterpolationConfig
) -> np.ndarray:
    """In [0, 1]: 1 where motion compensation made the neighbours agree much better than they already
    did, 0 where it made them agree worse (flow failure: better to fall back to the plain blend)."""
    raw = cv2.GaussianBlur(np.abs(frame_a - frame_b).mean(axis=-1), (0, 0), cfg.confidence_sigma)
    compensated = cv2.GaussianBlur(warp_disagreement, (0, 0), cfg.confidence_sigma)
    improvement = (raw - compensated) / (raw + compensated + 1e-4)
    return np.clip(cfg.confidence_gain * improvement + 0.5, 0.0, 1.0)


def _render(
    frame_a: np.ndarray, frame_b: np.ndarray, t: float, analysis: PairAnalysis, cfg: InterpolationConfig
) -> np.ndarray:
    blend = (1.0 - t) * frame_a + t * frame_b
    if analysis.is_scene_cut:
        if cfg.scene_cut_fallback == "blend":
            return blend.astype(np.float32)
        return (frame_a if t < 0.5 else frame_b).copy()

    flow_t_to_a, flow_t_to_b = intermediate_flows(analysis.flows, t)
    warped_a = backward_warp(frame_a, flow_t_to_a, cfg.warp_interpolation)
    warped_b = backward_warp(frame_b, flow_t_to_b, cfg.warp_interpolation)
    warp_disagreement = np.abs(warped_a - warped_b).mean(axis=-1)

    trust_a_alone, trust_b_alone = _one_sided_trust(analysis, flow_t_to_a, flow_t_to_b, warp_disagreement, cfg)
    # trust_a_alone and trust_b_alone are never both 1, so the weights never both vanish.
    weight_a = (1.0 - t) * (1.0 - trust_b_alone) + 1e-6
    weight_b = t * (1.0 - trust_a_alone) + 1e-6
    warped = (warped_a * weight_a[..., None] + warped_b * weight_b[..., None]) / (weight_a + weight_b)[..., None]

    # A deliberately one-sided pixel keeps its warp even where the two warps disagree.
    confidence = np.maximum(_motion_confidence(frame_a, frame_b, warp_disagreement, cfg), trust_a_alone + trust_b_alone)
    result = confidence[..., None] * warped + (1.0 - confidence[..., None]) * blend
    return np.clip(result, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# public pair API


def interpolate_pair(
    frame_a: Any,
    frame_b: Any,
    t: float,
    cfg: InterpolationConfig | None = None,
    flows: PairFlows | tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The frame at time t between A (t=0) and B (t=1), float32 [H, W, 3] in [0, 1] ("stride_flow")."""
    cfg = cfg or InterpolationConfig()
    frame_a, frame_b = _as_frame(frame_a, "a"), _as_frame(frame_b, "b")
    _check_same_size(frame_a, frame_b, "a", "b")
    t = _check_time(t)
    if t == 0.0:
        return frame_a.copy()
    if t == 1.0:
        return frame_b.copy()
    return _render(frame_a, frame_b, t, analyse_pair(frame_a, frame_b, cfg, flows), cfg)


def linear_blend(
    frame_a: Any,
    frame_b: Any,
    t: float,
    cfg: InterpolationConfig | None = None,
    flows: PairFlows | tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Baseline: ``(1 - t) * A + t * B`` (cfg and flows are accepted for a common signature and ignored)."""
    frame_a, frame_b = _as_frame(frame_a, "a"), _as_frame(frame_b, "b")
    _check_same_size(frame_a, frame_b, "a", "b")
    t = _check_time(t)
    return ((1.0 - t) * frame_a + t * frame_b).astype(np.float32)


@dataclass(frozen=True)
class Interpolator:
    """A registered pair interpolator; ``uses_flow`` says whether a pair's flows are worth computing once."""

    name: str
    interpolate_pair: Callable[..., np.ndarray]
    uses_flow: bool

    def __call__(self, frame_a: Any, frame_b: Any, t: float, cfg: InterpolationConfig | None = None,
                 flows: PairFlows | tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        return self.interpolate_pair(frame_a, frame_b, t, cfg, flows)

    def pair_times(
        self, frame_a: np.ndarray, frame_b: np.ndarray, times: list[float], cfg: InterpolationConfig
    ) -> Iterator[np.ndarray]:
        """Intermediate frames of one validated pair at several times, sharing the pair's flows."""
        if not self.uses_flow:
            for t in times:
                yield self.interpolate_pair(frame_a, frame_b, t, cfg)
            return
        analysis = analyse_pair(frame_a, frame_b, cfg)
        for t in times:
            yield _render(frame_a, frame_b, t, analysis, cfg)


INTERPOLATORS: dict[str, Interpolator] = {
    "stride_flow": Interpolator("stride_flow", interpolate_pair, uses_flow=True),
    "linear_blend": Interpolator("linear_blend", linear_blend, uses_flow=False),
}


# ----------------------------------------------------------------------------------------------
# whole clips


def _check_batch_rank(frames: Any) -> None:
    """A numpy/torch batch must be [N, H, W, 3]; lists and iterators are checked frame by frame."""
    if hasattr(frames, "ndim") and frames.ndim != 4:
        raise ValueError(f"frames must be a batch [N, H, W, 3], got shape {tuple(frames.shape)}")


def iter_interpolated_frames(
    frames: Iterable[Any],
    multiplier: int | None = None,
    cfg: InterpolationConfig | None = None,
    progress: ProgressCallback | None = None,
    total_frames: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield the interpolated clip frame by frame, consuming ``frames`` lazily (one pair in memory).

    Originals are yielded unchanged at positions ``k * multiplier``, followed by ``multiplier - 1``
    frames at times ``j / multiplier``. ``progress(done_pairs, total_pairs)`` is called after each
    pair when the number of frames is known (a sized batch, or ``total_frames``).
    """
    cfg = cfg or InterpolationConfig()
    multiplier = validate_multiplier(cfg.multiplier if multiplier is None else multiplier)
    interpolator = INTERPOLATORS[cfg.method]
    if total_frames is None and hasattr(frames, "__len__"):
        total_frames = len(frames)  # type: ignore[arg-type]
    if total_frames is not None and total_frames < 2:
        raise ValueError(f"frame interpolation needs at least 2 frames, got {total_frames}")
    total_pairs = None if total_frames is None else total_frames - 1
    times = [step / multiplier for step in range(1, multiplier)]

    _check_batch_rank(frames)
    previous = None
    count = 0
    for count, raw in enumerate(frames, start=1):
        frame = _as_frame(raw, count - 1)
        if previous is None:
            first = frame
            previous = frame
            continue
        _check_same_size(previous, frame, count - 2, count - 1)
        if count == 2:
            yield first
        yield from interpolator.pair_times(previous, frame, times, cfg)
        yield frame
        if progress is not None and total_pairs is not None:
            progress(count - 1, total_pairs)
        previous = frame
    if count < 2:
        raise ValueError(f"frame interpolation needs at least 2 frames, got {count}")


def output_length(num_frames: int, multiplier: int) -> int:
    return (num_frames - 1) * multiplier + 1


def interpolate_frames(
    frames: Any,
    multiplier: int | None = None,
    cfg: InterpolationConfig | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Interpolate a clip [N, H, W, 3] (numpy, torch, or a list of frames) into float32 numpy
    ``[(N - 1) * multiplier + 1, H, W, 3]``; flows are computed per pair and dropped immediately."""
    cfg = cfg or InterpolationConfig()
    multiplier = validate_multiplier(cfg.multiplier if multiplier is None else multiplier)
    _check_batch_rank(frames)
    if not hasattr(frames, "__len__"):
        frames = list(frames)
    if len(frames) < 2:
        raise ValueError(f"frame interpolation needs at least 2 frames, got {len(frames)}")
    first = _as_frame(frames[0], 0)
    output = np.empty((output_length(len(frames), multiplier), *first.shape), dtype=np.float32)
    for index, frame in enumerate(iter_interpolated_frames(frames, multiplier, cfg, progress)):
        output[index] = frame
    return output


def interpolate_image_batch(
    images: Any,
    multiplier: int | None = None,
    cfg: InterpolationConfig | None = None,
    progress: ProgressCallback | None = None,
):
    """ComfyUI IMAGE in, IMAGE out: torch ``[N, H, W, 3]`` float -> torch ``[(N-1)*m+1, H, W, 3]`` float32.

    The output tensor is allocated once (on the input's device) and filled ``cfg.chunk_size`` frames
    at a time from the lazy generator, so peak extra memory is one chunk plus one pair's flows.
    """
    import torch

    cfg = cfg or InterpolationConfig()
    multiplier = validate_multiplier(cfg.multiplier if multiplier is None else multiplier)
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"IMAGE batch must be [N, H, W, 3], got shape {tuple(images.shape)}")
    if images.shape[0] < 2:
        raise ValueError(f"frame interpolation needs at least 2 frames, got {images.shape[0]}")
    num_out = output_length(images.shape[0], multiplier)
    output = torch.empty((num_out, *images.shape[1:]), dtype=torch.float32, device=images.device)
    chunk: list[np.ndarray] = []
    written = 0
    for frame in iter_interpolated_frames(images, multiplier, cfg, progress):
        chunk.append(frame)
        if len(chunk) == cfg.chunk_size:
            output[written : written + len(chunk)] = torch.from_numpy(np.stack(chunk)).to(output.device)
            written += len(chunk)
            chunk = []
    if chunk:
        output[written : written + len(chunk)] = torch.from_numpy(np.stack(chunk)).to(output.device)
    return output
