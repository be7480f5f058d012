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
DIS_PRESETS = tuple(_PRESETS)

_INTERPOLATIONS = {
    "linear": cv2.INTER_LINEAR,
    # Bicubic resampling keeps fine texture that bilinear sampling at sub-pixel offsets blurs away.
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}
WARP_INTERPOLATIONS = tuple(_INTERPOLATIONS)

# DIS refuses images with a side under 12 px (its largest patch); smaller frames are padded (edge replicate).
_DIS_MIN_SIDE = 12


def to_gray_u8(frame: np.ndarray) -> np.ndarray:
    rgb = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def dis_flow(frame_a: np.ndarray, frame_b: np.ndarray, preset: str = "medium") -> np.ndarray:
    """Dense flow from frame_a to frame_b, [H, W, 2] float32."""
    if preset not in _PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; known: {', '.join(_PRESETS)}")
    dis = cv2.DISOpticalFlow_create(_PRESETS[preset])
    gray_a, gray_b = to_gray_u8(frame_a), to_gray_u8(frame_b)
    h, w = gray_a.shape
    pad_y, pad_x = max(0, _DIS_MIN_SIDE - h), max(0, _DIS_MIN_SIDE - w)
    if pad_y or pad_x:
        gray_a = cv2.copyMakeBorder(gray_a, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
        gray_b = cv2.copyMakeBorder(gray_b, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
    return dis.calc(gray_a, gray_b, None)[:h, :w]


def backward_warp(image: np.ndarray, flow: np.ndarray, interpolation: str = "linear") -> np.ndarray:
    """Sample ``image`` at ``p + flow(p)`` for every pixel p (border replicate; bilinear by default)."""
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"unknown warp interpolation {interpolation!r}; known: {', '.join(_INTERPOLATIONS)}")
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = grid_x + flow[..., 0].astype(np.float32)
    map_y = grid_y + flow[..., 1].astype(np.float32)
    return cv2.remap(
        image.astype(np.float32), map_x, map_y, _INTERPOLATIONS[interpolation], borderMode=cv2.BORDER_REPLICATE
    )


def out_of_frame_mask(flow: np.ndarray) -> np.ndarray:
    """True where ``p + flow(p)`` lands outside the frame: content that leaves (or has not yet entered) the view."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    target_x = grid_x + flow[..., 0]
    target_y = grid_y + flow[..., 1]
    return (target_x < 0) | (target_x > w - 1) | (target_y < 0) | (target_y > h - 1)


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
