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
    register_model,
)
from cadx.models.weights import LoadReport, freeze_backbone, load_pretrained_weights, weights_normalisation

__all__ = [
    "LoadReport",
    "ModelInfo",
    "check_options",
    "count_parameters",
    "create_model",
    "freeze_backbone",
    "get_model_info",
    "list_models",
    "load_pretrained_weights",
    "register_model",
    "weights_normalisation",
]
