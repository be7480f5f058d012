"""Classical optical flow (OpenCV DIS) and the warping primitives built on it.

One place for the flow conventions used by frame interpolation and by the evaluation metrics:
frames are float32 numpy arrays ``[H, W, 3]`` in [0, 1]; a flow ``[H, W, 2]`` from frame A to frame
B gives, for each pixel of A, its displacement (dx, dy) in pixels to where it appears in B.
"""

from __future__ import annotations

import cv2
import numpy as np

_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def to_gray_u8(frame: np.ndarray) -> np.ndarray:
    rgb = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def dis_flow(frame_a: np.ndarray, frame_b: np.ndarray, preset: str = "medium") -> np.ndarray:
    """Dense flow from frame_a to frame_b, [H, W, 2] float32."""
    if preset not in _PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; known: {', '.join(_PRESETS)}")
    dis = cv2.DISOpticalFlow_create(_PRESETS[preset])
    return dis.calc(to_gray_u8(frame_a), to_gray_u8(frame_b), None)


def backward_warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` at ``p + flow(p)`` for every pixel p (bilinear, border replicate)."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = grid_x + flow[..., 0]
    map_y = grid_y + flow[..., 1]
    return cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def forward_backward_error(flow_ab: np.ndarray, flow_ba: np.ndarray) -> np.ndarray:
    """|flow_ab(p) + flow_ba(p + flow_ab(p))| per pixel of A: large where A's pixel is occluded in B."""
    flow_ba_at = backward_warp(flow_ba, flow_ab)
    return np.linalg.norm(flow_ab + flow_ba_at, axis=-1)


def occlusion_mask(flow_ab: np.ndarray, flow_ba: np.ndarray, alpha: float = 0.01, beta: float = 0.5) -> np.ndarray:
    """True where the forward-backward check fails (Sundaram et al. thresholds)."""
    flow_ba_at = backward_warp(flow_ba, flow_ab)
    err = np.sum((flow_ab + flow_ba_at) ** 2, axis=-1)
    bound = alpha * (np.sum(flow_ab**2, axis=-1) + np.sum(flow_ba_at**2, axis=-1)) + beta
    return err > bound
