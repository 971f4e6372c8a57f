"""Model scanning, categories, metrics clean-up, lazy loading and reuse; the schema matches the migrations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from cadx.engine.catalogue import category_of
from cadx.server.db.migrate import upgrade_database
from cadx.server.db.orm import Base
from cadx.server.db.session import make_engine
from cadx.server.model_store import ModelStore, read_metrics


def test_category_from_meta_or_folder_name() -> None:
    assert category_of(None, Path("models/chest_xray_densenet/model.ckpt")) == "Chest X-ray"
    assert category_of(None, Path("models/brain_mri_resnet.ckpt")) == "Brain MRI"
    assert category_of(None, Path("models/knee_net/best.ckpt")) == "Other"
    assert category_of("Knee X-ray", Path("models/knee_net/model.ckpt")) == "Knee X-ray"


def test_metrics_nan_becomes_none(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text('{"accuracy": 0.9, "auc": NaN, "split": "test", "n_images": 10, "ci": {"auc": [NaN, 1.0]}}')
    m = read_metrics(path)
    assert m == {"accuracy": 0.9, "auc": None, "split": "test", "n_images": 10, "ci": {"auc": [None, 1.0]}}
    json.dumps(m, allow_nan=False)
    path.write_text("{broken")
    assert read_metrics(path) is None and read_metrics(tmp_path / "absent.json") is None


def test_lazy_load_reuse_and_rescan(models_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(models_dir / "chest_xray_tiny", models / "chest_xray_tiny")
    store = ModelStore(models)
    assert [e.id for e in store.entries()] == ["chest_xray_tiny"]
    assert not store.is_loaded("chest_xray_tiny")
    first = store.load("chest_xray_tiny")
    assert store.is_loaded("chest_xray_tiny") and store.load("chest_xray_tiny") is first  # kept and reused
    shutil.copytree(models_dir / "brain_mri_tiny", models / "brain_mri_new")  # dropped in while running
    categories = {e.id: e.category for e in store.entries()}
    assert categories == {"chest_xray_tiny": "Chest X-ray", "brain_mri_new": "Brain MRI"}
    shutil.rmtree(models / "chest_xray_tiny")
    assert [e.id for e in store.entries()] == ["brain_mri_new"] and not store.is_loaded("chest_xray_tiny")
    shutil.copy(models_dir / "chest_xray_tiny" / "model.ckpt", models / "chest_xray_loose.ckpt")  # a bare file
    shutil.copy(models_dir / "chest_xray_tiny" / "metrics.json", models / "chest_xray_loose.metrics.json")
    loose = store.entry("chest_xray_loose")
    assert loose.category == "Chest X-ray" and loose.metrics is not None and loose.card is None


def test_migrations_match_the_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade_database(engine)
    upgrade_database(engine)  # idempotent on every start
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert {"users", "studies", "study_images", "image_findings", "audit_events", "alembic_version"} <= set(
            inspect(conn).get_table_names())
    engine.dispose()
