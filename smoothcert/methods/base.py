"""The interface every training method implements."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


class Method:
    """A training objective.

    * ``loss(model, x, y)``: a scalar loss with its autograd graph, for a batch ``x`` in [0, 1]
      pixel space and integer labels ``y``. The model arrives in train mode and must be left in
      the train/eval and requires_grad state it arrived in.
    * ``on_epoch_start(epoch, num_epochs)``: called before each epoch (0-based), e.g. for
      warm-up or epsilon ramps.
    * ``params()``: the method's parameters, recorded in the run's config.json.
    * After ``loss``, ``self.last_correct`` (a 0-dim tensor, left on the device: no host sync) and
      ``self.last_count`` (int) describe the training accuracy on the samples trained on.
    """

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.last_correct: torch.Tensor | None = None
        self.last_count: int = 0

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        """Hook before each epoch; default: nothing."""

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _record_accuracy(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Store the count of correct top-1 predictions (hard labels ``y``) for the Trainer's log."""
        with torch.no_grad():
            self.last_correct = (logits.argmax(1) == y).sum()
        self.last_count = int(y.shape[0])
