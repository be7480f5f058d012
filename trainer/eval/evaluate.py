"""``python -m trainer eval``: score sampling setups of the toy teacher (or a student) on the domain.

One call samples every setup on the same evaluation prompts and noise, scores each against
held-out domain clips with ``metrics.score_videos`` and writes ``<out>/eval.json`` and an HTML
report with frame grids and animated previews. The ``data`` row scores held-out clips themselves
(no sampling), the ceiling every other row is read against.
"""

from __future__ import annotations

import argparse
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backends.diffusers_wan import DiffusersWanDenoiser
from ..toy.teacher import TOY_TEACHER_CFG
from .generate import EvalSet, SamplingSetup, data_videos, generate, generate_interleaved

# the setups users compare: the teacher's reference and the few-step configurations
PRESET_SETUPS = {
    "teacher_50_cfg": SamplingSetup("teacher_50_cfg", steps=50, cfg=TOY_TEACHER_CFG, sampler="stride_flow",
                                    sampler_options={"order": 1}, schedule="shifted", shift=3.0),
    "teacher_4": SamplingSetup("teacher_4", steps=4, cfg=TOY_TEACHER_CFG, sampler="stride_flow",
                               sampler_options={"order": 2}, schedule="shifted", shift=3.0),
    "teacher_8": SamplingSetup("teacher_8", steps=8, cfg=TOY_TEACHER_CFG, sampler="stride_flow",
                               sampler_options={"order": 2}, schedule="shifted", shift=3.0),
}


@dataclass
class EvalConfig:
    teacher: Path | None = None  # shipped teacher by default; a .safetensors file or a pretraining state.pt
    lora: Path | None = None  # a Stride LoRA (ComfyUI keys) applied to the teacher for every setup below
    setups: list[str] | None = None  # names from PRESET_SETUPS (default: all; with --lora: "student")
    # a custom setup, added when custom_steps > 0 (any sampler, schedule, step count and CFG)
    custom_name: str = "custom"
    custom_steps: int = 0
    custom_cfg: float = 1.0
    custom_sampler: str = "stride_consistency"
    custom_order: int = 0  # stride_flow's order (1 or 2); 0 leaves the sampler's default
    custom_gamma: float = -1.0  # stride_consistency's share of fresh noise per step (0-1); < 0 leaves its default
    custom_schedule: str = "shifted"  # shifted | student | token
    custom_shift: float = 3.0
    custom_step_list: str = ""  # for schedule "student": e.g. 1000,900,757,522
    repeats: int = 1  # evaluation clips = 96 attribute combinations x repeats
    max_clips: int = 0  # > 0: only the first max_clips clips (quick checks)
    seed: int = 1234
    batch_size: int = 32
    bf16: bool = True  # bf16 autocast for the teacher on the CPU (the dtype it was trained in)
    threads: int = 0
    out: Path = Path("runs/eval")


def format_row(row: dict) -> str:
    """One line of the headline metrics of a row, for terminal output."""
    return (f"{row['name']:<16} fd {row['fd']:.3f}  prompt_acc {row['prompt_acc']:.2f}  motion_acc "
            f"{row['motion_acc']:.2f}  dynamic {row['dynamic_degree']:.2f}  seconds {row['seconds']:.1f}")


def row_from_scores(name: str, scores: dict, nfe: int, seconds: float) -> dict:
    return {"name": name, "nfe": nfe, "seconds": round(seconds, 3), **scores}


def evaluate_setups(denoiser, setups: list[SamplingSetup], eval_set: EvalSet, batch_size: int = 32,
                    classifier=None, interleave: bool = False) -> tuple[list[dict], dict]:
    """Rows (data first) and the sampled videos per row name. ``interleave`` samples the setups chunk by
    chunk in turn (``generate_interleaved``: same videos, seconds that compare fairly between the rows)."""
    from .classifier import load_classifier
    from .metrics import score_videos

    classifier = classifier or load_classifier()
    attrs = eval_set.attributes()
    prompts, seeds = eval_set.prompts_and_seeds()
    reference = data_videos(eval_set)
    # a second, disjoint draw of real clips scores the data row against the reference data
    data_row_videos = data_videos(eval_set, seed_offset=90_000_000)
    rows = [row_from_scores("data", score_videos(data_row_videos, attrs, reference, classifier), 0, 0.0)]
    samples = {"data": (data_row_videos, prompts)}
    if interleave:
        sampled = generate_interleaved(denoiser, setups, prompts, seeds, batch_size)
    else:
        sampled = (generate(denoiser, setup, prompts, seeds, batch_size) for setup in setups)
    for setup, (videos, seconds) in zip(setups, sampled):
        rows.append(row_from_scores(setup.name, score_videos(videos, attrs, reference, classifier), setup.nfe, seconds))
        samples[setup.name] = (videos, prompts)
    return rows, samples


def confusion_by_row(samples: dict, classifier) -> dict[str, dict]:
    """``metrics.attribute_confusion`` of every row's videos (``samples``: name -> (videos, prompts))."""
    from .metrics import attribute_confusion

    return {name: attribute_confusion(videos, prompts, classifier) for name, (videos, prompts) in samples.items()}


def student_sampling_setup(method: str, step_list, shift: float, name: str, gamma: float = 1.0) -> SamplingSetup:
    """How a student of ``method`` is sampled: its own step list and shift, no CFG, its method's sampler
    (re-noising with ``gamma``, the student's share of fresh noise, where that sampler has one)."""
    from ..methods import method_registry

    if method not in method_registry():
        raise ValueError(f"student {name!r}: trained with unknown method {method!r}")
    sampler, options = method_registry()[method].student_sampler
    if "gamma" in options:
        options = {**options, "gamma": float(gamma)}
    elif gamma != 1.0:
        raise ValueError(f"student {name!r}: method {method!r} samples with {sampler}, which has no gamma "
                         f"(got student gamma {gamma})")
    steps = tuple(float(t) for t in step_list)
    return SamplingSetup(name, steps=len(steps), cfg=1.0, sampler=sampler, sampler_options=dict(options),
                         schedule="student", step_list=steps, shift=float(shift))


def lora_student_setup(path: Path, name: str = "student") -> SamplingSetup:
    """How the LoRA's training says to sample it (its metadata's method, step list and shift)."""
    from ..lora.export import read_stride_metadata

    meta = read_stride_metadata(path)
    return student_sampling_setup(meta["method"], meta["student_step_list"], meta["shift"], name,
                                  meta["student_gamma"])


def custom_setup(cfg: EvalConfig) -> SamplingSetup:
    from ..sampling.samplers import check_gamma, sampler_registry
    from ..sampling.schedules import parse_step_list

    step_list = tuple(parse_step_list(cfg.custom_step_list)) if cfg.custom_step_list else ()
    options = {"order": cfg.custom_order} if cfg.custom_order else {}
    if cfg.custom_gamma >= 0:  # below 0: the sampler's default
        options["gamma"] = check_gamma(cfg.custom_gamma, "--custom-gamma")
    sampler = sampler_registry().get(cfg.custom_sampler)  # an unknown name: SamplingSetup says which exist
    foreign = [name for name in options if sampler is not None and name not in inspect.signature(sampler).parameters]
    if foreign:
        raise ValueError(f"sampler {cfg.custom_sampler!r} has no option {foreign[0]!r} (--custom-{foreign[0]})")
    return SamplingSetup(cfg.custom_name, steps=cfg.custom_steps, cfg=cfg.custom_cfg, sampler=cfg.custom_sampler,
                         sampler_options=options, schedule=cfg.custom_schedule, shift=cfg.custom_shift,
                         step_list=step_list)


def setups_for(cfg: EvalConfig) -> list[SamplingSetup]:
    """The presets named in ``setups`` ("student" = the LoRA's own), plus the custom setup if asked for."""
    default = (["student"] if cfg.lora else list(PRESET_SETUPS)) if cfg.custom_steps <= 0 else []
    names = cfg.setups if cfg.setups is not None else default
    known = [*PRESET_SETUPS, *(["student"] if cfg.lora else [])]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown setups {unknown}; known: {', '.join(known)}"
                         + ("" if cfg.lora else " ('student' needs --lora)"))
    setups = [lora_student_setup(Path(cfg.lora)) if n == "student" else PRESET_SETUPS[n] for n in names]
    if cfg.custom_steps > 0:
        setups.append(custom_setup(cfg))
    if not setups:
        raise ValueError("nothing to evaluate: name setups or give --custom-steps")
    return setups


def run_eval(cfg: EvalConfig) -> dict:
    from ..lora.export import load_comfy_lora_into_diffusers
    from ..lora.inject import fuse_adapter
    from ..toy.teacher import load_teacher_any
    from .classifier import load_classifier
    from .report import write_html_report

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    setups = setups_for(cfg)
    model = load_teacher_any(cfg.teacher)
    if cfg.lora:
        load_comfy_lora_into_diffusers(model, cfg.lora, "eval_lora")
        fuse_adapter(model, "eval_lora")  # sampled as ComfyUI runs a LoRA: merged into the weights
    denoiser = DiffusersWanDenoiser(model, torch.bfloat16 if cfg.bf16 else None)
    classifier = load_classifier()  # one load serves the rows' scores and their confusion matrices
    rows, samples = evaluate_setups(denoiser, setups, EvalSet(repeats=cfg.repeats, seed=cfg.seed, max_clips=cfg.max_clips or None),
                                    cfg.batch_size, classifier=classifier)
    out = Path(cfg.out)
    names = [s.name for s in setups]
    result = {"teacher": str(cfg.teacher or "shipped"), "lora": str(cfg.lora) if cfg.lora else None, "rows": rows,
              "confusion": confusion_by_row(samples, classifier)}
    write_html_report(out / "report.html", "Stride toy evaluation", rows, samples,
                      notes=json.dumps({"teacher": result["teacher"], "lora": result["lora"], "setups": names,
                                        "repeats": cfg.repeats}),
                      json_path=out / "eval.json")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..config import add_dataclass_flags

    add_dataclass_flags(parser, EvalConfig)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config

    cfg = load_config(EvalConfig, args, args.config)
    result = run_eval(cfg)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in result["rows"]:
            print(format_row(row))
        print(f"report: {Path(cfg.out) / 'report.html'}")
    return 0
