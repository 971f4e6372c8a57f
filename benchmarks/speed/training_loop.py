"""cadx's training loop against a bare PyTorch loop (issue 22): the loop's own overhead, side by side in one run.

Both train the same network (ResNet-18, 1 channel, 64 px, fp32 on the CPU) on the same data (PneumoniaMNIST's
training split from ``../shared/datasets``, upsampled to 64 px), through the same cadx data pipeline (decoded once,
MONAI augmentation, batch 32, no DataLoader workers), with the same loss and optimiser (cross-entropy, Adam 1e-3),
seed 0. "cadx" is ``cadx.engine.training.train`` (Lightning, torchmetrics accuracy, logging, checkpoints every
epoch, a validation pass); "bare" is a ``for`` loop over the same DataLoader: forward, loss, backward, step. Each
counts training images per second of training batches only, as cadx's ``metrics.csv`` does (``train_images_per_s``:
from the epoch's start to its last training batch, validation and checkpoints excluded). Each run trains 2 epochs;
the first is a warm-up and the second is reported. cadx and bare runs alternate over ``--rounds`` (default 2), and
the median is reported.

Run from the repository root: ``.venv/bin/python benchmarks/speed/training_loop.py`` -> ``training_loop.json``
(about 6 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cadx.data.sources import load_index
from cadx.data.transforms import to_model_input
from cadx.engine.config import TrainConfig
from cadx.engine.datamodule import ImageDataModule
from cadx.engine.hardware import describe_hardware
from cadx.engine.module import ClassificationModule
from cadx.engine.training import prepare_splits, resolve_preprocessing, train

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "datasets" / "pneumoniamnist" / "pneumoniamnist_28.npz"
EPOCHS = 2


def config() -> TrainConfig:
    return TrainConfig(model="resnet18", in_channels=1, image_size=64, epochs=EPOCHS, batch_size=32, optimizer="adam",
                       lr=1e-3, scheduler="none", early_stopping=0, num_workers=0, seed=0, precision="32-true")


def cadx_run(folder: Path) -> list[float]:
    """Training images/s per epoch, as cadx's own epoch log records them."""
    train(DATA, config(), folder)
    with (folder / "metrics.csv").open() as fh:
        return [float(row["train_images_per_s"]) for row in csv.DictReader(fh)]


def bare_run() -> list[float]:
    """The same network, data pipeline, loss and optimiser in a plain loop."""
    c = config()
    torch.manual_seed(c.seed)
    index = load_index(DATA, patient_pattern=c.patient_pattern)
    splits, _ = prepare_splits(index, c, None)
    pre = resolve_preprocessing(c)
    data = ImageDataModule(index, splits, c, pre)
    data.setup("fit")
    module = ClassificationModule(c, len(index.classes), index.multilabel, pre)
    model, criterion = module.model.train(), module.criterion
    optimiser = torch.optim.Adam(model.parameters(), lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)
    rates = []
    for _ in range(c.epochs):
        start, images_seen, seconds = time.perf_counter(), 0, 0.0
        for images, targets in data.train_dataloader():
            loss = criterion(model(to_model_input(images, pre)), targets)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            images_seen += len(images)
            seconds = time.perf_counter() - start
        rates.append(images_seen / seconds)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("training_loop.json"))
    args = parser.parse_args()
    if not DATA.is_file():
        print(f"skipped: {DATA} is absent")
        return 0
    runs: dict[str, list[list[float]]] = {"cadx": [], "bare": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            runs["cadx"].append(cadx_run(Path(tmp) / f"run{r}"))
            runs["bare"].append(bare_run())
            print(f"round {r + 1}: cadx {runs['cadx'][-1]} bare {runs['bare'][-1]} images/s", flush=True)
    reported = {k: round(statistics.median(epochs[-1] for epochs in v), 1) for k, v in runs.items()}
    ratio = round(reported["cadx"] / reported["bare"], 3)
    result = {"setup": {"data": "PneumoniaMNIST train split (28 px npz, upsampled to 64 px)", "model": "resnet18",
                        "image_size": 64, "batch_size": 32, "precision": "32-true", "epochs": EPOCHS,
                        "reported": "median over rounds of the last epoch's training images/s", "seed": 0,
                        "hardware": describe_hardware()},
              "images_per_s": reported, "cadx_over_bare": ratio, "runs": runs}
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(reported), f"cadx / bare: x{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
