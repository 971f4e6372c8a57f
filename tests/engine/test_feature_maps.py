"""The overlay a clinician sees: the heatmap's colour where the map is high, the grey image where it is low, a title
and a colour bar, at a size that follows the image's aspect."""

import io

import numpy as np
from PIL import Image

from cadx.engine.feature_maps import BOX, HEATMAP_ALPHA, render_overlay


def _overlay(image: np.ndarray, heatmap: np.ndarray, title: str = "PNEUMONIA 0.91\nGrad-CAM") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(render_overlay(image, heatmap, title))).convert("RGB")).astype(int)


def test_hot_regions_are_red_cold_ones_keep_the_grey_image_under_blue() -> None:
    image = np.full((100, 100), 128, np.uint8)
    heatmap = np.zeros((100, 100), np.float32)
    heatmap[:, 50:] = 1.0  # the right half is what the network looked at
    out = _overlay(image, heatmap)
    top = out.shape[0] - 10 - BOX  # the image box sits above a 10 px margin
    hot = out[top + BOX // 2, 10 + 3 * BOX // 4]
    cold = out[top + BOX // 2, 10 + BOX // 4]
    assert hot[0] > hot[2] + 40 and cold[2] > cold[0] + 40  # red against blue ("jet")
    assert abs(cold[1] - 128 * (1 - HEATMAP_ALPHA)) < 30  # the grey image shows through
    assert (out[:top] < 200).any()  # the title is drawn above the image
    assert (out[top:top + BOX, 10 + BOX:] < 200).any(axis=2).sum() > BOX  # the colour bar beside it


def test_the_picture_follows_the_image_aspect_and_a_huge_image_is_shown_downscaled() -> None:
    wide = _overlay(np.zeros((100, 200), np.uint8), np.zeros((100, 200), np.float32))
    tall = _overlay(np.zeros((200, 100), np.uint8), np.zeros((200, 100), np.float32))
    assert wide.shape[1] - tall.shape[1] == 2 * BOX - BOX // 2
    huge = _overlay(np.zeros((3000, 3000), np.uint8), np.full((3000, 3000), np.nan, np.float32), "x" * 400)
    assert huge.shape[0] < 600  # a long title is shrunk or clipped, never a crash; NaN is drawn as 0


def test_feature_maps_are_one_labelled_row_per_stage_with_white_gaps() -> None:
    import torch

    from cadx.engine.feature_maps import render_feature_maps

    stages = {"layer1": torch.rand(1, 16, 8, 8), "layer2": torch.rand(1, 32, 4, 4), "layer3": torch.rand(1, 64, 2, 2)}
    out = np.asarray(Image.open(io.BytesIO(render_feature_maps(stages, 4))).convert("RGB")).astype(int)
    assert out.shape[0] == 40 + 3 * 85 + 10 and out.shape[1] == 150 + 4 * 85 + 10
    tiles = out[40:40 + 3 * 85, 150:150 + 4 * 85]
    assert (tiles == 255).all(axis=2).any() and not (tiles == 255).all(axis=2).all()  # gaps between coloured tiles
    assert (out[40:40 + 3 * 85, :140] < 128).any()  # the row labels
