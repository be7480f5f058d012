"""``python -m trainer bench sampling``: the teacher's reference against every few-step strategy.

Measured side by side in one run, on the same evaluation prompts and noise: held-out domain clips
(``data``), the teacher at 50 steps with CFG (the reference), the teacher at 4 and 8 steps, and,
given a student LoRA (the shipped toy student by default), ``student_<n>`` (its own step list and
shift, no CFG, its method's sampler) and ``student_<n>_interp`` (the same with the first
``switch_index`` steps on every second latent frame, then the learned latent interpolator: the
interpolated few-step sampling of METHODS.md 1b). Each row holds the keys in ``ROW_KEYS``;
``ratios`` holds ``speedup_<name>`` = the reference's seconds over that row's seconds, and with a
student ``interp_cost_ratio`` = the interpolated row's seconds over the full-length student's. The
two student rows are sampled chunk by chunk in turn, so a drift in the machine's speed during the run
weighs on both alike; the interpolated row's learned interpolator runs in the denoiser's dtype. The
two student rows take seconds, not minutes, so they are timed in ``timing_passes`` such passes (the
first is the scored one) and ``interp_cost_ratio`` is the median of the passes' ratios, each pass's
ratio listed in ``interp_cost_passes``: one pass on a shared CPU swung by several hundredths.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from ..eval.evaluate import PRESET_SETUPS, evaluate_setups, lora_student_setup
from ..eval.generate import EvalSet, SamplingSetup, generate_interleaved

ROW_KEYS = ("name", "nfe", "seconds", "fd", "acc_colour", "acc_shape", "acc_direction", "acc_speed", "prompt_acc",
            "motion_acc", "motion_smoothness", "warping_error", "dynamic_degree", "flicker", "saturation_mean", "srop")
REFERENCE = "teacher_50_cfg"


def speedups(rows: list[dict]) -> dict[str, float]:
    reference = next(r for r in rows if r["name"] == REFERENCE)["seconds"]
    return {f"speedup_{r['name']}": reference / r["seconds"] for r in rows if r["name"] != "data" and r["seconds"] > 0}


def student_setups(lora: Path, switch_index: int, interpolator: str = "learned",
                   interpolator_dtype: str | None = None) -> list[SamplingSetup]:
    """The LoRA's own setup, and the same steps with interpolated sampling switching at ``switch_index``
    (a learned interpolator running in ``interpolator_dtype``, ``None``: its own)."""
    full = lora_student_setup(lora)
    full = dataclasses.replace(full, name=f"student_{full.steps}")
    if not 1 <= switch_index < full.steps:
        raise ValueError(f"switch_index must be in [1, {full.steps - 1}] for a {full.steps}-step student, got {switch_index}")
    extra = {k: v for k, v in full.sampler_options.items() if k != "gamma"}
    if extra:
        raise ValueError(f"interpolated sampling cannot pass {sorted(extra)} on to {full.sampler}")
    options = {"base_sampler": full.sampler, "switch_index": switch_index, "interpolator": interpolator,
               **({"gamma": full.sampler_options["gamma"]} if "gamma" in full.sampler_options else {}),
               **({"interpolator_dtype": interpolator_dtype} if interpolator_dtype else {})}
    interp = dataclasses.replace(full, name=f"{full.name}_interp", sampler="stride_interpolated", sampler_options=options)
    return [full, interp]


def cost_ratio_passes(denoiser, setups: list[SamplingSetup], eval_set: EvalSet, batch_size: int,
                      passes: int) -> list[float]:
    """``passes`` timings of ``setups[1]`` over ``setups[0]`` on the eval set, each pass sampling every chunk
    of both in turn (``generate_interleaved``); the videos are discarded."""
    prompts, seeds = eval_set.prompts_and_seeds()
    ratios = []
    for _ in range(passes):
        (_, base_seconds), (_, other_seconds) = generate_interleaved(denoiser, setups, prompts, seeds, batch_size)
        ratios.append(other_seconds / base_seconds)
    return ratios


def record_teacher_rows(teacher: Path | None, eval_set: EvalSet, batch_size: int, bf16: bool,
                        setups: list[SamplingSetup], rows: list[dict], extra: Path | None = None) -> list[Path]:
    """Record the teacher rows for reuse (``trainer.eval.reference``): in the user cache, and in ``extra``."""
    from ..eval import reference
    from ..toy.teacher import teacher_path

    teacher_file = teacher_path(teacher)
    if not teacher_file.is_file():
        return []
    key = reference.record_key(reference.file_sha256(teacher_file), eval_set, batch_size, bf16)
    places = [reference.cache_path(key["teacher_sha256"]), *([Path(extra)] if extra else [])]
    return [reference.save_rows(place, key, setups, rows, "python -m trainer bench sampling") for place in places]


def run_sampling_bench(teacher: Path | None = None, repeats: int = 1, batch_size: int = 32, bf16: bool = True,
                       lora: Path | None = None, switch_index: int = 2, max_clips: int | None = None,
                       save_reference: Path | None = None, student_only: bool = False,
                       interpolator: str = "learned", timing_passes: int = 3) -> dict:
    """Teacher rows from the bare teacher, then (with ``lora``) student rows from the same teacher
    with the LoRA loaded, all on one ``EvalSet``; the data row is shared. The teacher rows are
    recorded for the distillation report to reuse (user cache, and ``save_reference``).
    ``student_only`` skips the teacher rows (and so the speedups): the data row, the two student
    rows and ``interp_cost_ratio``, for choosing a LoRA's switch index in a minute or two.
    ``interpolator`` names the interpolated row's latent interpolator (``INTERPOLATION_METHODS``).
    ``timing_passes`` (>= 1) times the two student rows that many times; ``interp_cost_ratio`` is the median."""
    from ..backends.diffusers_wan import DiffusersWanDenoiser
    from ..lora.export import load_comfy_lora_into_diffusers
    from ..lora.inject import fuse_adapter
    from ..interp.model import check_interpolator_name
    from ..toy.teacher import load_teacher_any

    dtype = torch.bfloat16 if bf16 else None
    interpolator_dtype = "bfloat16" if bf16 else None
    eval_set = EvalSet(repeats=repeats, max_clips=max_clips)
    check_interpolator_name(interpolator)
    if timing_passes < 1:
        raise ValueError(f"timing_passes must be >= 1, got {timing_passes}")
    if student_only and lora is None:
        raise ValueError("student_only needs a student LoRA")
    if student_only and save_reference is not None:
        raise ValueError("student_only measures no teacher rows to save as a reference")
    setups = [] if student_only else [PRESET_SETUPS[name] for name in ("teacher_50_cfg", "teacher_4", "teacher_8")]
    rows, _ = evaluate_setups(DiffusersWanDenoiser(load_teacher_any(teacher), dtype), setups, eval_set, batch_size)
    if setups:
        record_teacher_rows(teacher, eval_set, batch_size, bf16, setups, rows, save_reference)
    ratios, cost_passes = {}, None
    if lora is not None:
        model = load_teacher_any(teacher)
        load_comfy_lora_into_diffusers(model, lora, "student")
        fuse_adapter(model, "student")  # timed as ComfyUI runs a LoRA: merged, at the teacher's cost per call
        # the learned interpolator runs in the denoiser's precision, as it would beside a bf16 model
        student_runs = student_setups(lora, switch_index, interpolator, interpolator_dtype)
        # chunk by chunk in turn: interp_cost_ratio compares the two under the same machine speed
        student_denoiser = DiffusersWanDenoiser(model, dtype)
        student_rows, _ = evaluate_setups(student_denoiser, student_runs, eval_set, batch_size, interleave=True)
        rows += student_rows[1:]  # one data row
        cost_passes = [rows[-1]["seconds"] / rows[-2]["seconds"],
                       *cost_ratio_passes(student_denoiser, student_runs, eval_set, batch_size, timing_passes - 1)]
        ratios["interp_cost_ratio"] = statistics.median(cost_passes)
    rows = [{key: row[key] for key in ROW_KEYS} | {k: v for k, v in row.items() if k not in ROW_KEYS} for row in rows]
    return {"teacher": str(teacher or "shipped"), "lora": str(lora) if lora else None,
            "switch_index": switch_index if lora else None, "interpolator": interpolator if lora else None,
            "interpolator_dtype": (interpolator_dtype or "float32") if lora else None,
            "clips_per_row": len(eval_set.attributes()), "interp_cost_passes": cost_passes,
            "rows": rows, "ratios": ({} if student_only else speedups(rows)) | ratios}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", type=Path, default=None, help="teacher file or pretraining state.pt (default: shipped)")
    parser.add_argument("--repeats", type=int, default=1, help="clips per row = 96 x repeats")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lora", default=None,
                        help="student LoRA for the student rows (default: the shipped toy student; 'none': no student rows)")
    parser.add_argument("--switch-index", type=int, default=2,
                        help="interpolated student row: steps run on every second latent frame before interpolating")
    parser.add_argument("--interpolator", default="learned",
                        help="interpolated student row: the latent interpolator (learned: the shipped one; or a "
                             "training-free method: linear, slerp, motion_compensated)")
    parser.add_argument("--max-clips", type=int, default=None, help="score only the first N clips (quick checks)")
    parser.add_argument("--save-reference", type=Path, default=None,
                        help="also record the teacher rows here for reuse by the distillation report "
                             "(scripts/ship_toy_models.sh writes trainer/toy/assets/teacher_reference.json)")
    parser.add_argument("--student-only", action="store_true",
                        help="skip the teacher rows (and speedups): data, student and interpolated student rows only")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--timing-passes", type=int, default=3,
                        help="times the two student rows are timed (the first pass is the scored one); "
                             "interp_cost_ratio is the median of the passes' ratios")
    parser.add_argument("--json", action="store_true")


def resolve_lora(value: str | None) -> Path | None:
    from ..toy.student import shipped_student

    if value is None:
        return shipped_student()
    if value == "none":
        return None
    if not Path(value).is_file():
        raise FileNotFoundError(f"--lora {value}: no such file")
    return Path(value)


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_sampling_bench(args.teacher, args.repeats, args.batch_size, lora=resolve_lora(args.lora),
                                switch_index=args.switch_index, max_clips=args.max_clips,
                                save_reference=args.save_reference, student_only=args.student_only,
                                interpolator=args.interpolator, timing_passes=args.timing_passes)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in result["rows"]:
            print("  ".join(f"{k}={row[k]:.3g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in ROW_KEYS))
        print(json.dumps(result["ratios"]))
    return 0
