"""Running things: the run directory, loading a model from any source, and the resumable
logged runner, one module each.

* ``smoothcert.runs.directory`` -- ``RunDir``, the one class that writes AND reads a training run
  directory (config.json, checkpoint.pt, train_log.tsv), and what checks them
  (``validate_config``, ``build_model``, ``load_weights``, ``compare_configs``).
* ``smoothcert.runs.loading`` -- ``load_model`` (a run directory, a smoothcert checkpoint or a
  Cohen et al. checkpoint), ``load_model_and_dataset``, ``check_compatible``, ``provenance`` (where
  a loaded model came from) and ``model_fingerprint``.
* ``smoothcert.runs.logged`` -- ``run_job(LoggedJob(...), dataset, out, device=...)``, the one
  resumable logged runner under certify, predict, attack and certificate checks (lock, resume,
  metadata, settings check, seeds, the torchrun split), with ``Selection`` and ``RunReport``;
  ``run_logged`` is its keyword form.

The process group (``smoothcert.processes``) and the seeding rule (``smoothcert.seeding``) stay
leaf modules beside this package: training and the corruption benchmark use them too.

Everything is importable from ``smoothcert.runs``; ``smoothcert.rundir`` and ``smoothcert.runner``
are compatibility modules re-exporting ``directory`` and ``logged``.
"""
from __future__ import annotations

from typing import Any

from . import loading as _loading
from .directory import (CACHE_SUFFIX, CHECKPOINT_NAME, CONFIG_NAME, FORMAT, RESUME_MAY_CHANGE, TRAIN_COLUMNS,
                        TRAIN_LOG_NAME, RunDir, build_model, compare_configs, load_weights, read_checkpoint_file,
                        validate_config)
from .loading import (check_compatible, load_model, load_model_and_dataset, model_fingerprint, provenance,
                      read_config)
from .logged import (SEED_STRIDE, LoggedJob, RunReport, Selection, Step, check_resume, derived_seed, meta_path,
                     read_meta, run_job, run_logged)


def __getattr__(name: str) -> Any:  # what ``smoothcert.runs`` (then one module, now loading.py) held besides
    return getattr(_loading, name)


__all__ = ["CACHE_SUFFIX", "CHECKPOINT_NAME", "CONFIG_NAME", "FORMAT", "LoggedJob", "RESUME_MAY_CHANGE", "RunDir",
           "RunReport", "SEED_STRIDE", "Selection", "Step", "TRAIN_COLUMNS", "TRAIN_LOG_NAME", "build_model",
           "check_compatible", "check_resume", "compare_configs", "derived_seed", "load_model",
           "load_model_and_dataset", "load_weights", "meta_path", "model_fingerprint", "provenance",
           "read_checkpoint_file", "read_config", "read_meta", "run_job", "run_logged", "validate_config"]
