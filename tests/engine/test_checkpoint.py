"""The checkpoint file: read, load, update and export through one typed metadata object."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cadx.data.transforms import Preprocessing
from cadx.engine.checkpoint import (
    META_KEY,
    CheckpointError,
    export_checkpoint,
    load_checkpoint,
    read_meta,
    update_meta,
)
from cadx.engine.meta import new_meta
from cadx.models import create_model


def write_checkpoint(path: Path, meta_dict: dict | None = None) -> Path:
    torch.manual_seed(0)
    model = create_model("simple_cnn", in_channels=1, num_classes=2)
    meta = new_meta("simple_cnn", ["normal", "pneumonia"], Preprocessing(32, 1))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, META_KEY: meta_dict or meta.to_dict(), "optimizer_states": [{}]}, path)
    return path


def test_load_update_and_export(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "best.ckpt")
    loaded = load_checkpoint(tmp_path)  # a folder: its checkpoint
    assert loaded.path == path and not loaded.model.training and loaded.classes == ["normal", "pneumonia"]
    updated = update_meta(path, decision_threshold=0.25, threshold_source="validation (Youden's J)")
    assert read_meta(path) == updated and updated.decision_threshold == 0.25
    out = export_checkpoint(path, tmp_path / "ship" / "model.ckpt", category="Chest X-ray")
    assert read_meta(out).category == "Chest X-ray" and read_meta(out).decision_threshold == 0.25
    stored = torch.load(out, map_location="cpu", weights_only=True)  # weights and plain metadata only
    assert set(stored) == {"state_dict", META_KEY}
    assert all(v.dtype == torch.float16 for v in stored["state_dict"].values() if v.is_floating_point())
    x = torch.rand(2, 1, 32, 32)
    assert np.allclose(load_checkpoint(out).model(x).detach(), loaded.model(x).detach(), atol=5e-3)


def test_unusable_files_name_the_reason(tmp_path: Path) -> None:
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_meta(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(CheckpointError, match="not a cadx checkpoint"):
        read_meta(tmp_path / "plain.ckpt")
    newer = new_meta("simple_cnn", ["a", "b"], Preprocessing(32, 1)).to_dict() | {"format": 99}
    with pytest.raises(CheckpointError, match="newer.ckpt: checkpoint format 99"):
        read_meta(write_checkpoint(tmp_path / "newer.ckpt", newer))
    wrong = new_meta("simple_cnn", ["a", "b", "c"], Preprocessing(32, 1)).to_dict()
    with pytest.raises(CheckpointError, match="weights do not fit simple_cnn"):
        load_checkpoint(write_checkpoint(tmp_path / "wrong.ckpt", wrong))
