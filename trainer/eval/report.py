"""Self-contained HTML evaluation reports: one metrics table and, per configuration, sample clips.

``write_html_report`` writes a single HTML file with everything embedded (no external files, so it
can be attached to an issue or opened offline): a table of metric rows with each column's better
direction from ``METRIC_DIRECTION`` marked and the best value in bold, then per configuration a
frame grid (PNG; rows are clips, columns are frames, upscaled 3x with nearest neighbour) and one
animated GIF per clip captioned with its prompt. Files are written atomically; the rows can also be
written as JSON next to the HTML.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from ..checkpoint import atomic_write_json, atomic_write_text
from .metrics import METRIC_DIRECTION

UPSCALE = 3
GIF_FRAME_MS = 125  # 8 fps, the rate VBench samples dynamic degree at
MAX_CLIPS_SHOWN = 8
_DIRECTION_MARK = {"higher": "&uarr; higher is better", "lower": "&darr; lower is better", "match": "&asymp; closest to data is better"}
_DIRECTION_ARROW = {"higher": "&uarr;", "lower": "&darr;", "match": "&asymp;"}


def _to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[3, F, H, W] in [0, 1] -> uint8 [F, H*UPSCALE, W*UPSCALE, 3]."""
    frames = (video.detach().float().cpu().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
    frames = frames.permute(1, 2, 3, 0).numpy()
    return frames.repeat(UPSCALE, axis=1).repeat(UPSCALE, axis=2)


def _data_uri(image_bytes: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(image_bytes).decode('ascii')}"


def frame_grid_png(videos: torch.Tensor, gap: int = 2) -> bytes:
    """PNG bytes of a grid: one row per clip, one column per frame, white gaps between cells."""
    clips = [_to_uint8_frames(video) for video in videos]
    frames, cell_h, cell_w = clips[0].shape[:3]
    grid = np.full(
        (len(clips) * (cell_h + gap) - gap, frames * (cell_w + gap) - gap, 3), 255, dtype=np.uint8
    )
    for row, clip in enumerate(clips):
        for column in range(frames):
            y, x = row * (cell_h + gap), column * (cell_w + gap)
            grid[y : y + cell_h, x : x + cell_w] = clip[column]
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def animated_gif(video: torch.Tensor, frame_ms: int = GIF_FRAME_MS) -> bytes:
    """Looping GIF bytes of one clip [3, F, H, W], upscaled like the grid."""
    images = [Image.fromarray(frame) for frame in _to_uint8_frames(video)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _plain(value):
    """A JSON-safe python value: numpy scalars become int/float, NaN and inf become None."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    return str(value)


def _format_value(value) -> str:
    if not _is_number(value):
        return html.escape(str(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return "&ndash;"
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _best_row(rows: Sequence[Mapping], key: str) -> int | None:
    direction = METRIC_DIRECTION.get(key)
    values = [(i, float(r[key])) for i, r in enumerate(rows) if _is_number(r.get(key))]
    values = [(i, v) for i, v in values if math.isfinite(v)]
    if direction not in ("higher", "lower") or len(values) < 2:
        return None
    pick = max if direction == "higher" else min
    return pick(values, key=lambda item: item[1])[0]


def metrics_table_html(rows: Sequence[Mapping]) -> str:
    """An HTML table: one row per configuration, one column per key (first-seen order)."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    best = {key: _best_row(rows, key) for key in keys}
    header = []
    for key in keys:
        direction = METRIC_DIRECTION.get(key)
        title = f' title="{_DIRECTION_MARK[direction]}"' if direction else ""
        arrow = f" {_DIRECTION_ARROW[direction]}" if direction else ""
        header.append(f"<th{title}>{html.escape(key)}{arrow}</th>")
    body = []
    for index, row in enumerate(rows):
        cells = []
        for key in keys:
            text = _format_value(row[key]) if key in row else "&ndash;"
            cells.append(f"<td><b>{text}</b></td>" if best[key] == index else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>\n<tr>" + "".join(header) + "</tr>\n" + "\n".join(body) + "\n</table>"


def samples_html(name: str, videos: torch.Tensor, prompts: Sequence[str], max_clips: int = MAX_CLIPS_SHOWN) -> str:
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"samples for {name!r}: expected videos [B, 3, F, H, W], got {tuple(videos.shape)}")
    if len(prompts) != videos.shape[0]:
        raise ValueError(f"samples for {name!r}: {len(prompts)} prompts for {videos.shape[0]} videos")
    shown = videos[:max_clips]
    grid = _data_uri(frame_grid_png(shown), "image/png")
    captions = "".join(f"<li>{html.escape(p)}</li>" for p in prompts[: len(shown)])
    previews = "".join(
        f'<figure><img src="{_data_uri(animated_gif(video), "image/gif")}" alt="{html.escape(prompt)}">'
        f"<figcaption>{html.escape(prompt)}</figcaption></figure>"
        for video, prompt in zip(shown, prompts)
    )
    return (
        f"<section><h2>{html.escape(name)}</h2>\n"
        f'<p>Frame grid (rows: clips, top to bottom; columns: frames):</p><img class="grid" src="{grid}" alt="frame grid of {html.escape(name)}">'
        f"<ol>{captions}</ol>\n<div class=\"previews\">{previews}</div></section>"
    )


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: right; }
th { background: #eee; }
td:first-child, th:first-child { text-align: left; }
img { image-rendering: pixelated; }
.previews { display: flex; flex-wrap: wrap; gap: 0.5em; }
figure { margin: 0; font-size: 0.75em; width: 110px; }
pre { white-space: pre-wrap; }
"""


def write_html_report(
    path: Path | str,
    title: str,
    rows: Sequence[Mapping],
    samples: Mapping[str, tuple[torch.Tensor, Sequence[str]]],
    notes: str = "",
    json_path: Path | str | bool | None = None,
    max_clips: int = MAX_CLIPS_SHOWN,
) -> Path:
    """Write one self-contained HTML report (atomically) and return its path.

    ``rows`` are metric dicts, one per configuration (a "config" key first reads best);
    ``samples`` maps a configuration name to (videos [B, 3, F, H, W], prompts), of which the first
    ``max_clips`` are shown. ``json_path`` also writes the title, rows, notes and metric
    directions as JSON: a path, or True for the HTML path with a .json suffix.
    """
    legend = ", ".join(f"{_DIRECTION_ARROW[d]} {d}" for d in ("higher", "lower", "match"))
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Better direction per column: {legend} (match: closest to the data row is best). Bold: best row.</p>",
        metrics_table_html(rows),
    ]
    if notes:
        parts.append(f"<h2>Notes</h2><pre>{html.escape(notes)}</pre>")
    for name, (videos, prompts) in samples.items():
        parts.append(samples_html(name, videos, list(prompts), max_clips))
    parts.append("</body></html>")
    path = Path(path)
    atomic_write_text("\n".join(parts), path)
    if json_path:
        json_path = path.with_suffix(".json") if json_path is True else Path(json_path)
        plain_rows = [{str(k): _plain(v) for k, v in row.items()} for row in rows]
        atomic_write_json({"title": title, "rows": plain_rows, "notes": notes, "directions": METRIC_DIRECTION}, json_path)
    return path
