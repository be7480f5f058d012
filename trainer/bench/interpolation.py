"""``python -m trainer bench interpolation``: frame interpolation scored against real dropped frames.

Every video in a directory (mp4, avi, webm, animated webp, gif) is read, every second frame is
dropped (frames 0, 2, 4, ... are kept), each dropped frame is rebuilt at multiplier 2 by every
method of ``trainer.video.interpolate.INTERPOLATORS`` asked for, and scored against the real one
with PSNR (MSE floored so identical frames give ``PSNR_CAP_DB``, never inf) and SSIM (Gaussian
window 11, sigma 1.5, RGB in [0, 1], mean over channels). Clips rendered at a higher frame rate
than they were generated at repeat frames (a 16 fps Wan clip saved at 30 fps): a repeated frame is
not an in-between frame, and no interpolator can know which neighbour it copies. The default is
the literal protocol (every frame counts); ``--drop-repeats`` removes such repeats before dropping
(``dedupe``; the count is reported per clip) and reports that protocol in the JSON. Rows and
``ratios`` average per-clip means, so every clip weighs the same.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..video.interpolate import INTERPOLATORS, InterpolationConfig
from ..video.io import iter_video_frames_u8, list_video_files

PSNR_CAP_DB = 100.0
DEFAULT_METHODS = ("stride_flow", "linear_blend")
REPEAT_RATIO = 0.35
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def psnr(prediction: np.ndarray, target: np.ndarray, cap_db: float = PSNR_CAP_DB) -> float:
    """PSNR in dB for images in [0, 1]; identical images give ``cap_db`` instead of inf."""
    mse = float(np.mean((np.asarray(prediction, np.float64) - np.asarray(target, np.float64)) ** 2))
    floor = 10.0 ** (-cap_db / 10.0)
    return float(10.0 * np.log10(1.0 / max(mse, floor)))


def ssim(prediction: np.ndarray, target: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) of RGB images in [0, 1]: Gaussian window 11, sigma 1.5,
    K1 = 0.01, K2 = 0.03, averaged over the channels and over pixels at least 5 from the border."""
    x = np.asarray(prediction, np.float64)
    y = np.asarray(target, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"ssim needs equal shapes, got {x.shape} and {y.shape}")
    c1, c2 = 0.01**2, 0.03**2

    def blur(image):
        return cv2.GaussianBlur(image, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    pad = SSIM_WINDOW // 2
    if ssim_map.shape[0] > 2 * pad and ssim_map.shape[1] > 2 * pad:
        ssim_map = ssim_map[pad:-pad, pad:-pad]
    return float(ssim_map.mean())


def drop_repeated_frames(frames: np.ndarray, ratio: float = REPEAT_RATIO) -> tuple[np.ndarray, int]:
    """Remove frames that repeat their predecessor (frame-rate conversion by duplication).

    Frame i+1 repeats frame i when their mean absolute difference is below ``ratio`` times the smaller
    of the neighbouring consecutive differences: relative, so codec noise on a repeat and slow but
    real motion are told apart. Returns the kept frames and how many were removed.
    """
    repeated = repeated_frame_mask(frames, ratio)
    keep = np.r_[True, ~repeated]
    return frames[keep], int(repeated.sum())


def repeated_frame_mask(frames: np.ndarray, ratio: float = REPEAT_RATIO) -> np.ndarray:
    """``[N - 1]`` bool: frame i+1 repeats frame i (the rule of ``drop_repeated_frames``)."""
    if len(frames) < 3:
        return np.zeros(max(0, len(frames) - 1), dtype=bool)
    differences = np.array(
        [np.abs(frames[i + 1].astype(np.float32) - frames[i]).mean() for i in range(len(frames) - 1)]
    )
    neighbour = np.minimum(np.r_[differences[1:], np.inf], np.r_[np.inf, differences[:-1]])
    return differences < ratio * neighbour


def _load_clip(path: Path, max_frames: int | None, dedupe: bool) -> tuple[np.ndarray, int]:
    """uint8 frames [N, H, W, 3]; repeats are removed on the whole clip before truncating to max_frames."""
    frames = []
    for frame in iter_video_frames_u8(path):
        frames.append(frame)
        if not dedupe and max_frames is not None and len(frames) >= max_frames:
            break
    if not frames:
        raise ValueError(f"no frames could be decoded from {str(path)!r}")
    clip = np.stack(frames)
    removed = 0
    if dedupe:
        clip, removed = drop_repeated_frames(clip)
    if max_frames is not None:
        clip = clip[:max_frames]
    return clip, removed


def bench_clip(clip_u8: np.ndarray, methods: Sequence[str], cfg: InterpolationConfig) -> dict[str, dict[str, float]]:
    """Per-method mean PSNR, mean SSIM, rebuilt frame count and seconds on one clip (frames >= 3)."""
    num_pairs = (len(clip_u8) - 1) // 2
    results: dict[str, dict[str, float]] = {}
    for method in methods:
        interpolator = INTERPOLATORS[method]
        psnrs, ssims, seconds = [], [], 0.0
        for pair in range(num_pairs):
            frame_a = clip_u8[2 * pair].astype(np.float32) / 255.0
            frame_b = clip_u8[2 * pair + 2].astype(np.float32) / 255.0
            target = clip_u8[2 * pair + 1].astype(np.float32) / 255.0
            start = time.perf_counter()
            (rebuilt,) = interpolator.pair_times(frame_a, frame_b, [0.5], cfg)
            seconds += time.perf_counter() - start
            psnrs.append(psnr(rebuilt, target))
            ssims.append(ssim(rebuilt, target))
        results[method] = {
            "psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "frames": num_pairs, "seconds": seconds,
        }
    return results


def run_interpolation_bench(
    clips_dir: str | Path,
    max_frames: int | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    max_clips: int | None = None,
    dedupe: bool = False,
    cfg: InterpolationConfig | None = None,
    log=None,
) -> dict:
    """Run the drop-and-rebuild benchmark over ``clips_dir``; returns the JSON-ready result."""
    unknown = [m for m in methods if m not in INTERPOLATORS]
    if unknown or not methods:
        raise ValueError(f"unknown interpolation methods {unknown}; known: {', '.join(INTERPOLATORS)}")
    if max_frames is not None and max_frames < 3:
        raise ValueError(f"max_frames must be >= 3 (two kept frames around one dropped), got {max_frames}")
    cfg = cfg or InterpolationConfig()
    paths = list_video_files(clips_dir)
    if not paths:
        raise ValueError(f"no video files ({', '.join(('mp4', 'avi', 'webm', 'webp', 'gif'))}) in {str(clips_dir)!r}")

    clips, skipped = [], []
    totals = {m: {"frames": 0, "seconds": 0.0} for m in methods}
    for path in paths:
        if max_clips is not None and len(clips) >= max_clips:
            break
        try:
            clip, removed = _load_clip(path, max_frames, dedupe)
        except ValueError as error:
            skipped.append({"clip": path.name, "reason": str(error)})
            continue
        if len(clip) < 3:
            skipped.append({"clip": path.name, "reason": f"{len(clip)} frame(s) after removing repeats; need 3"})
            continue
        per_method = bench_clip(clip, methods, cfg)
        # repeats left in what is benchmarked: where a dropped frame copies a neighbour, no motion
        # interpolator can know it, so these clips are reported apart
        entry = {"clip": path.name, "frames": int(len(clip)), "size": [int(clip.shape[2]), int(clip.shape[1])],
                 "repeats_removed": removed, "repeated_frames": int(repeated_frame_mask(clip).sum()),
                 "rebuilt": (len(clip) - 1) // 2}
        for method, scores in per_method.items():
            entry[f"{method}_psnr"] = scores["psnr"]
            entry[f"{method}_ssim"] = scores["ssim"]
            totals[method]["frames"] += scores["frames"]
            totals[method]["seconds"] += scores["seconds"]
        clips.append(entry)
        if log is not None:
            log(f"{path.name}: " + "  ".join(f"{m} {entry[f'{m}_psnr']:.2f} dB" for m in methods))
    if not clips:
        raise ValueError(f"no clip in {str(clips_dir)!r} had 3 or more frames; skipped: {skipped}")

    rows = []
    for method in methods:
        seconds = totals[method]["seconds"]
        rows.append({
            "name": method,
            "psnr": float(np.mean([c[f"{method}_psnr"] for c in clips])),
            "ssim": float(np.mean([c[f"{method}_ssim"] for c in clips])),
            "frames_per_second": totals[method]["frames"] / seconds if seconds > 0 else float("nan"),
        })
    result = {
        "clips_dir": str(clips_dir),
        "protocol": {"multiplier": 2, "max_frames": max_frames, "dedupe": dedupe, "psnr_cap_db": PSNR_CAP_DB,
                     "ssim": {"window": SSIM_WINDOW, "sigma": SSIM_SIGMA}},
        "rows": rows,
        "clips": clips,
        "skipped": skipped,
        "ratios": {},
    }
    if "stride_flow" in methods and "linear_blend" in methods:
        gains = np.array([c["stride_flow_psnr"] - c["linear_blend_psnr"] for c in clips])
        worst = int(np.argmin(gains))
        result["ratios"] = {
            "psnr_gain_db": float(gains.mean()),
            "ssim_gain": float(np.mean([c["stride_flow_ssim"] - c["linear_blend_ssim"] for c in clips])),
            "worst_clip_gain_db": float(gains[worst]),
            "clips_worse_than_blend_by_0_5_db": int((gains < -0.5).sum()),
        }
        clean = np.array([c["repeated_frames"] == 0 for c in clips])
        if clean.any():
            result["ratios"].update({
                "clips_without_repeated_frames": int(clean.sum()),
                "psnr_gain_db_without_repeated_frames": float(gains[clean].mean()),
                "worst_clip_gain_db_without_repeated_frames": float(gains[clean].min()),
            })
        result["worst_clip_gain_db"] = float(gains[worst])
        result["worst_clip"] = clips[worst]["clip"]
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=Path, required=True, help="directory of mp4/avi/webm/webp/gif clips")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per clip (after removing repeats)")
    parser.add_argument("--max-clips", type=int, default=None, help="stop after this many clips")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated, from: {', '.join(INTERPOLATORS)}")
    parser.add_argument("--drop-repeats", action="store_true",
                        help="remove repeated frames (frame-rate-converted clips) before dropping every second frame")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")


def run(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result = run_interpolation_bench(args.clips, args.max_frames, methods, args.max_clips, dedupe=args.drop_repeats,
                                     log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in result["rows"]:
            print(f"{row['name']:14s} psnr={row['psnr']:.3f} ssim={row['ssim']:.4f} fps={row['frames_per_second']:.1f}")
        print(json.dumps(result["ratios"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.bench.interpolation", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
