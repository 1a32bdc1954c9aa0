"""``train()``, the library call behind ``smoothcert train``, in three readable pieces:

1. **Configuration** (``configure``): check the arguments, build the method and load the data;
   the result (``TrainSetup``) holds the ``config`` dict that ``config.json`` records.
2. **The run directory** (``RunDir``, ``smoothcert.runs.directory``): decides whether to start afresh
   (an absent or empty folder, or ``overwrite``) or resume (same config, except
   ``RESUME_MAY_CHANGE``) -- a folder with content is never overwritten without ``overwrite`` --
   and writes config.json, train_log.tsv (one row per epoch) and the atomic checkpoint.pt after
   each epoch.
3. **The loop** (``Trainer.fit``, ``smoothcert.trainer``): epochs of ``method.loss`` steps, the
   schedule, AMP, DDP and the bit-for-bit reproducible seeding; it knows nothing of files.

The defaults are Cohen et al.'s (2019) CIFAR-10 recipe: lr 0.1, x0.1 every 30 of 90 epochs,
batch 256, momentum 0.9, weight decay 1e-4. ``batch_size`` is the global batch over all torchrun
processes; only rank 0 writes files. Each epoch's log row holds the base model's accuracy on
test inputs plus N(0, sigma^2 I) (or the run's other noise, ``config_noise``; one fixed draw per
input; clean accuracy when the method has no sigma). A non-finite loss stops training before
that epoch's checkpoint, so the last good checkpoint stays; so does a write that fails (a full
disk, a read-only folder: ``OutputError``, one line naming the path), and a resume once the
cause is gone continues as if nothing had happened. ``seed`` defaults to 0 (as ``--seed``):
runs are reproducible by default; any seed in [0, 2**63 - 1] (``smoothcert.seeding``).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import __version__
from .data import ImageDataset, get_dataset
from .logs import OutputError, TSVLog
from .methods import Method, TrainContext, create_method
from .noise import config_noise
from .processes import ProcessGroup
from .runs.directory import RESUME_MAY_CHANGE, TRAIN_COLUMNS, TRAIN_LOG_NAME, RunDir, build_model
from .trainer import SCHEDULES, Batches, EpochResult, NonFiniteLoss, Trainer, epoch_seed
from .seeding import check_seed
from .validation import ArgumentError, check_float, check_int


# -- 1. configuration ----------------------------------------------------------------------------
@dataclass
class TrainSetup:
    """What ``configure`` checked and built: the config (as config.json records it), the method
    object and the two splits."""

    config: dict[str, Any]
    method: Method
    train_set: ImageDataset
    test_set: ImageDataset


def configure(*, dataset: str = "digits", arch: str | None = None, method: str = "gauss",
              method_params: dict[str, Any] | None = None, epochs: int = 90, batch_size: int = 256, lr: float = 0.1,
              momentum: float = 0.9, weight_decay: float = 1e-4, schedule: str = "step", lr_step_size: int = 30,
              lr_gamma: float = 0.1, data_root: str | os.PathLike | None = None, download: bool = False,
              seed: int = 0, amp: bool = False, channels_last: bool = False, model_kwargs: dict[str, Any] | None = None,
              max_train_samples: int | None = None, max_test_samples: int | None = None,
              world_size: int = 1) -> TrainSetup:
    """Check the training arguments (ArgumentError naming the bad one), build the method, load
    both splits and return them with the run's config."""
    epochs = check_int("epochs", epochs, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    lr = check_float("lr", lr, 0.0, lo_open=True)
    momentum = check_float("momentum", momentum, 0.0, 1.0, hi_open=True)
    weight_decay = check_float("weight_decay", weight_decay, 0.0)
    if schedule not in SCHEDULES:
        raise ArgumentError("schedule", f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    lr_step_size = check_int("lr_step_size", lr_step_size, 1)
    lr_gamma = check_float("lr_gamma", lr_gamma, 0.0, 1.0, lo_open=True)
    seed = check_seed(seed)
    for name, v in (("max_train_samples", max_train_samples), ("max_test_samples", max_test_samples)):
        if v is not None:
            check_int(name, v, 1)
    if batch_size % world_size:
        raise ArgumentError("batch_size", f"batch_size ({batch_size}) must be a multiple of the number of processes "
                                          f"({world_size})")
    if data_root is not None:
        data_root = str(Path(data_root).resolve())
        if not Path(data_root).is_dir():
            raise ArgumentError("data_root", f"data_root {data_root!r} does not exist")
    meth = create_method(method, **dict(method_params or {}))
    train_set = get_dataset(dataset, "train", data_root, download)
    test_set = get_dataset(dataset, "test", data_root, download)
    config = json.loads(json.dumps({
        "format": "smoothcert-1", "smoothcert_version": __version__,
        "dataset": dataset, "data_root": data_root, "arch": arch or meth.default_arch or train_set.default_arch,
        "num_classes": train_set.num_classes, "input_shape": list(train_set.input_shape),
        "mean": list(train_set.mean), "std": list(train_set.std), "model_kwargs": dict(model_kwargs or {}),
        "sigma": float(meth.params().get("sigma") or 0.0), "method": method, "method_params": meth.params(),
        "train_augment": train_set.train_augment, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "momentum": momentum, "weight_decay": weight_decay, "schedule": schedule, "lr_step_size": lr_step_size,
        "lr_gamma": lr_gamma, "seed": seed, "amp": bool(amp), "channels_last": bool(channels_last),
        "world_size": world_size, "max_train_samples": max_train_samples, "max_test_samples": max_test_samples,
    }))
    return TrainSetup(config, meth, train_set, test_set)


# -- 2. the run directory, written epoch by epoch ------------------------------------------------------
class _EpochWriter:
    """``Trainer.fit``'s ``on_epoch`` on rank 0: config.json and the log with the first finished
    epoch, then a log row and an atomic checkpoint per epoch; a line on stderr when ``talk``.
    ``saved``: the epoch of the last checkpoint on disk (``start`` until one is written)."""

    def __init__(self, run: RunDir, config: dict[str, Any], trainer: Trainer, write: bool, talk: bool,
                 start: int = 0):
        self.run, self.config, self.trainer, self.write, self.talk = run, config, trainer, write, talk
        self.log: TSVLog | None = None
        self.saved = start

    def __call__(self, r: EpochResult) -> None:
        if self.write:
            if self.log is None:
                self.run.write_config(self.config)
                self.log = self.run.open_log()
            self.log.write(r.row())
            self.run.write_checkpoint(self.config, r.epoch, self.trainer.state_dict())
            self.saved = r.epoch
        if self.talk:
            tqdm.write(f"epoch {r.epoch}/{self.config['epochs']}  lr {r.lr:.4g}  loss {r.train_loss:.4f}  "
                       f"acc {r.train_acc:.4f}  test acc (sigma {self.config['sigma']:g}) {r.test_acc_noisy:.4f}  "
                       f"{r.seconds:.1f}s", file=sys.stderr)

    def close(self, quiet: bool = False) -> None:
        """Close the log; ``quiet``: after a failure, so that a second write error (the flush of
        a full disk) does not hide the first."""
        log, self.log = self.log, None
        if log is not None:
            try:
                log.close()
            except OutputError:
                if not quiet:
                    raise


# -- 3. the library entry point: configuration, run directory, loop ----------------------------------
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
    overwrite: bool = False,
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
    ``seed`` (default 0, as the CLI's ``--seed``: reproducible by default) seeds the
    initialisation, the batches and the noise; any integer in [0, 2**63 - 1].
    ``out_dir`` absent or empty: a fresh run. A folder with content is never overwritten
    unless ``overwrite``: ``resume`` continues the run there (its checkpoint.pt, with the same
    config, except ``epochs`` for step schedules, ``data_root`` and ``channels_last``; a folder
    with content but no checkpoint is refused, naming what it holds); ``overwrite`` starts
    afresh, deleting the run's config.json, checkpoint.pt and train_log.tsv there (other files
    stay); neither: an error naming what the folder holds. ``resume`` and ``overwrite`` exclude
    each other.

    Returns ``out_dir``. Raises ValueError naming the bad argument, NonFiniteLoss if the loss
    diverges, ``OutputError`` (a ValueError naming ``out_dir`` and the path) if a write fails (a
    read-only folder, a full disk); in both cases the last good checkpoint is kept and a resume
    continues from it."""
    out = Path(out_dir)
    num_workers = check_int("num_workers", num_workers, 0)
    processes = ProcessGroup(device)  # under torchrun: cuda means cuda:LOCAL_RANK (processes.py)
    try:
        setup = configure(dataset=dataset, arch=arch, method=method, method_params=method_params, epochs=epochs,
                          batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
                          schedule=schedule, lr_step_size=lr_step_size, lr_gamma=lr_gamma, data_root=data_root,
                          download=download, seed=seed, amp=amp, channels_last=channels_last,
                          model_kwargs=model_kwargs, max_train_samples=max_train_samples,
                          max_test_samples=max_test_samples, world_size=processes.world)
        config, rank = setup.config, processes.rank
        run = RunDir(out)
        ckpt = run.resume_point(config, resume, processes.device, overwrite=bool(overwrite))
        torch.manual_seed(config["seed"])
        trainer = Trainer(build_model(config), setup.method, epochs=config["epochs"], lr=config["lr"],
                          momentum=config["momentum"], weight_decay=config["weight_decay"],
                          schedule=config["schedule"], lr_step_size=config["lr_step_size"],
                          lr_gamma=config["lr_gamma"], device=processes.device, amp=amp, ddp=processes.active,
                          channels_last=channels_last)
        start = 0
        if ckpt is not None:
            trainer.load_state_dict(ckpt)
            start = int(ckpt["epoch"])
        if rank == 0:
            run.prepare(config, ckpt)
        processes.barrier()
        talk = not quiet and rank == 0
        if start >= config["epochs"]:
            if talk:
                print(f"{out}: already trained for {start} epochs", file=sys.stderr)
            return out
        if talk and start:
            print(f"{out}: resuming after epoch {start}", file=sys.stderr)
        common = dict(rank=rank, world=processes.world, device=processes.device, num_workers=num_workers)
        train_batches = Batches(setup.train_set, config["batch_size"], train=True, seed=config["seed"],
                                limit=max_train_samples, **common)
        test_batches = Batches(setup.test_set, config["batch_size"], train=False, limit=max_test_samples, **common)
        if len(train_batches) == 0:
            raise ArgumentError("max_train_samples", f"max_train_samples: the training set ({train_batches.n} inputs) "
                                                     "is too small for batches of 2 inputs per process")
        setup.method.setup(TrainContext(setup.train_set, config["num_classes"], processes.device, out, rank == 0,
                                        max_train_samples, config["seed"], talk and sys.stderr.isatty()))
        writer = _EpochWriter(run, config, trainer, write=rank == 0, talk=talk, start=start)
        failed = True
        try:
            trainer.fit(train_batches, test_batches, start=start, seed=config["seed"], sigma=config["sigma"],
                        noise=config_noise(config), processes=processes, progress=talk and sys.stderr.isatty(),
                        on_epoch=writer)
            failed = False
        except NonFiniteLoss as e:
            done = trainer.epochs_done
            kept = f"the checkpoint of epoch {done}" if done > 0 else "no checkpoint (none was written yet)"
            raise NonFiniteLoss(f"{e}; training stopped, {str(out)!r} keeps {kept} (try a lower lr)") from None
        except OutputError as e:  # a full disk, ...: say what is kept and how to go on
            done = writer.saved
            kept = (f"keeps the checkpoint of epoch {done}; free the space (or fix the folder) and resume"
                    if done > 0 else "has no checkpoint yet")
            raise OutputError(e.arg, f"{e}; training stopped, {str(out)!r} {kept}", e.path, e.errno) from e
        finally:
            writer.close(quiet=failed)
        return out
    finally:
        processes.close()


__all__ = ["Batches", "NonFiniteLoss", "RESUME_MAY_CHANGE", "SCHEDULES", "TRAIN_COLUMNS", "TRAIN_LOG_NAME",
           "TrainSetup", "Trainer", "configure", "epoch_seed", "train"]
