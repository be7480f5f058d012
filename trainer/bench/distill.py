"""``python -m trainer bench distill``: every method and ADV ablation at the same budget, side by side.

Each variant distils the same teacher for the same number of steps from the same seeds, then its
4-step student is sampled without CFG on the evaluation prompts and noise and scored like
``bench sampling`` rows (same keys), next to the teacher's reference and 4-step rows measured in
the same run. Variants are data (``VARIANTS``): a method name plus config overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from .sampling import ROW_KEYS, speedups

# variant name -> (method, overrides of that method's config)
VARIANTS: dict[str, tuple[str, dict]] = {
    "adv": ("adv", {}),
    "adv_no_adaptive": ("adv", {"adaptive_regression": False}),
    "adv_no_temporal": ("adv", {"temporal": "none"}),
    "adv_anchored_temporal": ("adv", {"temporal": "anchored"}),
    "gpd": ("gpd", {}),
    "avdm2": ("avdm2", {}),
}


def variant_config(base, name: str, state_root: Path):
    """``base`` (a DistillConfig) with the variant's method and overrides; fresh state, no report."""
    method, overrides = VARIANTS[name]
    method_cfg = dataclasses.replace(getattr(base, method), **overrides)
    return dataclasses.replace(base, method=method, name=f"bench_{name}", resume=False, eval_repeats=0, preview_every=0,
                               state_dir=state_root / name, out=state_root / "out", **{method: method_cfg})


def run_distill_bench(base, variants: list[str], repeats: int = 1, max_clips: int | None = None) -> dict:
    from ..backends.base import STUDENT, TEACHER
    from ..distill.job import student_setup
    from ..distill.loop import distill
    from ..eval.evaluate import PRESET_SETUPS, evaluate_setups
    from ..eval.generate import EvalSet

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    eval_set = EvalSet(repeats=repeats, max_clips=max_clips)
    rows, train_seconds = [], {}
    with tempfile.TemporaryDirectory(prefix="stride_bench_distill_") as tmp:
        for index, name in enumerate(variants):
            cfg = variant_config(base, name, Path(tmp))
            t0 = time.perf_counter()
            outcome = distill(cfg)
            train_seconds[name] = round(time.perf_counter() - t0, 1)
            with torch.no_grad():
                if index == 0:  # the teacher rows, once, from the same base weights
                    teacher_rows, _ = evaluate_setups(outcome.backend.view(TEACHER),
                                                      [PRESET_SETUPS["teacher_50_cfg"], PRESET_SETUPS["teacher_4"]],
                                                      eval_set)
                    rows.extend(teacher_rows)
                student_rows, _ = evaluate_setups(outcome.backend.view(STUDENT),
                                                  [student_setup(outcome, cfg.method, name)], eval_set)
            rows.append(student_rows[1])
            del outcome
    rows = [{key: row[key] for key in ROW_KEYS} | {k: v for k, v in row.items() if k not in ROW_KEYS} for row in rows]
    return {"steps": base.steps, "batch_size": base.batch_size, "seed": base.seed, "clips_per_row": len(eval_set.attributes()),
            "train_seconds": train_seconds, "rows": rows, "ratios": speedups(rows)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..config import add_dataclass_flags
    from ..distill.config import DistillConfig

    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    add_dataclass_flags(parser, DistillConfig)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..distill.config import DistillConfig

    base = load_config(DistillConfig, args, args.config)
    result = run_distill_bench(base, [v for v in args.variants.split(",") if v], args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in result["rows"]:
            print("  ".join(f"{k}={row[k]:.3g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in ROW_KEYS))
    return 0
