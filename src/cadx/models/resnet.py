"""ResNet family (He et al. 2016) with attention as a keyword, and AERNet built from it.

Module names follow torchvision (``conv1, bn1, layer1..4, fc``; blocks ``conv1/bn1/.../downsample.0``)
so ImageNet state dicts load unchanged. AERNet (ResNet-50 + CBAM) is this same code with
``attention``/``placement`` set, never a copied network, so ablations differ in one keyword only.
"""

from __future__ import annotations

import torch
from torch import nn

from cadx.models.layers.cbam import make_attention
from cadx.models.registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]


def _downsample(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """Two 3x3 convs; ``attn`` refines the residual branch before the addition (Woo et al.)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, attention: str = "none") -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()  # not in-place: Grad-CAM hooks must see unmodified tensors
        self.attn = make_attention(attention, out_planes)
        self.downsample = _downsample(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck with the stride on the 3x3 (torchvision "v1.5")."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, attention: str = "none") -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()
        self.attn = make_attention(attention, out_planes)
        self.downsample = _downsample(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Generic ResNet.

    attention: none|channel|spatial|cbam; placement: ``stage`` puts one module after each of the
    four stages (named ``attn1..attn4``), ``block`` puts one inside every residual block.
    hidden > 0 replaces the linear head by Linear-ReLU-Dropout-Linear (the AERNet head).
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: tuple[int, int, int, int],
        in_channels: int = 3,
        num_classes: int = 1000,
        *,
        attention: str = "none",
        placement: str = "stage",
        hidden: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if placement not in ("stage", "block"):
            raise ValueError(f"placement must be 'stage' or 'block', got {placement!r}")
        make_attention(attention, 8)  # validate the name early, whatever the placement
        self.attention, self.placement = attention, placement
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        block_attn = attention if placement == "block" else "none"
        stage_attn = attention if placement == "stage" else "none"
        in_planes = 64
        for i, (planes, n_blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True), start=1):
            stride = 1 if i == 1 else 2
            blocks = []
            for j in range(n_blocks):
                blocks.append(block(in_planes, planes, stride if j == 0 else 1, attention=block_attn))
                in_planes = planes * block.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            setattr(self, f"attn{i}", make_attention(stage_attn, in_planes))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = in_planes
        if hidden > 0:
            self.drop = nn.Identity()
            self.fc: nn.Module = nn.Sequential(
                nn.Linear(in_planes, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
            )
        else:
            self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
            self.fc = nn.Linear(in_planes, num_classes)
        self._init_weights()

        refined = attention != "none" and placement == "stage"
        prefix = "attn" if refined else "layer"
        self.stage_names = [f"{prefix}{i}" for i in range(1, 5)]
        self.cam_layer = self.stage_names[-1]  # output of the (attention-refined) last stage
        self.classifier_name = "fc"

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage feature map (B, num_features, H/32, W/32)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.attn1(self.layer1(x))
        x = self.attn2(self.layer2(x))
        x = self.attn3(self.layer3(x))
        return self.attn4(self.layer4(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.forward_features(x)), 1)
        return self.fc(self.drop(x))


# layer4 is 3x3 at 96 px and 4x4 at 128 px, too coarse to point at a lesion; Grad-CAM++ at layer2 hit the blob in
# 98-100 % of synthetic images for resnet18 (benchmarks/faithfulness/); resnet34/50 share the stage layout
RESNET_EXPLAIN_DEFAULT = ("gradcam++", "layer2")


@register_model(
    "resnet18",
    default_input_size=224,
    default_in_channels=3,
    explain_default=RESNET_EXPLAIN_DEFAULT,
    description="ResNet-18 (BasicBlock 2-2-2-2), torchvision layout",
)
def resnet18(in_channels: int, num_classes: int, *, dropout: float = 0.0) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, num_classes, dropout=dropout)


@register_model(
    "resnet34",
    default_input_size=224,
    default_in_channels=3,
    explain_default=RESNET_EXPLAIN_DEFAULT,
    description="ResNet-34 (BasicBlock 3-4-6-3), torchvision layout",
)
def resnet34(in_channels: int, num_classes: int, *, dropout: float = 0.0) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), in_channels, num_classes, dropout=dropout)


@register_model(
    "resnet50",
    default_input_size=224,
    default_in_channels=3,
    explain_default=RESNET_EXPLAIN_DEFAULT,
    description="ResNet-50 (Bottleneck 3-4-6-3), torchvision layout",
)
def resnet50(in_channels: int, num_classes: int, *, dropout: float = 0.0) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, num_classes, dropout=dropout)


@register_model(
    "aernet",
    default_input_size=224,
    default_in_channels=3,
    explain_default=("gradcam++", "attn2"),  # as RESNET_EXPLAIN_DEFAULT, at the attention-refined stage
    description="AERNet: ResNet-50 + CBAM attention, GAP-512-dropout head",
)
def aernet(
    in_channels: int,
    num_classes: int,
    *,
    attention: str = "cbam",
    placement: str = "stage",
    hidden: int = 512,
    dropout: float = 0.5,
) -> ResNet:
    if hidden < 1:
        raise ValueError(f"aernet hidden must be >= 1, got {hidden}")
    return ResNet(
        Bottleneck,
        (3, 4, 6, 3),
        in_channels,
        num_classes,
        attention=attention,
        placement=placement,
        hidden=hidden,
        dropout=dropout,
    )
