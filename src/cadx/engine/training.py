"""``cadx train``: data in, a self-describing run folder out (checkpoints, config, per-epoch log, curves)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar, Timer

from cadx import __version__
from cadx.data.cache import DecodedImages, decode_records
from cadx.data.sources import DatasetError, DatasetIndex, Record, load_index
from cadx.data.splits import assign_splits, read_split_file, split_leak_warnings, write_split_file
from cadx.data.transforms import Preprocessing
from cadx.engine.abstention import MIN_VALIDATION_IMAGES, fit_predictor_ood
from cadx.engine.calibrate import fit_on_validation
from cadx.engine.callbacks import EpochLog, SameDataOnEveryRank, logged_seconds, read_epoch_log
from cadx.engine.checkpoint import LoadedCheckpoint, load_checkpoint, update_meta
from cadx.engine.config import TrainConfig
from cadx.engine.datamodule import ImageDataModule
from cadx.engine.hardware import describe_hardware
from cadx.engine.inference import Predictor
from cadx.engine.meta import CheckpointMeta, Provenance, new_meta
from cadx.engine.module import ClassificationModule
from cadx.engine.ood import DEFAULT_KEEP, DEFAULT_METHOD, OodModel
from cadx.engine.plots import plot_training_curves
from cadx.engine.selection import select_records
from cadx.models import IMAGENET_MEAN, IMAGENET_STD, count_parameters, embedded_metadata, get_model_info

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
    rank: int = 0  # under DDP, this process's global rank; only rank 0's result holds the fitted run


def prepare_splits(index: DatasetIndex, config: TrainConfig,
                   split_file: Path | None) -> tuple[dict[str, list[Record]], list[str]]:
    near = config.near_duplicates or None
    if split_file is not None:
        splits = read_split_file(split_file, index)
        return splits, split_leak_warnings(index, splits, near_duplicates=near)
    split_seed = config.seed if config.split_seed is None else config.split_seed
    return assign_splits(index, seed=split_seed, val_fraction_of_train=config.val_fraction,
                         drop_duplicates=config.drop_duplicates, near_duplicates=near)


def resolve_preprocessing(config: TrainConfig) -> Preprocessing:
    """Input size and channels from the configuration (else the model's defaults); normalisation from the
    pretrained weights when training starts from them (they only work on inputs prepared as they were trained)."""
    info = get_model_info(config.model)
    channels = config.in_channels or info.default_in_channels
    norm = {}
    if config.weights:
        norm["mean"], norm["std"] = weights_normalisation(config.weights, channels)
    return Preprocessing(image_size=config.image_size or info.default_input_size, channels=channels,
                         window=config.window, **norm)


def weights_normalisation(path: str | Path, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input normalisation the weights in ``path`` were trained with, for ``channels`` input channels.

    A cadx checkpoint says so in its metadata (read through ``CheckpointMeta``, any format); any other state dict is
    taken to be torchvision/timm ImageNet weights. For a grey stem (RGB filters summed) the channel values are
    averaged, as timm does: a grey image replicated to RGB and normalised with the average sees the summed filters
    the same way."""
    raw = embedded_metadata(path)
    if raw is not None:
        own = CheckpointMeta.from_dict(raw).preprocessing
        mean, std = own.mean, own.std
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if len(mean) in (1, channels):
        return tuple(mean), tuple(std)
    return (sum(mean) / len(mean),), (sum(std) / len(std),)


def _precision(config: TrainConfig) -> str:
    if config.precision != "auto":
        return config.precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def build_trainer(config: TrainConfig, output: Path, callbacks: list[L.Callback]) -> L.Trainer:
    """The Lightning Trainer of a run: devices, machines and strategy from the configuration (one process per
    device; Lightning launches them itself, or finds them started by torchrun or srun)."""
    return L.Trainer(
        max_epochs=config.epochs, accelerator=config.accelerator, devices=config.devices,
        num_nodes=config.num_nodes, strategy=config.strategy, precision=_precision(config),
        callbacks=callbacks, logger=False, default_root_dir=output, deterministic="warn",
        log_every_n_steps=10, num_sanity_val_steps=0, enable_model_summary=False)


def train(data: str | Path, config: TrainConfig, output: str | Path, *, resume: bool = False,
          overwrite: bool = False, split_file: Path | None = None,
          callbacks: Sequence[L.Callback] = ()) -> TrainResult:
    """Train into the run folder ``output``. ``callbacks`` are extra Lightning callbacks (logging, tests).

    Under DDP every rank runs this function: each computes the same seeded split, the first process of each machine
    decodes the images for the machine, and rank 0 alone writes the run folder's files and fits calibration, the
    operating points and the out-of-distribution score after training; the other ranks return after the fit with a
    result whose ``rank`` is theirs."""
    started = time.perf_counter()
    output = Path(output).expanduser().resolve()
    existing = [p for p in (output / "best.ckpt", output / "last.ckpt") if p.exists()]
    if existing and not (resume or overwrite):
        raise DatasetError(f"{output} already holds a run ({existing[0].name}); pass --resume to continue it or "
                           "--overwrite to start again")
    epoch_log = output / "metrics.csv"
    best = ModelCheckpoint(dirpath=output, filename="best", monitor="val_loss", mode="min",
                           enable_version_counter=False)
    # Every epoch, so --resume continues where training stopped (Lightning's save_last follows the best only).
    latest = ModelCheckpoint(dirpath=output, filename="last", enable_version_counter=False)
    same_data = SameDataOnEveryRank()  # its digest is set once the images are decoded
    fit_callbacks: list[L.Callback] = [best, latest, EpochLog(epoch_log), RichProgressBar(leave=True), same_data,
                                       *callbacks]
    if config.early_stopping:
        fit_callbacks.append(EarlyStopping(monitor="val_loss", patience=config.early_stopping, mode="min"))
    if config.max_minutes:
        # Checked after each validated epoch, never mid-epoch: a cut epoch would be logged as a whole one and a
        # resume would continue inside it. The budget may overrun by up to one epoch.
        fit_callbacks.append(Timer(timedelta(minutes=config.max_minutes), interval="epoch", verbose=False))
    trainer = build_trainer(config, output, fit_callbacks)  # knows this process's rank before any work is done
    primary = trainer.is_global_zero
    if primary and overwrite and not resume:
        for p in (*existing, epoch_log):
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
    if primary:
        for w in warnings:
            log.warning(w)
        # Written aside and renamed: under torchrun the other ranks may be reading the previous split.csv now.
        write_split_file(output / "split.csv.tmp", splits)
        os.replace(output / "split.csv.tmp", output / "split.csv")
    pre = resolve_preprocessing(config)
    teachers = load_teachers(config, index, pre)  # before decoding: a wrong teacher fails in seconds
    data_module = ImageDataModule(index, splits, config, pre, cache_dir=output / ".cache",
                                  local_rank=trainer.local_rank, world_size=trainer.world_size)
    data_module.setup("fit")
    decoded, skipped = data_module.decoded, data_module.skipped
    weights = data_module.class_weights()
    same_data.digest = data_module.data_digest()

    module = ClassificationModule(config, len(index.classes), index.multilabel, pre,
                                  weights.tolist() if weights is not None else None)
    module.teachers = teachers
    module.cadx_meta = _meta(index, config, pre, splits, module)
    if primary and not resume:
        epoch_log.unlink(missing_ok=True)
    earlier_seconds = logged_seconds(epoch_log)  # a resumed run's training time counts its earlier sessions too
    last = output / "last.ckpt"
    trainer.fit(module, datamodule=data_module, ckpt_path=str(last) if resume and last.exists() else None)

    if not trainer.is_global_zero:  # checkpoints, metrics and everything fitted after training: rank 0's
        if trainer.local_rank == 0:
            shutil.rmtree(data_module.node_cache_dir(), ignore_errors=True)
        return TrainResult(output, output / "best.ckpt", trainer.current_epoch,
                           float(best.best_model_score or float("nan")), time.perf_counter() - started, skipped,
                           warnings, rank=trainer.global_rank)  # no summary: the CLI reports rank 0's alone
    best_path = Path(best.best_model_path) if best.best_model_path else last
    if best_path != output / "best.ckpt":
        shutil.copyfile(best_path, output / "best.ckpt")
        best_path = output / "best.ckpt"
    # Calibration, the operating points and the out-of-distribution score are fitted after training, on the
    # model's own splits (temperature, thresholds and the score's limit on validation; the thresholds on the
    # calibrated probabilities), by the functions cadx calibrate and fit-ood use too.
    trained = Predictor(load_checkpoint(best_path))
    fitted = fit_on_validation(trained, decoded["val"], target_sensitivity=config.target_sensitivity,
                               target_specificity=config.target_specificity)
    changes = fitted.changes(trained.meta)
    threshold = changes.get("decision_threshold", trained.meta.decision_threshold)
    ood = fit_predictor_ood(trained, decoded["train"], decoded["val"], seed=config.seed)
    for ckpt in (best_path, last):
        if ckpt.exists():
            update_meta(ckpt, **changes, ood=ood.to_dict() if ood is not None else None)
    rows = read_epoch_log(epoch_log) if epoch_log.exists() else []
    if rows:
        plot_training_curves(rows, output / "curves.png")
    (output / "config.yaml").write_text(yaml.safe_dump(
        {"data": str(index.source), "output": str(output), "cadx_version": __version__, **config.to_dict()},
        sort_keys=False))
    seconds = time.perf_counter() - started + earlier_seconds
    summary = _summary(index, splits, decoded, skipped, warnings, weights, rows, seconds, threshold, module)
    summary["world_size"] = trainer.world_size
    summary["effective_batch_size"] = config.batch_size * trainer.world_size  # per-device batch x devices x nodes
    summary["out_of_distribution"] = (
        {"method": ood.method, "threshold": ood.threshold, "keep": ood.keep, **ood.fitted} if ood is not None else
        f"not fitted: {len(decoded['val'].records)} validation images, fewer than the {MIN_VALIDATION_IMAGES} a "
        f"{100 * DEFAULT_KEEP:g} % limit needs; images are still checked for quality and scope")
    summary["calibration"] = fitted.calibration.to_dict() if fitted.calibration else "; ".join(fitted.notes)
    summary["operating_points"] = [p.to_dict() for p in fitted.operating_points]
    summary["earlier_sessions_seconds"] = round(earlier_seconds, 1)
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(output / ".cache", ignore_errors=True)
    return TrainResult(output, best_path, len(rows), float(best.best_model_score or float("nan")), seconds,
                       skipped, warnings, summary)


def refit_ood(checkpoint: str | Path, *, method: str = DEFAULT_METHOD, keep: float = DEFAULT_KEEP,
              seed: int = 0) -> tuple[Path, OodModel]:
    """Fit (or fit again) the out-of-distribution score of an existing checkpoint on its own training and validation
    splits, and store it in the checkpoint (``cadx fit-ood``). The data must be where the checkpoint recorded it."""
    predictor = Predictor(load_checkpoint(checkpoint))
    decoded = {}
    for split in ("train", "val"):
        index, records = select_records(predictor.checkpoint, None, split)
        decoded[split] = decode_records(index, records, predictor.pre, description=f"Decoding {split} images")
    ood = fit_predictor_ood(predictor, decoded["train"], decoded["val"], method=method, keep=keep, seed=seed)
    if ood is None:
        raise DatasetError(f"{predictor.checkpoint.path}: its validation split has {len(decoded['val'].records)} "
                           f"readable images, fewer than the {MIN_VALIDATION_IMAGES} a {100 * keep:g} % limit needs")
    update_meta(predictor.checkpoint.path, ood=ood.to_dict())
    return predictor.checkpoint.path, ood


def load_teachers(config: TrainConfig, index: DatasetIndex, pre: Preprocessing) -> list[LoadedCheckpoint]:
    """Checkpoints to distil from; each must predict this data's classes from images prepared the same way (they
    see the student's augmented batch)."""
    teachers = []
    for path in config.teachers:
        teacher = load_checkpoint(path)
        if teacher.classes != list(index.classes) or teacher.meta.multilabel != index.multilabel:
            raise DatasetError(f"{teacher.path}: this teacher predicts {teacher.classes}, the data has "
                               f"{list(index.classes)}{' (multi-label)' if index.multilabel else ''}")
        t = teacher.preprocessing
        if (t.image_size, t.channels) != (pre.image_size, pre.channels):
            raise DatasetError(f"{teacher.path}: this teacher takes {t.channels}-channel {t.image_size} px images, "
                               f"the student {pre.channels}-channel {pre.image_size} px; train the student at the "
                               "teacher's size")
        teachers.append(teacher)
    return teachers


def _meta(index: DatasetIndex, config: TrainConfig, pre: Preprocessing, splits: dict[str, list[Record]],
          module: ClassificationModule) -> CheckpointMeta:
    return new_meta(
        config.model, index.classes, pre, task="multilabel" if index.multilabel else "multiclass",
        options=config.model_options, params=count_parameters(module.model),
        split={name: tuple(r.key for r in recs) for name, recs in splits.items()},
        provenance=Provenance(source=str(index.source), kind=index.kind, patient_pattern=config.patient_pattern,
                              cadx_version=__version__, command=" ".join(["cadx", *sys.argv[1:]]),
                              data_hash=_data_hash(splits["train"])),
        config=config.to_dict())


def _data_hash(records: list[Record]) -> str:
    """sha256 over the training records' keys and targets: two runs with the same hash saw the same labelled set."""
    digest = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.key):
        digest.update(f"{r.key}\t{r.target}\n".encode())
    return "sha256:" + digest.hexdigest()


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
