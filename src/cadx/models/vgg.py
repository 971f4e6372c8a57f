"""VGG-16 with and without batch norm (Simonyan & Zisserman 2015), torchvision layout."""

from __future__ import annotations

import torch
from torch import nn

from cadx.models.registry import register_model

__all__ = ["VGG"]

# 'M' = 2x2 max-pool; numbers = 3x3 conv output channels.
VGG16_CFG: list[int | str] = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
]


def make_features(cfg: list[int | str], in_channels: int, batch_norm: bool) -> tuple[nn.Sequential, list[str]]:
    """Conv stack plus the dotted names of the last ReLU before each pool (one per stage)."""
    layers: list[nn.Module] = []
    stage_ends: list[str] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            stage_ends.append(f"features.{len(layers) - 1}")
            layers.append(nn.MaxPool2d(2, stride=2))
            continue
        layers.append(nn.Conv2d(c, int(v), 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(v)))
        layers.append(nn.ReLU())  # not in-place, so hooks on the conv see pre-activation values
        c = int(v)
    return nn.Sequential(*layers), stage_ends


class VGG(nn.Module):
    """Conv stack, 7x7 adaptive pool (any input size), 4096-4096 MLP head with dropout."""

    def __init__(
        self,
        cfg: list[int | str],
        batch_norm: bool,
        in_channels: int = 3,
        num_classes: int = 1000,
        dropout: float = 0.5,
        hidden: int = 4096,
    ) -> None:
        super().__init__()
        self.features, self.stage_names = make_features(cfg, in_channels, batch_norm)
        last_channels = [v for v in cfg if v != "M"][-1]
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(int(last_channels) * 7 * 7, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        self.cam_layer = self.stage_names[-1]
        self.classifier_name = "classifier"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model(
    "vgg16",
    default_input_size=224,
    default_in_channels=3,
    description="VGG-16 (13 conv + 3 FC), torchvision layout",
)
def vgg16(in_channels: int, num_classes: int, *, dropout: float = 0.5) -> VGG:
    return VGG(VGG16_CFG, False, in_channels, num_classes, dropout)


@register_model(
    "vgg16_bn",
    default_input_size=224,
    default_in_channels=3,
    description="VGG-16 with batch norm after every conv, torchvision layout",
)
def vgg16_bn(in_channels: int, num_classes: int, *, dropout: float = 0.5) -> VGG:
    return VGG(VGG16_CFG, True, in_channels, num_classes, dropout)
