"""The one checkpoint format: weights plus everything needed to predict (architecture, classes, preprocessing,
split). Lightning's checkpoints carry it under the ``cadx`` key; ``export_checkpoint`` writes a compact copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cadx.data.transforms import Preprocessing
from cadx.models import create_model

FORMAT_VERSION = 1
META_KEY = "cadx"


# Folder-name prefixes -> category, used when the checkpoint's metadata carries no "category".
CATEGORY_PREFIXES = (("chest_xray", "Chest X-ray"), ("chest_ct", "Chest CT"), ("brain_mri", "Brain MRI"),
                     ("pneumoniamnist", "Chest X-ray"))


def category_for(model_id: str, meta: dict[str, Any]) -> str:
    """The task group a model belongs to: its metadata's ``category``, else one read from its name."""
    if meta.get("category"):
        return str(meta["category"])
    name = model_id.lower()
    return next((label for prefix, label in CATEGORY_PREFIXES if name.startswith(prefix)), "Other")


class CheckpointError(ValueError):
    """A file that is not a usable cadx checkpoint."""


@dataclass
class LoadedCheckpoint:
    model: nn.Module
    meta: dict[str, Any]
    path: Path

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.meta["preprocessing"])

    @property
    def multilabel(self) -> bool:
        return self.meta["task"] == "multilabel"

    @property
    def positive_index(self) -> int | None:
        return self.meta.get("positive_index")

    @property
    def threshold(self) -> float:
        return float(self.meta.get("decision_threshold", 0.5))

    @property
    def category(self) -> str:
        """As the server lists it: ``models/<id>/model.ckpt`` or a loose ``<id>.ckpt`` is named ``<id>``."""
        model_id = self.path.parent.name if self.path.name in RUN_CHECKPOINTS else self.path.stem
        return category_for(model_id, self.meta)


DEFAULT_MODEL = "chest_xray_pneumonia"  # the shipped model used when a command is given images only
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
RUN_CHECKPOINTS = ("best.ckpt", "model.ckpt", "last.ckpt")  # what a run or model folder holds, in preference order


def models_dir() -> Path:
    return Path(os.environ.get("CADX_MODELS_DIR", "models"))


def names_a_checkpoint(path: str | Path) -> bool:
    """True for a checkpoint file, a run folder, a shipped model's name, or a path that does not exist (so the
    caller's checkpoint error names it); False for an existing image file or a folder of images."""
    path = Path(path).expanduser()
    if not path.exists():
        return True
    if path.is_dir():
        return any((path / name).exists() for name in RUN_CHECKPOINTS)
    return path.suffix.lower() in CHECKPOINT_SUFFIXES


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder means its best checkpoint; a bare name means a shipped model (``models/<name>/model.ckpt``,
    the folder given by ``CADX_MODELS_DIR``)."""
    path = Path(path).expanduser()
    shipped = models_dir() / path / "model.ckpt"
    if not path.exists() and len(path.parts) == 1 and shipped.exists():
        return shipped
    if path.is_dir():
        for name in RUN_CHECKPOINTS:
            if (path / name).exists():
                return path / name
        raise CheckpointError(f"{path}: no best.ckpt, model.ckpt or last.ckpt in this folder")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = resolve_checkpoint(path)
    try:
        # Checkpoints are trusted local files written by cadx/Lightning (they hold optimizer state objects).
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from exc
    if not isinstance(data, dict) or META_KEY not in data or "state_dict" not in data:
        raise CheckpointError(f"{path}: not a cadx checkpoint (no '{META_KEY}' metadata)")
    return data


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the network from the checkpoint's own description and load its weights (eval mode)."""
    path = resolve_checkpoint(path)
    data = read_checkpoint(path)
    meta = data[META_KEY]
    spec = meta["model"]
    model = create_model(spec["name"], in_channels=spec["in_channels"], num_classes=spec["num_classes"],
                         **spec.get("options", {}))
    state = {k.removeprefix("model."): v.float() if v.is_floating_point() else v
             for k, v in data["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {spec['name']} ({exc})") from exc
    return LoadedCheckpoint(model.to(device).eval(), meta, path)


def update_meta(path: str | Path, **changes: Any) -> None:
    """Rewrite metadata in place (e.g. the decision threshold chosen on validation after training)."""
    data = read_checkpoint(path)
    data[META_KEY].update(changes)
    torch.save(data, resolve_checkpoint(path))


def export_checkpoint(src: str | Path, dst: str | Path, *, half: bool = True, **meta: Any) -> Path:
    """Weights and metadata only (no optimizer state), optionally fp16, for shipping a model.

    Extra keyword arguments (e.g. ``category="Chest X-ray"``) are added to the metadata.
    """
    data = read_checkpoint(src)
    data[META_KEY].update(meta)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in data["state_dict"].items()
             if k.startswith("model.")}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, META_KEY: data[META_KEY]}, dst)
    return dst
