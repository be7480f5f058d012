"""The toy domain, its codec and text table, the teacher's file format, and exact pretraining resume."""

from __future__ import annotations

import pytest
import torch

from trainer.toy import codec, domain, text
from trainer.toy.teacher import (TeacherArch, build_diffusers_wan, diffusers_to_wan_keys, infer_arch, load_teacher,
                                 save_wan_file, wan_to_diffusers_keys)


def test_clips_are_deterministic_by_seed_and_differ_across_seeds():
    a, attrs_a = domain.make_batch(3, seed=5)
    b, attrs_b = domain.make_batch(3, seed=5)
    c, _ = domain.make_batch(3, seed=6)
    assert torch.equal(a, b) and attrs_a == attrs_b
    assert not torch.equal(a, c)
    assert a.shape == (3, 3, 9, 32, 32) and 0 <= a.min() and a.max() <= 1


@pytest.mark.parametrize("direction", domain.DIRECTIONS)
def test_objects_move_in_the_prompted_direction(direction):
    """Track the colour-weighted centroid: the first step goes the named way at the named speed."""
    for speed in domain.SPEEDS:
        attrs = domain.ClipAttributes("square", "red", direction, speed)
        video = domain.render_clip(attrs, seed=11, cfg=domain.DomainConfig(occlusion_prob=0.0))
        redness = (video[0] - video[1:].mean(0)).clamp_min(0)  # [F, H, W]
        ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        mass = redness.sum((1, 2))
        cx, cy = (redness * xs).sum((1, 2)) / mass, (redness * ys).sum((1, 2)) / mass
        dx, dy = float(cx[1] - cx[0]), float(cy[1] - cy[0])
        ux, uy = domain.DIRECTION_VECTORS[direction]
        along = dx * ux + dy * uy
        expected = domain.DomainConfig().speed_px[speed]
        assert 0.7 * expected < along < 1.3 * expected, (direction, speed, dx, dy)


def test_prompts_round_trip_and_unknown_words_are_clear_errors():
    for attrs in domain.all_attributes()[:10]:
        assert domain.parse_prompt(attrs.prompt) == attrs
    with pytest.raises(ValueError, match="exactly one colour"):
        domain.parse_prompt("a purple square moving left quickly")


def test_codec_is_lossless_and_has_wan_latent_shape():
    video, _ = domain.make_batch(2, seed=1)
    latent = codec.encode(video)
    assert latent.shape == (2, 16, 9, 16, 16)
    assert torch.allclose(codec.decode(latent), video, atol=1e-6)
    pad = latent[:, codec.DATA_CHANNELS:]
    assert torch.equal(pad[0], pad[1])  # the same coordinate pattern for every clip
    ramp = codec.COORD_AMPLITUDE * torch.linspace(-1, 1, 16)
    assert torch.allclose(pad[0, 0, 3, 5], ramp) and torch.allclose(pad[0, 1, 3, :, 5], ramp)
    assert torch.allclose(pad[0, 2, :, 0, 0], codec.COORD_AMPLITUDE * torch.linspace(-1, 1, 9))
    assert torch.all(pad[:, 3] == 0)
    # every second frame of the pattern is the pattern of a half-length clip
    assert torch.allclose(codec.encode(video[:, :, ::2])[:, codec.DATA_CHANNELS:], pad[:, :, ::2])
    with pytest.raises(ValueError, match="expected a video"):
        codec.encode(video[:, :2])
    images = codec.video_to_images(video)
    assert images.shape == (18, 32, 32, 3)
    assert torch.equal(codec.images_to_video(images, 9), video)


def test_text_table_is_the_shipped_deterministic_table():
    table = text.build_table()
    emb = text.encode_prompt("a red square moving left quickly")
    assert emb.shape == (4, 4096)
    words = ["red", "square", "left", "quickly"]
    raw = torch.stack([table[w] for w in words])
    # contextual tokens: own word weight 1, others text.CONTEXT_MIX, normalised (computed here by hand)
    norm = (1 + 3 * text.CONTEXT_MIX**2) ** 0.5
    expect_left = (raw[2] + text.CONTEXT_MIX * (raw[0] + raw[1] + raw[3])) / norm
    assert torch.allclose(emb[2], expect_left, atol=1e-5)
    # every token changes when only the direction word changes (no token ignores motion)
    other = text.encode_prompt("a red square moving right quickly")
    assert all(not torch.allclose(emb[i], other[i]) for i in range(4))
    assert abs(float(emb.std()) - 1.0) < 0.05
    assert torch.equal(text.encode_prompt(""), torch.zeros(4, 4096))
    with pytest.raises(ValueError):
        text.encode_prompts([])


def test_wan_key_conversion_round_trips_through_diffusers_converter():
    model = build_diffusers_wan(TeacherArch(1, 2, 256))
    sd = model.state_dict()
    wan = diffusers_to_wan_keys(sd)
    assert "head.modulation" in wan and "blocks.0.self_attn.q.weight" in wan and "blocks.1.norm3.weight" in wan
    assert "blocks.0.ffn.0.weight" in wan and "text_embedding.0.weight" in wan and "head.head.weight" in wan
    back = wan_to_diffusers_keys(wan)
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    assert infer_arch(wan) == TeacherArch(1, 2, 256)


def test_saved_teacher_file_loads_back_with_identical_predictions(tmp_path):
    torch.manual_seed(0)
    model = build_diffusers_wan(TeacherArch(1, 2, 256)).eval()
    path = tmp_path / "t.safetensors"
    save_wan_file(model, path, dtype=torch.float32)
    loaded = load_teacher(path)
    x = torch.randn(1, 16, 3, 8, 8)
    ctx = text.encode_prompts(["a red square moving left quickly"])
    t = torch.tensor([500.0])
    with torch.no_grad():
        a = model(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
        b = loaded(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
    assert torch.equal(a, b)
    assert not list(tmp_path.glob("*.tmp")), "atomic write left a temporary file"


def test_pretraining_resume_is_exact(tmp_path):
    from trainer.toy.pretrain import PretrainConfig, pretrain

    common = dict(batch_size=2, num_heads=1, num_layers=1, ffn_dim=128, compile=False, bf16=False, progress=False,
                  checkpoint_every=2, validate_every=100, warmup_steps=2)
    straight = PretrainConfig(steps=4, state_dir=tmp_path / "a", **common)
    pretrain(straight)
    pretrain(PretrainConfig(steps=2, state_dir=tmp_path / "b", **common))
    # resume the 2-step state into a 4-step run: same lr schedule requires the same total, so
    # copy the state into a run configured for 4 steps
    first = torch.load(tmp_path / "b" / "state.pt", weights_only=False)
    (tmp_path / "c").mkdir()
    torch.save(first, tmp_path / "c" / "state.pt")
    pretrain(PretrainConfig(steps=4, state_dir=tmp_path / "c", **common))
    a = torch.load(tmp_path / "a" / "state.pt", weights_only=False)
    c = torch.load(tmp_path / "c" / "state.pt", weights_only=False)
    assert a["step"] == c["step"] == 4
    for key in a["model"]:
        assert torch.allclose(a["model"][key], c["model"][key], atol=1e-6), key
    for key in a["ema"]:
        assert torch.allclose(a["ema"][key], c["ema"][key], atol=1e-6), key


def test_pretraining_continues_from_compact_weights_on_a_fresh_machine(tmp_path):
    from trainer.toy.pretrain import PretrainConfig, export, pretrain
    from trainer.toy.teacher import load_teacher

    common = dict(batch_size=2, num_heads=1, num_layers=1, ffn_dim=128, compile=False, bf16=False, progress=False,
                  checkpoint_every=2, validate_every=100, warmup_steps=1)
    first = PretrainConfig(steps=2, state_dir=tmp_path / "old", **common)
    pretrain(first)
    compact = export(first, tmp_path / "teacher.safetensors")
    # a new machine: no resume state, only the committed compact file
    fresh = PretrainConfig(steps=3, state_dir=tmp_path / "new", init_from=compact, **common)
    pretrain(fresh)
    state = torch.load(tmp_path / "new" / "state.pt", weights_only=False)
    assert state["step"] == 3  # continued at step 2, trained one more step
    started = load_teacher(compact).state_dict()
    diffs = {k: (started[k] - state["model"][k]).abs().max().item() for k in started}
    assert max(diffs.values()) < 0.01, "did not start from the compact weights"  # one AdamW step at lr 4e-4
    assert max(diffs.values()) > 0, "the continued run did not train"
    # the raw weights can be exported too (to continue from), and another run's state.pt is a start point
    old_state = torch.load(tmp_path / "old" / "state.pt", weights_only=False)
    raw = load_teacher(export(first, tmp_path / "raw.safetensors", weights="model")).state_dict()
    assert max((raw[k] - old_state["model"][k]).abs().max().item() for k in raw) < 0.02  # bf16 rounding
    from_state = PretrainConfig(steps=3, state_dir=tmp_path / "from_state", init_from=tmp_path / "old" / "state.pt",
                                **common)
    pretrain(from_state)
    assert torch.load(tmp_path / "from_state" / "state.pt", weights_only=False)["step"] == 3
    with pytest.raises(ValueError, match="ema"):
        export(first, tmp_path / "x.safetensors", weights="optimizer")


def test_teacher_loads_from_a_comfy_checkpoint_prefix_and_a_diffusers_folder(tmp_path):
    from safetensors.torch import load_file, save_file

    from trainer.toy.teacher import load_teacher_any

    torch.manual_seed(3)
    model = build_diffusers_wan(TeacherArch(1, 1, 128)).eval()
    save_wan_file(model, tmp_path / "plain.safetensors", dtype=torch.float32)
    prefixed = {f"model.diffusion_model.{k}": v for k, v in load_file(str(tmp_path / "plain.safetensors")).items()}
    save_file(prefixed, str(tmp_path / "comfy_full.safetensors"))
    model.save_pretrained(tmp_path / "pipeline" / "transformer")
    x, t = torch.randn(1, 16, 2, 8, 8), torch.tensor([300.0])
    ctx = text.encode_prompts(["a red square moving left quickly"])
    with torch.no_grad():
        want = model(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
        for source in (tmp_path / "comfy_full.safetensors", tmp_path / "pipeline"):
            got = load_teacher_any(source)(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
            assert torch.allclose(got, want, atol=1e-5), source
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_teacher_any(tmp_path)


def test_atomic_writes_get_normal_file_permissions(tmp_path):
    import os

    from trainer.checkpoint import atomic_save_safetensors, atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_save_safetensors({"x": torch.zeros(2)}, tmp_path / "a.safetensors", {})
        atomic_write_text("hi", tmp_path / "b.txt")
    finally:
        os.umask(umask)
    for name in ("a.safetensors", "b.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_step_generators_are_deterministic_and_streams_differ():
    from trainer.seeding import step_generator

    a = torch.randn(4, generator=step_generator(3, 10, 1))
    assert torch.equal(a, torch.randn(4, generator=step_generator(3, 10, 1)))
    assert not torch.equal(a, torch.randn(4, generator=step_generator(3, 10, 2)))
    assert not torch.equal(a, torch.randn(4, generator=step_generator(3, 11, 1)))
    with pytest.raises(ValueError, match="stream"):
        step_generator(0, 0, 7)


def test_model_card_sums_wall_clock_over_resumes_and_lists_metrics(tmp_path):
    import json

    from trainer.toy import card
    from trainer.toy.teacher import TeacherArch, arch_metadata, build_diffusers_wan, save_wan_file

    weights = tmp_path / "teacher.safetensors"
    arch = TeacherArch(1, 1, 128)
    save_wan_file(build_diffusers_wan(arch), weights, {"stride.steps": "700",
                                                        **{f"stride.arch.{k}": v for k, v in arch_metadata(arch).items()}})
    val = {"true": 0.1, "swap_direction": 0.12, "swap_speed": 0.11, "null": 0.2}
    log_a, log_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    # run a: two process segments (100 -> 200 s, then restarted: 50 s); run b: one segment of 30 s
    log_a.write_text("\n".join(json.dumps({"step": s, "elapsed_s": e, "val": val}) for s, e in
                               [(100, 100.0), (200, 200.0), (300, 50.0)]))
    log_b.write_text(json.dumps({"step": 400, "elapsed_s": 30.0, "val": val}))
    assert card.logged_seconds(card.read_log(log_a)) == 250.0
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"rows": [{"name": "teacher_50_cfg", "nfe": 100, "fd": 1.2345, "prompt_acc": 0.97}]}))
    text = card.model_card(weights, [log_a, log_b], evaluation, "python -m trainer toy pretrain")
    assert "training steps: 700" in text and "0.08 h over 2 run(s)" in text  # 280 s
    assert "| teacher_50_cfg | 100 |" in text and "1.234" in text and "0.970" in text
    assert "| 0.1000 | 0.1200 | 0.1100 | 0.2000 |" in text
    # runs whose logs are gone enter from the previous card, and the card says so
    text = card.model_card(weights, [log_b], None, "cmd", prior_hours=6.39, prior_runs=5)
    assert "6.40 h over 6 run(s) (6.39 h over 5 earlier run(s)" in text  # 6.39 h + 30 s
    with pytest.raises(ValueError, match="go together"):
        card.model_card(weights, [log_b], None, "cmd", prior_hours=1.0)


def test_probe_reports_zero_gaps_for_a_teacher_that_cannot_read_text(tmp_path):
    from trainer.checkpoint import atomic_torch_save
    from trainer.toy.pretrain import probe
    from trainer.toy.teacher import TeacherArch, arch_metadata, build_diffusers_wan

    arch = TeacherArch(1, 1, 128)
    torch.manual_seed(0)
    model = build_diffusers_wan(arch)
    for p in model.blocks[0].attn2.to_out.parameters():  # the only path from text to video tokens
        torch.nn.init.zeros_(p)
    state = tmp_path / "state.pt"
    atomic_torch_save({"model": model.state_dict(), "ema": model.state_dict(), "step": 5,
                       "arch": arch_metadata(arch)}, state)
    deaf = probe(state, n=8)
    assert deaf["step"] == 5
    assert all(abs(v) < 1e-6 for band in ("high_noise", "mid_noise") for k, v in deaf[band].items() if k.startswith("gap"))
    torch.manual_seed(0)
    atomic_torch_save({"model": build_diffusers_wan(arch).state_dict(), "step": 5, "arch": arch_metadata(arch)}, state)
    hearing = probe(state, n=8)
    assert abs(hearing["high_noise"]["gap_null"]) > 1e-6  # a random model's output does depend on the prompt


def test_motion_curriculum_narrows_then_widens_to_the_full_domain():
    from trainer.toy.pretrain import PretrainConfig, domain_at

    cfg = PretrainConfig(curriculum_from=100, curriculum_steps=200, curriculum_spread=0.2, curriculum_jitter=1.0)
    assert domain_at(cfg, 99) == domain.DomainConfig()  # before: the full domain (past steps unchanged)
    start, middle, end = domain_at(cfg, 100), domain_at(cfg, 200), domain_at(cfg, 300)
    assert (start.cross_spread, start.start_jitter_px) == (0.2, 1.0)
    assert abs(middle.cross_spread - 0.6) < 1e-9 and abs(middle.start_jitter_px - 3.5) < 1e-9
    assert end == domain.DomainConfig()
    # a narrow stage really puts every object on the midline across its motion
    attrs = domain.ClipAttributes("square", "red", "left", "slowly")
    narrow = domain.DomainConfig(cross_spread=0.0)
    for seed in range(3):
        clip = domain.render_clip(attrs, seed, narrow)
        ys = torch.nonzero((clip[0, 0] - clip[1, 0]) > 0.4)[:, 0].float()  # red pixels' rows in frame 0
        assert abs(ys.mean().item() - 15.5) < 1.0
    with pytest.raises(ValueError, match="cross_spread"):
        domain.DomainConfig(cross_spread=1.5)


def test_motion_warmup_batches_vary_only_in_direction_at_high_noise():
    from trainer.toy.pretrain import PretrainConfig, training_batch

    cfg = PretrainConfig(batch_size=8, motion_warmup_from=10, motion_warmup_steps=5, curriculum_from=15,
                         curriculum_steps=100, high_sigma_share=0.25, cfg_dropout=0.0)
    x0, _, sigma, context = training_batch(cfg, 12)
    assert bool((sigma >= 0.8).all())
    allowed = [text.encode_prompt(f"a red square moving {d} slowly") for d in domain.DIRECTIONS]
    assert all(any(torch.equal(c, a) for a in allowed) for c in context)  # only the direction varies
    # after the warm-up: every attribute again, a quarter of the batch at high noise
    _, _, sigma_after, _ = training_batch(cfg, 15)
    assert int((sigma_after >= 0.8).sum()) >= 2 and bool((sigma_after[:2] >= 0.8).all())
    # the same step draws the same batch (exact resume)
    again = training_batch(cfg, 12)
    assert torch.equal(again[0], x0) and torch.equal(again[2], sigma)


def test_balanced_order_keeps_every_prefix_balanced_and_covers_every_combination():
    from collections import Counter

    values = {"shape": domain.SHAPES, "colour": domain.COLOURS, "direction": domain.DIRECTIONS, "speed": domain.SPEEDS}
    ordered = domain.balanced_attributes()
    assert sorted(map(repr, ordered)) == sorted(map(repr, domain.all_attributes()))  # a permutation
    for n in range(1, len(ordered) + 1):
        for field, names in values.items():
            counts = Counter(getattr(a, field) for a in ordered[:n])
            spread = max(counts.get(v, 0) for v in names) - min(counts.get(v, 0) for v in names)
            assert spread <= 1, (n, field, counts)
    # the plain product order is what the balanced one replaces for subsets: its first half has no triangle
    assert "triangle" not in {a.shape for a in domain.all_attributes()[:48]}


def test_eval_subsets_are_balanced_while_the_full_set_and_its_recorded_key_stay_as_they_were():
    import json

    from trainer.eval.generate import EvalSet
    from trainer.eval.reference import SHIPPED_REFERENCE

    full = EvalSet()
    assert full.attributes() == domain.all_attributes()  # the order the recorded teacher rows were sampled in
    assert EvalSet(repeats=2).attributes() == domain.all_attributes() * 2
    quick = EvalSet(max_clips=48).attributes()
    assert {a.shape for a in quick} == set(domain.SHAPES) and {a.colour for a in quick} == set(domain.COLOURS)
    assert quick == domain.balanced_attributes()[:48]
    assert len(EvalSet(max_clips=100, repeats=2).attributes()) == 100
    # a subset's key says how it was chosen (records of the older prefix subsets no longer match); the full
    # set's key is unchanged, so the shipped teacher rows still serve the main job
    assert EvalSet(max_clips=48).key()["subset"] == "balanced" and "subset" not in full.key()
    if SHIPPED_REFERENCE.exists():
        assert json.loads(SHIPPED_REFERENCE.read_text())["key"]["eval_set"] == full.key()
