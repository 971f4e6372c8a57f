"""The science of training: network, loss, optimiser and what one step computes (Lightning's split)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MultilabelAccuracy,
    MultilabelAUROC,
)

from cadx.data.transforms import Preprocessing, to_model_input
from cadx.engine.checkpoint import LoadedCheckpoint
from cadx.engine.config import TrainConfig
from cadx.engine.meta import CheckpointMeta
from cadx.models import create_model, freeze_backbone, load_pretrained_weights

AUX_LOSS_WEIGHT = 0.3  # GoogLeNet's auxiliary heads, as in Szegedy et al. 2015


class SmoothedBCEWithLogits(nn.Module):
    """Multi-label loss with label smoothing: targets pulled towards 0.5 by epsilon."""

    def __init__(self, smoothing: float, pos_weight: torch.Tensor | None) -> None:
        super().__init__()
        self.smoothing = smoothing
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target * (1 - self.smoothing) + 0.5 * self.smoothing
        return nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float,
                      multilabel: bool) -> torch.Tensor:
    """Hinton et al.'s soft-target loss: the student's tempered outputs against the teachers' averaged tempered
    probabilities, scaled by T^2 so its gradients keep their size whatever the temperature."""
    scaled = student_logits.float() / temperature
    if multilabel:
        loss = nn.functional.binary_cross_entropy_with_logits(scaled, teacher_probs)
    else:
        loss = nn.functional.kl_div(torch.log_softmax(scaled, dim=1), teacher_probs, reduction="batchmean")
    return loss * temperature ** 2


class ClassificationModule(L.LightningModule):
    """Network, loss, optimiser and steps; every setting comes from the typed ``TrainConfig`` (no defaults of its
    own), the input preparation from the ``Preprocessing`` that travels with the weights."""

    def __init__(self, config: TrainConfig, num_classes: int, multilabel: bool, pre: Preprocessing,
                 class_weights: list[float] | None = None) -> None:
        super().__init__()
        self.config = config
        self.pre = pre
        self.model = create_model(config.model, in_channels=pre.channels, num_classes=num_classes,
                                  **config.model_options)
        if config.weights:
            load_pretrained_weights(self.model, config.weights)
        if config.freeze_backbone:
            freeze_backbone(self.model)
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        if multilabel:
            self.criterion: nn.Module = SmoothedBCEWithLogits(config.label_smoothing, weight)
            self.val_auc = MultilabelAUROC(num_labels=num_classes)
            self.train_acc = MultilabelAccuracy(num_labels=num_classes)
            self.val_acc = MultilabelAccuracy(num_labels=num_classes)
        else:
            self.criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
            self.val_auc = MulticlassAUROC(num_classes=num_classes)
            self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
            self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.multilabel = multilabel
        # checkpoints to distil from; a plain list, so their weights stay out of this module's checkpoint
        self.teachers: list[LoadedCheckpoint] = []
        self.cadx_meta: CheckpointMeta | None = None  # set by the trainer code; written into every checkpoint

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(to_model_input(images, self.pre))

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    def on_fit_start(self) -> None:
        for teacher in self.teachers:
            teacher.model.to(self.device).eval().requires_grad_(False)

    @torch.no_grad()
    def teacher_probs(self, images: torch.Tensor) -> torch.Tensor:
        """The teachers' tempered probabilities on this (augmented) batch, averaged over teachers."""
        temperature = self.config.distill_temperature
        probs = [self._scores(t.model(to_model_input(images, t.preprocessing)).float() / temperature)
                 for t in self.teachers]
        return torch.stack(probs).mean(0)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        out = self(images)
        if isinstance(out, tuple):  # auxiliary classifiers (GoogLeNet) in training mode
            logits, *aux = out
            loss = self.criterion(logits, targets) + AUX_LOSS_WEIGHT * sum(self.criterion(a, targets) for a in aux)
        else:
            logits, loss = out, self.criterion(out, targets)
        if self.teachers:
            weight = self.config.distill_weight
            soft = distillation_loss(logits, self.teacher_probs(images), self.config.distill_temperature,
                                     self.multilabel)
            loss = (1 - weight) * loss + weight * soft
        self.train_acc(self._scores(logits.detach()), targets.int() if self.multilabel else targets)
        # sync_dist: under DDP the epoch's loss is averaged over ranks (a no-op on one device), so early stopping
        # and the best checkpoint see one value everywhere; the torchmetrics objects synchronise themselves.
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(images), sync_dist=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(images))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, targets = batch
        logits = self(images)
        loss = self.criterion(logits, targets)
        scores = self._scores(logits)
        int_targets = targets.int() if self.multilabel else targets
        self.val_acc(scores, int_targets)
        self.val_auc(scores, int_targets)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=len(images), sync_dist=True)
        self.log("val_acc", self.val_acc, on_epoch=True, prog_bar=True, batch_size=len(images))
        self.log("val_auc", self.val_auc, on_epoch=True, batch_size=len(images))

    def configure_optimizers(self) -> Any:
        c = self.config  # names were checked when the configuration was built
        params = [p for p in self.parameters() if p.requires_grad]
        if c.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)
        elif c.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        if c.scheduler == "none":
            return opt
        if c.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=c.gamma if c.gamma < 1 else 0.1,
                                                               patience=2)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}
        if c.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(c.epochs, 1))
        else:
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=c.step_size, gamma=c.gamma)
        return {"optimizer": opt, "lr_scheduler": sched}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.cadx_meta is None:
            raise RuntimeError("the checkpoint metadata must be set before training starts")
        checkpoint["cadx"] = self.cadx_meta.to_dict()
