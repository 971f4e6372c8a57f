"""What travels with a model's weights: one typed, versioned record, written once at training, read by everyone.

Every consumer (predictor, explainer, evaluation, server, export) reads a :class:`CheckpointMeta`; nothing reads
the checkpoint's dictionary itself. Older checkpoints load through :func:`migrate`, the only place that knows
earlier formats. Calibration (:class:`Calibration`) and the named operating points (:class:`OperatingPoint`) are
typed fields; fields later features add go into ``extensions`` until they earn one; unknown keys survive a round
trip there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from cadx.data.preprocessing import Preprocessing

FORMAT_VERSION = 3
DEFAULT_THRESHOLD = 0.5  # the binary/multi-label cut of a checkpoint that never had one chosen on validation
VALIDATION_SOURCE = "validation (Youden's J)"  # a threshold chosen on the model's validation split
Task = Literal["multiclass", "multilabel"]


META_KEY = "cadx"  # the key of the metadata in a checkpoint's dictionary (Lightning's and cadx's exports alike)


class CheckpointError(ValueError):
    """A file that is not a usable cadx checkpoint, or metadata that cannot be read (a newer format, a missing
    field)."""


@dataclass(frozen=True)
class ModelSpec:
    """Enough to rebuild the network: ``create_model(name, in_channels=..., num_classes=..., **options)``."""

    name: str
    in_channels: int
    num_classes: int
    options: Mapping[str, Any] = field(default_factory=dict)
    params: int | None = None


@dataclass(frozen=True)
class Provenance:
    """Where the model came from: the data it was trained on and the software that trained it."""

    source: str | None = None  # the data folder, manifest or .npz given to ``cadx train``
    kind: str | None = None  # folder | csv | npz
    patient_pattern: str | None = None
    cadx_version: str | None = None
    command: str | None = None  # the command line that trained it, when known
    data_hash: str | None = None  # sha256 over the training split's file keys and targets, when known


@dataclass(frozen=True)
class Calibration:
    """Temperature scaling (Guo et al. 2017) fitted on the model's validation split: logits / T before the softmax
    (or each label's sigmoid, one T per label, for multi-label). ``nll_*``/``ece_*``: on the fitting images."""

    temperatures: tuple[float, ...]  # one value (softmax, single logit), or one per label (multi-label)
    method: str = "temperature"
    fitted_on: str = "validation"
    n: int = 0
    nll_before: float | None = None
    nll_after: float | None = None
    ece_before: float | None = None
    ece_after: float | None = None

    def __post_init__(self) -> None:
        if not self.temperatures or not all(t > 0 and t == t for t in self.temperatures):
            raise CheckpointError(f"calibration temperatures must be positive, got {self.temperatures}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Calibration:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        values["temperatures"] = tuple(float(t) for t in raw["temperatures"])
        return cls(**values)


@dataclass(frozen=True)
class OperatingPoint:
    """A named binary decision threshold chosen on validation: ``balanced`` (Youden's J), ``high-sensitivity``
    (the highest threshold whose validation sensitivity >= target, and never above the balanced one) or
    ``high-specificity`` (the lowest whose validation specificity >= target, never below the balanced one), with the
    validation sensitivity/specificity it reached on ``n`` images."""

    name: str
    threshold: float
    criterion: str  # youden | sensitivity | specificity
    target: float | None = None
    sensitivity: float | None = None  # on validation
    specificity: float | None = None  # on validation
    n: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise CheckpointError(f"operating point {self.name!r}: threshold {self.threshold} is outside [0, 1]")

    @property
    def source(self) -> str:
        """Where the threshold came from, as ``threshold_source`` says it (the name travels in the Decision)."""
        if self.criterion == "youden":
            return VALIDATION_SOURCE
        return f"validation ({self.criterion} >= {self.target:g})"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> OperatingPoint:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class CheckpointMeta:
    model: ModelSpec
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    task: Task = "multiclass"
    positive_index: int | None = None  # the finding of a binary task (decided at a threshold), else None
    decision_threshold: float = DEFAULT_THRESHOLD
    threshold_source: str = "default"  # e.g. "validation (Youden's J)"; "default" when never chosen
    category: str | None = None  # task group, e.g. "Chest X-ray"; also selects the scope check
    title: str | None = None
    version: str | None = None
    split: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # split name -> record keys
    provenance: Provenance = field(default_factory=Provenance)
    config: Mapping[str, Any] = field(default_factory=dict)  # the TrainConfig as trained (TrainConfig.to_dict())
    # The fitted out-of-distribution score (``cadx.engine.ood.OodModel.to_dict()``; arrays as tensors), or None.
    ood: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    calibration: Calibration | None = None  # None: probabilities as the network gives them (identity)
    operating_points: tuple[OperatingPoint, ...] = ()  # binary tasks; decision_threshold is the default one's
    default_operating_point: str | None = None  # the name of the one decision_threshold comes from, if any
    extensions: Mapping[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.task not in ("multiclass", "multilabel"):
            raise CheckpointError(f"unknown task {self.task!r}")
        single_logit = self.model.num_classes == 1 and len(self.classes) == 2  # one logit speaks for two classes
        if len(self.classes) != self.model.num_classes and not single_logit:
            raise CheckpointError(f"{len(self.classes)} class names for a {self.model.num_classes}-output network")
        if self.positive_index is not None and not (self.binary_candidate and 0 <= self.positive_index < 2):
            raise CheckpointError(f"positive_index {self.positive_index} needs a two-class single-label task")
        if not 0.0 <= self.decision_threshold <= 1.0:
            raise CheckpointError(f"decision threshold {self.decision_threshold} is outside [0, 1]")
        names = [p.name for p in self.operating_points]
        if self.default_operating_point is not None and self.default_operating_point not in names:
            raise CheckpointError(f"default operating point {self.default_operating_point!r} is not among {names}")
        if self.calibration is not None:
            labels = len(self.classes) if self.multilabel else 1
            if len(self.calibration.temperatures) not in (1, labels):
                raise CheckpointError(f"{len(self.calibration.temperatures)} temperatures for {labels} label(s)")

    def operating_point(self, name: str) -> OperatingPoint:
        """The stored operating point of that name (ValueError listing the names)."""
        for point in self.operating_points:
            if point.name == name:
                return point
        known = ", ".join(p.name for p in self.operating_points) or "none stored; run cadx calibrate"
        raise ValueError(f"unknown operating point {name!r} (this model has: {known})")

    @property
    def binary_candidate(self) -> bool:
        return len(self.classes) == 2 and self.task == "multiclass"

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    @property
    def binary(self) -> bool:
        """A two-class task whose finding is asserted at a threshold."""
        return self.positive_index is not None

    def with_changes(self, **changes: Any) -> CheckpointMeta:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The stored form (plain types and tensors only: torch.load(weights_only=True) can read it)."""
        return {
            "format": FORMAT_VERSION,
            "model": {"name": self.model.name, "in_channels": self.model.in_channels,
                      "num_classes": self.model.num_classes, "options": dict(self.model.options),
                      "params": self.model.params},
            "classes": list(self.classes), "task": self.task, "positive_index": self.positive_index,
            "decision_threshold": float(self.decision_threshold), "threshold_source": self.threshold_source,
            "preprocessing": self.preprocessing.to_dict(),
            "category": self.category, "title": self.title, "version": self.version,
            "split": {k: list(v) for k, v in self.split.items()},
            "provenance": {f.name: getattr(self.provenance, f.name) for f in fields(Provenance)},
            "config": dict(self.config),
            "ood": dict(self.ood) if self.ood is not None else None,
            "calibration": self.calibration.to_dict() if self.calibration is not None else None,
            "operating_points": [p.to_dict() for p in self.operating_points],
            "default_operating_point": self.default_operating_point,
            "extensions": dict(self.extensions),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CheckpointMeta:
        """Any stored format (older ones through :func:`migrate`)."""
        data = migrate(raw)
        try:
            spec = data["model"]
            return cls(
                model=ModelSpec(name=str(spec["name"]), in_channels=int(spec["in_channels"]),
                                num_classes=int(spec["num_classes"]), options=dict(spec.get("options") or {}),
                                params=spec.get("params")),
                classes=tuple(str(c) for c in data["classes"]),
                preprocessing=Preprocessing.from_dict(data["preprocessing"]),
                task=data.get("task", "multiclass"), positive_index=data.get("positive_index"),
                decision_threshold=float(data.get("decision_threshold", DEFAULT_THRESHOLD)),
                threshold_source=str(data.get("threshold_source") or "default"),
                category=data.get("category"), title=data.get("title"), version=data.get("version"),
                split={str(k): tuple(v) for k, v in (data.get("split") or {}).items()},
                provenance=Provenance(**{f.name: (data.get("provenance") or {}).get(f.name)
                                         for f in fields(Provenance)}),
                config=dict(data.get("config") or {}), ood=data.get("ood"),
                calibration=Calibration.from_dict(data["calibration"]) if data.get("calibration") else None,
                operating_points=tuple(OperatingPoint.from_dict(p) for p in data.get("operating_points") or ()),
                default_operating_point=data.get("default_operating_point"),
                extensions=dict(data.get("extensions") or {}),
            )
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"incomplete checkpoint metadata ({exc})") from exc


def new_meta(model: str, classes: Sequence[str], preprocessing: Preprocessing, *, task: Task = "multiclass",
             options: Mapping[str, Any] | None = None, num_classes: int | None = None, params: int | None = None,
             **changes: Any) -> CheckpointMeta:
    """The metadata of a network about to be trained (or built in memory): a two-class single-label task gets its
    second class as the finding, decided at a threshold."""
    binary = len(classes) == 2 and task == "multiclass"
    spec = ModelSpec(name=model, in_channels=preprocessing.channels,
                     num_classes=len(classes) if num_classes is None else num_classes,
                     options=dict(options or {}), params=params)
    fields_ = {"positive_index": 1 if binary else None, **changes}
    return CheckpointMeta(model=spec, classes=tuple(classes), preprocessing=preprocessing, task=task, **fields_)


def migrate(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Stored metadata of any known format -> the current format's dictionary. The one place older formats live.

    Format 1 (cadx 0.1.0): a scalar mean/std, ``cadx_version`` and ``data`` at the top level, no
    ``threshold_source``; a binary model's threshold was always chosen on validation at training.
    Format 2: no calibration (identity: probabilities as the network gives them) and no named operating points
    (the one threshold stays ``decision_threshold``).
    """
    data = dict(raw)
    version = int(data.get("format", 1))
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {version} is newer than this cadx reads ({FORMAT_VERSION}); "
                        "upgrade cadx")
    if version == 1:
        source = dict(data.pop("data", None) or {})
        data["provenance"] = {"source": source.get("source"), "kind": source.get("kind"),
                              "patient_pattern": source.get("patient_pattern"),
                              "cadx_version": data.pop("cadx_version", None)}
        known = {"model", "classes", "task", "positive_index", "decision_threshold", "preprocessing", "category",
                 "title", "version", "split", "config", "provenance", "format"}
        data["extensions"] = {k: v for k, v in data.items() if k not in known}
        known.add("extensions")
        data = {k: v for k, v in data.items() if k in known}
        if data.get("positive_index") is not None:  # format 1 training always chose it on validation
            data["threshold_source"] = VALIDATION_SOURCE
        version = 2
    if version == 2:
        data.setdefault("calibration", None)
        data.setdefault("operating_points", [])
        data.setdefault("default_operating_point", None)
    data["format"] = FORMAT_VERSION
    return data


def stored_meta(data: Any, path: object) -> CheckpointMeta:
    """The metadata of a checkpoint's stored dictionary, checked (``path`` names the file in the error)."""
    if not isinstance(data, dict) or not isinstance(data.get(META_KEY), dict) or "state_dict" not in data:
        raise CheckpointError(f"{path}: not a cadx checkpoint (no '{META_KEY}' metadata)")
    try:
        return CheckpointMeta.from_dict(data[META_KEY])
    except (CheckpointError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
