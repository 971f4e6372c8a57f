"""Name -> builder registry, so configs, the CLI and tests refer to architectures by a string."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

Builder = Callable[..., nn.Module]

# Attributes every model carries; other subsystems (Grad-CAM, feature maps, transfer) rely on them.
REQUIRED_ATTRIBUTES = ("cam_layer", "stage_names", "classifier_name")


@dataclass(frozen=True)
class ModelInfo:
    """Static facts about a registered model, readable without building it."""

    name: str
    default_input_size: int
    default_in_channels: int
    description: str
    options: dict[str, Any] = field(default_factory=dict)
    # (method, layer) of the heatmap when the user names none, chosen by measured faithfulness
    # (benchmarks/faithfulness/); layer None = the model's ``cam_layer`` (or no layer, for occlusion)
    explain_default: tuple[str, str | None] = ("gradcam", None)


_BUILDERS: dict[str, Builder] = {}
_INFOS: dict[str, ModelInfo] = {}


def _builder_options(fn: Builder) -> dict[str, Any]:
    """Keyword options (with defaults) a builder accepts besides in_channels/num_classes."""
    options: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if pname in ("in_channels", "num_classes") or param.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        options[pname] = None if param.default is inspect.Parameter.empty else param.default
    return options


def register_model(
    name: str, *, default_input_size: int, default_in_channels: int, description: str,
    explain_default: tuple[str, str | None] = ("gradcam", None),
) -> Callable[[Builder], Builder]:
    """Decorator adding ``fn(in_channels, num_classes, **options) -> nn.Module`` to the registry."""

    def decorator(fn: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = fn
        _INFOS[name] = ModelInfo(
            name=name,
            default_input_size=default_input_size,
            default_in_channels=default_in_channels,
            description=description,
            options=_builder_options(fn),
            explain_default=explain_default,
        )
        return fn

    return decorator


def _lookup(name: str) -> str:
    if name not in _BUILDERS:
        known = ", ".join(sorted(_BUILDERS))
        raise ValueError(f"unknown model {name!r}; known models: {known}")
    return name


def list_models() -> list[ModelInfo]:
    """All registered models, sorted by name."""
    return [_INFOS[n] for n in sorted(_INFOS)]


def get_model_info(name: str) -> ModelInfo:
    """Info for one model; ValueError listing the known names if it does not exist."""
    return _INFOS[_lookup(name)]


def _check_attributes(name: str, model: nn.Module) -> None:
    """Fail at build time, not deep inside Grad-CAM, if a model's module names are stale."""
    modules = dict(model.named_modules())
    missing = [a for a in REQUIRED_ATTRIBUTES if not hasattr(model, a)]
    if missing:
        raise AttributeError(f"model {name!r} lacks attribute(s) {missing}")
    explain_layer = _INFOS[name].explain_default[1]  # None: cam_layer, or no layer (occlusion)
    for dotted in [model.cam_layer, model.classifier_name, *model.stage_names, *filter(None, [explain_layer])]:
        if dotted not in modules:
            raise AttributeError(f"model {name!r} names module {dotted!r}, which does not exist")


def _option_problem(name: str, options: Mapping[str, Any]) -> str | None:
    info = get_model_info(name)
    fn = _BUILDERS[_lookup(name)]
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
    unknown = sorted(set(options) - set(info.options))
    if unknown and not has_var_kw:
        valid = ", ".join(sorted(info.options)) or "(none)"
        return f"model {name!r} got unknown option(s) {', '.join(unknown)}; valid options: {valid}"
    return None


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """ValueError when ``name`` is not a registered model or ``options`` are not its options (before building)."""
    problem = _option_problem(name, options)
    if problem:
        raise ValueError(problem)


def create_model(name: str, in_channels: int | None = None, num_classes: int = 2, **options: Any) -> nn.Module:
    """Build a registered model; ``in_channels=None`` uses the model's default channel count."""
    info = get_model_info(name)
    fn = _BUILDERS[name]
    problem = _option_problem(name, options)
    if problem:
        raise TypeError(problem)
    in_channels = info.default_in_channels if in_channels is None else int(in_channels)
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    model = fn(in_channels=in_channels, num_classes=int(num_classes), **options)
    _check_attributes(name, model)
    return model


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements; works on meta-device models (no memory needed)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class _SkipRandomFills(TorchFunctionMode):
    """Leaves initialisers' random fills undone: on the meta device ``normal_`` goes through a Python reference that
    imports torch._dynamo (about a second), and a count needs shapes only."""

    FILLS = frozenset({"normal_", "uniform_", "trunc_normal_", "bernoulli_", "exponential_", "random_"})

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in self.FILLS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def parameter_count(name: str, in_channels: int | None = None, num_classes: int = 2, **options: Any) -> int:
    """Parameters of a registered model, built on the meta device: shapes only, no memory and no initialisation
    (VGG-16's 134 M weights take seconds to initialise on a CPU)."""
    previous = torch.get_default_device()
    torch.set_default_device("meta")  # not ``with torch.device("meta")``, which imports torch._dynamo too
    try:
        with _SkipRandomFills():
            return count_parameters(create_model(name, in_channels, num_classes, **options))
    finally:
        torch.set_default_device(previous)
