"""The models offered by the server: found by the engine's catalogue (``cadx.engine.catalogue``, the rules the
command line uses too), loaded lazily, kept and reused.

``metrics.json`` beside a checkpoint (written by ``cadx evaluate``) supplies its test metrics and ``README.md`` its
model card (``<id>.metrics.json`` / ``<id>.md`` beside a loose ``<id>.ckpt``). Listing reads only the checkpoint
metadata; the network and its Grad-CAM explainer are built on first use and cached. One lock per model serialises
inference on it: Grad-CAM hooks the network, so two requests must not run it at once.
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

from cadx.engine.catalogue import category_of, scan, sidecar_files
from cadx.engine.checkpoint import CheckpointError, read_meta
from cadx.engine.meta import CheckpointMeta

log = logging.getLogger(__name__)

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
    meta: CheckpointMeta
    version: str
    category: str
    metrics: dict[str, Any] | None
    card: Path | None

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def title(self) -> str:
        return self.meta.title or self.id


@dataclass
class LoadedModel:
    entry: ModelEntry
    predictor: Any  # cadx.engine.inference.Predictor
    explainer: Any  # cadx.engine.explain.Explainer
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelStore:
    def __init__(self, models_dir: Path, device: str | None = "cpu", backend: str = "torch") -> None:
        self.models_dir = Path(models_dir)
        self.device = device
        self.backend = backend
        self._entries: dict[str, tuple[tuple[float, int], ModelEntry | None]] = {}
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}

    def entries(self) -> list[ModelEntry]:
        """Current models, rescanned cheaply (stat only) so a model dropped in the folder shows up."""
        found = scan(self.models_dir)
        with self._lock:
            for model_id in set(self._entries) - set(found):
                self._entries.pop(model_id)
                self._loaded.pop(model_id, None)
            for model_id, ckpt in found.items():
                stat = ckpt.stat()
                key = (stat.st_mtime, stat.st_size)
                cached = self._entries.get(model_id)
                if cached is None or cached[0] != key:
                    self._entries[model_id] = (key, self._describe(model_id, ckpt))
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
                from cadx.engine.backends import BackendError, load_predictor
                from cadx.engine.explain import Explainer

                try:
                    predictor = load_predictor(entry.path, self.backend, device=self.device)
                except BackendError as exc:  # the model still serves; the model list says which backend it runs
                    log.warning("model %s: %s; using torch", model_id, exc)
                    predictor = load_predictor(entry.path, "torch", device=self.device)
                loaded = LoadedModel(entry, predictor, Explainer(predictor))  # the measured default
                with self._lock:
                    self._loaded[model_id] = loaded
            return loaded

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._loaded

    def backend_of(self, model_id: str) -> str | None:
        """The backend a loaded model runs on (None until it is loaded)."""
        loaded = self._loaded.get(model_id)
        return loaded.predictor.backend if loaded is not None else None

    @staticmethod
    def _describe(model_id: str, ckpt: Path) -> ModelEntry | None:
        try:
            meta = read_meta(ckpt)
        except (CheckpointError, OSError) as exc:
            log.warning("%s: not offered (%s)", ckpt, exc)
            return None
        side = sidecar_files(ckpt)
        return ModelEntry(id=model_id, path=ckpt, meta=meta, version=meta.version or f"sha256:{_sha256(ckpt)[:12]}",
                          category=category_of(meta.category, ckpt), metrics=read_metrics(side.metrics),
                          card=side.card if side.card.is_file() else None)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
