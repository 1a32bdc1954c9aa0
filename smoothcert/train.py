"""The one training loop for every method, and ``train()``, the library call behind ``smoothcert train``.

The Trainer knows nothing of MaxUp or PGD: each step it calls ``method.loss(model, x, y)`` on a
batch in [0, 1] pixel space and takes an SGD step; each epoch it calls
``method.on_epoch_start(epoch, epochs)``. Around that:

* SGD with momentum and weight decay; a step (x ``lr_gamma`` every ``lr_step_size`` epochs) or
  cosine (to 0 over ``epochs``) learning-rate schedule, stepped once per epoch. The defaults are
  Cohen et al.'s (2019) CIFAR-10 recipe: lr 0.1, x0.1 every 30 of 90 epochs, batch 256,
  momentum 0.9, weight decay 1e-4.
* Batches: each epoch is a permutation of the training set seeded by (seed, epoch), cut into
  global batches of ``batch_size``; the last batch is kept unless it is too small for BatchNorm
  (fewer than 2 inputs per process). Datasets with ``train_augment == "crop-flip"`` (CIFAR, SVHN)
  get a batched random crop (zero padding side // 8) and horizontal flip on the device.
* Randomness: the global RNGs are re-seeded at the start of every epoch from (seed, epoch, rank),
  so an epoch's noise, augmentation and attack draws depend on nothing before it. That is what
  makes ``resume`` continue bit-for-bit (on the same device type and number of processes)
  without storing RNG states.
* AMP (CUDA only): autocast to bfloat16 where supported, else float16 with a GradScaler.
* DDP under ``torchrun`` (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA, one device per process.
  ``batch_size`` is the global batch; process r trains on inputs r, r + W, ... of each global
  batch, so W processes compute the same averaged gradient as one process would. Only rank 0
  writes files. Methods receive the DDP-wrapped model (see ``methods.common.unwrap``).
* Each epoch: one line in ``train_log.tsv`` (epoch, seconds, lr, train_loss, train_acc,
  test_acc_noisy -- the base model's accuracy on test inputs plus N(0, sigma^2 I), one fixed
  noise draw per input, clean accuracy when the method has no sigma), then an atomic
  ``checkpoint.pt`` (model, optimizer, scheduler, scaler, epoch, config).
* A non-finite loss stops training (``NonFiniteLoss``) before the epoch's checkpoint is written,
  so the last good checkpoint stays. Checked every ``sync_every`` steps and at the end of each
  epoch, to spare the device a host sync per step.
"""
from __future__ import annotations

import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .augment import crop_flip
from .data import ImageDataset, TensorImageDataset, get_dataset
from .logs import TSVLog, atomic_torch_save, atomic_write_bytes, atomic_write_json, read_tsv, safe_torch_load
from .methods import Method, create_method
from .models import create_model
from .noise import add_noise, config_noise
from .runs import CHECKPOINT_NAME, CONFIG_NAME, FORMAT, read_config
from .validation import check_float, check_int

TRAIN_LOG_NAME = "train_log.tsv"
TRAIN_COLUMNS = ("epoch", "seconds", "lr", "train_loss", "train_acc", "test_acc_noisy")
SCHEDULES = ("step", "cosine")
# config keys a resume may change: they do not change what is computed
RESUME_MAY_CHANGE = ("epochs", "data_root", "smoothcert_version", "channels_last")
_SEED_STRIDE = 1_000_003


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint was kept."""


# -- distributed ---------------------------------------------------------------------------------
class _Dist:
    """Rank, world size and whether this module started the process group (to end it)."""

    def __init__(self, device: str | torch.device | None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.started_here = False
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError("device: CUDA is not available on this machine")
            if self.world > 1:
                dev = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(dev)
        self.device = dev
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
            self.started_here = True

    @property
    def active(self) -> bool:
        return self.world > 1

    def all_reduce(self, t: torch.Tensor, op: Any = None) -> torch.Tensor:
        if self.active:
            dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.started_here and dist.is_initialized():
            dist.destroy_process_group()


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The global-RNG seed of process ``rank`` in epoch ``epoch`` (0-based)."""
    return (seed * _SEED_STRIDE + epoch) * 4099 + rank


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
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * _SEED_STRIDE + epoch))
        out = []
        for b in perm.split(self.batch_size):
            b = b[: len(b) - len(b) % self.world]
            if len(b) < 2 * self.world:
                continue
            out.append(b[self.rank :: self.world])
        return out

    def __len__(self) -> int:
        return len(self._index_batches(0))

    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) batches on the device, crop/flip applied where the dataset asks for it."""
        batches = self._index_batches(epoch)
        non_blocking = self.device.type == "cuda"
        if isinstance(self.dataset, TensorImageDataset):
            source: Any = ((self.dataset.x[b], self.dataset.y[b]) for b in batches)
        else:
            source = torch.utils.data.DataLoader(self.dataset, batch_sampler=[b.tolist() for b in batches],
                                                 num_workers=self.num_workers, pin_memory=non_blocking)
        for x, y in source:
            x = x.to(self.device, non_blocking=non_blocking)
            y = torch.as_tensor(y).to(self.device, non_blocking=non_blocking)
            if self.crop_padding:
                x = crop_flip(x, self.crop_padding)
            yield x, y


# -- the trainer ---------------------------------------------------------------------------------
class Trainer:
    """Optimiser, schedule, AMP and (optionally) DDP around ``method.loss``; one ``step`` per batch.

    ``model`` is the plain model (``nn.Sequential(NormalizeLayer, net)``), moved to ``device``;
    ``self.net`` is what methods see (the DDP wrapper under ``ddp=True``). ``channels_last`` puts
    the weights and every 4-d batch in NHWC layout (same maths; conv-heavy steps such as LeNet's
    SmoothAdv step ran 1.55x faster on a 2-core CPU)."""

    def __init__(self, model: nn.Module, method: Method, *, epochs: int, lr: float = 0.1, momentum: float = 0.9,
                 weight_decay: float = 1e-4, schedule: str = "step", lr_step_size: int = 30, lr_gamma: float = 0.1,
                 device: torch.device = torch.device("cpu"), amp: bool = False, ddp: bool = False,
                 channels_last: bool = False):
        self.device = torch.device(device)
        self.channels_last = bool(channels_last)
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
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        if schedule == "step":
            self.scheduler: Any = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=lr_step_size, gamma=lr_gamma)
        elif schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=epochs)
        else:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.amp_dtype: torch.dtype | None = None
        if amp:
            if self.device.type != "cuda":
                raise ValueError("amp needs a CUDA device")
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One SGD step on ``method.loss(net, x, y)``; returns the detached loss (no host sync)."""
        self.model.train()
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.method.loss(self.net, x, y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def train_epoch(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], num_batches: int, epoch: int,
                    dist_info: _Dist | None = None, progress: bool = False, sync_every: int = 20) -> tuple[float, float]:
        """Train over ``batches``; returns (mean loss per input, training accuracy) over all processes.
        Raises NonFiniteLoss as soon as a check finds a non-finite loss on any process."""
        dev = self.device
        stats = torch.zeros(4, dtype=torch.float64, device=dev)  # loss sum, correct, counted, inputs
        bad = torch.zeros((), dtype=torch.bool, device=dev)
        bar = tqdm(total=num_batches, desc=f"epoch {epoch + 1}/{self.epochs}", disable=not progress, leave=False,
                   dynamic_ncols=True)
        try:
            for i, (x, y) in enumerate(batches):
                loss = self.step(x, y)
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

    def _check(self, bad: torch.Tensor, dist_info: _Dist | None, epoch: int, step: int) -> None:
        flag = bad.to(torch.int32)
        if dist_info is not None:
            dist_info.all_reduce(flag, dist.ReduceOp.MAX)
        if bool(flag):
            raise NonFiniteLoss(f"the training loss became non-finite in epoch {epoch + 1} (by step {step + 1})")

    @torch.no_grad()
    def evaluate(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], sigma: float, seed: int,
                 dist_info: _Dist | None = None, noise: str = "gaussian") -> float:
        """Accuracy of the base model (eval mode) on x + N(0, sigma^2 I) (``noise`` at sigma; x
        itself for sigma == 0), the noise from a generator seeded by ``seed``: the same draw every epoch."""
        was_training = self.model.training
        self.model.eval()
        gen = torch.Generator(device=self.device).manual_seed(seed) if sigma > 0 else None
        counts = torch.zeros(2, dtype=torch.float64, device=self.device)
        try:
            with self._autocast():
                for x, y in batches:
                    pred = self.model(add_noise(x, sigma, noise, gen)).argmax(1)
                    counts[0] += (pred == y).sum()
                    counts[1] += y.shape[0]
        finally:
            self.model.train(was_training)
        if dist_info is not None:
            dist_info.all_reduce(counts)
        correct, total = counts.tolist()
        return correct / total if total else float("nan")

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


# -- validation ----------------------------------------------------------------------------------
def _normalise(obj: Any) -> Any:
    """``obj`` as it reads back from config.json (tuples become lists, ...)."""
    return json.loads(json.dumps(obj))


def _compare_configs(old: dict[str, Any], new: dict[str, Any], out_dir: Path) -> None:
    for key in sorted(set(old) | set(new)):
        if key in RESUME_MAY_CHANGE:
            continue
        if old.get(key) != new.get(key):
            raise ValueError(f"{str(out_dir)!r} holds a run with another config ({key} is {old.get(key)!r} there, "
                             f"{new.get(key)!r} here); resume with the same settings or use another folder")
    if new.get("schedule") == "cosine" and old.get("epochs") != new.get("epochs"):
        raise ValueError(f"{str(out_dir)!r} was trained with a cosine schedule over {old.get('epochs')} epochs; "
                         f"a resume must keep epochs={old.get('epochs')} (the schedule depends on it)")


def _trim_log(path: Path, last_epoch: int) -> None:
    """Drop log lines of epochs after ``last_epoch`` (written before a crash, not checkpointed)."""
    if not path.is_file():
        return
    header, rows = read_tsv(path)
    if header != list(TRAIN_COLUMNS):
        raise ValueError(f"{str(path)!r} is not a smoothcert training log")
    keep = [r for r in rows if int(r[0]) <= last_epoch]
    if len(keep) != len(rows):
        atomic_write_bytes(path, ("\n".join("\t".join(r) for r in [header, *keep]) + "\n").encode())


# -- the library entry point ---------------------------------------------------------------------
def train(
    out_dir: str | os.PathLike,
    *,
    dataset: str = "digits",
    arch: str | None = None,
    method: str = "gauss",
    method_params: dict[str, Any] | None = None,
    epochs: int = 90,
    batch_size: int = 256,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    schedule: str = "step",
    lr_step_size: int = 30,
    lr_gamma: float = 0.1,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
    amp: bool = False,
    channels_last: bool = False,
    resume: bool = False,
    quiet: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    num_workers: int = 0,
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
) -> Path:
    """Train ``arch`` on ``dataset`` with training method ``method`` into the run directory ``out_dir``
    (config.json, checkpoint.pt, train_log.tsv; see the module doc and ``smoothcert.runs``).

    ``method_params`` are the method's constructor arguments (e.g. {"sigma": 0.25, "m": 4}).
    ``arch`` defaults to the dataset's ``default_arch``; ``model_kwargs`` go to ``create_model``
    (e.g. {"norm": "dubin"}). ``batch_size`` is the global batch (over all torchrun processes).
    ``max_train_samples``/``max_test_samples`` use the first N inputs of a split (quick runs).
    ``channels_last``: NHWC weights and batches (a speed choice only; a resume may change it).
    ``resume``: continue the run in ``out_dir`` (which must have the same config, except
    ``epochs`` for step schedules and ``data_root``); without a checkpoint there it starts afresh.
    Without ``resume`` an ``out_dir`` that already holds a run is an error.

    Returns ``out_dir``. Raises ValueError naming the bad argument, NonFiniteLoss if the loss
    diverges (the last good checkpoint is kept)."""
    out = Path(out_dir)
    epochs = check_int("epochs", epochs, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    lr = check_float("lr", lr, 0.0, lo_open=True)
    momentum = check_float("momentum", momentum, 0.0, 1.0, hi_open=True)
    weight_decay = check_float("weight_decay", weight_decay, 0.0)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    lr_step_size = check_int("lr_step_size", lr_step_size, 1)
    lr_gamma = check_float("lr_gamma", lr_gamma, 0.0, 1.0, lo_open=True)
    seed = check_int("seed", seed, 0)
    num_workers = check_int("num_workers", num_workers, 0)
    for name, v in (("max_train_samples", max_train_samples), ("max_test_samples", max_test_samples)):
        if v is not None:
            check_int(name, v, 1)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a folder")
    method_params = dict(method_params or {})
    model_kwargs = dict(model_kwargs or {})
    if data_root is not None:
        data_root = str(Path(data_root).resolve())
        if not Path(data_root).is_dir():
            raise ValueError(f"data_root {data_root!r} does not exist")

    meth = create_method(method, **method_params)
    train_set = get_dataset(dataset, "train", data_root, download)
    test_set = get_dataset(dataset, "test", data_root, download)
    arch = arch or train_set.default_arch
    c, h, _ = train_set.input_shape

    dist_info = _Dist(device)
    try:
        world, rank = dist_info.world, dist_info.rank
        if batch_size % world:
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of the number of processes ({world})")
        torch.manual_seed(seed)
        model = create_model(arch, num_classes=train_set.num_classes, in_channels=c, input_size=h,
                             mean=train_set.mean, std=train_set.std, **model_kwargs)
        sigma = float(meth.params().get("sigma") or 0.0)
        config = _normalise({
            "format": FORMAT, "smoothcert_version": __version__,
            "dataset": dataset, "data_root": data_root, "arch": arch, "num_classes": train_set.num_classes,
            "input_shape": list(train_set.input_shape), "mean": list(train_set.mean), "std": list(train_set.std),
            "model_kwargs": model_kwargs, "sigma": sigma, "method": method, "method_params": meth.params(),
            "train_augment": train_set.train_augment, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "momentum": momentum, "weight_decay": weight_decay, "schedule": schedule, "lr_step_size": lr_step_size,
            "lr_gamma": lr_gamma, "seed": seed, "amp": bool(amp), "channels_last": bool(channels_last),
            "world_size": world,
            "max_train_samples": max_train_samples, "max_test_samples": max_test_samples,
        })

        ckpt_path, config_path, log_path = out / CHECKPOINT_NAME, out / CONFIG_NAME, out / TRAIN_LOG_NAME
        has_run = ckpt_path.is_file() or config_path.is_file()
        if has_run and not resume:
            raise ValueError(f"{str(out)!r} already holds a run; resume it or choose another folder")
        ckpt = None
        if resume and has_run:
            _compare_configs(read_config(out), config, out)
            if ckpt_path.is_file():
                ckpt = safe_torch_load(ckpt_path, map_location=dist_info.device)
                if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "optimizer" not in ckpt:
                    raise ValueError(f"{str(ckpt_path)!r} is not a resumable smoothcert training checkpoint")
                _compare_configs(ckpt["config"], config, out)

        trainer = Trainer(model, meth, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
                          schedule=schedule, lr_step_size=lr_step_size, lr_gamma=lr_gamma, device=dist_info.device,
                          amp=amp, ddp=dist_info.active, channels_last=channels_last)
        start = 0
        if ckpt is not None:
            trainer.load_state_dict(ckpt)
            start = int(ckpt["epoch"])
        talk = not quiet and rank == 0
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            if ckpt is None:  # leftovers of a run that never finished an epoch
                for stale in (log_path, config_path):
                    if stale.exists():
                        stale.unlink()
            else:
                atomic_write_json(config, config_path)  # epochs may have grown
                _trim_log(log_path, start)
        dist_info.barrier()
        if start >= epochs:
            if talk:
                print(f"{out}: already trained for {start} epochs", file=sys.stderr)
            return out
        if talk and start:
            print(f"{out}: resuming after epoch {start}", file=sys.stderr)

        train_batches = Batches(train_set, batch_size, train=True, seed=seed, rank=rank, world=world,
                                device=dist_info.device, limit=max_train_samples, num_workers=num_workers)
        test_batches = Batches(test_set, batch_size, train=False, rank=rank, world=world, device=dist_info.device,
                               limit=max_test_samples, num_workers=num_workers)
        if len(train_batches) == 0:
            raise ValueError(f"the training set ({train_batches.n} inputs) is too small for batches of "
                             f"2 inputs per process")
        log: TSVLog | None = None  # opened with the first epoch's results, as config.json is written
        progress = talk and sys.stderr.isatty()
        try:
            for epoch in range(start, epochs):
                t0 = time.perf_counter()
                torch.manual_seed(epoch_seed(seed, epoch, rank))
                meth.on_epoch_start(epoch, epochs)
                lr_now = trainer.lr
                loss, acc = trainer.train_epoch(train_batches.epoch(epoch), len(train_batches), epoch, dist_info,
                                                progress)
                test_acc = trainer.evaluate(test_batches.epoch(), sigma, seed + rank, dist_info,
                                            config_noise({"method_params": meth.params()}))
                trainer.scheduler.step()
                seconds = time.perf_counter() - t0
                if rank == 0:
                    if log is None:
                        atomic_write_json(config, config_path)
                        log = TSVLog(log_path, TRAIN_COLUMNS, kind="smoothcert training")
                    log.write([epoch + 1, round(seconds, 3), lr_now, loss, acc, test_acc])
                    atomic_torch_save({"format": FORMAT, "arch": arch, "config": config, "epoch": epoch + 1,
                                       **trainer.state_dict()}, ckpt_path)
                if talk:
                    tqdm.write(f"epoch {epoch + 1}/{epochs}  lr {lr_now:.4g}  loss {loss:.4f}  acc {acc:.4f}  "
                               f"test acc (sigma {sigma:g}) {test_acc:.4f}  {seconds:.1f}s", file=sys.stderr)
                dist_info.barrier()
        except NonFiniteLoss as e:
            kept = f"the checkpoint of epoch {epoch}" if epoch > 0 else "no checkpoint (none was written yet)"
            raise NonFiniteLoss(f"{e}; training stopped, {str(out)!r} keeps {kept} (try a lower lr)") from None
        finally:
            if log is not None:
                log.close()
        return out
    finally:
        dist_info.close()


__all__ = ["Batches", "NonFiniteLoss", "RESUME_MAY_CHANGE", "SCHEDULES", "TRAIN_COLUMNS", "TRAIN_LOG_NAME", "Trainer",
           "epoch_seed", "train"]
