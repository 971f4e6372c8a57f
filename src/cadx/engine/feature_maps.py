"""Pictures for explanations: the Grad-CAM overlay and the per-stage feature-map tiles, as PNG bytes.

Both are drawn with Pillow and numpy (matplotlib gives only its colour maps and its DejaVu font): every web
prediction is explained, and a matplotlib figure cost about 95 ms of the overlay's 137 ms on one CPU thread
(``benchmarks/explain_timing.py``). Nothing here holds global state, so a web server may render from several threads.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

TILE = 64  # pixels per feature-map tile in the mosaic
HEATMAP_CMAP = "jet"
HEATMAP_ALPHA = 0.45


def _png(canvas: Image.Image) -> bytes:
    """Encode with a fast zlib level: these are previews, not archives."""
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3:
        return np.asarray(Image.fromarray(np.ascontiguousarray(image[..., :3])).convert("L"))
    return image


BOX = 460  # pixels: the height of the image inside the overlay (its width follows the aspect, 0.4-2.5)
_FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_FONT), size)


@lru_cache(maxsize=4)
def _colour_table(name: str) -> np.ndarray:
    """(256, 3) uint8 RGB of a matplotlib colour map, so that pixels are coloured by indexing, not by a figure."""
    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def _coloured(values: np.ndarray, name: str) -> np.ndarray:
    """(..., 3) uint8 RGB of values in [0, 1] (NaN as 0) through a matplotlib colour map."""
    return _colour_table(name)[np.clip(np.nan_to_num(values) * 255, 0, 255).round().astype(np.uint8)]


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, size: int) -> ImageFont.FreeTypeFont:
    font = _font(size)
    while size > 7 and draw.textlength(text, font=font) > width:
        size -= 1
        font = _font(size)
    return font


def render_overlay(image: np.ndarray, heatmap: np.ndarray, title: str, label: str = "Grad-CAM") -> bytes:
    """Grey image with the heatmap blended on top (``HEATMAP_ALPHA``, colour map ``HEATMAP_CMAP``), a colour bar and
    the title, drawn with Pillow: the same picture a matplotlib figure gave, in a tenth of the time (the overlay was
    most of the cost of one explanation: ``benchmarks/explain_timing.py``)."""
    grey = _grey(image)
    h, w = grey.shape
    box_w = round(BOX * min(max(w / h, 0.4), 2.5))
    grey = np.asarray(Image.fromarray(grey).resize((box_w, BOX), Image.BILINEAR), dtype=np.float32)
    heat = np.asarray(Image.fromarray(np.asarray(heatmap, dtype=np.float32), mode="F").resize((box_w, BOX),
                                                                                           Image.BILINEAR))
    colours = _coloured(heat, HEATMAP_CMAP)
    blended = (grey[..., None] * (1 - HEATMAP_ALPHA) + colours * HEATMAP_ALPHA).round().astype(np.uint8)
    lines = title.split("\n")
    margin, bar_gap, bar_w, labels_w = 10, 15, 18, 75
    top = 24 + 18 * len(lines)
    canvas = Image.new("RGB", (margin + box_w + bar_gap + bar_w + labels_w, top + BOX + margin), "white")
    canvas.paste(Image.fromarray(blended), (margin, top))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        font = _fit_text(draw, line, canvas.width - 2 * margin, 14)
        draw.text((canvas.width / 2, 12 + 18 * i), line, fill="black", font=font, anchor="ma")
    bar_x = margin + box_w + bar_gap
    strip = _coloured(np.linspace(1.0, 0.0, BOX), HEATMAP_CMAP)
    canvas.paste(Image.fromarray(np.repeat(strip[:, None, :], bar_w, axis=1)), (bar_x, top))
    draw.rectangle((bar_x, top, bar_x + bar_w - 1, top + BOX - 1), outline="black")
    tick_font = _font(10)
    for value in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        y = top + round((1 - value) * (BOX - 1))
        draw.line((bar_x + bar_w, y, bar_x + bar_w + 3, y), fill="black")
        draw.text((bar_x + bar_w + 5, y), f"{value:.1f}", fill="black", font=tick_font, anchor="lm")
    caption = f"{label} (relative)"
    text = Image.new("RGB", (BOX, 16), "white")
    ImageDraw.Draw(text).text((BOX / 2, 8), caption, fill="black", font=_font(11), anchor="mm")
    canvas.paste(text.rotate(90, expand=True), (bar_x + bar_w + 32, top))
    return _png(canvas)


def top_channels(activation: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` channels with the highest mean activation: (maps (k, h, w), channel indices (k,))."""
    maps = activation[0].float()
    k = min(n, maps.shape[0])
    order = maps.mean(dim=(1, 2)).topk(k).indices
    return maps[order], order


def feature_mosaic(stages: dict[str, torch.Tensor], n: int, tile: int = TILE) -> tuple[np.ndarray, list[str]]:
    """One row per stage, ``n`` tiles each (each channel min-max scaled on its own, NaN gaps between tiles).

    Tiles are enlarged with nearest-neighbour so a deep 7x7 map shows its true resolution instead of a blur.
    """
    pad = max(1, tile // 16)
    mosaic = np.full((len(stages) * (tile + pad) - pad, n * (tile + pad) - pad), np.nan, dtype=np.float32)
    labels = []
    for row, (name, act) in enumerate(stages.items()):
        maps, _ = top_channels(act, n)
        lo = maps.amin(dim=(1, 2), keepdim=True)
        hi = maps.amax(dim=(1, 2), keepdim=True)
        scaled = (maps - lo) / (hi - lo).clamp_min(1e-12)
        tiles = F.interpolate(scaled[:, None], size=(tile, tile), mode="nearest")[:, 0].cpu().numpy()
        y = row * (tile + pad)
        for col, t in enumerate(tiles):
            x = col * (tile + pad)
            mosaic[y:y + tile, x:x + tile] = t
        c, h, w = act.shape[1:]
        labels.append(f"{name}\n{c} ch, {h}x{w}")
    return mosaic, labels


def render_feature_maps(stages: dict[str, torch.Tensor], n: int, title: str | None = None) -> bytes:
    """Tiled PNG of the ``n`` most active channels of every stage, shallow (top) to deep (bottom), each row labelled
    with its stage, channels and map size; drawn with Pillow (colour map ``viridis``, white gaps)."""
    if not stages:
        raise ValueError("no stage activations to draw (the model's stage_names produced no 4-D outputs)")
    mosaic, labels = feature_mosaic(stages, n)
    rows = len(labels)
    cell = 85  # pixels per tile and its gap, as the figure this replaced drew them
    width, height = cell * n, cell * rows
    gaps = np.isnan(mosaic)
    pixels = _coloured(mosaic, "viridis")
    pixels[gaps] = 255
    left, top, margin = 150, 40, 10
    canvas = Image.new("RGB", (left + width + margin, top + height + margin), "white")
    canvas.paste(Image.fromarray(pixels).resize((width, height), Image.NEAREST), (left, top))
    draw = ImageDraw.Draw(canvas)
    heading = title or f"top {n} channels by mean activation, per stage (shallow to deep)"
    draw.text((left + width / 2, 12), heading, fill="black", font=_fit_text(draw, heading, canvas.width - 20, 12),
              anchor="ma")
    label_font = _font(10)
    for row, label in enumerate(labels):
        draw.multiline_text((left - 8, top + cell * (row + 0.5)), label, fill="black", font=label_font, anchor="rm",
                            align="right")
    return _png(canvas)
