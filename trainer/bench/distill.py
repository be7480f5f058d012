"""``python -m trainer bench distill``: every method and ADV ablation at the same budget, side by side.

Each variant distils the same teacher for the same number of steps from the same seeds, then its
4-step student is sampled without CFG on the evaluation prompts and noise and scored like
``bench sampling`` rows (same keys), next to the teacher's reference and 4-step rows measured in
the same run. Variants are data (``VARIANTS``): a method name plus config overrides.

A full run takes about an hour on a CPU, so every row is appended to a JSON-lines file as soon as
it is measured (``--rows-file``, default ``runs/bench/distill_rows.jsonl``) and printed to stderr.
Run the same command again after a crash or Ctrl-C and it keeps the rows already measured with the
same settings and trains only the missing variants. The file's first line holds the settings every
row shares (budget, seeds, student steps, teacher, clips); other shared settings start the file
afresh (``--fresh`` always does). Each variant's row also holds its own method's config, so a change
to one method's recipe measures again only the variants of that method.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..checkpoint import atomic_write_text
from ..methods.adv import PUBLISHED_TEMPORAL_WEIGHT
from .sampling import ROW_KEYS, speedups

# variant name -> (method, overrides of that method's config)
VARIANTS: dict[str, tuple[str, dict]] = {
    "adv": ("adv", {}),
    "adv_data_regression": ("adv", {"regression_target": "data"}),  # the published target
    "adv_no_adaptive": ("adv", {"adaptive_regression": False}),
    "adv_no_temporal": ("adv", {"temporal": "none"}),
    # the published hinge, and the anchored variant, at the published weight (the main job's 0.4 is for W1)
    "adv_hinge_temporal": ("adv", {"temporal": "hinge", "temporal_weight": PUBLISHED_TEMPORAL_WEIGHT}),
    "adv_anchored_temporal": ("adv", {"temporal": "anchored", "temporal_weight": PUBLISHED_TEMPORAL_WEIGHT}),
    "adv_no_gan": ("adv", {"gan_weight": 0.0}),  # DMD2's GAN term is not in the ADV paper
    "gpd": ("gpd", {}),
    "avdm2": ("avdm2", {}),
}


def variant_config(base, name: str, state_root: Path):
    """``base`` (a DistillConfig) with the variant's method and overrides; fresh state, no report."""
    method, overrides = VARIANTS[name]
    method_cfg = dataclasses.replace(getattr(base, method), **overrides)
    return dataclasses.replace(base, method=method, name=f"bench_{name}", resume=False, eval_repeats=0, preview_every=0,
                               state_dir=state_root / name, out=state_root / "out", **{method: method_cfg})


def _method_sections() -> set[str]:
    return {method for method, _ in VARIANTS.values()}


def bench_settings(base, repeats: int, max_clips: int | None) -> dict:
    """What decides every row besides the variant: rows measured under other settings are not reused.

    Left out: where outputs go, the progress bar and the thread count. Threads change only the order of
    floating-point sums (rows measured with one or two agree to rounding, which a 600-step run can carry
    into its last digits), so a rerun with another ``--threads`` keeps the hours of rows already measured.
    Also left out: the methods' own configs, which ``variant_settings`` keeps with each variant's row."""
    from ..config import config_to_dict
    from ..eval.reference import file_sha256
    from ..toy.teacher import teacher_path

    teacher = teacher_path(base.teacher)
    digest = file_sha256(teacher) if teacher.is_file() else None
    unmeasured = {"out": Path("."), "state_dir": None, "progress": False, "threads": 0}
    shared = config_to_dict(dataclasses.replace(base, **unmeasured))
    for key in (*_method_sections(), "method", "name"):
        shared.pop(key)
    return {"config": shared, "teacher_sha256": digest, "repeats": repeats, "max_clips": max_clips}


def variant_settings(cfg) -> dict:
    """What decides a variant's row besides ``bench_settings``: its method and that method's full config."""
    from ..config import config_to_dict

    return {"method": cfg.method, cfg.method: config_to_dict(getattr(cfg, cfg.method))}


class RowsFile:
    """The rows measured so far, one JSON object per line after a settings line; ``None`` path: memory only."""

    def __init__(self, path: Path | None, settings: dict, fresh: bool = False):
        self.path, self.settings, self.entries = path, settings, []
        if path is None:
            return
        path = Path(path)
        lines = [] if fresh or not path.exists() else path.read_text().splitlines()
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill (or not a rows file): measured again
                break
        if parsed and parsed[0] == {"settings": settings}:
            self.entries = parsed[1:]
        # rewritten atomically: drops a stale file and any cut-short line, and a kill here loses nothing
        self._rewrite()

    def _rewrite(self) -> None:
        atomic_write_text("".join(json.dumps(e) + "\n" for e in [{"settings": self.settings}, *self.entries]),
                          Path(self.path))

    def get(self, key: str, variant: dict | None = None) -> dict | None:
        """The row stored under ``key`` if it was measured with ``variant`` (a variant's own settings)."""
        return next((e for e in self.entries if e["key"] == key and e.get("variant") == variant), None)

    def add(self, key: str, variant: dict | None = None, **values) -> None:
        """Store a row; one measured under other variant settings with the same key is replaced."""
        kept = [e for e in self.entries if e["key"] != key]
        replaced = len(kept) < len(self.entries)
        self.entries = [*kept, {"key": key, **({"variant": variant} if variant is not None else {}), **values}]
        if self.path is None:
            return
        if replaced:
            self._rewrite()
        else:
            with open(self.path, "a") as f:
                f.write(json.dumps(self.entries[-1]) + "\n")


def _announce(rows: list[dict]) -> None:
    for row in rows:
        print(f"bench distill: {row['name']}: fd {row['fd']:.2f}  prompt_acc {row['prompt_acc']:.3f}  "
              f"motion_acc {row['motion_acc']:.3f}  saturation {row['saturation_mean']:.3f}", file=sys.stderr, flush=True)


class BenchStopped(Exception):
    """A variant's training was stopped (Ctrl-C, SIGTERM) before its last step, so it was not scored."""


def run_distill_bench(base, variants: list[str], repeats: int = 1, max_clips: int | None = None,
                      rows_file: Path | None = None, fresh: bool = False, stop_check=None) -> dict:
    """Train and score every variant not yet in ``rows_file``; ``stop_check`` is ``distill``'s. A variant
    whose training stops early raises ``BenchStopped`` instead of being scored as if it had finished."""
    from ..backends.base import STUDENT, TEACHER
    from ..distill.job import student_setup
    from ..distill.loop import distill
    from ..eval.evaluate import PRESET_SETUPS, evaluate_setups
    from ..eval.generate import EvalSet

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    eval_set = EvalSet(repeats=repeats, max_clips=max_clips)
    done = RowsFile(rows_file, bench_settings(base, repeats, max_clips), fresh)
    own = {name: variant_settings(variant_config(base, name, Path("."))) for name in variants}
    with tempfile.TemporaryDirectory(prefix="stride_bench_distill_") as tmp:
        for name in variants:
            if done.get(name, own[name]) is not None:
                continue
            cfg = variant_config(base, name, Path(tmp))
            t0 = time.perf_counter()
            outcome = distill(cfg, stop_check=stop_check)
            seconds = round(time.perf_counter() - t0, 1)
            if outcome.stopped_early:  # its state was in the temporary folder: a rerun trains it from the start
                kept = f" in {rows_file}; rerun the same command to continue" if rows_file is not None else ""
                raise BenchStopped(f"bench distill stopped during {name!r} at step {outcome.steps_done} of {cfg.steps}, "
                                   f"so it is not scored; the rows measured so far are kept{kept}")
            with torch.no_grad():
                if done.get("teacher") is None:  # the teacher rows, once, from the same base weights
                    teacher_rows, _ = evaluate_setups(outcome.backend.view(TEACHER),
                                                      [PRESET_SETUPS["teacher_50_cfg"], PRESET_SETUPS["teacher_4"]],
                                                      eval_set)
                    done.add("teacher", rows=teacher_rows)
                    _announce(teacher_rows[1:])
                student_rows, _ = evaluate_setups(outcome.backend.view(STUDENT),
                                                  [student_setup(outcome, cfg.method, name)], eval_set)
            done.add(name, own[name], rows=[student_rows[1]], train_seconds=seconds)
            _announce(student_rows[1:])
            del outcome
    measured = {n: done.get(n, own[n]) for n in variants}
    rows = [*(done.get("teacher") or {"rows": []})["rows"], *(measured[n]["rows"][0] for n in variants)]
    train_seconds = {n: measured[n]["train_seconds"] for n in variants}
    rows = [{key: row[key] for key in ROW_KEYS} | {k: v for k, v in row.items() if k not in ROW_KEYS} for row in rows]
    return {"steps": base.steps, "batch_size": base.batch_size, "seed": base.seed, "clips_per_row": len(eval_set.attributes()),
            "train_seconds": train_seconds, "rows": rows, "ratios": speedups(rows)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..config import add_dataclass_flags
    from ..distill.config import DistillConfig

    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--rows-file", type=Path, default=Path("runs/bench/distill_rows.jsonl"),
                        help="rows are appended here as they are measured; a rerun with the same settings reuses them")
    parser.add_argument("--fresh", action="store_true", help="measure every row again even if --rows-file has it")
    parser.add_argument("--json", action="store_true")
    add_dataclass_flags(parser, DistillConfig)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..distill.config import DistillConfig

    base = load_config(DistillConfig, args, args.config)
    try:
        result = run_distill_bench(base, [v for v in args.variants.split(",") if v], args.repeats,
                                   rows_file=args.rows_file, fresh=args.fresh)
    except BenchStopped as err:
        print(err, file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in result["rows"]:
            print("  ".join(f"{k}={row[k]:.3g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in ROW_KEYS))
    return 0
