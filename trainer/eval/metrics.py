"""Video quality metrics that need no downloaded weights (METHODS.md sections 4 and 6).

Every metric is a pure function of videos ``[B, 3, F, H, W]`` float in [0, 1] (torch in, python
floats out, averaged over the batch) and says in its docstring, and in ``METRIC_DIRECTION``, which
way is better: ``"higher"``, ``"lower"``, or ``"match"`` (no better direction on its own; the value
closest to the reference data's is best). Motion metrics use OpenCV DIS flow from
``trainer.video.optical_flow`` instead of VBench's RAFT and learned interpolator, so their absolute
values are not comparable with published VBench numbers, only between configurations scored here.
The Fréchet distance and the prompt-adherence scores use the project's own toy video classifier
(``trainer.eval.classifier``). ``score_videos`` computes the optical flow of each clip once and
returns every metric in one flat dict; it takes a few seconds for 64 clips of 9 x 32 x 32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import cv2
import numpy as np
import torch

from ..video.optical_flow import backward_warp, dis_flow, occlusion_mask

# which way is better for every key score_videos returns (and diversity); "match" means the value
# of the reference data is the target, so a report compares it with the data's row
METRIC_DIRECTION = {
    "fd": "lower",
    "acc_colour": "higher",
    "acc_shape": "higher",
    "acc_direction": "higher",
    "acc_speed": "higher",
    "prompt_acc": "higher",
    "motion_acc": "higher",
    "motion_smoothness": "higher",
    "warping_error": "lower",
    "warping_error_object": "lower",
    "warping_error_background": "lower",
    "dynamic_degree": "higher",
    "mean_flow_magnitude": "match",
    "flicker": "higher",
    "saturation_mean": "match",
    "saturation_p95": "match",
    "saturation_background": "match",
    "tint_background": "match",
    "colourfulness": "match",
    "colour_hist_distance": "lower",
    "srop": "match",
    "hf_share": "match",
    "diversity": "higher",
}

# VBench dynamic degree: a pair moves when the mean of its top 5% flow magnitudes exceeds
# 6 px at a 256 px short side (0.75 px at 32 px); a video is dynamic when 4 pairs per 16 frames do
DYNAMIC_THRESHOLD_PX_AT_256 = 6.0
DYNAMIC_PAIRS_PER_16_FRAMES = 4
DYNAMIC_TOP_SHARE = 0.05
ROLLOFF_SHARE = 0.85
# HSV saturation above which a pixel counts as the toy domain's coloured object (warping_error_by_region)
OBJECT_SATURATION = 0.5


def _check_videos(videos: torch.Tensor) -> torch.Tensor:
    if not isinstance(videos, torch.Tensor) or videos.ndim != 5 or videos.shape[1] != 3:
        shape = tuple(videos.shape) if hasattr(videos, "shape") else type(videos).__name__
        raise ValueError(f"expected videos [B, 3, F, H, W] in [0, 1], got {shape}")
    if videos.shape[0] == 0:
        raise ValueError("expected at least one video")
    return videos.detach().float().cpu()


def _frames_numpy(video: torch.Tensor) -> list[np.ndarray]:
    """One video [3, F, H, W] -> list of F float32 frames [H, W, 3] (optical_flow's convention)."""
    array = video.clamp(0.0, 1.0).permute(1, 2, 3, 0).contiguous().numpy().astype(np.float32)
    return [array[t] for t in range(array.shape[0])]


# ---------------------------------------------------------------------------------------------
# optical flow, computed once per clip and shared by the motion metrics


@dataclass
class ClipFlows:
    """DIS flows of one clip: ``forward[t]`` is t -> t+1, ``backward[t]`` is t+1 -> t."""

    frames: list[np.ndarray]
    forward: list[np.ndarray]
    backward: list[np.ndarray]


def clip_flows(video: torch.Tensor, preset: str = "medium") -> ClipFlows:
    """Forward and backward DIS flow between consecutive frames of one video [3, F, H, W]."""
    frames = _frames_numpy(video)
    forward = [dis_flow(frames[t], frames[t + 1], preset) for t in range(len(frames) - 1)]
    backward = [dis_flow(frames[t + 1], frames[t], preset) for t in range(len(frames) - 1)]
    return ClipFlows(frames, forward, backward)


def _batch_flows(videos: torch.Tensor, flows: Sequence[ClipFlows] | None) -> Sequence[ClipFlows]:
    if flows is not None:
        if len(flows) != videos.shape[0]:
            raise ValueError(f"got flows for {len(flows)} clips but {videos.shape[0]} videos")
        return flows
    return [clip_flows(video) for video in videos]


def _top_share_mean(values: np.ndarray, share: float) -> float:
    flat = values.ravel()
    count = max(1, int(flat.size * share))
    return float(np.partition(flat, flat.size - count)[flat.size - count :].mean())


def _box_blur(image: np.ndarray) -> np.ndarray:
    return cv2.blur(image, (3, 3), borderType=cv2.BORDER_REPLICATE)


def interpolate_midpoint(frame_a: np.ndarray, frame_b: np.ndarray, preset: str = "medium") -> np.ndarray:
    """The frame halfway between two frames [H, W, 3], by bidirectional flow warping.

    Candidate midpoint displacements per pixel: none, half the A->B flow, half the reversed B->A
    flow, and Super SloMo's linear combination of both; each candidate warps A backwards and B
    forwards by half the motion, and the candidate whose two warps agree best (3x3 smoothed) wins.
    The result is the mean of the two winning warps. No learned model; good for rigid motion.
    """
    flow_ab = dis_flow(frame_a, frame_b, preset)
    flow_ba = dis_flow(frame_b, frame_a, preset)
    # d: displacement from the midpoint towards B (A is at -d)
    candidates = [
        np.zeros_like(flow_ab),
        0.5 * flow_ab,
        -0.5 * flow_ba,
        0.25 * (flow_ab - flow_ba),  # Super SloMo's F_t->1 at t = 1/2
    ]
    best_cost, best_frame = None, None
    for displacement in candidates:
        from_a = backward_warp(frame_a, -displacement)
        from_b = backward_warp(frame_b, displacement)
        cost = _box_blur(np.abs(from_a - from_b).sum(-1))
        merged = 0.5 * (from_a + from_b)
        if best_cost is None:
            best_cost, best_frame = cost, merged
        else:
            better = cost < best_cost
            best_cost = np.where(better, cost, best_cost)
            best_frame = np.where(better[..., None], merged, best_frame)
    return best_frame


def _in_bounds(flow: np.ndarray) -> np.ndarray:
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    x, y = grid_x + flow[..., 0], grid_y + flow[..., 1]
    return (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


# ---------------------------------------------------------------------------------------------
# temporal metrics


def temporal_flicker(videos: torch.Tensor) -> float:
    """VBench temporal flickering, ``1 - mean|f_t - f_{t+1}|`` on the 0..1 scale. Higher is better.

    1 for a frozen clip, 0 for a clip alternating black and white. Real motion also lowers it, so
    compare clips with the same motion (VBench scores it on static prompts).
    """
    videos = _check_videos(videos)
    if videos.shape[2] < 2:
        raise ValueError("temporal_flicker needs at least 2 frames")
    return float(1.0 - (videos[:, :, 1:] - videos[:, :, :-1]).abs().mean())


def motion_smoothness(videos: torch.Tensor, preset: str = "medium") -> float:
    """VBench-style motion smoothness: rebuild every odd frame from its even neighbours by
    ``interpolate_midpoint`` and score ``1 - mean|rebuilt - real|`` (0..1 scale). Higher is better.

    Constant-velocity motion is rebuilt almost exactly; jerky or shuffled motion is not.
    """
    videos = _check_videos(videos)
    if videos.shape[2] < 3:
        raise ValueError("motion_smoothness needs at least 3 frames")
    scores = []
    for video in videos:
        frames = _frames_numpy(video)
        errors = [
            np.abs(interpolate_midpoint(frames[t - 1], frames[t + 1], preset) - frames[t]).mean()
            for t in range(1, len(frames) - 1, 2)
        ]
        scores.append(1.0 - float(np.mean(errors)))
    return float(np.mean(scores))


def pair_motion(videos: torch.Tensor, flows: Sequence[ClipFlows] | None = None) -> list[list[float]]:
    """Per clip, per consecutive frame pair, the mean of the top 5% flow magnitudes (pixels)."""
    videos = _check_videos(videos)
    return [
        [_top_share_mean(np.linalg.norm(flow, axis=-1), DYNAMIC_TOP_SHARE) for flow in clip.forward]
        for clip in _batch_flows(videos, flows)
    ]


def dynamic_thresholds(height: int, width: int, frames: int) -> tuple[float, int]:
    """(pixel threshold, moving pairs needed) of ``dynamic_degree`` for a clip size.

    VBench's rule: 6 px scaled by the short side / 256, and round(4 * frames / 16) pairs (at least
    1). For 9 x 32 x 32 toy clips this is 0.75 px and 2 pairs: a static clip scores 0 and an object
    moving >= 1 px per frame (toy speeds are 1.7-4.6 px) scores 1.
    """
    threshold = DYNAMIC_THRESHOLD_PX_AT_256 * min(height, width) / 256.0
    pairs = max(1, round(DYNAMIC_PAIRS_PER_16_FRAMES * frames / 16.0))
    return threshold, min(pairs, frames - 1)


def dynamic_degree(videos: torch.Tensor, flows: Sequence[ClipFlows] | None = None) -> float:
    """VBench dynamic degree: the fraction of clips that move (see ``dynamic_thresholds``).

    Higher is better for prompts that ask for motion (all toy prompts do).
    """
    videos = _check_videos(videos)
    threshold, pairs_needed = dynamic_thresholds(videos.shape[3], videos.shape[4], videos.shape[2])
    per_pair = pair_motion(videos, flows)
    dynamic = [sum(score > threshold for score in clip) >= pairs_needed for clip in per_pair]
    return float(np.mean(dynamic))


def mean_flow_magnitude(videos: torch.Tensor, flows: Sequence[ClipFlows] | None = None) -> float:
    """Mean DIS flow magnitude over all pixels and consecutive pairs, in pixels per frame.

    A continuous companion of ``dynamic_degree``; no better direction on its own ("match" the data).
    """
    videos = _check_videos(videos)
    return float(np.mean([np.mean([np.linalg.norm(f, axis=-1).mean() for f in clip.forward]) for clip in _batch_flows(videos, flows)]))


def _mean_over_clips(per_clip: Iterable[list[float]]) -> float:
    """Mean over clips of each clip's mean over its scored pairs; clips with none are left out (0.0 if all are)."""
    scores = [float(np.mean(pairs)) for pairs in per_clip if pairs]
    return float(np.mean(scores)) if scores else 0.0


def _warping_scores(videos: torch.Tensor, flows: Sequence[ClipFlows] | None,
                    object_saturation: float) -> dict[str, float]:
    """``warping_error`` and its two regions from one warp of every pair (see the two public functions)."""
    videos = _check_videos(videos)
    coloured = (hsv_saturation(videos) > object_saturation).numpy()  # [B, F, H, W]
    regions = ("warping_error", "warping_error_object", "warping_error_background")
    per_clip: dict[str, list[list[float]]] = {region: [] for region in regions}
    for clip_index, clip in enumerate(_batch_flows(videos, flows)):
        pairs: dict[str, list[float]] = {region: [] for region in regions}
        for t, (forward, backward) in enumerate(zip(clip.forward, clip.backward)):
            error = np.abs(backward_warp(clip.frames[t + 1], forward) - clip.frames[t]).mean(axis=-1)
            valid = ~occlusion_mask(forward, backward) & _in_bounds(forward)
            shape = coloured[clip_index, t]
            for region, mask in zip(regions, (valid, valid & shape, valid & ~shape)):
                if mask.any():
                    pairs[region].append(float(error[mask].mean()))
        for region in regions:
            per_clip[region].append(pairs[region])
    return {region: _mean_over_clips(per_clip[region]) for region in regions}


def warping_error(videos: torch.Tensor, flows: Sequence[ClipFlows] | None = None) -> float:
    """Warp frame t+1 back to t with the t -> t+1 flow and take the mean absolute error (0..1
    scale) over pixels that pass the forward-backward occlusion check and stay inside the frame.
    Lower is better: temporally consistent content can be explained by motion.
    """
    return _warping_scores(videos, flows, OBJECT_SATURATION)["warping_error"]


def warping_error_by_region(videos: torch.Tensor, flows: Sequence[ClipFlows] | None = None,
                            object_saturation: float = OBJECT_SATURATION) -> dict[str, float]:
    """``warping_error`` over the pixels of frame t whose HSV saturation exceeds ``object_saturation``
    (``warping_error_object``: on the toy domain the coloured shape, its backgrounds being dull) and over
    the others (``warping_error_background``), each averaged per clip over the pairs that have such valid
    pixels. Says where temporal inconsistency sits: a shape whose outline changes, or a static
    background that shimmers. Lower is better for both."""
    scores = _warping_scores(videos, flows, object_saturation)
    return {region: scores[region] for region in ("warping_error_object", "warping_error_background")}


# ---------------------------------------------------------------------------------------------
# colour


def hsv_saturation(videos: torch.Tensor) -> torch.Tensor:
    """HSV saturation ``(max - min) / max`` per pixel, [B, F, H, W]; 0 where the pixel is black."""
    videos = _check_videos(videos).clamp(0.0, 1.0)
    high, low = videos.amax(1), videos.amin(1)
    return torch.where(high > 0, (high - low) / high.clamp_min(1e-12), torch.zeros_like(high))


def saturation_mean(videos: torch.Tensor) -> float:
    """Mean HSV saturation (0 grey .. 1 pure colour). "match": oversaturation is a known
    distillation artefact, so the target is the data's value."""
    return float(hsv_saturation(videos).mean())


def saturation_background(videos: torch.Tensor, object_saturation: float = OBJECT_SATURATION) -> float:
    """Mean HSV saturation of the pixels at or below ``object_saturation`` (on the toy domain the dull,
    tinted background; the coloured shape is above it); 0.0 if there are none. "match" the data: says
    whether a student that loses saturation loses it in its background (drawn towards grey) or its shape."""
    sat = hsv_saturation(videos)
    dull = sat <= object_saturation
    return float(sat[dull].mean()) if bool(dull.any()) else 0.0


def tint_background(videos: torch.Tensor, object_saturation: float = OBJECT_SATURATION) -> float:
    """Per clip, the mean colour of its pixels at or below ``object_saturation`` (its background on the toy
    domain), then the mean |channel - mean of the channels| of that colour; averaged over the clips that
    have such pixels (0.0 if none). "match" the data. The background's own tint, measured after averaging
    over its pixels and frames, so shimmer (which raises per-pixel saturation) does not count: a background
    drawn towards grey lowers it."""
    videos = _check_videos(videos).clamp(0.0, 1.0)
    dull = (hsv_saturation(videos) <= object_saturation).unsqueeze(1).float()  # [B, 1, F, H, W]
    count = dull.flatten(1).sum(1)
    colour = (videos * dull).flatten(2).sum(2) / count.clamp_min(1.0)[:, None]  # [B, 3]
    tint = (colour - colour.mean(1, keepdim=True)).abs().mean(1)
    has = count > 0
    return float(tint[has].mean()) if bool(has.any()) else 0.0


def saturation_p95(videos: torch.Tensor) -> float:
    """95th percentile of HSV saturation per clip (nearest rank), averaged. "match" the data."""
    sat = hsv_saturation(videos).flatten(1)
    rank = max(1, math.ceil(0.95 * sat.shape[1]))
    return float(sat.kthvalue(rank, dim=1).values.mean())


def colourfulness(videos: torch.Tensor) -> float:
    """Hasler-Süsstrunk colourfulness per frame on the 0..1 scale (x255 for the paper's scale:
    < 15 not colourful, > 109 extremely), averaged. "match" the data."""
    videos = _check_videos(videos).clamp(0.0, 1.0)
    red, green, blue = videos[:, 0], videos[:, 1], videos[:, 2]
    rg = (red - green).flatten(2)
    yb = (0.5 * (red + green) - blue).flatten(2)
    spread = torch.sqrt(rg.var(-1, unbiased=False) + yb.var(-1, unbiased=False))
    centre = torch.sqrt(rg.mean(-1) ** 2 + yb.mean(-1) ** 2)
    return float((spread + 0.3 * centre).mean())


def colour_histograms(videos: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Per-channel pixel histograms over a whole set of videos, normalised to sum 1: [3, bins]."""
    videos = _check_videos(videos).clamp(0.0, 1.0)
    hists = torch.stack([torch.histc(videos[:, c].flatten(), bins=bins, min=0.0, max=1.0) for c in range(3)])
    return hists / hists.sum(-1, keepdim=True).clamp_min(1e-12)


def colour_histogram_distance(videos: torch.Tensor, reference_videos: torch.Tensor, bins: int = 32) -> float:
    """Total-variation distance (half the L1) between per-channel colour histograms of two video
    sets, averaged over R, G, B: 0 identical .. 1 disjoint. Lower is better."""
    ours, theirs = colour_histograms(videos, bins), colour_histograms(reference_videos, bins)
    return float(0.5 * (ours - theirs).abs().sum(-1).mean())


# ---------------------------------------------------------------------------------------------
# detail: spectral roll-off (METHODS.md section 4)


def _grey_frames(videos: torch.Tensor) -> torch.Tensor:
    videos = _check_videos(videos)
    grey = 0.299 * videos[:, 0] + 0.587 * videos[:, 1] + 0.114 * videos[:, 2]
    return grey.flatten(0, 1).double()  # [B*F, H, W]


def normalised_radius(height: int, width: int) -> torch.Tensor:
    """Radial frequency of every DFT bin divided by Nyquist per axis: 0 at DC, 1 on the inscribed
    circle, up to sqrt(2) in the corners. [H, W], matching ``torch.fft.fft2`` layout."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64) / 0.5
    fx = torch.fft.fftfreq(width, dtype=torch.float64) / 0.5
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def _power_spectra(videos: torch.Tensor) -> torch.Tensor:
    grey = _grey_frames(videos)
    grey = grey - grey.mean((-2, -1), keepdim=True)  # DC carries brightness, not detail
    return torch.fft.fft2(grey).abs() ** 2


def srop(videos: torch.Tensor, share: float = ROLLOFF_SHARE) -> float:
    """Spectral roll-off point: the normalised radius (1 = Nyquist) below which ``share`` (85%) of
    each grey frame's power lies, averaged over frames. The spectrum (DC removed) is binned radially
    in rings one DFT bin wide (ring k holds radii in [(k-0.5)/n, (k+0.5)/n), n = min(H, W) / 2) and the
    roll-off is the first ring whose cumulative share reaches ``share``, reported as k / n. Flat
    frames count as 0. "match": lower than the data's means lost detail, higher means noise.
    """
    power = _power_spectra(videos)
    h, w = power.shape[-2:]
    rings_per_nyquist = min(h, w) // 2
    ring = torch.round(normalised_radius(h, w) * rings_per_nyquist).long().flatten()
    ring_power = torch.zeros(power.shape[0], int(ring.max()) + 1, dtype=torch.float64)
    ring_power.index_add_(1, ring, power.flatten(1))
    total = ring_power.sum(-1)
    cumulative = ring_power.cumsum(-1) / total.clamp_min(1e-300)[:, None]
    first = (cumulative < share - 1e-12).sum(-1)  # index of the first ring reaching the share
    values = torch.where(total > 0, first.double() / rings_per_nyquist, torch.zeros_like(total))
    return float(values.mean())


def high_frequency_share(videos: torch.Tensor) -> float:
    """Share of each grey frame's power (DC removed) at normalised radius > 0.5 (above half the
    Nyquist frequency), averaged over frames; flat frames count as 0. For white noise it is the
    share of DFT bins beyond that radius, 1 - pi/16 ~ 0.80 for large frames. "match" the data."""
    power = _power_spectra(videos)
    h, w = power.shape[-2:]
    high = normalised_radius(h, w) > 0.5
    total = power.sum((-2, -1))
    values = torch.where(total > 0, (power * high).sum((-2, -1)) / total.clamp_min(1e-300), torch.zeros_like(total))
    return float(values.mean())


# ---------------------------------------------------------------------------------------------
# diversity and distribution distance


def group_by_prompt(videos: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Split a batch into {prompt: videos [S, 3, F, H, W]} in first-seen order."""
    if len(prompts) != videos.shape[0]:
        raise ValueError(f"got {len(prompts)} prompts for {videos.shape[0]} videos")
    order: dict[str, list[int]] = {}
    for index, prompt in enumerate(prompts):
        order.setdefault(prompt, []).append(index)
    return {prompt: videos[indices] for prompt, indices in order.items()}


def diversity(groups: Mapping[str, torch.Tensor] | Iterable[torch.Tensor]) -> float:
    """Mean pairwise RMS pixel distance between samples of one prompt (different seeds), averaged
    over prompts with at least two samples. 0 means every seed gives the same clip (mode collapse).
    Higher is better up to the data's own diversity."""
    tensors = list(groups.values()) if isinstance(groups, Mapping) else list(groups)
    per_prompt = []
    for group in tensors:
        group = _check_videos(group)
        if group.shape[0] < 2:
            continue
        flat = group.flatten(1).double()
        distances = torch.cdist(flat, flat) / math.sqrt(flat.shape[1])
        count = group.shape[0]
        per_prompt.append(float(distances.sum() / (count * (count - 1))))
    if not per_prompt:
        raise ValueError("diversity needs at least one prompt with two or more samples")
    return float(np.mean(per_prompt))


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D], in float64."""
    feats = torch.as_tensor(features).detach().cpu().double()
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"expected features [N >= 2, D], got shape {tuple(feats.shape)}")
    mean = feats.mean(0)
    centred = feats - mean
    return mean, centred.T @ centred / (feats.shape[0] - 1)


def _symmetric_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix; tiny negative eigenvalues from
    round-off (near-singular covariances) are clamped to zero."""
    values, vectors = torch.linalg.eigh(0.5 * (matrix + matrix.T))
    return (vectors * values.clamp_min(0.0).sqrt()) @ vectors.T


def frechet_distance_from_statistics(mean_a, cov_a, mean_b, cov_b) -> float:
    """``|mu_a - mu_b|^2 + tr(Sa + Sb - 2 (Sa^1/2 Sb Sa^1/2)^1/2)`` with symmetric eigendecompositions
    in float64 (no scipy.linalg.sqrtm, which turns complex on near-singular covariances)."""
    mean_a, mean_b = torch.as_tensor(mean_a).double(), torch.as_tensor(mean_b).double()
    cov_a, cov_b = torch.as_tensor(cov_a).double(), torch.as_tensor(cov_b).double()
    root_a = _symmetric_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    cross_values = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp_min(0.0)
    distance = (mean_a - mean_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2.0 * cross_values.sqrt().sum()
    return max(float(distance), 0.0)


def frechet_distance(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between two feature sets [N, D] (Gaussian fits). Lower is better.

    Small sets are biased upwards (more so for N close to D), so compare configurations at the same N.
    """
    return frechet_distance_from_statistics(*feature_statistics(feats_a), *feature_statistics(feats_b))


# ---------------------------------------------------------------------------------------------
# prompt adherence and the combined score


def _attributes(attrs: Sequence) -> list:
    from ..toy.domain import ClipAttributes, parse_prompt

    return [a if isinstance(a, ClipAttributes) else parse_prompt(a) for a in attrs]


def attribute_accuracy(videos: torch.Tensor, attrs: Sequence, classifier) -> dict[str, float]:
    """Accuracy of the toy classifier's predictions against the prompted attributes (ClipAttributes
    or prompt strings): acc_colour, acc_shape, acc_direction, acc_speed, prompt_acc = min(colour,
    shape), motion_acc = min(direction, speed). Higher is better."""
    from .classifier import labels_tensor

    videos = _check_videos(videos)
    attrs = _attributes(attrs)
    if len(attrs) != videos.shape[0]:
        raise ValueError(f"got {len(attrs)} attributes for {videos.shape[0]} videos")
    predicted = classifier.predict(videos)
    truth = labels_tensor(attrs)
    acc = {f"acc_{name}": float((predicted[name] == truth[name]).float().mean()) for name in ("colour", "shape", "direction", "speed")}
    acc["prompt_acc"] = min(acc["acc_colour"], acc["acc_shape"])
    acc["motion_acc"] = min(acc["acc_direction"], acc["acc_speed"])
    return acc


def attribute_confusion(videos: torch.Tensor, attrs: Sequence, classifier) -> dict[str, dict]:
    """Per attribute, which value the classifier reads for each prompted value: ``{"labels": values,
    "matrix": counts[prompted][read]}`` (a diagnosis of ``attribute_accuracy``: its diagonal over the clips)."""
    from ..toy.domain import ATTRIBUTE_VALUES
    from .classifier import labels_tensor

    videos = _check_videos(videos)
    attrs = _attributes(attrs)
    if len(attrs) != videos.shape[0]:
        raise ValueError(f"got {len(attrs)} attributes for {videos.shape[0]} videos")
    predicted, truth = classifier.predict(videos), labels_tensor(attrs)
    out = {}
    for name, values in ATTRIBUTE_VALUES.items():
        counts = torch.zeros(len(values), len(values), dtype=torch.long)
        counts.index_put_((truth[name].cpu(), predicted[name].cpu()), torch.ones(len(attrs), dtype=torch.long),
                          accumulate=True)
        out[name] = {"labels": list(values), "matrix": counts.tolist()}
    return out


def score_videos(videos: torch.Tensor, attrs: Sequence, data_videos: torch.Tensor, classifier=None) -> dict[str, float]:
    """Every metric in one flat dict (keys of ``METRIC_DIRECTION``), against reference data clips.

    ``fd`` is the Fréchet distance between classifier features of ``videos`` and ``data_videos``
    and ``colour_hist_distance`` their colour-histogram distance. ``diversity`` is included only
    when some prompt occurs at least twice. ``classifier=None`` loads the shipped weights.
    """
    from .classifier import load_classifier

    videos, data_videos = _check_videos(videos), _check_videos(data_videos)
    classifier = load_classifier() if classifier is None else classifier
    attrs = _attributes(attrs)
    flows = [clip_flows(video) for video in videos]
    scores = {"fd": frechet_distance(classifier.embed(videos), classifier.embed(data_videos))}
    scores.update(attribute_accuracy(videos, attrs, classifier))
    scores.update(
        motion_smoothness=motion_smoothness(videos),
        **_warping_scores(videos, flows, OBJECT_SATURATION),  # warping_error and its two regions, one warp each
        dynamic_degree=dynamic_degree(videos, flows),
        mean_flow_magnitude=mean_flow_magnitude(videos, flows),
        flicker=temporal_flicker(videos),
        saturation_mean=saturation_mean(videos),
        saturation_p95=saturation_p95(videos),
        saturation_background=saturation_background(videos),
        tint_background=tint_background(videos),
        colourfulness=colourfulness(videos),
        colour_hist_distance=colour_histogram_distance(videos, data_videos),
        srop=srop(videos),
        hf_share=high_frequency_share(videos),
    )
    groups = group_by_prompt(videos, [a.prompt for a in attrs])
    if any(group.shape[0] >= 2 for group in groups.values()):
        scores["diversity"] = diversity(groups)
    return scores
