"""Few-step samplers against the closed-form Gaussian diffusion of trainer/sampling/analytic.py.

Convergence design: schedules are uniform in sigma from sigma_max down to a small sigma_min,
then one final step to 0. The log-SNR step of DPM-Solver++ is infinite on that last step (and, for
flow, on the first one from sigma 1), so both samplers take it as a plain x0 prediction. The
error is therefore measured against the exact denoiser applied to the EXACT probability-flow
solution at sigma_min: ``D(x_exact(sigma_min))``. That isolates the discretisation error of the
N uniform steps (the denoiser is smooth there), whereas comparing against the exact clean sample
would add an N-independent floor of order sigma_min^2 that flattens the measured slope.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainer.sampling import analytic
from trainer.sampling.samplers import (
    SAMPLERS,
    noise_coefficients,
    sample_stride_consistency,
    sample_stride_flow,
    validate_sigmas,
)

F64 = torch.float64


def uniform_then_zero(sigma_max: float, sigma_min: float, steps: int) -> torch.Tensor:
    return torch.cat([torch.linspace(sigma_max, sigma_min, steps + 1, dtype=F64), torch.zeros(1, dtype=F64)])


def setup(parameterisation: str, sigma_max: float):
    data = analytic.make_gaussian_data()
    if parameterisation == "flow":
        return (data, analytic.flow_denoiser(data), analytic.flow_noise_scaling,
                analytic.flow_initial_noise(), analytic.flow_transport)
    return (data, analytic.eps_denoiser(data), analytic.eps_noise_scaling,
            analytic.eps_initial_latent(data, sigma_max), analytic.eps_transport)


# flow starts at sigma 1 (pure noise, where a = 0 and lambda = -inf) as real flow sampling does;
# eps uses a variance-exploding range.
CASES = {"flow": (1.0, 0.05), "eps": (3.0, 0.1)}


def discretisation_error(parameterisation: str, order: int, steps: int) -> float:
    sigma_max, sigma_min = CASES[parameterisation]
    data, model, noise_scaling, x, transport = setup(parameterisation, sigma_max)
    result = sample_stride_flow(model, x, uniform_then_zero(sigma_max, sigma_min, steps), order=order,
                                noise_scaling=noise_scaling)
    exact_at_min = transport(data, x, sigma_max, sigma_min)
    target = model(exact_at_min, torch.tensor([sigma_min], dtype=F64))
    return analytic.rms(result - target)


@pytest.mark.parametrize("parameterisation", ["flow", "eps"])
@pytest.mark.parametrize("order,min_slope,max_slope", [(1, 0.8, 1.3), (2, 1.6, 2.6)])
def test_stride_flow_converges_with_its_order(parameterisation, order, min_slope, max_slope):
    errors = [discretisation_error(parameterisation, order, steps) for steps in (16, 32, 64, 128)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    slope = math.log2(errors[-2] / errors[-1])
    assert min_slope < slope < max_slope, (errors, slope)


def test_stride_flow_reaches_the_exact_clean_sample():
    data, model, noise_scaling, x, transport = setup("flow", 1.0)
    result = sample_stride_flow(model, x, uniform_then_zero(1.0, 0.02, 100), order=2, noise_scaling=noise_scaling)
    exact = transport(data, x, 1.0, 0.0)
    assert analytic.rms(result - exact) < 0.01 * analytic.rms(exact)


def test_order_one_is_exact_euler_for_flow():
    data, model, _, x, _ = setup("flow", 1.0)
    sigmas = torch.tensor([1.0, 0.7, 0.4, 0.1], dtype=F64)
    expected = x.clone()
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        velocity = (expected - model(expected, sigma.reshape(1))) / sigma
        expected = expected + (sigma_next - sigma) * velocity
    # default noise_scaling is the flow convention
    assert torch.allclose(sample_stride_flow(model, x, sigmas, order=1), expected, rtol=0, atol=1e-12)


def reference_dpmpp_2m(model, x, sigmas):
    """k-diffusion's sample_dpmpp_2m (eps / variance-exploding), written out independently."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].reshape(1))
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised
        else:
            r = (t - (-sigmas[i - 1].log())) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def test_order_two_is_dpmpp_2m_for_eps():
    _, model, noise_scaling, x, _ = setup("eps", 14.6)
    sigmas = torch.tensor([14.6, 6.0, 2.5, 0.9, 0.3, 0.0], dtype=F64)
    ours = sample_stride_flow(model, x, sigmas, order=2, noise_scaling=noise_scaling)
    assert torch.allclose(ours, reference_dpmpp_2m(model, x, sigmas), rtol=0, atol=1e-10)


def test_consistency_one_step_is_the_x0_prediction():
    _, model, _, x, _ = setup("flow", 1.0)
    sigmas = torch.tensor([1.0, 0.0], dtype=F64)
    expected = model(x, torch.ones(1, dtype=F64))
    for gamma in (0.0, 0.5, 1.0):
        assert torch.equal(sample_stride_consistency(model, x, sigmas, gamma=gamma, seed=3), expected)
    assert torch.equal(sample_stride_flow(model, x, sigmas, order=2), expected)


@pytest.mark.parametrize("parameterisation", ["flow", "eps"])
def test_consistency_gamma_zero_is_ddim(parameterisation):
    sigma_max = CASES[parameterisation][0]
    _, model, noise_scaling, x, _ = setup(parameterisation, sigma_max)
    sigmas = uniform_then_zero(sigma_max, 0.1, 4)
    deterministic = sample_stride_consistency(model, x, sigmas, gamma=0.0, seed=5, noise_scaling=noise_scaling)
    ddim = sample_stride_flow(model, x, sigmas, order=1, noise_scaling=noise_scaling)
    assert torch.allclose(deterministic, ddim, rtol=0, atol=1e-12)


def test_consistency_seeds():
    _, model, _, x, _ = setup("flow", 1.0)
    sigmas = torch.tensor([1.0, 0.9375, 0.8333, 0.625, 0.0], dtype=F64)
    for gamma in (0.3, 1.0):
        first = sample_stride_consistency(model, x, sigmas, gamma=gamma, seed=11)
        again = sample_stride_consistency(model, x, sigmas, gamma=gamma, seed=11)
        other = sample_stride_consistency(model, x, sigmas, gamma=gamma, seed=12)
        assert torch.equal(first, again)
        assert not torch.allclose(first, other)
    # ComfyUI passes the noise seed in extra_args; an explicit seed option wins over it.
    from_extra = sample_stride_consistency(model, x, sigmas, extra_args={"seed": 11})
    assert torch.equal(from_extra, sample_stride_consistency(model, x, sigmas, seed=11))
    overridden = sample_stride_consistency(model, x, sigmas, extra_args={"seed": 11}, seed=12)
    assert torch.equal(overridden, sample_stride_consistency(model, x, sigmas, seed=12))


def test_consistency_fresh_noise_matches_lcm_renoising():
    """gamma 1 re-noises the prediction with fresh noise exactly like ComfyUI's lcm sampler."""
    _, model, noise_scaling, x, _ = setup("eps", 3.0)
    sigmas = torch.tensor([3.0, 1.0, 0.0], dtype=F64)
    generator = torch.Generator().manual_seed(4)
    denoised = model(x, sigmas[:1])
    renoised = denoised + sigmas[1] * torch.randn(x.shape, dtype=F64, generator=generator)
    expected = model(renoised, sigmas[1:2])
    got = sample_stride_consistency(model, x, sigmas, gamma=1.0, seed=4, noise_scaling=noise_scaling)
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)


def test_consistency_partial_gamma_mixes_predicted_and_fresh_noise():
    """gamma 0.36 re-noises flow-style with 0.8 * implied noise + 0.6 * fresh noise."""
    _, model, _, x, _ = setup("flow", 1.0)
    sigmas = torch.tensor([1.0, 0.6, 0.0], dtype=F64)
    denoised = model(x, sigmas[:1])
    implied_noise = x  # at sigma 1 the flow latent is all noise
    fresh = torch.randn(x.shape, dtype=F64, generator=torch.Generator().manual_seed(9))
    renoised = 0.4 * denoised + 0.6 * (0.8 * implied_noise + 0.6 * fresh)
    expected = model(renoised, sigmas[1:2])
    got = sample_stride_consistency(model, x, sigmas, gamma=0.36, seed=9)
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)


def test_split_schedule_returns_noisy_latent_at_last_sigma():
    data, model, _, x, transport = setup("flow", 1.0)
    result = sample_stride_flow(model, x, torch.linspace(1.0, 0.5, 200, dtype=F64), order=2)
    assert torch.allclose(result, transport(data, x, 1.0, 0.5), atol=1e-4)


def test_callback_and_extra_args():
    data = analytic.make_gaussian_data()
    seen_kwargs = []
    inner = analytic.flow_denoiser(data)

    def model(x, sigma, **extra_args):
        seen_kwargs.append(extra_args)
        return inner(x, sigma)

    x = analytic.flow_initial_noise()
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.0], dtype=F64)
    for name, sampler in SAMPLERS.items():
        events, seen_kwargs[:] = [], []
        sampler(model, x, sigmas, extra_args={"model_options": {}, "seed": 7}, callback=events.append)
        assert [event["i"] for event in events] == [0, 1, 2], name
        for event in events:
            assert set(event) == {"x", "i", "sigma", "sigma_hat", "denoised"}
            assert float(event["sigma"]) == float(sigmas[event["i"]]) == float(event["sigma_hat"])
            assert event["denoised"].shape == x.shape
        assert seen_kwargs == [{"model_options": {}, "seed": 7}] * 3


def test_noise_coefficients_probe_in_place_noise_scaling():
    """ComfyUI's EPS noise_scaling adds the latent in place; the probes must survive that."""

    def eps_in_place(sigma, noise, latent_image, max_denoise=False):
        noise = noise * sigma.reshape(-1, *([1] * (noise.ndim - 1)))
        noise += latent_image
        return noise

    like = torch.zeros(2, 3, 4, 5, 6, dtype=F64)
    a, b = noise_coefficients(eps_in_place, torch.tensor([0.7, 0.7], dtype=F64), like)
    assert a.shape == (2, 1, 1, 1, 1) and torch.all(a == 1) and torch.allclose(b, torch.tensor(0.7, dtype=F64))


@pytest.mark.parametrize("bad", [
    torch.tensor([1.0]),
    torch.tensor([[1.0, 0.0]]),
    torch.tensor([0.5, 0.7, 0.0]),
    torch.tensor([1.0, 0.5, 0.5, 0.0]),
    torch.tensor([1.0, -0.1]),
])
def test_invalid_sigmas_raise(bad):
    with pytest.raises(ValueError):
        validate_sigmas(bad)
    model = analytic.flow_denoiser(analytic.make_gaussian_data())
    with pytest.raises(ValueError):
        sample_stride_flow(model, analytic.flow_initial_noise(), bad)
    with pytest.raises(ValueError):
        sample_stride_consistency(model, analytic.flow_initial_noise(), bad)


def test_invalid_options_raise():
    model = analytic.flow_denoiser(analytic.make_gaussian_data())
    x, sigmas = analytic.flow_initial_noise(), torch.tensor([1.0, 0.0])
    with pytest.raises(ValueError):
        sample_stride_flow(model, x, sigmas, order=3)
    with pytest.raises(ValueError):
        sample_stride_consistency(model, x, sigmas, gamma=1.5)
