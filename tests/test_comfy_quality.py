"""Issue 5 of 6's quality bar: a LoRA distilled by the node inside a real ComfyUI graph samples as
well as one from the headless trainer at the same budget (within 10% on Fréchet distance, prompt
and motion accuracy), both scored by ``python -m trainer eval`` on the same clips.

Opt-in: it trains twice at the toy budget (minutes each on a CPU). Run it with
``STRIDE_QUALITY=1 COMFYUI_PATH=... pytest -m comfyui tests/test_comfy_quality.py -s``; the
budget is ``STRIDE_QUALITY_STEPS`` (default: the main job's, ``DistillConfig().steps``). It needs the shipped toy teacher.
Both runs use the same recipe: ADV, the 96 toy prompts, one real toy clip per prompt (paired),
batch 4, rank 16, seed 0, and the headless job's defaults (``DistillConfig()``) for the student step
list, shift, learning rate and teacher CFG.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from comfy_harness import execution_error
from trainer.distill.config import DistillConfig

pytestmark = pytest.mark.comfyui

STEPS = int(os.environ.get("STRIDE_QUALITY_STEPS", "0")) or DistillConfig().steps


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    if os.environ.get("STRIDE_QUALITY") != "1":
        pytest.skip("opt-in quality comparison: set STRIDE_QUALITY=1 (trains twice, minutes each)")
    from trainer.toy.teacher import WEIGHTS_PATH

    if not WEIGHTS_PATH.exists():
        pytest.skip(f"the shipped toy teacher is missing ({WEIGHTS_PATH.name}); run toy pretrain then toy export")
    from safetensors.torch import save_file

    from trainer.toy import codec, domain, text

    tmp = tmp_path_factory.mktemp("quality")
    attrs = domain.all_attributes()
    prompts = [a.prompt for a in attrs]
    clips = torch.stack([domain.render_clip(a, 10_000 + i) for i, a in enumerate(attrs)])
    real = codec.encode(clips)
    save_file({"context": text.encode_prompts(prompts), "negative": text.encode_prompts([""])},
              str(tmp / "prompts.safetensors"))
    save_file({"latents": real}, str(tmp / "real.safetensors"))
    return {"dir": tmp, "prompts": prompts, "real": real}


def _headless_lora(recipe) -> "Path":
    from trainer.distill.loop import distill, export_student

    cfg = DistillConfig(name="quality_headless", steps=STEPS, batch_size=4, seed=0, lora_rank=16, lora_alpha=16.0,
                        critic_rank=16, embeddings=recipe["dir"] / "prompts.safetensors",
                        real_latents=recipe["dir"] / "real.safetensors", state_dir=recipe["dir"] / "headless_state",
                        out=recipe["dir"], resume=False, eval_repeats=0, progress=False)
    outcome = distill(cfg)
    return export_student(outcome, cfg, recipe["dir"] / "quality_headless.safetensors", {})


def _node_lora(comfy_server, recipe) -> "Path":
    import sys

    from safetensors.torch import save_file

    from comfy_harness import require_comfyui

    # the real clips as a LATENT file in ComfyUI's Wan 2.1 space (LoadLatent reads input/*.latent);
    # ComfyUI's own latent format maps the codec latents there, as StrideToyEncode does in a graph
    sys.path.insert(0, str(require_comfyui()))
    import comfy.latent_formats

    defaults = DistillConfig()
    if defaults.adv.generator_lr != defaults.adv.critic_lr:
        pytest.fail("the node has one learning rate; the headless defaults must use one too for a like-for-like run")

    comfy_latent = comfy.latent_formats.Wan21().process_out(recipe["real"].clone())
    inputs = comfy_server.base_dir / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    save_file({"latent_tensor": comfy_latent.contiguous(), "latent_format_version_0": torch.tensor([])},
              str(inputs / "quality_real.latent"))
    graph = {
        "teacher": {"class_type": "StrideToyTeacherLoader", "inputs": {}},
        "pos": {"class_type": "StrideToyTextEncode", "inputs": {"prompt": "\n".join(recipe["prompts"])}},
        "neg": {"class_type": "StrideToyTextEncode", "inputs": {"prompt": ""}},
        "latent": {"class_type": "StrideToyEmptyLatent", "inputs": {"batch_size": 4}},
        "real": {"class_type": "LoadLatent", "inputs": {"latent": "quality_real.latent"}},
        "distill": {"class_type": "StrideDistillLoRA", "inputs": {
            "model": ["teacher", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent": ["latent", 0],
            "real_latents": ["real", 0], "method": "adv", "student_steps": ",".join(f"{t:g}" for t in defaults.student_step_list),
            "shift": defaults.shift, "iterations": STEPS, "rank": 16, "learning_rate": defaults.adv.generator_lr,
            "teacher_cfg": defaults.adv.teacher_cfg, "seed": 0,
            "save_name": "quality_node"}},
    }
    entry = comfy_server.run(graph, timeout=6 * 3600)
    assert execution_error(entry) is None, f"{execution_error(entry)}\n{comfy_server.log()[-3000:]}"
    return comfy_server.base_dir / "models" / "loras" / "quality_node.safetensors"


def test_node_lora_samples_within_ten_percent_of_the_headless_one(recipe, comfy_server):
    from trainer.eval.evaluate import EvalConfig, run_eval

    node_lora = _node_lora(comfy_server, recipe)
    headless_lora = _headless_lora(recipe)
    rows = {}
    for name, lora in {"node": node_lora, "headless": headless_lora}.items():
        result = run_eval(EvalConfig(lora=lora, setups=["student"], out=recipe["dir"] / f"eval_{name}"))
        rows[name] = next(r for r in result["rows"] if r["name"] == "student")
    print(json.dumps(rows, indent=2))
    node, headless = rows["node"], rows["headless"]
    assert node["fd"] <= 1.10 * headless["fd"], rows
    for key in ("prompt_acc", "motion_acc"):
        assert node[key] >= 0.90 * headless[key], (key, rows)
