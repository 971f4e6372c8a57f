"""Training configuration: one dataclass, versioned recipe files that fill it, flags that override it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cadx.data.sources import DEFAULT_PATIENT_PATTERN


@dataclass
class TrainConfig:
    model: str = "simple_cnn"
    model_options: dict[str, Any] = field(default_factory=dict)
    in_channels: int | None = None  # None: the model's own default
    image_size: int | None = None  # None: the model's default input size
    weights: str | None = None  # local state dict for transfer learning
    freeze_backbone: bool = False
    epochs: int = 20
    batch_size: int = 32
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    scheduler: str = "cosine"  # cosine | step | plateau | none
    step_size: int = 7
    gamma: float = 0.1
    label_smoothing: float = 0.0
    teachers: list[str] = field(default_factory=list)  # checkpoints to distil: their averaged predictions
    distill_weight: float = 0.9  # share of the loss given to the teachers' soft targets (the rest: the labels)
    distill_temperature: float = 4.0  # softens both sides' outputs, as in Hinton et al. 2015
    class_weights: bool = False  # inverse-frequency weighted loss
    balanced_sampler: bool = False  # or draw classes equally often
    early_stopping: int = 10  # patience in epochs on validation loss; 0 disables
    augment: bool = True
    flip: bool = True
    seed: int = 0
    split_seed: int | None = None  # seed of the data split when it should differ from ``seed`` (ensembles)
    precision: str = "auto"  # auto: bf16-mixed on GPUs that have it, else 32
    accelerator: str = "auto"
    num_workers: int = 0
    val_fraction: float = 0.2  # of train, when the data has train/test but no val
    drop_duplicates: bool = False  # keep one copy of byte-identical images (copies always share a split anyway)
    patient_pattern: str | None = DEFAULT_PATIENT_PATTERN
    window: tuple[float, float] | None = None
    class_names: list[str] | None = None  # names for .npz class indices
    max_minutes: float | None = None  # wall-clock budget for fitting
    recipe: str | None = None
    recipe_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["betas"] = list(self.betas)
        data["window"] = list(self.window) if self.window else None
        return data


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
    """Defaults, then the recipe, then every override that is not None."""
    known = {f.name for f in fields(TrainConfig)}
    values: dict[str, Any] = {}
    if recipe:
        values.update(load_recipe(recipe))
        values["recipe_version"] = values.pop("version", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown configuration key(s): {', '.join(unknown)}")
    for key in ("betas", "window"):
        if values.get(key) is not None:
            values[key] = tuple(float(v) for v in values[key])
    return TrainConfig(**values)
