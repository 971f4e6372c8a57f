from pathlib import Path

import numpy as np
import pytest

from cadx.data.sources import DatasetError, load_index, patient_from_name
from tests.conftest import make_class_folders


def test_class_folders_are_indexed_with_patients(class_folders: Path) -> None:
    index = load_index(class_folders)
    assert index.kind == "folder"
    assert index.classes == ["normal", "pneumonia"]
    assert len(index.records) == 60
    assert index.class_counts() == {"normal": 30, "pneumonia": 30}
    assert all(r.patient and r.patient.startswith("person") for r in index.records)
    assert not index.has_explicit_splits()
    assert index.load(index.records[0]).shape == (48, 48)


def test_split_folders_are_kept(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "d", 6, splits=("train", "test"))
    index = load_index(root)
    assert {r.split for r in index.records} == {"train", "test"}


@pytest.mark.parametrize("name, expected", [
    ("person1_bacteria_1.jpeg", "person1"), ("person1000_virus_1681.jpeg", "person1000"),
    ("IM-0115-0001.jpeg", "IM-0115"), ("NORMAL2-IM-0115-0001.jpeg", "NORMAL2-IM-0115"), ("scan.png", None)])
def test_kermany_patient_ids(name: str, expected: str | None) -> None:
    from cadx.data.sources import DEFAULT_PATIENT_PATTERN

    assert patient_from_name(name, DEFAULT_PATIENT_PATTERN) == expected


def test_csv_manifest_single_and_multi_label(tmp_path: Path, class_folders: Path) -> None:
    files = sorted(class_folders.rglob("*.png"))[::10][:6]
    single = tmp_path / "single.csv"
    single.write_text("path,label,split,patient_id\n" + "".join(
        f"{f},{f.parent.name},{'train' if i < 4 else 'test'},p{i}\n" for i, f in enumerate(files)))
    index = load_index(single)
    assert index.kind == "csv" and not index.multilabel
    assert index.records[0].patient == "p0" and index.records[5].split == "test"
    multi = tmp_path / "multi.csv"
    multi.write_text("path,label\n" + f"{files[0]},effusion|mass\n{files[1]},mass\n{files[2]},nodule\n")
    index = load_index(multi)
    assert index.multilabel and index.classes == ["effusion", "mass", "nodule"]
    assert index.records[0].target == (1, 1, 0)


def test_npz_medmnist(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "m.npz"
    np.savez(path, train_images=rng.integers(0, 255, (10, 28, 28), dtype=np.uint8),
             train_labels=np.array([[0], [1]] * 5), test_images=rng.integers(0, 255, (4, 28, 28), dtype=np.uint8),
             test_labels=np.array([[0], [1], [0], [1]]))
    index = load_index(path)
    assert index.kind == "npz" and index.classes == ["0", "1"]
    assert len(index.records) == 14 and index.load(index.records[3]).shape == (28, 28)


def test_bad_datasets_give_clear_errors(tmp_path: Path) -> None:
    one = make_class_folders(tmp_path / "one", 3, classes=("only",))
    with pytest.raises(DatasetError, match="at least 2"):
        load_index(one)
    empty = make_class_folders(tmp_path / "empty", 3)
    (empty / "third").mkdir()
    with pytest.raises(DatasetError, match="third"):
        load_index(empty)
    with pytest.raises(DatasetError, match="no such file"):
        load_index(tmp_path / "missing")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,class\nx.png,a\n")
    with pytest.raises(DatasetError, match="'path' and 'label'"):
        load_index(bad_csv)
