"""Integration: the trainer's ComfyUI backend over a real ModelPatcher (ComfyUI's interpreter, in a
subprocess): the input MODEL stays untouched, the teacher role equals the stock model, an ADV step
trains only the student LoRA through weights ComfyUI loaded under inference_mode, and the exported
LoRA loads in ComfyUI with every key used."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch

from comfy_harness import comfyui_python, require_comfyui
from trainer.toy.teacher import TeacherArch, build_diffusers_wan, save_wan_file

pytestmark = pytest.mark.comfyui
REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, logging, sys
    sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])
    from comfy.cli_args import args
    args.cpu = True
    import torch, comfy.sd, comfy.utils
    messages = []
    logging.getLogger().addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: messages.append(r.getMessage())})())
    with torch.inference_mode():  # as ComfyUI's executor loads models
        patcher = comfy.sd.load_diffusion_model(sys.argv[3])
    from trainer.backends.comfy import ComfyLoraBackend
    from trainer.lora.inject import LoraSpec
    from trainer.methods.adv import AdvConfig, AdvMethod
    from trainer.methods.base import DistillBatch, MethodContext, StudentSchedule
    from trainer.toy import codec, domain, text
    out = {}
    with torch.inference_mode(False):
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 16, 3, 8, 8, generator=gen)
        ctx = text.encode_prompts(["a red square moving left quickly"])
        sigma = torch.tensor([0.7])
        with torch.no_grad():
            stock = patcher.model.apply_model(x, sigma, c_crossattn=ctx).float()
        backend = ComfyLoraBackend(patcher, LoraSpec(rank=4, alpha=4.0), LoraSpec(rank=4, alpha=4.0))
        out["original_untouched"] = not patcher.weight_wrapper_patches
        out["teacher_max_diff"] = (backend.predict_x0(x, sigma, ctx, "teacher") - stock).abs().max().item()
        before = [p.detach().clone() for p in backend.trainable_parameters("student")]
        method = AdvMethod(MethodContext(backend, StudentSchedule()),
                           AdvConfig(generator_lr=1e-2, critic_lr=1e-2, generator_every=1))
        real = codec.encode(domain.make_batch(1, seed=3)[0])[:, :, :3, :8, :8]
        batch = DistillBatch(ctx, torch.zeros_like(ctx), tuple(real.shape), real, torch.Generator().manual_seed(1))
        metrics = method.train_step(batch, 0)
        out["metrics_finite"] = all(v == v and abs(v) < float("inf") for v in metrics.values() if isinstance(v, float))
        out["student_changed"] = any(not torch.equal(a, b) for a, b in zip(before, backend.trainable_parameters("student")))
        out["student_differs_from_teacher"] = (backend.predict_x0(x, sigma, ctx, "student")
                                               - backend.predict_x0(x, sigma, ctx, "teacher")).abs().max().item()
        lora = backend.comfy_lora_state_dict("student")
        path = backend.export_lora("student", sys.argv[4], {"method": "adv", "student_step_list": [1000, 900, 757, 522],
                                                              "shift": 5.0, "teacher_fingerprint": backend.teacher_fingerprint})
        from safetensors.torch import load_file
        out["exported_equal"] = all(torch.equal(load_file(str(path))[k], v) for k, v in lora.items())
        student_x0 = backend.predict_x0(x, sigma, ctx, "student")
    with torch.inference_mode():
        patched, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 1.0, 0)
        import comfy.model_management
        comfy.model_management.load_models_gpu([patched], force_full_load=True)
        applied = patched.model.apply_model(x, sigma, c_crossattn=ctx).float()
    out["lora_in_comfy_max_diff"] = (applied - student_x0).abs().max().item()
    out["not_loaded"] = [m for m in messages if "lora key not loaded" in m.lower()]
    out["keys"] = sorted(lora)[:3]
    print("RESULT " + json.dumps(out))
""")


def run_on_tiny_wan(tmp_path, script_text: str, *extra: str) -> dict:
    """Write a tiny random Wan 2.1 file, run ``script_text`` in ComfyUI's Python with
    ``argv = [comfy_dir, repo, weights, *extra]`` and return the JSON it prints after ``RESULT ``."""
    comfy_dir = require_comfyui()
    torch.manual_seed(0)
    weights = tmp_path / "tiny_wan.safetensors"
    save_wan_file(build_diffusers_wan(TeacherArch(num_heads=1, num_layers=2, ffn_dim=128)), weights, dtype=torch.float32)
    script = tmp_path / "run.py"
    script.write_text(script_text)
    result = subprocess.run([comfyui_python(comfy_dir), str(script), str(comfy_dir), str(REPO), str(weights), *extra],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_comfy_backend_trains_a_lora_on_a_real_model_patcher(tmp_path):
    out = run_on_tiny_wan(tmp_path, SCRIPT, str(tmp_path / "student.safetensors"))
    assert out["original_untouched"], "the input ModelPatcher got weight wrappers"
    assert out["teacher_max_diff"] < 1e-5, out
    assert out["metrics_finite"] and out["student_changed"], out
    assert out["student_differs_from_teacher"] > 1e-6, out
    assert out["lora_in_comfy_max_diff"] < 1e-4, out
    assert out["exported_equal"], out
    assert not out["not_loaded"], out["not_loaded"]
    assert all(k.startswith("diffusion_model.blocks.") for k in out["keys"]), out["keys"]


GAN_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])
    from comfy.cli_args import args
    args.cpu = True
    import torch, comfy.sd
    with torch.inference_mode():
        patcher = comfy.sd.load_diffusion_model(sys.argv[3])
    from trainer.backends.comfy import ComfyLoraBackend
    from trainer.backends.wan_lora import WanLoraBackend
    from trainer.lora.inject import LoraSpec
    from trainer.methods.adv import AdvConfig, AdvMethod
    from trainer.methods.avdm2 import Avdm2Config, Avdm2Method
    from trainer.methods.base import DistillBatch, MethodContext, StudentSchedule
    from trainer.methods.gan import FeatureDiscriminator
    from trainer.toy import codec, domain, text
    from trainer.toy.teacher import load_teacher
    out = {}
    spec = LoraSpec(rank=4, alpha=4.0)
    with torch.inference_mode(False):
        comfy_backend = ComfyLoraBackend(patcher, spec, spec)
        diffusers_backend = WanLoraBackend(load_teacher(sys.argv[3]), spec, spec)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 16, 3, 8, 8, generator=gen)
        ctx = text.encode_prompts(["a red square moving left quickly"])
        sigma = torch.tensor([0.4])
        taps = []
        for backend in (comfy_backend, diffusers_backend):
            torch.manual_seed(0)  # the same head; only the features differ between the two implementations
            disc = FeatureDiscriminator(backend)
            with torch.no_grad():
                taps.append(disc.features(backend, x, sigma, ctx))
        from trainer.backends.base import denoiser_module  # what strided positions patch when a role view samples
        out["view_network"] = denoiser_module(comfy_backend.view("student")) is patcher.model.diffusion_model
        out["taps"] = len(taps[0])
        out["shapes_equal"] = [tuple(a.shape) == tuple(b.shape) for a, b in zip(*taps)]
        out["feature_max_diff"] = max((a - b).abs().max().item() / b.abs().max().item() for a, b in zip(*taps))
        real = codec.encode(domain.make_batch(1, seed=3)[0])[:, :, :3, :8, :8]
        for name, method_class, cfg in (("adv_gan", AdvMethod, AdvConfig(generator_lr=1e-2, critic_lr=1e-2,
                                                                          generator_every=1, gan_weight=0.3)),
                                        ("avdm2", Avdm2Method, Avdm2Config())):
            method = method_class(MethodContext(comfy_backend, StudentSchedule()), cfg)
            head = [p.detach().clone() for p in method.discriminator.head.parameters()]
            batch = DistillBatch(ctx, torch.zeros_like(ctx), tuple(real.shape), real, torch.Generator().manual_seed(1))
            metrics = method.train_step(batch, 0)
            out[name] = {"finite": all(v == v and abs(v) < float("inf") for v in metrics.values() if isinstance(v, float)),
                         "head_changed": any(not torch.equal(a, b) for a, b in zip(head, method.discriminator.head.parameters())),
                         "keys": sorted(k for k in metrics if k.startswith("adv"))}
    print("RESULT " + json.dumps(out))
""")


def test_gan_features_match_diffusers_and_gan_methods_train_on_a_model_patcher(tmp_path):
    # a role view's network is ComfyUI's diffusion model (not the LoRA wrappers); the discriminator taps the teacher's hidden states; on ComfyUI's WanModel they must be the ones the
    # diffusers model gives for the same weights, and ADV's GAN term and AVDM2 must train through a ModelPatcher
    out = run_on_tiny_wan(tmp_path, GAN_SCRIPT)
    assert out["view_network"], out
    assert out["taps"] >= 2 and all(out["shapes_equal"]), out
    assert out["feature_max_diff"] < 1e-4, out
    for name in ("adv_gan", "avdm2"):
        assert out[name]["finite"] and out[name]["head_changed"], out
        assert "adv_d" in out[name]["keys"], out
