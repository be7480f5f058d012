"""``python -m trainer distill``: train a student LoRA, export it, and report on it.

The job the README's first command runs: with no arguments it distils the shipped toy teacher
into a 4-step LoRA (ADV method), writes ``<out>/<name>.safetensors`` in ComfyUI's LoRA keys with
Stride metadata, and (toy teacher only) an HTML report that samples the teacher at 50 steps with
CFG, the teacher at 4 steps and the student at 4 steps without CFG on the same prompts and noise,
with a metrics table and frame grids. The teacher's rows are reused from ``bench sampling``'s record
when it matches this teacher and these settings exactly (``trainer.eval.reference``; five minutes
of a CPU run), and measured otherwise.
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

    return student_sampling_setup(method, outcome.schedule.step_list, outcome.schedule.shift, name,
                                  outcome.schedule.gamma)


def teacher_reference(backend, cfg: DistillConfig, eval_set) -> tuple[list[dict], dict, str]:
    """The teacher's rows (50 steps + CFG, 4 steps) and report samples, and where the rows come from.

    Rows recorded by ``bench sampling`` for this exact teacher file and evaluation settings are
    reused (``trainer.eval.reference``) and only the clips the report shows are sampled; otherwise
    every clip is sampled and scored, and the rows are recorded in the user cache for next time."""
    from ..backends.base import TEACHER
    from ..eval import reference
    from ..eval.evaluate import PRESET_SETUPS, evaluate_setups
    from ..eval.generate import generate
    from ..eval.report import MAX_CLIPS_SHOWN
    from ..toy.teacher import teacher_path

    setups = [PRESET_SETUPS["teacher_50_cfg"], PRESET_SETUPS["teacher_4"]]
    key = reference.record_key(reference.file_sha256(teacher_path(cfg.teacher)), eval_set, 32, cfg.bf16)
    found = reference.find_rows(key, setups) if cfg.reuse_reference else None
    if found is not None:
        rows, where = found
        # the report shows the first clips of every row: the same prompts and seeds as the student's
        prompts, seeds = eval_set.prompts_and_seeds()
        prompts, seeds = prompts[:MAX_CLIPS_SHOWN], seeds[:MAX_CLIPS_SHOWN]
        samples = {s.name: (generate(backend.view(TEACHER), s, prompts, seeds)[0], prompts) for s in setups}
        return rows, samples, f"teacher rows reused from {where}; report clips sampled here"
    rows, samples = evaluate_setups(backend.view(TEACHER), setups, eval_set)
    reference.save_rows(reference.cache_path(key["teacher_sha256"]), key, setups, rows, "python -m trainer distill")
    return rows[1:], {k: v for k, v in samples.items() if k != "data"}, "teacher rows measured in this run"


def evaluate_student(outcome, cfg: DistillConfig, out_dir: Path) -> list[dict]:
    """Data, teacher (50 steps + CFG, 4 steps) and student rows on the toy domain; writes the report."""
    from ..backends.base import STUDENT
    from ..eval.evaluate import evaluate_setups
    from ..eval.generate import EvalSet
    from ..eval.report import write_html_report

    backend = outcome.backend
    eval_set = EvalSet(repeats=cfg.eval_repeats)
    teacher_rows, teacher_samples, teacher_source = teacher_reference(backend, cfg, eval_set)
    student_rows, student_samples = evaluate_setups(backend.view(STUDENT), [student_setup(outcome, cfg.method)], eval_set)
    rows = student_rows[:1] + teacher_rows + student_rows[1:]
    samples = {"data": student_samples["data"], **teacher_samples, "student_4": student_samples["student_4"]}
    notes = json.dumps({"method": cfg.method, "steps": outcome.steps_done, "train_seconds": round(outcome.seconds, 1),
                        "student_step_list": list(outcome.schedule.step_list), "shift": outcome.schedule.shift,
                        "teacher_rows": teacher_source}, indent=1)
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
