"""decode_records: each image decoded and prepared once, unreadable ones dropped with their reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cadx.data import cache
from cadx.data.cache import decode_records
from cadx.data.sources import load_index
from cadx.data.transforms import Preprocessing, prepare_image
from tests.conftest import make_class_folders


def test_aligned_prepared_images_and_skipped_files(tmp_path: Path) -> None:
    index = load_index(make_class_folders(tmp_path / "d", 5, size=40))
    broken = index.root / index.records[3].key
    broken.write_bytes(b"not an image")
    pre = Preprocessing(24, 3)
    decoded = decode_records(index, index.records, pre)
    assert decoded.images.shape == (9, 3, 24, 24) and decoded.images.dtype == np.uint8
    assert [r.key for r in decoded.records] == [r.key for r in index.records if r.key != index.records[3].key]
    assert len(decoded.skipped) == 1 and decoded.skipped[0][0].endswith(index.records[3].key)
    first = decoded.records[0]
    assert np.array_equal(decoded.images[0], prepare_image(index.load(first), pre))


def test_large_sets_go_to_a_memory_mapped_file(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    index = load_index(make_class_folders(tmp_path / "d", 3, size=40))
    monkeypatch.setattr(cache, "IN_MEMORY_LIMIT_BYTES", 10)
    decoded = decode_records(index, index.records, Preprocessing(16, 1), cache_dir=tmp_path / "c")
    assert isinstance(decoded.images, np.memmap) and (tmp_path / "c" / "images.npy").exists()
    assert decoded.images.shape == (6, 1, 16, 16)
