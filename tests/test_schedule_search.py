"""Temporal-aware schedule search on the analytic Gaussian video, and its JSON presets."""

from __future__ import annotations

import json

import pytest
import torch

from trainer.sampling import analytic
from trainer.sampling import schedule_search
from trainer.sampling.samplers import sample_stride_flow
from trainer.sampling.schedule_search import ScheduleSearchConfig, schedule_error, search_schedule

SHAPE = (1, 2, 6, 3, 3)


def gaussian_video_problem(order: int):
    """A per-frame drifting mean (temporally correlated), fixed noise, and the exact PF-ODE solution."""
    data = analytic.make_gaussian_data(SHAPE, temporal=True)
    model = analytic.flow_denoiser(data)
    noise = analytic.flow_initial_noise(SHAPE)
    reference = analytic.flow_transport(data, noise, 1.0, 0.0)

    def solve(sigmas):
        return sample_stride_flow(model, noise, sigmas, order=order)

    return solve, reference, model


def test_schedule_error_by_hand():
    x = torch.zeros(1, 1, 3, 1, 2, dtype=torch.float64)
    reference = torch.zeros_like(x)
    reference[0, 0, 1] = 1.0  # frame 1 off by 1 in both elements
    # per-frame MSE: 2 of 6 elements wrong by 1 -> 1/3; frame differences: errors (0-(-1)), (-1-0) -> all 4 off by 1
    assert float(schedule_error(x, reference, 0.0)) == pytest.approx(1 / 3)
    assert float(schedule_error(x, reference, 1.0)) == pytest.approx(1 / 3 + 1.0)
    assert float(schedule_error(x, reference, 0.5)) == pytest.approx(1 / 3 + 0.5)
    one_frame = torch.ones(1, 1, 1, 2, 2)
    assert float(schedule_error(one_frame, 0 * one_frame, 3.0)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        schedule_error(x, reference[:, :, :2])


def test_temporal_term_changes_the_objective_on_a_solver_output():
    solve, reference, _ = gaussian_video_problem(order=1)
    x = solve(torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))
    without, with_temporal = float(schedule_error(x, reference, 0.0)), float(schedule_error(x, reference, 1.0))
    assert with_temporal > without > 0


@pytest.mark.parametrize("order,steps,temporal_weight", [(1, 3, 1.0), (2, 4, 1.0), (2, 4, 0.0)])
def test_search_beats_the_linear_schedule(order, steps, temporal_weight):
    solve, reference, model = gaussian_video_problem(order)
    cfg = ScheduleSearchConfig(steps=steps, temporal_weight=temporal_weight, iterations=2, evals_per_coordinate=8)
    linear = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    linear_error = float(schedule_error(solve(linear), reference, temporal_weight))
    model.calls = 0

    sigmas, info = search_schedule(solve, reference, cfg)

    searched_error = float(schedule_error(solve(sigmas), reference, temporal_weight))
    assert searched_error < linear_error
    assert info["initial_error"] == pytest.approx(linear_error)
    assert info["final_error"] == pytest.approx(searched_error)
    assert info["final_error"] <= min(info["sweep_errors"]) + 1e-15
    assert info["evaluations"] <= 1 + cfg.iterations * (steps - 1) * cfg.evals_per_coordinate
    assert model.calls == steps * info["evaluations"] + steps  # each solve calls the model once per step
    assert sigmas.shape == (steps + 1,) and sigmas[0] == 1.0 and sigmas[-1] == 0.0
    assert (sigmas[1:] < sigmas[:-1]).all()
    json.dumps(info)  # the node saves info as preset meta
    if order == 2:  # the second-order solver gains a lot from a good schedule here
        assert searched_error < 0.2 * linear_error


def test_search_from_an_initial_schedule_and_its_checks():
    solve, reference, _ = gaussian_video_problem(order=1)
    cfg = ScheduleSearchConfig(steps=3, iterations=1, evals_per_coordinate=4)
    initial = torch.tensor([1.0, 0.9, 0.8, 0.0], dtype=torch.float32)
    sigmas, info = search_schedule(solve, reference, cfg, initial=initial)
    assert info["initial_sigmas"] == pytest.approx([1.0, 0.9, 0.8, 0.0])
    assert info["final_error"] < info["initial_error"]
    assert (sigmas[1:] < sigmas[:-1]).all()
    for bad in ([1.0, 0.5, 0.0], [0.9, 0.5, 0.2, 0.0], [1.0, 0.2, 0.5, 0.0]):
        with pytest.raises(ValueError):
            search_schedule(solve, reference, cfg, initial=torch.tensor(bad))
    with pytest.raises(ValueError):
        search_schedule(solve, reference, ScheduleSearchConfig(steps=0))


def test_one_step_has_nothing_to_search():
    solve, reference, _ = gaussian_video_problem(order=1)
    sigmas, info = search_schedule(solve, reference, ScheduleSearchConfig(steps=1))
    assert sigmas.tolist() == [1.0, 0.0] and info["evaluations"] == 1


def test_preset_round_trip(tmp_path):
    sigmas = torch.tensor([1.0, 0.8123456789, 0.41, 0.0], dtype=torch.float64)
    path = schedule_search.save_preset(tmp_path, "wan_4step-v1.2", sigmas, {"final_error": 0.01, "steps": 3})
    assert path == tmp_path / "wan_4step-v1.2.json"
    assert json.loads(path.read_text())["sigmas"][1] == pytest.approx(0.8123456789)
    loaded, meta = schedule_search.load_preset(tmp_path, "wan_4step-v1.2")
    assert loaded.dtype == torch.float32 and torch.allclose(loaded.double(), sigmas)
    assert meta == {"final_error": 0.01, "steps": 3}
    schedule_search.save_preset(tmp_path, "another", [1.0, 0.0], None)
    (tmp_path / "notes.txt").write_text("not a preset")
    assert schedule_search.list_presets(tmp_path) == ["another", "wan_4step-v1.2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["another.json", "notes.txt", "wan_4step-v1.2.json"]
    assert schedule_search.list_presets(tmp_path / "missing") == []
    with pytest.raises(FileNotFoundError):
        schedule_search.load_preset(tmp_path, "missing")


@pytest.mark.parametrize("name", ["", "..", "../evil", "a..b", "a/b", "a\\b", "with space", "ünïcode", "x\n"])
def test_bad_preset_names_are_rejected(tmp_path, name):
    with pytest.raises(ValueError):
        schedule_search.save_preset(tmp_path, name, [1.0, 0.0], {})
    with pytest.raises(ValueError):
        schedule_search.load_preset(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sigmas", [[1.0], [0.5, 0.7], [1.0, float("nan")], [1.0, -0.5]])
def test_bad_preset_sigmas_are_rejected(tmp_path, sigmas):
    with pytest.raises(ValueError):
        schedule_search.save_preset(tmp_path, "bad", sigmas, {})
