"""Training configuration, declared once: the dataclass's fields are the settings, their defaults, their
validation and (through ``cli`` metadata) the ``cadx train`` options. Recipe files fill it; flags override it.
A configuration that cannot train fails when it is built, before any image is decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cadx.data.sources import DEFAULT_PATIENT_PATTERN

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("cosine", "step", "plateau", "none")
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16", "16-mixed", "16", "bf16-true", "16-true", "64-true",
              "64", "transformer-engine")  # what Lightning's Trainer accepts
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true")  # data-parallel only: each rank a copy


@dataclass(frozen=True)
class CliOption:
    """How a field appears on ``cadx train``: its flag, help, the type typed on the command line and, for values
    that are not a plain number or word, how the text becomes the field's value."""

    help: str
    type: type = str
    flag: str | None = None  # default: the field name with '-' for '_'
    negative: str | None = None  # booleans: the flag that turns it off (default --no-<flag>)
    repeat: bool = False  # a flag given several times (a list of texts)
    parse: Callable[[Any], Any] | None = None


def _cli(help: str, type: type = str, **kwargs: Any) -> dict[str, CliOption]:  # noqa: A002 - mirrors typer
    return {"cli": CliOption(help, type, **kwargs)}


def _two_numbers(text: str, usage: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"expected {usage}, got '{text}'") from None
    return a, b


def parse_window(text: str) -> tuple[float, float]:
    return _two_numbers(text, "--window CENTER,WIDTH (e.g. 40,400)")


def parse_pair(text: str) -> tuple[float, float]:
    return _two_numbers(text, "two numbers A,B (e.g. 0.9,0.999)")


def parse_options(items: list[str]) -> dict[str, Any]:
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--model-option expects KEY=VALUE, got '{item}'")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


def parse_names(text: str) -> list[str]:
    return [c.strip() for c in str(text).split(",") if c.strip()]


@dataclass
class TrainConfig:
    model: str = field(default="simple_cnn", metadata=_cli("Architecture (see `cadx models`)."))
    model_options: dict[str, Any] = field(default_factory=dict, metadata=_cli(
        "Architecture option KEY=VALUE, repeatable (e.g. attention=cbam).", flag="model-option", repeat=True,
        parse=parse_options))
    in_channels: int | None = field(default=None, metadata=_cli("1 (grey) or 3; default: the model's.", int))
    image_size: int | None = field(default=None, metadata=_cli("Square input size in pixels; default: the "
                                                                  "model's.", int))
    weights: str | None = field(default=None, metadata=_cli(
        "Local pretrained weights: a torchvision/timm state dict (ImageNet normalisation) or a cadx checkpoint "
        "(its own normalisation)."))
    freeze_backbone: bool = field(default=False, metadata=_cli("Train the classifier only.", bool))
    epochs: int = field(default=20, metadata=_cli("Maximum epochs.", int))
    batch_size: int = field(default=32, metadata=_cli("Images per batch.", int))
    optimizer: str = field(default="adam", metadata=_cli(f"{', '.join(OPTIMIZERS)}."))
    lr: float = field(default=1e-3, metadata=_cli("Learning rate.", float))
    weight_decay: float = field(default=0.0, metadata=_cli("Weight decay.", float))
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=_cli("Adam betas B1,B2.", parse=parse_pair))
    momentum: float = field(default=0.9, metadata=_cli("SGD momentum.", float))
    scheduler: str = field(default="cosine", metadata=_cli(f"{', '.join(SCHEDULERS)}."))
    step_size: int = field(default=7, metadata=_cli("Epochs between learning-rate steps (scheduler step).", int))
    gamma: float = field(default=0.1, metadata=_cli("Learning-rate factor of step and plateau.", float))
    label_smoothing: float = field(default=0.0, metadata=_cli("Label smoothing epsilon.", float))
    teachers: list[str] = field(default_factory=list, metadata=_cli(
        "Checkpoint or run folder to distil from, repeatable (an ensemble's averaged predictions).", flag="teacher",
        repeat=True))
    distill_weight: float = field(default=0.9, metadata=_cli(
        "Share of the loss given to the teachers' soft targets (the rest: the labels).", float))
    distill_temperature: float = field(default=4.0, metadata=_cli(
        "Softens both sides' outputs, as in Hinton et al. 2015.", float))
    class_weights: bool = field(default=False, metadata=_cli("Inverse-frequency weighted loss.", bool))
    balanced_sampler: bool = field(default=False, metadata=_cli("Draw classes equally often.", bool))
    early_stopping: int = field(default=10, metadata=_cli("Patience in epochs on validation loss; 0 disables.", int))
    augment: bool = field(default=True, metadata=_cli("Training augmentation.", bool))
    flip: bool = field(default=True, metadata=_cli("Horizontal flips in augmentation.", bool))
    seed: int = field(default=0, metadata=_cli("Seed for split, initialisation and augmentation.", int))
    split_seed: int | None = field(default=None, metadata=_cli(
        "Seed for the split only (default: --seed); ensemble members share one split this way.", int))
    precision: str = field(default="auto", metadata=_cli("auto (bf16-mixed on GPUs that have it, else 32-true), "
                                                          "32-true, bf16-mixed, 16-mixed."))
    accelerator: str = field(default="auto", metadata=_cli("Lightning accelerator: auto, cpu, gpu."))
    devices: int = field(default=1, metadata=_cli(
        "Devices per machine: GPUs, or processes with --accelerator cpu; -1: every visible GPU.", int))
    num_nodes: int = field(default=1, metadata=_cli("Machines (nodes) taking part; launch one process per device "
                                                    "on each (torchrun, srun).", int))
    strategy: str = field(default="auto", metadata=_cli(
        f"{', '.join(STRATEGIES)}; auto is ddp when there are several devices. --batch-size is per device: the "
        "learning rate is not rescaled."))
    num_workers: int = field(default=0, metadata=_cli("DataLoader worker processes.", int))
    target_sensitivity: float = field(default=0.95, metadata=_cli(
        "Sensitivity the high-sensitivity operating point must reach on validation (binary tasks).", float))
    target_specificity: float = field(default=0.95, metadata=_cli(
        "Specificity the high-specificity operating point must reach on validation (binary tasks).", float))
    val_fraction: float = field(default=0.2, metadata=_cli("Share of train carved out for validation when the data "
                                                           "has train/test but no val.", float))
    drop_duplicates: bool = field(default=False, metadata=_cli(
        "Keep one copy of byte-identical images (copies always share a split anyway).", bool,
        negative="keep-duplicates"))
    near_duplicates: float = field(default=0.985, metadata=_cli(
        "Thumbnail correlation from which two images count as near-duplicates and share a split (0: off).", float))
    patient_pattern: str | None = field(default=DEFAULT_PATIENT_PATTERN, metadata=_cli(
        "Regex whose first group is the patient id in file names."))
    window: tuple[float, float] | None = field(default=None, metadata=_cli(
        "DICOM window CENTER,WIDTH for every DICOM.", parse=parse_window))
    class_names: list[str] | None = field(default=None, metadata=_cli(
        "Comma-separated names for .npz class indices.", parse=parse_names))
    max_minutes: float | None = field(default=None, metadata=_cli(
        "Wall-clock budget: stop after the first epoch that ends past it (epochs are never cut).", float))
    folds: int | None = field(default=None, metadata=_cli(
        "K-fold cross-validation over patient / near-duplicate groups, then a final model on all the images; "
        "1: off. Default: 5 for sets under 1,000 images, else off.", int))
    recipe: str | None = field(default=None, metadata=_cli(
        "Preset (aernet-paper, transfer-resnet50, pneumonia-cnn, small-cnn) or a .yaml path."))
    recipe_version: int | None = None

    def __post_init__(self) -> None:
        self.optimizer, self.scheduler = str(self.optimizer).lower(), str(self.scheduler).lower()
        self.strategy = str(self.strategy).lower()
        self.precision = str(self.precision)  # a recipe may write `precision: 32`
        self.betas = tuple(float(v) for v in self.betas)  # type: ignore[assignment]
        if self.window is not None:
            self.window = tuple(float(v) for v in self.window)  # type: ignore[assignment]
        problems = []
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"unknown optimizer '{self.optimizer}' (use {', '.join(OPTIMIZERS)})")
        if self.scheduler not in SCHEDULERS:
            problems.append(f"unknown scheduler '{self.scheduler}' (use {', '.join(SCHEDULERS)})")
        if self.precision not in PRECISIONS:
            problems.append(f"unknown precision '{self.precision}' (use {', '.join(PRECISIONS)})")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("image_size", "in_channels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be positive, got {value}")
        if self.in_channels not in (None, 1, 3):
            problems.append(f"in_channels must be 1 or 3, got {self.in_channels}")
        if not self.lr >= 0:  # 0 is allowed: a frozen run (tests, feature-extraction baselines)
            problems.append(f"lr must be >= 0, got {self.lr}")
        if not 0.0 <= self.label_smoothing < 1.0:
            problems.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        for name in ("target_sensitivity", "target_specificity"):
            if not 0.0 < getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not (self.near_duplicates == 0 or 0.5 <= self.near_duplicates <= 1.0):
            problems.append(f"near_duplicates must be 0 (off) or in [0.5, 1], got {self.near_duplicates}")
        if not 0.0 < self.val_fraction < 1.0:
            problems.append(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.early_stopping < 0 or self.num_workers < 0:
            problems.append("early_stopping and num_workers must be >= 0")
        if not (0.0 <= self.distill_weight <= 1.0 and self.distill_temperature > 0):
            problems.append(f"distillation needs 0 <= weight <= 1 and temperature > 0 (got {self.distill_weight}, "
                            f"{self.distill_temperature})")
        if self.strategy not in STRATEGIES:
            problems.append(f"unknown strategy '{self.strategy}' (use {', '.join(STRATEGIES)})")
        if self.devices < 1 and self.devices != -1:
            problems.append(f"devices must be at least 1 (or -1: every visible GPU), got {self.devices}")
        if self.num_nodes < 1:
            problems.append(f"num_nodes must be at least 1, got {self.num_nodes}")
        if self.folds is not None and self.folds < 1:
            problems.append(f"folds must be at least 1 (1: no cross-validation), got {self.folds}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            problems.append(f"max_minutes must be positive, got {self.max_minutes}")
        if problems:
            raise ValueError("; ".join(problems))
        from cadx.models import check_options  # the registry imports torch: only once a run is being set up

        check_options(self.model, self.model_options)  # ValueError naming the architectures or the valid options

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["betas"] = list(self.betas)
        data["window"] = list(self.window) if self.window else None
        return data


def cli_fields() -> list[tuple[str, CliOption]]:
    """(field name, option) of every setting ``cadx train`` offers, in declaration order."""
    return [(f.name, f.metadata["cli"]) for f in fields(TrainConfig) if "cli" in f.metadata]


def recipe_dir() -> Path:
    return Path(str(resources.files("cadx") / "recipes"))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def load_recipe(name: str) -> dict[str, Any]:
    path = Path(name) if name.endswith((".yaml", ".yml")) else recipe_dir() / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown recipe '{name}'; available: {', '.join(list_recipes())}")
    data = yaml.safe_load(path.read_text()) or {}
    data.setdefault("recipe", path.stem)
    return data


def build_config(recipe: str | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the recipe, then every override that is not None; validated (ValueError) on the spot."""
    known = {f.name for f in fields(TrainConfig)}
    values: dict[str, Any] = {}
    if recipe:
        values.update(load_recipe(recipe))
        values["recipe_version"] = values.pop("version", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown configuration key(s): {', '.join(unknown)}")
    return TrainConfig(**values)


def config_from_cli(values: dict[str, Any]) -> TrainConfig:
    """The options of ``cadx train`` as typed (texts for parsed fields, lists for repeated ones) -> a config."""
    options = dict(cli_fields())
    parsed: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or (options[name].repeat and not value):
            continue
        parse = options[name].parse
        parsed[name] = parse(value) if parse else (list(map(str, value)) if options[name].repeat else value)
    recipe = parsed.pop("recipe", None)
    return build_config(recipe, **parsed)
