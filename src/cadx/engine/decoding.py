"""Files to prepared model inputs, the way one checkpoint was trained, optionally in DataLoader worker processes so
that decoding the next batch overlaps the network's work on this one (``cadx predict`` over large folders).

:class:`ImageDecoder` is small and picklable (the preprocessing, the model's category and the frame), so worker
processes get it whatever the start method; it is the one place a file becomes a prepared image plus the reason, if
any, it cannot be judged before the network runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadx.data.quality import quality_problem
from cadx.data.readers import UnreadableImageError, read_header_if_dicom, read_image
from cadx.data.transforms import Preprocessing, prepare_image
from cadx.engine.scope import SCOPES, scope_warning

MAX_AUTO_WORKERS = 4  # decoding one batch of 224 px chest X-rays takes a fraction of its forward pass


@dataclass(frozen=True)
class DecodedFile:
    """One file ready for the network: ``image`` (C, S, S) uint8 and ``problem`` (why it cannot be judged, found
    before the network), or ``error`` when it could not be read."""

    file: str
    image: np.ndarray | None
    problem: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class ImageDecoder:
    pre: Preprocessing
    category: str | None = None  # the model's category; scope checks apply where ``cadx.engine.scope`` knows it
    frame: int | None = None

    def read(self, path: str | Path, max_pixels: int | None = None) -> np.ndarray:
        """Decode a file the way this model was trained (DICOM window included; multi-frame: middle or ``frame``);
        ``max_pixels`` refuses larger images before they are decoded (``UnreadableImageError``)."""
        extra = {} if max_pixels is None else {"max_pixels": max_pixels}
        return read_image(path, window=self.pre.window, frame=self.frame, **extra)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return prepare_image(image, self.pre)

    def input_problem(self, path: str | Path | None, image: np.ndarray,
                      header: Mapping[str, object] | None = None) -> str | None:
        """Why this decoded image cannot be judged before the network runs, else None: its DICOM header or colour
        against the model's category (``cadx.engine.scope``; the more specific reason, so it comes first), then its
        quality (``cadx.data.quality``). A caller that read the header already passes it."""
        if self.category in SCOPES:  # no file I/O when there is nothing to check
            if header is None:
                header = read_header_if_dicom(path) if path is not None else {}
            problem = scope_warning(self.category, header, image)
            if problem:
                return problem
        return quality_problem(image, self.pre.image_size)

    def __call__(self, file: str | Path) -> DecodedFile:
        """Never raises for a bad file: it comes back with its reason, and the others still run."""
        try:
            image = self.read(file)
        except UnreadableImageError as exc:
            return DecodedFile(str(file), None, error=exc.reason)
        except FileNotFoundError:
            return DecodedFile(str(file), None, error="file not found (moved or deleted?)")
        except OSError as exc:
            return DecodedFile(str(file), None, error=f"cannot read: {exc.strerror or exc}")
        return DecodedFile(str(file), self.prepare(image), self.input_problem(file, image))


def auto_workers(files: int, batch_size: int) -> int:
    """Decode workers for ``files`` images: none for a single batch (starting a process costs more than it saves),
    else all but one core (the network keeps one), at most ``MAX_AUTO_WORKERS``."""
    if files <= batch_size:
        return 0
    return max(1, min(MAX_AUTO_WORKERS, (os.cpu_count() or 1) - 1))


class _Files:
    """A map-style dataset of file paths, decoded by ``decoder`` (picklable for worker processes)."""

    def __init__(self, files: Sequence[str | Path], decoder: ImageDecoder) -> None:
        self.files, self.decoder = list(files), decoder

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> DecodedFile:
        return self.decoder(self.files[index])


def _as_list(items: list[DecodedFile]) -> list[DecodedFile]:
    return items


def decoded_batches(files: Sequence[str | Path], decoder: ImageDecoder, batch_size: int,
                    workers: int = 0) -> Iterator[list[DecodedFile]]:
    """``files`` decoded, in order, ``batch_size`` at a time; ``workers`` > 0: in that many DataLoader worker
    processes, a few batches ahead of the consumer."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if workers <= 0:
        for start in range(0, len(files), batch_size):
            yield [decoder(f) for f in files[start:start + batch_size]]
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(_Files(files, decoder), batch_size=batch_size, num_workers=workers, collate_fn=_as_list,
                        prefetch_factor=4)
    yield from loader
