"""The training data as Lightning expects it: a ``LightningDataModule`` that owns the decoded train/validation
images, their datasets, the class-imbalance helpers and the loaders (engineering, kept out of the science module).

With several processes per machine (DDP), the first process of each machine decodes and writes the images to the
run's cache once; the machine's other processes wait for it and memory-map the same file, so the decoded images sit
in memory once per machine, not once per process.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from monai.data.utils import worker_init_fn
from torch.utils.data import DataLoader, Sampler

from cadx.data.cache import DecodedImages, decode_records
from cadx.data.datasets import CachedImageDataset, balanced_sampler, class_weights
from cadx.data.sources import DatasetError, DatasetIndex, Record
from cadx.data.transforms import Augmentation, Preprocessing, build_augmentation
from cadx.engine.config import TrainConfig

FIT_SPLITS = ("train", "val")
SHARED_CACHE_TIMEOUT_S = 6 * 3600  # how long a process waits for its machine's first process to decode the images
_STARTED = time.time()  # a failure reported before this process started belongs to an earlier launch


class ImageDataModule(L.LightningDataModule):
    """Decodes each image of the train and validation splits once (``setup`` is idempotent: the trainer calls it
    again), then serves augmented training batches and plain validation batches."""

    def __init__(self, index: DatasetIndex, splits: dict[str, list[Record]], config: TrainConfig,
                 pre: Preprocessing, cache_dir: Path | None = None, *, local_rank: int = 0,
                 world_size: int = 1) -> None:
        super().__init__()
        self.index, self.splits, self.config, self.pre = index, splits, config, pre
        self.cache_dir = cache_dir
        self.local_rank, self.world_size = local_rank, world_size
        self.decoded: dict[str, DecodedImages] = {}
        self.train_set: CachedImageDataset | None = None
        self.val_set: CachedImageDataset | None = None

    @property
    def num_classes(self) -> int:
        return len(self.index.classes)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return [s for name in FIT_SPLITS for s in self.decoded[name].skipped]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        for name in FIT_SPLITS:
            description = f"Decoding {name} images"
            if self.world_size > 1 and self.cache_dir is not None:
                self.decoded[name] = decode_shared(self.index, self.splits[name], self.pre,
                                                   self.node_cache_dir() / name, local_rank=self.local_rank,
                                                   description=description)
            else:
                self.decoded[name] = decode_records(self.index, self.splits[name], self.pre,
                                                    description=description,
                                                    cache_dir=self.cache_dir / name if self.cache_dir else None)
        self._check_decoded()
        c = self.config
        augmentation = build_augmentation(Augmentation(flip=c.flip) if c.augment else None, self.pre.image_size,
                                          seed=c.seed)
        self.train_set = CachedImageDataset(self.decoded["train"], self.num_classes, self.index.multilabel,
                                            augmentation)
        self.val_set = CachedImageDataset(self.decoded["val"], self.num_classes, self.index.multilabel)

    def node_cache_dir(self) -> Path:
        """This machine's part of the cache (a run folder on a shared file system is seen by every machine)."""
        assert self.cache_dir is not None
        return self.cache_dir / socket.gethostname()

    def data_digest(self) -> str:
        """sha256 over the split and the decoded records: every rank must train on the same data."""
        digest = hashlib.sha256()
        for name in sorted(self.splits):
            digest.update(f"{name}:{','.join(r.key for r in self.splits[name])}\n".encode())
        for name, decoded in sorted(self.decoded.items()):
            digest.update(f"decoded {name}:{','.join(r.key for r in decoded.records)}\n".encode())
        return digest.hexdigest()

    def class_weights(self) -> torch.Tensor | None:
        """Inverse-frequency weights of the training split, when the configuration asks for a weighted loss."""
        return class_weights(self._train().targets, self.num_classes) if self.config.class_weights else None

    def train_dataloader(self) -> DataLoader:
        train = self._train()
        # Under DDP Lightning hands each rank its share: a DistributedSampler in place of shuffling, and the
        # balanced sampler wrapped in a DistributedSamplerWrapper (every rank draws the same seeded indices and
        # keeps its slice of them).
        sampler = (balanced_sampler(train.targets, self.num_classes, self.config.seed)
                   if self.config.balanced_sampler and not self.index.multilabel else None)
        generator = None
        if self.world_size > 1:
            # Every rank starts from the same seed; without this, rank k's i-th image would get the same flips and
            # shifts as rank 0's i-th image (in the process, and in workers through their base seed).
            rank = self.trainer.global_rank if self.trainer is not None else 0
            generator = torch.Generator().manual_seed(self.config.seed + rank)
            if train.augmentation is not None:
                train.augmentation.set_random_state(seed=self.config.seed + rank)
        return self._loader(train, train=True, sampler=sampler, generator=generator)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        assert self.val_set is not None
        return self._loader(self.val_set, train=False)

    def _train(self) -> CachedImageDataset:
        self.setup()
        assert self.train_set is not None
        return self.train_set

    def _loader(self, dataset: CachedImageDataset, *, train: bool, sampler: Sampler | None = None,
                generator: torch.Generator | None = None) -> DataLoader:
        c = self.config
        per_rank = math.ceil(len(dataset) / self.world_size)  # what each rank's sampler yields per epoch
        return DataLoader(dataset, batch_size=c.batch_size, shuffle=train and sampler is None, sampler=sampler,
                          num_workers=c.num_workers, persistent_workers=c.num_workers > 0,
                          worker_init_fn=worker_init_fn if c.num_workers > 0 else None,  # seeds MONAI transforms
                          drop_last=train and per_rank > c.batch_size, generator=generator)

    def _check_decoded(self) -> None:
        for name in FIT_SPLITS:
            if not self.decoded[name].records:
                raise DatasetError(f"{self.index.source}: the {name} split has no readable images")
        present = self.index.class_counts(self.decoded["train"].records)
        missing = [c for c, n in present.items() if n == 0]
        if missing:
            raise DatasetError(f"{self.index.source}: no readable training images for class(es): {', '.join(missing)}")


def decode_shared(index: DatasetIndex, records: list[Record], pre: Preprocessing, cache_dir: Path, *,
                  local_rank: int, description: str = "Decoding images",
                  timeout_s: float = SHARED_CACHE_TIMEOUT_S) -> DecodedImages:
    """Decode once per machine: local rank 0 decodes and publishes ``images.npy`` and ``decoded.json`` in
    ``cache_dir``; every process of the machine (rank 0 too) then memory-maps the file read-only.

    Files are only ever replaced whole (written aside, then renamed), and ``decoded.json`` names the records and
    preprocessing it holds, so a cache left by an earlier launch is either the same images or is waited past."""
    fingerprint = _fingerprint(index, records, pre)
    marker, images_path = cache_dir / "decoded.json", cache_dir / "images.npy"
    if local_rank == 0:
        cache_dir.mkdir(parents=True, exist_ok=True)
        scratch = cache_dir / f"writing-{os.getpid()}"
        scratch.mkdir(exist_ok=True)
        try:
            decoded = decode_records(index, records, pre, description=description, cache_dir=scratch)
            if isinstance(decoded.images, np.memmap) and Path(decoded.images.filename) == (scratch / "images.npy"):
                decoded.images.flush()  # a large split was decoded straight to disk
                os.replace(scratch / "images.npy", images_path)
            else:
                np.save(scratch / "images.npy", np.ascontiguousarray(decoded.images))
                os.replace(scratch / "images.npy", images_path)
            by_key = {r.key: i for i, r in enumerate(records)}
            state = {"fingerprint": fingerprint, "kept": [by_key[r.key] for r in decoded.records],
                     "skipped": decoded.skipped, "seconds": decoded.seconds,
                     "problems": decoded.problems}
        except Exception as exc:  # the machine's other processes would otherwise wait for nothing
            _publish(marker, {"fingerprint": fingerprint, "error": f"{type(exc).__name__}: {exc}",
                              "written": time.time()})
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        _publish(marker, state)
    else:
        state = _wait_for(marker, fingerprint, timeout_s)
    images = np.load(images_path, mmap_mode="c")  # copy-on-write: torch wants writable arrays; reads share pages
    if len(images) != len(state["kept"]):
        raise DatasetError(f"{images_path}: holds {len(images)} images, {marker.name} names {len(state['kept'])}")
    return DecodedImages([records[i] for i in state["kept"]], images,
                         [tuple(s) for s in state["skipped"]], float(state["seconds"]), state["problems"])


def _fingerprint(index: DatasetIndex, records: list[Record], pre: Preprocessing) -> str:
    digest = hashlib.sha256(f"{index.source}\n{json.dumps(pre.to_dict(), sort_keys=True)}\n".encode())
    for r in records:
        digest.update(f"{r.key}\t{r.target}\n".encode())
    return digest.hexdigest()


def _publish(path: Path, state: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def _wait_for(marker: Path, fingerprint: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            state = json.loads(marker.read_text())
        except (OSError, ValueError):
            state = None
        if state is not None and state.get("fingerprint") == fingerprint:
            if "error" not in state:
                return state  # possibly left by an earlier launch: the same records, prepared the same way
            if state["written"] >= _STARTED:
                raise DatasetError(f"decoding on this machine's first process failed: {state['error']}")
        if time.monotonic() > deadline:
            raise DatasetError(f"waited {timeout_s:.0f} s for this machine's first process (LOCAL_RANK 0) to "
                               f"decode the images into {marker.parent}; did it start?")
        time.sleep(0.5)
