"""How a model's input is made (:class:`Preprocessing`), apart from the code that makes it (``cadx.data.transforms``):
reading a checkpoint's metadata, as ``cadx models`` does, then needs neither numpy nor Pillow."""

from __future__ import annotations

from dataclasses import asdict, dataclass

DEFAULT_MEAN = (0.5,)
DEFAULT_STD = (0.25,)


@dataclass(frozen=True)
class Preprocessing:
    """How a model's input is made; it travels with the weights (timm's ``PretrainedCfg``), so every consumer
    prepares an image the way the network was trained.

    ``mean``/``std`` are per channel (one value broadcasts to all): cadx's own 0.5/0.25 for networks trained from
    scratch, the weights' own normalisation (e.g. ImageNet's) for networks fine-tuned from pretrained weights.
    """

    image_size: int
    channels: int  # the model's input channels: grey images are replicated for 3, colour turned grey for 1
    mean: tuple[float, ...] = DEFAULT_MEAN
    std: tuple[float, ...] = DEFAULT_STD
    window: tuple[float, float] | None = None  # DICOM (center, width) forced for every DICOM input

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            value = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
            if len(value) not in (1, self.channels):
                raise ValueError(f"preprocessing {name} has {len(value)} values for {self.channels} channel(s)")
            object.__setattr__(self, name, value)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"preprocessing std must be positive, got {self.std}")
        if self.window is not None:
            object.__setattr__(self, "window", tuple(float(v) for v in self.window))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        data["window"] = list(self.window) if self.window else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        window = data.get("window")
        return cls(image_size=int(data["image_size"]), channels=int(data["channels"]),
                   mean=data.get("mean", DEFAULT_MEAN), std=data.get("std", DEFAULT_STD),
                   window=tuple(window) if window else None)
