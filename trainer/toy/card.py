"""The toy teacher's model card: what was trained, how, for how long, and how well it samples.

``python -m trainer toy card`` reads the compact weights (their ``stride.*`` metadata), the
pretraining logs of every run in the weights' lineage (``log.jsonl``: one record per validation,
``elapsed_s`` restarting at each resume) and optionally an ``eval.json`` from ``python -m trainer
eval``, and writes Markdown. Wall-clock is the sum over log segments of each segment's last
``elapsed_s``: a lower bound, since the steps after a segment's last validation are not logged.
Runs whose logs are no longer kept (a lost machine) enter as ``prior_hours`` over ``prior_runs``,
taken from the previous card and named as such on the new one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

CARD_COLUMNS = ("name", "nfe", "seconds", "fd", "prompt_acc", "motion_acc", "acc_direction", "acc_speed",
                "dynamic_degree", "motion_smoothness", "warping_error", "flicker", "saturation_mean")


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def logged_seconds(records: list[dict]) -> float:
    """Sum of each process segment's last ``elapsed_s`` (a segment ends where elapsed_s drops)."""
    total, last = 0.0, None
    for record in records:
        elapsed = float(record["elapsed_s"])
        if last is not None and elapsed < last:
            total += last
        last = elapsed
    return total + (last or 0.0)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return dict(handle.metadata() or {})


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def model_card(weights: Path, logs: list[Path], eval_json: Path | None, command: str, notes: str = "",
               prior_hours: float = 0.0, prior_runs: int = 0) -> str:
    if prior_hours < 0 or prior_runs < 0 or (prior_hours > 0) != (prior_runs > 0):
        raise ValueError(f"prior_hours and prior_runs go together and are >= 0, got {prior_hours} h over {prior_runs} run(s)")
    weights = Path(weights)
    meta = _metadata(weights)
    records = [r for path in logs for r in read_log(path)]
    seconds = sum(logged_seconds(read_log(path)) for path in logs)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    arch = {k.removeprefix("stride.arch."): v for k, v in meta.items() if k.startswith("stride.arch.")}
    lines = [
        "# Toy Wan 2.1 teacher (ComfyUI-Stride)",
        "",
        f"- file: `{weights.name}`, {weights.stat().st_size / 1e6:.1f} MB, sha256 `{digest[:16]}...`",
        f"- architecture: Wan 2.1 ({', '.join(f'{k} {v}' for k, v in sorted(arch.items()))}); loads in ComfyUI's "
        "stock loader and in diffusers `WanTransformer3DModel` with the same predictions",
        f"- training steps: {meta.get('stride.steps', 'unknown')}",
        f"- wall-clock (logged, 2 CPU cores): {seconds / 3600 + prior_hours:.2f} h over {len(logs) + prior_runs} run(s)"
        + (f" ({prior_hours:.2f} h over {prior_runs} earlier run(s) from the previous card; their logs are not kept)"
           if prior_runs else ""),
        f"- command: `{command}`",
    ]
    if notes:
        lines += ["", notes]
    if records:
        val = records[-1]["val"]
        lines += ["", "## Last validation (EMA, flow loss on held-out clips, sigma 0.3-0.95)", "",
                  "| true prompt | direction swapped | speed swapped | no prompt |", "|---|---|---|---|",
                  f"| {val['true']:.4f} | {val['swap_direction']:.4f} | {val['swap_speed']:.4f} | {val['null']:.4f} |"]
    if eval_json is not None:
        rows = json.loads(Path(eval_json).read_text())["rows"]
        lines += ["", f"## Sampling metrics (`python -m trainer eval`, from `{Path(eval_json).name}`)", "",
                  "| " + " | ".join(CARD_COLUMNS) + " |", "|" + "---|" * len(CARD_COLUMNS)]
        lines += ["| " + " | ".join(_format(row.get(c, "")) for c in CARD_COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, required=True, help="compact teacher file (toy export)")
    parser.add_argument("--logs", type=Path, nargs="+", required=True,
                        help="log.jsonl of every pretraining run in the weights' lineage, oldest first")
    parser.add_argument("--eval", type=Path, default=None, help="eval.json from python -m trainer eval")
    parser.add_argument("--command", required=True, help="the command that trained it, as a user would type it")
    parser.add_argument("--notes", default="", help="free text (what was changed between runs and why)")
    parser.add_argument("--prior-hours", type=float, default=0.0,
                        help="logged hours of earlier runs in the lineage whose logs are gone (from the previous card)")
    parser.add_argument("--prior-runs", type=int, default=0, help="how many runs --prior-hours covers")
    parser.add_argument("--out", type=Path, required=True)


def run(args: argparse.Namespace) -> int:
    text = model_card(args.weights, args.logs, args.eval, args.command, args.notes, args.prior_hours, args.prior_runs)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0
