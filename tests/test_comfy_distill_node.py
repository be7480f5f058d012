"""Integration: in-graph distillation through a real ComfyUI server's HTTP API (COMFYUI_PATH):
a tiny random Wan 2.1 from the stock UNETLoader trains a LoRA that lands in ``loras`` and loads back
with core's LoRA loader; Cancel keeps a checkpoint and a rerun resumes, never leaving a LoRA file
behind; bad inputs are clear errors."""

from __future__ import annotations

import pytest
import torch

from comfy_harness import execution_error

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def tiny_wan(comfy_server):
    from trainer.toy.teacher import TeacherArch, build_diffusers_wan, save_wan_file

    torch.manual_seed(0)
    path = comfy_server.base_dir / "models" / "diffusion_models" / "stride_distill_tiny_wan.safetensors"
    save_wan_file(build_diffusers_wan(TeacherArch(num_heads=1, num_layers=2, ffn_dim=128)), path, dtype=torch.float32)
    return path.name


def distill_graph(unet: str, save_name: str, iterations: int, prompts: str = "a red square moving left quickly\n"
                  "a blue circle moving up slowly", negative: str = "") -> dict:
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "pos": {"class_type": "StrideToyTextEncode", "inputs": {"prompt": prompts}},
        "neg": {"class_type": "StrideToyTextEncode", "inputs": {"prompt": negative}},
        "latent": {"class_type": "StrideToyEmptyLatent", "inputs": {"batch_size": 1}},
        "distill": {"class_type": "StrideDistillLoRA", "inputs": {
            "model": ["unet", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent": ["latent", 0],
            "method": "adv", "student_steps": "1000,900,757,522", "shift": 5.0, "iterations": iterations,
            "rank": 4, "learning_rate": 1e-3, "teacher_cfg": 5.0, "seed": 0, "save_name": save_name}},
        "loss": {"class_type": "SaveImage", "inputs": {"images": ["distill", 2], "filename_prefix": "stride/loss"}},
        "apply": {"class_type": "LoraModelLoader", "inputs": {"model": ["unet", 0], "lora": ["distill", 1],
                                                              "strength_model": 1.0}},
        "sampler": {"class_type": "StrideConsistencySampler", "inputs": {"gamma": 1.0, "noise_seed": 1}},
        "sigmas": {"class_type": "StrideStudentScheduler", "inputs": {"preset": "adv_4step", "step_list": "", "shift": 5.0}},
        "guider": {"class_type": "BasicGuider", "inputs": {"model": ["apply", 0], "conditioning": ["pos", 0]}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "run": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["noise", 0], "guider": ["guider", 0],
                                                                  "sampler": ["sampler", 0], "sigmas": ["sigmas", 0],
                                                                  "latent_image": ["latent", 0]}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["run", 0], "filename_prefix": "stride/distilled"}},
    }


def test_distill_node_trains_saves_and_samples(comfy_server, tiny_wan):
    entry = comfy_server.run(distill_graph(tiny_wan, "tiny_student", 3), timeout=600)
    assert execution_error(entry) is None, f"{execution_error(entry)}\n{comfy_server.log()[-3000:]}"
    lora = comfy_server.base_dir / "models" / "loras" / "tiny_student.safetensors"
    assert lora.exists()
    from trainer.lora.export import read_stride_metadata

    meta = read_stride_metadata(lora)
    assert meta["method"] == "adv" and meta["student_step_list"] == [1000.0, 900.0, 757.0, 522.0]
    assert "loss" in entry["outputs"] and entry["outputs"]["loss"]["images"]
    assert "lora key not loaded" not in comfy_server.log().lower()


@pytest.mark.parametrize("case", ["path separator", "dotdot", "mismatched negative", "empty prompt batch",
                                  "non-flow model", "bad step list"])
def test_bad_inputs_are_clear_errors_and_nothing_is_written(comfy_server, tiny_wan, case):
    graph = distill_graph(tiny_wan, "bad_case", 2)
    inputs = graph["distill"]["inputs"]
    expected = {"path separator": "save_name", "dotdot": "save_name", "mismatched negative": "negative",
                "empty prompt batch": "positive", "non-flow model": "flow-matching",
                "bad step list": "student_steps"}[case]
    if case == "path separator":
        inputs["save_name"] = "../../evil"
    elif case == "dotdot":
        inputs["save_name"] = "a..b"
    elif case == "mismatched negative":
        graph["neg"]["inputs"]["prompt"] = "\n".join(["a red square moving left quickly"] * 3)
    elif case == "empty prompt batch":
        graph["pos"]["inputs"]["prompt"] = ""
    elif case == "non-flow model":  # an eps-prediction model (what SD-style image models are)
        graph["eps"] = {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["unet", 0], "sampling": "eps",
                                                                          "zsnr": False}}
        inputs["model"] = ["eps", 0]
    elif case == "bad step list":
        inputs["student_steps"] = "522,757,1000"
    entry = comfy_server.run(graph, timeout=300)
    error = execution_error(entry)
    assert error is not None, case
    assert expected in error["exception_message"], error["exception_message"]
    assert not (comfy_server.base_dir / "models" / "loras" / "bad_case.safetensors").exists()
    assert not list(comfy_server.base_dir.rglob("evil*"))
    assert comfy_server.alive()


def test_cancel_keeps_a_checkpoint_and_a_rerun_resumes(comfy_server, tiny_wan):
    import time

    loras = comfy_server.base_dir / "models" / "loras"
    state = comfy_server.base_dir / "user" / "stride_distill" / "cancel_me" / "state.pt"
    # 40 iterations: the node checkpoints every 10, so the first state appears well before the end
    prompt_id = comfy_server.queue(distill_graph(tiny_wan, "cancel_me", 40))
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert state.exists(), "no checkpoint appeared"
    comfy_server.post("/interrupt", {})
    entry = comfy_server.wait(prompt_id, timeout=120)
    assert entry["status"]["status_str"] == "error", entry["status"]  # interrupted
    assert not list(loras.glob("cancel_me*")), "a LoRA file exists after Cancel"
    assert not list(loras.glob(".*.tmp")), "a temporary file was left in loras"
    saved = torch.load(state, weights_only=False)["step"]
    assert 0 < saved < 40
    entry = comfy_server.run(distill_graph(tiny_wan, "cancel_me", saved + 2), timeout=300)
    assert execution_error(entry) is None, execution_error(entry)
    assert torch.load(state, weights_only=False)["step"] == saved + 2
    assert (loras / "cancel_me.safetensors").exists()


def _latent_graph(tiny_wan: str, sigmas_inputs: dict, prefix: str) -> dict:
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": tiny_wan, "weight_dtype": "default"}},
        "pos": {"class_type": "StrideToyTextEncode", "inputs": {"prompt": "a red square moving left quickly"}},
        "latent": {"class_type": "StrideToyEmptyLatent", "inputs": {"batch_size": 1}},
        "sampler": {"class_type": "StrideConsistencySampler", "inputs": {"gamma": 1.0, "noise_seed": 1}},
        "sigmas": {"class_type": "StrideStudentScheduler", "inputs": sigmas_inputs},
        "guider": {"class_type": "BasicGuider", "inputs": {"model": ["unet", 0], "conditioning": ["pos", 0]}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "run": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["noise", 0], "guider": ["guider", 0],
                                                                  "sampler": ["sampler", 0], "sigmas": ["sigmas", 0],
                                                                  "latent_image": ["latent", 0]}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["run", 0], "filename_prefix": f"stride/{prefix}"}},
    }


def _latent_run(comfy_server, tiny_wan, sigmas_inputs: dict, prefix: str) -> torch.Tensor:
    import safetensors.torch

    entry = comfy_server.run(_latent_graph(tiny_wan, sigmas_inputs, prefix), timeout=300)
    assert execution_error(entry) is None, execution_error(entry)
    (path,) = (comfy_server.base_dir / "output" / "stride").glob(f"{prefix}_*.latent")
    return safetensors.torch.load_file(str(path))["latent_tensor"]


def test_student_scheduler_reads_the_schedule_from_a_stride_lora(comfy_server, tiny_wan):
    from trainer.lora.export import write_stride_lora

    loras = comfy_server.base_dir / "models" / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    # a Stride LoRA trained on a non-preset step list, shift and sampler gamma; its tensors do not matter here
    meta = {"method": "adv", "student_step_list": [1000, 870, 640, 300], "shift": 3.0, "teacher_fingerprint": "x",
            "student_gamma": 0.75}
    write_stride_lora({"diffusion_model.blocks.0.ffn.0.lora_down.weight": torch.zeros(4, 128),
                       "diffusion_model.blocks.0.ffn.0.lora_up.weight": torch.zeros(128, 4),
                       "diffusion_model.blocks.0.ffn.0.alpha": torch.tensor(4.0)},
                      loras / "sched_student.safetensors", meta)
    widgets = {"preset": "adv_4step", "step_list": "", "shift": 5.0}
    from_lora = _latent_run(comfy_server, tiny_wan, {**widgets, "stride_lora": "sched_student.safetensors"}, "from_lora")
    by_hand = _latent_run(comfy_server, tiny_wan, {"preset": "custom", "step_list": "1000,870,640,300", "shift": 3.0},
                          "by_hand")
    preset = _latent_run(comfy_server, tiny_wan, widgets, "preset")
    assert torch.equal(from_lora, by_hand)  # the LoRA's schedule replaced the widgets
    assert not torch.equal(from_lora, preset)

    # a LoRA without Stride metadata: a clear error naming the problem, the server keeps running
    import safetensors.torch

    safetensors.torch.save_file({"diffusion_model.x.lora_down.weight": torch.zeros(2, 2)}, str(loras / "plain.safetensors"))
    entry = comfy_server.run(_latent_graph(tiny_wan, {**widgets, "stride_lora": "plain.safetensors"}, "plain"))
    error = execution_error(entry)
    assert error is not None and error["node_id"] == "sigmas"
    assert "not a Stride LoRA" in error["exception_message"], error["exception_message"]
    assert comfy_server.alive()
