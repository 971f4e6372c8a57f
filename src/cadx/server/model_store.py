"""The models offered by the server: scanned from the models folder, loaded lazily, kept and reused.

Each ``<models_dir>/<id>/`` with a ``model.ckpt`` (or ``best.ckpt``) is a model; ``metrics.json`` beside it
(written by ``cadx evaluate``) supplies its test metrics and ``README.md`` its model card. A loose
``<models_dir>/<id>.ckpt`` is offered too (metrics from ``<id>.metrics.json`` when present). Listing reads only the
checkpoint metadata; the network and its Grad-CAM explainer are built on first use and cached. One lock per model
serialises inference on it: Grad-CAM hooks the network, so two requests must not run it at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cadx.engine.checkpoint import category_for

log = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("model.ckpt", "best.ckpt")
METRIC_KEYS = ("accuracy", "precision", "recall", "specificity", "f1", "auc")


class UnknownModelError(KeyError):
    def __init__(self, model_id: str) -> None:
        super().__init__(model_id)
        self.model_id = model_id

    def __str__(self) -> str:
        return f"unknown model id '{self.model_id}'"


def read_metrics(path: Path) -> dict[str, Any] | None:
    """The headline numbers of ``metrics.json`` (NaN becomes None: JSON responses cannot carry NaN)."""
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable metrics (%s)", path, exc)
        return None

    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    out: dict[str, Any] = {k: clean(raw.get(k)) for k in METRIC_KEYS if k in raw}
    for key in ("split", "n_images", "threshold", "average"):
        if key in raw:
            out[key] = clean(raw[key])
    out["ci"] = {k: [clean(x) for x in v] for k, v in (raw.get("ci") or {}).items() if k in METRIC_KEYS}
    return out


@dataclass(frozen=True)
class ModelEntry:
    """A model as listed: everything but the weights."""

    id: str
    path: Path
    meta: dict[str, Any]
    version: str
    category: str
    metrics: dict[str, Any] | None
    card: Path | None

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def architecture(self) -> str:
        return str(self.meta["model"]["name"])

    @property
    def title(self) -> str:
        return str(self.meta.get("title") or self.id)

    @property
    def image_size(self) -> int:
        return int(self.meta["preprocessing"]["image_size"])

    @property
    def channels(self) -> int:
        return int(self.meta["preprocessing"]["channels"])

    @property
    def threshold(self) -> float:
        return float(self.meta.get("decision_threshold", 0.5))


@dataclass
class LoadedModel:
    entry: ModelEntry
    predictor: Any  # cadx.engine.inference.Predictor
    explainer: Any  # cadx.engine.explain.Explainer
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelStore:
    def __init__(self, models_dir: Path, device: str | None = "cpu") -> None:
        self.models_dir = Path(models_dir)
        self.device = device
        self._entries: dict[str, tuple[tuple[float, int], ModelEntry | None]] = {}
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}

    def entries(self) -> list[ModelEntry]:
        """Current models, rescanned cheaply (stat only) so a model dropped in the folder shows up."""
        found: dict[str, Path] = {}
        if self.models_dir.is_dir():
            for child in sorted(self.models_dir.iterdir()):
                if child.name.startswith("."):
                    continue
                if child.is_dir():
                    ckpt = next((child / n for n in CHECKPOINT_NAMES if (child / n).is_file()), None)
                    if ckpt is not None:
                        found[child.name] = ckpt
                elif child.suffix == ".ckpt" and child.is_file():
                    found.setdefault(child.stem, child)  # a folder of the same name wins
        with self._lock:
            for model_id in set(self._entries) - set(found):
                self._entries.pop(model_id)
                self._loaded.pop(model_id, None)
            for model_id, ckpt in found.items():
                stat = ckpt.stat()
                key = (stat.st_mtime, stat.st_size)
                cached = self._entries.get(model_id)
                if cached is None or cached[0] != key:
                    self._entries[model_id] = (key, self._describe(model_id, ckpt, self.models_dir))
                    self._loaded.pop(model_id, None)
            entries = [e for _, e in self._entries.values() if e is not None]
        return sorted(entries, key=lambda e: (e.category, e.id))

    def entry(self, model_id: str) -> ModelEntry:
        found = next((e for e in self.entries() if e.id == model_id), None)
        if found is None:
            raise UnknownModelError(model_id)
        return found

    def load(self, model_id: str) -> LoadedModel:
        """The model ready for inference; built once, then reused by every request."""
        entry = self.entry(model_id)
        with self._lock:
            lock = self._load_locks.setdefault(model_id, threading.Lock())
        with lock:
            loaded = self._loaded.get(model_id)
            if loaded is None or loaded.entry is not entry:
                from cadx.engine.explain import Explainer
                from cadx.engine.inference import Predictor

                predictor = Predictor.from_checkpoint(entry.path, device=self.device)
                loaded = LoadedModel(entry, predictor, Explainer(predictor, method="gradcam"))
                with self._lock:
                    self._loaded[model_id] = loaded
            return loaded

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._loaded

    @staticmethod
    def _describe(model_id: str, ckpt: Path, models_dir: Path) -> ModelEntry | None:
        from cadx.engine.checkpoint import CheckpointError, read_checkpoint

        try:
            meta = read_checkpoint(ckpt)["cadx"]
            version = str(meta.get("version") or f"sha256:{_sha256(ckpt)[:12]}")
        except (CheckpointError, OSError, KeyError) as exc:
            log.warning("%s: not offered (%s)", ckpt, exc)
            return None
        loose = ckpt.parent != models_dir / model_id
        metrics = ckpt.with_suffix(".metrics.json") if loose else ckpt.parent / "metrics.json"
        card = ckpt.with_suffix(".md") if loose else ckpt.parent / "README.md"
        return ModelEntry(id=model_id, path=ckpt, meta=meta, version=version, category=category_for(model_id, meta),
                          metrics=read_metrics(metrics), card=card if card.is_file() else None)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
