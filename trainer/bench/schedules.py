"""``python -m trainer bench schedules``: every Stride schedule at one step count, side by side.

On the analytic case (Gaussian video data whose mean drifts smoothly over frames, so frame
differences matter; ``trainer.sampling.analytic``) each schedule is run with the deterministic
Stride sampler from the same noise and compared with a many-step reference (error over frames
and error of frame differences); the exact probability-flow solution is reported too. The
temporal schedule search runs in the same process against the same reference, so
``ratios.search_vs_uniform_error`` compares like with like. With ``--toy`` the same table is
measured on the shipped toy Wan teacher with CFG, if its weights are present.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import torch

from ..sampling import analytic, schedule_search, schedules
from ..sampling.samplers import sample_stride_flow

ANALYTIC_SHAPE = (2, 4, 9, 6, 6)


@dataclass
class ScheduleBenchConfig:
    steps: int = 4
    reference_steps: int = 200
    order: int = 1
    temporal_weight: float = 1.0
    iterations: int = 3
    seed: int = 0


def candidate_schedules(steps: int, latent_shape) -> dict[str, torch.Tensor]:
    """The schedules a user can pick today, all at ``steps`` steps, as flow sigmas."""
    student_steps = [1000.0 * (1 - k / steps) for k in range(steps)]
    token_sigmas, _ = schedules.token_aware_sigmas(latent_shape, steps)
    return {
        "uniform": schedules.linear_sigmas(steps),
        "student_shift5": schedules.student_sigmas(student_steps, 5.0),
        "token_shift": token_sigmas,
        "optimal_steps_wan": schedules.published_sigmas("optimal_steps_wan", steps),
        "ays_svd_flow": schedules.edm_to_flow_sigmas(schedules.published_sigmas("ays_svd", steps)),
    }


def _terms(x: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    per_frame = float(schedule_search.schedule_error(x, reference, temporal_weight=0.0))
    both = float(schedule_search.schedule_error(x, reference, temporal_weight=1.0))
    return per_frame, both - per_frame


def bench_rows(model, noise: torch.Tensor, cfg: ScheduleBenchConfig, exact: torch.Tensor | None = None):
    """Rows for every candidate schedule plus the searched one; returns (rows, ratios)."""

    def solve(sigmas):
        return sample_stride_flow(model, noise.clone(), torch.as_tensor(sigmas, dtype=noise.dtype), order=cfg.order)

    reference = solve(schedules.linear_sigmas(cfg.reference_steps))
    candidates = {name: torch.as_tensor(s, dtype=noise.dtype) for name, s in
                  candidate_schedules(cfg.steps, tuple(noise.shape)).items()}
    search_cfg = schedule_search.ScheduleSearchConfig(steps=cfg.steps, reference_steps=cfg.reference_steps,
                                                      temporal_weight=cfg.temporal_weight, iterations=cfg.iterations)
    t0 = time.perf_counter()
    searched, info = schedule_search.search_schedule(solve, reference, search_cfg, initial=candidates["uniform"])
    search_seconds = time.perf_counter() - t0
    candidates["searched_temporal"] = torch.as_tensor(searched, dtype=noise.dtype)
    rows = []
    for name, sigmas in candidates.items():
        out = solve(sigmas)
        error, temporal = _terms(out, reference)
        row = {"name": name, "steps": cfg.steps, "error_to_reference": error, "temporal_error": temporal,
               "sigmas": [round(float(s), 5) for s in sigmas]}
        if exact is not None:
            row["error_to_exact"] = float((out - exact).pow(2).mean())
        rows.append(row)
    by_name = {r["name"]: r for r in rows}
    ratios = {
        "search_vs_uniform_error": by_name["searched_temporal"]["error_to_reference"] / by_name["uniform"]["error_to_reference"],
        "search_vs_uniform_temporal_error": by_name["searched_temporal"]["temporal_error"] / by_name["uniform"]["temporal_error"],
        "search_vs_best_fixed_error": by_name["searched_temporal"]["error_to_reference"]
        / min(r["error_to_reference"] for r in rows if r["name"] != "searched_temporal"),
    }
    return rows, ratios, {"search_evaluations": info["evaluations"], "search_seconds": round(search_seconds, 3)}


def analytic_case(cfg: ScheduleBenchConfig) -> dict:
    data = analytic.make_gaussian_data(ANALYTIC_SHAPE, seed=cfg.seed, temporal=True)
    model = analytic.flow_denoiser(data)
    noise = analytic.flow_initial_noise(ANALYTIC_SHAPE, seed=cfg.seed + 1)
    exact = analytic.flow_transport(data, noise, 1.0, 0.0)
    rows, ratios, extra = bench_rows(model, noise, cfg, exact=exact)
    return {"case": "analytic_gaussian_video", "latent_shape": list(ANALYTIC_SHAPE), "rows": rows,
            "ratios": ratios, **extra}


def toy_case(cfg: ScheduleBenchConfig, cfg_scale: float = 5.0, batch: int = 4) -> dict:
    from ..backends.base import as_kdiffusion_model
    from ..backends.diffusers_wan import DiffusersWanDenoiser
    from ..toy import codec, domain, text
    from ..toy.teacher import WEIGHTS_PATH, load_teacher

    if not WEIGHTS_PATH.exists():
        return {"case": "toy_teacher", "skipped": f"no toy teacher weights at {WEIGHTS_PATH}"}
    denoiser = DiffusersWanDenoiser(load_teacher())
    prompts = [a.prompt for a in domain.make_batch(batch, seed=cfg.seed + 100)[1]]
    context = text.encode_prompts(prompts)
    model = as_kdiffusion_model(denoiser, context, torch.zeros_like(context), cfg_scale)
    dcfg = domain.DomainConfig()
    shape = (batch, codec.LATENT_CHANNELS, dcfg.frames, dcfg.height // 2, dcfg.width // 2)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(cfg.seed))
    toy_cfg = ScheduleBenchConfig(**{**cfg.__dict__, "reference_steps": min(cfg.reference_steps, 50), "iterations": 1})
    with torch.no_grad():
        rows, ratios, extra = bench_rows(model, noise, toy_cfg)
    return {"case": "toy_teacher", "cfg": cfg_scale, "prompts": prompts, "rows": rows, "ratios": ratios, **extra}


def run_schedule_bench(cfg: ScheduleBenchConfig, toy: bool = False) -> dict:
    result = analytic_case(cfg)
    result["config"] = dict(cfg.__dict__)
    if toy:
        result["toy"] = toy_case(cfg)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..config import add_dataclass_flags

    add_dataclass_flags(parser, ScheduleBenchConfig)
    parser.add_argument("--toy", action="store_true", help="also measure on the shipped toy Wan teacher")
    parser.add_argument("--json", action="store_true", help="print one JSON object (default: a table)")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config

    cfg = load_config(ScheduleBenchConfig, args)
    result = run_schedule_bench(cfg, toy=args.toy)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for case in [result] + ([result["toy"]] if "toy" in result else []):
        print(f"\n{case['case']}")
        for row in case.get("rows", []):
            print(f"  {row['name']:<20} error {row['error_to_reference']:.3e}  temporal {row['temporal_error']:.3e}")
        print("  ratios:", json.dumps(case.get("ratios", case.get("skipped"))))
    return 0
