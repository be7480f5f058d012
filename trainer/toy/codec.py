"""Lossless codec between toy RGB clips and Wan 2.1-shaped latents.

A clip ``[B, 3, F, H, W]`` in [0, 1] becomes ``[B, 16, F, H/2, W/2]``: a 2x2 pixel-unshuffle gives
12 channels, scaled to [-2, 2], and 4 padding channels fill it up to Wan 2.1's 16 latent channels.
There is no temporal compression, so latent frames equal video frames. Decoding inverts this
exactly (up to float rounding) and ignores the padding channels.

The padding is not zeros but a fixed coordinate pattern (x ramp, y ramp, frame ramp, zeros), the
same for every clip. Why: Wan's only position signal is 3-D RoPE in self-attention, which tells a
token its offsets to other tokens but not where it is in the frame or which frame it is in; "a
square moving left" starts near the right border, so the teacher needs absolute positions to turn
the prompt into a trajectory. Real VAE latents carry such cues in their content; these channels
give the toy latents the same. The ramps of every second frame equal the ramps of a clip with
half the frames, so temporally subsampled latents stay on the pattern.

The pattern has amplitude ``COORD_AMPLITUDE`` (ramps in [-16, 16]), not 1. Why: the sampler noises
every channel, so at the high noise levels where the prompt decides the layout (sigma 0.9-0.98)
ramps of amplitude 1 are buried (signal 0.02-0.1 against noise ~1) and the teacher cannot tell
where a token is, hence cannot place "moving left" on the right border; run v3 predicted the same
x0 for every direction word even with motion words reaching every token. At amplitude 16 a token's
four values per ramp read position with a signal-to-noise ratio of about 1.7 at sigma 0.95.
"""

from __future__ import annotations

import torch
from einops import rearrange

LATENT_CHANNELS = 16
DATA_CHANNELS = 12  # 3 colours x 2 x 2 pixels; the rest is the fixed coordinate padding
PATCH = 2
# pixels in [0, 1] map to [-SCALE, SCALE]; 2.0 gives the data channels a standard deviation near
# 0.7, close to the unit-variance noise, so no noise level is wasted on an invisible signal
SCALE = 2.0
COORD_AMPLITUDE = 16.0


def encode(video: torch.Tensor) -> torch.Tensor:
    """[B, 3, F, H, W] in [0, 1] -> [B, 16, F, H/2, W/2]."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"expected a video [B, 3, F, H, W], got shape {tuple(video.shape)}")
    if video.shape[-1] % PATCH or video.shape[-2] % PATCH:
        raise ValueError(f"height and width must be even, got {tuple(video.shape[-2:])}")
    data = rearrange(video, "b c f (h p) (w q) -> b (c p q) f h w", p=PATCH, q=PATCH) 
    data = (data * 2.0 - 1.0) * SCALE
    pad = coordinate_channels(data.shape[2], data.shape[3], data.shape[4], data.device, data.dtype)
    return torch.cat([data, pad.expand(data.shape[0], -1, -1, -1, -1)], dim=1)


def coordinate_channels(frames: int, height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The padding pattern [1, 4, F, h, w]: x, y and frame ramps in [-A, A] (A = COORD_AMPLITUDE), zeros."""
    def ramp(n):
        return torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype) if n > 1 else torch.zeros(1, device=device, dtype=dtype)

    f, y, x = torch.meshgrid(ramp(frames), ramp(height), ramp(width), indexing="ij")
    return COORD_AMPLITUDE * torch.stack([x, y, f, torch.zeros_like(x)])[None]


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
    """1 on the channels that carry pixels, 0 on the padding, broadcastable to latent."""
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
