"""Engineering around the fit: a per-epoch CSV with throughput, written as training goes, and the check that
every DDP rank trains on the same data."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import lightning as L
import torch

EPOCH_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "lr",
                 "train_images_per_s", "epoch_seconds"]


class EpochLog(L.Callback):
    """Appends one row per epoch to ``metrics.csv`` (kept across ``--resume``); under DDP rank 0 writes it, with
    the images per second of all ranks together (each rank trains on an equal share)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._start = 0.0
        self._train_seconds = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._images = 0
        self._train_seconds = 0.0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._images += len(batch[0])
        self._train_seconds = time.perf_counter() - self._start

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        row = {
            "epoch": trainer.current_epoch + 1,
            **{k: round(float(m[k]), 6) if k in m else "" for k in EPOCH_COLUMNS[1:6]},
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "train_images_per_s": round(self._images * trainer.world_size / max(self._train_seconds, 1e-9), 1),
            "epoch_seconds": round(time.perf_counter() - self._start, 2),
        }
        new = not self.path.exists()
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=EPOCH_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row)


class SameDataOnEveryRank(L.Callback):
    """Stops a DDP fit before its first step unless every rank holds the same split and decoded images (the split
    is recomputed on each rank, seeded; a file changed on one machine, or a different split file, would otherwise
    train silently on different data)."""

    def __init__(self, digest: str = "") -> None:
        self.digest = digest  # set before the fit: ImageDataModule.data_digest()

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.world_size < 2:
            return
        if not self.digest:
            raise RuntimeError("SameDataOnEveryRank needs the data's digest before the fit")
        mine = torch.tensor([int(self.digest[:15], 16)], dtype=torch.int64, device=module.device)
        gathered = [torch.zeros_like(mine) for _ in range(trainer.world_size)]
        torch.distributed.all_gather(gathered, mine)
        every = [int(t.item()) for t in gathered]
        if len(set(every)) > 1:  # every rank sees every digest, so all stop together
            differ = [rank for rank, d in enumerate(every) if d != every[0]]
            raise RuntimeError(f"DDP ranks {differ} hold a different split or decoded images than rank 0; give every "
                               "machine the same data (or one --split-file)")


def read_epoch_log(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def logged_seconds(path: Path) -> float:
    """Wall time of the epochs in the log (training + validation passes), 0 without a log; a resumed run's log
    keeps its earlier sessions' epochs, so this is its whole training time."""
    if not path.exists():
        return 0.0
    return sum(row.get("epoch_seconds", 0.0) for row in read_epoch_log(path))
