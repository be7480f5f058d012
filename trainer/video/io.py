"""Reading short video clips into frame arrays, with no decoder beyond OpenCV and Pillow.

Containers OpenCV decodes (mp4, avi, webm, mov, mkv) go through ``cv2.VideoCapture``; animated
WebP and GIF go through Pillow's ``ImageSequence`` (which composites each frame onto the full
canvas) and are converted to RGB. Frames come back as ``[N, H, W, 3]`` float32 RGB in [0, 1], the
convention of ``trainer.video.optical_flow`` and of ComfyUI IMAGE tensors. Unreadable, empty or
unsupported files raise ``ValueError`` naming the file, never return an empty array.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

OPENCV_EXTENSIONS = (".mp4", ".avi", ".webm", ".mov", ".mkv", ".m4v")
PILLOW_EXTENSIONS = (".webp", ".gif")
VIDEO_EXTENSIONS = OPENCV_EXTENSIONS + PILLOW_EXTENSIONS


def is_video_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _iter_opencv_frames(path: Path) -> Iterator[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"OpenCV cannot open video file {str(path)!r} (corrupt or unsupported codec)")
    try:
        while True:
            ok, frame_bgr = capture.read()
            if not ok:
                break
            yield cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def _iter_pillow_frames(path: Path) -> Iterator[np.ndarray]:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"Pillow cannot read animated image {str(path)!r}: {error}") from error
    with image:
        try:
            for frame in ImageSequence.Iterator(image):
                yield np.asarray(frame.convert("RGB"), dtype=np.uint8)
        except (OSError, EOFError) as error:
            raise ValueError(f"Pillow failed while decoding {str(path)!r}: {error}") from error


def iter_video_frames_u8(path: str | Path) -> Iterator[np.ndarray]:
    """Yield the frames of a video file one at a time as uint8 RGB ``[H, W, 3]``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"video file not found: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix in PILLOW_EXTENSIONS:
        yield from _iter_pillow_frames(path)
    elif suffix in OPENCV_EXTENSIONS:
        yield from _iter_opencv_frames(path)
    else:
        known = ", ".join(VIDEO_EXTENSIONS)
        raise ValueError(f"unsupported video extension {suffix!r} for {str(path)!r}; known: {known}")


def read_video(path: str | Path, max_frames: int | None = None) -> np.ndarray:
    """Read a video file into ``[N, H, W, 3]`` float32 RGB in [0, 1] (at most ``max_frames`` frames)."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    frames: list[np.ndarray] = []
    for frame in iter_video_frames_u8(path):
        if frames and frame.shape != frames[0].shape:
            raise ValueError(
                f"{str(path)!r}: frame {len(frames)} has shape {frame.shape}, frame 0 has {frames[0].shape}"
            )
        frames.append(frame)
        if max_frames is not None and len(frames) >= max_frames:
            break
    if not frames:
        raise ValueError(f"no frames could be decoded from {str(path)!r}")
    return np.stack(frames).astype(np.float32) / 255.0


def list_video_files(directory: str | Path) -> list[Path]:
    """Video files directly inside ``directory`` (sorted by name), any extension in VIDEO_EXTENSIONS."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"clips directory not found: {str(directory)!r}")
    return sorted(p for p in directory.iterdir() if p.is_file() and is_video_file(p))
