"""The LightningDataModule decodes each image once and serves the loaders the configuration describes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cadx.data.sources import DatasetError, load_index
from cadx.data.splits import assign_splits
from cadx.data.transforms import Preprocessing
from cadx.engine.config import build_config
from cadx.engine.datamodule import ImageDataModule
from tests.conftest import make_class_folders


def module_for(root: Path, **settings: object) -> ImageDataModule:
    index = load_index(make_class_folders(root, 12, size=40))
    splits, _ = assign_splits(index, seed=0)
    config = build_config(model="simple_cnn", batch_size=4, **settings)
    return ImageDataModule(index, splits, config, Preprocessing(32, 1))


def test_decodes_once_and_batches(tmp_path: Path) -> None:
    dm = module_for(tmp_path / "d", class_weights=True, balanced_sampler=True)
    dm.setup("fit")
    first = dm.decoded["train"]
    dm.setup("fit")  # the trainer calls it again: nothing is decoded twice
    assert dm.decoded["train"] is first and dm.skipped == []
    images, targets = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 1, 32, 32) and images.dtype == torch.float32 and 0 <= images.min() <= images.max() <= 1
    assert targets.dtype == torch.long
    val_images, _ = next(iter(dm.val_dataloader()))
    assert val_images.dtype == torch.uint8  # no augmentation on validation
    assert dm.class_weights().shape == (2,)
    assert module_for(tmp_path / "e").class_weights() is None


def test_a_split_without_readable_images_is_an_error(tmp_path: Path) -> None:
    dm = module_for(tmp_path / "d")
    for record in dm.splits["val"]:
        (dm.index.root / record.key).write_bytes(b"broken")
    with pytest.raises(DatasetError, match="the val split has no readable images"):
        dm.setup("fit")
