"""``cadx train``: data in, a self-describing run folder out (checkpoints, config, per-epoch log, curves)."""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar, Timer
from monai.data.utils import worker_init_fn
from torch.utils.data import DataLoader, Sampler

from cadx import __version__
from cadx.data.cache import DecodedImages, decode_records
from cadx.data.datasets import CachedImageDataset, balanced_sampler, class_weights
from cadx.data.sources import DatasetError, DatasetIndex, Record, load_index
from cadx.data.splits import assign_splits, read_split_file, write_split_file
from cadx.data.transforms import Augmentation, Preprocessing, build_augmentation
from cadx.engine.callbacks import EpochLog, logged_seconds, read_epoch_log
from cadx.engine.checkpoint import FORMAT_VERSION, LoadedCheckpoint, load_checkpoint, update_meta
from cadx.engine.config import TrainConfig
from cadx.engine.hardware import describe_hardware
from cadx.engine.inference import Predictor
from cadx.engine.metrics import choose_threshold
from cadx.engine.module import ClassificationModule
from cadx.engine.plots import plot_training_curves
from cadx.models import count_parameters, get_model_info

log = logging.getLogger(__name__)
# The run folder deliberately holds more than checkpoints; the pytree notice is Lightning-internal.
warnings.filterwarnings("ignore", message=r".*exists and is not empty.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
# Lightning's 2-batch sanity check often sees one class only; the epoch-level AUC is computed on all of validation.
warnings.filterwarnings("ignore", message=r"No (negative|positive) samples in targets")


@dataclass
class TrainResult:
    output: Path
    best_checkpoint: Path
    epochs_run: int
    best_val_loss: float
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def prepare_splits(index: DatasetIndex, config: TrainConfig,
                   split_file: Path | None) -> tuple[dict[str, list[Record]], list[str]]:
    if split_file is not None:
        return read_split_file(split_file, index), []
    split_seed = config.seed if config.split_seed is None else config.split_seed
    return assign_splits(index, seed=split_seed, val_fraction_of_train=config.val_fraction,
                         drop_duplicates=config.drop_duplicates)


def resolve_preprocessing(config: TrainConfig) -> Preprocessing:
    info = get_model_info(config.model)
    return Preprocessing(image_size=config.image_size or info.default_input_size,
                         channels=config.in_channels or info.default_in_channels, window=config.window)


def _precision(config: TrainConfig) -> str:
    if config.precision != "auto":
        return config.precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def _loader(dataset: CachedImageDataset, config: TrainConfig, *, train: bool,
            sampler: Sampler | None = None) -> DataLoader:
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=config.num_workers, persistent_workers=config.num_workers > 0,
                      worker_init_fn=worker_init_fn if config.num_workers > 0 else None,  # seeds MONAI transforms
                      drop_last=train and len(dataset) > config.batch_size)


def train(data: str | Path, config: TrainConfig, output: str | Path, *, resume: bool = False,
          overwrite: bool = False, split_file: Path | None = None) -> TrainResult:
    started = time.perf_counter()
    output = Path(output).expanduser().resolve()
    existing = [p for p in (output / "best.ckpt", output / "last.ckpt") if p.exists()]
    if existing and not (resume or overwrite):
        raise DatasetError(f"{output} already holds a run ({existing[0].name}); pass --resume to continue it or "
                           "--overwrite to start again")
    if overwrite and not resume:
        for p in (*existing, output / "metrics.csv"):
            p.unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    if resume and split_file is None and (output / "split.csv").exists():
        split_file = output / "split.csv"
    L.seed_everything(config.seed, workers=True, verbose=False)

    index = load_index(data, patient_pattern=config.patient_pattern)
    if config.class_names:
        if len(config.class_names) != len(index.classes):
            raise DatasetError(f"--class-names gives {len(config.class_names)} names, the data has "
                               f"{len(index.classes)} classes")
        index.classes = list(config.class_names)
    splits, warnings = prepare_splits(index, config, split_file)
    for w in warnings:
        log.warning(w)
    write_split_file(output / "split.csv", splits)
    pre = resolve_preprocessing(config)
    teachers = load_teachers(config, index, pre)  # before decoding: a wrong teacher fails in seconds
    decoded = {name: decode_records(index, splits[name], pre, description=f"Decoding {name} images",
                                    cache_dir=output / ".cache" / name) for name in ("train", "val")}
    skipped = decoded["train"].skipped + decoded["val"].skipped
    _check_decoded(index, decoded)

    num_classes = len(index.classes)
    train_set = CachedImageDataset(decoded["train"], num_classes, index.multilabel,
                                   build_augmentation(Augmentation(flip=config.flip) if config.augment else None,
                                                      pre.image_size, seed=config.seed))
    val_set = CachedImageDataset(decoded["val"], num_classes, index.multilabel)
    weights = class_weights(train_set.targets, num_classes) if config.class_weights else None
    sampler = (balanced_sampler(train_set.targets, num_classes, config.seed)
               if config.balanced_sampler and not index.multilabel else None)

    module = _build_module(config, num_classes, index.multilabel, pre, weights)
    module.teachers = teachers
    module.cadx_meta = _meta(index, config, pre, splits, module)
    epoch_log = output / "metrics.csv"
    if not resume:
        epoch_log.unlink(missing_ok=True)
    earlier_seconds = logged_seconds(epoch_log)  # a resumed run's training time counts its earlier sessions too
    best = ModelCheckpoint(dirpath=output, filename="best", monitor="val_loss", mode="min",
                           enable_version_counter=False)
    # Every epoch, so --resume continues where training stopped (Lightning's save_last follows the best only).
    latest = ModelCheckpoint(dirpath=output, filename="last", enable_version_counter=False)
    callbacks: list[L.Callback] = [best, latest, EpochLog(epoch_log), RichProgressBar(leave=True)]
    if config.early_stopping:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=config.early_stopping, mode="min"))
    if config.max_minutes:
        # Checked after each validated epoch, never mid-epoch: a cut epoch would be logged as a whole one and a
        # resume would continue inside it. The budget may overrun by up to one epoch.
        callbacks.append(Timer(timedelta(minutes=config.max_minutes), interval="epoch", verbose=False))
    trainer = L.Trainer(
        max_epochs=config.epochs, accelerator=config.accelerator, devices=1, precision=_precision(config),
        callbacks=callbacks, logger=False, default_root_dir=output, deterministic="warn",
        log_every_n_steps=10, num_sanity_val_steps=0, enable_model_summary=False)
    last = output / "last.ckpt"
    trainer.fit(module, _loader(train_set, config, train=True, sampler=sampler),
                _loader(val_set, config, train=False), ckpt_path=str(last) if resume and last.exists() else None)

    best_path = Path(best.best_model_path) if best.best_model_path else last
    if best_path != output / "best.ckpt":
        shutil.copyfile(best_path, output / "best.ckpt")
        best_path = output / "best.ckpt"
    threshold = _validation_threshold(best_path, decoded["val"], module.cadx_meta)
    for ckpt in (best_path, last):
        if ckpt.exists():
            update_meta(ckpt, decision_threshold=threshold)
    rows = read_epoch_log(epoch_log) if epoch_log.exists() else []
    if rows:
        plot_training_curves(rows, output / "curves.png")
    (output / "config.yaml").write_text(yaml.safe_dump(
        {"data": str(index.source), "output": str(output), "cadx_version": __version__, **config.to_dict()},
        sort_keys=False))
    seconds = time.perf_counter() - started + earlier_seconds
    summary = _summary(index, splits, decoded, skipped, warnings, weights, rows, seconds, threshold, module)
    summary["earlier_sessions_seconds"] = round(earlier_seconds, 1)
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(output / ".cache", ignore_errors=True)
    return TrainResult(output, best_path, len(rows), float(best.best_model_score or float("nan")), seconds,
                       skipped, warnings, summary)


def load_teachers(config: TrainConfig, index: DatasetIndex, pre: Preprocessing) -> list[LoadedCheckpoint]:
    """Checkpoints to distil from; each must predict this data's classes from images prepared the same way (they
    see the student's augmented batch)."""
    if config.teachers and not (0.0 <= config.distill_weight <= 1.0 and config.distill_temperature > 0):
        raise ValueError(f"distillation needs 0 <= weight <= 1 and temperature > 0 (got {config.distill_weight}, "
                         f"{config.distill_temperature})")
    teachers = []
    for path in config.teachers:
        teacher = load_checkpoint(path)
        if teacher.classes != list(index.classes) or teacher.multilabel != index.multilabel:
            raise DatasetError(f"{teacher.path}: this teacher predicts {teacher.classes}, the data has "
                               f"{list(index.classes)}{' (multi-label)' if index.multilabel else ''}")
        t = teacher.preprocessing
        if (t.image_size, t.channels) != (pre.image_size, pre.channels):
            raise DatasetError(f"{teacher.path}: this teacher takes {t.channels}-channel {t.image_size} px images, "
                               f"the student {pre.channels}-channel {pre.image_size} px; train the student at the "
                               "teacher's size")
        teachers.append(teacher)
    return teachers


def _check_decoded(index: DatasetIndex, decoded: dict[str, DecodedImages]) -> None:
    for name in ("train", "val"):
        if not decoded[name].records:
            raise DatasetError(f"{index.source}: the {name} split has no readable images")
    present = index.class_counts(decoded["train"].records)
    missing = [c for c, n in present.items() if n == 0]
    if missing:
        raise DatasetError(f"{index.source}: no readable training images for class(es): {', '.join(missing)}")


def _build_module(config: TrainConfig, num_classes: int, multilabel: bool, pre: Preprocessing,
                  weights: torch.Tensor | None) -> ClassificationModule:
    return ClassificationModule(config.to_dict(), num_classes, multilabel, pre.to_dict(),
                                weights.tolist() if weights is not None else None)


def _meta(index: DatasetIndex, config: TrainConfig, pre: Preprocessing, splits: dict[str, list[Record]],
          module: ClassificationModule) -> dict[str, Any]:
    binary = len(index.classes) == 2 and not index.multilabel
    return {
        "format": FORMAT_VERSION, "cadx_version": __version__,
        "model": {"name": config.model, "options": dict(config.model_options), "in_channels": pre.channels,
                  "num_classes": len(index.classes), "params": count_parameters(module.model)},
        "classes": list(index.classes),
        "task": "multilabel" if index.multilabel else "multiclass",
        "positive_index": 1 if binary else None,
        "decision_threshold": 0.5,
        "preprocessing": pre.to_dict(),
        "data": {"source": str(index.source), "kind": index.kind, "patient_pattern": config.patient_pattern},
        "split": {name: [r.key for r in recs] for name, recs in splits.items()},
        "config": config.to_dict(),
    }


def _validation_threshold(best_path: Path, val: DecodedImages, meta: dict[str, Any]) -> float:
    """Binary tasks: the operating point is chosen on validation, never on test."""
    if meta["positive_index"] is None:
        return 0.5
    predictor = Predictor(load_checkpoint(best_path))
    probs = predictor.predict_arrays(val.images)
    y = np.array([r.target for r in val.records])
    if len(np.unique(y)) < 2:
        return 0.5
    return choose_threshold(y, probs, meta["positive_index"])


def _summary(index: DatasetIndex, splits: dict[str, list[Record]], decoded: dict[str, DecodedImages],
             skipped: list[tuple[str, str]], warnings: list[str], weights: torch.Tensor | None,
             rows: list[dict[str, float]], seconds: float, threshold: float,
             module: ClassificationModule) -> dict[str, Any]:
    return {
        "data": str(index.source), "classes": index.classes,
        "split_sizes": {k: len(v) for k, v in splits.items()},
        "class_counts": {k: index.class_counts(v) for k, v in splits.items()},
        "skipped_files": [{"file": f, "reason": r} for f, r in skipped],
        "warnings": warnings,
        "class_weights": dict(zip(index.classes, weights.tolist(), strict=True)) if weights is not None else None,
        "decode_seconds": round(sum(d.seconds for d in decoded.values()), 2),
        "epochs": len(rows), "train_seconds": round(seconds, 1),
        "best_val_loss": min((r["val_loss"] for r in rows if "val_loss" in r), default=None),
        "decision_threshold": threshold,
        "params": count_parameters(module.model),
        "device": "cuda" if torch.cuda.is_available() else "cpu", "hardware": describe_hardware(),
    }
