"""TrainConfig is declared once: recipes fill it, the command line is generated from it, and a configuration that
cannot train fails when it is built."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cadx.engine.config import TrainConfig, build_config, cli_fields, config_from_cli, list_recipes
from cadx.interfaces.cli import app
from tests.conftest import make_class_folders


def test_recipes_then_overrides() -> None:
    config = build_config("aernet-paper", epochs=3, lr=None)
    assert (config.model, config.label_smoothing, config.epochs, config.lr) == ("aernet", 0.1, 3, 1e-4)
    assert config.recipe == "aernet-paper" and config.recipe_version == 1
    assert set(list_recipes()) >= {"aernet-paper", "pneumonia-cnn", "small-cnn", "transfer-resnet50"}
    for recipe in list_recipes():  # every shipped recipe builds
        build_config(recipe)
    with pytest.raises(ValueError, match="unknown configuration key"):
        build_config(epoch=3)


@pytest.mark.parametrize(("settings", "message"), [
    ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"), ({"scheduler": "linear"}, "unknown scheduler"),
    ({"precision": "8-bit"}, "unknown precision"), ({"epochs": 0}, "epochs must be at least 1"),
    ({"label_smoothing": 1.0}, "label_smoothing"), ({"val_fraction": 0.0}, "val_fraction"),
    ({"distill_weight": 2.0}, "distillation"), ({"in_channels": 2}, "in_channels must be 1 or 3"),
    ({"model": "no_such_net"}, "no_such_net"), ({"model_options": {"atention": "cbam"}}, "valid options"),
])
def test_a_bad_setting_fails_when_built(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_config(**settings)


def test_every_setting_is_a_command_line_option() -> None:
    offered = {name for name, _ in cli_fields()}
    assert offered == {f.name for f in fields(TrainConfig)} - {"recipe_version"}
    help_text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--model-option", "--teacher", "--drop-duplicates", "--keep-duplicates", "--betas", "--window",
                 "--class-names", "--no-augment", "--step-size", "--recipe"):
        assert flag in help_text, flag


def test_command_line_texts_become_typed_values() -> None:
    config = config_from_cli({"model_options": ["attention=cbam", "placement=block"], "window": "40,400",
                              "class_names": "normal, pneumonia", "teachers": ["a.ckpt"], "betas": "0.8,0.99",
                              "recipe": "aernet-paper", "epochs": 2, "augment": None})
    assert config.model_options == {"attention": "cbam", "placement": "block"} and config.window == (40.0, 400.0)
    assert config.class_names == ["normal", "pneumonia"] and config.teachers == ["a.ckpt"]
    assert config.betas == (0.8, 0.99) and config.model == "aernet" and config.epochs == 2
    with pytest.raises(ValueError, match="CENTER,WIDTH"):
        config_from_cli({"window": "40"})


def test_the_cli_refuses_a_bad_optimiser_before_decoding_any_image(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "d", 200, size=64)  # decoding these would take a while
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["train", str(data), "-o", str(tmp_path / "r"), "--optimizer", "rmsprop"])
    assert result.exit_code == 2 and "unknown optimizer 'rmsprop'" in result.output
    assert not (tmp_path / "r").exists() and time.perf_counter() - started < 10
