"""One model catalogue for the command line and the server: how a name, a run folder, a ``models/<id>/`` folder or
a loose checkpoint resolves to a file, in one preference order, and which id and category it is listed under.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cadx.engine.meta import CheckpointError

DEFAULT_MODEL = "chest_xray_pneumonia"  # the shipped model used when a command is given images only
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
# What a model or run folder holds, in preference order: an exported model is what its author chose to ship; a run
# folder's best checkpoint comes next; the last epoch's only when nothing else is there (a run still in progress).
FOLDER_CHECKPOINTS = ("model.ckpt", "best.ckpt", "last.ckpt")
OFFERED_CHECKPOINTS = FOLDER_CHECKPOINTS[:2]  # a folder holding only last.ckpt is a run in progress: not listed
# Model-id prefixes -> category, for checkpoints whose metadata names none (``cadx export --category`` sets it).
CATEGORY_PREFIXES = (("chest_xray", "Chest X-ray"), ("chest_ct", "Chest CT"), ("lung_ct", "Chest CT"),
                     ("brain_mri", "Brain MRI"), ("pneumoniamnist", "Chest X-ray"))
OTHER_CATEGORY = "Other"


def models_dir() -> Path:
    """The shipped models' folder: ``CADX_MODELS_DIR``, else ``./models``."""
    return Path(os.environ.get("CADX_MODELS_DIR", "models"))


def checkpoint_in(folder: Path, names: tuple[str, ...] = FOLDER_CHECKPOINTS) -> Path | None:
    """The folder's checkpoint in preference order, or None."""
    return next((folder / n for n in names if (folder / n).is_file()), None)


def model_id(path: Path) -> str:
    """The id a checkpoint is listed under: its folder's name (``<id>/model.ckpt``), or a loose ``<id>.ckpt``'s
    stem."""
    return path.parent.name if path.name in FOLDER_CHECKPOINTS else path.stem


def category_of(category: str | None, path: Path) -> str:
    """The task group a model is listed under: its metadata's category, else one read from its id."""
    if category:
        return category
    name = model_id(path).lower()
    return next((label for prefix, label in CATEGORY_PREFIXES if name.startswith(prefix)), OTHER_CATEGORY)


def names_a_checkpoint(path: str | Path) -> bool:
    """True for a checkpoint file, a model or run folder, a shipped model's name, or a path that does not exist (so
    the caller's error names it); False for an existing image file or a folder of images."""
    path = Path(path).expanduser()
    if not path.exists():
        return True
    if path.is_dir():
        return checkpoint_in(path) is not None
    return path.suffix.lower() in CHECKPOINT_SUFFIXES


def resolve_checkpoint(path: str | Path, shipped: Path | None = None) -> Path:
    """A file as given; a folder's checkpoint in preference order; a bare name that is not a path: the shipped
    model of that id (``<models>/<id>/`` or ``<models>/<id>.ckpt``)."""
    path = Path(path).expanduser()
    if not path.exists() and len(path.parts) == 1:
        found = scan(shipped or models_dir()).get(str(path))
        if found is not None:
            return found
    if path.is_dir():
        found = checkpoint_in(path)
        if found is None:
            raise CheckpointError(f"{path}: no {', '.join(FOLDER_CHECKPOINTS)} in this folder")
        return found
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    return path


def scan(folder: Path) -> dict[str, Path]:
    """Model id -> checkpoint of every ``<folder>/<id>/`` holding a finished one (``OFFERED_CHECKPOINTS``) and
    every loose ``<folder>/<id>.ckpt`` (a folder of the same id wins). Hidden entries are skipped."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    loose: dict[str, Path] = {}
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            ckpt = checkpoint_in(child, OFFERED_CHECKPOINTS)
            if ckpt is not None:
                found[child.name] = ckpt
        elif child.suffix == ".ckpt" and child.is_file():
            loose[child.stem] = child
    return {**loose, **found}


@dataclass(frozen=True)
class SidecarFiles:
    """What a listed model keeps beside its checkpoint: test metrics (``cadx evaluate``) and a model card."""

    metrics: Path
    card: Path


def sidecar_files(checkpoint: Path) -> SidecarFiles:
    if checkpoint.name in FOLDER_CHECKPOINTS:
        return SidecarFiles(checkpoint.parent / "metrics.json", checkpoint.parent / "README.md")
    return SidecarFiles(checkpoint.with_suffix(".metrics.json"), checkpoint.with_suffix(".md"))
