"""Receiving an upload: the client's file names made safe to display, each file copied with its size cap into an
owner-only staging folder, then ``create_study`` — all under the storage's writer lock."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import IO

from cadx.server.context import AppContext
from cadx.server.services.studies import StudyRequest, Upload, create_study
from cadx.server.storage import FILE_MODE, private_dir

# Printable ASCII without spaces: a key is an opaque token the client chose (a UUID, typically).
IDEMPOTENCY_KEY = r"^[!-~]{1,128}$"
# C0/C1 controls, and the bidirectional controls (embeddings, overrides, isolates, marks) that make
# "gpj.exe\u202e" read as another name.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def display_text(raw: str, limit: int = 64) -> str:
    """A client's string as displayed: without control or bidirectional-control characters, trimmed."""
    return _UNSAFE.sub("", raw).strip()[:limit]


def clean_name(raw: str | None, position: int) -> str:
    """The client's file name, for display only (files are stored by position, never by name): kept whole, a
    ``/`` included, without control characters, at most 255 characters."""
    return display_text(raw or "", 255) or f"file-{position + 1}"


def receive_and_create(ctx: AppContext, user_id: int, request: StudyRequest,
                       sources: list[tuple[str | None, IO[bytes]]]) -> tuple[int, bool]:
    """Stage the files and create the study; the staging folder is gone afterwards whatever happens (a crash
    leaves it to the next start's sweep)."""
    with ctx.storage.writing():
        staging = ctx.storage.staging()
        try:
            folder = private_dir(staging / "uploads")
            uploads = [receive(source, clean_name(name, n), folder / f"{n}.upload", ctx.settings.max_upload_bytes)
                       for n, (name, source) in enumerate(sources)]
            return create_study(ctx, user_id, request, uploads, staging)
        finally:
            ctx.storage.discard(staging)


def receive(source: IO[bytes], name: str, dest: Path, limit: int) -> Upload:
    """Copy with a size cap into an owner-only file; an oversized file is refused without keeping any of it."""
    size = 0
    source.seek(0)
    with os.fdopen(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "wb") as out:
        while chunk := source.read(1 << 20):
            size += len(chunk)
            if size > limit:
                break
            out.write(chunk)
    if size > limit:
        dest.unlink()
        return Upload(name, None, f"larger than the {limit / 2**20:g} MB upload limit", 413)
    if size == 0:
        dest.unlink()
        return Upload(name, None, "empty file", 422)
    return Upload(name, dest)
