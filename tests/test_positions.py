"""Strided temporal positions for interpolated sampling (trainer/sampling/positions.py).

The ComfyUI side is checked against ComfyUI's own Wan in tests/test_comfy_equivalence.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from trainer.sampling.interpolated import sample_stride_interpolated
from trainer.sampling.positions import FRAME_STRIDE_KEY, frame_stride, strided_positions, with_frame_stride
from trainer.toy.teacher import TeacherArch, build_diffusers_wan


@pytest.fixture(scope="module")
def tiny_wan():
    torch.manual_seed(0)
    return build_diffusers_wan(TeacherArch(num_heads=1, num_layers=1, ffn_dim=128)).eval()


def test_strided_rotary_table_is_every_second_row_of_the_full_length_one(tiny_wan):
    full_cos, full_sin = tiny_wan.rope(torch.zeros(1, 16, 9, 16, 16))
    per_frame = full_cos.shape[1] // 9
    with strided_positions(tiny_wan, 2):
        cos, sin = tiny_wan.rope(torch.zeros(1, 16, 5, 16, 16))
    rows = torch.cat([torch.arange(f * per_frame, (f + 1) * per_frame) for f in (0, 2, 4, 6, 8)])
    assert torch.equal(cos, full_cos[:, rows]) and torch.equal(sin, full_sin[:, rows])
    # afterwards, and with stride 1, the model's own positions: frames 0..4
    plain_cos, _ = tiny_wan.rope(torch.zeros(1, 16, 5, 16, 16))
    assert torch.equal(plain_cos, full_cos[:, : 5 * per_frame])
    assert "forward" not in vars(tiny_wan.rope)
    with strided_positions(tiny_wan, 1):
        assert torch.equal(tiny_wan.rope(torch.zeros(1, 16, 5, 16, 16))[0], plain_cos)


def test_positions_change_the_prediction_only_inside_the_block(tiny_wan):
    x = torch.randn(1, 16, 5, 8, 8, generator=torch.Generator().manual_seed(1))
    t, context = torch.tensor([800.0]), torch.randn(1, 4, 4096, generator=torch.Generator().manual_seed(2))

    def predict():
        with torch.no_grad():
            return tiny_wan(hidden_states=x, timestep=t, encoder_hidden_states=context, return_dict=False)[0]

    before = predict()
    with strided_positions(tiny_wan, 2):
        strided = predict()
    assert (strided - before).abs().max() > 1e-4
    assert torch.equal(predict(), before)


def test_unknown_models_and_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="contiguous"):
        with strided_positions(torch.nn.Linear(2, 2), 2):
            pass
    with strided_positions(torch.nn.Linear(2, 2), 1):  # stride 1 needs no adapter
        pass
    with pytest.raises(ValueError, match="temporal_positions"):
        sample_stride_interpolated(lambda x, s, **k: x, torch.zeros(1, 2, 9, 3, 3), torch.tensor([1.0, 0.5, 0.0]),
                                   switch_index=1, temporal_positions="sideways")


def test_with_frame_stride_copies_and_keeps_other_options():
    own_wrapper = object()
    extra = {"seed": 3, "model_options": {"transformer_options": {"patches": {"a": 1},
                                                                  "wrappers": {"diffusion_model": {"user": [own_wrapper]}}}}}
    strided = with_frame_stride(extra, 2)
    options = strided["model_options"]["transformer_options"]
    assert frame_stride(options) == 2 and options["patches"] == {"a": 1} and strided["seed"] == 3
    assert options["wrappers"]["diffusion_model"]["user"] == [own_wrapper] and len(options["wrappers"]["diffusion_model"]) == 2
    # the caller's dicts are untouched
    assert FRAME_STRIDE_KEY not in extra["model_options"]["transformer_options"]
    assert list(extra["model_options"]["transformer_options"]["wrappers"]["diffusion_model"]) == ["user"]
    assert with_frame_stride(extra, 1) is extra and frame_stride(None) == 1


@pytest.mark.parametrize("positions,half_stride", [("strided", 2), ("contiguous", 1)])
def test_only_the_half_length_steps_get_strided_positions(positions, half_stride):
    calls = []

    def model(x, sigma, model_options=None, **_):
        calls.append((x.shape[2], frame_stride((model_options or {}).get("transformer_options"))))
        return torch.zeros_like(x)

    sigmas = torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0])
    sample_stride_interpolated(model, torch.randn(1, 2, 9, 3, 3), sigmas, extra_args={"seed": 1}, switch_index=2,
                               temporal_positions=positions)
    assert calls == [(5, half_stride), (5, half_stride), (9, 1), (9, 1)]



def test_strided_interpolated_sampling_keeps_the_toy_students_motion():
    """On the shipped teacher and student: numbered 0, 1, 2, ... the half-length steps make clips whose
    objects move about half as far per frame once interpolated; numbered 0, 2, 4, ... they keep the
    full-length student's motion."""
    from trainer.bench.sampling import student_setups
    from trainer.eval.generate import EvalSet, generate
    from trainer.eval.metrics import mean_flow_magnitude
    from trainer.backends.diffusers_wan import DiffusersWanDenoiser
    from trainer.lora.export import load_comfy_lora_into_diffusers
    from trainer.toy.student import shipped_student
    from trainer.toy.teacher import load_teacher

    lora = shipped_student()
    if lora is None:
        pytest.skip("no shipped toy student")
    model = load_teacher()
    load_comfy_lora_into_diffusers(model, lora, "student")
    denoiser = DiffusersWanDenoiser(model)
    full, interp = student_setups(lora, switch_index=2)
    contiguous = dataclasses.replace(interp, sampler_options={**interp.sampler_options, "temporal_positions": "contiguous"})
    eval_set = EvalSet(max_clips=24)
    attrs = eval_set.attributes()
    prompts, seeds = [a.prompt for a in attrs], eval_set.clip_seeds()
    motion = {name: mean_flow_magnitude(generate(denoiser, setup, prompts, seeds, batch_size=24)[0])
              for name, setup in (("full", full), ("strided", interp), ("contiguous", contiguous))}
    assert abs(motion["strided"] - motion["full"]) < abs(motion["contiguous"] - motion["full"]), motion
    assert motion["contiguous"] < 0.8 * motion["full"], motion
