"""``train()``, the library call behind ``smoothcert train``, in three readable pieces:

1. **Configuration** (``TrainConfig``, ``smoothcert.configs``: every setting, checked once;
   ``configure``: build the method and load the data): the result (``TrainSetup``) holds the
   ``config`` dict that ``config.json`` records.
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
from .configs import SCHEDULES, TrainConfig
from .runs.directory import (FORMAT, RESUME_MAY_CHANGE, TRAIN_COLUMNS, TRAIN_LOG_NAME, RunDir, build_model,
                             load_weights, read_init_weights)
from .tensorboard import EpochScalars, log_folder, writer_class
from .trainer import Batches, EpochResult, NonFiniteLoss, Trainer, epoch_seed
from .validation import ArgumentError


# -- 1. configuration ----------------------------------------------------------------------------
@dataclass
class TrainSetup:
    """What ``configure`` checked and built: the config (as config.json records it), the method
    object, the two splits and the checked ``settings`` (the ``TrainConfig``)."""

    config: dict[str, Any]
    method: Method
    train_set: ImageDataset
    test_set: ImageDataset
    settings: TrainConfig | None = None


def configure(config: TrainConfig | None = None, *, world_size: int = 1, **settings: Any) -> TrainSetup:
    """Check the training settings (``config``, a ``TrainConfig``, or its fields as keywords:
    ArgumentError naming the bad one), build the method, load both splits and return them with
    the run's config as config.json records it (``TrainConfig.to_json`` and what follows from it).
    ``world_size``: the number of torchrun processes, which must divide the batch."""
    c = TrainConfig.build(config, settings)
    if c.batch_size % world_size:
        raise ArgumentError("batch_size", f"batch_size ({c.batch_size}) must be a multiple of the number of "
                                          f"processes ({world_size})")
    meth = create_method(c.method, **c.method_params)
    train_set = get_dataset(c.dataset, "train", c.data_root, c.download)
    test_set = get_dataset(c.dataset, "test", c.data_root, c.download)
    config_json = json.loads(json.dumps({
        "format": FORMAT, "smoothcert_version": __version__, **c.to_json(),
        "arch": c.arch or meth.default_arch or train_set.default_arch, "num_classes": train_set.num_classes,
        "input_shape": list(train_set.input_shape), "mean": list(train_set.mean), "std": list(train_set.std),
        "sigma": float(meth.params().get("sigma") or 0.0), "method_params": meth.params(),
        "train_augment": train_set.train_augment, "world_size": world_size,
    }))
    if c.init is not None:
        from .runs.loading import state_fingerprint

        config_json["init_fingerprint"] = state_fingerprint(read_init_weights(c.init))
    return TrainSetup(config_json, meth, train_set, test_set, c)


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
    config: TrainConfig | None = None,
    *,
    device: str | torch.device | None = None,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    tensorboard: bool | str | os.PathLike | None = None,
    **settings: Any,
) -> Path:
    """Train into the run directory ``out_dir`` (config.json, checkpoint.pt, train_log.tsv; see
    the module doc and ``smoothcert.runs``) with the settings ``config`` (a ``TrainConfig``), or
    given as keywords -- ``train(out, method="gauss", method_params={"sigma": 0.25}, epochs=20)``:
    the ``TrainConfig`` fields (dataset, arch, method, method_params, model_kwargs, epochs,
    batch_size, lr, ..., seed, amp, channels_last, data_root, download, num_workers,
    max_train_samples, max_test_samples); keywords given with a config change it.

    ``method_params`` are the method's constructor arguments (e.g. {"sigma": 0.25, "m": 4}).
    ``arch`` defaults to the method's or the dataset's ``default_arch``; ``model_kwargs`` go to
    ``create_model`` (e.g. {"normalization": "dubin"}). ``batch_size`` is the global batch (over all
    torchrun processes). ``seed`` (default 0, as the CLI's ``--seed``: reproducible by default)
    seeds the initialisation, the batches and the noise. ``device``: ``processes.choose_device``.
    ``out_dir`` absent or empty: a fresh run. A folder with content is never overwritten
    unless ``overwrite``: ``resume`` continues the run there (its checkpoint.pt, with the same
    config, except ``epochs`` for step schedules, ``data_root`` and ``channels_last``; a folder
    with content but no checkpoint is refused, naming what it holds); ``overwrite`` starts
    afresh, deleting the run's config.json, checkpoint.pt and train_log.tsv there (other files
    stay); neither: an error naming what the folder holds. ``resume`` and ``overwrite`` exclude
    each other. ``tensorboard``: also write each epoch's scalars for TensorBoard, to
    ``out_dir/tensorboard`` (True) or the folder given (``smoothcert.tensorboard``; needs the
    optional tensorboard package, refused before any training without it).

    Returns ``out_dir``. Raises ValueError naming the bad argument, NonFiniteLoss if the loss
    diverges, ``OutputError`` (a ValueError naming ``out_dir`` and the path) if a write fails (a
    read-only folder, a full disk); in both cases the last good checkpoint is kept and a resume
    continues from it."""
    out = Path(out_dir)
    c = TrainConfig.build(config, settings)  # every setting is checked before a process group starts
    board_dir = log_folder(out, tensorboard)
    if board_dir is not None:
        writer_class()  # without the tensorboard package: one line now, not after an epoch
    processes = ProcessGroup(device)  # under torchrun: cuda means cuda:LOCAL_RANK (processes.py)
    try:
        setup = configure(c, world_size=processes.world)
        config, rank = setup.config, processes.rank
        run = RunDir(out)
        ckpt = run.resume_point(config, resume, processes.device, overwrite=bool(overwrite))
        torch.manual_seed(config["seed"])
        trainer = Trainer(build_model(config), setup.method, c, device=processes.device, ddp=processes.active)
        start = 0
        if ckpt is not None:
            trainer.load_state_dict(ckpt)
            start = int(ckpt["epoch"])
        elif c.init is not None:  # a fresh run from the weights of another (before anything is written)
            try:
                load_weights(trainer.model, read_init_weights(c.init), f"init {c.init!r}", arch=config["arch"])
            except ArgumentError as e:
                raise ArgumentError("init", f"init: {str(e).partition(': ')[2]}") from None
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
        common = dict(rank=rank, world=processes.world, device=processes.device, num_workers=c.num_workers)
        train_batches = Batches(setup.train_set, config["batch_size"], train=True, seed=config["seed"],
                                limit=c.max_train_samples, **common)
        test_batches = Batches(setup.test_set, config["batch_size"], train=False, limit=c.max_test_samples,
                               **common)
        if len(train_batches) == 0:
            raise ArgumentError("max_train_samples", f"max_train_samples: the training set ({train_batches.n} inputs) "
                                                     "is too small for batches of 2 inputs per process")
        setup.method.setup(TrainContext(setup.train_set, config["num_classes"], processes.device, out, rank == 0,
                                        c.max_train_samples, config["seed"], talk and sys.stderr.isatty()))
        writer = _EpochWriter(run, config, trainer, write=rank == 0, talk=talk, start=start)
        board = EpochScalars(board_dir, start) if board_dir is not None and rank == 0 else None
        failed = True
        try:
            trainer.fit(train_batches, test_batches, start=start, seed=config["seed"], sigma=config["sigma"],
                        noise=config_noise(config), processes=processes, progress=talk and sys.stderr.isatty(),
                        on_epoch=writer if board is None else lambda r: (writer(r), board(r)))
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
            try:
                writer.close(quiet=failed)
            finally:
                if board is not None:
                    board.close()
        return out
    finally:
        processes.close()


__all__ = ["Batches", "NonFiniteLoss", "RESUME_MAY_CHANGE", "SCHEDULES", "TRAIN_COLUMNS", "TRAIN_LOG_NAME",
           "TrainConfig", "TrainSetup", "Trainer", "configure", "epoch_seed", "train"]
