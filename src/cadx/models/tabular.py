"""The GBSG seed's 1-D CNN for tabular data: a standardised feature vector read as a 1-channel sequence.

Plain torch and deliberately outside the image-model registry: its input is a feature vector, not an image,
so ``cadx train``/``cadx models`` must never offer it.
"""

from __future__ import annotations

import torch
from torch import nn

MIN_FEATURES = 4  # Conv1d(k=3) leaves n-2 positions; MaxPool1d(2) needs at least 2 of them


class TabularCNN1d(nn.Module):
    """Conv1d(1, 32, 3) → ReLU → MaxPool1d(2) → flatten → Linear(·, 64) → ReLU → Dropout → Linear(64, 1).

    Returns one logit per row; the sigmoid lives in the loss (``BCEWithLogitsLoss``) for numerical stability.
    The convolution slides over neighbouring columns in the order the CSV gives them, as the seed did.
    """

    def __init__(self, n_features: int, channels: int = 32, kernel_size: int = 3, hidden: int = 64,
                 dropout: float = 0.3) -> None:
        super().__init__()
        if n_features < MIN_FEATURES:
            raise ValueError(f"the 1-D CNN needs at least {MIN_FEATURES} feature columns after encoding, "
                             f"got {n_features}")
        pooled = (n_features - kernel_size + 1) // 2
        self.n_features = n_features
        self.features = nn.Sequential(nn.Conv1d(1, channels, kernel_size), nn.ReLU(), nn.MaxPool1d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * pooled, hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, n_features) → logits (batch,)."""
        return self.head(self.features(x.unsqueeze(1))).squeeze(1)
