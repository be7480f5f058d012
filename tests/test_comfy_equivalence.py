"""Integration: one Wan file, two implementations. ComfyUI's WanModel (stock loader, detection) and
diffusers' WanTransformer3DModel must give the same prediction for the same input.

Runs ComfyUI's side in ComfyUI's own interpreter (COMFYUI_PYTHON) as a subprocess, so the
comparison is between the two real libraries, not a re-implementation of either.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest
import torch

from comfy_harness import comfyui_python, require_comfyui
from trainer.toy import text
from trainer.toy.teacher import WEIGHTS_PATH, TeacherArch, build_diffusers_wan, load_teacher, save_wan_file

pytestmark = pytest.mark.comfyui

COMFY_SIDE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from comfy.cli_args import args
    args.cpu = True
    import torch, comfy.sd, comfy.model_base
    data = torch.load(sys.argv[3])
    patcher = comfy.sd.load_diffusion_model(sys.argv[2])
    model = patcher.model
    with torch.no_grad():
        out = model.diffusion_model(data["x"], data["t"], data["context"])
    torch.save({"out": out}, sys.argv[4])
    print(json.dumps({"class": type(model).__name__, "model_type": str(model.model_type),
                      "dtype": str(next(model.diffusion_model.parameters()).dtype)}))
""")


@pytest.mark.parametrize("which", ["shipped_teacher", "random_tiny"])
def test_comfyui_and_diffusers_agree_on_the_same_file(tmp_path, which):
    comfy_dir = require_comfyui()
    if which == "shipped_teacher":
        if not WEIGHTS_PATH.exists():
            pytest.skip(f"no shipped teacher weights at {WEIGHTS_PATH}")
        path = WEIGHTS_PATH
    else:
        torch.manual_seed(1)
        path = tmp_path / "tiny.safetensors"
        save_wan_file(build_diffusers_wan(TeacherArch(1, 2, 256)), path, dtype=torch.float32)
    reference = load_teacher(path)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 9, 16, 16, generator=gen)
    t = torch.tensor([900.0, 250.0])
    context = text.encode_prompts(["a red square moving left quickly", "a blue circle moving up slowly"])
    torch.save({"x": x, "t": t, "context": context}, tmp_path / "in.pt")
    script = tmp_path / "comfy_side.py"
    script.write_text(COMFY_SIDE)
    result = subprocess.run([comfyui_python(comfy_dir), str(script), str(comfy_dir), str(path), str(tmp_path / "in.pt"),
                             str(tmp_path / "out.pt")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["class"] == "WAN21" and "FLOW" in info["model_type"], info
    comfy_out = torch.load(tmp_path / "out.pt")["out"].float()
    with torch.no_grad():
        ours = reference(hidden_states=x, timestep=t, encoder_hidden_states=context, return_dict=False)[0]
    scale = ours.abs().max().item()
    assert (comfy_out - ours).abs().max().item() <= 1e-4 * max(1.0, scale), (comfy_out - ours).abs().max()


COMFY_STRIDED_SIDE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[5])
    from comfy.cli_args import args
    args.cpu = True
    import torch, comfy.sd
    from trainer.sampling.positions import with_frame_stride
    data = torch.load(sys.argv[3])
    model = comfy.sd.load_diffusion_model(sys.argv[2]).model
    options = with_frame_stride({}, 2)["model_options"]["transformer_options"]
    with torch.no_grad():  # through ComfyUI's own wrapper executor, as a sampler's model call goes
        strided = model.diffusion_model(data["x"], data["t"], data["context"], transformer_options=options)
        plain = model.diffusion_model(data["x"], data["t"], data["context"], transformer_options={})
    torch.save({"strided": strided, "plain": plain}, sys.argv[4])
""")


def test_strided_temporal_positions_agree_between_comfyui_and_diffusers(tmp_path):
    """ComfyUI computes strided positions with its own rope_encode (linspace over the full length);
    diffusers' side takes every second row of its rotary table: two implementations, one answer."""
    from trainer.sampling.positions import strided_positions

    comfy_dir = require_comfyui()
    if not WEIGHTS_PATH.exists():
        pytest.skip(f"no shipped teacher weights at {WEIGHTS_PATH}")
    reference = load_teacher(WEIGHTS_PATH)
    x = torch.randn(2, 16, 5, 16, 16, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([950.0, 700.0])
    context = text.encode_prompts(["a green triangle moving right quickly", "a yellow square moving down slowly"])
    torch.save({"x": x, "t": t, "context": context}, tmp_path / "in.pt")
    script = tmp_path / "comfy_strided.py"
    script.write_text(COMFY_STRIDED_SIDE)
    repo = str(WEIGHTS_PATH.parents[3])
    result = subprocess.run([comfyui_python(comfy_dir), str(script), str(comfy_dir), str(WEIGHTS_PATH),
                             str(tmp_path / "in.pt"), str(tmp_path / "out.pt"), repo],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    comfy = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        with strided_positions(reference, 2):
            ours = reference(hidden_states=x, timestep=t, encoder_hidden_states=context, return_dict=False)[0]
        ours_plain = reference(hidden_states=x, timestep=t, encoder_hidden_states=context, return_dict=False)[0]
    scale = max(1.0, ours.abs().max().item())
    assert (comfy["strided"].float() - ours).abs().max().item() <= 1e-4 * scale
    assert (comfy["plain"].float() - ours_plain).abs().max().item() <= 1e-4 * scale
    assert (ours - ours_plain).abs().max().item() > 1e-2  # the positions do change the prediction
