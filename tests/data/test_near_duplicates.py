"""Near-duplicates (shifted, noised, re-encoded, re-lit copies) share a split; distinct images are not grouped."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cadx.data.near_duplicates import (
    connected_groups,
    find_near_duplicates,
    near_duplicate_pairs,
    numbered_neighbour_pairs,
    thumbnail_vector,
)
from cadx.data.sources import load_index
from cadx.data.splits import assign_splits, read_split_file, split_leak_warnings, write_split_file

SIZE = 256


def scan(rng: np.random.Generator) -> np.ndarray:
    """A smooth synthetic 'slice': one body-shaped glow and eight bright or dark blobs at random places."""
    y, x = np.mgrid[:SIZE, :SIZE] / SIZE
    img = 40 + 100 * np.exp(-((x - .5) / .35) ** 2 - ((y - .5) / .28) ** 2)
    for _ in range(8):
        cy, cx, s, a = rng.uniform(.25, .75), rng.uniform(.2, .8), rng.uniform(.08, .15), rng.uniform(-120, 120)
        img = img + a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
    return img.clip(0, 255).astype(np.uint8)


def translate(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    padded = np.pad(a, 3, mode="edge")
    return padded[3 - dy:3 - dy + a.shape[0], 3 - dx:3 - dx + a.shape[1]]


def near_copies(a: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    jpeg = io.BytesIO()
    Image.fromarray(a).save(jpeg, "JPEG", quality=70)
    return {
        "shift1": translate(a, 1, 0), "shift3": translate(a, 0, -3), "shift22": translate(a, 2, 2),
        "noise": (a + rng.normal(0, 5, a.shape)).clip(0, 255).astype(np.uint8),
        "jpeg": np.asarray(Image.open(jpeg)),
        "bright": (a * 1.05).clip(0, 255).astype(np.uint8), "dark": (a * 0.95).astype(np.uint8),
    }


def write_families(root: Path, n_families: int, seed: int = 0) -> dict[str, int]:
    """root/<class>/f<k>_<variant>.png: each family an original and its near-copies; returns key -> family."""
    rng = np.random.default_rng(seed)
    family = {}
    for k in range(n_families):
        folder = root / ("a" if k % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        base = scan(rng)
        for name, image in {"orig": base, **near_copies(base, rng)}.items():
            Image.fromarray(image).save(folder / f"f{k}_{name}.png")
            family[f"{folder.name}/f{k}_{name}.png"] = k
    return family


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("nd") / "flat"
    return root, write_families(root, 12)


def split_of(splits: dict) -> dict[str, str]:
    return {r.key: name for name, recs in splits.items() for r in recs}


def test_near_copies_are_found_and_distinct_images_are_not(families: tuple[Path, dict[str, int]]) -> None:
    root, family = families
    index = load_index(root, patient_pattern=None)
    pairs = find_near_duplicates(index, index.records)
    keys = [r.key for r in index.records]
    assert all(family[keys[a]] == family[keys[b]] for a, b, _ in pairs)  # distinct images never joined
    roots = connected_groups(len(keys), pairs)
    by_family: dict[int, set[int]] = {}
    for key, root_id in zip(keys, roots, strict=True):
        by_family.setdefault(family[key], set()).add(root_id)
    assert all(len(ids) == 1 for ids in by_family.values())  # every copy joined to its original
    assert len({r for ids in by_family.values() for r in ids}) == 12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_near_copies_never_cross_splits(families: tuple[Path, dict[str, int]], seed: int) -> None:
    root, family = families
    splits, warnings = assign_splits(load_index(root, patient_pattern=None), seed=seed)
    where: dict[int, set[str]] = {}
    for key, name in split_of(splits).items():
        where.setdefault(family[key], set()).add(name)
    assert all(len(names) == 1 for names in where.values()), where
    assert not warnings


def test_off_switch_and_threshold(families: tuple[Path, dict[str, int]]) -> None:
    root, family = families
    index = load_index(root, patient_pattern=None)
    straddling = 0
    for seed in range(3):
        splits, _ = assign_splits(index, seed=seed, near_duplicates=None)
        where: dict[int, set[str]] = {}
        for key, name in split_of(splits).items():
            where.setdefault(family[key], set()).add(name)
        straddling += sum(len(names) > 1 for names in where.values())
    assert straddling > 0  # without grouping, the copies do scatter: the check above is not vacuous
    strict = find_near_duplicates(index, index.records, min_correlation=0.9995)
    loose = find_near_duplicates(index, index.records)
    assert 0 < len(strict) < len(loose)
    assert all(r >= 0.9995 for _, _, r in strict)


def test_cross_split_near_duplicates_are_listed(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "d" / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(scan(rng)).save(tmp_path / "d" / split / cls / f"{cls}{i}.png")
    original = np.asarray(Image.open(tmp_path / "d" / "train" / "a" / "a0.png"))
    Image.fromarray(original).save(tmp_path / "d" / "test" / "a" / "reencoded.jpg", quality=75)
    Image.fromarray(translate(original, 2, 0)).save(tmp_path / "d" / "test" / "b" / "shifted.png")
    (tmp_path / "d" / "test" / "a" / "same_bytes.png").write_bytes((tmp_path / "d/train/b/b1.png").read_bytes())
    index = load_index(tmp_path / "d", patient_pattern=None)
    splits, warnings = assign_splits(index, seed=0)
    assert len(splits["test"]) == 11  # given splits are kept, only warned about
    byte_warning, near_warning = warnings
    assert "same_bytes.png" in byte_warning and "same_bytes.png" not in near_warning
    assert near_warning.startswith("2 near-duplicate pair(s)")
    assert "2 of 11 test image(s) have one in train or val" in near_warning
    for key in ("test/a/reencoded.jpg (test) ~ train/a/a0.png", "test/b/shifted.png (test) ~ train/a/a0.png"):
        assert key in near_warning
    assert str(tmp_path) not in near_warning  # dataset-relative keys only
    _, quiet = assign_splits(index, seed=0, near_duplicates=None)
    assert quiet == [byte_warning]
    write_split_file(tmp_path / "split.csv", splits)  # a replayed split file is checked the same way
    replayed = split_leak_warnings(index, read_split_file(tmp_path / "split.csv", index))
    assert [w.split(":")[0] for w in replayed] == [w.split(":")[0] for w in warnings]
    assert "test/a/reencoded.jpg (test)" in replayed[1] and "same_bytes.png" in replayed[0]


def test_pairs_are_exact_and_unreadable_files_are_ignored(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(2100, 8)).astype(np.float32)  # more rows than one block
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    corr = vectors @ vectors.T
    expected = {(i, j) for i, j in zip(*np.nonzero(np.triu(corr >= 0.99, 1)), strict=True)}
    assert {(a, b) for a, b, _ in near_duplicate_pairs(vectors, 0.99)} == expected and expected
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.fromarray(scan(rng)).save(tmp_path / cls / "ok.png")
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    splits, _ = assign_splits(load_index(tmp_path, patient_pattern=None), seed=0)
    assert sum(map(len, splits.values())) == 3  # the decoder reports the broken file later, with its reason


def write_runs(root: Path, n_runs: int, length: int, seed: int = 0) -> dict[str, int]:
    """root/<class>/case (<n>).png: runs of slices morphing from one scan into another, numbered consecutively
    across runs (as a CT set numbers its slices); returns key -> run."""
    rng = np.random.default_rng(seed)
    run_of, number = {}, 0
    for k in range(n_runs):
        folder = root / ("a" if k % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        start, end = scan(rng).astype(float), scan(rng).astype(float)
        for t in np.linspace(0, 0.6, length):
            number += 1
            key = f"{folder.name}/case ({number}).png"
            Image.fromarray(((1 - t) * start + t * end).astype(np.uint8)).save(root / key)
            run_of[key] = k
    return run_of


def test_consecutively_numbered_similar_slices_share_a_split(tmp_path: Path) -> None:
    root = tmp_path / "ct"
    run_of = write_runs(root, 10, 6)
    index = load_index(root)
    keys = [r.key for r in index.records]
    strict = find_near_duplicates(index, index.records, numbered_neighbours=None)
    hinted = find_near_duplicates(index, index.records)
    linked = {(keys[a], keys[b]) for a, b, _ in hinted}
    assert len(hinted) > len(strict)  # the hint joins slices the 0.985 threshold alone does not
    assert all(run_of[a] == run_of[b] for a, b in linked)  # never two runs (their end and start differ)
    for seed in range(3):
        where = split_of(assign_splits(index, seed=seed)[0])
        for run in set(run_of.values()):
            assert len({where[k] for k, r in run_of.items() if r == run}) == 1, (seed, run)


def test_numbers_are_a_hint_only(tmp_path: Path) -> None:
    """Consecutive numbers on unrelated images join nothing; a number inside the name is not a slice number."""
    rng = np.random.default_rng(3)
    vectors = np.stack([thumbnail_vector(scan(rng)) for _ in range(4)])
    keys = ["a/case (1).png", "a/case (2).png", "a/f1_orig.png", "a/f2_orig.png"]
    assert numbered_neighbour_pairs(keys, vectors, min_correlation=0.99) == []
    same = np.stack([vectors[0]] * 4)
    pairs = {(a, b) for a, b, _ in numbered_neighbour_pairs(keys, same)}
    assert pairs == {(0, 1)}  # f1_orig / f2_orig: the number is not trailing
