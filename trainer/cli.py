"""Command-line entry points. Each subcommand maps to one function through a registry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import add_dataclass_flags, load_config


def _toy_pretrain(args):
    from .toy.pretrain import PretrainConfig, pretrain

    cfg = load_config(PretrainConfig, args, args.config)
    pretrain(cfg)
    return 0


def _toy_export(args):
    from .toy.pretrain import PretrainConfig, export
    from .toy.teacher import WEIGHTS_PATH

    cfg = load_config(PretrainConfig, args, args.config)
    out = export(cfg, Path(args.out) if args.out else WEIGHTS_PATH, args.weights)
    print(f"wrote {out}")
    return 0


def _toy_probe(args):
    import json

    from .toy.pretrain import probe

    print(json.dumps(probe(args.path, args.weights), indent=2))
    return 0


# bench name -> module with add_arguments(parser) and run(args) -> int
BENCHES = {
    "schedules": "schedules",
    "interpolation": "interpolation",
    "sampling": "sampling",
    "distill": "distill",
}


def _bench(args):
    import importlib

    module = importlib.import_module(f".bench.{BENCHES[args.bench]}", __package__)
    return module.run(args)


def _add_bench_parsers(sub) -> None:
    import importlib

    bench = sub.add_parser("bench", help="side-by-side benchmarks that print one JSON object")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    for name, module_name in BENCHES.items():
        try:
            module = importlib.import_module(f".bench.{module_name}", __package__)
        except ModuleNotFoundError as err:  # a bench whose module is not in this checkout
            if err.name and err.name.endswith(module_name):
                continue
            raise
        p = bench_sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(p)
        p.set_defaults(func=_bench)


def build_parser() -> argparse.ArgumentParser:
    from .toy.pretrain import PretrainConfig

    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    toy = sub.add_parser("toy", help="the synthetic video domain and its tiny teacher")
    toy_sub = toy.add_subparsers(dest="toy_command", required=True)
    p = toy_sub.add_parser("pretrain", help="train (or resume) the tiny Wan teacher on the CPU")
    p.add_argument("--config", type=Path, default=None)
    add_dataclass_flags(p, PretrainConfig)
    p.set_defaults(func=_toy_pretrain)
    from .eval import classifier

    p = toy_sub.add_parser("classifier", help="train the attribute classifier / feature network the metrics use")
    classifier.add_arguments(p)
    p.set_defaults(func=classifier.run)
    from .interp import train as interp_train

    p = sub.add_parser("interp", help="train the learned latent interpolator (default: on toy-domain latents)")
    interp_train.add_arguments(p)
    p.set_defaults(func=interp_train.run)
    p = toy_sub.add_parser("export", help="write the EMA teacher weights as a compact bf16 file")
    p.add_argument("--config", type=Path, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--weights", choices=("ema", "model"), default="ema",
                   help="ema: what ships; model: the raw weights, to continue training from")
    add_dataclass_flags(p, PretrainConfig)
    p.set_defaults(func=_toy_export)
    p = toy_sub.add_parser("probe", help="does the teacher use its prompt's words? loss gaps with words swapped")
    p.add_argument("path", type=Path, help="a pretraining state.pt or a compact teacher file")
    p.add_argument("--weights", choices=("model", "ema"), default="model", help="which weights of a state.pt")
    p.set_defaults(func=_toy_probe)
    from .toy import card

    p = toy_sub.add_parser("card", help="write the teacher's model card (steps, wall-clock, metrics)")
    card.add_arguments(p)
    p.set_defaults(func=card.run)
    _add_bench_parsers(sub)
    from .distill import job
    from .eval import evaluate

    p = sub.add_parser("distill", help="distil a few-step student LoRA (default: the toy teacher, ADV, 4 steps)")
    job.add_arguments(p)
    p.set_defaults(func=job.run)

    p = sub.add_parser("eval", help="score teacher or student sampling setups on the toy domain (JSON + HTML)")
    evaluate.add_arguments(p)
    p.set_defaults(func=evaluate.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:  # bad input: say what, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
