"""Schedules: student step lists, token-count shift, published lists (written out here independently)."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.sampling import schedules

# METHODS.md section 5, copied by hand, not imported from the module under test.
SVD_ALIGN_YOUR_STEPS = [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002]
WAN_OPTIMAL_STEPS = [1.0, .997, .995, .993, .991, .989, .987, .985, .98, .975, .973,
                     .968, .96, .946, .927, .902, .864, .776, .539, .208, .001]


def test_student_sigmas_lightx2v():
    sigmas = schedules.student_sigmas([1000, 750, 500, 250], 5)
    assert sigmas.dtype == torch.float32 and sigmas.ndim == 1
    assert torch.allclose(sigmas.double(), torch.tensor([1.0, 0.9375, 0.833333, 0.625, 0.0], dtype=torch.float64),
                          atol=1e-4, rtol=0)
    timesteps = schedules.student_timesteps([1000, 750, 500, 250], 5)
    assert torch.allclose(timesteps, torch.tensor([1000, 937.5, 2500 / 3, 625], dtype=torch.float64))


def test_student_shift_one_is_identity():
    sigmas = schedules.student_sigmas([1000, 757, 522], 1.0)
    assert torch.allclose(sigmas, torch.tensor([1.0, 0.757, 0.522, 0.0]))


def test_student_presets():
    presets = schedules.STUDENT_PRESETS
    assert set(presets) >= {"lightx2v_4step", "self_forcing_4step", "causvid_3step", "adv_4step"}
    assert tuple(presets["lightx2v_4step"].step_list) == (1000, 750, 500, 250)
    assert tuple(presets["self_forcing_4step"].step_list) == (1000, 750, 500, 250)
    assert tuple(presets["causvid_3step"].step_list) == (1000, 757, 522)
    assert "denoising_step_list" in presets["causvid_3step"].source
    assert tuple(presets["adv_4step"].step_list) == (1000, 900, 757, 522)
    for name, preset in presets.items():
        assert preset.name == name and preset.shift == 5
        sigmas = schedules.student_sigmas(preset.step_list, preset.shift)
        assert len(sigmas) == len(preset.step_list) + 1 and sigmas[0] == 1 and sigmas[-1] == 0
        assert (sigmas[1:] < sigmas[:-1]).all()
    # 757 warped with shift 5: 5 * .757 / (1 + 4 * .757) = 3.785 / 4.028
    causvid = schedules.student_sigmas(presets["causvid_3step"].step_list, 5)
    assert causvid[1].item() == pytest.approx(3.785 / 4.028, abs=1e-6)


def test_parse_step_list():
    assert schedules.parse_step_list("1000,750,500,250") == [1000, 750, 500, 250]
    assert schedules.parse_step_list(" 1000, 757 ,522.5 ") == [1000, 757, 522.5]


@pytest.mark.parametrize("text", ["", " , ", "1000,abc", "1000,0", "1200,500", "500,750", "1000,1000,500",
                                  "1000,-5", "nan", "1000,inf"])
def test_parse_step_list_rejects(text):
    with pytest.raises(ValueError):
        schedules.parse_step_list(text)


def test_token_count_shift_by_hand():
    # [1, 16, 5, 16, 16]: 5 * 16 * 16 = 1280 tokens; mu = 0.95 + 256 * 1.1 / 3072
    mu, shift = schedules.token_count_shift([1, 16, 5, 16, 16])
    assert mu == pytest.approx(1.0416666666666667)
    assert shift == pytest.approx(2.8339363076941684)
    # a 4-D image latent has one frame: 32 * 32 = 1024 tokens gives mu = base exactly
    mu, shift = schedules.token_count_shift((2, 4, 32, 32), base_shift=0.5, max_shift=1.15)
    assert mu == pytest.approx(0.5) and shift == pytest.approx(math.exp(0.5))
    with pytest.raises(ValueError):
        schedules.token_count_shift((16, 32, 32))


def test_longer_video_gets_larger_shift():
    shifts = [schedules.token_count_shift((1, 16, frames, 16, 16))[1] for frames in (1, 5, 9, 21)]
    assert all(later > earlier for earlier, later in zip(shifts, shifts[1:]))


def test_token_aware_sigmas():
    sigmas, shift = schedules.token_aware_sigmas((1, 16, 5, 16, 16), 4)
    assert shift == pytest.approx(2.8339363076941684)
    expected = [shift * t / (1 + (shift - 1) * t) for t in (1.0, 0.75, 0.5, 0.25)] + [0.0]
    assert sigmas.dtype == torch.float32
    assert torch.allclose(sigmas.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6)
    longer, longer_shift = schedules.token_aware_sigmas((1, 16, 21, 16, 16), 4)
    assert longer_shift > shift and (longer[1:-1] > sigmas[1:-1]).all()
    with pytest.raises(ValueError):
        schedules.token_aware_sigmas((1, 16, 5, 16, 16), 4, base="cosine")


@pytest.mark.parametrize("name,published", [("ays_svd", SVD_ALIGN_YOUR_STEPS),
                                            ("optimal_steps_wan", WAN_OPTIMAL_STEPS)])
def test_published_at_native_steps(name, published):
    steps = len(published) - 1
    sigmas = schedules.published_sigmas(name, steps)
    assert sigmas.shape == (steps + 1,) and sigmas[-1] == 0
    assert torch.allclose(sigmas[:-1].double(), torch.tensor(published[:-1], dtype=torch.float64), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("name", ["ays_svd", "optimal_steps_wan"])
@pytest.mark.parametrize("steps", [1, 2, 4, 7, 15, 32])
def test_published_interpolated_shape_and_order(name, steps):
    sigmas = schedules.published_sigmas(name, steps)
    assert sigmas.shape == (steps + 1,) and sigmas[-1] == 0
    assert (sigmas[1:] < sigmas[:-1]).all()


def test_loglinear_interp_doubling_hits_the_published_points():
    """On 2N steps every other point is a published value and the ones between are geometric means."""
    doubled = schedules.loglinear_interp(SVD_ALIGN_YOUR_STEPS, 2 * len(SVD_ALIGN_YOUR_STEPS) - 1)
    assert torch.allclose(doubled[::2], torch.tensor(SVD_ALIGN_YOUR_STEPS, dtype=torch.float64))
    between = [math.sqrt(a * b) for a, b in zip(SVD_ALIGN_YOUR_STEPS, SVD_ALIGN_YOUR_STEPS[1:])]
    assert torch.allclose(doubled[1::2], torch.tensor(between, dtype=torch.float64))
    assert torch.allclose(schedules.published_sigmas("ays_svd", 20)[:-1].double(), doubled[:-1].float().double())


def test_published_rejects_unknown_and_bad_steps():
    with pytest.raises(ValueError):
        schedules.published_sigmas("nope", 10)
    with pytest.raises(ValueError):
        schedules.published_sigmas("ays_svd", 0)


def test_edm_to_flow_keeps_snr():
    edm = schedules.published_sigmas("ays_svd", 10).double()
    flow = schedules.edm_to_flow_sigmas(edm)
    assert flow[0] == pytest.approx(700 / 701) and flow[-1] == 0
    assert torch.allclose(flow[:-1] / (1 - flow[:-1]), edm[:-1])  # flow noise/signal ratio = EDM sigma
    assert (flow[1:] < flow[:-1]).all() and (flow <= 1).all()
