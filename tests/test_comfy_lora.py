"""Integration: a Stride LoRA in the real ComfyUI. The exported file must load through ComfyUI's
own LoRA path (what LoraLoaderModelOnly does) with every key used, patch exactly the weights peft
adapted by ``strength * alpha / rank * up @ down``, and give the same prediction as diffusers with
the same file loaded through diffusers' Wan LoRA converter. ComfyUI's model of the base file has
the teacher fingerprint the LoRA records.

ComfyUI's side runs in ComfyUI's own interpreter (COMFYUI_PYTHON) as a subprocess, like
test_comfy_equivalence.py.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest
import torch

from comfy_harness import REPO, comfyui_python, require_comfyui
from trainer.lora.export import export_comfy_lora, load_comfy_lora_into_diffusers, teacher_fingerprint
from trainer.lora.inject import LoraSpec, add_lora, use_adapter
from trainer.toy.teacher import TeacherArch, build_diffusers_wan, load_teacher, save_wan_file

pytestmark = pytest.mark.comfyui

STRENGTHS = (1.0, 0.5)

COMFY_SIDE = textwrap.dedent("""
    import json, logging, sys
    sys.path.insert(0, sys.argv[1])
    from comfy.cli_args import args
    args.cpu = True
    import torch, comfy.sd, comfy.utils

    messages = []

    class Capture(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logging.getLogger().addHandler(Capture(level=logging.INFO))
    logging.getLogger().setLevel(logging.INFO)

    base_path, lora_path, in_path, out_path, strengths, repo = sys.argv[2:8]
    sys.path.insert(0, repo)
    from trainer.lora.export import teacher_fingerprint

    data = torch.load(in_path)
    base = comfy.sd.load_diffusion_model(base_path)
    fingerprint = teacher_fingerprint(base.model.state_dict())  # what a node would check a LoRA against
    base_weights = {k: v.clone() for k, v in base.model.diffusion_model.state_dict().items()}
    lora = comfy.utils.load_torch_file(lora_path, safe_load=True)
    result = {"outputs": {}, "deltas": {}, "patched_keys": {}}
    for strength in [float(s) for s in strengths.split(",")]:
        # what LoraLoaderModelOnly.load_lora_model_only does
        patched, _ = comfy.sd.load_lora_for_models(base, None, lora, strength, 0)
        result["patched_keys"][strength] = sorted(patched.patches)
        patched.patch_model()
        try:
            weights = patched.model.diffusion_model.state_dict()
            result["deltas"][strength] = {k: (weights[k] - base_weights[k]).clone() for k in base_weights
                                          if not torch.equal(weights[k], base_weights[k])}
            with torch.no_grad():
                result["outputs"][strength] = patched.model.diffusion_model(data["x"], data["t"], data["context"])
        finally:
            patched.unpatch_model()
    with torch.no_grad():
        result["outputs"][0.0] = base.model.diffusion_model(data["x"], data["t"], data["context"])
    torch.save(result, out_path)
    print(json.dumps({"messages": messages, "fingerprint": fingerprint,
                      "dtype": str(next(base.model.diffusion_model.parameters()).dtype)}))
""")


def test_stride_lora_loads_in_comfyui_like_in_diffusers(tmp_path):
    comfy_dir = require_comfyui()
    torch.manual_seed(1)
    arch = TeacherArch(num_heads=1, num_layers=2, ffn_dim=256)
    base_path = tmp_path / "tiny_wan.safetensors"
    save_wan_file(build_diffusers_wan(arch), base_path, dtype=torch.float32)

    model = load_teacher(base_path)
    add_lora(model, LoraSpec(rank=4, alpha=6.0), "student")  # alpha / rank = 1.5
    gen = torch.Generator().manual_seed(2)
    adapted = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if hasattr(module, "lora_B") and "student" in module.lora_B:
                module.lora_B["student"].weight.copy_(torch.randn(module.lora_B["student"].weight.shape, generator=gen) * 0.05)
                adapted[name] = module
    lora_path = export_comfy_lora(model, "student", tmp_path / "stride_lora.safetensors", {
        "method": "adv", "student_step_list": [1000, 900, 757, 522], "shift": 5.0,
        "teacher_fingerprint": teacher_fingerprint(model)})

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 16, 3, 8, 8, generator=gen)
    t = torch.tensor([800.0])
    context = torch.randn(1, 5, 4096, generator=gen)
    torch.save({"x": x, "t": t, "context": context}, tmp_path / "in.pt")
    script = tmp_path / "comfy_side.py"
    script.write_text(COMFY_SIDE)
    proc = subprocess.run([comfyui_python(comfy_dir), str(script), str(comfy_dir), str(base_path), str(lora_path),
                           str(tmp_path / "in.pt"), str(tmp_path / "out.pt"), ",".join(map(str, STRENGTHS)), str(REPO)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["dtype"] == "torch.float32", info
    rejected = [m for m in info["messages"] if "lora key not loaded" in m or "NOT LOADED" in m]
    assert not rejected, rejected
    assert info["fingerprint"] == teacher_fingerprint(model), "ComfyUI's model of the same file, another fingerprint"
    comfy = torch.load(tmp_path / "out.pt")

    # every adapted module, and nothing else, is patched, by strength * (alpha / rank) * up @ down
    from trainer.lora.targets import diffusers_module_to_wan

    expected_delta = {f"{diffusers_module_to_wan(name)}.weight":
                      1.5 * module.lora_B["student"].weight @ module.lora_A["student"].weight
                      for name, module in adapted.items()}
    for strength in STRENGTHS:
        assert comfy["patched_keys"][strength] == sorted(f"diffusion_model.{k}" for k in expected_delta)
        deltas = comfy["deltas"][strength]
        assert set(deltas) == set(expected_delta)
        for key, delta in expected_delta.items():
            torch.testing.assert_close(deltas[key], strength * delta, rtol=1e-4, atol=1e-6)

    # the same prediction as diffusers with the file loaded through diffusers' converter
    reference = load_teacher(base_path)
    with torch.no_grad():
        base_out = reference(hidden_states=x, timestep=t, encoder_hidden_states=context, return_dict=False)[0]
        load_comfy_lora_into_diffusers(reference, lora_path, "stride")
        diffusers_out = reference(hidden_states=x, timestep=t, encoder_hidden_states=context, return_dict=False)[0]
        with use_adapter(model, "student"):
            peft_out = model(hidden_states=x, timestep=t, encoder_hidden_states=context, return_dict=False)[0]
    comfy_out = comfy["outputs"][1.0].float()
    scale = diffusers_out.abs().max().item()
    assert (comfy_out - diffusers_out).abs().max().item() <= 1e-4 * scale
    assert (peft_out - diffusers_out).abs().max().item() <= 1e-5 * scale
    assert (comfy["outputs"][0.0].float() - base_out).abs().max().item() <= 1e-4 * scale
    assert (diffusers_out - base_out).abs().max().item() > 1e-2 * scale  # the LoRA changes the prediction
    half = comfy["outputs"][0.5].float()
    assert (half - base_out).abs().max().item() > 1e-2 * scale and (half - comfy_out).abs().max().item() > 1e-2 * scale
