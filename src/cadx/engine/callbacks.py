"""Engineering around the fit: a per-epoch CSV with throughput, written as training goes."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import lightning as L

EPOCH_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "lr",
                 "train_images_per_s", "epoch_seconds"]


class EpochLog(L.Callback):
    """Appends one row per epoch to ``metrics.csv`` (kept across ``--resume``)."""

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
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        row = {
            "epoch": trainer.current_epoch + 1,
            **{k: round(float(m[k]), 6) if k in m else "" for k in EPOCH_COLUMNS[1:6]},
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "train_images_per_s": round(self._images / max(self._train_seconds, 1e-9), 1),
            "epoch_seconds": round(time.perf_counter() - self._start, 2),
        }
        new = not self.path.exists()
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=EPOCH_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row)


def read_epoch_log(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def logged_seconds(path: Path) -> float:
    """Wall time of the epochs in the log (training + validation passes), 0 without a log; a resumed run's log
    keeps its earlier sessions' epochs, so this is its whole training time."""
    if not path.exists():
        return 0.0
    return sum(row.get("epoch_seconds", 0.0) for row in read_epoch_log(path))
