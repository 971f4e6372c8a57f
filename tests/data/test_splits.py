from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from cadx.data.sources import DatasetError, load_index
from cadx.data.splits import assign_folds, assign_splits, read_split_file, write_split_file
from tests.conftest import make_class_folders
from tests.data.test_near_duplicates import write_families


@pytest.fixture
def grouped(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "d", 100)


def test_default_split_is_70_20_10_stratified(grouped: Path) -> None:
    splits, _ = assign_splits(load_index(grouped), seed=1)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sum(sizes.values()) == 200
    assert abs(sizes["train"] - 140) <= 6 and abs(sizes["val"] - 40) <= 6 and abs(sizes["test"] - 20) <= 6
    for recs in splits.values():
        counts = Counter(r.target for r in recs)
        assert abs(counts[0] - counts[1]) <= 4  # each split keeps the 50/50 class mix


def test_a_patient_never_spans_two_splits(grouped: Path) -> None:
    splits, _ = assign_splits(load_index(grouped), seed=3)
    seen: dict[str, str] = {}
    for name, recs in splits.items():
        for r in recs:
            assert seen.setdefault(r.patient, name) == name


def test_same_seed_same_split_and_other_seed_differs(grouped: Path) -> None:
    index = load_index(grouped)
    a, _ = assign_splits(index, seed=7)
    b, _ = assign_splits(index, seed=7)
    c, _ = assign_splits(index, seed=8)
    keys = lambda s: {n: sorted(r.key for r in v) for n, v in s.items()}  # noqa: E731
    assert keys(a) == keys(b)
    assert keys(a) != keys(c)


def test_val_is_carved_from_train_by_patient(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "d", 40, splits=("train", "test"))
    splits, _ = assign_splits(load_index(root), seed=0, val_fraction_of_train=0.25)
    assert len(splits["test"]) == 80
    assert 14 <= len(splits["val"]) <= 26
    train_patients = {r.patient for r in splits["train"]}
    assert not train_patients & {r.patient for r in splits["val"]}


def test_duplicates_are_kept_together_or_warned(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "d", 20, splits=("train", "test"))
    src = next((root / "train" / "normal").glob("*.png"))
    Image.open(src).save(root / "test" / "normal" / "copy_of_train.png")
    (root / "test" / "normal" / "copy_of_train.png").write_bytes(src.read_bytes())
    _, warnings = assign_splits(load_index(root), seed=0)
    assert warnings and "copy_of_train.png" in warnings[0]
    flat = make_class_folders(tmp_path / "flat", 30)
    src = next((flat / "normal").glob("*.png"))
    (flat / "normal" / "dup.png").write_bytes(src.read_bytes())
    splits, warnings = assign_splits(load_index(flat, patient_pattern=None), seed=0)
    assert not warnings  # duplicates grouped, so they land in the same split
    where = {r.key: n for n, v in splits.items() for r in v}
    assert where["normal/dup.png"] == where[f"normal/{src.name}"]


def test_split_file_round_trip(grouped: Path, tmp_path: Path) -> None:
    index = load_index(grouped)
    splits, _ = assign_splits(index, seed=2)
    write_split_file(tmp_path / "split.csv", splits)
    again = read_split_file(tmp_path / "split.csv", index)
    assert {n: [r.key for r in v] for n, v in again.items()} == {n: [r.key for r in v] for n, v in splits.items()}


def test_drop_duplicates_keeps_one_copy(tmp_path: Path) -> None:
    flat = make_class_folders(tmp_path / "flat", 20)
    src = next((flat / "normal").glob("*.png"))
    (flat / "normal" / "dup.png").write_bytes(src.read_bytes())
    splits, warnings = assign_splits(load_index(flat), seed=0, drop_duplicates=True)
    assert sum(len(v) for v in splits.values()) == 40
    assert "dropped 1" in warnings[0]


def test_folds_hold_every_image_out_once_and_never_split_a_group(tmp_path: Path) -> None:
    family = write_families(tmp_path / "d", 24)  # originals and their shifted / noised / re-encoded copies
    index = load_index(tmp_path / "d")
    plan, _ = assign_folds(index, 4, seed=0)
    held = Counter(r.key for fold in plan.folds for r in fold["test"])
    assert set(held) == {r.key for r in index.records} and set(held.values()) == {1}
    for fold in plan.folds:
        assert sum(map(len, fold.values())) == len(index.records) and fold["val"] and fold["train"]
        where: dict[int, str] = {}
        for name, recs in fold.items():
            for r in recs:  # a family of near-copies is in one place in every fold
                assert where.setdefault(family[r.key], name) == name
        counts = Counter(r.target for r in fold["test"])
        assert abs(counts[0] - counts[1]) <= 8  # whole families of 8, each fold keeps the class mix
    assert {r.key for r in plan.final["train"] + plan.final["val"]} == {r.key for r in index.records}
    assert not plan.final["test"]


def test_a_given_test_split_stays_out_of_every_fold(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "d", 20, splits=("train", "test"))
    index = load_index(root)
    plan, _ = assign_folds(index, 3, seed=0)
    given = {r.key for r in index.records if r.split == "test"}
    assert {r.key for r in plan.final["test"]} == given
    for fold in plan.folds:
        assert not given & {r.key for recs in fold.values() for r in recs}
    with pytest.raises(DatasetError, match="cannot fill 50 folds"):
        assign_folds(index, 50, seed=0)
