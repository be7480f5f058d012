"""Packaging and command-line contracts: cheap import, no generic top-level names, one dependency list."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_root_import_is_cheap_and_exports_only_the_v3_entrypoint():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('stride_pack', r'{REPO / '__init__.py'}', "
        f"submodule_search_locations=[r'{REPO}'])\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['stride_pack'] = mod; spec.loader.exec_module(mod)\n"
        "public = sorted(n for n in vars(mod) if not n.startswith('_'))\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'comfy', 'cv2', 'peft') if m in sys.modules)\n"
        "print(public, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['comfy_entrypoint'] []", out


def test_dependency_list_is_single_and_torch_is_unpinned():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps = project["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in deps}
    assert {"torch", "diffusers", "safetensors", "peft", "einops", "opencv-python", "accelerate"} <= names
    torch_req = next(d for d in deps if d.startswith("torch"))
    assert "==" not in torch_req and "<" not in torch_req, "a pin would replace a user's CUDA torch"
    assert "comfyui-frontend-package" in " ".join(project["project"]["optional-dependencies"]["test"])
    comfy = project["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["requires-comfyui"] == ">=0.3.64"
    req_file = REPO / "requirements.txt"
    assert req_file.exists()
    listed = [line.strip() for line in req_file.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert listed == deps, "requirements.txt must be identical to pyproject's dependency list"


def test_wheel_has_no_generic_top_level_modules(tmp_path):
    pytest.importorskip("setuptools")
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    import shutil

    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "runs",
                                                                "__pycache__", ".pytest_cache"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"cannot build a wheel here: {result.stderr.strip()[-200:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert "trainer" not in tops and "nodes" not in tops and "tests" not in tops, tops
    assert "comfyui_stride" in tops
    names = zipfile.ZipFile(wheel).namelist()
    assert "comfyui_stride/trainer/toy/assets/text_table.safetensors" in names


def test_bench_schedules_prints_one_json_object_with_rows_and_ratios():
    out = subprocess.run([sys.executable, "-m", "trainer", "bench", "schedules", "--json", "--reference-steps", "60",
                          "--iterations", "1"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    names = [row["name"] for row in result["rows"]]
    assert {"uniform", "student_shift5", "token_shift", "optimal_steps_wan", "ays_svd_flow", "searched_temporal"} <= set(names)
    for row in result["rows"]:
        assert row["steps"] == 4 and row["error_to_reference"] >= 0 and row["temporal_error"] >= 0
    ratio = result["ratios"]["search_vs_uniform_error"]
    uniform = next(r for r in result["rows"] if r["name"] == "uniform")
    searched = next(r for r in result["rows"] if r["name"] == "searched_temporal")
    assert ratio == pytest.approx(searched["error_to_reference"] / uniform["error_to_reference"])
    assert ratio <= 1.0  # the search starts from the uniform schedule and never returns a worse one


def test_unknown_config_keys_and_bad_flags_are_errors(tmp_path):
    from trainer.config import build_config
    from trainer.toy.pretrain import PretrainConfig

    with pytest.raises(ValueError, match="unknown config keys \\['stepz'\\]"):
        build_config(PretrainConfig, {"stepz": 3})
    bad = subprocess.run([sys.executable, "-m", "trainer", "bench", "schedules", "--steps", "zero"], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "--steps" in bad.stderr


def test_one_nested_flag_or_table_key_changes_only_that_setting_of_the_job_defaults(tmp_path):
    """``--adv.teacher-cfg 2`` (or ``[adv] teacher_cfg = 2`` in a file) must keep the job's other ADV
    settings (its learning rates and update ratio), not fall back to AdvConfig's published ones."""
    import argparse

    from trainer.config import add_dataclass_flags, load_config
    from trainer.distill.config import DistillConfig

    defaults = DistillConfig()
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, DistillConfig)
    cfg = load_config(DistillConfig, parser.parse_args(["--adv.teacher-cfg", "2", "--gpd.cfg-end", "1.5"]))
    assert cfg.adv.teacher_cfg == 2.0 and defaults.adv.teacher_cfg != 2.0
    assert cfg.adv == dataclasses.replace(defaults.adv, teacher_cfg=2.0)
    assert cfg.gpd == dataclasses.replace(defaults.gpd, cfg_end=1.5)
    assert cfg.avdm2 == defaults.avdm2
    table = tmp_path / "job.toml"
    table.write_text("steps = 7\n[adv]\ngenerator_every = 3\n")
    from_file = load_config(DistillConfig, parser.parse_args(["--adv.critic-lr", "0.001"]), table)
    assert from_file.steps == 7
    assert from_file.adv == dataclasses.replace(defaults.adv, generator_every=3, critic_lr=0.001)
    with pytest.raises(ValueError, match="unknown config.adv keys"):
        table.write_text("[adv]\ngenerator_evry = 3\n")
        load_config(DistillConfig, parser.parse_args([]), table)


def test_changed_flags_parse_back_into_the_changed_settings():
    """The refusal of a run without real latents names the flags of ``without_real_latents()`` with
    ``changed_flags``: parsed by the real command line, they must give exactly those settings."""
    import argparse

    from trainer.config import add_dataclass_flags, changed_flags, load_config
    from trainer.distill.config import DistillConfig

    main_job = dataclasses.replace(DistillConfig().adv, marginal_weight=1.0)
    bare = main_job.without_real_latents()
    flags = changed_flags(main_job, bare, "adv")
    assert "--no-adv.adaptive-regression" in flags and "--adv.marginal-weight 0.0" in flags
    assert changed_flags(main_job, main_job, "adv") == []
    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, DistillConfig)
    start = ["--adv.marginal-weight", "1.0"]
    parsed = load_config(DistillConfig, parser.parse_args(start + " ".join(flags).split()))
    assert parsed.adv == bare


def test_pyproject_lists_every_package_directory():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    actual = {"comfyui_stride"} | {
        "comfyui_stride." + ".".join(p.parent.relative_to(REPO).parts)
        for top in ("trainer", "nodes") for p in (REPO / top).rglob("__init__.py")
    }
    assert listed == actual, f"missing: {actual - listed}, stale: {listed - actual}"
