"""Tests of the evaluation metrics, the shipped toy classifier and the HTML report.

References are computed independently of the implementation (closed forms, numpy instead of torch,
hand-built clips), so each test fails if the metric is wrong, not only if it crashes.
"""

from __future__ import annotations

import json
import math
import re

import cv2
import numpy as np
import pytest
import torch

from trainer.eval import metrics
from trainer.eval.classifier import DEFAULT_WEIGHTS, load_classifier
from trainer.toy.domain import ClipAttributes, DomainConfig, make_batch, render_clip


def _constant_video(rgb, frames=9, size=32, batch=1):
    return torch.tensor(rgb, dtype=torch.float32)[None, :, None, None, None].expand(batch, 3, frames, size, size).clone()


def _smooth_texture(height, width, seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 6 + 2, width // 6 + 2, 3)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)


# --- temporal flicker -------------------------------------------------------------------------


def test_flicker_of_constant_video_is_one():
    assert metrics.temporal_flicker(_constant_video((0.3, 0.5, 0.7))) == pytest.approx(1.0, abs=1e-7)


def test_flicker_of_black_white_alternation_is_zero():
    video = torch.zeros(2, 3, 8, 16, 16)
    video[:, :, 1::2] = 1.0
    assert metrics.temporal_flicker(video) == pytest.approx(0.0, abs=1e-7)


# --- dynamic degree ---------------------------------------------------------------------------


def test_dynamic_thresholds_for_toy_clips():
    threshold, pairs = metrics.dynamic_thresholds(32, 32, 9)
    assert threshold == pytest.approx(0.75)
    assert pairs == 2


def test_dynamic_degree_static_is_zero_and_quick_clip_is_one():
    clip = render_clip(ClipAttributes("circle", "red", "right", "quickly"), seed=11)[None]
    static = clip[:, :, :1].expand(-1, -1, 9, -1, -1).clone()
    assert metrics.dynamic_degree(static) == 0.0
    assert metrics.dynamic_degree(clip) == 1.0
    slow = render_clip(ClipAttributes("square", "blue", "down", "slowly"), seed=12)[None]
    assert metrics.dynamic_degree(slow) == 1.0
    assert metrics.mean_flow_magnitude(static) < 0.05 < metrics.mean_flow_magnitude(clip)


# --- warping error ----------------------------------------------------------------------------


def test_warping_error_of_translation_is_small_and_of_noise_is_large():
    texture = _smooth_texture(48, 48)
    # a camera pan: each frame is a window 1 px further right over the same texture
    frames = [texture[8:40, 4 + t : 36 + t] for t in range(6)]
    pan = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2)[None]
    assert metrics.warping_error(pan) < 0.01
    noise = torch.rand(1, 3, 6, 32, 32, generator=torch.Generator().manual_seed(0))
    assert metrics.warping_error(noise) > 0.15


# --- motion smoothness ------------------------------------------------------------------------


def _domain_clips():
    attrs = [ClipAttributes("square", "red", "right", "quickly"), ClipAttributes("circle", "blue", "up", "slowly"),
             ClipAttributes("triangle", "green", "left", "slowly")]
    return torch.stack([render_clip(a, seed=40 + i) for i, a in enumerate(attrs)])


def test_warping_error_by_region_puts_each_corruption_in_its_own_region():
    """Grey per-frame noise on the background only raises the background's warping error and leaves the
    object's; per-frame brightness noise on the object only does the opposite. The object is found by
    saturation."""
    clips = _domain_clips()
    coloured = metrics.hsv_saturation(clips) > metrics.OBJECT_SATURATION  # [B, F, H, W]
    assert 0.01 < coloured.float().mean() < 0.3  # the shape, not the background
    generator = torch.Generator().manual_seed(0)
    grey = 0.03 * torch.randn(clips.shape[0], 1, *clips.shape[2:], generator=generator)
    noisy_background = (clips + grey * (~coloured)[:, None]).clamp(0, 1)
    # a per-pixel brightness factor <= 1 on the object: every channel scaled alike keeps its saturation
    darken = 0.6 + 0.4 * torch.rand(clips.shape[0], 1, *clips.shape[2:], generator=generator)
    noisy_object = clips * torch.where(coloured[:, None], darken, torch.ones_like(darken))
    clean, background, obj = (metrics.warping_error_by_region(v) for v in (clips, noisy_background, noisy_object))
    assert background["warping_error_background"] > 4 * clean["warping_error_background"]
    assert background["warping_error_object"] < 1.3 * clean["warping_error_object"]
    assert obj["warping_error_object"] > 4 * clean["warping_error_object"]
    # background pixels next to the outline warp from object pixels (bilinear), so some of it shows there
    assert obj["warping_error_background"] < 2 * clean["warping_error_background"]
    # the two regions split the pixels warping_error scores: its value lies between theirs
    low, high = sorted(clean.values())
    assert low <= metrics.warping_error(clips) <= high


def test_warping_error_by_region_without_a_coloured_pixel_scores_the_background_alone():
    texture = torch.from_numpy(_smooth_texture(32, 32)).permute(2, 0, 1).mean(0, keepdim=True).expand(3, -1, -1)
    static = (0.2 + 0.6 * texture)[None, :, None].expand(2, -1, 9, -1, -1).clone()  # grey: saturation 0
    regions = metrics.warping_error_by_region(static)
    assert regions["warping_error_object"] == 0.0  # no pair has object pixels
    assert regions["warping_error_background"] == pytest.approx(metrics.warping_error(static), abs=1e-7)


def test_motion_smoothness_prefers_constant_velocity_to_shuffled_frames():
    clip = render_clip(ClipAttributes("triangle", "yellow", "right", "slowly"), seed=5)[None]
    shuffled = clip[:, :, [0, 5, 2, 7, 4, 1, 6, 3, 8]]  # even frames kept, odd frames swapped
    smooth, jerky = metrics.motion_smoothness(clip), metrics.motion_smoothness(shuffled)
    assert smooth > 0.98
    assert smooth > jerky + 0.01


# --- colour -----------------------------------------------------------------------------------


def test_background_saturation_sees_a_background_drawn_to_grey_and_not_the_shape():
    clips = _domain_clips()
    sat = metrics.hsv_saturation(clips)
    dull = (sat <= metrics.OBJECT_SATURATION).unsqueeze(1)
    base = metrics.saturation_background(clips)
    assert base == pytest.approx(float(sat[sat <= metrics.OBJECT_SATURATION].mean()), rel=1e-6) and base > 0
    # the background's pixels mixed half-way to their grey: their saturation halves
    grey = clips.mean(1, keepdim=True).expand_as(clips)
    greyed = torch.where(dull, 0.5 * clips + 0.5 * grey, clips)
    assert metrics.saturation_background(greyed) < 0.75 * base
    # the shape darkened (every channel alike keeps its saturation) or recoloured leaves it as it was
    darker = torch.where(dull, clips, 0.6 * clips)
    assert metrics.saturation_background(darker) == pytest.approx(base, rel=1e-5)
    assert metrics.saturation_background(_constant_video((1.0, 0.0, 0.0))) == 0.0  # no dull pixel at all


def test_background_tint_is_the_mean_background_colours_spread_and_ignores_shimmer():
    clips = _domain_clips()
    sat = metrics.hsv_saturation(clips)
    dull = (sat <= metrics.OBJECT_SATURATION).unsqueeze(1)
    base = metrics.tint_background(clips)
    # by hand for the first clip: its background's mean colour, then |channel - channel mean|
    colour = torch.stack([clips[0, c][dull[0, 0]].mean() for c in range(3)])
    first = metrics.tint_background(clips[:1])
    assert first == pytest.approx(float((colour - colour.mean()).abs().mean()), rel=1e-5) and first > 0
    # the background mixed half-way to its grey: its tint halves
    grey = clips.mean(1, keepdim=True).expand_as(clips)
    greyed = torch.where(dull, 0.5 * clips + 0.5 * grey, clips)
    assert metrics.tint_background(greyed) == pytest.approx(0.5 * base, rel=0.02)
    # zero-mean shimmer per pixel, channel and frame raises per-pixel saturation but not the tint
    g = torch.Generator().manual_seed(0)
    noise = 0.02 * torch.randn(clips.shape, generator=g)
    shimmer = torch.where(dull, clips + noise - noise.mean(2, keepdim=True), clips)
    assert metrics.saturation_background(shimmer) > 1.05 * metrics.saturation_background(clips)
    assert metrics.tint_background(shimmer) == pytest.approx(base, rel=0.05)
    assert metrics.tint_background(_constant_video((1.0, 0.0, 0.0))) == 0.0  # no dull pixel at all


def test_saturation_of_grey_is_zero_and_of_red_is_one():
    grey, red = _constant_video((0.5, 0.5, 0.5)), _constant_video((1.0, 0.0, 0.0))
    assert metrics.saturation_mean(grey) == pytest.approx(0.0, abs=1e-7)
    assert metrics.saturation_p95(grey) == pytest.approx(0.0, abs=1e-7)
    assert metrics.saturation_mean(red) == pytest.approx(1.0, abs=1e-7)
    assert metrics.saturation_p95(red) == pytest.approx(1.0, abs=1e-7)
    assert metrics.saturation_mean(_constant_video((0.0, 0.0, 0.0))) == 0.0  # black: no NaN


def test_saturation_p95_is_a_percentile():
    # 100 pixels whose saturation is 0.00, 0.01, ..., 0.99: nearest-rank p95 is 0.94
    values = torch.arange(100, dtype=torch.float32) / 100
    video = torch.ones(1, 3, 1, 10, 10)
    video[0, 1, 0] = (1 - values).reshape(10, 10)
    video[0, 2, 0] = (1 - values).reshape(10, 10)
    assert metrics.saturation_p95(video) == pytest.approx(0.94, abs=1e-6)


def test_colourfulness_of_grey_is_zero_and_of_red_matches_formula():
    assert metrics.colourfulness(_constant_video((0.4, 0.4, 0.4))) == pytest.approx(0.0, abs=1e-7)
    # uniform pure red: rg = 1, yb = 0.5, no spread -> 0.3 * sqrt(1 + 0.25)
    assert metrics.colourfulness(_constant_video((1.0, 0.0, 0.0))) == pytest.approx(0.3 * math.sqrt(1.25), rel=1e-6)


def test_colour_histogram_distance_bounds():
    red, blue = _constant_video((1.0, 0.0, 0.0)), _constant_video((0.0, 0.0, 1.0))
    assert metrics.colour_histogram_distance(red, red) == pytest.approx(0.0, abs=1e-7)
    # R and B histograms are disjoint, G is identical: (1 + 0 + 1) / 3
    assert metrics.colour_histogram_distance(red, blue) == pytest.approx(2.0 / 3.0, abs=1e-6)


# --- spectral detail --------------------------------------------------------------------------


def test_srop_of_blurred_frames_is_lower_than_of_sharp_frames():
    sharp, _ = make_batch(4, seed=21, cfg=DomainConfig())
    frames = sharp.permute(0, 2, 3, 4, 1).reshape(-1, 32, 32, 3).numpy()
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 1.5) for f in frames])
    blurred = torch.from_numpy(blurred).reshape(4, 9, 32, 32, 3).permute(0, 4, 1, 2, 3)
    assert metrics.srop(blurred) < metrics.srop(sharp)
    assert metrics.high_frequency_share(blurred) < metrics.high_frequency_share(sharp)


def test_high_frequency_share_of_white_noise_matches_bin_count():
    size, frames = 64, 32
    noise = torch.rand(1, 1, frames, size, size, generator=torch.Generator().manual_seed(3)).expand(1, 3, -1, -1, -1)
    # white noise has the same expected power in every non-DC bin, so the expected share is the
    # share of non-DC bins whose radius exceeds half Nyquist (about 1 - pi/16 = 0.80)
    k = np.fft.fftfreq(size) * size
    radius = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2) / (size / 2)
    expected = (radius > 0.5).sum() / (size * size - 1)
    assert abs(expected - (1 - math.pi / 16)) < 0.01
    assert metrics.high_frequency_share(noise) == pytest.approx(expected, abs=0.01)


def test_srop_of_white_noise_and_of_a_flat_frame():
    size = 64
    noise = torch.rand(1, 1, 16, size, size, generator=torch.Generator().manual_seed(4)).expand(1, 3, -1, -1, -1)
    k = np.fft.fftfreq(size) * size
    ring = np.round(np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)).astype(int).ravel()
    counts = np.bincount(ring)
    counts[0] -= 1  # DC removed
    cumulative = np.cumsum(counts) / counts.sum()
    expected = np.argmax(cumulative >= 0.85) / (size / 2)
    assert metrics.srop(noise) == pytest.approx(expected, abs=1.5 / (size / 2))
    assert metrics.srop(_constant_video((0.2, 0.2, 0.2))) == 0.0


# --- diversity --------------------------------------------------------------------------------


def test_diversity_is_zero_for_copies_and_rms_distance_otherwise():
    a = torch.zeros(1, 3, 2, 4, 4)
    b = torch.full((1, 3, 2, 4, 4), 0.5)
    assert metrics.diversity({"same": torch.cat([a, a, a])}) == pytest.approx(0.0, abs=1e-9)
    assert metrics.diversity({"pair": torch.cat([a, b]), "single": a}) == pytest.approx(0.5, abs=1e-9)
    groups = metrics.group_by_prompt(torch.cat([a, b, a]), ["x", "y", "x"])
    assert [g.shape[0] for g in groups.values()] == [2, 1]


# --- Fréchet distance -------------------------------------------------------------------------


def _exact_samples(rng, count, mean, covariance):
    """Samples whose sample mean and (unbiased) covariance are exactly ``mean`` and ``covariance``."""
    raw = rng.standard_normal((count, len(mean)))
    raw -= raw.mean(0)
    whitening = np.linalg.inv(np.linalg.cholesky(raw.T @ raw / (count - 1)))
    white = raw @ whitening.T
    return white @ np.linalg.cholesky(covariance).T + mean


def test_frechet_distance_of_identical_sets_is_zero():
    feats = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    assert metrics.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_matches_diagonal_closed_form():
    rng = np.random.default_rng(1)
    dim = 12
    mean_a, mean_b = rng.normal(size=dim), rng.normal(size=dim)
    var_a, var_b = rng.uniform(0.1, 3.0, dim), rng.uniform(0.1, 3.0, dim)
    feats_a = _exact_samples(rng, 400, mean_a, np.diag(var_a))
    feats_b = _exact_samples(rng, 300, mean_b, np.diag(var_b))
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert metrics.frechet_distance(torch.from_numpy(feats_a), feats_b) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_matches_general_reference():
    rng = np.random.default_rng(2)
    dim = 10
    factor_a, factor_b = rng.normal(size=(dim, dim)), rng.normal(size=(dim, dim))
    cov_a, cov_b = factor_a @ factor_a.T + 0.1 * np.eye(dim), factor_b @ factor_b.T + 0.1 * np.eye(dim)
    mean_a, mean_b = rng.normal(size=dim), rng.normal(size=dim)
    feats_a = _exact_samples(rng, 500, mean_a, cov_a)
    feats_b = _exact_samples(rng, 500, mean_b, cov_b)
    # tr((Sa Sb)^1/2) = sum of square roots of the (real, positive) eigenvalues of Sa Sb
    cross = np.sqrt(np.linalg.eigvals(cov_a @ cov_b).real.clip(0)).sum()
    expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    assert metrics.frechet_distance(feats_a, feats_b) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_with_singular_covariances_is_finite():
    gen = torch.Generator().manual_seed(5)
    low_rank_a = torch.randn(20, 3, generator=gen) @ torch.randn(3, 64, generator=gen)
    low_rank_b = torch.randn(20, 3, generator=gen) @ torch.randn(3, 64, generator=gen)
    value = metrics.frechet_distance(low_rank_a, low_rank_b)
    assert math.isfinite(value) and value > 0
    assert metrics.frechet_distance(low_rank_a, low_rank_a) == pytest.approx(0.0, abs=1e-6 * float(low_rank_a.var() * 64))


# --- the shipped classifier and the combined score --------------------------------------------

# seeds from 5_000_000 on: training used make_batch seeds 0..2399, held-out ones 7e12 and up
needs_weights = pytest.mark.skipif(
    not DEFAULT_WEIGHTS.exists(),
    reason=f"classifier weights {DEFAULT_WEIGHTS} missing; train with `python -m trainer toy classifier`",
)


@needs_weights
@pytest.mark.parametrize("start", ["uniform", "directional"])
def test_shipped_classifier_reads_every_attribute(start):
    classifier = load_classifier()
    videos, attrs = make_batch(64, seed=5_424_242 + (start == "uniform"), cfg=DomainConfig(start=start))
    accuracy = metrics.attribute_accuracy(videos, attrs, classifier)
    for name in ("acc_colour", "acc_shape", "acc_direction", "acc_speed"):
        assert accuracy[name] >= 0.95, (start, accuracy)
    # the prompt strings work as well as ClipAttributes
    assert metrics.attribute_accuracy(videos, [a.prompt for a in attrs], classifier) == accuracy


@needs_weights
def test_classifier_features_shape_and_chance_on_wrong_labels():
    classifier = load_classifier()
    videos, attrs = make_batch(16, seed=5_000_099, cfg=DomainConfig(start="uniform"))
    assert classifier.embed(videos).shape == (16, 128)
    flipped = [ClipAttributes(a.shape, a.colour, {"left": "right", "right": "left", "up": "down", "down": "up"}[a.direction], a.speed) for a in attrs]
    assert metrics.attribute_accuracy(videos, flipped, classifier)["acc_direction"] <= 0.1


@needs_weights
def test_attribute_confusion_counts_what_the_classifier_reads_for_each_prompted_value():
    classifier = load_classifier()
    videos, attrs = make_batch(16, seed=5_000_099, cfg=DomainConfig(start="uniform"))
    flip = {"left": "right", "right": "left", "up": "down", "down": "up"}
    flipped = [ClipAttributes(a.shape, a.colour, flip[a.direction], a.speed) for a in attrs]
    confusion = metrics.attribute_confusion(videos, flipped, classifier)
    accuracy = metrics.attribute_accuracy(videos, flipped, classifier)
    for name in ("shape", "colour", "direction", "speed"):
        matrix = torch.tensor(confusion[name]["matrix"])
        assert matrix.sum() == 16
        assert matrix.diagonal().sum() / 16 == pytest.approx(accuracy[f"acc_{name}"])
        for value, row in zip(confusion[name]["labels"], matrix):  # row sums: clips prompted with that value
            assert int(row.sum()) == sum(getattr(a, name) == value for a in flipped)
    labels = confusion["direction"]["labels"]
    moved = torch.tensor(confusion["direction"]["matrix"])
    # the clips prompted "left" move right: the classifier's reading lands in the "right" column
    assert moved[labels.index("left"), labels.index("right")] == sum(a.direction == "left" for a in flipped) > 0


@needs_weights
def test_score_videos_returns_every_metric():
    classifier = load_classifier()
    videos, attrs = make_batch(8, seed=5_000_007)
    data, _ = make_batch(16, seed=5_000_008)
    attrs = attrs[:7] + attrs[:1]  # one repeated prompt so diversity is reported
    scores = metrics.score_videos(videos, attrs, data, classifier)
    assert set(metrics.METRIC_DIRECTION) == set(scores)
    assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())
    assert scores["dynamic_degree"] == 1.0
    assert scores["prompt_acc"] == min(scores["acc_colour"], scores["acc_shape"])
    assert set(metrics.METRIC_DIRECTION.values()) <= {"higher", "lower", "match"}


# --- report -----------------------------------------------------------------------------------


def test_report_writes_self_contained_html_and_json(tmp_path):
    from trainer.eval.report import write_html_report

    videos, attrs = make_batch(3, seed=1)
    rows = [{"config": "teacher 50 steps", "fd": 1.5, "prompt_acc": 0.9}, {"config": "student 4 steps", "fd": 2.5, "prompt_acc": 0.95}]
    path = write_html_report(
        tmp_path / "report.html", "Toy <eval>", rows, {"teacher": (videos, [a.prompt for a in attrs])},
        notes="a & b", json_path=tmp_path / "report.json",
    )
    text = path.read_text()
    assert "<th>config</th>" in text
    assert re.search(r"<th[^>]*>fd &darr;</th>", text)  # lower is better
    assert re.search(r"<th[^>]*>prompt_acc &uarr;</th>", text)  # higher is better
    assert "<b>1.5</b>" in text and "<b>0.95</b>" in text  # best value per column
    assert '<img class="grid" src="data:image/png;base64,' in text
    assert 'src="data:image/gif;base64,' in text
    assert attrs[0].prompt in text and "Toy &lt;eval&gt;" in text and "a &amp; b" in text
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["rows"] == rows and saved["directions"]["fd"] == "lower"


def random_stride_lora(path, scale: float, step_list: list[int]):
    """A Stride LoRA on the first FFN linear of a dim-128 Wan, ``scale`` 0 making it a no-op."""
    from trainer.lora.export import write_stride_lora

    gen = torch.Generator().manual_seed(1)
    write_stride_lora({"diffusion_model.blocks.0.ffn.0.lora_down.weight": torch.randn(4, 128, generator=gen),
                       "diffusion_model.blocks.0.ffn.0.lora_up.weight": scale * torch.randn(128, 4, generator=gen),
                       "diffusion_model.blocks.0.ffn.0.alpha": torch.tensor(4.0)}, path,
                      {"method": "adv", "student_step_list": step_list, "shift": 3.0, "teacher_fingerprint": "x"})
    return path


def test_eval_scores_a_lora_with_its_own_schedule_and_a_custom_setup(tmp_path):
    from trainer.eval.evaluate import EvalConfig, run_eval
    from trainer.toy.teacher import TeacherArch, build_diffusers_wan, save_wan_file

    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    save_wan_file(build_diffusers_wan(TeacherArch(1, 1, 128)), teacher, dtype=torch.float32)

    def lora(name, scale):
        return random_stride_lora(tmp_path / f"{name}.safetensors", scale, [1000, 800, 500])

    common = dict(teacher=teacher, max_clips=4, batch_size=4, bf16=False, seed=7)
    custom = dict(custom_steps=2, custom_sampler="stride_flow", custom_order=1)

    def rows(**kw):
        result = run_eval(EvalConfig(out=tmp_path / "out", **common, **kw))
        return {row["name"]: row for row in result["rows"]}

    plain = rows(**custom)
    zero = rows(lora=lora("zero", 0.0), setups=["student"], **custom)
    strong = rows(lora=lora("strong", 1.0), setups=["student"], **custom)
    # the LoRA's own setup: its 3-step list, no CFG
    assert zero["student"]["nfe"] == 3 and "custom" in zero and "student" not in plain
    assert zero["custom"]["fd"] == pytest.approx(plain["custom"]["fd"], abs=1e-6)  # a zero LoRA changes nothing
    assert strong["custom"]["fd"] != pytest.approx(plain["custom"]["fd"], abs=1e-6)  # a real one does
    assert (tmp_path / "out" / "report.html").exists()
    with pytest.raises(ValueError, match="needs --lora"):
        run_eval(EvalConfig(out=tmp_path / "out", setups=["student"], **common))


def test_custom_setup_passes_sampler_options_and_refuses_foreign_ones():
    from trainer.eval.evaluate import EvalConfig, custom_setup

    stochastic = custom_setup(EvalConfig(custom_steps=50, custom_sampler="stride_consistency", custom_gamma=0.3))
    assert stochastic.sampler_options == {"gamma": 0.3}
    assert custom_setup(EvalConfig(custom_steps=4, custom_sampler="stride_consistency")).sampler_options == {}
    with pytest.raises(ValueError, match="has no option 'gamma'"):
        custom_setup(EvalConfig(custom_steps=50, custom_sampler="stride_flow", custom_gamma=0.3))
    with pytest.raises(ValueError, match="has no option 'order'"):
        custom_setup(EvalConfig(custom_steps=50, custom_sampler="stride_consistency", custom_order=2))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        custom_setup(EvalConfig(custom_steps=50, custom_sampler="stride_consistency", custom_gamma=1.5))


def test_bench_sampling_adds_student_rows_without_touching_the_teacher_rows(tmp_path):
    from trainer.bench.sampling import ROW_KEYS, run_sampling_bench
    from trainer.toy.teacher import TeacherArch, build_diffusers_wan, save_wan_file

    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    save_wan_file(build_diffusers_wan(TeacherArch(1, 1, 128)), teacher, dtype=torch.float32)
    steps = [1000, 750, 500, 250]
    common = dict(teacher=teacher, batch_size=4, bf16=False, max_clips=4, switch_index=2)
    zero = run_sampling_bench(lora=random_stride_lora(tmp_path / "zero.safetensors", 0.0, steps), **common)
    strong = run_sampling_bench(lora=random_stride_lora(tmp_path / "strong.safetensors", 1.0, steps), **common)
    names = [row["name"] for row in zero["rows"]]
    assert names == ["data", "teacher_50_cfg", "teacher_4", "teacher_8", "student_4", "student_4_interp"]
    assert all(set(ROW_KEYS) <= set(row) for row in zero["rows"])
    by_name = [{r["name"]: r for r in result["rows"]} for result in (zero, strong)]
    assert by_name[0]["student_4"]["nfe"] == 4 and by_name[0]["student_4_interp"]["nfe"] == 4
    for name in ("teacher_50_cfg", "teacher_4", "teacher_8"):  # the LoRA never leaks into teacher rows
        assert by_name[0][name]["fd"] == by_name[1][name]["fd"]
    assert by_name[0]["student_4"]["fd"] != by_name[1]["student_4"]["fd"]  # student rows do use it
    # interpolation changes the samples (the first two steps saw half the frames)
    assert by_name[0]["student_4_interp"]["fd"] != by_name[0]["student_4"]["fd"]
    assert {"speedup_student_4", "speedup_student_4_interp", "interp_cost_ratio"} <= set(zero["ratios"])
    # the cost ratio is the median of 3 timing passes, the first being the scored rows' own seconds
    passes = zero["interp_cost_passes"]
    assert len(passes) == 3 and all(p > 0 for p in passes)
    assert passes[0] == pytest.approx(by_name[0]["student_4_interp"]["seconds"] / by_name[0]["student_4"]["seconds"])
    assert zero["ratios"]["interp_cost_ratio"] == sorted(passes)[1]
    with pytest.raises(ValueError, match="timing_passes"):
        run_sampling_bench(lora=tmp_path / "zero.safetensors", **{**common, "timing_passes": 0})
    assert zero["clips_per_row"] == 4
    with pytest.raises(ValueError, match="switch_index"):
        run_sampling_bench(lora=tmp_path / "zero.safetensors", **{**common, "switch_index": 4})
    # student rows only: the same numbers as in the full run, no teacher rows, no speedups
    alone = run_sampling_bench(lora=tmp_path / "zero.safetensors", student_only=True, **common)
    assert [row["name"] for row in alone["rows"]] == ["data", "student_4", "student_4_interp"]
    for row in alone["rows"][1:]:
        assert row["fd"] == by_name[0][row["name"]]["fd"] and row["prompt_acc"] == by_name[0][row["name"]]["prompt_acc"]
    assert set(alone["ratios"]) == {"interp_cost_ratio"}
    with pytest.raises(ValueError, match="needs a student LoRA"):
        run_sampling_bench(lora=None, student_only=True, **common)
    # another interpolator changes only the interpolated row
    linear = run_sampling_bench(lora=tmp_path / "strong.safetensors", student_only=True, interpolator="linear", **common)
    lin = {r["name"]: r for r in linear["rows"]}
    assert linear["interpolator"] == "linear" and alone["interpolator"] == "learned"
    assert lin["student_4"]["fd"] == by_name[1]["student_4"]["fd"]
    assert lin["student_4_interp"]["fd"] != by_name[1]["student_4_interp"]["fd"]
    with pytest.raises(ValueError, match="unknown interpolator"):
        run_sampling_bench(lora=tmp_path / "zero.safetensors", student_only=True, interpolator="rife", **common)


def test_interleaved_sampling_gives_the_same_videos_as_one_setup_at_a_time():
    """``generate_interleaved`` only changes the order of the chunks (for fair timing), never a sample:
    a deterministic sampler and one that draws noise per chunk give the same videos both ways."""
    from trainer.backends.diffusers_wan import DiffusersWanDenoiser
    from trainer.eval.evaluate import PRESET_SETUPS
    from trainer.eval.generate import SamplingSetup, generate, generate_interleaved
    from trainer.toy.teacher import TeacherArch, build_diffusers_wan

    torch.manual_seed(0)
    denoiser = DiffusersWanDenoiser(build_diffusers_wan(TeacherArch(1, 1, 128)), None)
    consistency = SamplingSetup(name="consistency", steps=2, sampler="stride_consistency")
    setups = [PRESET_SETUPS["teacher_4"], consistency]
    attrs = make_batch(3, seed=5)[1]
    prompts, seeds = [a.prompt for a in attrs], [11, 12, 13]
    together = generate_interleaved(denoiser, setups, prompts, seeds, batch_size=2)
    for setup, (videos, seconds) in zip(setups, together):
        alone, _ = generate(denoiser, setup, prompts, seeds, batch_size=2)
        assert videos.shape == alone.shape == (3, 3, 9, 32, 32) and torch.equal(videos, alone) and seconds > 0
    assert not torch.equal(together[0][0], together[1][0])  # the two setups really differ
    with pytest.raises(ValueError, match="prompts but"):
        generate_interleaved(denoiser, setups, prompts, seeds[:2])


@pytest.mark.parametrize("flags, message", [(["--threads", "-1"], "--threads"), (["--timing-passes", "0"], "timing_passes")])
def test_bench_sampling_cli_refuses_bad_timing_flags(flags, message, capsys):
    from trainer.cli import main

    assert main(["bench", "sampling", "--student-only", "--max-clips", "1", *flags]) == 2
    assert message in capsys.readouterr().err
