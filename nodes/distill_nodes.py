"""In-graph distillation: a few-step student LoRA from the graph's MODEL and prompts.

A thin node over ``trainer.distill.loop.distill`` with the ComfyUI backend
(``trainer.backends.comfy``): the same methods, resume state and LoRA format as the headless
trainer. Progress shows on the node; Cancel saves a checkpoint, and running again with the same
save name resumes from it. The LoRA is written atomically into ComfyUI's ``loras`` folder only
when training finishes, so a half-written file never exists there.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import torch
from comfy_api.latest import io

from ..trainer.backends.base import STUDENT
from ..trainer.methods import method_registry

CATEGORY = "Stride/training"
SAVE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_save_name(name: str) -> str:
    if not SAVE_NAME.match(name) or ".." in name or name.endswith(".safetensors"):
        raise ValueError(f"save_name {name!r}: use letters, digits, '_', '-', '.' only (no path separators, no "
                         f"'..', no extension); the LoRA goes to ComfyUI's loras folder")
    return name


def _conditioning_tensor(conditioning, what: str) -> torch.Tensor:
    if not conditioning:
        raise ValueError(f"{what}: empty conditioning (encode at least one prompt)")
    tensors = [c[0] for c in conditioning]
    if any(t.ndim != 3 for t in tensors) or len({t.shape[1:] for t in tensors}) != 1:
        raise ValueError(f"{what}: every entry must be [batch, tokens, dim] of one shape, got "
                         f"{[tuple(t.shape) for t in tensors]}")
    out = torch.cat(tensors).float()
    if out.shape[0] == 0:
        raise ValueError(f"{what}: empty prompt batch")
    return out


def _check_prompts_not_empty(context: torch.Tensor) -> None:
    if not context.flatten(1).abs().amax(1).gt(0).any():
        raise ValueError("positive: the prompt batch is empty (every prompt encodes to nothing); give the prompts "
                         "the student should learn")


def loss_graph_image(history: list[dict], keys=("dmd", "critic_loss", "reg", "loss", "adv_g", "adv_d")) -> torch.Tensor:
    """A small line plot of the logged losses as an IMAGE [1, H, W, 3] (drawn with OpenCV)."""
    import cv2

    height, width, margin = 256, 512, 20
    canvas = np.full((height, width, 3), 255, np.uint8)
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    for colour, key in zip(colours, keys):
        points = [(h["step"], h[key]) for h in history if isinstance(h.get(key), float)]
        if len(points) < 2:
            continue
        steps, values = np.array(points, dtype=np.float64).T
        lo, hi = values.min(), values.max()
        xs = margin + (steps - steps.min()) / max(1e-9, np.ptp(steps)) * (width - 2 * margin)
        ys = height - margin - (values - lo) / max(1e-9, hi - lo) * (height - 2 * margin)
        cv2.polylines(canvas, [np.stack([xs, ys], 1).astype(np.int32)], False, colour[::-1], 1, cv2.LINE_AA)
        cv2.putText(canvas, f"{key} {values[-1]:.3g}", (margin, margin + 14 * colours.index(colour)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour[::-1], 1, cv2.LINE_AA)
    return torch.from_numpy(canvas).float().div(255)[None]


class StrideDistillLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StrideDistillLoRA",
            display_name="Stride Distill 4-Step LoRA",
            category=CATEGORY,
            description="Distils a few-step, CFG-free student LoRA from the MODEL (Wan and other flow video models) "
            "with the headless trainer's methods. Cancel keeps a checkpoint; the same save_name resumes.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model"),
                io.Conditioning.Input("positive", tooltip="the training prompts (a batch of prompts)"),
                io.Conditioning.Input("negative", tooltip="the teacher's CFG negative: one, or one per prompt"),
                io.Latent.Input("latent", tooltip="an empty video latent: its shape is what the student generates, "
                                "its batch size the training batch"),
                io.Combo.Input("method", options=sorted(method_registry()), default="adv"),
                io.String.Input("student_steps", default="1000,900,757,522"),
                io.Float.Input("shift", default=5.0, min=0.01, max=100.0, step=0.01),
                io.Int.Input("iterations", default=200, min=1, max=100000),
                io.Int.Input("rank", default=16, min=1, max=256),
                io.Float.Input("learning_rate", default=3e-4, min=1e-7, max=1e-1, step=1e-6),
                io.Float.Input("teacher_cfg", default=5.0, min=1.0, max=20.0, step=0.1),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1),
                io.String.Input("save_name", default="stride_student"),
                io.Latent.Input("real_latents", optional=True,
                                tooltip="clean latents of real videos for the regression and GAN terms (without them both "
                                "are off); one per prompt keeps them paired with the prompts, any other count is "
                                "used unconditionally"),
            ],
            outputs=[io.Model.Output(display_name="student"), io.LoraModel.Output(display_name="lora"),
                     io.Image.Output(display_name="loss_graph")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, method, student_steps, shift, iterations, rank,
                learning_rate, teacher_cfg, seed, save_name, real_latents=None) -> io.NodeOutput:
        import comfy.model_management
        import comfy.sd
        import folder_paths

        from ..trainer.backends.comfy import ComfyLoraBackend
        from ..trainer.distill.config import DistillConfig
        from ..trainer.distill.data import EmbeddingData
        from ..trainer.distill.loop import distill, export_student
        from ..trainer.lora.inject import LoraSpec
        from ..trainer.sampling.schedules import parse_step_list

        _check_save_name(save_name)
        try:
            step_list = tuple(parse_step_list(student_steps))
        except ValueError as err:
            raise ValueError(f"student_steps {student_steps!r}: {err}") from None
        latent_format = model.get_model_object("latent_format")
        if getattr(latent_format, "latent_dimensions", 2) != 3:
            raise ValueError("model: this is an image model; in-graph distillation needs a video model (Wan 2.1/2.2, "
                             "HunyuanVideo, LTX)")
        samples = latent["samples"]
        if samples.ndim != 5:
            raise ValueError(f"latent: expected a video latent [B, C, F, H, W], got {tuple(samples.shape)}")
        context = _conditioning_tensor(positive, "positive")
        _check_prompts_not_empty(context)
        negative_t = _conditioning_tensor(negative, "negative")
        if negative_t.shape[0] == 1 and context.shape[0] > 1:
            negative_t = negative_t.expand(context.shape[0], -1, -1)
        if negative_t.shape != context.shape:
            raise ValueError(f"negative {tuple(negative_t.shape)} does not match positive {tuple(context.shape)}: give "
                             f"one negative or one per prompt, encoded the same way")
        real = None
        if real_latents is not None:
            real = model.model.process_latent_in(real_latents["samples"].float())
            if real.shape[1:] != samples.shape[1:]:
                raise ValueError(f"real_latents {tuple(real.shape)} do not match latent {tuple(samples.shape)}")
        loras_dir = Path(folder_paths.get_folder_paths("loras")[0])
        state_dir = Path(folder_paths.get_user_directory()) / "stride_distill" / save_name
        with torch.inference_mode(False):
            # the headless job's ADV settings (update ratio, DMD noise range, ...) with the node's rate and CFG
            # (its regression, GAN and W1 temporal terms learn from real latents: without them they are off and
            # the temporal loss is the published hinge)
            headless = DistillConfig().adv
            adv = dataclasses.replace(headless if real is not None else headless.without_real_latents(),
                                      generator_lr=learning_rate, critic_lr=learning_rate, teacher_cfg=teacher_cfg)
            cfg = DistillConfig(method=method, name=save_name, steps=iterations, batch_size=samples.shape[0], seed=seed,
                                student_step_list=step_list, shift=shift, lora_rank=rank, lora_alpha=float(rank),
                                critic_rank=rank, state_dir=state_dir, out=loras_dir, checkpoint_every=max(1, min(50, iterations // 4)),
                                eval_repeats=0, progress=False, preview_every=0, adv=adv)
            backend = None
            try:
                backend = ComfyLoraBackend(model, LoraSpec(rank=rank, alpha=float(rank)),
                                           LoraSpec(rank=rank, alpha=float(rank)))
                data = EmbeddingData(context.clone(), negative_t.clone(), samples.shape[0], seed, tuple(samples.shape),
                                     None if real is None else real.clone())
                progress = _NodeProgress(iterations)
                outcome = distill(cfg, stop_check=progress.stop_requested, on_step=progress, backend=backend, data=data)
                if outcome.stopped_early:  # Cancel: the state of the last finished step is saved
                    raise comfy.model_management.InterruptProcessingException()
                path = export_student(outcome, cfg, loras_dir / f"{save_name}.safetensors", {})
                lora = backend.comfy_lora_state_dict(STUDENT)
                graph = loss_graph_image(outcome.history)
            finally:
                del backend
                comfy.model_management.soft_empty_cache()
        student, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)
        return io.NodeOutput(student, lora, graph, ui={"text": [f"saved {path.name} to loras"]})


class _NodeProgress:
    """Progress on the node; turns ComfyUI's Cancel into a clean stop of the trainer loop.

    ComfyUI's progress hook raises InterruptProcessingException on Cancel (and clears the flag);
    catching it here lets the loop save the step it just finished before the node re-raises."""

    def __init__(self, total: int):
        import comfy.utils

        self.total, self.interrupted = total, False
        self.bar = comfy.utils.ProgressBar(total)

    def __call__(self, done: int, _total: int, _metrics: dict) -> None:
        import comfy.model_management

        try:
            self.bar.update_absolute(done, self.total)
        except comfy.model_management.InterruptProcessingException:
            self.interrupted = True

    def stop_requested(self) -> bool:
        import comfy.model_management

        return self.interrupted or comfy.model_management.processing_interrupted()


NODES = [StrideDistillLoRA]
