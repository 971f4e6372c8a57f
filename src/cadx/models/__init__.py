"""Model zoo: registry of CNN architectures, pretrained-weight loading and freezing.

Importing this package imports every family module, which registers its models.
"""

from cadx.models import alexnet, densenet, googlenet, resnet, small, vgg  # noqa: F401  (registration)
from cadx.models.registry import (
    ModelInfo,
    check_options,
    count_parameters,
    create_model,
    get_model_info,
    list_models,
    parameter_count,
    register_model,
)
from cadx.models.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LoadReport,
    embedded_metadata,
    freeze_backbone,
    load_pretrained_weights,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LoadReport",
    "ModelInfo",
    "check_options",
    "count_parameters",
    "create_model",
    "embedded_metadata",
    "freeze_backbone",
    "get_model_info",
    "list_models",
    "load_pretrained_weights",
    "parameter_count",
    "register_model",
]
