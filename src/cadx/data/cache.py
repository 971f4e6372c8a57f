"""Decode and resize every image once per run, so later epochs are bound by the network, not by decoders.

The cache is one uint8 array (N, C, S, S): in memory, or a memory-mapped file when it would not fit.
Unreadable files are dropped here, each with its reason, and reported by the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadx.data.image_readers import UnreadableImageError
from cadx.data.progress import progress_bar
from cadx.data.sources import DatasetIndex, Record
from cadx.data.transforms import Preprocessing, prepare_image

log = logging.getLogger(__name__)
IN_MEMORY_LIMIT_BYTES = 6 * 1024**3


@dataclass
class DecodedImages:
    records: list[Record]
    images: np.ndarray  # uint8 (N, C, S, S), aligned with records
    skipped: list[tuple[str, str]]  # (file, reason)
    seconds: float
    problems: list[str | None] | None = None  # the caller's ``check`` of each decoded image, aligned with records


def decode_records(index: DatasetIndex, records: list[Record], pre: Preprocessing, *,
                   description: str = "Decoding images", cache_dir: Path | None = None, workers: int = 2,
                   check: Callable[[np.ndarray, Path | None], str | None] | None = None) -> DecodedImages:
    """Read, channel-match, stretch and resize each record once; ``check`` sees each decoded image (at its own
    size, before it is prepared) and its file, and what it returns is kept in ``problems``."""
    start = time.perf_counter()
    shape = (len(records), pre.channels, pre.image_size, pre.image_size)
    nbytes = int(np.prod(shape))
    if cache_dir is not None and nbytes > IN_MEMORY_LIMIT_BYTES:
        cache_dir.mkdir(parents=True, exist_ok=True)
        images = np.lib.format.open_memmap(cache_dir / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
    else:
        images = np.empty(shape, dtype=np.uint8)
    ok = np.zeros(len(records), dtype=bool)
    skipped: list[tuple[str, str]] = []
    problems: list[str | None] = [None] * len(records)

    def work(i: int) -> None:
        record = records[i]
        try:
            image = index.load(record, window=pre.window)
            if check is not None:
                problems[i] = check(image, index.path_of(record))
            images[i] = prepare_image(image, pre)
            ok[i] = True
        except UnreadableImageError as exc:
            skipped.append((str(exc.path), exc.reason))
        except (OSError, ValueError) as exc:
            skipped.append((str(index.path_of(record) or record.key), str(exc)))

    with progress_bar() as progress, ThreadPoolExecutor(max_workers=workers) as pool:
        task = progress.add_task(description, total=len(records))
        for _ in pool.map(work, range(len(records))):
            progress.advance(task)
    for file, reason in skipped:
        log.warning("skipped %s: %s", file, reason)
    keep = np.flatnonzero(ok)
    if len(keep) < len(records):
        images = images[keep]
    return DecodedImages([records[i] for i in keep], images, sorted(skipped), time.perf_counter() - start,
                         [problems[i] for i in keep] if check is not None else None)
