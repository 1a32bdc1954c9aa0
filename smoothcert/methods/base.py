"""The interface every training method implements."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class TrainContext:
    """What ``Method.setup`` gets: the training split (an ``ImageDataset``) and how many of its
    first inputs are trained on (``limit``, None = all), the number of classes, the device
    training runs on, the run directory (None outside ``train()``), whether this process writes
    files (rank 0), the run's seed, and whether to show progress."""

    train_set: Any
    num_classes: int
    device: torch.device
    run_dir: Path | None = None
    writer: bool = True
    limit: int | None = None
    seed: int = 0
    progress: bool = False


class Method:
    """A training objective.

    * ``loss(model, x, y)``: a scalar loss with its autograd graph, for a batch ``x`` in [0, 1]
      pixel space and integer labels ``y``. The model arrives in train mode and must be left in
      the train/eval and requires_grad state it arrived in.
    * ``on_epoch_start(epoch, num_epochs)``: called before each epoch (0-based), e.g. for
      warm-up or epsilon ramps.
    * ``params()``: the method's parameters, recorded in the run's config.json.
    * ``setup(context)``: called once before the first epoch (also on a resume) with a
      ``TrainContext``: the training split, the device and the run directory. Methods that need
      a pass over the training set before training (CAT-RS's smoothed confidences) do it here.
    * ``uses_index``: when True the Trainer calls ``loss(model, x, y, index=idx)`` with the
      (B,) dataset indices of the batch (per-input targets computed in ``setup``).
    * ``evaluate_model(model)``: the module whose noisy test accuracy the Trainer logs each
      epoch, given the trained model; default the model itself (a denoiser's method returns
      the classifier behind it; None: nothing to measure, logged as nan).
    * ``default_arch``: the arch trained when none is given (None: the dataset's).
    * After ``loss``, ``self.last_correct`` (a 0-dim tensor, left on the device: no host sync) and
      ``self.last_count`` (int) describe the training accuracy on the samples trained on.
    """

    name: ClassVar[str] = ""
    uses_index: ClassVar[bool] = False
    default_arch: ClassVar[str | None] = None

    def __init__(self) -> None:
        self.last_correct: torch.Tensor | None = None
        self.last_count: int = 0

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def setup(self, context: TrainContext) -> None:
        """Hook before the first epoch; default: nothing."""

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Hook before each epoch; default: nothing."""

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def evaluate_model(self, model: nn.Module) -> nn.Module | None:
        """The module whose accuracy the Trainer logs (``test_acc_noisy``); default ``model``."""
        return model

    def _record_accuracy(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Store the count of correct top-1 predictions (hard labels ``y``) for the Trainer's log."""
        with torch.no_grad():
            self.last_correct = (logits.argmax(1) == y).sum()
        self.last_count = int(y.shape[0])
