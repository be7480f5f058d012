"""Typed config dataclasses from files and command-line flags.

Every job's settings are one dataclass. ``add_dataclass_flags`` exposes each field as
``--field-name`` (booleans as ``--flag/--no-flag``), ``load_config`` reads a TOML or JSON file
(unknown keys are errors, so a typo never silently falls back to a default) and applies the flags
the user actually gave on top.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import typing
from pathlib import Path


def _field_type(cls, field: dataclasses.Field):
    hints = typing.get_type_hints(cls)
    tp = hints[field.name]
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0]
    return tp


NESTED_SEPARATOR = "__"


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, prefix: str = "") -> None:
    """``--field-name`` per field; a nested dataclass field ``adv`` gives ``--adv.field-name``."""
    for field in dataclasses.fields(cls):
        flag = "--" + prefix.replace(NESTED_SEPARATOR, ".") + field.name.replace("_", "-")
        dest = prefix + field.name
        tp = _field_type(cls, field)
        help_text = field.metadata.get("help", "")
        if dataclasses.is_dataclass(tp):
            add_dataclass_flags(parser, tp, prefix=f"{dest}{NESTED_SEPARATOR}")
        elif tp is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        elif typing.get_origin(tp) in (list, tuple):
            inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
            parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=help_text,
                                type=lambda s, inner=inner: [inner(x) for x in s.split(",") if x.strip()])
        elif tp in (int, float, str, Path):
            parser.add_argument(flag, dest=dest, type=tp, default=argparse.SUPPRESS, help=help_text)


def changed_flags(cfg, other, prefix: str = "") -> list[str]:
    """The command-line flags that turn dataclass ``cfg`` into ``other`` (same class; scalar fields), in
    field order: ``--prefix.field-name value``, booleans as ``--[no-]prefix.field-name`` (as
    ``add_dataclass_flags`` defines them)."""
    lead = prefix + "." if prefix else ""
    flags = []
    for field in dataclasses.fields(cfg):
        value = getattr(other, field.name)
        if value == getattr(cfg, field.name):
            continue
        name = field.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{'' if value else 'no-'}{lead}{name}")
        else:
            flags.append(f"--{lead}{name} {value}")
    return flags


def read_config_file(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.suffix == ".toml":
        return tomllib.loads(path.read_text())
    if path.suffix == ".json":
        return json.loads(path.read_text())
    raise ValueError(f"config file must be .toml or .json, got {path.name}")


def _field_default(field: dataclasses.Field):
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def build_config(cls, values: dict, where: str = "config", base=None):
    """Construct ``cls`` from a dict; unknown keys raise with the list of known ones.

    Fields the dict leaves out keep ``base``'s values (default: ``cls``'s own defaults). A nested
    table starts from the parent's default for that field, so ``--adv.teacher-cfg 2`` changes one
    setting of the job's ADV defaults instead of falling back to ``AdvConfig``'s published ones.
    """
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown {where} keys {unknown}; known keys: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        tp = _field_type(cls, known[name])
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            start = getattr(base, name) if base is not None else _field_default(known[name])
            value = build_config(tp, value, where=f"{where}.{name}", base=start if isinstance(start, tp) else None)
        elif tp is Path and value is not None:
            value = Path(value)
        elif typing.get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def load_config(cls, args: argparse.Namespace, config_path: Path | None = None):
    """File values, then the flags the user gave on top (nested flags merge into nested tables)."""
    values = read_config_file(config_path) if config_path else {}
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in vars(args).items():
        path = key.split(NESTED_SEPARATOR)
        if path[0] not in names:
            continue
        target = values
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return build_config(cls, values)


def config_to_dict(cfg) -> dict:
    def convert(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        return v

    return convert(dataclasses.asdict(cfg))
