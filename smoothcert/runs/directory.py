"""``RunDir``: the one class that writes AND reads a training run directory.

A run directory holds

* ``config.json``: everything needed to rebuild and certify the model (dataset, arch,
  num_classes, input_shape [C, H, W], mean, std, model_kwargs, sigma, method, method_params,
  and the training settings), validated key by key whenever it is read (``validate_config``);
* ``checkpoint.pt``: a ``weights_only``-safe dict
  ``{"format": "smoothcert-1", "arch", "state_dict", "config", "epoch", "optimizer", ...}``,
  written atomically after each epoch;
* ``train_log.tsv``: one row per finished epoch (``TRAIN_COLUMNS``).

``RunDir.resume_point(config, resume, overwrite=...)`` decides resumability. A folder with
content is never overwritten unless ``overwrite`` is set: an absent or empty folder (temp files
of killed atomic writes do not count) starts afresh; one with a checkpoint needs ``resume``, and
the recorded config must equal the new one except for ``RESUME_MAY_CHANGE``; any other content
(e.g. config.json and train_log.tsv whose checkpoint was moved away, or of a run killed before
its first checkpoint) is refused with one line naming the files, ``resume`` or not.
``RunDir.prepare`` then tidies the folder: temp files left by killed atomic writes go; a fresh
start (``overwrite``) removes the run's three files (other files stay); a resume cuts the train
log back to the checkpoint's epoch (a torn last line included). Writes that fail (a read-only
folder, a full disk) raise ``logs.OutputError`` naming the path (argument ``out_dir``); a
failed checkpoint write keeps the previous checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..logs import (TSVLog, atomic_torch_save, atomic_write_bytes, atomic_write_json, read_rows, safe_torch_load,
                   writing)
from ..models import create_model
from ..validation import ArgumentError

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
TRAIN_LOG_NAME = "train_log.tsv"
FORMAT = "smoothcert-1"
TRAIN_COLUMNS = ("epoch", "seconds", "lr", "train_loss", "train_acc", "test_acc_noisy")
# config keys a resume may change: they do not change what is computed
RESUME_MAY_CHANGE = ("epochs", "data_root", "smoothcert_version", "channels_last", "init_fingerprint")
# config keys added after the first release, with the value every run before them used: a run whose
# config.json lacks one resumes as if it recorded that value
ADDED_CONFIG_KEYS: dict[str, Any] = {"optimizer": "sgd", "init": None}


# What a method computes in ``Method.setup`` before the first epoch (CAT-RS's smoothed confidences) may be
# kept in the run directory as ``NAME.cache.pt``: each holds the key it was computed from and is checked
# against it when read, so it is not run content (a fresh run may start beside it and reuse it).
CACHE_SUFFIX = ".cache.pt"


def _bad(key: str, where: str, what: str) -> ArgumentError:
    return ArgumentError("model", f"model: {where}: {key} {what}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_config(config: Any, where: str) -> dict[str, Any]:
    """``config`` if it describes a model; else ArgumentError (argument ``model``) naming the
    key: an object with ``arch`` (str), ``num_classes`` (int >= 2), ``input_shape`` (3 ints >= 1),
    optional ``mean``/``std`` (one number per channel), ``model_kwargs`` (an object) and
    ``sigma`` (a finite number >= 0, or null)."""
    if not isinstance(config, dict):
        raise ArgumentError("model", f"model: {where} must hold a JSON object, got {type(config).__name__}")
    if not isinstance(config.get("arch"), str) or not config["arch"]:
        raise _bad("arch", where, "must be a model name" if "arch" in config else "is missing")
    k = config.get("num_classes")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise _bad("num_classes", where, f"must be an integer >= 2, got {k!r}" if "num_classes" in config
                   else "is missing")
    shape = config.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 3
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)):
        raise _bad("input_shape", where, f"must be [C, H, W] (3 integers >= 1), got {shape!r}")
    for key in ("mean", "std"):
        v = config.get(key)
        if v is not None and not (isinstance(v, list) and len(v) == shape[0] and all(map(_is_number, v))):
            raise _bad(key, where, f"must be {shape[0]} numbers (one per channel), got {v!r}")
    if not isinstance(config.get("model_kwargs", {}), dict):
        raise _bad("model_kwargs", where, f"must be an object, got {config['model_kwargs']!r}")
    sigma = config.get("sigma")
    if sigma is not None and not (_is_number(sigma) and sigma >= 0):
        raise _bad("sigma", where, f"must be a finite number >= 0 or null, got {sigma!r}")
    return config


def build_model(config: dict[str, Any], where: str = "config") -> nn.Sequential:
    """The model a (validated) config describes, with random weights."""
    c, h, _ = config["input_shape"]
    try:
        return create_model(config["arch"], num_classes=int(config["num_classes"]), in_channels=int(c),
                            input_size=int(h), mean=config.get("mean"), std=config.get("std"),
                            **config.get("model_kwargs", {}))
    except TypeError as e:  # an unknown model_kwargs key
        raise _bad("model_kwargs", where, f"does not fit arch {config['arch']!r} ({e})") from None


def load_weights(model: nn.Module, state_dict: Any, where: str, allowed_missing: frozenset[str] = frozenset(),
                 arch: str = "") -> nn.Module:
    """Load ``state_dict`` into ``model``; ArgumentError (argument ``model``) if it is not a
    mapping of tensors, lacks or adds keys, or holds a tensor of another shape."""
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ArgumentError("model", f"model: {where}: state_dict must be a mapping of names to tensors, got "
                                     f"{type(state_dict).__name__}")
    own = model.state_dict()
    sd = {k.replace(".module.", ".", 1) if k.startswith("1.module.") else k: v for k, v in state_dict.items()}
    missing = sorted(set(own) - set(sd) - allowed_missing)
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise ArgumentError("model", f"model: {where} does not match arch {arch!r} (e.g. "
                                     f"{', '.join((missing + unexpected)[:3])})")
    for key, v in sd.items():
        if tuple(v.shape) != tuple(own[key].shape):
            raise ArgumentError("model", f"model: {where} does not match arch {arch!r}: {key} has shape "
                                         f"{tuple(v.shape)}, the model expects {tuple(own[key].shape)}")
    model.load_state_dict(sd, strict=False)
    return model


def read_init_weights(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """The state dict a run starts from (``TrainConfig.init``): a run directory's checkpoint or a
    checkpoint file; ArgumentError naming ``init`` otherwise."""
    try:
        p = Path(path)
        return (RunDir(p).read_checkpoint() if p.is_dir() else read_checkpoint_file(p))["state_dict"]
    except ArgumentError as e:
        raise ArgumentError("init", f"init: {str(e).partition(': ')[2]}") from None


class RunDir:
    """A training run directory (see the module doc): paths, config, checkpoint, train log."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    config_path = property(lambda self: self.path / CONFIG_NAME)
    checkpoint_path = property(lambda self: self.path / CHECKPOINT_NAME)
    log_path = property(lambda self: self.path / TRAIN_LOG_NAME)

    def holds_run(self) -> bool:
        """True if the folder holds (part of) a run: a config or a checkpoint."""
        return self.config_path.is_file() or self.checkpoint_path.is_file()

    # -- config ---------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The validated config.json (ArgumentError naming the bad key)."""
        if self.config_path.is_dir():
            raise ArgumentError("model", f"model: {str(self.config_path)!r} is a directory, not a config file")
        if not self.config_path.is_file():
            raise ArgumentError("model", f"model: {str(self.path)!r} has no {CONFIG_NAME}; is it a run directory "
                                         "written by smoothcert train?")
        try:
            config = json.loads(self.config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArgumentError("model", f"model: {str(self.config_path)!r} is not valid JSON ({e})") from None
        return validate_config(config, repr(str(self.config_path)))

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(config, self.config_path, "out_dir")

    # -- checkpoint -----------------------------------------------------------------------
    def read_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """The checkpoint dict (``weights_only`` load) with a ``state_dict`` mapping."""
        return read_checkpoint_file(self.checkpoint_path, map_location)

    def write_checkpoint(self, config: dict[str, Any], epoch: int, state: dict[str, Any]) -> None:
        """Atomically save the state after ``epoch`` epochs (``state``: state_dict, optimizer, ...)."""
        atomic_torch_save({"format": FORMAT, "arch": config["arch"], "config": config, "epoch": epoch, **state},
                          self.checkpoint_path, "out_dir")

    def load_model(self, device: str | torch.device = "cpu") -> tuple[nn.Sequential, dict[str, Any]]:
        """(model with the checkpoint's weights, in eval mode on ``device``; config)."""
        config = self.read_config()
        ckpt = self.read_checkpoint()
        model = build_model(config, repr(str(self.config_path)))
        load_weights(model, ckpt["state_dict"], f"checkpoint {str(self.checkpoint_path)!r}", arch=config["arch"])
        return model.to(device).eval(), config

    # -- train log --------------------------------------------------------------------------
    def open_log(self) -> TSVLog:
        return TSVLog(self.log_path, TRAIN_COLUMNS, kind="smoothcert training", arg="out_dir")

    def trim_log(self, last_epoch: int) -> None:
        """Keep the log rows of epochs <= ``last_epoch`` (later ones were written before a crash,
        not checkpointed); a torn last line goes too."""
        if not self.log_path.is_file():
            return
        rows = read_rows(self.log_path, TRAIN_COLUMNS, "smoothcert training")
        keep = [r for r in rows if int(r[0]) <= last_epoch]
        text = "\n".join("\t".join(r) for r in [list(TRAIN_COLUMNS), *keep]) + "\n"
        if text.encode() != self.log_path.read_bytes():
            atomic_write_bytes(self.log_path, text.encode(), "out_dir")

    def read_log(self) -> list[list[str]]:
        return read_rows(self.log_path, TRAIN_COLUMNS, "smoothcert training") if self.log_path.is_file() else []

    # -- resumability -----------------------------------------------------------------------
    @staticmethod
    def _is_temporary(name: str) -> bool:
        return any(name.startswith(f".{run_file}.") and name.endswith(".tmp")
                   for run_file in (CONFIG_NAME, CHECKPOINT_NAME, TRAIN_LOG_NAME))

    def remove_temporaries(self) -> None:
        """Delete temp files that killed atomic writes of this folder's files left behind."""
        for tmp in self.path.iterdir():
            if self._is_temporary(tmp.name) and not tmp.is_dir():
                tmp.unlink(missing_ok=True)

    def contents(self) -> list[str]:
        """The names in the folder (sorted, a folder's with a trailing ``/``), temp files of
        killed atomic writes and method caches (``*{CACHE_SUFFIX}``, see ``CACHE_SUFFIX``) left
        out; [] for an absent folder."""
        if not self.path.is_dir():
            return []
        return sorted(p.name + ("/" if p.is_dir() else "") for p in self.path.iterdir()
                      if not self._is_temporary(p.name) and not (p.is_file() and p.name.endswith(CACHE_SUFFIX)))

    def resume_point(self, config: dict[str, Any], resume: bool, map_location: str | torch.device = "cpu",
                     overwrite: bool = False) -> dict[str, Any] | None:
        """The checkpoint to resume ``config`` from, or None to start afresh (see the module doc);
        reads only, so every process may call it. ArgumentError (``out_dir``, one line naming
        what is there) unless the folder is absent or empty, or ``overwrite`` is set, or it holds
        a checkpoint of the same config and ``resume`` is set."""
        if self.path.exists() and not self.path.is_dir():
            raise ArgumentError("out_dir", f"out_dir: {str(self.path)!r} exists and is not a folder")
        if resume and overwrite:
            raise ArgumentError("overwrite", "overwrite: give resume (continue the run) or overwrite (start afresh), "
                                             "not both")
        if self.checkpoint_path.exists() and not self.checkpoint_path.is_file():
            what = "a directory" if self.checkpoint_path.is_dir() else "not a regular file"
            raise ArgumentError("out_dir", f"out_dir: {str(self.checkpoint_path)!r} is {what}, not a checkpoint "
                                           "file; move it away or choose another folder")
        if overwrite:
            return None
        held = self.contents()
        if not held:
            return None
        names = ", ".join(held[:6]) + (f" and {len(held) - 6} more" if len(held) > 6 else "")
        if not self.checkpoint_path.is_file():
            raise ArgumentError("out_dir", f"out_dir: {str(self.path)!r} is not empty ({names}) and holds no "
                                           f"{CHECKPOINT_NAME} to resume from; overwrite it or choose another folder")
        if not resume:
            raise ArgumentError("out_dir", f"out_dir: {str(self.path)!r} already holds a run ({names}); resume it, "
                                           "overwrite it or choose another folder")
        ckpt = self.read_checkpoint(map_location)
        if ckpt.get("format") != FORMAT or "optimizer" not in ckpt or not isinstance(ckpt.get("config"), dict):
            raise ArgumentError("out_dir", f"out_dir: {str(self.checkpoint_path)!r} is not a resumable smoothcert "
                                           "training checkpoint")
        if self.config_path.is_file():
            compare_configs(self.read_config(), config, self.path)
        compare_configs(ckpt["config"], config, self.path)
        return ckpt

    def prepare(self, config: dict[str, Any], ckpt: dict[str, Any] | None) -> None:
        """Make the folder ready to train ``config`` from ``ckpt`` (``resume_point``'s answer):
        the folder is created and checked writable (``OutputError`` naming it, before any
        training), temp files of killed writes go; without a checkpoint (a fresh start: the
        folder was empty, or ``overwrite``) the run's files go -- config.json, checkpoint.pt,
        train_log.tsv; other files stay; with one, config.json is rewritten (epochs may have
        grown) and the train log cut back to its epoch. Call it from one process only."""
        with writing(self.path, "out_dir"):
            self.path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=f".{CONFIG_NAME}.", suffix=".tmp", dir=self.path)  # writable?
            os.close(fd)
            os.unlink(probe)
            self.remove_temporaries()
            if ckpt is None:
                for stale in (self.log_path, self.config_path, self.checkpoint_path):
                    stale.unlink(missing_ok=True)
                return
        self.write_config(config)
        self.trim_log(int(ckpt["epoch"]))


def read_checkpoint_file(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint file as a dict holding a ``state_dict`` mapping; ArgumentError otherwise."""
    try:
        ckpt = safe_torch_load(path, map_location)
    except ArgumentError:
        raise
    except ValueError as e:
        raise ArgumentError("model", f"model: {e}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ArgumentError("model", f"model: {str(path)!r} is not a model checkpoint (no state_dict)")
    if not isinstance(ckpt["state_dict"], Mapping):
        raise ArgumentError("model", f"model: {str(path)!r}: state_dict must be a mapping of names to tensors, got "
                                     f"{type(ckpt['state_dict']).__name__}")
    return ckpt


def compare_configs(old: dict[str, Any], new: dict[str, Any], out_dir: Path) -> None:
    """ArgumentError (``out_dir``) naming the first key whose value a resume may not change."""
    for key in sorted(set(old) | set(new)):
        if key in RESUME_MAY_CHANGE:
            continue
        was, now = old.get(key, ADDED_CONFIG_KEYS.get(key)), new.get(key, ADDED_CONFIG_KEYS.get(key))
        if was != now:
            raise ArgumentError("out_dir", f"out_dir: {str(out_dir)!r} holds a run with another config ({key} is "
                                           f"{was!r} there, {now!r} here); resume with the same "
                                           "settings or use another folder")
    if new.get("schedule") == "cosine" and old.get("epochs") != new.get("epochs"):
        raise ArgumentError("out_dir", f"out_dir: {str(out_dir)!r} was trained with a cosine schedule over "
                                       f"{old.get('epochs')} epochs; a resume must keep epochs={old.get('epochs')} "
                                       "(the schedule depends on it)")


__all__ = ["CACHE_SUFFIX", "CHECKPOINT_NAME", "CONFIG_NAME", "FORMAT", "RESUME_MAY_CHANGE", "RunDir", "TRAIN_COLUMNS",
           "TRAIN_LOG_NAME", "build_model", "compare_configs", "load_weights", "read_checkpoint_file",
           "read_init_weights", "validate_config"]
