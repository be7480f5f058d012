"""LoRA adapters on a tiny random Wan: targeting, one frozen base with several switchable adapters,
ComfyUI-native export with Stride metadata, loading the file back through diffusers' converter,
the teacher fingerprint and atomic writes. CPU, a 1.1 M-parameter model, no mocks of our code."""

from __future__ import annotations

import copy

import pytest
import safetensors.torch
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from trainer.lora.export import (
    export_comfy_lora,
    load_comfy_lora_into_diffusers,
    read_stride_metadata,
    teacher_fingerprint,
)
from trainer.lora.inject import (LoraSpec, active_adapter, adapter_names, add_lora, fuse_adapter, lora_parameters,
                                 use_adapter)
from trainer.lora.targets import TARGET_PRESETS, diffusers_module_to_wan, wan_module_to_diffusers
from trainer.toy.teacher import TeacherArch, build_diffusers_wan, diffusers_to_wan_keys

ARCH = TeacherArch(num_heads=1, num_layers=2, ffn_dim=256)
SELF = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0"]
CROSS = ["attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"]
FFN = ["ffn.net.0.proj", "ffn.net.2"]
# written out by hand, not derived from targets.py, so a wrong table fails here
EXPECTED_DIFFUSERS_TARGETS = {
    "attn_ffn": SELF + CROSS + FFN,
    "attn": SELF + CROSS,
    "qkv_ffn": ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn2.to_q", "attn2.to_k", "attn2.to_v"] + FFN,
}
WAN_NAMES = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v", "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}
METADATA = {
    "method": "adv",
    "student_step_list": [1000, 900, 757, 522],
    "shift": 5.0,
    "teacher_fingerprint": "0" * 64,
    "config": {"lora": {"rank": 4}, "lr": 2e-6},
    "metrics": {"vbench_proxy": 0.5},
}


@pytest.fixture(scope="module")
def base_state():
    torch.manual_seed(0)
    return {k: v.clone() for k, v in build_diffusers_wan(ARCH).state_dict().items()}


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(1, 16, 3, 8, 8, generator=gen), torch.tensor([700.0]),
            torch.randn(1, 5, 4096, generator=gen))


def fresh_model(base_state):
    model = build_diffusers_wan(ARCH)
    model.load_state_dict(base_state)
    return model.eval()


def predict(model, inputs):
    x, t, context = inputs
    return model(hidden_states=x, timestep=t, encoder_hidden_states=context, return_dict=False)[0]


def adapted_modules(model, adapter_name):
    return sorted(name for name, m in model.named_modules() if hasattr(m, "lora_A") and adapter_name in m.lora_A)


def randomise_lora_up(model, adapter_name, seed, std=0.05):
    """peft starts lora_B at zero (the adapter is a no-op); give it values so it changes outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "lora_B") and adapter_name in module.lora_B:
                weight = module.lora_B[adapter_name].weight
                weight.copy_(torch.randn(weight.shape, generator=gen) * std)


def model_with_two_adapters(base_state):
    model = fresh_model(base_state)
    add_lora(model, LoraSpec(rank=4, alpha=6.0), "student")  # alpha / rank = 1.5: not a power of two
    add_lora(model, LoraSpec(rank=2, alpha=2.0, targets="attn"), "critic")
    randomise_lora_up(model, "student", seed=2)
    randomise_lora_up(model, "critic", seed=3)
    return model


# ---- targets

def test_module_names_map_both_ways():
    for diffusers_inner, wan_inner in WAN_NAMES.items():
        assert diffusers_module_to_wan(f"blocks.7.{diffusers_inner}") == f"blocks.7.{wan_inner}"
        assert wan_module_to_diffusers(f"blocks.7.{wan_inner}") == f"blocks.7.{diffusers_inner}"
    for bad in ("blocks.0.norm3", "head.head", "blocks.x.attn1.to_q", "attn1.to_q"):
        with pytest.raises(ValueError):
            diffusers_module_to_wan(bad)
    with pytest.raises(ValueError):
        wan_module_to_diffusers("blocks.0.attn1.to_q")  # a diffusers name is not a Wan name


@pytest.mark.parametrize("preset", sorted(EXPECTED_DIFFUSERS_TARGETS))
def test_each_preset_adapts_exactly_its_modules(base_state, preset):
    assert set(TARGET_PRESETS) == set(EXPECTED_DIFFUSERS_TARGETS)
    model = fresh_model(base_state)
    returned = add_lora(model, LoraSpec(rank=2, targets=preset), "student")
    expected = sorted(f"blocks.{i}.{inner}" for i in range(ARCH.num_layers) for inner in EXPECTED_DIFFUSERS_TARGETS[preset])
    assert adapted_modules(model, "student") == expected
    assert sorted(returned) == expected


# ---- injection

def test_base_is_frozen_and_each_adapter_owns_only_its_parameters(base_state):
    model = model_with_two_adapters(base_state)
    student, critic = lora_parameters(model, "student"), lora_parameters(model, "critic")
    assert len(student) == 2 * 10 * ARCH.num_layers and len(critic) == 2 * 8 * ARCH.num_layers
    assert not {id(p) for p in student} & {id(p) for p in critic}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in student + critic}
    shapes = {tuple(p.shape) for p in student}
    assert shapes <= {(4, 128), (128, 4), (4, 256), (256, 4)}, shapes  # only rank-4 matrices


def test_teacher_is_the_untouched_base_and_adapters_switch(base_state, inputs):
    model = fresh_model(base_state)
    with torch.no_grad():
        before = predict(model, inputs)
        model = model_with_two_adapters(base_state)
        with use_adapter(model, None):
            teacher = predict(model, inputs)
        with use_adapter(model, "student"):
            student = predict(model, inputs)
            assert active_adapter(model) == "student"
            with use_adapter(model, "critic"):
                critic = predict(model, inputs)
            assert active_adapter(model) == "student"  # the inner block restored the outer one
            student_again = predict(model, inputs)
        with use_adapter(model, None):
            teacher_again = predict(model, inputs)
    assert torch.equal(teacher, before) and torch.equal(teacher_again, before)
    assert torch.equal(student, student_again)
    scale = before.abs().max()
    assert (student - before).abs().max() > 1e-2 * scale
    assert (critic - before).abs().max() > 1e-2 * scale
    assert (student - critic).abs().max() > 1e-2 * scale


def test_a_new_adapter_is_a_no_op_until_trained(base_state, inputs):
    model = fresh_model(base_state)
    with torch.no_grad():
        before = predict(model, inputs)
        add_lora(model, LoraSpec(rank=4, init="default"), "student")
        assert torch.equal(predict(model, inputs), before)


def test_switching_adapters_between_forward_and_backward_keeps_gradients(base_state, inputs):
    """peft's own activate/disable flips requires_grad, which silently drops the gradient of a
    graph built before the switch; the trainer's step (student forward, then critic and teacher
    forwards, then backward with whichever is active) needs those gradients."""
    model = model_with_two_adapters(base_state)
    all_lora = lora_parameters(model, "student") + lora_parameters(model, "critic")
    with use_adapter(model, "student"):
        student_out = predict(model, inputs)
    with use_adapter(model, "critic"):
        with torch.no_grad():
            critic_out = predict(model, inputs)
        with use_adapter(model, None):
            with torch.no_grad():
                teacher_out = predict(model, inputs)
            assert all(p.requires_grad for p in all_lora)  # switching never changes trainability
            ((student_out - teacher_out) ** 2 + (student_out - critic_out) ** 2).mean().backward()
    student_grads = [p.grad for p in lora_parameters(model, "student")]
    assert all(g is not None for g in student_grads)
    assert any(g.abs().sum() > 0 for g in student_grads)
    assert all(p.grad is None for p in lora_parameters(model, "critic"))
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)


def test_use_adapter_restores_the_previous_adapter_after_an_exception(base_state):
    model = model_with_two_adapters(base_state)
    with use_adapter(model, "critic"):
        with pytest.raises(RuntimeError, match="boom"):
            with use_adapter(model, None):
                assert active_adapter(model) is None
                raise RuntimeError("boom")
        assert active_adapter(model) == "critic"


def test_clear_errors(base_state):
    with pytest.raises(ValueError, match="rank"):
        LoraSpec(rank=0)
    with pytest.raises(ValueError, match="unknown LoRA target preset 'mlp'"):
        LoraSpec(targets="mlp")
    with pytest.raises(ValueError, match="init"):
        LoraSpec(init="pissa")
    model = fresh_model(base_state)
    add_lora(model, LoraSpec(rank=2), "student")
    with pytest.raises(ValueError, match="already"):
        add_lora(model, LoraSpec(rank=2), "student")
    with pytest.raises(ValueError, match="no LoRA adapter named 'critic'"):
        with use_adapter(model, "critic"):
            pass
    with pytest.raises(ValueError, match="no LoRA adapter named"):
        lora_parameters(model, "critic")
    with pytest.raises(ValueError, match="matches"):
        add_lora(torch.nn.Sequential(torch.nn.Linear(2, 2)), LoraSpec(rank=1), "student")


# ---- export

def test_export_writes_only_comfyui_native_keys(base_state, tmp_path):
    model = model_with_two_adapters(base_state)
    path = export_comfy_lora(model, "student", tmp_path / "student.safetensors", METADATA)
    tensors = load_file(str(path))
    expected_modules = {f"blocks.{i}.{WAN_NAMES[inner]}" for i in range(ARCH.num_layers) for inner in WAN_NAMES}
    expected_keys = {f"diffusion_model.{m}{s}" for m in expected_modules
                     for s in (".lora_down.weight", ".lora_up.weight", ".alpha")}
    assert set(tensors) == expected_keys
    peft_layers = dict(model.named_modules())
    for diffusers_inner, wan_inner in WAN_NAMES.items():
        layer = peft_layers[f"blocks.1.{diffusers_inner}"]
        key = f"diffusion_model.blocks.1.{wan_inner}"
        assert torch.equal(tensors[key + ".lora_down.weight"], layer.lora_A["student"].weight)
        assert torch.equal(tensors[key + ".lora_up.weight"], layer.lora_B["student"].weight)
        assert tensors[key + ".lora_down.weight"].shape == (4, layer.base_layer.in_features)
        assert tensors[key + ".lora_up.weight"].shape == (layer.base_layer.out_features, 4)
        assert tensors[key + ".alpha"].shape == () and tensors[key + ".alpha"].item() == 6.0
    critic = load_file(str(export_comfy_lora(model, "critic", tmp_path / "critic.safetensors", METADATA)))
    assert len(critic) == 3 * 8 * ARCH.num_layers and not any(".ffn." in k for k in critic)
    assert {v.item() for k, v in critic.items() if k.endswith(".alpha")} == {2.0}


def test_stride_metadata_round_trips(base_state, tmp_path):
    model = model_with_two_adapters(base_state)
    path = export_comfy_lora(model, "student", tmp_path / "student.safetensors", METADATA)
    with safe_open(str(path), framework="pt") as handle:
        raw = handle.metadata()
    assert set(raw) == {"stride.method", "stride.student_step_list", "stride.shift", "stride.teacher_fingerprint",
                        "stride.config", "stride.metrics", "stride.student_gamma", "stride.format_version",
                        "stride.lora_rank", "stride.lora_alpha"}
    assert all(isinstance(v, str) for v in raw.values())
    meta = read_stride_metadata(path)
    assert meta["method"] == "adv"
    assert meta["student_step_list"] == [1000.0, 900.0, 757.0, 522.0]
    assert meta["shift"] == 5.0 and meta["teacher_fingerprint"] == "0" * 64
    assert meta["config"] == METADATA["config"] and meta["metrics"] == METADATA["metrics"]
    assert meta["format_version"] == 1 and meta["lora_rank"] == 4 and meta["lora_alpha"] == 6.0
    assert meta["student_gamma"] == 1.0  # not given: fresh noise, ComfyUI's lcm


def test_student_gamma_round_trips_and_older_files_read_as_fresh_noise(base_state, tmp_path):
    model = model_with_two_adapters(base_state)
    path = export_comfy_lora(model, "student", tmp_path / "tcd.safetensors", {**METADATA, "student_gamma": 0.75})
    assert read_stride_metadata(path)["student_gamma"] == 0.75
    with safe_open(str(path), framework="pt") as handle:  # a file written before the field existed
        header = {k: v for k, v in handle.metadata().items() if k != "stride.student_gamma"}
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    save_file(tensors, str(tmp_path / "older.safetensors"), metadata=header)
    assert read_stride_metadata(tmp_path / "older.safetensors")["student_gamma"] == 1.0
    with pytest.raises(ValueError, match=r"student_gamma.*\[0, 1\], got 1.5"):
        export_comfy_lora(model, "student", tmp_path / "bad.safetensors", {**METADATA, "student_gamma": 1.5})
    assert not (tmp_path / "bad.safetensors").exists()


def test_metadata_errors_are_clear(base_state, tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(1.0)}, str(foreign), metadata={"x": "y"})
    with pytest.raises(ValueError, match="not a Stride LoRA"):
        read_stride_metadata(foreign)
    model = model_with_two_adapters(base_state)
    with pytest.raises(ValueError, match="missing \\['shift'\\]"):
        export_comfy_lora(model, "student", tmp_path / "a.safetensors", {k: v for k, v in METADATA.items() if k != "shift"})
    with pytest.raises(ValueError, match="unknown Stride LoRA metadata keys \\['steps'\\]"):
        export_comfy_lora(model, "student", tmp_path / "a.safetensors", {**METADATA, "steps": 4})
    assert not (tmp_path / "a.safetensors").exists()


def test_exported_file_loads_through_diffusers_converter_with_the_same_output(base_state, inputs, tmp_path):
    model = model_with_two_adapters(base_state)
    path = export_comfy_lora(model, "student", tmp_path / "student.safetensors", METADATA)
    with torch.no_grad(), use_adapter(model, "student"):
        expected = predict(model, inputs)
    fresh = fresh_model(base_state)
    loaded = load_comfy_lora_into_diffusers(fresh, path, "stride")
    assert loaded == adapted_modules(model, "student")
    assert active_adapter(fresh) == "stride"
    assert not any(p.requires_grad for p in lora_parameters(fresh, "stride"))
    with torch.no_grad():
        got = predict(fresh, inputs)
        base = predict(fresh_model(base_state), inputs)
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= 1e-5 * scale, (got - expected).abs().max()
    assert (expected - base).abs().max() > 1e-2 * scale  # the LoRA matters, so agreement is not trivial
    with pytest.raises(ValueError, match="already"):
        load_comfy_lora_into_diffusers(fresh, path, "stride")


def test_fused_student_predicts_as_the_adapter_with_plain_linears(base_state, inputs, tmp_path):
    """``fuse_adapter``: the loaded LoRA merged into the base weights, no peft layer left (the base
    model's cost per call, as ComfyUI's patched weights), the same prediction as the adapter."""
    model = model_with_two_adapters(base_state)
    path = export_comfy_lora(model, "student", tmp_path / "student.safetensors", METADATA)
    adapted = fresh_model(base_state)
    load_comfy_lora_into_diffusers(adapted, path, "stride")
    fused = fresh_model(base_state)
    load_comfy_lora_into_diffusers(fused, path, "stride")
    fuse_adapter(fused, "stride")
    assert not any(isinstance(m, BaseTunerLayer) for m in fused.modules())
    assert not adapter_names(fused)
    with torch.no_grad():
        expected, got = predict(adapted, inputs), predict(fused, inputs)
        base = predict(fresh_model(base_state), inputs)
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= 1e-5 * scale, (got - expected).abs().max()
    assert (expected - base).abs().max() > 1e-2 * scale
    with pytest.raises(ValueError, match="other adapters"):
        fuse_adapter(model_with_two_adapters(base_state), "student")
    with pytest.raises(ValueError, match="no LoRA adapter named"):
        fuse_adapter(fresh_model(base_state), "student")


def test_foreign_keys_are_refused_before_diffusers_sees_them(base_state, tmp_path):
    path = tmp_path / "diffusers_keys.safetensors"
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 128)}, str(path))
    with pytest.raises(ValueError, match="unexpected key"):
        load_comfy_lora_into_diffusers(fresh_model(base_state), path, "x")


# ---- teacher fingerprint

def test_teacher_fingerprint_is_stable_across_representations_and_sees_changes(base_state):
    model = fresh_model(base_state)
    fingerprint = teacher_fingerprint(model)
    assert len(fingerprint) == 64
    wan_bf16 = {"diffusion_model." + k: v.to(torch.bfloat16) for k, v in diffusers_to_wan_keys(base_state).items()}
    bf16_model = fresh_model({k: v.to(torch.bfloat16).float() for k, v in base_state.items()})
    assert teacher_fingerprint(wan_bf16) == teacher_fingerprint(bf16_model)  # ComfyUI-style keys, same weights
    assert teacher_fingerprint(diffusers_to_wan_keys(base_state)) == fingerprint
    add_lora(model, LoraSpec(rank=2), "student")
    randomise_lora_up(model, "student", seed=5)
    assert teacher_fingerprint(model) == fingerprint  # adapters are not the teacher
    changed = copy.deepcopy(base_state)
    changed["blocks.1.ffn.net.2.weight"][0, 0] += 1e-3
    assert teacher_fingerprint(changed) != fingerprint
    renamed = {k.replace("blocks.1.", "blocks.9."): v for k, v in base_state.items()}
    assert teacher_fingerprint(renamed) != fingerprint


# ---- atomic writes

def test_export_is_atomic(base_state, tmp_path, monkeypatch):
    model = model_with_two_adapters(base_state)
    path = tmp_path / "student.safetensors"
    export_comfy_lora(model, "student", path, METADATA)
    assert [p.name for p in tmp_path.iterdir()] == ["student.safetensors"]  # no temporary file left
    original = path.read_bytes()

    with pytest.raises(TypeError, match="method"):
        export_comfy_lora(model, "critic", path, {**METADATA, "method": 5})
    assert path.read_bytes() == original

    def write_half_then_fail(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\x00" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export_comfy_lora(model, "critic", path, METADATA)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["student.safetensors"]
