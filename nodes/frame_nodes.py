"""Pixel-space frame interpolation (IMAGE -> IMAGE) over ``trainer.video.interpolate``.

Classical optical flow (OpenCV DIS) in both directions, motion-compensated warping of both
neighbours, occlusion-aware blending and scene-cut fallback: nothing to download, it works the
moment the pack is installed. Output follows ComfyUI core's FrameInterpolate convention,
``(N - 1) * multiplier + 1`` frames with the originals kept. Frames are produced pair by pair into
one preallocated output, so memory stays bounded for long videos.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..trainer.video import interpolate
from ..trainer.video.optical_flow import DIS_PRESETS

CATEGORY = "Stride/interpolation"


class StrideFrameInterpolate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StrideFrameInterpolate",
            display_name="Stride Frame Interpolation (optical flow, no downloads)",
            category=CATEGORY,
            description="Raises the frame rate by 2-8x with motion-compensated interpolation (OpenCV DIS flow both "
            "ways, occlusion-aware blending, scene-cut fallback). Needs no model weights.",
            inputs=[
                io.Image.Input("images"),
                io.Int.Input("multiplier", default=2, min=2, max=8),
                io.Combo.Input("method", options=list(interpolate.INTERPOLATORS), default="stride_flow"),
                io.Combo.Input("flow_quality", options=list(DIS_PRESETS), default="medium"),
                io.Combo.Input("scene_cut_fallback", options=list(interpolate.SCENE_CUT_FALLBACKS), default="nearest"),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, images, multiplier: int, method: str, flow_quality: str, scene_cut_fallback: str) -> io.NodeOutput:
        import comfy.utils

        if images.ndim != 4 or images.shape[0] < 2:
            raise ValueError(f"images: frame interpolation needs at least 2 frames, got shape {tuple(images.shape)}")
        cfg = interpolate.InterpolationConfig(method=method, multiplier=multiplier, flow_preset=flow_quality,
                                              scene_cut_fallback=scene_cut_fallback)
        bar = comfy.utils.ProgressBar(images.shape[0] - 1)
        out = interpolate.interpolate_image_batch(images.float().cpu(), multiplier, cfg,
                                                  progress=lambda done, total: bar.update_absolute(done, total))
        return io.NodeOutput(out)


NODES = [StrideFrameInterpolate]
