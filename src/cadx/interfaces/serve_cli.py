"""``cadx serve`` (the web system) and ``cadx users add`` (accounts)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cadx.interfaces.console import console, user_errors

users_app = typer.Typer(help="Server accounts (admin and clinician roles).", no_args_is_help=True)


def _settings(**overrides: Any) -> Any:
    from cadx.server.settings import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _announce_when_up(server: Any, url: str) -> None:
    """Print the URL once uvicorn has bound its socket (not before: `make run` users click it)."""
    while not server.started and not server.should_exit:
        time.sleep(0.1)
    if server.started:
        print(f"cadx is running at {url}", flush=True)


@user_errors
def serve_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    db: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: SQLite in the data dir; "
                                                "env CADX_DB_URL).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Stored studies, default database, secret key "
                                                       "(default ./cadx-data; env CADX_DATA_DIR).")] = None,
    models: Annotated[Path | None, typer.Option(help="Folder of <name>/model.ckpt (+ metrics.json) "
                                                     "(default ./models; env CADX_MODELS_DIR).")] = None,
    max_upload_mb: Annotated[float | None, typer.Option(help="Per-file upload limit in MB (default 50).")] = None,
    backend: Annotated[str | None, typer.Option(help="Backend of the out-of-distribution and flip-check passes: "
                                                     "torch (default), torch-bf16, onnx, onnx-int8 or auto; the "
                                                     "probabilities and heatmap always come from torch fp32 "
                                                     "(env CADX_BACKEND).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Server processes, each with its own copy of the models; "
                                                     "more than one needs PostgreSQL/MySQL, or SQLite on a local "
                                                     "disk of this host (WAL mode).")] = 1,
) -> None:
    """Run the web page and REST API (/docs); migrates the database and creates the first admin if needed."""
    import uvicorn

    from cadx.server.app import create_app

    settings = _settings(db_url=db, data_dir=data_dir, models_dir=models, max_upload_mb=max_upload_mb,
                         backend=backend)
    if workers > 1 and settings.torch_threads is None:  # N processes of all-core torch would fight for the cores
        settings = settings.model_copy(update={"torch_threads": max(1, (os.cpu_count() or 1) // workers)})
    web = create_app(settings, log_first_admin=False)  # migrates, creates the first admin, repairs storage: once
    if web.state.first_admin_password:
        print(f"first admin: admin / {web.state.first_admin_password} (shown once)", flush=True)
    n_models = len(web.state.ctx.store.entries())
    console.print(f"{n_models} model(s) in {settings.models_dir}; data in {settings.data_dir}", highlight=False)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    if workers > 1:
        web.state.ctx.engine.dispose()
        _serve_processes(settings, host, port, workers, url)
        return
    server = uvicorn.Server(uvicorn.Config(web, host=host, port=port, log_level="warning", proxy_headers=False))
    threading.Thread(target=_announce_when_up, args=(server, url), daemon=True).start()
    server.run()
    if not server.started:
        raise typer.Exit(1)


def _serve_processes(settings: Any, host: str, port: int, workers: int, url: str) -> None:
    """uvicorn's process supervisor on one listening socket: each worker builds its app from CADX_* variables
    (``cadx.server.app.app_from_env``), which carry this command's settings (``Settings.to_env``)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    os.environ.update(settings.to_env())
    config = uvicorn.Config("cadx.server.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                            log_level="warning", proxy_headers=False)
    try:
        sock = config.bind_socket()
    except OSError as exc:
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    print(f"cadx is running at {url} ({workers} worker processes)", flush=True)
    Multiprocess(config, sockets=[sock]).run()


@users_app.command("add")
@user_errors
def add_user_command(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, '.', '_', '-').")],
    role: Annotated[str, typer.Option(help="admin or clinician.")] = "clinician",
    password: Annotated[str | None, typer.Option(help="Password (prompted, hidden, when omitted).")] = None,
    db: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: the server's).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data dir holding the default SQLite database.")] = None,
) -> None:
    """Create a user of the web system (the database is migrated first)."""
    from cadx.server.bootstrap import add_user
    from cadx.server.db.migrate import upgrade_database
    from cadx.server.db.session import make_engine, make_session_factory
    from cadx.server.security import validate_new_user

    settings = _settings(db_url=db, data_dir=data_dir)
    validate_new_user(name, role)  # before asking for a password
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    engine = make_engine(settings.database_url)
    try:
        upgrade_database(engine)
        user = add_user(make_session_factory(engine), name, password, role)
    finally:
        engine.dispose()
    console.print(f"[bold green]created[/] user {user.username} ({user.role})", highlight=False)


@users_app.command("unlock")
@user_errors
def unlock_user_command(
    name: Annotated[str | None, typer.Argument(help="Account to unlock.")] = None,
    address: Annotated[str | None, typer.Option(help="Client address to unlock.")] = None,
    db: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: the server's).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data dir holding the default SQLite database.")] = None,
) -> None:
    """Clear the failed logins and lock of an account and/or a client address (audited)."""
    from cadx.server.db.migrate import upgrade_database
    from cadx.server.db.repository import Repository
    from cadx.server.db.session import make_engine, make_session_factory
    from cadx.server.services.auth import unlock

    if not name and not address:
        raise typer.BadParameter("give an account name, --address or both")
    settings = _settings(db_url=db, data_dir=data_dir)
    engine = make_engine(settings.database_url)
    try:
        upgrade_database(engine)
        with make_session_factory(engine)() as session:
            repo = Repository(session)
            count = unlock(repo, name, address)
            repo.audit(None, "unlock", None, f"cli: user {name!r} address {address!r}")
            repo.commit()
    finally:
        engine.dispose()
    console.print(f"[bold green]unlocked[/] {count} key(s)", highlight=False)
