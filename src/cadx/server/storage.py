"""Study artefacts on disk: ``<data_dir>/studies/<id>/<n>/`` holds each image's files.

Files are written into a staging folder under ``<data_dir>/tmp`` and renamed into place only after the database
commit (one atomic rename on the same file system), so a failed request leaves no half-written study behind.
Deletion is the mirror image: rename out of the way, commit, then remove.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

# name in URLs -> file name on disk
ARTEFACTS = {"thumbnail": "thumb.png", "image": "image.png", "overlay": "overlay.png", "features": "features.png"}
ORIGINAL_SUFFIX = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm", "bmp": ".bmp", "tiff": ".tif"}


class StudyStorage:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "studies"
        self.tmp = Path(data_dir) / "tmp"

    def prepare(self) -> None:
        """Create the folders and drop staging leftovers of a previous crash."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp.iterdir():
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)

    def staging(self) -> Path:
        self.tmp.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="study-", dir=self.tmp))

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def study_dir(self, study_id: int) -> Path:
        return self.root / str(int(study_id))

    def publish(self, staging: Path, study_id: int) -> Path:
        """Move a staged study into place (atomic rename); raises if the target already exists."""
        target = self.study_dir(study_id)
        if target.exists():
            raise FileExistsError(f"{target} already exists")
        os.replace(staging, target)
        return target

    def artefact(self, study_id: int, position: int, name: str) -> Path | None:
        filename = ARTEFACTS.get(name)
        if filename is None:
            return None
        path = self.study_dir(study_id) / str(int(position)) / filename
        return path if path.is_file() else None

    def original(self, study_id: int, position: int) -> Path | None:
        folder = self.study_dir(study_id) / str(int(position))
        return next(iter(sorted(folder.glob("original.*"))), None) if folder.is_dir() else None

    def set_aside(self, study_id: int) -> Path | None:
        """First half of a delete: the study folder moves to tmp (restorable until the commit)."""
        source = self.study_dir(study_id)
        if not source.exists():
            return None
        self.tmp.mkdir(parents=True, exist_ok=True)
        aside = self.tmp / f"deleted-{study_id}-{uuid.uuid4().hex}"
        os.replace(source, aside)
        return aside

    def restore(self, aside: Path | None, study_id: int) -> None:
        if aside is not None:
            os.replace(aside, self.study_dir(study_id))

    def purge(self, aside: Path | None) -> None:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
