"""``python -m trainer distill``: train a student LoRA, export it, and report on it.

The job the README's first command runs: with no arguments it distils the shipped toy teacher
into a 4-step LoRA (ADV method), writes ``<out>/<name>.safetensors`` in ComfyUI's LoRA keys with
Stride metadata, and (toy teacher only) an HTML report that samples the teacher at 50 steps with
CFG, the teacher at 4 steps and the student at 4 steps without CFG on the same prompts and noise,
with a metrics table and frame grids.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..config import add_dataclass_flags, load_config
from .config import DistillConfig


def student_setup(outcome, method: str, name: str = "student_4"):
    """How the trained student of ``method`` is sampled (its schedule, no CFG, the method's sampler)."""
    from ..eval.evaluate import student_sampling_setup

    return student_sampling_setup(method, outcome.schedule.step_list, outcome.schedule.shift, name)


def evaluate_student(outcome, cfg: DistillConfig, out_dir: Path) -> list[dict]:
    """Teacher (50 steps + CFG, 4 steps) and student rows on the toy domain; writes the report."""
    from ..backends.diffusers_wan import DiffusersWanDenoiser
    from ..backends.base import STUDENT, TEACHER
    from ..eval.evaluate import PRESET_SETUPS, evaluate_setups
    from ..eval.generate import EvalSet
    from ..eval.report import write_html_report

    backend = outcome.backend
    eval_set = EvalSet(repeats=cfg.eval_repeats)
    teacher_rows, teacher_samples = evaluate_setups(
        backend.view(TEACHER), [PRESET_SETUPS["teacher_50_cfg"], PRESET_SETUPS["teacher_4"]], eval_set)
    student_rows, student_samples = evaluate_setups(backend.view(STUDENT), [student_setup(outcome, cfg.method)], eval_set)
    rows = teacher_rows + student_rows[1:]  # one data row
    samples = {**teacher_samples, **{k: v for k, v in student_samples.items() if k != "data"}}
    notes = json.dumps({"method": cfg.method, "steps": outcome.steps_done, "train_seconds": round(outcome.seconds, 1),
                        "student_step_list": list(outcome.schedule.step_list), "shift": outcome.schedule.shift}, indent=1)
    write_html_report(out_dir / f"{cfg.name}_report.html", f"Stride distillation: {cfg.name}", rows, samples,
                      notes=notes, json_path=out_dir / f"{cfg.name}_report.json")
    return rows


def run_distill_job(cfg: DistillConfig) -> dict:
    from .loop import distill, export_student

    outcome = distill(cfg)
    out_dir = Path(cfg.out)
    result = {"name": cfg.name, "method": cfg.method, "steps_done": outcome.steps_done, "state": str(outcome.state_path)}
    if outcome.stopped_early:
        result["stopped"] = True
        return result
    metrics = {}
    if cfg.teacher is None and cfg.eval_repeats > 0:
        with torch.no_grad():
            rows = evaluate_student(outcome, cfg, out_dir)
        metrics = {r["name"]: {k: v for k, v in r.items() if k != "name"} for r in rows}
        result["report"] = str(out_dir / f"{cfg.name}_report.html")
        result["rows"] = rows
    lora_path = export_student(outcome, cfg, out_dir / f"{cfg.name}.safetensors",
                               metrics.get("student_4", {}))
    result["lora"] = str(lora_path)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="TOML/JSON file with DistillConfig fields")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_dataclass_flags(parser, DistillConfig)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(DistillConfig, args, args.config)
    result = run_distill_job(cfg)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from ..eval.evaluate import format_row

        for row in result.get("rows", []):
            print(format_row(row))
        for key in ("lora", "report", "state"):
            if key in result:
                print(f"{key}: {result[key]}")
    return 0
