"""Temporal-aware schedule search ("optimal steps" for video) and the named presets it saves.

This module owns the search for an N-step sigma schedule whose solution lands closest to a
many-step reference solved from the same noise. It differs from Optimal-Steps-style searches in
its objective: next to the per-frame error it counts the error of frame differences, so a
schedule that gets every frame roughly right but flickers between them scores worse
(``schedule_error``). The search is bounded coordinate descent: each interior sigma in turn is
golden-section searched between its two neighbours, which keeps the schedule strictly decreasing
with fixed end points; the best schedule seen is returned. The caller supplies ``solve`` and the
reference, so the search is model-agnostic and runs on an analytic denoiser in the tests. Found
schedules are saved as ``<name>.json`` presets through the project's atomic writer.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint import atomic_write_json

PRESET_FORMAT = "comfyui-stride/schedule-preset/1"
_PRESET_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_INVERSE_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass
class ScheduleSearchConfig:
    steps: int
    reference_steps: int = 50  # how the caller's reference was solved; recorded, not used here
    temporal_weight: float = 1.0
    iterations: int = 3  # coordinate-descent sweeps over all interior sigmas
    evals_per_coordinate: int = 8
    sigma_max: float = 1.0
    sigma_min: float = 0.0  # the final sigma; 0 for a schedule that ends in a clean sample

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.iterations < 0 or self.evals_per_coordinate < 1:
            raise ValueError("iterations must be >= 0 and evals_per_coordinate >= 1")
        if self.temporal_weight < 0:
            raise ValueError(f"temporal_weight must be >= 0, got {self.temporal_weight}")
        if not 0 <= self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 <= sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")


def schedule_error(x: torch.Tensor, reference: torch.Tensor, temporal_weight: float = 1.0) -> torch.Tensor:
    """Per-frame MSE plus ``temporal_weight`` times the MSE of frame differences, for ``[B, C, F, H, W]``.

    With one frame there are no differences and the temporal term is 0.
    """
    if x.shape != reference.shape or x.ndim != 5:
        raise ValueError(f"need two [B, C, F, H, W] tensors of one shape, "
                         f"got {tuple(x.shape)} and {tuple(reference.shape)}")
    error = x - reference
    frame_error = error.pow(2).mean()
    if x.shape[2] < 2 or temporal_weight == 0:
        return frame_error
    # The difference of errors is the error of differences: (x[f+1]-x[f]) - (ref[f+1]-ref[f]).
    temporal_error = (error[:, :, 1:] - error[:, :, :-1]).pow(2).mean()
    return frame_error + temporal_weight * temporal_error


def linear_schedule(cfg: ScheduleSearchConfig) -> torch.Tensor:
    return torch.linspace(cfg.sigma_max, cfg.sigma_min, cfg.steps + 1, dtype=torch.float64)


def search_schedule(
    solve: Callable[[torch.Tensor], torch.Tensor],
    reference: torch.Tensor,
    cfg: ScheduleSearchConfig,
    initial: torch.Tensor | None = None,
):
    """Minimise ``schedule_error(solve(sigmas), reference)`` over the interior sigmas.

    ``solve(sigmas)`` runs a ``len(sigmas) - 1``-step solution from fixed noise; ``reference`` is
    the many-step solution from the same noise. Starts from ``initial`` (its end points must be
    ``cfg.sigma_max`` and ``cfg.sigma_min``) or a linear schedule. Returns ``(sigmas, info)``:
    the best float64 schedule seen and a JSON-ready dict with ``initial_error``, ``final_error``,
    ``evaluations``, ``initial_sigmas``, ``sweep_errors`` and the config.
    """
    cfg.validate()
    sigmas = linear_schedule(cfg) if initial is None else _checked_initial(initial, cfg)
    reference = reference.detach()
    evaluations = 0

    def error_of(candidate: torch.Tensor) -> float:
        nonlocal evaluations
        evaluations += 1
        with torch.no_grad():
            solution = solve(candidate.clone())
        return float(schedule_error(solution.to(reference), reference, cfg.temporal_weight))

    best_error = initial_error = error_of(sigmas)
    best = sigmas.clone()
    sweep_errors = []
    for _ in range(cfg.iterations):
        for index in range(1, cfg.steps):
            best, best_error = _golden_section(error_of, best, best_error, index, cfg.evals_per_coordinate)
        sweep_errors.append(best_error)
    info = {
        "initial_error": initial_error,
        "final_error": best_error,
        "evaluations": evaluations,
        "initial_sigmas": sigmas.tolist(),
        "sweep_errors": sweep_errors,
        "config": asdict(cfg),
    }
    return best, info


def _golden_section(error_of, sigmas: torch.Tensor, current_error: float, index: int, evaluations: int):
    """Golden-section search of ``sigmas[index]`` strictly between its neighbours.

    Every probe lies strictly inside the bracket, so order is kept; the current value competes,
    so a coordinate never gets worse even where the error is not unimodal.
    """
    low, high = float(sigmas[index + 1]), float(sigmas[index - 1])
    best, best_error = sigmas, current_error
    cache: dict[float, float] = {}

    def probe(value: float) -> float:
        nonlocal best, best_error
        if value not in cache:
            candidate = sigmas.clone()
            candidate[index] = value
            cache[value] = error_of(candidate)
            if cache[value] < best_error:
                best, best_error = candidate, cache[value]
        return cache[value]

    left = high - _INVERSE_GOLDEN * (high - low)
    right = low + _INVERSE_GOLDEN * (high - low)
    left_error = probe(left)
    right_error = probe(right) if evaluations > 1 else math.inf
    for _ in range(evaluations - 2):
        if left_error <= right_error:
            high, right, right_error = right, left, left_error
            left = high - _INVERSE_GOLDEN * (high - low)
            left_error = probe(left)
        else:
            low, left, left_error = left, right, right_error
            right = low + _INVERSE_GOLDEN * (high - low)
            right_error = probe(right)
    return best, best_error


def _checked_initial(initial, cfg: ScheduleSearchConfig) -> torch.Tensor:
    sigmas = torch.as_tensor(initial).detach().to(torch.float64).flatten().clone()
    if len(sigmas) != cfg.steps + 1:
        raise ValueError(f"initial schedule has {len(sigmas) - 1} steps, config says {cfg.steps}")
    if not (sigmas[1:] < sigmas[:-1]).all():
        raise ValueError(f"initial schedule must be strictly decreasing, got {sigmas.tolist()}")
    for got, want, which in ((sigmas[0], cfg.sigma_max, "sigma_max"), (sigmas[-1], cfg.sigma_min, "sigma_min")):
        if not math.isclose(float(got), want, rel_tol=1e-6, abs_tol=1e-6):
            raise ValueError(f"initial schedule ends at {float(got)}, config {which} is {want}")
    return sigmas


def validate_preset_name(name: str) -> str:
    """A preset name is a plain file stem: letters, digits, ``_ . -``, and no ``..``."""
    if not isinstance(name, str) or not _PRESET_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"invalid preset name {name!r}: use letters, digits, '_', '.', '-' and no '..'")
    return name


def save_preset(directory, name: str, sigmas, meta: dict | None = None) -> Path:
    """Write ``<directory>/<name>.json`` atomically; returns its path. ``meta`` must be JSON-ready."""
    path = _preset_path(directory, name)
    values = _checked_preset_sigmas(sigmas, name)
    atomic_write_json({"format": PRESET_FORMAT, "name": name, "sigmas": values, "meta": meta or {}}, path)
    return path


def load_preset(directory, name: str):
    """``(sigmas, meta)`` of a saved preset: a float32 SIGMAS tensor and the saved meta dict."""
    path = _preset_path(directory, name)
    if not path.is_file():
        raise FileNotFoundError(f"no schedule preset {name!r} in {directory}")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != PRESET_FORMAT:
        raise ValueError(f"{path} is not a schedule preset ({PRESET_FORMAT})")
    values = _checked_preset_sigmas(data.get("sigmas"), name)
    return torch.tensor(values, dtype=torch.float32), data.get("meta", {})


def list_presets(directory) -> list[str]:
    """Sorted names of the presets in ``directory`` (none if it does not exist)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    names = []
    for path in directory.glob("*.json"):
        try:
            names.append(validate_preset_name(path.stem))
        except ValueError:
            continue
    return sorted(names)


def _preset_path(directory, name: str) -> Path:
    return Path(directory) / f"{validate_preset_name(name)}.json"


def _checked_preset_sigmas(sigmas, name: str) -> list[float]:
    try:
        values = [float(value) for value in torch.as_tensor(sigmas, dtype=torch.float64).flatten()]
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"preset {name!r}: sigmas must be a list of numbers") from None
    if (len(values) < 2 or not all(math.isfinite(v) for v in values) or values[-1] < 0
            or any(later >= earlier for earlier, later in zip(values, values[1:]))):
        raise ValueError(f"preset {name!r}: sigmas must be >= 2 finite, non-negative, strictly decreasing values")
    return values
