"""The LightningModule reads its settings from the typed TrainConfig: optimisers, schedulers, losses."""

from __future__ import annotations

import pytest
import torch

from cadx.data.transforms import Preprocessing
from cadx.engine.config import build_config
from cadx.engine.module import ClassificationModule, SmoothedBCEWithLogits

PRE = Preprocessing(32, 1)


@pytest.mark.parametrize(("optimizer", "scheduler", "kinds"), [
    ("adam", "cosine", (torch.optim.Adam, torch.optim.lr_scheduler.CosineAnnealingLR)),
    ("adamw", "step", (torch.optim.AdamW, torch.optim.lr_scheduler.StepLR)),
    ("sgd", "plateau", (torch.optim.SGD, torch.optim.lr_scheduler.ReduceLROnPlateau)),
    ("sgd", "none", (torch.optim.SGD, None)),
])
def test_optimiser_and_scheduler_come_from_the_config(optimizer: str, scheduler: str, kinds: tuple) -> None:
    config = build_config(model="simple_cnn", optimizer=optimizer, scheduler=scheduler, lr=0.01, momentum=0.5)
    out = ClassificationModule(config, 2, False, PRE).configure_optimizers()
    opt = out if isinstance(out, torch.optim.Optimizer) else out["optimizer"]
    assert isinstance(opt, kinds[0]) and opt.param_groups[0]["lr"] == 0.01
    if kinds[1] is None:
        assert isinstance(out, torch.optim.Optimizer)
    else:
        sched = out["lr_scheduler"]
        assert isinstance(sched["scheduler"] if isinstance(sched, dict) else sched, kinds[1])


def test_losses_follow_the_task_and_smoothing() -> None:
    config = build_config(model="simple_cnn", label_smoothing=0.1)
    single = ClassificationModule(config, 3, False, PRE, class_weights=[1.0, 2.0, 0.5])
    assert single.criterion.label_smoothing == 0.1 and single.criterion.weight.tolist() == [1.0, 2.0, 0.5]
    multi = ClassificationModule(config, 3, True, PRE)
    assert isinstance(multi.criterion, SmoothedBCEWithLogits)
    logits = torch.zeros(2, 3)
    assert torch.isclose(multi.criterion(logits, torch.ones(2, 3)), torch.tensor(0.6931), atol=1e-4)
    loss = single.training_step((torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8),
                                 torch.tensor([0, 1, 2, 1])), 0)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_saving_needs_the_metadata() -> None:
    module = ClassificationModule(build_config(model="simple_cnn"), 2, False, PRE)
    with pytest.raises(RuntimeError, match="metadata"):
        module.on_save_checkpoint({})
