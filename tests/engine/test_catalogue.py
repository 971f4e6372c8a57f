"""How names, folders and files resolve to a checkpoint: one preference order for the CLI and the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from cadx.engine.catalogue import (
    category_of,
    checkpoint_in,
    model_id,
    names_a_checkpoint,
    resolve_checkpoint,
    scan,
    sidecar_files,
)
from cadx.engine.meta import CheckpointError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_preference_order(tmp_path: Path) -> None:
    run = tmp_path / "run"
    touch(run / "last.ckpt")
    assert checkpoint_in(run) == run / "last.ckpt"
    touch(run / "best.ckpt")
    assert resolve_checkpoint(run) == run / "best.ckpt"
    touch(run / "model.ckpt")
    assert resolve_checkpoint(run) == run / "model.ckpt"  # an exported model is what its author chose to ship
    with pytest.raises(CheckpointError, match="no model.ckpt, best.ckpt, last.ckpt"):
        resolve_checkpoint(touch(tmp_path / "empty" / "x.txt").parent)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        resolve_checkpoint(tmp_path / "absent" / "model.ckpt")


def test_shipped_names_folders_and_loose_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    touch(models / "chest_xray_a" / "model.ckpt")
    touch(models / "brain_mri_b" / "best.ckpt")
    touch(models / "lung_ct_c.ckpt")
    touch(models / "chest_xray_a.ckpt")  # a folder of the same id wins
    touch(models / ".hidden" / "model.ckpt")
    touch(models / "in_progress" / "last.ckpt")  # a run still training: resolved when named, not offered
    found = scan(models)
    assert found == {"chest_xray_a": models / "chest_xray_a" / "model.ckpt",
                     "brain_mri_b": models / "brain_mri_b" / "best.ckpt", "lung_ct_c": models / "lung_ct_c.ckpt"}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CADX_MODELS_DIR", str(models))
    assert resolve_checkpoint("lung_ct_c") == models / "lung_ct_c.ckpt"
    assert resolve_checkpoint(models / "in_progress") == models / "in_progress" / "last.ckpt"
    assert resolve_checkpoint("chest_xray_a") == models / "chest_xray_a" / "model.ckpt"
    assert [model_id(p) for p in found.values()] == list(found)
    assert sidecar_files(models / "lung_ct_c.ckpt").metrics == models / "lung_ct_c.metrics.json"
    assert sidecar_files(found["chest_xray_a"]).card == models / "chest_xray_a" / "README.md"


def test_categories_and_what_names_a_checkpoint(tmp_path: Path) -> None:
    assert category_of(None, Path("m/lung_ct_x/model.ckpt")) == "Chest CT"
    assert category_of("Knee X-ray", Path("m/chest_xray/model.ckpt")) == "Knee X-ray"
    image = touch(tmp_path / "scan.png")
    assert not names_a_checkpoint(image) and not names_a_checkpoint(tmp_path)
    assert names_a_checkpoint(tmp_path / "nothing-here") and names_a_checkpoint(touch(tmp_path / "w.pt"))
