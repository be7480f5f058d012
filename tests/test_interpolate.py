"""Frame interpolation (trainer.video.interpolate), clip reading (trainer.video.io) and the
drop-and-rebuild benchmark (trainer.bench.interpolation), on small synthetic frames."""

from __future__ import annotations

import weakref

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from trainer.bench.interpolation import drop_repeated_frames, psnr, run_interpolation_bench, ssim
from trainer.video.interpolate import (
    INTERPOLATORS,
    InterpolationConfig,
    analyse_pair,
    interpolate_frames,
    interpolate_image_batch,
    interpolate_pair,
    iter_interpolated_frames,
    linear_blend,
)
from trainer.video.io import read_video
from trainer.video.optical_flow import dis_flow


def translated_frames(shift_x: float, shift_y: float, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Frames at 0, 1/2 and 1 of a translation by (shift_x, shift_y) pixels of a smooth colour texture,
    a sum of sinusoids evaluated analytically so sub-pixel shifts are exact."""
    rng = np.random.default_rng(seed)
    frequencies = rng.uniform(-0.25, 0.25, (3, 8, 2))
    phases = rng.uniform(0, 2 * np.pi, (3, 8))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    frames = []
    for fraction in (0.0, 0.5, 1.0):
        x, y = xs + fraction * shift_x, ys + fraction * shift_y
        channels = [sum(np.cos(fx * x + fy * y + phase) for (fx, fy), phase in zip(frequencies[c], phases[c]))
                    for c in range(3)]
        frames.append(np.stack(channels, axis=-1))
    stack = np.stack(frames)
    stack = (stack - stack.min()) / (stack.max() - stack.min())
    return [frame.astype(np.float32) for frame in stack]


def texture_frame(seed: int, size: int = 32, cell: int = 4) -> np.ndarray:
    """Random colour texture with features about ``cell`` pixels wide."""
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.random((size // cell, size // cell, 3)).astype(np.float32), (size, size),
                      interpolation=cv2.INTER_CUBIC).clip(0, 1)


# ---------------------------------------------------------------------------------------------
# quality


@pytest.mark.parametrize("shift", [(3.0, 0.0), (2.5, 1.5), (-4.0, 2.0)])
def test_translation_is_rebuilt_far_better_than_linear_blend(shift):
    frame_a, middle, frame_b = translated_frames(*shift)
    rebuilt = interpolate_pair(frame_a, frame_b, 0.5)
    blended = linear_blend(frame_a, frame_b, 0.5)
    inner = (slice(6, -6), slice(6, -6))  # borders: content entering the view is judged separately
    flow_psnr = psnr(rebuilt[inner], middle[inner])
    blend_psnr = psnr(blended[inner], middle[inner])
    assert flow_psnr > 35.0
    assert flow_psnr > blend_psnr + 10.0


def test_camera_pan_takes_entering_content_from_the_frame_that_shows_it():
    panorama = texture_frame(3, size=100, cell=10)[:64]
    frame_a, middle, frame_b = panorama[:, 0:64], panorama[:, 6:70], panorama[:, 12:76]
    with_occlusion = interpolate_pair(frame_a, frame_b, 0.5)
    without = interpolate_pair(frame_a, frame_b, 0.5, InterpolationConfig(occlusion_aware=False))
    strip = (slice(8, -8), slice(-6, None))  # only frame B shows these columns of the middle frame
    assert psnr(with_occlusion[strip], middle[strip]) > psnr(without[strip], middle[strip]) + 3.0
    assert psnr(with_occlusion, middle) > 30.0


def test_scene_cut_gives_a_frame_within_the_range_of_its_neighbours():
    frame_a = texture_frame(1) * np.array([1.0, 0.3, 0.2], np.float32)  # reddish
    frame_b = texture_frame(2) * np.array([0.2, 0.4, 1.0], np.float32)  # bluish, unrelated
    assert analyse_pair(frame_a, frame_b, InterpolationConfig()).is_scene_cut
    for t in (0.25, 0.5, 0.75):
        result = interpolate_pair(frame_a, frame_b, t)
        assert np.all(result >= np.minimum(frame_a, frame_b) - 1e-6)
        assert np.all(result <= np.maximum(frame_a, frame_b) + 1e-6)
    blended = interpolate_pair(frame_a, frame_b, 0.5, InterpolationConfig(scene_cut_fallback="blend"))
    np.testing.assert_allclose(blended, linear_blend(frame_a, frame_b, 0.5), atol=1e-6)


def test_small_motion_is_not_mistaken_for_a_scene_cut():
    frame_a, _, frame_b = translated_frames(2.0, 1.0)
    assert not analyse_pair(frame_a, frame_b, InterpolationConfig()).is_scene_cut


# ---------------------------------------------------------------------------------------------
# clip layout


@pytest.mark.parametrize("multiplier", range(2, 9))
@pytest.mark.parametrize("method", sorted(INTERPOLATORS))
def test_output_length_and_originals_kept_at_multiples(multiplier, method):
    frames = np.stack([texture_frame(seed, size=24) for seed in range(3)])
    out = interpolate_frames(frames, multiplier, InterpolationConfig(method=method))
    assert out.shape == ((len(frames) - 1) * multiplier + 1, 24, 24, 3)
    assert out.dtype == np.float32
    for k, original in enumerate(frames):
        assert np.array_equal(out[k * multiplier], original)
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


def test_torch_wrapper_matches_numpy_and_reports_progress():
    frames = np.stack([texture_frame(seed, size=24) for seed in range(4)])
    calls = []
    out = interpolate_image_batch(torch.from_numpy(frames), 3, InterpolationConfig(chunk_size=4),
                                  progress=lambda done, total: calls.append((done, total)))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (10, 24, 24, 3)
    np.testing.assert_allclose(out.numpy(), interpolate_frames(frames, 3), atol=1e-6)
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_precomputed_flows_give_the_same_frame():
    frame_a, _, frame_b = translated_frames(3.0, 1.0)
    flows = (dis_flow(frame_a, frame_b), dis_flow(frame_b, frame_a))
    np.testing.assert_array_equal(interpolate_pair(frame_a, frame_b, 0.5, flows=flows),
                                  interpolate_pair(frame_a, frame_b, 0.5))
    with pytest.raises(ValueError, match="forward flow"):
        interpolate_pair(frame_a, frame_b, 0.5, flows=(flows[0][:10], flows[1]))


def test_linear_blend_is_the_weighted_average():
    frame_a, frame_b = texture_frame(1), texture_frame(2)
    np.testing.assert_allclose(INTERPOLATORS["linear_blend"](frame_a, frame_b, 0.25), 0.75 * frame_a + 0.25 * frame_b,
                               atol=1e-6)


# ---------------------------------------------------------------------------------------------
# bad inputs


def test_bad_inputs_raise_clear_value_errors():
    frame = texture_frame(0, size=16)
    with pytest.raises(ValueError, match="at least 2 frames"):
        interpolate_frames(frame[None], 2)
    with pytest.raises(ValueError, match="at least 2 frames"):
        list(iter_interpolated_frames(iter([frame]), 2))
    with pytest.raises(ValueError, match="same size"):
        interpolate_frames([frame, texture_frame(1, size=24)], 2)
    with pytest.raises(ValueError, match=r"multiplier must be in \[2, 8\], got 1"):
        interpolate_frames([frame, frame], 1)
    with pytest.raises(ValueError, match=r"multiplier must be in \[2, 8\], got 9"):
        interpolate_frames([frame, frame], 9)
    with pytest.raises(ValueError, match="multiplier"):
        InterpolationConfig(multiplier=9)
    with pytest.raises(ValueError, match=r"\[H, W, 3\] RGB"):
        interpolate_frames(np.zeros((3, 16, 16, 4), np.float32), 2)
    with pytest.raises(ValueError, match=r"\[H, W, 3\] RGB"):
        interpolate_pair(np.zeros((16, 16), np.float32), np.zeros((16, 16), np.float32), 0.5)
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        interpolate_image_batch(torch.zeros(3, 16, 16, 1), 2)
    with pytest.raises(ValueError, match="unknown interpolation method"):
        InterpolationConfig(method="rife")
    with pytest.raises(ValueError, match="t must be in"):
        interpolate_pair(frame, frame, 1.5)


def test_unreadable_video_files_raise_value_error(tmp_path):
    for name in ("broken.mp4", "broken.webp", "broken.gif"):
        (tmp_path / name).write_bytes(b"this is not a video")
        with pytest.raises(ValueError, match="broken"):
            read_video(tmp_path / name)
    with pytest.raises(ValueError, match="not found"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="unsupported"):
        (tmp_path / "clip.txt").write_text("x")
        read_video(tmp_path / "clip.txt")


# ---------------------------------------------------------------------------------------------
# memory: flows are per pair, input is consumed lazily


def test_thousand_frames_stream_with_bounded_flows_and_lazy_input():
    alive = {"now": 0, "peak": 0, "made": 0}

    def counted_flow(frame_a, frame_b):
        flow = dis_flow(frame_a, frame_b, "ultrafast")
        alive["now"] += 1
        alive["made"] += 1
        alive["peak"] = max(alive["peak"], alive["now"])
        weakref.finalize(flow, lambda: alive.__setitem__("now", alive["now"] - 1))
        return flow

    produced = {"count": 0}

    def frame_source(n):
        rng = np.random.default_rng(0)
        base = rng.random((16, 16, 3)).astype(np.float32)
        for index in range(n):
            produced["count"] += 1
            yield np.roll(base, index % 5, axis=1)

    cfg = InterpolationConfig(flow_function=counted_flow)
    outputs = 0
    for frame in iter_interpolated_frames(frame_source(1000), 2, cfg):
        outputs += 1
        assert frame.shape == (16, 16, 3)
        # lazily consumed: never more than one frame ahead of what the outputs need
        assert produced["count"] <= outputs // 2 + 2
    assert outputs == 999 * 2 + 1
    assert alive["made"] == 2 * 999
    assert alive["peak"] <= 4  # the current pair's two flows (plus the previous pair's, not yet collected)


# ---------------------------------------------------------------------------------------------
# benchmark scoring and the end-to-end bench


def test_identical_frames_score_finite():
    frame = texture_frame(0)
    value = psnr(frame, frame)
    assert np.isfinite(value) and value == pytest.approx(100.0)
    assert ssim(frame, frame) == pytest.approx(1.0)
    assert psnr(frame, 1.0 - frame) < 20.0
    assert ssim(frame, np.roll(frame, 5, axis=1)) < 0.9


def test_repeated_frames_are_detected():
    frames = np.stack([np.full((8, 8, 3), value, np.uint8) for value in (0, 0, 40, 40, 80, 120, 120, 160)])
    kept, removed = drop_repeated_frames(frames)
    assert removed == 3
    assert [int(f[0, 0, 0]) for f in kept] == [0, 40, 80, 120, 160]


def _write_clips(directory):
    panorama = (texture_frame(5, size=128, cell=8)[:48] * 255).astype(np.uint8)
    frames = [panorama[:, 2 * i: 2 * i + 48] for i in range(9)]
    Image.fromarray(frames[0]).save(directory / "pan.gif", save_all=True,
                                    append_images=[Image.fromarray(f) for f in frames[1:]], duration=40, loop=0)
    Image.fromarray(frames[0]).save(directory / "pan.webp", save_all=True,
                                    append_images=[Image.fromarray(f) for f in frames[1:]], duration=40, lossless=True)
    writer = cv2.VideoWriter(str(directory / "pan.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (48, 48))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return frames


def test_video_reading_and_bench_on_tiny_clips(tmp_path):
    frames = _write_clips(tmp_path)
    gif = read_video(tmp_path / "pan.gif")
    assert gif.shape == (9, 48, 48, 3) and gif.dtype == np.float32 and 0.0 <= gif.min() and gif.max() <= 1.0
    assert np.abs(gif[3] - frames[3] / 255.0).mean() < 0.05  # GIF palette quantisation only
    webp = read_video(tmp_path / "pan.webp")
    assert webp.shape == (9, 48, 48, 3) and np.array_equal(np.rint(webp[4] * 255).astype(np.uint8), frames[4])
    assert read_video(tmp_path / "pan.mp4", max_frames=4).shape == (4, 48, 48, 3)

    result = run_interpolation_bench(tmp_path, max_frames=7)
    assert {"rows", "clips", "ratios", "worst_clip_gain_db"} <= set(result)
    assert [row["name"] for row in result["rows"]] == ["stride_flow", "linear_blend"]
    for row in result["rows"]:
        assert {"name", "psnr", "ssim", "frames_per_second"} <= set(row)
        assert np.isfinite(row["psnr"]) and row["frames_per_second"] > 0
    assert sorted(c["clip"] for c in result["clips"]) == ["pan.gif", "pan.mp4", "pan.webp"]
    for clip in result["clips"]:
        assert clip["frames"] == 7 and clip["size"] == [48, 48]
        assert {"stride_flow_psnr", "stride_flow_ssim", "linear_blend_psnr", "linear_blend_ssim"} <= set(clip)
    assert result["ratios"]["psnr_gain_db"] > 3.0  # a 4-pixel pan: motion compensation must win clearly
    assert all(clip["repeated_frames"] == 0 for clip in result["clips"])
    assert result["ratios"]["clips_without_repeated_frames"] == 3


def test_bench_reports_frame_doubled_clips_apart(tmp_path):
    """A clip saved at twice its frame rate (every frame twice): dropping every second frame leaves
    a sequence with no trace of the doubling, and the dropped frame copies its left neighbour; the
    bench counts the repeats per clip and reports the gain without such clips next to the total."""
    panorama = (texture_frame(5, size=128, cell=8)[:48] * 255).astype(np.uint8)
    frames = [panorama[:, 3 * i: 3 * i + 48] for i in range(9)]
    smooth, doubled = tmp_path / "smooth", tmp_path / "doubled"
    # each copy differs in one pixel (as after lossy re-encoding), so the encoder keeps both frames
    copies = [f if k == 0 else np.where(np.arange(48)[:, None, None] == 0, f ^ 1, f).astype(np.uint8)
              for f in frames[:5] for k in range(2)]
    for directory, clip in ((smooth, frames), (doubled, copies)):
        directory.mkdir()
        Image.fromarray(clip[0]).save(directory / "clip.webp", save_all=True, lossless=True,
                                      append_images=[Image.fromarray(f) for f in clip[1:]], duration=40)
    both = tmp_path / "both"
    both.mkdir()
    for name in ("smooth", "doubled"):
        (both / f"{name}.webp").write_bytes((tmp_path / name / "clip.webp").read_bytes())
    result = run_interpolation_bench(both)
    by_name = {c["clip"]: c for c in result["clips"]}
    assert by_name["doubled.webp"]["repeated_frames"] >= 4 and by_name["smooth.webp"]["repeated_frames"] == 0
    ratios = result["ratios"]
    assert ratios["clips_without_repeated_frames"] == 1
    smooth_gain = by_name["smooth.webp"]["stride_flow_psnr"] - by_name["smooth.webp"]["linear_blend_psnr"]
    assert ratios["psnr_gain_db_without_repeated_frames"] == pytest.approx(smooth_gain)
    # on the doubled clip the dropped frames are copies, which a motion midpoint cannot match
    assert by_name["doubled.webp"]["stride_flow_psnr"] - by_name["doubled.webp"]["linear_blend_psnr"] < smooth_gain
