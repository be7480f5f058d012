"""``python -m trainer bench sampling``: the teacher's reference against every few-step strategy.

Measured side by side in one run, on the same evaluation prompts and noise: held-out domain clips
(``data``), the teacher at 50 steps with CFG (the reference), the teacher at 4 and 8 steps, and
every student or strategy that exists. Each row holds the keys in ``ROW_KEYS``; ``ratios`` holds
``speedup_<name>`` = the reference's seconds over that row's seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..eval.evaluate import PRESET_SETUPS, evaluate_setups
from ..eval.generate import EvalSet

ROW_KEYS = ("name", "nfe", "seconds", "fd", "acc_colour", "acc_shape", "acc_direction", "acc_speed", "prompt_acc",
            "motion_acc", "motion_smoothness", "warping_error", "dynamic_degree", "flicker", "saturation_mean", "srop")
REFERENCE = "teacher_50_cfg"


def speedups(rows: list[dict]) -> dict[str, float]:
    reference = next(r for r in rows if r["name"] == REFERENCE)["seconds"]
    return {f"speedup_{r['name']}": reference / r["seconds"] for r in rows if r["name"] != "data" and r["seconds"] > 0}


def run_sampling_bench(teacher: Path | None = None, repeats: int = 1, batch_size: int = 32, bf16: bool = True) -> dict:
    from ..backends.diffusers_wan import DiffusersWanDenoiser
    from ..toy.teacher import load_teacher_any

    denoiser = DiffusersWanDenoiser(load_teacher_any(teacher), torch.bfloat16 if bf16 else None)
    setups = [PRESET_SETUPS[name] for name in ("teacher_50_cfg", "teacher_4", "teacher_8")]
    rows, _ = evaluate_setups(denoiser, setups, EvalSet(repeats=repeats), batch_size)
    rows = [{key: row[key] for key in ROW_KEYS} | {k: v for k, v in row.items() if k not in ROW_KEYS} for row in rows]
    return {"teacher": str(teacher or "shipped"), "clips_per_row": 96 * repeats, "rows": rows, "ratios": speedups(rows)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", type=Path, default=None, help="teacher file or pretraining state.pt (default: shipped)")
    parser.add_argument("--repeats", type=int, default=1, help="clips per row = 96 x repeats")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    result = run_sampling_bench(args.teacher, args.repeats, args.batch_size)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in result["rows"]:
            print("  ".join(f"{k}={row[k]:.3g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in ROW_KEYS))
        print(json.dumps(result["ratios"]))
    return 0
