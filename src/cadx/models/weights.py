"""Loading ImageNet (torchvision/timm) or cadx checkpoints from local files, and freezing.

Transfer learning on medical images needs three adaptations a plain ``load_state_dict`` cannot do:
grey-scale stems (sum the RGB filters), new heads (re-initialise on shape change) and new modules
such as CBAM (keep their fresh init). Everything else must match, so a wrong file fails loudly.
Nothing is ever downloaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cadx.models.layers.cbam import CBAM, ChannelAttention, SpatialAttention

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LoadReport", "embedded_metadata", "freeze_backbone",
           "load_pretrained_weights"]

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_PREFIXES = ("module.", "model.", "_orig_mod.")
_SOURCE_HEAD = re.compile(r"^(aux\d*|AuxLogits|head|fc|classifier|last_linear|pre_logits)\.")
_MAX_LISTED = 20
# torchvision's and timm's ImageNet weights expect inputs normalised with these (RGB order).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (pattern, replacement) tried in order for source keys the target does not have; the first whose
# result exists in the target wins. "{head}" is the target's final Linear.
_RENAMES: list[tuple[str, str]] = [
    (r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\.(.+)$", r"\1\2.\3"),  # old torchvision densenet
    (r"^pre_logits\.fc1\.(weight|bias)$", r"classifier.0.\1"),  # timm vgg ConvMlp -> Linear
    (r"^pre_logits\.fc2\.(weight|bias)$", r"classifier.3.\1"),
    (r"^(?:head\.fc|head|fc|classifier|last_linear)\.(weight|bias)$", r"{head}.\1"),
]


@dataclass
class LoadReport:
    """What happened to every key, for logs and for tests."""

    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # loaded after channel adaptation or reshape
    reinitialized: list[str] = field(default_factory=list)  # head keys given a fresh init
    kept_init: list[str] = field(default_factory=list)  # new modules (attention), BN counters
    ignored: list[str] = field(default_factory=list)  # source keys deliberately dropped
    missing: list[str] = field(default_factory=list)  # only non-empty with strict_backbone=False
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors ({len(self.adapted)} adapted), "
            f"re-initialised {len(self.reinitialized)}, kept init {len(self.kept_init)}, "
            f"ignored {len(self.ignored)}, missing {len(self.missing)}, "
            f"unexpected {len(self.unexpected)}, mismatched {len(self.mismatched)}"
        )


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a plain state dict or a checkpoint wrapping one (Lightning, custom)."""
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    while isinstance(obj, dict):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not contain a state dict (got {type(obj).__name__})")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def embedded_metadata(path: str | Path) -> dict | None:
    """The cadx metadata a weights file carries (a cadx checkpoint), else None (torchvision/timm state dicts).

    Read with ``weights_only=True``: a downloaded weights file must not be able to run code."""
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    meta = obj.get("cadx") if isinstance(obj, dict) else None
    return meta if isinstance(meta, dict) else None


def _strip_prefixes(sd: dict[str, torch.Tensor], ignored: list[str]) -> dict[str, torch.Tensor]:
    """Drop DataParallel/Lightning/compile prefixes; keys without them then belong to the wrapper."""
    while prefix := next((p for p in _PREFIXES if any(k.startswith(p) for k in sd)), None):
        ignored.extend(k for k in sd if not k.startswith(prefix))
        sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def _module_names(model: nn.Module, kinds: tuple[type[nn.Module], ...]) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, kinds)]


def _head_prefixes(model: nn.Module) -> list[str]:
    """Classifier plus auxiliary heads: re-initialised rather than required to match."""
    aux = [n for n, _ in model.named_children() if n.startswith("aux")]
    return [model.classifier_name, *aux]


def _under(key: str, prefixes: list[str]) -> bool:
    return any(key.startswith(p + ".") for p in prefixes)


def _rename(key: str, target: dict[str, torch.Tensor], head: str) -> str:
    for pattern, repl in _RENAMES:
        new = re.sub(pattern, repl.replace("{head}", head), key)
        if new != key and new in target:
            return new
    return key


def _adapt_first_conv(w: torch.Tensor, target_channels: int) -> torch.Tensor | None:
    """RGB->grey by summing filters (same response to a grey image); 1->N by repeating / N."""
    if target_channels == 1:
        return w.sum(dim=1, keepdim=True)
    if w.shape[1] == 1:
        return w.repeat(1, target_channels, 1, 1) / target_channels
    return None


def _listing(title: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f" ... (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return f"{title} ({len(keys)}): {shown}{more}"


def load_pretrained_weights(model: nn.Module, path: str | Path, *, strict_backbone: bool = True) -> LoadReport:
    """Load a local checkpoint into ``model`` in place; see the module docstring for the rules.

    Raises ValueError listing missing/unexpected/mismatched backbone keys when ``strict_backbone``.
    """
    report = LoadReport()
    source = _strip_prefixes(_read_state_dict(path), report.ignored)
    target = model.state_dict()
    heads = _head_prefixes(model)
    cls = model.classifier_name
    linears = [n for n in _module_names(model, (nn.Linear,)) if n == cls or n.startswith(cls + ".")]
    final_linear = linears[-1] if linears else cls
    first_conv = next(iter(_module_names(model, (nn.Conv2d,))), "") + ".weight"
    attention = _module_names(model, (CBAM, ChannelAttention, SpatialAttention))

    mapped: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        new = key if key in target else _rename(key, target, final_linear)
        if new in target and new not in mapped:
            mapped[new] = value
        elif _under(new, heads) or _SOURCE_HEAD.match(key):
            report.ignored.append(key)
        else:
            report.unexpected.append(key)

    to_load: dict[str, torch.Tensor] = {}
    bad_heads: set[str] = set()
    for key, t in target.items():
        module = key.rsplit(".", 1)[0]
        if key not in mapped:
            if _under(key, heads):
                bad_heads.add(module)
            elif key.endswith("num_batches_tracked") or _under(key, attention):
                report.kept_init.append(key)
            else:
                report.missing.append(key)
            continue
        v = mapped[key]
        if v.shape == t.shape:
            to_load[key] = v
        elif key == first_conv and v.ndim == 4 and v.shape[0] == t.shape[0] and v.shape[2:] == t.shape[2:]:
            adapted = _adapt_first_conv(v, t.shape[1])
            if adapted is None:
                report.mismatched.append(f"{key} {tuple(v.shape)}->{tuple(t.shape)}")
            else:
                to_load[key] = adapted
                report.adapted.append(key)
        elif v.numel() == t.numel() and v.ndim == 4 and t.ndim == 2:  # conv-as-linear (timm ConvMlp)
            to_load[key] = v.reshape(t.shape)
            report.adapted.append(key)
        elif _under(key, heads):
            bad_heads.add(module)
        else:
            report.mismatched.append(f"{key} {tuple(v.shape)}->{tuple(t.shape)}")

    if strict_backbone and (report.missing or report.unexpected or report.mismatched):
        parts = [
            _listing(t, k)
            for t, k in (
                ("missing", report.missing),
                ("unexpected", report.unexpected),
                ("shape mismatch", report.mismatched),
            )
            if k
        ]
        raise ValueError(f"backbone keys of {path} do not match the model; " + "; ".join(parts))

    # a head module is loaded whole or re-initialised whole, never half (e.g. bias only)
    for key in list(to_load):
        if key.rsplit(".", 1)[0] in bad_heads:
            del to_load[key]
    model.load_state_dict(to_load, strict=False)
    modules = dict(model.named_modules())
    for name in sorted(bad_heads):
        reset = getattr(modules.get(name), "reset_parameters", None)
        if callable(reset):
            reset()
        report.reinitialized.extend(k for k in target if k.rsplit(".", 1)[0] == name)
    report.loaded = sorted(to_load)
    report.adapted = [k for k in report.adapted if k in to_load]
    return report


def freeze_backbone(model: nn.Module) -> int:
    """Train only ``model.classifier_name``; returns the number of trainable parameter elements.

    BatchNorm running statistics still update in train mode; call ``.eval()`` on the backbone
    for a fully fixed feature extractor.
    """
    prefix = model.classifier_name
    if prefix not in dict(model.named_modules()):
        raise ValueError(f"classifier {prefix!r} is not a module of {type(model).__name__}")
    trainable = 0
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(prefix + ".")
        trainable += p.numel() if p.requires_grad else 0
    return trainable
