"""DenseNet-121 (Huang et al. 2017) in plain torch with torchvision module names.

Written here rather than taken from MONAI because MONAI's dense layers nest their convs under a
``layers`` Sequential, so torchvision/timm ImageNet state dicts would not load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cadx.models.registry import register_model

__all__ = ["DenseNet"]


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1 bottleneck then BN-ReLU-Conv3x3 producing ``growth_rate`` new channels."""

    def __init__(self, in_features: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_features)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu1(self.norm1(x)))
        out = self.conv2(self.relu2(self.norm2(out)))
        return F.dropout(out, p=self.drop_rate, training=self.training) if self.drop_rate > 0 else out


class _DenseBlock(nn.ModuleDict):
    """Each layer sees the concatenation of all previous outputs."""

    def __init__(self, num_layers: int, in_features: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = _DenseLayer(in_features + i * growth_rate, growth_rate, bn_size, drop_rate)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    """BN-ReLU-Conv1x1 halving the channels, then 2x2 average pooling."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(in_features))
        self.add_module("relu", nn.ReLU())
        self.add_module("conv", nn.Conv2d(in_features, out_features, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, stride=2))


class DenseNet(nn.Module):
    """DenseNet-BC with a torchvision stem; ``features.relu5`` is the final feature map."""

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        in_channels: int = 3,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(in_channels, num_init_features, 7, 2, 3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(num_init_features))
        self.features.add_module("relu0", nn.ReLU())
        self.features.add_module("pool0", nn.MaxPool2d(3, stride=2, padding=1))
        n = num_init_features
        for i, num_layers in enumerate(block_config, start=1):
            self.features.add_module(f"denseblock{i}", _DenseBlock(num_layers, n, growth_rate, bn_size, drop_rate))
            n += num_layers * growth_rate
            if i != len(block_config):
                self.features.add_module(f"transition{i}", _Transition(n, n // 2))
                n //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(n))
        # torchvision applies this ReLU functionally; as a module it gives Grad-CAM a clean hook point
        self.features.add_module("relu5", nn.ReLU())
        self.num_features = n
        self.classifier = nn.Linear(n, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

        n_blocks = len(block_config)
        self.stage_names = [f"features.denseblock{i}" for i in range(1, n_blocks)] + ["features.relu5"]
        self.cam_layer = "features.relu5"
        self.classifier_name = "classifier"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


@register_model(
    "densenet121",
    default_input_size=224,
    default_in_channels=3,
    description="DenseNet-121 (growth 32, blocks 6-12-24-16), torchvision layout",
    # relu5 is 2x2 at 64 px (7x7 at 224): 4 % pointing hits; denseblock1 100 % (benchmarks/faithfulness/)
    explain_default=("gradcam++", "features.denseblock1"),
)
def densenet121(in_channels: int, num_classes: int, *, drop_rate: float = 0.0) -> DenseNet:
    return DenseNet(32, (6, 12, 24, 16), 64, 4, drop_rate, in_channels, num_classes)
