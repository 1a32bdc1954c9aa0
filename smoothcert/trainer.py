"""The one training loop: ``Trainer`` (optimiser, schedule, AMP, DDP around ``method.loss``) and
``Trainer.fit`` (the epochs), with the batches (``Batches``); the process group is ``processes.ProcessGroup``.

The Trainer knows nothing of MaxUp or PGD, nor of files: each step it calls
``method.loss(model, x, y)`` on a batch in [0, 1] pixel space and takes an SGD step; each epoch
it calls ``method.on_epoch_start(epoch, epochs)``, and ``fit`` hands each finished epoch's
numbers to a callback (``train()`` writes the run directory there).

* SGD with momentum and weight decay; a step (x ``lr_gamma`` every ``lr_step_size`` epochs) or
  cosine (to 0 over ``epochs``) learning-rate schedule, stepped once per epoch.
* Batches: each epoch is a permutation of the training set seeded by (seed, epoch), cut into
  global batches of ``batch_size``; the last batch is kept unless it is too small for BatchNorm
  (fewer than 2 inputs per process). Datasets with ``train_augment == "crop-flip"`` (CIFAR, SVHN)
  get a batched random crop (zero padding side // 8) and horizontal flip on the device.
* Randomness: ``fit`` re-seeds the global RNGs at the start of every epoch from (seed, epoch,
  rank), so an epoch's noise, augmentation and attack draws depend on nothing before it. That
  is what makes a resume continue bit-for-bit (on the same device type and number of
  processes) without storing RNG states.
* AMP (CUDA only): autocast to bfloat16 where supported, else float16 with a GradScaler.
* DDP under ``torchrun`` (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA, one device per process
  (cuda:LOCAL_RANK, ``processes.choose_device``);
  process r trains on inputs r, r + W, ... of each global batch, so W processes compute the
  same averaged gradient as one process would. Methods receive the DDP-wrapped model.
* A non-finite loss stops training (``NonFiniteLoss``) before the epoch is reported, so the last
  good checkpoint stays. Checked every ``sync_every`` steps and at the end of each epoch, to
  spare the device a host sync per step.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .augment import crop_flip
from .configs import SCHEDULES, TrainConfig
from .data import ImageDataset, TensorImageDataset
from .methods import Method
from .noise import add_noise
from .processes import ProcessGroup
from .seeding import derive_seed


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint was kept."""


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The global-RNG seed of process ``rank`` in epoch ``epoch`` (0-based): ``derive_seed(seed,
    epoch, rank)`` (``smoothcert.seeding``, the one seeding rule: any seed in [0, 2**63 - 1])."""
    return derive_seed(seed, epoch, rank)


# -- batches -------------------------------------------------------------------------------------
class Batches:
    """The batches of one process over a dataset split.

    ``train=True``: epoch e is a permutation seeded by (seed, e), cut into global batches of
    ``batch_size``; a global batch is trimmed to a multiple of the world size, and this process
    takes its entries rank, rank + world, ... A last batch with fewer than 2 inputs per process is
    dropped. ``train=False``: the split in order, this process taking every world-th input.
    In-memory datasets are indexed directly; others go through a DataLoader (``num_workers``)."""

    def __init__(self, dataset: ImageDataset, batch_size: int, *, train: bool, seed: int = 0, rank: int = 0,
                 world: int = 1, device: torch.device = torch.device("cpu"), limit: int | None = None,
                 num_workers: int = 0):
        self.dataset, self.batch_size, self.train = dataset, batch_size, train
        self.seed, self.rank, self.world, self.device, self.num_workers = seed, rank, world, device, num_workers
        self.n = len(dataset) if limit is None else min(limit, len(dataset))
        self.crop_padding = max(1, min(dataset.input_shape[1:]) // 8) if train and dataset.train_augment == "crop-flip" else 0

    def _index_batches(self, epoch: int) -> list[torch.Tensor]:
        if not self.train:
            idx = torch.arange(self.rank, self.n, self.world)
            return list(idx.split(self.batch_size))
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch)))
        out = []
        for b in perm.split(self.batch_size):
            b = b[: len(b) - len(b) % self.world]
            if len(b) < 2 * self.world:
                continue
            out.append(b[self.rank :: self.world])
        return out

    def __len__(self) -> int:
        return len(self._index_batches(0))

    def epoch(self, epoch: int = 0, with_index: bool = False) -> Iterator[tuple[torch.Tensor, ...]]:
        """(x, y) batches on the device, crop/flip applied where the dataset asks for it; with
        ``with_index`` (x, y, idx), idx the (B,) dataset indices of the batch (on the CPU)."""
        batches = self._index_batches(epoch)
        non_blocking = self.device.type == "cuda"
        if isinstance(self.dataset, TensorImageDataset):
            source: Any = ((self.dataset.x[b], self.dataset.y[b]) for b in batches)
        else:
            source = torch.utils.data.DataLoader(self.dataset, batch_sampler=[b.tolist() for b in batches],
                                                 num_workers=self.num_workers, pin_memory=non_blocking)
        for b, (x, y) in zip(batches, source):
            x = x.to(self.device, non_blocking=non_blocking)
            y = torch.as_tensor(y).to(self.device, non_blocking=non_blocking)
            if self.crop_padding:
                x = crop_flip(x, self.crop_padding)
            yield (x, y, b) if with_index else (x, y)


@dataclass(frozen=True)
class EpochResult:
    """One finished epoch (1-based ``epoch``), as ``train_log.tsv`` records it."""

    epoch: int
    seconds: float
    lr: float
    train_loss: float
    train_acc: float
    test_acc_noisy: float

    def row(self) -> list[Any]:
        return [self.epoch, round(self.seconds, 3), self.lr, self.train_loss, self.train_acc, self.test_acc_noisy]


# -- the trainer ---------------------------------------------------------------------------------
class Trainer:
    """Optimiser, schedule, AMP and (optionally) DDP around ``method.loss``; one ``step`` per batch.

    ``model`` is the plain model (``nn.Sequential(NormalizeLayer, net)``), moved to ``device``;
    ``self.net`` is what methods see (the DDP wrapper under ``ddp=True``). The optimisation
    settings come from ``config`` (a ``TrainConfig``: epochs, lr, momentum, weight_decay,
    schedule, lr_step_size, lr_gamma, amp, channels_last; its other fields are not the loop's),
    or as keywords (``Trainer(model, method, epochs=1, lr=0.05)``: they build or change the
    config). ``channels_last`` puts the weights and every 4-d batch in NHWC layout (same maths,
    another speed)."""

    def __init__(self, model: nn.Module, method: Method, config: TrainConfig | None = None, *,
                 device: str | torch.device = torch.device("cpu"), ddp: bool = False, **settings: Any):
        self.config = config = TrainConfig.build(config, settings)
        epochs, lr, momentum, weight_decay = config.epochs, config.lr, config.momentum, config.weight_decay
        self.device = torch.device(device)
        self.channels_last = config.channels_last
        self.model = model.to(self.device,
                              memory_format=torch.channels_last if self.channels_last else torch.preserve_format)
        self.method = method
        self.epochs = epochs
        if ddp:
            from torch.nn.parallel import DistributedDataParallel

            from .models.dubin import has_dual_bn

            self.net: nn.Module = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=has_dual_bn(self.model))  # a dual-BN model leaves one branch unused per step
        else:
            self.net = self.model
        if config.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(self.model.parameters(), lr=lr,
                                                                     weight_decay=weight_decay)
        else:  # "sgd" (TrainConfig checked the name against OPTIMIZERS)
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum,
                                             weight_decay=weight_decay)
        if config.schedule == "step":
            self.scheduler: Any = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=config.lr_step_size,
                                                                  gamma=config.lr_gamma)
        else:  # "cosine" (TrainConfig checked the name against SCHEDULES)
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=epochs)
        self.amp_dtype: torch.dtype | None = None
        if config.amp:
            if self.device.type != "cuda":
                raise ValueError("amp needs a CUDA device")
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.epochs_done = 0

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """One SGD step on ``method.loss(net, x, y)`` (``loss(net, x, y, index=index)`` for a
        method that ``uses_index``); returns the detached loss (no host sync)."""
        self.model.train()
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            if self.method.uses_index:
                if index is None:
                    raise ValueError(f"method {self.method.name} needs the batch's dataset indices (index)")
                loss = self.method.loss(self.net, x, y, index=index)
            else:
                loss = self.method.loss(self.net, x, y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def train_epoch(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], num_batches: int, epoch: int,
                    dist_info: ProcessGroup | None = None, progress: bool = False, sync_every: int = 20) -> tuple[float, float]:
        """Train over ``batches``; returns (mean loss per input, training accuracy) over all processes.
        Raises NonFiniteLoss as soon as a check finds a non-finite loss on any process."""
        dev = self.device
        stats = torch.zeros(4, dtype=torch.float64, device=dev)  # loss sum, correct, counted, inputs
        bad = torch.zeros((), dtype=torch.bool, device=dev)
        bar = tqdm(total=num_batches, desc=f"epoch {epoch + 1}/{self.epochs}", disable=not progress, leave=False,
                   dynamic_ncols=True)
        try:
            for i, (x, y, *index) in enumerate(batches):
                loss = self.step(x, y, *index)
                n = y.shape[0]
                stats[0] += loss.double() * n
                stats[3] += n
                if self.method.last_correct is not None:
                    stats[1] += self.method.last_correct.double()
                    stats[2] += self.method.last_count
                bad |= ~torch.isfinite(loss)
                bar.update(1)
                if (i + 1) % sync_every == 0:
                    self._check(bad, dist_info, epoch, i)
                    if progress:
                        s = stats.tolist()
                        bar.set_postfix(loss=f"{s[0] / max(s[3], 1):.4f}", acc=f"{s[1] / max(s[2], 1):.3f}")
        finally:
            bar.close()
        stats = torch.cat([stats, bad.double().view(1)])
        if dist_info is not None:
            dist_info.all_reduce(stats)
        s = stats.tolist()
        if s[4] > 0:
            raise NonFiniteLoss(f"the training loss became non-finite in epoch {epoch + 1}")
        return s[0] / max(s[3], 1), s[1] / max(s[2], 1)

    def _check(self, bad: torch.Tensor, dist_info: ProcessGroup | None, epoch: int, step: int) -> None:
        flag = bad.to(torch.int32)
        if dist_info is not None:
            dist_info.all_reduce(flag, dist.ReduceOp.MAX)
        if bool(flag):
            raise NonFiniteLoss(f"the training loss became non-finite in epoch {epoch + 1} (by step {step + 1})")

    @torch.no_grad()
    def evaluate(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], sigma: float, seed: int,
                 dist_info: ProcessGroup | None = None, noise: str = "gaussian") -> float:
        """Accuracy of the base model (eval mode) on x + N(0, sigma^2 I) (``noise`` at sigma; x
        itself for sigma == 0), the noise from a generator seeded by ``seed``: the same draw every epoch.
        The base model is ``method.evaluate_model(model)`` (the model itself unless the method
        says otherwise; None: nan)."""
        net = self.method.evaluate_model(self.model)
        if net is None:
            return float("nan")
        was_training = self.model.training
        self.model.eval()
        gen = torch.Generator(device=self.device).manual_seed(seed) if sigma > 0 else None
        counts = torch.zeros(2, dtype=torch.float64, device=self.device)
        try:
            with self._autocast():
                for x, y in batches:
                    pred = net(add_noise(x, sigma, noise, gen)).argmax(1)
                    counts[0] += (pred == y).sum()
                    counts[1] += y.shape[0]
        finally:
            self.model.train(was_training)
        if dist_info is not None:
            dist_info.all_reduce(counts)
        correct, total = counts.tolist()
        return correct / total if total else float("nan")

    def fit(self, train_batches: Batches, test_batches: Batches, *, start: int = 0, seed: int = 0, sigma: float = 0.0,
            noise: str = "gaussian", processes: ProcessGroup | None = None, progress: bool = False,
            on_epoch: Callable[[EpochResult], None] | None = None) -> None:
        """Train epochs ``start`` .. ``epochs - 1`` (0-based): re-seed the global RNGs from (seed,
        epoch, rank), tell the method, train, measure the noisy test accuracy (``evaluate`` with
        ``noise`` at ``sigma``), step the schedule, then call ``on_epoch`` with the epoch's numbers.
        ``self.epochs_done`` counts the finished epochs (also after a ``NonFiniteLoss``)."""
        rank = processes.rank if processes is not None else 0
        self.epochs_done = start
        for epoch in range(start, self.epochs):
            t0 = time.perf_counter()
            torch.manual_seed(epoch_seed(seed, epoch, rank))
            self.method.on_epoch_start(epoch, self.epochs)
            lr = self.lr
            loss, acc = self.train_epoch(train_batches.epoch(epoch, with_index=self.method.uses_index),
                                         len(train_batches), epoch, processes, progress)
            test_acc = self.evaluate(test_batches.epoch(), sigma, seed + rank, processes, noise)
            self.scheduler.step()
            self.epochs_done = epoch + 1
            if on_epoch is not None:
                on_epoch(EpochResult(epoch + 1, time.perf_counter() - t0, lr, loss, acc, test_acc))
            if processes is not None:
                processes.barrier()

    def state_dict(self) -> dict[str, Any]:
        state = {"state_dict": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict()}
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler.is_enabled() and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])




__all__ = ["Batches", "EpochResult", "NonFiniteLoss", "SCHEDULES", "Trainer", "epoch_seed"]
