"""Figures a reader of a run expects: training curves, confusion matrix, ROC curves, reliability diagram,
risk-coverage curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_training_curves(rows: list[dict[str, float]], path: Path) -> None:
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        ax_loss.plot(epochs, [r.get(key, np.nan) for r in rows], marker="o", label=label)
    for key, label in (("train_acc", "train"), ("val_acc", "validation")):
        ax_acc.plot(epochs, [r.get(key, np.nan) for r in rows], marker="o", label=label)
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="loss")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.01))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion_matrix(matrix: np.ndarray, classes: list[str], path: Path, title: str = "") -> None:
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 3, 1.2 * len(classes) + 2))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix")
    peak = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                    color="white" if matrix[i, j] > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path,
             operating_point: tuple[float, float] | None = None) -> None:
    """``curves`` maps a label to (false positive rate, true positive rate, AUC)."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    if operating_point is not None:
        ax.plot(*operating_point, "ko", label="decision threshold")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)",
           title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(bins: dict[str, dict[str, list]], path: Path, title: str = "") -> None:
    """Reliability diagram: observed accuracy against mean confidence per equal-width bin, for each probability set
    (``bins``: name -> ``cadx.engine.calibration.reliability_bins``), with the images per bin below."""
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly calibrated")
    first = next(iter(bins.values()))
    edges = np.array(first["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    for k, (name, b) in enumerate(bins.items()):
        conf = [c for c in b["confidence"] if c is not None]
        acc = [a for a in b["accuracy"] if a is not None]
        ax.plot(conf, acc, marker="o", label=name)
        offset = (k - (len(bins) - 1) / 2) * width / len(bins)
        ax_n.bar(centres + offset, b["count"], width=width / len(bins), label=name)
    ax.set(ylabel="observed frequency (accuracy)", xlim=(0, 1), ylim=(0, 1.01), title=title or "Reliability")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax_n.set(xlabel="confidence (probability)", ylabel="images", yscale="log")
    ax_n.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_risk_coverage(curve: dict, path: Path) -> None:
    """Risk (error rate of the kept images) against coverage, the most confident kept first, with AURC."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(curve["coverage"], curve["risk"], label=f"AURC {curve['aurc']:.4f} (optimal {curve['optimal_aurc']:.4f})")
    ax.set(xlabel="coverage (share of images kept)", ylabel="risk (error rate)", xlim=(0, 1), title="Risk-coverage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
