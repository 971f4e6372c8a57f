"""The data layer's two user-facing errors, in a module of their own so that the command line can catch them before
(or without) importing numpy and Pillow."""

from __future__ import annotations

from pathlib import Path


class UnreadableImageError(ValueError):
    """A file that cannot be turned into an image; ``str(e) == f"{path}: {reason}"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # keep picklable across DataLoader workers
        return (type(self), (self.path, self.reason))


class DatasetError(ValueError):
    """A dataset that cannot be used as given; the message says why and where."""
