"""Knowledge distillation: the soft-target loss, and a student that follows its teacher rather than its labels."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from cadx.engine.checkpoint import load_checkpoint
from cadx.engine.inference import Predictor
from cadx.engine.module import distillation_loss
from cadx.interfaces.cli import app
from tests.conftest import make_class_folders

runner = CliRunner()
TINY = ("--model", "simple_cnn", "--image-size", "32", "--batch-size", "16", "--seed", "0", "--folds", "1")


def test_loss_is_zero_when_the_student_matches_and_pulls_it_towards_the_teacher() -> None:
    teacher_logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    probs = torch.softmax(teacher_logits / 4.0, dim=1)
    assert distillation_loss(teacher_logits, probs, 4.0, multilabel=False).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(2, 3, requires_grad=True)
    loss = distillation_loss(student, probs, 4.0, multilabel=False)
    loss.backward()
    assert loss.item() > 0
    stepped = student.detach() - 0.5 * student.grad
    assert distillation_loss(stepped, probs, 4.0, multilabel=False) < loss  # a gradient step moves towards it
    # multi-label: per-label tempered sigmoids; the minimum sits at the teacher's own logits
    ml = torch.sigmoid(teacher_logits / 2.0)
    at_teacher = distillation_loss(teacher_logits, ml, 2.0, multilabel=True)
    assert at_teacher < distillation_loss(teacher_logits + 1.0, ml, 2.0, multilabel=True)


@pytest.fixture(scope="module")
def teacher_and_data(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("distil")
    data = make_class_folders(base / "data", 40)
    result = runner.invoke(app, ["train", str(data), *TINY, "--epochs", "3", "--output", str(base / "teacher")])
    assert result.exit_code == 0, result.output
    return data, base / "teacher"


def test_student_follows_its_teacher_over_wrong_labels(teacher_and_data, tmp_path: Path) -> None:
    """Labels swapped: trained on the labels alone a model learns the swap; with all the weight on a teacher
    trained on the true labels, it learns what the teacher predicts instead."""
    data, teacher = teacher_and_data
    swapped = tmp_path / "swapped"
    for src, dst in (("normal", "pneumonia"), ("pneumonia", "normal")):
        shutil.copytree(data / src, swapped / dst)
    runs = {}
    for name, extra in (("labels", ()), ("distilled", ("--teacher", str(teacher), "--distill-weight", "1.0"))):
        result = runner.invoke(app, ["train", str(swapped), *TINY, "--epochs", "6", "--no-augment",
                                     "--output", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        # the last epoch: best.ckpt is picked on validation loss, and validation carries the swapped labels too
        runs[name] = Predictor(load_checkpoint(tmp_path / name / "last.ckpt"))
    files = sorted(data.rglob("*.png"))
    truth = np.array([f.parent.name == "pneumonia" for f in files])

    def auc_against_truth(predictor: Predictor) -> float:  # ranking: a short-trained student is not calibrated yet
        return roc_auc_score(truth, [p.probabilities[1] for p in predictor.predict_files(files)])

    assert auc_against_truth(Predictor(load_checkpoint(teacher))) > 0.95
    assert auc_against_truth(runs["labels"]) < 0.2  # learnt the swap
    assert auc_against_truth(runs["distilled"]) > 0.8  # learnt the teacher
    config = (tmp_path / "distilled" / "config.yaml").read_text()
    assert str(teacher) in config and "distill_weight: 1.0" in config


def test_a_teacher_that_does_not_fit_is_one_clear_line(teacher_and_data, tmp_path: Path) -> None:
    data, teacher = teacher_and_data
    three = make_class_folders(tmp_path / "three", 6, classes=("a", "b", "c"))
    result = runner.invoke(app, ["train", str(three), *TINY, "--epochs", "1", "--teacher", str(teacher),
                                 "--output", str(tmp_path / "r1")])
    assert result.exit_code == 2 and "this teacher predicts ['normal', 'pneumonia']" in result.output
    result = runner.invoke(app, ["train", str(data), "--model", "simple_cnn", "--image-size", "48", "--epochs", "1",
                                 "--folds", "1", "--teacher", str(teacher), "--output", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "32 px" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["train", str(data), *TINY, "--epochs", "1", "--teacher", str(tmp_path / "none"),
                                 "--output", str(tmp_path / "r3")])
    assert result.exit_code == 2 and "no such checkpoint" in result.output
