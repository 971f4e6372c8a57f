"""Study artefacts on disk: ``<data_dir>/studies/<id>/<n>/`` holds each image's files, owner-only (folders 0700,
files 0600: they hold patient data).

Writing a study (``create_study``): files go to a staging folder under ``<data_dir>/tmp`` and are fsynced; the
database row gets its id (flushed, not committed); the staged folder is renamed to ``studies/<id>`` and the parent
fsynced; then the transaction commits. A crash before the rename leaves only staging (swept at start); a crash
between the rename and the commit leaves a folder without a row (swept at start); after the commit both are there.
Deleting is the mirror image: the folder moves to ``tmp/deleted-<id>-*``, the row is deleted and committed, the
folder is removed; a crash in between is repaired at start (the folder goes back if the row is still there).

Every writer holds a shared lock on ``<data_dir>/storage.lock`` for its whole write (staging to commit) and the
sweep holds it exclusively, so a starting worker never mistakes another worker's study in the making for an orphan.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

# name in URLs -> file name on disk
ARTEFACTS = {"thumbnail": "thumb.png", "image": "image.png", "overlay": "overlay.png", "features": "features.png"}
ORIGINAL_SUFFIX = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm", "bmp": ".bmp", "tiff": ".tif"}
DIR_MODE = 0o700
FILE_MODE = 0o600
_DELETED = re.compile(r"^deleted-(\d+)-[0-9a-f]+$")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) owner-only; an existing folder is made owner-only too."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new owner-only staging file (``publish`` fsyncs the staged tree before its rename)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (and ``root``), so a rename cannot outlive the data."""
    for folder, _dirs, names in os.walk(root):
        for name in names:
            fsync_dir(Path(folder) / name)
        fsync_dir(Path(folder))


def fsync_dir(path: Path) -> None:
    """fsync one folder (or file): opened read-only, which both allow."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StudyStorage:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "studies"
        self.tmp = self.data_dir / "tmp"
        self.lock_path = self.data_dir / "storage.lock"

    @contextmanager
    def _lock(self, exclusive: bool) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock (also when the process dies)

    def writing(self) -> AbstractContextManager[None]:
        """Held by a writer from its staging folder until its commit or rollback."""
        return self._lock(exclusive=False)

    def prepare(self, known_studies: Callable[[list[int]], set[int]] | None = None) -> None:
        """Create the folders owner-only and repair what a crash left: staging leftovers are dropped, a study
        folder without a row is removed, a study set aside for deletion whose row survived is put back.
        ``known_studies`` says which ids have a row (without it, only staging is cleaned)."""
        private_dir(self.data_dir)
        private_dir(self.root)
        private_dir(self.tmp)
        with self._lock(exclusive=True):
            pending = {}
            for stale in self.tmp.iterdir():
                match = _DELETED.match(stale.name)
                if match and stale.is_dir() and known_studies is not None:
                    pending[int(match.group(1))] = stale
                    continue
                self._remove(stale)
            if known_studies is None:
                return
            folders = {int(p.name): p for p in self.root.iterdir() if p.name.isdigit()}
            alive = known_studies(sorted(set(folders) | set(pending)))
            for study_id, aside in pending.items():
                if study_id in alive and study_id not in folders:
                    log.warning("study %s: its deletion did not commit; files restored", study_id)
                    os.replace(aside, self.study_dir(study_id))
                else:
                    self._remove(aside)
            for study_id, folder in folders.items():
                if study_id not in alive:
                    log.warning("study folder %s has no database row (interrupted upload); removed", study_id)
                    self._remove(folder)
            for other in self.root.iterdir():
                if not other.name.isdigit():
                    self._remove(other)

    @staticmethod
    def _remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def staging(self) -> Path:
        private_dir(self.tmp)
        return Path(tempfile.mkdtemp(prefix="study-", dir=self.tmp))  # mkdtemp: 0700

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def study_dir(self, study_id: int) -> Path:
        return self.root / str(int(study_id))

    def publish(self, staging: Path, study_id: int) -> Path:
        """Move a staged, fsynced study into place (atomic rename). Called with ``writing()`` held and the row's id
        not yet committed: an existing folder of that id can only be an orphan of a crash, and is replaced."""
        target = self.study_dir(study_id)
        fsync_tree(staging)
        if target.exists():
            log.warning("study folder %s existed without a committed row; replaced", study_id)
            self._remove(target)
        os.replace(staging, target)
        fsync_dir(self.root)
        return target

    def unpublish(self, study_id: int) -> None:
        """Undo ``publish`` when the commit failed."""
        self._remove(self.study_dir(study_id))

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
        private_dir(self.tmp)
        aside = self.tmp / f"deleted-{study_id}-{uuid.uuid4().hex}"
        os.replace(source, aside)
        fsync_dir(self.tmp)
        return aside

    def restore(self, aside: Path | None, study_id: int) -> None:
        if aside is not None:
            os.replace(aside, self.study_dir(study_id))

    def purge(self, aside: Path | None) -> None:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
