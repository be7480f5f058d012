"""Integration: the pack inside a real ComfyUI server (COMFYUI_PATH), driven over HTTP.

Checks that the pack imports and registers every Stride node, that a tiny random Wan 2.1 loaded by
the stock UNETLoader runs through SamplerCustomAdvanced with every Stride sampler x scheduler and
returns finite latents, and that bad inputs give a clear error while the server keeps running.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from comfy_harness import execution_error

pytestmark = pytest.mark.comfyui

STRIDE_NODES = {
    "StrideConsistencySampler", "StrideFlowSampler", "StrideStudentScheduler", "StrideTokenShiftScheduler",
    "StridePublishedScheduler", "StrideScheduleSearch", "StrideSchedulePreset", "StrideToyTeacherLoader",
    "StrideToyTextEncode", "StrideToyEmptyLatent", "StrideToyDecode", "StrideToyEncode",
    "StrideLatentInterpolate", "StrideLatentInterpolatorLoader", "StrideInterpolatedSampler", "StrideFrameInterpolate",
    "StrideDistillLoRA",
}


@pytest.fixture(scope="module")
def tiny_wan(comfy_server):
    from trainer.toy.teacher import TeacherArch, build_diffusers_wan, save_wan_file

    torch.manual_seed(0)
    model = build_diffusers_wan(TeacherArch(num_heads=1, num_layers=2, ffn_dim=256))
    path = comfy_server.base_dir / "models" / "diffusion_models" / "stride_tiny_wan.safetensors"
    save_wan_file(model, path, dtype=torch.float32)
    return path.name


def test_pack_registers_every_node(comfy_server):
    info = comfy_server.get("/object_info")
    missing = STRIDE_NODES - set(info)
    assert not missing, f"not registered: {missing}\n{comfy_server.log()[-3000:]}"
    assert "IMPORT FAILED" not in comfy_server.log().split("Import times for custom nodes")[-1].split("\n\n")[0]
    for node in STRIDE_NODES:
        assert info[node]["category"].startswith("Stride/")


def test_shipped_student_folder_is_a_loras_folder_after_the_users(comfy_server):
    """Stock LoRA loaders list the shipped toy student; LoRAs the pack writes still go to the user's folder."""
    from trainer.toy.student import LORA_DIR, STUDENT_LORA_PATH

    folders = {entry["name"]: entry["folders"] for entry in comfy_server.get("/experiment/models")}
    loras = [str(Path(f).resolve()) for f in folders["loras"]]
    assert str(LORA_DIR.resolve()) in loras[1:], loras
    assert loras[0] == str((comfy_server.base_dir / "models" / "loras").resolve()), loras
    options = comfy_server.get("/object_info/LoraLoaderModelOnly")["LoraLoaderModelOnly"]["input"]["required"]
    assert (STUDENT_LORA_PATH.name in options["lora_name"][0]) == STUDENT_LORA_PATH.exists()
    assert "toy_wan_teacher.safetensors" not in options["lora_name"][0]


def _base_graph(unet_name: str) -> dict:
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet_name, "weight_dtype": "default"}},
        "pos": {"class_type": "StrideToyTextEncode", "inputs": {"prompt": "a red square moving left quickly"}},
        "neg": {"class_type": "StrideToyTextEncode", "inputs": {"prompt": ""}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["unet", 0], "positive": ["pos", 0],
                                                         "negative": ["neg", 0], "cfg": 1.0}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}},
        "latent": {"class_type": "StrideToyEmptyLatent", "inputs": {"batch_size": 1}},
    }


SAMPLERS = {
    "lcm": {"class_type": "StrideConsistencySampler", "inputs": {"gamma": 1.0, "noise_seed": 3}},
    "tcd": {"class_type": "StrideConsistencySampler", "inputs": {"gamma": 0.3, "noise_seed": 3}},
    "ddim": {"class_type": "StrideFlowSampler", "inputs": {"order": 1}},
    "flow2": {"class_type": "StrideFlowSampler", "inputs": {"order": 2}},
    "interp": {"class_type": "StrideInterpolatedSampler", "inputs": {
        "switch_index": 1, "gamma": 1.0, "noise_seed": 3, "method": "motion_compensated",
        "base_sampler": "stride_consistency"}},
}


def _schedulers() -> dict:
    return {
        "student": {"class_type": "StrideStudentScheduler",
                    "inputs": {"preset": "custom", "step_list": "1000,750,500,250", "shift": 5.0}},
        "adv": {"class_type": "StrideStudentScheduler", "inputs": {"preset": "adv_4step", "step_list": "", "shift": 5.0}},
        "token": {"class_type": "StrideTokenShiftScheduler",
                  "inputs": {"latent": ["latent", 0], "steps": 4, "base_shift": 0.95, "max_shift": 2.05}},
        "optimal": {"class_type": "StridePublishedScheduler", "inputs": {"schedule": "optimal_steps_wan", "steps": 4, "to_flow": False}},
        "ays": {"class_type": "StridePublishedScheduler", "inputs": {"schedule": "ays_svd", "steps": 4, "to_flow": True}},
        "search": {"class_type": "StrideScheduleSearch",
                   "inputs": {"model": ["unet", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                              "latent": ["latent", 0], "seed": 1, "cfg": 1.0, "steps": 3, "reference_steps": 12,
                              "temporal_weight": 1.0, "iterations": 1, "save_as": "stride_test_search"}},
    }


def test_every_sampler_with_every_scheduler_runs_tiny_wan(comfy_server, tiny_wan):
    graph = _base_graph(tiny_wan)
    schedulers = _schedulers()
    for name, node in itertools.chain(SAMPLERS.items(), schedulers.items()):
        graph[f"{name}_node"] = node
    combos = list(itertools.product(SAMPLERS, schedulers))
    for s_name, sch_name in combos:
        key = f"{s_name}_{sch_name}"
        graph[f"run_{key}"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": [f"{s_name}_node", 0],
            "sigmas": [f"{sch_name}_node", 0], "latent_image": ["latent", 0]}}
        graph[f"save_{key}"] = {"class_type": "SaveLatent", "inputs": {"samples": [f"run_{key}", 0],
                                                                       "filename_prefix": f"stride/{key}"}}
    entry = comfy_server.run(graph, timeout=900)
    assert execution_error(entry) is None, f"{execution_error(entry)}\n{comfy_server.log()[-3000:]}"
    for s_name, sch_name in combos:
        files = sorted((comfy_server.base_dir / "output" / "stride").glob(f"{s_name}_{sch_name}_*.latent"))
        assert files, f"no latent saved for {s_name} x {sch_name}"
        latent = load_file(str(files[-1]))["latent_tensor"]
        assert latent.shape == (1, 16, 9, 16, 16)
        assert torch.isfinite(latent).all(), f"non-finite latent for {s_name} x {sch_name}"
    # the search saved a preset that the preset node now lists and loads
    info = comfy_server.get("/object_info/StrideSchedulePreset")
    options = info["StrideSchedulePreset"]["input"]["required"]["preset"]
    assert "stride_test_search" in str(options)


BAD_INPUTS = {
    "increasing step list": ({"class_type": "StrideStudentScheduler",
                              "inputs": {"preset": "custom", "step_list": "250,500,750", "shift": 5.0}}, "step_list"),
    "malformed step list": ({"class_type": "StrideStudentScheduler",
                             "inputs": {"preset": "custom", "step_list": "1000,abc", "shift": 5.0}}, "step_list"),
    "image latent for search": (None, "latent"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_clear_error_and_server_survives(comfy_server, tiny_wan, case):
    graph = _base_graph(tiny_wan)
    node, expected_word = BAD_INPUTS[case]
    if node is None:  # a 4-D image latent where the temporal search needs frames
        graph["img_latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}}
        node = {"class_type": "StrideScheduleSearch", "inputs": {
            "model": ["unet", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent": ["img_latent", 0],
            "seed": 1, "cfg": 1.0, "steps": 3, "reference_steps": 8, "temporal_weight": 1.0, "iterations": 1,
            "save_as": ""}}
    graph["bad"] = node
    graph["run"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["ddim_node", 0], "sigmas": ["bad", 0],
        "latent_image": ["latent", 0]}}
    graph["ddim_node"] = SAMPLERS["ddim"]
    graph["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["run", 0], "filename_prefix": "stride/bad"}}
    entry = comfy_server.run(graph, timeout=300)
    error = execution_error(entry)
    assert error is not None, f"{case}: expected an error"
    assert expected_word in error["exception_message"], error["exception_message"]
    assert comfy_server.alive()


def _frames_graph(batch: int, multiplier) -> dict:
    return {
        "img": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": batch, "color": 0x336699}},
        "interp": {"class_type": "StrideFrameInterpolate", "inputs": {
            "images": ["img", 0], "multiplier": multiplier, "method": "stride_flow", "flow_quality": "medium",
            "scene_cut_fallback": "nearest"}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["interp", 0], "filename_prefix": "stride/frames"}},
    }


def test_frame_interpolation_node_outputs_the_core_frame_count(comfy_server):
    entry = comfy_server.run(_frames_graph(3, 3), timeout=300)
    assert execution_error(entry) is None, execution_error(entry)
    images = entry["outputs"]["save"]["images"]
    assert len(images) == (3 - 1) * 3 + 1


def test_frame_interpolation_bad_input_is_clear(comfy_server):
    entry = comfy_server.run(_frames_graph(1, 2), timeout=300)
    error = execution_error(entry)
    assert error is not None and "at least 2 frames" in error["exception_message"]
    status, body = comfy_server.post("/prompt", {"prompt": _frames_graph(3, 1)})
    assert status == 400 and "multiplier" in json.dumps(body)
    assert comfy_server.alive()


@pytest.mark.parametrize("node,field", [
    ({"class_type": "StrideTokenShiftScheduler",
      "inputs": {"latent": ["latent", 0], "steps": 0, "base_shift": 0.95, "max_shift": 2.05}}, "steps"),
    ({"class_type": "StrideStudentScheduler",
      "inputs": {"preset": "custom", "step_list": "1000,750", "shift": 0.0}}, "shift"),
])
def test_out_of_range_widgets_are_rejected_before_running(comfy_server, tiny_wan, node, field):
    graph = _base_graph(tiny_wan)
    graph["bad"] = node
    graph["ddim_node"] = SAMPLERS["ddim"]
    graph["run"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["ddim_node", 0], "sigmas": ["bad", 0],
        "latent_image": ["latent", 0]}}
    graph["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["run", 0], "filename_prefix": "stride/bad"}}
    status, body = comfy_server.post("/prompt", {"prompt": graph})
    assert status == 400, body
    assert field in json.dumps(body["node_errors"]), body
    assert comfy_server.alive()
