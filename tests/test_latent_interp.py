"""Latent interpolation and the interpolated few-step sampler (METHODS.md 1b).

Checked against independent references: frame bookkeeping by construction, motion compensation on
exactly translated latents and on toy-domain clips of moving shapes (against linear blending),
the shipped learned interpolator on held-out toy clips (against both training-free methods), and
the sampler with the closed-form Gaussian denoiser of ``trainer.sampling.analytic``, wrapped only
to record the frame counts it is called with.
"""

from __future__ import annotations

import pytest
import torch

from trainer.interp.latent import LATENT_INTERPOLATORS, interpolate_latent, motion_compensated, odd_frame_mse, slerp
from trainer.interp.model import (DEFAULT_WEIGHTS_PATH, InterpolatorArch, LatentInterpolator, load_interpolator,
                                  parse_blend_channels, resolve_interpolator, save_interpolator,
                                  shipped_interpolator)
from trainer.interp.train import (InterpTrainConfig, constant_channels, load_latent_clips, train_interpolator,
                                  training_triplets)
from trainer.sampling import analytic
from trainer.sampling.interpolated import INTERPOLATED_SAMPLERS, sample_stride_interpolated
from trainer.sampling.samplers import SAMPLERS
from trainer.toy import codec, domain

HELD_OUT_SEED = 31_337_000_123  # not a training seed of the shipped interpolator (seed * 1_000_003 + step)
SIGMAS = torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0], dtype=torch.float64)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine more threads only contend and slow the tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy_latents():
    return codec.encode(domain.make_batch(16, seed=HELD_OUT_SEED)[0])


# --- training-free methods ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", list(LATENT_INTERPOLATORS))
@pytest.mark.parametrize("factor", [2, 3])
def test_frame_count_and_originals_kept(method, factor):
    latent = torch.randn(2, 4, 5, 6, 7, generator=torch.Generator().manual_seed(0))
    out = interpolate_latent(latent, method, factor)
    assert out.shape == (2, 4, 4 * factor + 1, 6, 7)
    assert torch.equal(out[:, :, ::factor], latent)
    assert torch.isfinite(out).all()


def test_linear_is_the_midpoint_and_slerp_keeps_norms():
    generator = torch.Generator().manual_seed(2)
    start, end = torch.randn(3, 8, 4, 4, generator=generator), torch.randn(3, 8, 4, 4, generator=generator)
    middle = interpolate_latent(torch.stack([start, end], dim=2), "linear")[:, :, 1]
    assert torch.allclose(middle, 0.5 * (start + end), atol=1e-6)
    # equal norms per location: slerp stays on the sphere where the linear blend shrinks
    end_same_norm = end / end.norm(dim=1, keepdim=True) * start.norm(dim=1, keepdim=True)
    rotated = slerp(start, end_same_norm, 0.5)
    assert torch.allclose(rotated.norm(dim=1), start.norm(dim=1), atol=1e-5)
    assert (0.5 * (start + end_same_norm)).norm(dim=1).mean() < 0.95 * start.norm(dim=1).mean()
    # parallel vectors and zero vectors fall back to the linear blend, finite
    assert torch.allclose(slerp(start, 2 * start, 0.25), 1.25 * start, atol=1e-5)
    zeros = torch.zeros_like(start)
    assert torch.allclose(slerp(zeros, end, 0.5), 0.5 * end)


def test_motion_compensation_is_exact_for_an_integer_translation():
    texture = torch.nn.functional.interpolate(torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(1)),
                                              size=(24, 24), mode="bicubic", align_corners=False)
    frames = torch.stack([torch.roll(texture, shifts=(-k, 2 * k), dims=(2, 3)) for k in range(3)], dim=2)
    middle = motion_compensated(frames[:, :, 0], frames[:, :, 2], 0.5)
    interior = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    assert (middle - frames[:, :, 1])[interior].abs().max() < 1e-5
    linear_error = (0.5 * (frames[:, :, 0] + frames[:, :, 2]) - frames[:, :, 1])[interior].abs().max()
    assert linear_error > 0.05


def test_motion_compensated_beats_linear_on_toy_latents(toy_latents):
    anchors = toy_latents[:, :, ::2]
    linear = odd_frame_mse(interpolate_latent(anchors, "linear"), toy_latents)
    compensated = odd_frame_mse(interpolate_latent(anchors, "motion_compensated"), toy_latents)
    assert compensated < 0.5 * linear, (compensated, linear)


def test_bad_latents_are_clear_errors():
    with pytest.raises(ValueError, match="1 frame"):
        interpolate_latent(torch.zeros(1, 4, 1, 8, 8))
    with pytest.raises(ValueError, match="5-D video latent.*4-D image latent"):
        interpolate_latent(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="unknown latent interpolation method 'cubic'"):
        interpolate_latent(torch.zeros(1, 4, 3, 8, 8), "cubic")
    with pytest.raises(ValueError, match="factor must be a power of 2"):
        small = LatentInterpolator(InterpolatorArch(latent_channels=4, widths=(8, 16)))
        small.interpolate(torch.zeros(1, 4, 3, 8, 8), 3)
    with pytest.raises(ValueError, match="unknown interpolator 'magic'"):
        resolve_interpolator("magic")


# --- the learned interpolator -------------------------------------------------------------------------

def test_shipped_interpolator_beats_training_free_methods_on_held_out_clips(toy_latents):
    model = load_interpolator()
    anchors = toy_latents[:, :, ::2]
    errors = {name: odd_frame_mse(interpolate_latent(anchors, name), toy_latents)
              for name in ("linear", "motion_compensated")}
    learned_out = model.interpolate(anchors)
    assert learned_out.shape == toy_latents.shape and torch.equal(learned_out[:, :, ::2], anchors)
    learned = odd_frame_mse(learned_out, toy_latents)
    assert learned < 0.8 * errors["motion_compensated"] and learned < 0.4 * errors["linear"], (learned, errors)
    assert DEFAULT_WEIGHTS_PATH.stat().st_size < 2 * 2**20
    meta = model.metadata
    assert int(meta["stride.training_steps"]) > 0 and "learned" in meta["stride.heldout_odd_frame_mse"]


def test_shipped_interpolator_stays_good_when_the_codec_padding_is_only_approximate(toy_latents):
    """Generated latents never reproduce the toy codec's coordinate channels exactly (the sampler's x0 at
    the switch differs from them by 1-10 per element), so those channels are not trivial pair by pair.
    The interpolator never saw them vary in training and blends them always (``blend_channels``, the
    codec's padding channels): a 1e-3 perturbation must not cost it its lead over the linear blend (it
    did, 0.080 against 0.093, when the network was fed the perturbed ramps)."""
    model = load_interpolator()
    assert model.blend_channels == tuple(range(codec.DATA_CHANNELS, toy_latents.shape[1]))
    perturbed = toy_latents + 1e-3 * torch.randn(toy_latents.shape, generator=torch.Generator().manual_seed(5))
    data = slice(0, codec.DATA_CHANNELS)
    anchors = perturbed[:, :, ::2]
    learned = odd_frame_mse(model.interpolate(anchors)[:, data], toy_latents[:, data])
    linear = odd_frame_mse(interpolate_latent(anchors, "linear")[:, data], toy_latents[:, data])
    assert learned < 0.4 * linear, (learned, linear)


def test_blend_channels_are_blended_and_hidden_from_the_network(tmp_path):
    """With blend_channels set, those channels come out as the exact blend and the other channels' output
    does not depend on them; the list survives saving, bad metadata is refused, and training records
    the channels that are trivial in all its data (the codec's padding on the toy domain, none on noise)."""
    arch = InterpolatorArch(latent_channels=4, widths=(8, 16))
    torch.manual_seed(0)
    model = LatentInterpolator(arch)
    torch.nn.init.normal_(model.head[-1].weight, std=0.1)
    model.blend_channels = (2, 3)
    gen = torch.Generator().manual_seed(1)
    start, end = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    other_end = end.clone()
    other_end[:, 2:] += torch.randn(2, 2, 8, 8, generator=gen)
    with torch.no_grad():
        out, other = model(start, end), model(start, other_end)
    assert torch.equal(out[:, 2:], 0.5 * (start + end)[:, 2:])
    assert torch.equal(out[:, :2], other[:, :2])  # the blended channels never reach the network
    assert not torch.allclose(out[:, :2], 0.5 * (start + end)[:, :2])  # the others are the network's
    loaded = load_interpolator(save_interpolator(model, tmp_path / "i.safetensors", dtype=torch.float32))
    assert loaded.blend_channels == (2, 3)
    with pytest.raises(ValueError, match="blend_channels"):
        parse_blend_channels("[7]", arch, "file")
    with pytest.raises(ValueError, match="blend_channels"):
        parse_blend_channels("not json", arch, "file")
    toy = codec.encode(domain.make_batch(4, seed=HELD_OUT_SEED + 1)[0])
    assert constant_channels(toy) == tuple(range(codec.DATA_CHANNELS, toy.shape[1]))
    assert constant_channels(torch.randn(2, 4, 5, 6, 6, generator=gen)) == ()


def test_untrained_interpolator_is_linear_and_save_load_round_trips(tmp_path):
    arch = InterpolatorArch(latent_channels=4, widths=(8, 16, 32))
    model = LatentInterpolator(arch)
    # 10 x 6 is not a multiple of 4: padded inside the network, cropped back
    latent = torch.randn(1, 4, 3, 10, 6, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(model.interpolate(latent), interpolate_latent(latent, "linear"), atol=1e-6)
    torch.nn.init.normal_(model.head[-1].weight, std=0.1)
    path = save_interpolator(model, tmp_path / "interp.safetensors",
                             {"stride.training_steps": "7", "stride.note": {"a": 1}}, dtype=torch.float32)
    loaded = load_interpolator(path)
    assert loaded.arch == arch and loaded.metadata["stride.training_steps"] == "7"
    assert torch.equal(loaded.interpolate(latent), model.interpolate(latent))
    with pytest.raises(FileNotFoundError):
        load_interpolator(tmp_path / "missing.safetensors")


def test_training_resumes_exactly_and_exports(tmp_path):
    common = dict(batch_size=2, widths=(8, 16), holdout_clips=2, threads=0, progress=False, checkpoint_every=2,
                  eval_every=1000)
    straight = train_interpolator(InterpTrainConfig(steps=4, state_dir=tmp_path / "straight", **common))
    train_interpolator(InterpTrainConfig(steps=2, state_dir=tmp_path / "resumed", **common))
    resumed = train_interpolator(InterpTrainConfig(steps=4, state_dir=tmp_path / "resumed", **common))
    state_a = torch.load(straight["state_path"], weights_only=False)
    state_b = torch.load(resumed["state_path"], weights_only=False)
    assert state_a["step"] == state_b["step"] == 4
    for name, value in state_a["model"].items():
        assert torch.equal(value, state_b["model"][name]), name
    exported = load_interpolator(resumed["export_path"])
    assert exported.metadata["stride.training_steps"] == "4"
    assert exported.blend_channels == tuple(range(codec.DATA_CHANNELS, 16))  # the toy codec's padding
    assert set(resumed["heldout_odd_frame_mse"]) == {"linear", "slerp", "motion_compensated", "learned"}


def test_teacher_latent_files_and_training_triplets(tmp_path):
    from safetensors.torch import save_file

    # an even frame count: each phase drops its last frame
    clips = torch.randn(5, 4, 6, 8, 8, generator=torch.Generator().manual_seed(4))
    save_file({"latents": clips}, str(tmp_path / "a.safetensors"))
    torch.save(clips[:2].clone(), tmp_path / "b.pt")
    assert load_latent_clips(tmp_path).shape == (7, 4, 6, 8, 8)
    start, end, middle = training_triplets(clips, both_phases=True)
    # phase 0 uses frames 0..4 (pairs 0-2, 2-4), phase 1 frames 1..5 (pairs 1-3, 3-5)
    assert start.shape[0] == 5 * 2 + 5 * 2
    assert torch.equal(start[0], clips[0, :, 0]) and torch.equal(end[0], clips[0, :, 2])
    assert torch.equal(middle[0], clips[0, :, 1])
    assert torch.equal(middle[10], clips[0, :, 2]) and torch.equal(end[11], clips[0, :, 5])
    with pytest.raises(ValueError, match="no 5-D latent tensors"):
        torch.save(torch.zeros(3, 3), tmp_path / "c.pt")
        load_latent_clips(tmp_path / "c.pt")


# --- the interpolated sampler ---------------------------------------------------------------------------

def _recording_denoiser(data: analytic.GaussianData):
    """The exact denoiser of the data at every frame count it is called with; records those counts.

    Element-wise independent Gaussian data: every second frame of it is again such data, so the
    exact denoiser of ``x[:, :, ::2]`` uses every second frame's mean and deviation.
    """
    full_frames = data.mean.shape[2]
    every_second_frame = analytic.GaussianData(data.mean[:, :, ::2], data.std[:, :, ::2])
    by_frames = {full_frames: analytic.flow_denoiser(data),
                 (full_frames + 1) // 2: analytic.flow_denoiser(every_second_frame)}

    def model(x, sigma, **extra_args):
        model.frames.append(x.shape[2])
        model.elements += x.numel()
        return by_frames[x.shape[2]](x, sigma, **extra_args)

    model.frames, model.elements = [], 0
    return model


@pytest.mark.parametrize("base_sampler", ["stride_consistency", "stride_flow"])
def test_switch_index_zero_is_the_base_sampler(base_sampler):
    data = analytic.make_gaussian_data((1, 2, 9, 3, 3), temporal=True)
    x = analytic.flow_initial_noise((1, 2, 9, 3, 3))
    base = SAMPLERS[base_sampler](analytic.flow_denoiser(data), x, SIGMAS, extra_args={"seed": 5},
                                  **({"gamma": 0.7} if base_sampler == "stride_consistency" else {}))
    ours = sample_stride_interpolated(analytic.flow_denoiser(data), x, SIGMAS, extra_args={"seed": 5}, switch_index=0,
                                      base_sampler=base_sampler, gamma=0.7)
    assert torch.equal(ours, base)


@pytest.mark.parametrize("switch_index", [1, 2, 4])
@pytest.mark.parametrize("interpolator", ["linear", "motion_compensated"])
def test_first_steps_run_at_half_length(switch_index, interpolator):
    shape = (1, 2, 9, 3, 3)
    data = analytic.make_gaussian_data(shape, temporal=True)
    model = _recording_denoiser(data)
    reported = []
    out = sample_stride_interpolated(model, analytic.flow_initial_noise(shape), SIGMAS, switch_index=switch_index,
                                     interpolator=interpolator, seed=3,
                                     callback=lambda info: reported.append((info["i"], info["denoised"].shape[2])))
    assert out.shape == shape and torch.isfinite(out).all()
    assert model.frames == [5] * switch_index + [9] * (4 - switch_index)
    # every step reported once, in order; the last half-length x0 prediction is reported interpolated
    assert reported == [(i, 5 if i < switch_index - 1 else 9) for i in range(4)]
    full = _recording_denoiser(data)
    SAMPLERS["stride_consistency"](full, analytic.flow_initial_noise(shape), SIGMAS, seed=3)
    assert model.elements < full.elements


PARAMETERISATIONS = {
    # name: (denoiser factory, noise_scaling, sigmas, initial latent of the data's marginal at sigmas[0])
    "flow": (analytic.flow_denoiser, analytic.flow_noise_scaling, SIGMAS,
             lambda data, shape: analytic.flow_initial_noise(shape, seed=11)),
    "eps": (analytic.eps_denoiser, analytic.eps_noise_scaling, torch.tensor([14.6, 3.0, 0.8, 0.0], dtype=torch.float64),
            lambda data, shape: analytic.eps_initial_latent(data, 14.6, shape, seed=11)),
}


@pytest.mark.parametrize("parameterisation", list(PARAMETERISATIONS))
def test_interpolated_samples_follow_the_data(parameterisation):
    """Many samples at once: the full-length steps pull the interpolated frames back to the data.

    At the first sigma the x0 prediction is (nearly) the data mean; its linear interpolation is
    wrong on the odd frames (the analytic mean is not linear in time). Re-noised with the model's
    own ``noise_scaling`` (the flow rule would scale an EPS latent by ``1 - sigma`` < 0), the
    remaining steps must shrink that error, and the spread of the samples must be the base
    sampler's.
    """
    make_denoiser, noise_scaling, sigmas, initial = PARAMETERISATIONS[parameterisation]
    data = analytic.make_gaussian_data((1, 2, 9, 3, 3), temporal=True)
    half = analytic.GaussianData(data.mean[:, :, ::2], data.std[:, :, ::2])
    by_frames = {9: make_denoiser(data), 5: make_denoiser(half)}
    model = lambda x, sigma, **kw: by_frames[x.shape[2]](x, sigma)  # noqa: E731
    x = initial(data, (4096, 2, 9, 3, 3))
    base = sample_stride_interpolated(model, x, sigmas, switch_index=0, seed=2, noise_scaling=noise_scaling)
    out = sample_stride_interpolated(model, x, sigmas, switch_index=1, seed=2, noise_scaling=noise_scaling)
    assert torch.isfinite(out).all()
    switch_error = (interpolate_latent(data.mean[:, :, ::2], "linear") - data.mean)[:, :, 1::2].abs().max()
    final_error = (out.mean(0, keepdim=True) - data.mean)[:, :, 1::2].abs().max()
    assert switch_error > 0.5 and final_error < 0.3 * switch_error, (float(switch_error), float(final_error))
    assert (out.mean(0, keepdim=True) - data.mean)[:, :, ::2].abs().max() < 0.1
    assert (out.std(0) / base.std(0)).sub(1).abs().max() < 0.1


def test_learned_interpolator_runs_inside_the_sampler_on_toy_shapes():
    x = torch.randn(1, 16, 5, 16, 16, generator=torch.Generator().manual_seed(0))
    toy_clip = codec.encode(domain.make_batch(1, seed=HELD_OUT_SEED)[0])[:, :, :5]
    model = lambda x, sigma, **kw: toy_clip[:, :, :: (5 - 1) // (x.shape[2] - 1)]  # noqa: E731  (a perfect denoiser)
    out = sample_stride_interpolated(model, x, SIGMAS.float(), switch_index=4, interpolator="learned", seed=0)
    assert out.shape == x.shape and torch.equal(out[:, :, ::2], toy_clip[:, :, ::2])
    linear = interpolate_latent(toy_clip[:, :, ::2], "linear")
    assert odd_frame_mse(out, toy_clip) < 0.5 * odd_frame_mse(linear, toy_clip)
    # the sampler hands its interpolator_dtype on: bf16 changes the rebuilt frames a little, not the kept ones
    fast = sample_stride_interpolated(model, x, SIGMAS.float(), switch_index=4, interpolator="learned", seed=0,
                                      interpolator_dtype="bfloat16")
    assert torch.equal(fast[:, :, ::2], out[:, :, ::2]) and not torch.equal(fast, out)
    assert odd_frame_mse(fast, out) < 0.01 * odd_frame_mse(linear, toy_clip)


def test_learned_weights_are_read_once_and_run_in_the_asked_dtype(toy_latents):
    """``"learned"`` resolves to one shared network per dtype (no file read per sampling call); bf16
    compute stays within 1% of float32 on held-out clips and hands back the latent's dtype; a loaded
    interpolator is cast as a copy, never in place; training-free methods ignore the dtype."""
    first, again = resolve_interpolator("learned"), resolve_interpolator("learned")
    assert first.__self__ is again.__self__ is shipped_interpolator()
    fast = resolve_interpolator("learned", "bfloat16")
    assert fast.__self__ is shipped_interpolator("bfloat16") and next(fast.__self__.parameters()).dtype == torch.bfloat16
    anchors = toy_latents[:, :, ::2]
    exact, approx = first(anchors), fast(anchors)
    assert approx.dtype == torch.float32 and approx.shape == exact.shape
    odd_exact, odd_approx = exact[:, :, 1::2], approx[:, :, 1::2]
    difference = (odd_approx - odd_exact).abs().mean() / odd_exact.abs().mean()
    assert 0 < difference < 0.01, float(difference)

    own = load_interpolator()
    cast = resolve_interpolator(own, "bfloat16")
    assert cast.__self__ is not own and next(own.parameters()).dtype == torch.float32
    assert torch.equal(resolve_interpolator("linear", "bfloat16")(anchors), interpolate_latent(anchors, "linear"))
    with pytest.raises(ValueError, match="compute dtype"):
        resolve_interpolator("learned", "int8")
    with pytest.raises(ValueError, match="compute dtype"):  # refused before any step, even with switch 0
        sample_stride_interpolated(lambda x, s, **kw: x, torch.zeros(1, 16, 5, 4, 4), SIGMAS.float(), switch_index=0,
                                   interpolator_dtype="half-ish")


def test_sampler_rejects_frame_counts_it_cannot_halve():
    model = analytic.flow_denoiser(analytic.make_gaussian_data((1, 2, 8, 3, 3)))
    with pytest.raises(ValueError, match="odd number of latent frames >= 3.*got 8"):
        sample_stride_interpolated(model, torch.zeros(1, 2, 8, 3, 3), SIGMAS)
    with pytest.raises(ValueError, match="odd number of latent frames >= 3.*got 1"):
        sample_stride_interpolated(model, torch.zeros(1, 2, 1, 3, 3), SIGMAS)
    with pytest.raises(ValueError, match="video latent"):
        sample_stride_interpolated(model, torch.zeros(1, 2, 3, 3), SIGMAS)
    with pytest.raises(ValueError, match="switch_index must be an integer in \\[0, 4\\]"):
        sample_stride_interpolated(model, torch.zeros(1, 2, 9, 3, 3), SIGMAS, switch_index=5)
    with pytest.raises(ValueError, match="masked"):
        sample_stride_interpolated(model, torch.zeros(1, 2, 9, 3, 3), SIGMAS,
                                   extra_args={"denoise_mask": torch.ones(1)})
    assert INTERPOLATED_SAMPLERS["stride_interpolated"] is sample_stride_interpolated


# --- inside a real ComfyUI (COMFYUI_PATH; skipped otherwise) -------------------------------------------

INTERP_NODES = {"StrideLatentInterpolate", "StrideLatentInterpolatorLoader", "StrideInterpolatedSampler"}


@pytest.mark.comfyui
def test_nodes_sample_and_interpolate_in_comfyui(comfy_server):
    from safetensors.torch import load_file

    from comfy_harness import execution_error
    from trainer.toy.teacher import TeacherArch, build_diffusers_wan, save_wan_file

    missing = INTERP_NODES - set(comfy_server.get("/object_info"))
    assert not missing, f"not registered (nodes/__init__.py must list interp_nodes.NODES): {missing}"
    torch.manual_seed(0)
    unet = comfy_server.base_dir / "models" / "diffusion_models" / "stride_tiny_wan_interp.safetensors"
    save_wan_file(build_diffusers_wan(TeacherArch(num_heads=1, num_layers=2, ffn_dim=256)), unet, dtype=torch.float32)
    graph = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet.name, "weight_dtype": "default"}},
        "pos": {"class_type": "StrideToyTextEncode", "inputs": {"prompt": "a red square moving left quickly"}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["unet", 0], "positive": ["pos", 0],
                                                         "negative": ["pos", 0], "cfg": 1.0}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
        "latent": {"class_type": "StrideToyEmptyLatent", "inputs": {"batch_size": 1}},
        "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["unet", 0], "scheduler": "simple", "steps": 4,
                                                              "denoise": 1.0}},
        "interp": {"class_type": "StrideLatentInterpolatorLoader",
                   "inputs": {"interpolator_name": f"(shipped) {DEFAULT_WEIGHTS_PATH.name}"}},
    }
    samplers = {
        "linear": {"switch_index": 1, "method": "linear", "base_sampler": "stride_consistency"},
        "motion": {"switch_index": 2, "method": "motion_compensated", "base_sampler": "stride_flow"},
        "learned": {"switch_index": 1, "method": "linear", "base_sampler": "stride_consistency",
                    "interpolator": ["interp", 0]},
    }
    for name, inputs in samplers.items():
        graph[f"sampler_{name}"] = {"class_type": "StrideInterpolatedSampler",
                                    "inputs": {"gamma": 1.0, "noise_seed": 3, **inputs}}
        graph[f"run_{name}"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": [f"sampler_{name}", 0],
            "sigmas": ["sigmas", 0], "latent_image": ["latent", 0]}}
        graph[f"save_{name}"] = {"class_type": "SaveLatent", "inputs": {"samples": [f"run_{name}", 0],
                                                                        "filename_prefix": f"stride_interp/{name}"}}
    graph["double"] = {"class_type": "StrideLatentInterpolate", "inputs": {
        "samples": ["run_learned", 0], "method": "learned", "factor": 2, "interpolator": ["interp", 0]}}
    graph["save_double"] = {"class_type": "SaveLatent", "inputs": {"samples": ["double", 0],
                                                                   "filename_prefix": "stride_interp/double"}}
    entry = comfy_server.run(graph, timeout=600)
    assert execution_error(entry) is None, f"{execution_error(entry)}\n{comfy_server.log()[-3000:]}"
    for name, frames in [*((n, 9) for n in samplers), ("double", 17)]:
        files = sorted((comfy_server.base_dir / "output" / "stride_interp").glob(f"{name}_*.latent"))
        assert files, f"no latent saved for {name}"
        latent = load_file(str(files[-1]))["latent_tensor"]
        assert latent.shape == (1, 16, frames, 16, 16) and torch.isfinite(latent).all(), name

    # an even latent frame count cannot be halved: a clear error, and the server keeps running
    graph["latent"] = {"class_type": "EmptyHunyuanLatentVideo",
                       "inputs": {"width": 128, "height": 128, "length": 29, "batch_size": 1}}  # 8 latent frames
    for key in [k for k in graph if k.startswith(("sampler_motion", "run_motion", "save_motion", "sampler_learned",
                                                   "run_learned", "save_learned", "double", "save_double"))]:
        del graph[key]
    error = execution_error(comfy_server.run(graph, timeout=300))
    assert error is not None and "odd number of latent frames" in error["exception_message"], error
    assert comfy_server.alive()


def test_static_and_flat_channels_are_blended_and_do_not_bias_motion():
    """A steep static ramp (the toy codec's coordinate channels) and a constant channel sit next to a
    moving texture: motion compensation still recovers the translation, and the ramp and the
    constant come out exactly as the blend (not shifted)."""
    gen = torch.Generator().manual_seed(3)
    texture = torch.nn.functional.interpolate(torch.randn(1, 2, 12, 12, generator=gen), size=(24, 24),
                                              mode="bicubic", align_corners=False)
    moving = torch.stack([torch.roll(texture, shifts=(0, 2 * k), dims=(2, 3)) for k in range(3)], dim=2)
    ramp = 16 * torch.linspace(-1, 1, 24).expand(1, 1, 3, 24, 24)
    constant = torch.stack([torch.full((1, 1, 24, 24), 5.0 * k) for k in range(3)], dim=2)
    frames = torch.cat([moving, ramp, constant], dim=1)
    middle = motion_compensated(frames[:, :, 0], frames[:, :, 2], 0.5)
    interior = (slice(None), slice(None), slice(6, -6), slice(6, -6))
    assert (middle - frames[:, :, 1])[interior].abs().max() < 1e-4
    assert torch.equal(middle[:, 2], frames[:, 2, 1]) and torch.allclose(middle[:, 3], frames[:, 3, 1])
    from trainer.interp.latent import trivial_channels

    assert trivial_channels(frames[:, :, 0], frames[:, :, 2]).flatten().tolist() == [False, False, True, True]
