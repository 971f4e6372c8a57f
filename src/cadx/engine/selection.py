"""Which images a checkpoint is judged on: its own recorded split, or a given folder's split, with the data's class
order mapped onto the model's. Evaluation, calibration, export verification and training's own checks share it."""

from __future__ import annotations

from pathlib import Path

from cadx.data.sources import DatasetError, DatasetIndex, Record, load_index
from cadx.data.splits import apply_split_keys
from cadx.engine.checkpoint import LoadedCheckpoint

SPLITS = ("test", "val", "train", "all")


def select_records(ckpt: LoadedCheckpoint, data: str | Path | None, split: str) -> tuple[DatasetIndex, list[Record]]:
    """The run's own split when no data is given; otherwise the data's split folders/column, or all of it."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}' (use {', '.join(SPLITS)})")
    meta = ckpt.meta
    source = data if data is not None else meta.provenance.source
    if source is None:
        raise DatasetError(f"{ckpt.path}: the checkpoint does not record its training data; pass --data")
    index = load_index(source, patient_pattern=meta.provenance.patient_pattern)
    if index.kind == "npz" and len(index.classes) == len(ckpt.classes):
        index.classes = ckpt.classes  # MedMNIST stores indices, the checkpoint the names given at training
    unknown = [c for c in index.classes if c not in ckpt.classes]
    if unknown:
        raise DatasetError(f"{index.source}: class(es) {unknown} are not known to the model ({ckpt.classes})")
    remap = [ckpt.classes.index(c) for c in index.classes]
    if split == "all":
        records = index.records
    elif data is None:
        keys = meta.split.get(split, ())
        records = apply_split_keys(dict.fromkeys(keys, split), index, source=str(ckpt.path))[split]
    elif index.has_explicit_splits():
        records = [r for r in index.records if r.split == split]
        if not records:
            raise DatasetError(f"{index.source}: no '{split}' split in this data; use --split all to evaluate "
                               "every image")
    else:
        raise DatasetError(f"{index.source}: this data has no split folders; use --split all")
    records = [Record(r.key, _remap(r.target, remap), r.split, r.patient) for r in records]
    if not records:
        raise DatasetError(f"{index.source}: the '{split}' split is empty")
    return index, records


def _remap(target: int | tuple[int, ...], remap: list[int]) -> int | tuple[int, ...]:
    if isinstance(target, int):
        return remap[target]
    out = [0] * (max(remap) + 1)
    for i, v in enumerate(target):
        out[remap[i]] = v
    return tuple(out)
