"""Where interpolated sampling loses quality: a student LoRA sampled with every switch index and interpolator
asked for, side by side with its full-length sampling (README, "Sampling benchmark").

Each SPEC is ``SWITCH:INTERPOLATOR``: the first SWITCH steps run on every second latent frame, then the
interpolator (``learned``, ``linear``, ``slerp``, ``motion_compensated``) rebuilds full length. SWITCH may
equal the number of steps (every step at half length, the final sample interpolated), which
``bench sampling --switch-index`` does not take because it measures a cost. Same 96 prompts and noise as
``bench sampling``, one thread, bf16, scores only (no timing).

    python scripts/interp_switch_sweep.py 4:learned 4:linear 3:learned 2:learned 1:learned [--lora FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.backends.diffusers_wan import DiffusersWanDenoiser  # noqa: E402
from trainer.bench.sampling import resolve_lora, student_setups  # noqa: E402
from trainer.eval.evaluate import evaluate_setups  # noqa: E402
from trainer.eval.generate import EvalSet  # noqa: E402
from trainer.interp.model import check_interpolator_name  # noqa: E402
from trainer.lora.export import load_comfy_lora_into_diffusers  # noqa: E402
from trainer.lora.inject import fuse_adapter  # noqa: E402
from trainer.toy.teacher import load_teacher_any  # noqa: E402

COLUMNS = ("fd", "acc_shape", "acc_direction", "acc_speed", "warping_error", "flicker", "saturation_mean")


def parse_spec(spec: str) -> tuple[int, str]:
    switch, _, name = spec.partition(":")
    if not switch.isdigit() or not name:
        raise argparse.ArgumentTypeError(f"a spec is SWITCH:INTERPOLATOR, e.g. 2:learned; got {spec!r}")
    check_interpolator_name(name)
    return int(switch), name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+", type=parse_spec)
    parser.add_argument("--lora", default=None, help="a Stride LoRA (default: the shipped toy student)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lora = resolve_lora(args.lora)
    full, interp = student_setups(lora, 1, "learned", "bfloat16")
    setups = [full]
    for switch, name in args.specs:
        if not 1 <= switch <= full.steps:
            parser.error(f"switch {switch} is not in [1, {full.steps}] for a {full.steps}-step student")
        options = dict(interp.sampler_options, switch_index=switch, interpolator=name)
        if name != "learned":
            options.pop("interpolator_dtype", None)
        setups.append(dataclasses.replace(interp, name=f"switch{switch}_{name}", sampler_options=options))
    model = load_teacher_any(None)
    load_comfy_lora_into_diffusers(model, lora, "student")
    fuse_adapter(model, "student")  # as bench sampling samples it
    rows, _ = evaluate_setups(DiffusersWanDenoiser(model, torch.bfloat16), setups, EvalSet(), 32)
    print("| row | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for row in rows:
        print(f"| {row['name']} | " + " | ".join(f"{row[c]:.4g}" for c in COLUMNS) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
