"""The same predictor as a Ray Data stage, for archives too large for one machine (``cadx predict --engine ray``;
optional extra ``cadx[ray]``).

File paths go in as a Ray dataset; ``map_batches`` runs :class:`PredictorStage`, a callable class that loads the
checkpoint once per actor and calls :meth:`Predictor.predict_files` (decoding included) on each batch, on
``concurrency`` actors with ``num_cpus``/``num_gpus`` each. Each result travels back pickled, so the driver receives
the same :class:`FilePrediction` (decision included) a local run makes and writes it the same way. Every node must
see the files and the checkpoint at the same paths (a shared file system).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cadx.engine.inference import FilePrediction


class RayUnavailableError(ValueError):
    """Ray is not installed: the ``ray`` engine is an optional extra."""


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # a running cluster ("auto", "ray://head:10001"); None: RAY_ADDRESS, else a local Ray
    concurrency: int | None = None  # predictor actors (None: one per CPU Ray reports, less one for the driver)
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0


@dataclass(frozen=True)
class PredictionOptions:
    batch_size: int = 32
    frame: int | None = None
    threshold: float | None = None
    operating_point: str | None = None
    flip_check: bool = False


class PredictorStage:
    """One Ray actor's predictor: loaded once, then one :meth:`Predictor.predict_files` call per batch of paths."""

    def __init__(self, checkpoint: str, backend: str, options: PredictionOptions, threads: int) -> None:
        import torch

        from cadx.engine.backends import load_predictor

        torch.set_num_threads(max(1, threads))
        self.predictor = load_predictor(checkpoint, backend, "cuda" if torch.cuda.is_available() else "cpu")
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = [str(f) for f in batch["file"]]
        o = self.options
        results = self.predictor.predict_files(files, o.batch_size, o.frame, o.threshold,
                                               operating_point=o.operating_point, flip_check=o.flip_check)
        return {"result": np.array([pickle.dumps(r) for r in results], dtype=object),
                "backend": np.array([self.predictor.backend] * len(files))}


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailableError("the ray engine needs Ray: pip install 'cadx[ray]' (or use --engine local)") from None
    return ray


def predict_with_ray(checkpoint: str | Path, files: Sequence[str | Path], backend: str, options: PredictionOptions,
                     ray_options: RayOptions) -> Iterator[tuple[FilePrediction, str]]:
    """Each file's prediction and the backend that made it, in the order Ray finishes them (every file once)."""
    ray = _ray()
    if not ray.is_initialized():
        address = ray_options.address or os.environ.get("RAY_ADDRESS")
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=True)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    concurrency = ray_options.concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)
    dataset = ray.data.from_items([{"file": str(f)} for f in files])
    predicted = dataset.map_batches(
        PredictorStage, batch_size=options.batch_size, batch_format="numpy", concurrency=concurrency,
        num_cpus=ray_options.cpus_per_actor, num_gpus=ray_options.gpus_per_actor,
        fn_constructor_kwargs={"checkpoint": str(checkpoint), "backend": backend, "options": options,
                               "threads": int(ray_options.cpus_per_actor)})
    for row in predicted.iter_rows():
        yield pickle.loads(row["result"]), str(row["backend"])
