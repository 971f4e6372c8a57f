"""Seeded, stratified, patient-grouped train/val/test splits that can be written down and replayed.

Images of one patient, byte-identical copies and near-duplicates (thumbnail correlation, see ``near_duplicates``)
always land in the same split: otherwise the network is validated on near-copies of its training data and the
numbers lie. Splits the data itself gives are kept, and the copies they put in two splits are warned about.
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from cadx.data.near_duplicates import (
    DEFAULT_MIN_CORRELATION,
    NUMBERED_NEIGHBOUR_MIN_CORRELATION,
    connected_groups,
    find_near_duplicates,
)
from cadx.data.sources import DatasetError, DatasetIndex, Record

DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.2, "test": 0.1}


def content_groups(index: DatasetIndex, records: list[Record]) -> dict[str, list[int]]:
    """Map an md5 of each record's bytes to the positions of the records that share it."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        try:
            digest = hashlib.md5(index.raw_bytes(record), usedforsecurity=False).hexdigest()
        except OSError:
            continue  # unreadable files are reported by the decoder, not here
        groups[digest].append(i)
    return groups


def _group_ids(records: list[Record], duplicates: dict[str, list[int]],
               near: list[tuple[int, int, float]] = ()) -> list[str]:
    """One group id per record: its patient, merged with every record holding the same bytes and with every
    near-duplicate (transitively: a run of neighbouring slices becomes one group)."""
    links: list[tuple[int, int]] = []
    by_patient: dict[str, int] = {}
    for i, r in enumerate(records):
        if r.patient is not None:
            links.append((i, by_patient.setdefault(r.patient, i)))
    for members in duplicates.values():
        links.extend((members[0], other) for other in members[1:])
    links.extend((a, b) for a, b, _ in near)
    return [f"g{root}" for root in connected_groups(len(records), links)]


def _stratum(target: int | tuple[int, ...]) -> str:
    return str(target) if isinstance(target, int) else "|".join(map(str, target))


def grouped_stratified_split(records: list[Record], group_ids: list[str], fractions: dict[str, float],
                             seed: int) -> list[str]:
    """Assign whole groups to splits, class by class, so each split keeps the class mix."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(group_ids):
        groups[g].append(i)
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for g, members in sorted(groups.items()):
        majority = Counter(_stratum(records[i].target) for i in members).most_common(1)[0][0]
        by_stratum[majority].append(g)
    rng = random.Random(seed)
    names = list(fractions)
    assignment = [""] * len(records)
    for stratum in sorted(by_stratum):
        stratum_groups = by_stratum[stratum]
        rng.shuffle(stratum_groups)
        total = sum(len(groups[g]) for g in stratum_groups)
        done = 0
        for g in stratum_groups:
            # Place the group in the first split whose cumulative share is not yet filled.
            position = (done + len(groups[g]) / 2) / max(total, 1)
            cumulative = 0.0
            split = names[-1]
            for name in names:
                cumulative += fractions[name]
                if position < cumulative:
                    split = name
                    break
            for i in groups[g]:
                assignment[i] = split
            done += len(groups[g])
    return assignment


@dataclass
class GroupedRecords:
    """The records to split (byte-identical extras dropped when asked) and what ties them together."""

    records: list[Record]
    groups: list[str]  # one group id per record: patient, identical bytes, near-duplicates, numbered neighbours
    duplicates: dict[str, list[int]]
    near: list[tuple[int, int, float]]
    warnings: list[str]


def group_records(index: DatasetIndex, *, drop_duplicates: bool = False,
                  near_duplicates: float | None = DEFAULT_MIN_CORRELATION,
                  numbered_neighbours: float | None = NUMBERED_NEIGHBOUR_MIN_CORRELATION) -> GroupedRecords:
    """The grouping every split of cadx respects (``assign_splits``, ``assign_folds``)."""
    warnings: list[str] = []
    records = index.records
    duplicates = content_groups(index, records)
    if drop_duplicates:
        extra = {i for members in duplicates.values() for i in members[1:]}
        if extra:
            warnings.append(f"dropped {len(extra)} byte-identical duplicate image(s) before splitting")
            records = [r for i, r in enumerate(records) if i not in extra]
            duplicates = content_groups(index, records)
    near = [] if near_duplicates is None else find_near_duplicates(index, records, near_duplicates,
                                                                   numbered_neighbours=numbered_neighbours)
    return GroupedRecords(records, _group_ids(records, duplicates, near), duplicates, near, warnings)


def assign_splits(index: DatasetIndex, *, seed: int = 0, fractions: dict[str, float] | None = None,
                  val_fraction_of_train: float = 0.2, drop_duplicates: bool = False,
                  near_duplicates: float | None = DEFAULT_MIN_CORRELATION,
                  numbered_neighbours: float | None = NUMBERED_NEIGHBOUR_MIN_CORRELATION,
                  ) -> tuple[dict[str, list[Record]], list[str]]:
    """Return records per split and warnings; keeps explicit splits, carves what is missing.

    Byte-identical copies always share a split; ``drop_duplicates`` keeps only the first copy of each.
    ``near_duplicates`` is the thumbnail correlation from which two images count as near-duplicates and share a
    split too (``None``: off, only patients and identical bytes group); with it, consecutively numbered files whose
    thumbnails correlate at least ``numbered_neighbours`` group as neighbouring slices (``None``: that hint off).
    """
    grouped = group_records(index, drop_duplicates=drop_duplicates, near_duplicates=near_duplicates,
                            numbered_neighbours=numbered_neighbours)
    records, groups = grouped.records, grouped.groups
    if not index.has_explicit_splits():
        names = grouped_stratified_split(records, groups, fractions or DEFAULT_FRACTIONS, seed)
    else:
        names = [r.split or "train" for r in records]
        if "val" not in names:
            train_pos = [i for i, s in enumerate(names) if s == "train"]
            if not train_pos:
                raise DatasetError(f"{index.source}: no training images (a train split is required)")
            _carve_validation(records, groups, names, train_pos, val_fraction_of_train, seed)
    return _named_splits(records, names), grouped.warnings + _leak_warnings(grouped, names, near_duplicates)


def _carve_validation(records: list[Record], groups: list[str], names: list[str], positions: list[int],
                      val_fraction: float, seed: int) -> None:
    """Name the records at ``positions`` train or val (whole groups, class mix kept), in place."""
    sub = grouped_stratified_split([records[i] for i in positions], [groups[i] for i in positions],
                                   {"train": 1 - val_fraction, "val": val_fraction}, seed)
    for i, s in zip(positions, sub, strict=True):
        names[i] = s


def _named_splits(records: list[Record], names: list[str]) -> dict[str, list[Record]]:
    split_records: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
    for r, s in zip(records, names, strict=True):
        split_records[s].append(Record(key=r.key, target=r.target, split=s, patient=r.patient))
    return split_records


def _leak_warnings(grouped: GroupedRecords, names: list[str], near_duplicates: float | None) -> list[str]:
    warnings = _cross_split_duplicates(grouped.records, names, grouped.duplicates)
    if near_duplicates is not None:
        warnings.extend(_cross_split_near_duplicates(grouped.records, names, grouped.near, grouped.duplicates,
                                                     near_duplicates))
    return warnings


@dataclass
class FoldPlan:
    """K-fold cross-validation over groups: per fold, train/val from the other folds and the fold held out as
    ``test``; ``final``: every image outside the data's own test split as train/val, with that test split."""

    folds: list[dict[str, list[Record]]]
    final: dict[str, list[Record]]
    groups: int  # groups among the cross-validated images


def assign_folds(index: DatasetIndex, k: int, *, seed: int = 0, val_fraction: float = 0.2,
                 drop_duplicates: bool = False, near_duplicates: float | None = DEFAULT_MIN_CORRELATION,
                 numbered_neighbours: float | None = NUMBERED_NEIGHBOUR_MIN_CORRELATION,
                 ) -> tuple[FoldPlan, list[str]]:
    """Stratified group K-fold: whole groups per fold, each fold keeping the class mix. A test split the data
    itself gives stays out of every fold (the final model is tested there); the rest is cross-validated."""
    if k < 2:
        raise DatasetError(f"--folds must be at least 2 for cross-validation, got {k} (1: no cross-validation)")
    grouped = group_records(index, drop_duplicates=drop_duplicates, near_duplicates=near_duplicates,
                            numbered_neighbours=numbered_neighbours)
    records, groups = grouped.records, grouped.groups
    explicit = index.has_explicit_splits()
    pool = [i for i, r in enumerate(records) if not (explicit and r.split == "test")]
    pool_groups = {groups[i] for i in pool}
    if len(pool_groups) < k:
        raise DatasetError(f"{index.source}: {len(pool)} images in {len(pool_groups)} groups (patients, copies, "
                           f"near-duplicates) cannot fill {k} folds; use fewer folds")
    fold_of = grouped_stratified_split([records[i] for i in pool], [groups[i] for i in pool],
                                       {f"fold{j}": 1 / k for j in range(k)}, seed)
    folds = []
    for j in range(k):
        held = [i for i, f in zip(pool, fold_of, strict=True) if f == f"fold{j}"]
        if not held:
            raise DatasetError(f"{index.source}: fold {j + 1} of {k} would be empty; use fewer folds")
        rest = [i for i, f in zip(pool, fold_of, strict=True) if f != f"fold{j}"]
        names = ["test"] * len(records)  # the held-out fold; the rest is named train or val just below
        _carve_validation(records, groups, names, rest, val_fraction, seed)
        chosen = [*held, *rest]  # a test split the data gives stays out
        folds.append(_named_splits([records[i] for i in chosen], [names[i] for i in chosen]))
    names = ["test"] * len(records)  # the data's own test split stays test; the pool becomes train and val
    _carve_validation(records, groups, names, pool, val_fraction, seed)
    final = _named_splits(records, names)
    return FoldPlan(folds, final, len(pool_groups)), grouped.warnings + _leak_warnings(grouped, names, near_duplicates)


def split_leak_warnings(index: DatasetIndex, splits: dict[str, list[Record]], *,
                        near_duplicates: float | None = DEFAULT_MIN_CORRELATION) -> list[str]:
    """Warnings for byte-identical and near-duplicate images that a given split (a split file, keys replayed
    from a checkpoint) puts in two splits; ``assign_splits`` reports these itself."""
    records = [r for recs in splits.values() for r in recs]
    names = [name for name, recs in splits.items() for _ in recs]
    duplicates = content_groups(index, records)
    warnings = _cross_split_duplicates(records, names, duplicates)
    if near_duplicates is not None:
        near = find_near_duplicates(index, records, near_duplicates)
        warnings.extend(_cross_split_near_duplicates(records, names, near, duplicates, near_duplicates))
    return warnings


def _cross_split_duplicates(records: list[Record], names: list[str],
                            duplicates: dict[str, list[int]]) -> list[str]:
    found = []
    for members in duplicates.values():
        if len({names[i] for i in members}) > 1:
            found.append(", ".join(f"{records[i].key} ({names[i]})" for i in members))
    if not found:
        return []
    head = "; ".join(found[:5]) + (f"; ... and {len(found) - 5} more" if len(found) > 5 else "")
    return [f"{len(found)} byte-identical image(s) appear in more than one split: {head}"]


def _cross_split_near_duplicates(records: list[Record], names: list[str], near: list[tuple[int, int, float]],
                                 duplicates: dict[str, list[int]], min_correlation: float) -> list[str]:
    """One warning listing the near-duplicate pairs that straddle splits (identical bytes are reported above)."""
    same_bytes = {i: digest for digest, members in duplicates.items() if len(members) > 1 for i in members}
    crossing = sorted(((a, b, r) for a, b, r in near if names[a] != names[b]
                       and (a not in same_bytes or same_bytes.get(a) != same_bytes.get(b))),
                      key=lambda p: -p[2])
    if not crossing:
        return []
    test_hit = {i for a, b, _ in crossing for i in (a, b) if names[i] == "test"}  # its partner is not in test
    n_test = sum(1 for s in names if s == "test")
    listed = "; ".join(f"{records[a].key} ({names[a]}) ~ {records[b].key} ({names[b]}) r={r:.3f}"
                       for a, b, r in crossing[:10])
    more = f"; ... and {len(crossing) - 10} more" if len(crossing) > 10 else ""
    share = f"; {len(test_hit)} of {n_test} test image(s) have one in train or val" if n_test else ""
    return [f"{len(crossing)} near-duplicate pair(s) (thumbnail correlation >= {min_correlation}, or >= "
            f"{NUMBERED_NEIGHBOUR_MIN_CORRELATION} between consecutively numbered files) appear in more "
            f"than one split{share}: {listed}{more}"]


def write_split_file(path: Path, splits: dict[str, list[Record]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "split"])
        for name, recs in splits.items():
            for r in recs:
                writer.writerow([r.key, name])


def read_split_file(path: Path, index: DatasetIndex) -> dict[str, list[Record]]:
    """Replay a split written by ``write_split_file`` on the same dataset."""
    with Path(path).open(newline="") as fh:
        wanted = {row["key"]: row["split"] for row in csv.DictReader(fh)}
    return apply_split_keys(wanted, index, source=str(path))


def apply_split_keys(wanted: dict[str, str], index: DatasetIndex, *, source: str) -> dict[str, list[Record]]:
    by_key = {r.key: r for r in index.records}
    missing = [k for k in wanted if k not in by_key]
    if missing:
        raise DatasetError(f"{source}: {len(missing)} file(s) of the split are not in {index.source}, "
                           f"e.g. {missing[:3]}")
    splits: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
    for key, name in wanted.items():
        r = by_key[key]
        splits[name].append(Record(key=r.key, target=r.target, split=name, patient=r.patient))
    return splits
