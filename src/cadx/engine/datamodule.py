"""The training data as Lightning expects it: a ``LightningDataModule`` that owns the decoded train/validation
images, their datasets, the class-imbalance helpers and the loaders (engineering, kept out of the science module).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from monai.data.utils import worker_init_fn
from torch.utils.data import DataLoader, Sampler

from cadx.data.cache import DecodedImages, decode_records
from cadx.data.datasets import CachedImageDataset, balanced_sampler, class_weights
from cadx.data.sources import DatasetError, DatasetIndex, Record
from cadx.data.transforms import Augmentation, Preprocessing, build_augmentation
from cadx.engine.config import TrainConfig

FIT_SPLITS = ("train", "val")


class ImageDataModule(L.LightningDataModule):
    """Decodes each image of the train and validation splits once (``setup`` is idempotent: the trainer calls it
    again), then serves augmented training batches and plain validation batches."""

    def __init__(self, index: DatasetIndex, splits: dict[str, list[Record]], config: TrainConfig,
                 pre: Preprocessing, cache_dir: Path | None = None) -> None:
        super().__init__()
        self.index, self.splits, self.config, self.pre = index, splits, config, pre
        self.cache_dir = cache_dir
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
            self.decoded[name] = decode_records(
                self.index, self.splits[name], self.pre, description=f"Decoding {name} images",
                cache_dir=self.cache_dir / name if self.cache_dir else None)
        self._check_decoded()
        c = self.config
        augmentation = build_augmentation(Augmentation(flip=c.flip) if c.augment else None, self.pre.image_size,
                                          seed=c.seed)
        self.train_set = CachedImageDataset(self.decoded["train"], self.num_classes, self.index.multilabel,
                                            augmentation)
        self.val_set = CachedImageDataset(self.decoded["val"], self.num_classes, self.index.multilabel)

    def class_weights(self) -> torch.Tensor | None:
        """Inverse-frequency weights of the training split, when the configuration asks for a weighted loss."""
        return class_weights(self._train().targets, self.num_classes) if self.config.class_weights else None

    def train_dataloader(self) -> DataLoader:
        train = self._train()
        sampler = (balanced_sampler(train.targets, self.num_classes, self.config.seed)
                   if self.config.balanced_sampler and not self.index.multilabel else None)
        return self._loader(train, train=True, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        assert self.val_set is not None
        return self._loader(self.val_set, train=False)

    def _train(self) -> CachedImageDataset:
        self.setup()
        assert self.train_set is not None
        return self.train_set

    def _loader(self, dataset: CachedImageDataset, *, train: bool, sampler: Sampler | None = None) -> DataLoader:
        c = self.config
        return DataLoader(dataset, batch_size=c.batch_size, shuffle=train and sampler is None, sampler=sampler,
                          num_workers=c.num_workers, persistent_workers=c.num_workers > 0,
                          worker_init_fn=worker_init_fn if c.num_workers > 0 else None,  # seeds MONAI transforms
                          drop_last=train and len(dataset) > c.batch_size)

    def _check_decoded(self) -> None:
        for name in FIT_SPLITS:
            if not self.decoded[name].records:
                raise DatasetError(f"{self.index.source}: the {name} split has no readable images")
        present = self.index.class_counts(self.decoded["train"].records)
        missing = [c for c, n in present.items() if n == 0]
        if missing:
            raise DatasetError(f"{self.index.source}: no readable training images for class(es): {', '.join(missing)}")
