"""Small from-scratch CNNs: quick baselines and smoke tests for grey-scale images."""

from __future__ import annotations

import torch
from torch import nn

from cadx.models.registry import register_model

__all__ = ["SimpleCNN", "SmallCNN"]


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(), nn.MaxPool2d(2)
    )


class SimpleCNN(nn.Module):
    """Three conv-BN-ReLU-pool blocks (16/32/64), adaptive pool to a fixed grid, MLP head.

    The adaptive pool fixes the flatten size, so one model works at any input size >= 8 px.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        *,
        pool_size: int = 8,
        hidden: int = 512,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential()
        for i, (cin, cout) in enumerate(zip((in_channels, 16, 32), (16, 32, 64), strict=True), start=1):
            self.features.add_module(f"block{i}", _conv_block(cin, cout))
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * pool_size * pool_size, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self.stage_names = ["features.block1", "features.block2", "features.block3"]
        self.cam_layer = "features.block3"
        self.classifier_name = "classifier"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class SmallCNN(nn.Module):
    """The classic Keras MNIST stack (conv32-pool-conv64-pool-conv64, dense 64), valid padding.

    At 28x28 the last map is 3x3, exactly as in Keras; the adaptive pool keeps that flatten size
    for other inputs (>= 18 px).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, *, hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv1", nn.Conv2d(in_channels, 32, 3))
        self.features.add_module("relu1", nn.ReLU())
        self.features.add_module("pool1", nn.MaxPool2d(2))
        self.features.add_module("conv2", nn.Conv2d(32, 64, 3))
        self.features.add_module("relu2", nn.ReLU())
        self.features.add_module("pool2", nn.MaxPool2d(2))
        self.features.add_module("conv3", nn.Conv2d(64, 64, 3))
        self.features.add_module("relu3", nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 3 * 3, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )
        self.stage_names = ["features.relu1", "features.relu2", "features.relu3"]
        self.cam_layer = "features.relu3"
        self.classifier_name = "classifier"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


@register_model(
    "simple_cnn",
    default_input_size=128,
    default_in_channels=1,
    description="3-block CNN (16/32/64) + 512-unit MLP head; fast baseline",
    explain_default=("layercam", "features.block2"),  # flatten head: Grad-CAM at block3 can invert (benchmark)
)
def simple_cnn(
    in_channels: int, num_classes: int, *, hidden: int = 512, dropout: float = 0.5, pool_size: int = 8
) -> SimpleCNN:
    return SimpleCNN(in_channels, num_classes, pool_size=pool_size, hidden=hidden, dropout=dropout)


@register_model(
    "small_cnn",
    default_input_size=28,
    default_in_channels=1,
    description="Keras MNIST-style CNN (conv32-conv64-conv64, dense 64) for 28x28 inputs",
    explain_default=("layercam", "features.relu1"),  # relu3 (8x8 at 48 px): 4 % pointing hits, relu1: 98 %
)
def small_cnn(in_channels: int, num_classes: int, *, hidden: int = 64) -> SmallCNN:
    return SmallCNN(in_channels, num_classes, hidden=hidden)
