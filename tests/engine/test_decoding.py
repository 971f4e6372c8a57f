"""Decoding files for the network: in worker processes or not, the same prepared images in the same order, and a
bad file comes back with its reason instead of stopping the others."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from cadx.data.transforms import Preprocessing
from cadx.engine.decoding import ImageDecoder, auto_workers, decoded_batches
from tests.conftest import synthetic_image


def _files(tmp_path: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        path = tmp_path / f"img{i:02d}.png"
        Image.fromarray(synthetic_image(i % 2, rng, 40 + i)).save(path)
        files.append(path)
    return files


def test_workers_decode_the_same_images_in_the_same_order(tmp_path: Path) -> None:
    files = _files(tmp_path, 11)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    files.insert(4, tmp_path / "broken.png")
    files.append(tmp_path / "gone.png")  # listed, then deleted before it is read
    decoder = ImageDecoder(Preprocessing(32, 1))
    serial = [d for batch in decoded_batches(files, decoder, 5) for d in batch]
    parallel_batches = list(decoded_batches(files, decoder, 5, workers=2))
    parallel = [d for batch in parallel_batches for d in batch]
    assert [len(b) for b in parallel_batches] == [5, 5, 3]
    assert [d.file for d in serial] == [d.file for d in parallel] == list(map(str, files))
    for a, b in zip(serial, parallel, strict=True):
        assert a.error == b.error and a.problem == b.problem
        assert (a.image is None and b.image is None) or np.array_equal(a.image, b.image)
    assert serial[4].image is None and serial[4].error
    assert serial[-1].error == "file not found (moved or deleted?)"
    assert serial[0].image.shape == (1, 32, 32) and serial[0].image.dtype == np.uint8
    assert pickle.loads(pickle.dumps(decoder)) == decoder  # reaches workers under any start method


def test_auto_workers_leave_a_core_for_the_network(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert auto_workers(10, 32) == 0  # one batch: starting a process costs more than it saves
    assert auto_workers(100, 32) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert auto_workers(100, 32) == 4
