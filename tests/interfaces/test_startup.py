"""Start-up: each command imports only what it needs. Help and option parsing load no torch, Lightning or MONAI, and
a prediction on an ONNX copy loads neither Lightning nor MONAI. Each check runs in a fresh interpreter, since the
test process has imported everything already. (How fast: benchmarks/speed/startup.py, not a test.)"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cadx.data.transforms import Preprocessing
from cadx.engine.checkpoint import META_KEY
from cadx.engine.hardware import cpu_kind
from cadx.engine.meta import new_meta
from cadx.engine.onnx_export import export_onnx
from cadx.engine.onnx_runtime import Verification, verification_path
from cadx.interfaces.cli import app
from cadx.models import create_model

HEAVY = ("torch", "lightning", "pytorch_lightning", "monai", "sklearn", "scipy")
REPORT = f"import json, sys; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"


def _loaded_after(code: str) -> list[str]:
    """The heavy top-level packages loaded once ``code`` has run in a fresh interpreter (the last line it prints)."""
    done = subprocess.run([sys.executable, "-c", f"{code}\n{REPORT}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_of_every_command_loads_no_torch_lightning_or_monai() -> None:
    code = """
from typer.main import get_command
from typer.testing import CliRunner
from cadx.interfaces.cli import app
runner = CliRunner()
names = [["--help"]] + [[name, "--help"] for name in get_command(app).commands] + [["users", "add", "--help"]]
for args in names:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
"""
    assert _loaded_after(code) == []


def _write(verification: Verification, model_file: Path) -> None:
    verification_path(model_file).write_text(json.dumps(verification.to_dict()))


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/demo/: an untrained simple_cnn checkpoint (no training, so no Lightning) with a verified ONNX copy."""
    folder = tmp_path_factory.mktemp("models") / "demo"
    folder.mkdir()
    torch.manual_seed(0)
    model = create_model("simple_cnn", in_channels=1, num_classes=2).eval()
    pre = Preprocessing(32, 1)
    meta = new_meta("simple_cnn", ["normal", "pneumonia"], pre, title="Demo model")
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, META_KEY: meta.to_dict()},
               folder / "model.ckpt")
    export_onnx(model, pre, folder / "model.onnx")
    _write(Verification(backend="onnx", images=10, accuracy_torch=0.9, accuracy=0.9, auc_torch=0.95, auc=0.95,
                        max_probability_difference=0.0, assessed_agreement=1.0, passed=True, cpu=cpu_kind()),
           folder / "model.onnx")
    return folder


def test_an_onnx_prediction_loads_neither_lightning_nor_monai(onnx_model: Path, tmp_path: Path) -> None:
    image, out = tmp_path / "grey.png", tmp_path / "out.json"
    Image.fromarray(np.random.default_rng(0).integers(40, 200, (64, 64), dtype=np.uint8)).save(image)
    code = f"""
from typer.testing import CliRunner
from cadx.interfaces.cli import app
result = CliRunner().invoke(app, ["predict", {str(onnx_model)!r}, {str(image)!r}, "--backend", "onnx",
                                  "--output", {str(out)!r}])
assert result.exit_code == 0, result.output
"""
    loaded = _loaded_after(code)
    assert json.loads(out.read_text())[0]["backend"] == "onnx"
    assert "lightning" not in loaded and "pytorch_lightning" not in loaded and "monai" not in loaded
    assert "sklearn" not in loaded and "scipy" not in loaded  # fitting needs them, predicting does not


def test_models_lists_the_installed_models_and_their_verification(onnx_model: Path) -> None:
    result = CliRunner().invoke(app, ["models", "--models-dir", str(onnx_model.parent)], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    assert "resnet18" in result.output and "11.18" in result.output  # the architectures, counted on meta
    row = next(line for line in result.output.splitlines() if "demo" in line and "Demo model" in line)
    assert "simple_cnn" in row and "normal, pneumonia" in row
    copy = next(line for line in result.output.splitlines() if "demo" in line and "onnx" in line)
    assert "1.000" in copy and cpu_kind() in copy and "yes" in copy


def test_models_loads_no_torch_and_reads_what_torch_reads(onnx_model: Path, tmp_path: Path) -> None:
    """The listing peeks at the checkpoint without torch; the metadata is the same as torch's reading of it, its
    stored arrays included, and an unreadable file is a row that says so."""
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.ckpt").write_bytes(b"PK not a zip")
    code = f"""
from typer.testing import CliRunner
from cadx.interfaces.cli import app
for folder in ({str(onnx_model.parent)!r}, {str(tmp_path)!r}):
    result = CliRunner().invoke(app, ["models", "--models-dir", folder], env={{"COLUMNS": "240"}})
    assert result.exit_code == 0, result.output
assert "unreadable" in result.output and "broken" in result.output, result.output
"""
    assert _loaded_after(code) == []
    from cadx.engine.checkpoint import read_meta
    from cadx.engine.checkpoint_peek import peek_meta

    checkpoint = onnx_model / "model.ckpt"
    assert peek_meta(checkpoint) == read_meta(checkpoint)
    data = torch.load(checkpoint, weights_only=False)
    stored = {"means": torch.randn(2, 5), "half": torch.randn(3, 4).half()[:, 1:], "bf16": torch.randn(6).bfloat16()}
    data[META_KEY]["ood"] = {"method": "mahalanobis", "arrays": stored}
    torch.save(data, tmp_path / "with_arrays.ckpt")
    peeked = peek_meta(tmp_path / "with_arrays.ckpt").ood["arrays"]
    for name, tensor in stored.items():  # a strided view and bf16 too
        assert np.array_equal(np.asarray(peeked[name]), tensor.float().numpy()), name


def test_models_says_a_copy_verified_on_another_cpu_is_not_used(onnx_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "model.ckpt").write_bytes((onnx_model / "model.ckpt").read_bytes())
    (folder / "model.int8.onnx").write_bytes((onnx_model / "model.onnx").read_bytes())
    record = Verification.from_dict(json.loads(verification_path(onnx_model / "model.onnx").read_text()))
    _write(replace(record, backend="onnx-int8", cpu="SOME_OTHER_CPU"), folder / "model.int8.onnx")
    result = CliRunner().invoke(app, ["models", "--models-dir", str(tmp_path)], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    copy = next(line for line in result.output.splitlines() if "onnx-int8" in line)
    assert "SOME_OTHER_CPU" in copy and f"no: this CPU is {cpu_kind()}" in copy
