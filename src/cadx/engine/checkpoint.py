"""The one checkpoint format: weights plus a :class:`~cadx.engine.meta.CheckpointMeta`. Lightning's checkpoints
carry the metadata under the ``cadx`` key; ``export_checkpoint`` writes a compact copy. Every consumer loads through
``read_meta`` (metadata only) or ``load_checkpoint`` (the network too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cadx.data.transforms import Preprocessing
from cadx.engine.catalogue import category_of, resolve_checkpoint
from cadx.engine.meta import META_KEY, CheckpointError, CheckpointMeta, stored_meta
from cadx.models import create_model

__all__ = ["META_KEY", "CheckpointError", "LoadedCheckpoint", "export_checkpoint", "load_checkpoint",
           "read_checkpoint", "read_meta", "update_meta"]


@dataclass
class LoadedCheckpoint:
    model: nn.Module
    meta: CheckpointMeta
    path: Path

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.meta.preprocessing

    @property
    def category(self) -> str:
        """As the catalogue lists it (the metadata's, else read from the model's id)."""
        return category_of(self.meta.category, self.path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The stored dictionary, with its metadata already checked (``META_KEY`` holds the current format's dict)."""
    path = resolve_checkpoint(path)
    try:
        # Checkpoints are trusted local files written by cadx/Lightning (they hold optimizer state objects).
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from exc
    data[META_KEY] = stored_meta(data, path).to_dict()
    return data


def read_meta(path: str | Path) -> CheckpointMeta:
    """Metadata only (listing models needs no network)."""
    return CheckpointMeta.from_dict(read_checkpoint(path)[META_KEY])


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the network from the checkpoint's own description and load its weights (eval mode)."""
    path = resolve_checkpoint(path)
    data = read_checkpoint(path)
    meta = CheckpointMeta.from_dict(data[META_KEY])
    spec = meta.model
    model = create_model(spec.name, in_channels=spec.in_channels, num_classes=spec.num_classes, **spec.options)
    state = {k.removeprefix("model."): v.float() if v.is_floating_point() else v
             for k, v in data["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {spec.name} ({exc})") from exc
    return LoadedCheckpoint(model.to(device).eval(), meta, path)


def update_meta(path: str | Path, **changes: Any) -> CheckpointMeta:
    """Rewrite metadata fields in place (e.g. the decision threshold chosen on validation after training)."""
    path = resolve_checkpoint(path)
    data = read_checkpoint(path)
    meta = CheckpointMeta.from_dict(data[META_KEY]).with_changes(**changes)
    data[META_KEY] = meta.to_dict()
    torch.save(data, path)
    return meta


def export_checkpoint(src: str | Path, dst: str | Path, *, half: bool = True, **changes: Any) -> Path:
    """Weights and metadata only (no optimizer state), optionally fp16, for shipping a model.

    Keyword arguments are metadata fields to set (e.g. ``category="Chest X-ray"``).
    """
    data = read_checkpoint(src)
    meta = CheckpointMeta.from_dict(data[META_KEY]).with_changes(**changes)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in data["state_dict"].items()
             if k.startswith("model.")}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, META_KEY: meta.to_dict()}, dst)
    return dst
