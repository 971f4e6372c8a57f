"""A real uvicorn server in a background thread, and Debian's Chromium driven by Playwright (never downloaded)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import FastAPI

from tests.server.dbservers import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
KERMANY_PNEUMONIA = Path(__file__).resolve().parents[3] / "shared/datasets/chest_xray_kermany/test/PNEUMONIA"


def chromium_path() -> str | None:
    found = CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")
    return str(found) if found else None


def real_xray() -> Path | None:
    """A Kermany test image with pneumonia when the shared datasets are present."""
    if KERMANY_PNEUMONIA.is_dir():
        return next(iter(sorted(KERMANY_PNEUMONIA.glob("*.jpeg"))), None)
    return None


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
