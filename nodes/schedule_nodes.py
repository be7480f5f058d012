"""SIGMAS nodes: student step lists, token-count-aware shift, published schedules, schedule search."""

from __future__ import annotations

from pathlib import Path

import torch
from comfy_api.latest import io

from ..trainer.sampling import schedule_search, schedules

CATEGORY = "Stride/schedules"
CUSTOM = "custom"
NO_LORA = "none"


def _lora_files() -> list[str]:
    import folder_paths

    return [name for name in folder_paths.get_filename_list("loras") if name.endswith(".safetensors")]


def presets_dir() -> Path:
    import folder_paths

    return Path(folder_paths.get_user_directory()) / "stride_schedules"


class StrideStudentScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StrideStudentScheduler",
            display_name="Stride Student Step-List Scheduler",
            category=CATEGORY,
            description="Sigmas of a distilled student from its training timesteps, warped by the shift the student "
            "was trained with (lightx2v / Self-Forcing / CausVid / ADV LoRAs). Use it with the Stride consistency sampler.",
            inputs=[
                io.Combo.Input("preset", options=[CUSTOM, *schedules.STUDENT_PRESETS], default="lightx2v_4step"),
                io.String.Input("step_list", default="1000,750,500,250",
                                tooltip="training timesteps in (0, 1000], decreasing; used when preset is 'custom'"),
                io.Float.Input("shift", default=5.0, min=0.01, max=100.0, step=0.01,
                               tooltip="shift the student was trained with; used when preset is 'custom'"),
                io.Combo.Input("stride_lora", options=[NO_LORA, *_lora_files()], default=NO_LORA, optional=True,
                               tooltip="a Stride LoRA from the loras folder: its saved training step list and shift "
                               "replace preset, step_list and shift, so sampling matches training"),
            ],
            outputs=[io.Sigmas.Output(), io.String.Output(display_name="timesteps")],
        )

    @classmethod
    def execute(cls, preset: str, step_list: str, shift: float, stride_lora: str | None = None) -> io.NodeOutput:
        if stride_lora and stride_lora != NO_LORA:
            import folder_paths

            from ..trainer.lora.export import read_stride_metadata

            path = folder_paths.get_full_path("loras", stride_lora)
            if path is None:
                raise ValueError(f"stride_lora {stride_lora!r} is not in the loras folder")
            meta = read_stride_metadata(path)  # a clear error for a LoRA without Stride metadata
            steps, used_shift, gamma = meta["student_step_list"], meta["shift"], meta["student_gamma"]
        elif preset == CUSTOM:
            try:
                steps = schedules.parse_step_list(step_list)
            except ValueError as err:
                raise ValueError(f"step_list {step_list!r}: {err}") from None
            used_shift, gamma = shift, 1.0
        else:
            entry = schedules.STUDENT_PRESETS[preset]
            steps, used_shift, gamma = list(entry.step_list), entry.shift, 1.0
        timesteps = schedules.student_timesteps(steps, used_shift)
        sigmas = schedules.student_sigmas(steps, used_shift)
        text = ", ".join(f"{float(t):.2f}" for t in timesteps) + f" (shift {used_shift:g})"
        if gamma != 1.0:  # a student trained to re-noise with part of its implied noise
            text += f"; trained for sampler gamma {gamma:g}: set it on the Stride consistency sampler"
        return io.NodeOutput(torch.as_tensor(sigmas, dtype=torch.float32), text)


class StrideTokenShiftScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StrideTokenShiftScheduler",
            display_name="Stride Token-Count Shift Scheduler",
            category=CATEGORY,
            description="A flow schedule whose shift grows with the video's token count (latent frames x height x width, "
            "the LTX/Flux formula): longer or larger videos spend more steps at high noise.",
            inputs=[
                io.Latent.Input("latent"),
                io.Int.Input("steps", default=8, min=1, max=1000),
                io.Float.Input("base_shift", default=0.95, min=-10.0, max=10.0, step=0.01),
                io.Float.Input("max_shift", default=2.05, min=-10.0, max=10.0, step=0.01),
            ],
            outputs=[io.Sigmas.Output(), io.Float.Output(display_name="shift")],
        )

    @classmethod
    def execute(cls, latent, steps: int, base_shift: float, max_shift: float) -> io.NodeOutput:
        sigmas, shift = schedules.token_aware_sigmas(tuple(latent["samples"].shape), steps, base_shift, max_shift)
        return io.NodeOutput(torch.as_tensor(sigmas, dtype=torch.float32), float(shift))


class StridePublishedScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StridePublishedScheduler",
            display_name="Stride Published Video Schedule",
            category=CATEGORY,
            description="Align-Your-Steps (SVD) and Optimal-Steps (Wan) schedules, log-linearly interpolated to any "
            "step count. 'to_flow' converts EDM sigmas to flow sigmas of equal SNR (for Wan/LTX/Hunyuan).",
            inputs=[
                io.Combo.Input("schedule", options=list(schedules.PUBLISHED_SCHEDULES)),
                io.Int.Input("steps", default=10, min=1, max=1000),
                io.Boolean.Input("to_flow", default=False),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, schedule: str, steps: int, to_flow: bool) -> io.NodeOutput:
        sigmas = torch.as_tensor(schedules.published_sigmas(schedule, steps), dtype=torch.float32)
        if to_flow:
            sigmas = torch.as_tensor(schedules.edm_to_flow_sigmas(sigmas), dtype=torch.float32)
        return io.NodeOutput(sigmas)


class StrideScheduleSearch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StrideScheduleSearch",
            display_name="Stride Temporal Schedule Search",
            category=CATEGORY,
            description="Finds N-step sigmas whose solution is closest to a many-step reference from the same noise, "
            "counting errors in frame differences (temporal) next to per-frame errors. Optionally saves a named preset.",
            inputs=[
                io.Model.Input("model"),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Latent.Input("latent"),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF),
                io.Float.Input("cfg", default=1.0, min=0.0, max=30.0, step=0.1),
                io.Int.Input("steps", default=4, min=1, max=50),
                io.Int.Input("reference_steps", default=50, min=2, max=1000),
                io.Float.Input("temporal_weight", default=1.0, min=0.0, max=100.0, step=0.1),
                io.Int.Input("iterations", default=2, min=1, max=20),
                io.String.Input("save_as", default="", tooltip="preset name to save (empty: don't save)"),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, seed, cfg, steps, reference_steps, temporal_weight,
                iterations, save_as) -> io.NodeOutput:
        import comfy.sample
        import comfy.samplers

        from .sampling_nodes import make_sampler

        if save_as:
            schedule_search.validate_preset_name(save_as)
        samples = latent["samples"]
        if temporal_weight > 0 and (samples.ndim != 5 or samples.shape[2] < 2):
            raise ValueError(f"latent: the temporal schedule search needs a video latent [B, C, frames >= 2, H, W], "
                             f"got shape {tuple(samples.shape)}; use temporal_weight 0 for images")
        latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
        noise = comfy.sample.prepare_noise(latent_image, seed)
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        sampler = make_sampler("stride_flow", order=1)

        def solve(sigmas):
            return guider.sample(noise, latent_image, sampler, torch.as_tensor(sigmas, dtype=torch.float32),
                                 seed=seed, disable_pbar=True).float().cpu()

        model_sampling = model.get_model_object("model_sampling")
        reference = solve(comfy.samplers.calculate_sigmas(model_sampling, "simple", reference_steps))
        initial = comfy.samplers.calculate_sigmas(model_sampling, "simple", steps)
        cfg_search = schedule_search.ScheduleSearchConfig(steps=steps, reference_steps=reference_steps,
                                                          temporal_weight=temporal_weight, iterations=iterations,
                                                          sigma_max=float(initial[0]))
        sigmas, info = schedule_search.search_schedule(solve, reference, cfg_search, initial=initial)
        if save_as:
            schedule_search.save_preset(presets_dir(), save_as, sigmas, info)
        return io.NodeOutput(torch.as_tensor(sigmas, dtype=torch.float32))


class StrideSchedulePreset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        names = schedule_search.list_presets(presets_dir())
        return io.Schema(
            node_id="StrideSchedulePreset",
            display_name="Stride Schedule Preset",
            category=CATEGORY,
            description="Loads a schedule saved by Stride Temporal Schedule Search.",
            inputs=[io.Combo.Input("preset", options=names or ["(none saved yet)"])],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, preset: str) -> io.NodeOutput:
        sigmas, _ = schedule_search.load_preset(presets_dir(), preset)
        return io.NodeOutput(torch.as_tensor(sigmas, dtype=torch.float32))


NODES = [StrideStudentScheduler, StrideTokenShiftScheduler, StridePublishedScheduler, StrideScheduleSearch,
         StrideSchedulePreset]
