"""Index a labelled dataset: class folders, a CSV manifest or a MedMNIST ``.npz``.

Every source becomes the same ``DatasetIndex`` (records with a key, a target, an optional split and an
optional patient id), so splitting, caching and training never need to know where images came from.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cadx.data.errors import DatasetError

if TYPE_CHECKING:  # numpy is imported by the .npz reader: the command line's options need this module, not numpy
    import numpy as np

SPLIT_NAMES = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
# Kermany names carry the patient: person1_bacteria_1.jpeg, IM-0115-0001.jpeg, NORMAL2-IM-0115-0001.jpeg.
DEFAULT_PATIENT_PATTERN = r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)"


@dataclass(frozen=True)
class Record:
    key: str  # path relative to the source root, or "<split>/<index>" inside an .npz
    target: int | tuple[int, ...]  # class index, or a multi-hot tuple for multi-label tasks
    split: str | None = None
    patient: str | None = None


@dataclass
class DatasetIndex:
    source: Path
    kind: str  # "folder" | "csv" | "npz"
    classes: list[str]
    records: list[Record]
    multilabel: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    _arrays: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def root(self) -> Path:
        return self.source if self.kind == "folder" else self.source.parent

    def path_of(self, record: Record) -> Path | None:
        return None if self.kind == "npz" else self.root / record.key

    def load(self, record: Record, *, window: tuple[float, float] | None = None) -> np.ndarray:
        """Decode one record to a display-ready uint8 array (H, W) or (H, W, 3)."""
        if self.kind == "npz":
            import numpy as np

            split, idx = record.key.split("/")
            return np.ascontiguousarray(self._arrays[split][int(idx)])
        from cadx.data.readers import read_image  # pydicom is imported with the first image, not with the index

        return read_image(self.root / record.key, window=window)

    def raw_bytes(self, record: Record) -> bytes:
        """The stored bytes of a record, used to find byte-identical duplicates."""
        if self.kind == "npz":
            return self.load(record).tobytes()
        return (self.root / record.key).read_bytes()

    def has_explicit_splits(self) -> bool:
        return any(r.split is not None for r in self.records)

    def class_counts(self, records: Iterable[Record] | None = None) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for r in self.records if records is None else records:
            for c in _target_classes(r.target):
                counts[self.classes[c]] += 1
        return counts


def _target_classes(target: int | tuple[int, ...]) -> list[int]:
    if isinstance(target, int):
        return [target]
    return [i for i, v in enumerate(target) if v]


def patient_from_name(name: str, pattern: str | None) -> str | None:
    if not pattern:
        return None
    match = re.search(pattern, Path(name).name)
    if not match:
        return None
    return match.group(1) if match.groups() else match.group(0)


def load_index(source: str | Path, *, patient_pattern: str | None = DEFAULT_PATIENT_PATTERN) -> DatasetIndex:
    """Index a folder, a ``.csv`` manifest or a ``.npz`` file."""
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_dir():
        index = _index_folder(path, patient_pattern)
    elif path.suffix.lower() == ".csv":
        index = _index_csv(path, patient_pattern)
    elif path.suffix.lower() == ".npz":
        index = _index_npz(path)
    else:
        raise DatasetError(f"{path}: expected a folder of class folders, a .csv manifest or a .npz file")
    _check_classes(index)
    return index


def _check_classes(index: DatasetIndex) -> None:
    if len(index.classes) < 2:
        raise DatasetError(f"{index.source}: found {len(index.classes)} class(es) {index.classes}; "
                           "a classifier needs at least 2")
    empty = [name for name, n in index.class_counts().items() if n == 0]
    if empty:
        raise DatasetError(f"{index.source}: class(es) with no images: {', '.join(empty)}")


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _index_folder(root: Path, patient_pattern: str | None) -> DatasetIndex:
    subdirs = _class_dirs(root)
    split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in subdirs if d.name.lower() in SPLIT_ALIASES}
    layout: list[tuple[str | None, Path]]
    if split_dirs:
        if "train" not in split_dirs and "test" not in split_dirs:
            raise DatasetError(f"{root}: split folders {sorted(split_dirs)} need a train or test folder")
        layout = [(split, d) for split, d in sorted(split_dirs.items())]
    else:
        layout = [(None, root)]
    classes = sorted({c.name for _, d in layout for c in _class_dirs(d)})
    if not classes:
        raise DatasetError(f"{root}: no class folders found (expected root/<class>/* or root/train/<class>/*)")
    records = []
    for split, folder in layout:
        for class_dir in _class_dirs(folder):
            for file in _visible_files(class_dir):
                records.append(Record(key=file.relative_to(root).as_posix(), target=classes.index(class_dir.name),
                                      split=split, patient=patient_from_name(file.name, patient_pattern)))
    return DatasetIndex(source=root, kind="folder", classes=classes, records=records)


def _index_csv(manifest: Path, patient_pattern: str | None) -> DatasetIndex:
    with manifest.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "path" not in columns or "label" not in columns:
            raise DatasetError(f"{manifest}: the manifest needs 'path' and 'label' columns, found {columns}")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    labels_per_row = [[lab.strip() for lab in row["label"].split("|") if lab.strip()] for row in rows]
    multilabel = any(len(labels) != 1 for labels in labels_per_row)
    classes = sorted({lab for labels in labels_per_row for lab in labels})
    records = []
    for line, (row, labels) in enumerate(zip(rows, labels_per_row, strict=True), start=2):
        if not row["path"]:
            raise DatasetError(f"{manifest}:{line}: empty path")
        split = row.get("split") or None
        if split is not None:
            if split.lower() not in SPLIT_ALIASES:
                raise DatasetError(f"{manifest}:{line}: unknown split '{split}' (use train, val or test)")
            split = SPLIT_ALIASES[split.lower()]
        target = tuple(int(c in labels) for c in classes) if multilabel else classes.index(labels[0])
        patient = row.get("patient_id") or patient_from_name(row["path"], patient_pattern)
        records.append(Record(key=row["path"], target=target, split=split, patient=patient))
    return DatasetIndex(source=manifest, kind="csv", classes=classes, records=records, multilabel=multilabel)


def _index_npz(path: Path) -> DatasetIndex:
    import numpy as np

    try:
        data = np.load(path)
        arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # a corrupt archive is a user error, not a crash
        raise DatasetError(f"{path}: cannot read .npz ({exc})") from exc
    splits = [s for s in SPLIT_NAMES if f"{s}_images" in arrays and f"{s}_labels" in arrays]
    if not splits:
        raise DatasetError(f"{path}: expected MedMNIST keys like train_images/train_labels, found {sorted(arrays)}")
    images, records = {}, []
    multilabel = any(arrays[f"{s}_labels"].ndim == 2 and arrays[f"{s}_labels"].shape[1] > 1 for s in splits)
    n_classes = 0
    for split in splits:
        imgs, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if imgs.dtype != np.uint8:
            imgs = _to_uint8(imgs)
        images[split] = imgs
        labels = labels.reshape(len(labels), -1) if labels.ndim > 1 else labels[:, None]
        n_classes = max(n_classes, labels.shape[1] if multilabel else int(labels.max()) + 1)
        for i, lab in enumerate(labels):
            target = tuple(int(v) for v in lab) if multilabel else int(lab[0])
            records.append(Record(key=f"{split}/{i}", target=target, split=split))
    classes = [str(i) for i in range(n_classes)]
    return DatasetIndex(source=path, kind="npz", classes=classes, records=records, multilabel=multilabel,
                        _arrays=images)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    import numpy as np

    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    return ((arr - lo) / max(hi - lo, 1e-8) * 255).round().astype(np.uint8)
