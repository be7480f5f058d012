"""Lossless codec between toy RGB clips and Wan 2.1-shaped latents.

A clip ``[B, 3, F, H, W]`` in [0, 1] becomes ``[B, 16, F, H/2, W/2]``: a 2x2 pixel-unshuffle gives
12 channels, scaled to [-2, 2], and 4 constant zero channels pad it to Wan 2.1's 16 latent
channels. There is no temporal compression, so latent frames equal video frames. Decoding inverts
this exactly (up to float rounding) and ignores the padding channels.
"""

from __future__ import annotations

import torch
from einops import rearrange

LATENT_CHANNELS = 16
DATA_CHANNELS = 12  # 3 colours x 2 x 2 pixels; the rest is constant padding
PATCH = 2
# pixels in [0, 1] map to [-SCALE, SCALE]; 2.0 gives the data channels a standard deviation near
# 0.7, close to the unit-variance noise, so no noise level is wasted on an invisible signal
SCALE = 2.0


def encode(video: torch.Tensor) -> torch.Tensor:
    """[B, 3, F, H, W] in [0, 1] -> [B, 16, F, H/2, W/2]."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"expected a video [B, 3, F, H, W], got shape {tuple(video.shape)}")
    if video.shape[-1] % PATCH or video.shape[-2] % PATCH:
        raise ValueError(f"height and width must be even, got {tuple(video.shape[-2:])}")
    data = rearrange(video, "b c f (h p) (w q) -> b (c p q) f h w", p=PATCH, q=PATCH) 
    data = (data * 2.0 - 1.0) * SCALE
    pad = data.new_zeros(data.shape[0], LATENT_CHANNELS - DATA_CHANNELS, *data.shape[2:])
    return torch.cat([data, pad], dim=1)


def decode(latent: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """[B, 16, F, h, w] -> [B, 3, F, 2h, 2w] in [0, 1] (padding channels are ignored)."""
    if latent.ndim != 5 or latent.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"expected a latent [B, 16, F, h, w], got shape {tuple(latent.shape)}")
    video = rearrange(
        (latent[:, :DATA_CHANNELS].float() / SCALE + 1.0) * 0.5,
        "b (c p q) f h w -> b c f (h p) (w q)",
        p=PATCH,
        q=PATCH,
    )
    return video.clamp(0.0, 1.0) if clamp else video


def data_channel_mask(latent: torch.Tensor) -> torch.Tensor:
    """1 on the channels that carry pixels, 0 on the constant padding, broadcastable to latent."""
    mask = torch.zeros(1, LATENT_CHANNELS, 1, 1, 1, device=latent.device, dtype=latent.dtype)
    mask[:, :DATA_CHANNELS] = 1
    return mask


def video_to_images(video: torch.Tensor) -> torch.Tensor:
    """[B, 3, F, H, W] -> ComfyUI IMAGE [B*F, H, W, 3]."""
    return rearrange(video, "b c f h w -> (b f) h w c")


def images_to_video(images: torch.Tensor, frames: int) -> torch.Tensor:
    """ComfyUI IMAGE [B*F, H, W, 3] -> [B, 3, F, H, W]."""
    if images.shape[0] % frames:
        raise ValueError(f"{images.shape[0]} images do not split into clips of {frames} frames")
    return rearrange(images, "(b f) h w c -> b c f h w", f=frames)
