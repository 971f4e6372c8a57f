"""One settings object, read from ``CADX_*`` environment variables (``cadx serve`` options override them)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the server needs to know; built once and handed to :func:`create_app`."""

    model_config = SettingsConfigDict(env_prefix="CADX_", extra="ignore")

    db_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite file in data_dir")
    data_dir: Path = Field(Path("cadx-data"), description="Stored studies, default database and secret key")
    models_dir: Path = Field(Path("models"), description="Folders holding model.ckpt (+ metrics.json)")
    max_upload_mb: float = Field(50.0, gt=0, description="Largest accepted file, per file")
    max_pixels: int = Field(50_000_000, gt=0, description="Largest decoded image (decompression bombs)")
    max_files: int = Field(32, gt=0, description="Files per study")
    max_request_mb: float = Field(200.0, gt=0, description="Largest request body, counted as it arrives (before "
                                                          "anything is spooled past it)")
    max_request_pixels: int = Field(200_000_000, gt=0, description="Decoded pixels per request, all files together")
    max_request_seconds: float = Field(120.0, gt=0, description="Analysis time per request; files after it are "
                                                               "refused")
    secret_key: str | None = Field(None, description="Signs cookies and tokens; default: kept in data_dir")
    token_minutes: int = Field(15, gt=0, description="Bearer token lifetime (API clients log in again after it)")
    session_minutes: int = Field(12 * 60, gt=0, description="Login cookie lifetime")
    secure_cookies: bool = Field(False, validation_alias=AliasChoices("secure_cookies", "CADX_SECURE_COOKIES",
                                                                      "CADX_COOKIE_SECURE"),
                                 description="Behind TLS: session cookie Secure, and HSTS on every response")
    login_max_failures: int = Field(10, ge=1, le=10, description="Failed logins (per account or address) that lock")
    login_lock_minutes: int = Field(15, gt=0, description="How long a lock lasts; failures older than this decay")
    forwarded_allow_ips: str | None = Field(None, description="Proxy addresses whose X-Forwarded-For is trusted")
    feature_maps: int = Field(8, ge=0, description="Feature maps drawn per image (0: none)")
    device: str = Field("cpu", description="torch device for inference: cpu, cuda or auto")
    torch_threads: int | None = Field(None, gt=0, description="torch threads of this server process (default: "
                                                              "torch's, all cores; `cadx serve --workers N` gives "
                                                              "each process its share)")
    backend: Literal["torch", "torch-bf16", "onnx", "onnx-int8", "auto"] = Field(
        "torch", description="Backend of the out-of-distribution and flip-check passes: torch, torch-bf16, onnx, "
                             "onnx-int8 or auto (the fastest verified); the probabilities shown and the heatmap "
                             "always come from torch fp32")

    def to_env(self) -> dict[str, str]:
        """The ``CADX_*`` variables that rebuild these settings in another process (each worker of ``cadx serve
        --workers N``): every field that is set, paths made absolute, and the database URL as resolved here."""
        prefix = self.model_config["env_prefix"]
        env = {f"{prefix}{name.upper()}": str(value.resolve() if isinstance(value, Path) else value)
               for name, value in self.model_dump(exclude_none=True).items()}
        env[f"{prefix}DB_URL"] = self.database_url
        return env

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'cadx.db').resolve()}"

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def signing_key(self) -> str:
        """The configured key, else one generated on first start and kept (owner-only) in the data dir."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key
