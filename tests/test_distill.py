"""The distillation trainer loop on a tiny random Wan: train, checkpoint, resume, stop, NaN, export,
and data-parallel training under ``accelerate launch`` with two CPU processes."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from trainer.distill.config import DistillConfig
from trainer.distill.loop import NonFiniteLoss, distill, export_student
from trainer.methods.adv import AdvConfig
from trainer.toy.teacher import TeacherArch, build_diffusers_wan, save_wan_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "tiny_wan.safetensors"
    save_wan_file(build_diffusers_wan(TeacherArch(num_heads=1, num_layers=1, ffn_dim=128)), path, dtype=torch.float32)
    return path


def tiny_config(tmp_path: Path, teacher: Path, **overrides) -> DistillConfig:
    values = dict(teacher=teacher, name="tiny", steps=4, batch_size=1, lora_rank=4, lora_alpha=4.0, critic_rank=4,
                  state_dir=tmp_path / "state", out=tmp_path / "out", checkpoint_every=2, eval_repeats=0, bf16=False, preview_every=0,
                  progress=False, threads=1, adv=AdvConfig(generator_lr=1e-3, critic_lr=1e-3, generator_every=2))
    values.update(overrides)
    return DistillConfig(**values)


def lora_tensors(outcome) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in outcome.backend.model.named_parameters() if "lora_" in n}


def test_training_changes_only_lora_and_resume_continues_exactly(tmp_path, tiny_teacher):
    straight = distill(tiny_config(tmp_path / "a", tiny_teacher))
    base_before = {n: p for n, p in build_diffusers_wan(TeacherArch(1, 1, 128)).named_parameters()}
    assert straight.steps_done == 4 and not straight.stopped_early
    assert all(not p.requires_grad for n, p in straight.backend.model.named_parameters() if "lora_" not in n)
    assert len(base_before) > 0

    # same run in two halves: stop after 2 steps through stop_check, then rerun (resume)
    half = distill(tiny_config(tmp_path / "b", tiny_teacher), stop_check=lambda: True)
    assert half.stopped_early and half.steps_done == 1
    state = torch.load(half.state_path, weights_only=False)
    assert state["step"] == 1
    resumed = distill(tiny_config(tmp_path / "b", tiny_teacher))
    assert resumed.steps_done == 4
    a, b = lora_tensors(straight), lora_tensors(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    assert resumed.history[0]["step"] == 1 and [h["step"] for h in resumed.history] == [1, 2, 3, 4]


def test_export_writes_comfy_keys_and_metadata(tmp_path, tiny_teacher):
    from trainer.lora.export import read_stride_metadata

    from trainer.eval.evaluate import lora_student_setup

    cfg = tiny_config(tmp_path, tiny_teacher, steps=2, student_step_list=(1000.0, 900.0, 757.0, 522.0), shift=5.0,
                      student_gamma=0.75)
    outcome = distill(cfg)
    path = export_student(outcome, cfg, tmp_path / "out" / "student.safetensors", {"fd": 1.0})
    keys = load_file(str(path)).keys()
    assert keys and all(k.startswith("diffusion_model.blocks.0.") for k in keys)
    assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in keys)
    meta = read_stride_metadata(path)
    assert meta["method"] == "adv" and meta["student_step_list"] == [1000.0, 900.0, 757.0, 522.0]
    assert meta["shift"] == 5.0 and meta["metrics"] == {"fd": 1.0}
    assert meta["config"]["steps"] == 2
    # the student is sampled the way it was trained: its step list, shift and share of fresh noise
    assert meta["student_gamma"] == 0.75
    setup = lora_student_setup(path)
    assert setup.sampler == "stride_consistency" and setup.sampler_options == {"gamma": 0.75}
    assert setup.step_list == (1000.0, 900.0, 757.0, 522.0) and setup.shift == 5.0 and setup.cfg == 1.0


def test_nan_stops_with_a_diagnostic_and_keeps_the_last_good_state(tmp_path, tiny_teacher):
    from trainer.distill.data import EmbeddingData

    class CorruptFromStep3(EmbeddingData):
        """Real latents turn NaN from step 3 on (a corrupt file met mid-run)."""

        def batch(self, step):
            data = super().batch(step)
            if step >= 3:
                data.real_latents = torch.full_like(data.real_latents, float("nan"))
            return data

    cfg = tiny_config(tmp_path, tiny_teacher, steps=20, checkpoint_every=1,
                      adv=AdvConfig(generator_lr=1e-3, critic_lr=1e-3, generator_every=1))
    data = CorruptFromStep3(torch.randn(3, 4, 4096), None, cfg.batch_size, 0, (cfg.batch_size, 16, 3, 8, 8),
                            torch.randn(3, 16, 3, 8, 8))
    with pytest.raises(NonFiniteLoss, match="last good state"):
        distill(cfg, data=data)
    state = torch.load(tmp_path / "state" / "state.pt", weights_only=False)
    assert state["step"] == 3  # steps 0-2 finished and were saved; step 3 stopped the run
    assert all(torch.isfinite(v).all() for v in state["adapters"].values())


def test_bad_config_is_a_clear_error(tmp_path, tiny_teacher):
    with pytest.raises(ValueError, match="name"):
        tiny_config(tmp_path, tiny_teacher, name="../escape")
    with pytest.raises(ValueError, match="unknown method"):
        distill(tiny_config(tmp_path, tiny_teacher, method="nope"))
    with pytest.raises(ValueError, match="regression_weighting"):
        AdvConfig(regression_weighting="weird")
    with pytest.raises(ValueError, match=r"student_gamma is a share of fresh noise in \[0, 1\], got 1.5"):
        tiny_config(tmp_path, tiny_teacher, student_gamma=1.5)
    # GPD's students follow the ODE (no fresh noise to mix): refused before the teacher is even read
    with pytest.raises(ValueError, match="draws no fresh noise"):
        distill(tiny_config(tmp_path, tmp_path / "no_such_teacher.safetensors", method="gpd", student_gamma=0.5))


@pytest.mark.skipif(sys.platform != "linux", reason="two-process gloo test runs on Linux")
def test_accelerate_launch_two_processes_synchronises_lora_gradients(tmp_path, tiny_teacher):
    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.exists():
        pytest.skip("accelerate command not installed in this environment")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "trainer", "distill", "--teacher", str(tiny_teacher), "--name", "ddp",
           "--steps", "2", "--batch-size", "1", "--lora-rank", "4", "--lora-alpha", "4", "--critic-rank", "4",
           "--state-dir", str(tmp_path / "state"), "--out", str(tmp_path / "out"), "--eval-repeats", "0",
           "--no-bf16", "--no-progress", "--threads", "1", "--adv.generator-every", "1",
           "--adv.generator-lr", "1e-3", "--adv.critic-lr", "1e-3", "--json"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    # both processes print to one pipe, so lines can interleave: match the JSON objects themselves
    sums = [json.loads(m) for m in re.findall(r"STRIDE_RANK_CHECKSUM (\{[^{}]*\})", result.stdout + result.stderr)]
    assert sorted(s["rank"] for s in sums) == [0, 1], result.stdout[-2000:]
    assert sums[0]["checksum"] == sums[1]["checksum"], "LoRA weights diverged between processes"
    assert sums[0]["changed"], "training did not change the LoRA"
    assert (tmp_path / "out" / "ddp.safetensors").exists()


def test_bench_distill_rows_share_the_sampling_bench_keys(tmp_path, tiny_teacher):
    from trainer.bench.distill import run_distill_bench
    from trainer.bench.sampling import ROW_KEYS

    base = tiny_config(tmp_path, tiny_teacher, steps=1, batch_size=1)
    result = run_distill_bench(base, ["adv", "gpd"], max_clips=6)
    names = [row["name"] for row in result["rows"]]
    assert names == ["data", "teacher_50_cfg", "teacher_4", "adv", "gpd"]
    for row in result["rows"]:
        assert set(ROW_KEYS) <= set(row)
    assert result["rows"][3]["nfe"] == 4 and result["rows"][1]["nfe"] == 100
    assert {"speedup_teacher_4", "speedup_adv", "speedup_gpd"} <= set(result["ratios"])
    assert result["clips_per_row"] == 6
    assert set(result["train_seconds"]) == {"adv", "gpd"}


def test_bench_distill_keeps_measured_rows_across_a_rerun(tmp_path, tiny_teacher):
    from trainer.bench.distill import run_distill_bench

    rows_file = tmp_path / "rows.jsonl"
    base = tiny_config(tmp_path, tiny_teacher, steps=1, batch_size=1)
    first = run_distill_bench(base, ["adv"], max_clips=4, rows_file=rows_file)
    lines = rows_file.read_text().splitlines()
    assert [json.loads(line).get("key") for line in lines[1:]] == ["teacher", "adv"]
    # mark the stored adv row, and leave a line cut short as a kill would
    entries = [json.loads(line) for line in lines]
    entries[2]["rows"][0]["fd"] = 12345.0
    rows_file.write_text("\n".join(json.dumps(e) for e in entries) + '\n{"key": "gp')
    second = run_distill_bench(base, ["adv", "gpd"], max_clips=4, rows_file=rows_file)
    assert [r["name"] for r in second["rows"]] == ["data", "teacher_50_cfg", "teacher_4", "adv", "gpd"]
    assert second["rows"][3]["fd"] == 12345.0, "the stored adv row was not reused"
    assert second["rows"][1] == first["rows"][1]
    assert second["train_seconds"]["adv"] == first["train_seconds"]["adv"]
    assert [json.loads(line).get("key") for line in rows_file.read_text().splitlines()[1:]] == ["teacher", "adv", "gpd"]
    # a new ADV recipe measures the ADV variant again and keeps the teacher's and the other methods' rows
    new_recipe = dataclasses.replace(base, adv=dataclasses.replace(base.adv, temporal_weight=base.adv.temporal_weight + 1))
    after = run_distill_bench(new_recipe, ["adv", "gpd"], max_clips=4, rows_file=rows_file)
    assert after["rows"][3]["fd"] != 12345.0, "an ADV row measured with the old recipe was reused"
    assert after["rows"][4] == second["rows"][4] and after["train_seconds"]["gpd"] == second["train_seconds"]["gpd"]
    assert after["rows"][1] == first["rows"][1]
    stored = [json.loads(line) for line in rows_file.read_text().splitlines()[1:]]
    assert [e["key"] for e in stored] == ["teacher", "gpd", "adv"], "the stale ADV row was not replaced"
    assert stored[2]["variant"]["adv"]["temporal_weight"] == base.adv.temporal_weight + 1
    # other shared settings (here the step count) measure everything again
    third = run_distill_bench(tiny_config(tmp_path, tiny_teacher, steps=2, batch_size=1), ["adv"], max_clips=4,
                              rows_file=rows_file)
    assert third["rows"][3]["fd"] != 12345.0
    assert [json.loads(line).get("key") for line in rows_file.read_text().splitlines()[1:]] == ["teacher", "adv"]


def test_bench_distill_does_not_score_a_variant_whose_training_was_stopped(tmp_path, tiny_teacher):
    from trainer.bench.distill import BenchStopped, run_distill_bench

    rows_file = tmp_path / "rows.jsonl"
    base = tiny_config(tmp_path, tiny_teacher, steps=3, batch_size=1)
    with pytest.raises(BenchStopped, match="stopped during 'adv' at step 1 of 3.*rerun the same command"):
        run_distill_bench(base, ["adv"], max_clips=4, rows_file=rows_file, stop_check=lambda: True)
    assert [json.loads(line).get("key") for line in rows_file.read_text().splitlines()[1:]] == []


def test_bench_distill_settings_leave_out_threads_and_progress_but_not_the_budget(tmp_path, tiny_teacher):
    from trainer.bench.distill import bench_settings

    base = tiny_config(tmp_path, tiny_teacher, steps=1, batch_size=1)
    settings = bench_settings(base, 1, None)
    assert bench_settings(dataclasses.replace(base, threads=1, progress=True), 1, None) == settings
    assert bench_settings(dataclasses.replace(base, steps=2), 1, None) != settings
    assert bench_settings(base, 2, None) != settings
    # a method's own recipe is kept with its variant's rows, not in the settings every row shares
    assert bench_settings(dataclasses.replace(base, gpd=dataclasses.replace(base.gpd, num_stages=1)), 1, None) == settings


def test_bench_distill_variant_settings_hold_the_variants_own_method_config(tmp_path, tiny_teacher):
    from trainer.bench.distill import variant_config, variant_settings

    base = tiny_config(tmp_path, tiny_teacher, steps=1, batch_size=1, adv=DistillConfig().adv)  # the main job's GAN weight
    no_gan = variant_settings(variant_config(base, "adv_no_gan", tmp_path))
    assert no_gan["method"] == "adv" and no_gan["adv"]["gan_weight"] == 0.0 and set(no_gan) == {"method", "adv"}
    assert no_gan != variant_settings(variant_config(base, "adv", tmp_path))
    changed_gpd = dataclasses.replace(base, gpd=dataclasses.replace(base.gpd, num_stages=1))
    assert variant_settings(variant_config(changed_gpd, "adv", tmp_path)) == variant_settings(variant_config(base, "adv", tmp_path))
    assert variant_settings(variant_config(changed_gpd, "gpd", tmp_path)) != variant_settings(variant_config(base, "gpd", tmp_path))


def test_terms_that_learn_from_real_latents_are_refused_before_training_without_them(tmp_path, tiny_teacher):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square moving left quickly\na blue circle moving up slowly\n")
    main_job = DistillConfig().adv
    cfg = tiny_config(tmp_path, tiny_teacher, prompts=prompts, steps=1, adv=main_job)
    with pytest.raises(ValueError, match="adaptive regression, GAN, distribution temporal loss learn from real "
                                         "latents and this run has none: give --real-latents"):
        distill(cfg)
    assert not (tmp_path / "state" / "state.pt").exists() and not (tmp_path / "out" / "tiny.safetensors").exists()
    # the flags the message names are what without_real_latents() sets: that run trains
    bare = main_job.without_real_latents()
    outcome = distill(tiny_config(tmp_path, tiny_teacher, prompts=prompts, steps=1, adv=bare))
    assert outcome.steps_done == 1


def test_real_latents_pair_with_prompts_only_one_to_one():
    import torch

    from trainer.distill.data import EmbeddingData

    context = torch.arange(3.0)[:, None, None].expand(3, 2, 8).clone()  # prompt i is filled with i
    negative = torch.zeros(1, 2, 8)
    real = torch.arange(3.0)[:, None, None, None, None].expand(3, 4, 2, 2, 2).clone()  # video i filled with i
    paired = EmbeddingData(context, negative, 5, 0, (5, 4, 2, 2, 2), real)
    for step in range(4):
        batch = paired.batch(step)
        assert batch.real_paired
        assert torch.equal(batch.context[:, 0, 0], batch.real_latents[:, 0, 0, 0, 0])  # video i with prompt i
    unpaired = EmbeddingData(context, negative, 5, 0, (5, 4, 2, 2, 2), real[:2])
    assert not unpaired.batch(0).real_paired

    from trainer.methods.base import DistillBatch

    b = DistillBatch(context, torch.zeros_like(context), (3, 4, 2, 2, 2), real, real_paired=False)
    assert torch.equal(b.real_context, b.negative)  # conditional terms see unpaired videos with the negative
    assert torch.equal(DistillBatch(context, torch.zeros_like(context), (3, 4, 2, 2, 2), real).real_context, context)


def test_prompt_file_is_encoded_once_and_cached(tmp_path):
    from trainer.distill.data import cached_prompt_embeddings
    from trainer.toy import text

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# my style\na red square moving left quickly\n\na blue circle moving up slowly\n")
    cache = tmp_path / "cache"
    first = cached_prompt_embeddings(prompts, "", cache)
    data = load_file(str(first))
    assert torch.equal(data["context"], text.encode_prompts(["a red square moving left quickly",
                                                             "a blue circle moving up slowly"]))
    assert torch.equal(data["negative"], text.encode_prompts([""]))
    mtime = first.stat().st_mtime_ns
    assert cached_prompt_embeddings(prompts, "", cache) == first and first.stat().st_mtime_ns == mtime  # reused
    prompts.write_text("a green triangle moving right slowly\n")
    assert cached_prompt_embeddings(prompts, "", cache) != first  # edited file: encoded again
    prompts.write_text("a purple square moving left quickly\n")
    with pytest.raises(ValueError, match="--embeddings"):
        cached_prompt_embeddings(prompts, "", cache)
    with pytest.raises(ValueError, match="not both"):
        DistillConfig(prompts=prompts, embeddings=first)


def test_prompt_file_trains_and_previews_are_written_as_the_run_goes(tmp_path, tiny_teacher):
    """``--prompts`` through the loop, and previews: fixed prompts and noise, so equal LoRAs give equal previews."""
    from PIL import Image

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square moving left quickly\na blue circle moving up slowly\n")
    adv = AdvConfig(generator_lr=1e-3, critic_lr=1e-3, generator_every=1, adaptive_regression=False)  # no real videos
    outcome = distill(tiny_config(tmp_path / "p", tiny_teacher, prompts=prompts, steps=4, preview_every=2, adv=adv))
    assert outcome.steps_done == 4
    previews = sorted((tmp_path / "p" / "out" / "tiny_previews").iterdir())
    assert [p.name for p in previews] == ["step_000002.safetensors", "step_000004.safetensors"]
    first, last = (load_file(str(p))["latents"] for p in previews)
    assert first.shape == (2, 16, 9, 16, 16) and torch.isfinite(last).all()
    assert not torch.equal(first, last)  # the student changed between the previews

    # toy data decodes without a VAE: a PNG grid, one row per prompt (4 prompts), one column per frame (9)
    toy = distill(tiny_config(tmp_path / "t", tiny_teacher, steps=2, preview_every=2))
    (png,) = (tmp_path / "t" / "out" / "tiny_previews").iterdir()
    with Image.open(png) as image:
        width, height = image.size  # cells of equal size (upscaled for viewing), 2 px gaps
        assert png.suffix == ".png" and (width + 2) / 9 == (height + 2) / 4 and (height + 2) % 4 == 0
    from trainer.distill.data import ToyData
    from trainer.distill.preview import sample_student

    prompts_toy = ToyData(1, 0).preview_prompts(4)
    again = sample_student(toy.backend, toy.schedule, "adv", prompts_toy, torch.device("cpu"))
    assert torch.equal(again, sample_student(toy.backend, toy.schedule, "adv", prompts_toy, torch.device("cpu")))
    with pytest.raises(ValueError, match="preview_every"):
        DistillConfig(preview_every=-1)


def test_report_reuses_the_teacher_rows_bench_sampling_recorded_and_only_an_exact_match(tmp_path, tiny_teacher,
                                                                                          monkeypatch):
    import dataclasses

    from trainer.bench.sampling import run_sampling_bench
    from trainer.distill.job import teacher_reference
    from trainer.eval import reference
    from trainer.eval.generate import EvalSet

    cfg = tiny_config(tmp_path, tiny_teacher, steps=1)
    backend = distill(cfg).backend
    eval_set = EvalSet(max_clips=3)
    # nothing recorded: measured here, and recorded in the user cache
    measured, samples, source = teacher_reference(backend, cfg, eval_set)
    assert source == "teacher rows measured in this run"
    assert [r["name"] for r in measured] == ["teacher_50_cfg", "teacher_4"] and samples["teacher_4"][0].shape[0] == 3
    # bench sampling's rows for the same teacher file and settings are the same numbers, and it records them
    bench = run_sampling_bench(teacher=tiny_teacher, bf16=False, max_clips=3, lora=None,
                               save_reference=tmp_path / "shipped.json")
    bench_rows = {r["name"]: r for r in bench["rows"]}
    for row in measured:
        assert bench_rows[row["name"]]["fd"] == row["fd"] and bench_rows[row["name"]]["flicker"] == row["flicker"]
    record = json.loads((tmp_path / "shipped.json").read_text())
    record["setups"]["teacher_50_cfg"]["row"]["fd"] = 12345.0  # mark it: a reused row carries the mark
    (tmp_path / "shipped.json").write_text(json.dumps(record))
    reference.cache_path(record["key"]["teacher_sha256"]).unlink()
    monkeypatch.setattr(reference, "SHIPPED_REFERENCE", tmp_path / "shipped.json")
    reused, samples, source = teacher_reference(backend, cfg, eval_set)
    assert reused[0]["fd"] == 12345.0 and "reused" in source and "bench sampling" in source
    assert samples["teacher_50_cfg"][0].shape == (3, 3, 9, 32, 32)  # the report's clips are still sampled
    # any other setting finds no record: another eval set, or reuse switched off; another dtype neither
    no_reuse = dataclasses.replace(cfg, reuse_reference=False)
    for other_cfg, other_set in ((cfg, EvalSet(max_clips=2)), (no_reuse, eval_set)):
        rows, _, source = teacher_reference(backend, other_cfg, other_set)
        assert source == "teacher rows measured in this run" and rows[0]["fd"] != 12345.0
    key = reference.record_key(record["key"]["teacher_sha256"], eval_set, 32, True)
    assert reference.find_rows(key, [], [tmp_path / "shipped.json"]) is None


def test_student_ema_follows_the_ramped_average_and_applied_restores_the_raw_weights():
    from trainer.distill.ema import StudentEMA

    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.ones(2, 2))
    ema = StudentEMA([a, b], decay=0.5)
    expected_a = torch.zeros(3)
    for n, value in enumerate([1.0, 4.0, -2.0, 8.0], start=1):
        with torch.no_grad():
            a.fill_(value)
        d = ema.update()
        assert d == pytest.approx(min(0.5, (1 + n) / (10 + n)))
        expected_a = d * expected_a + (1 - d) * value
    # updates 1-4 ramp: 2/11, 3/12, 4/13, 5/14 (all below 0.5)
    by_hand = 0.0
    for n, value in enumerate([1.0, 4.0, -2.0, 8.0], start=1):
        d = (1 + n) / (10 + n)
        by_hand = d * by_hand + (1 - d) * value
    assert torch.allclose(ema.shadow[0], torch.full((3,), by_hand)) and torch.allclose(ema.shadow[0], expected_a)
    assert torch.equal(ema.shadow[1], torch.ones(2, 2))  # a constant tensor stays where it is
    with ema.applied():
        assert torch.allclose(a.detach(), torch.full((3,), by_hand))
    assert torch.equal(a.detach(), torch.full((3,), 8.0))
    with pytest.raises(ValueError, match="decay"):
        StudentEMA([a], decay=1.0)
    with pytest.raises(ValueError, match="student_ema"):
        DistillConfig(student_ema=1.5)


def test_student_ema_ramp_decides_when_the_configured_decay_binds():
    from trainer.distill.ema import StudentEMA, ema_decay_at, ramp_end

    for decay, ramp in [(0.99, 10.0), (0.995, 10.0), (0.995, 2.0), (0.9, 1.0), (0.5, 2.0)]:
        first = next(n for n in range(1, 5000) if ema_decay_at(decay, n, ramp) == decay)  # brute force
        assert ramp_end(decay, ramp) == first
    assert ramp_end(0.99) == 890 and ramp_end(0.995) == 1790

    def shadow_after(decay, ramp, updates=600):
        p = torch.nn.Parameter(torch.zeros(1))
        ema = StudentEMA([p], decay, ramp)
        for n in range(updates):
            with torch.no_grad():
                p.fill_(math.sin(n / 7.0) + n / 100.0)
            ema.update()
        return float(ema.shadow[0])

    # with the default ramp neither 0.99 nor 0.995 binds within 600 updates: the same average
    assert shadow_after(0.99, 10.0) == shadow_after(0.995, 10.0)
    # with ramp 2 both bind early (updates 98 and 198), and the longer average lags the rising weights more
    assert shadow_after(0.995, 2.0) < shadow_after(0.99, 2.0) < shadow_after(0.99, 10.0)
    with pytest.raises(ValueError, match="ramp"):
        StudentEMA([torch.nn.Parameter(torch.zeros(1))], 0.99, ramp=0.5)
    with pytest.raises(ValueError, match="student_ema_ramp"):
        DistillConfig(student_ema_ramp=0.0)


def test_student_ema_is_what_the_run_exports_and_it_resumes_exactly(tmp_path, tiny_teacher):
    straight = distill(tiny_config(tmp_path / "a", tiny_teacher, student_ema=0.9))
    state = torch.load(straight.state_path, weights_only=False)
    assert state["student_ema"]["updates"] == 4
    student = straight.backend.trainable_parameters("student")
    raw = [state["adapters"][n] for n, p in straight.backend.model.named_parameters()
           if any(p is q for q in student)]
    # the run's weights at the end are the saved shadow, not the raw weights training continues from
    for p, s in zip(student, state["student_ema"]["shadow"]):
        assert torch.equal(p.detach(), s)
    assert any(not torch.allclose(p.detach(), r) for p, r in zip(student, raw))

    half = distill(tiny_config(tmp_path / "b", tiny_teacher, student_ema=0.9), stop_check=lambda: True)
    assert half.steps_done == 1
    resumed = distill(tiny_config(tmp_path / "b", tiny_teacher, student_ema=0.9))
    a, b = lora_tensors(straight), lora_tensors(resumed)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    with pytest.raises(ValueError, match="trained with a student EMA"):
        distill(tiny_config(tmp_path / "b", tiny_teacher, steps=5, student_ema=0.0))
