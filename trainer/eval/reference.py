"""Reusing the teacher's measured reference rows instead of sampling them again.

Sampling the toy teacher at 50 steps with CFG on the 96-clip evaluation set takes about five
minutes on two CPU cores, and its rows are a pure function of the teacher file, the sampling setup,
the evaluation set, the batch size, the dtype and the torch version. ``python -m trainer bench
sampling`` measures them side by side with everything else and records them here, keyed by all of
those; the distillation job's report (``python -m trainer distill``) then takes the teacher rows
from a record whose key matches exactly and samples the teacher only for the few clips its report
shows. Any difference (another teacher file, setup, torch version, ...) finds no record, and the
rows are measured as before. The report says which it did.

Records live in the shipped ``trainer/toy/assets/teacher_reference.json`` (for the shipped
teacher, written by ``scripts/ship_toy_models.sh``) and in a per-user cache file per teacher.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch

from ..checkpoint import atomic_write_json
from .generate import EvalSet, SamplingSetup

SHIPPED_REFERENCE = Path(__file__).resolve().parents[1] / "toy" / "assets" / "teacher_reference.json"
CACHE_DIR = Path.home() / ".cache" / "comfyui-stride" / "reference"
# bump when metrics.score_videos or the classifier change what a row holds
FORMAT = 2  # 2: rows hold warping_error_object and warping_error_background


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value):
    return json.loads(json.dumps(value))  # tuples -> lists, as they come back from a file


def record_key(teacher_sha256: str, eval_set: EvalSet, batch_size: int, bf16: bool) -> dict:
    """Everything besides the setup that decides a teacher row."""
    return _jsonable({"format": FORMAT, "teacher_sha256": teacher_sha256, "eval_set": eval_set.key(),
                      "batch_size": batch_size, "bf16": bool(bf16), "torch": torch.__version__})


def _read(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def cache_path(teacher_sha256: str) -> Path:
    return CACHE_DIR / f"teacher_{teacher_sha256[:16]}.json"


def find_rows(key: dict, setups: list[SamplingSetup], places: list[Path] | None = None) -> tuple[list[dict], str] | None:
    """The rows of ``setups`` (in order) from the first record whose key matches and that holds every
    setup with identical settings, and where that record is; None when there is none."""
    places = places if places is not None else [SHIPPED_REFERENCE, cache_path(key["teacher_sha256"])]
    for place in places:
        record = _read(place)
        if not record or record.get("key") != key:
            continue
        entries = record.get("setups", {})
        wanted = [(s.name, _jsonable(dataclasses.asdict(s))) for s in setups]
        if all(name in entries and entries[name]["setup"] == setup for name, setup in wanted):
            return [dict(entries[name]["row"]) for name, _ in wanted], f"{place} ({record.get('measured_by', '?')})"
    return None


def save_rows(path: Path, key: dict, setups: list[SamplingSetup], rows: list[dict], measured_by: str) -> Path:
    """Write (atomically) a record of the rows of ``setups``; rows are matched to setups by name."""
    by_name = {row["name"]: row for row in rows}
    missing = [s.name for s in setups if s.name not in by_name]
    if missing:
        raise ValueError(f"no rows for setups {missing}")
    record = {"key": key, "measured_by": measured_by,
              "setups": {s.name: {"setup": dataclasses.asdict(s), "row": by_name[s.name]} for s in setups}}
    atomic_write_json(_jsonable(record), Path(path))
    return Path(path)
