"""The settings of a job, validated once: ``TrainConfig`` (a training run) and ``CertifyConfig``
(a certify log).

Each is a frozen dataclass checked when it is built (``ArgumentError`` naming the field, as the
library's keyword arguments always were) and written to and read from where the job records its
settings:

* ``TrainConfig`` <-> a run directory's ``config.json`` (``to_json`` / ``from_json``): the keys
  it records are the training settings below; config.json adds what follows from them (format,
  version, num_classes, input_shape, mean, std, sigma, train_augment, world_size, the method's
  full parameters: ``train.configure``). ``from_json`` reads a config.json of any release (keys
  it lacks take their defaults), so ``train(run, TrainConfig.from_json(RunDir(run).read_config()),
  resume=True)`` continues the run.
* ``CertifyConfig`` <-> a certify log's ``<out>.meta.json`` (``settings`` / ``from_meta``): the
  ``"certify"`` entry (N0, N, alpha, pack, norm, bound, sequential, radii, tol, the noise block
  ``batch``, the smoothed classifier's sigma and noise), ``seed`` and ``selection``.

``train(out_dir, config)`` and ``certify_dataset(smooth, dataset, out, config)`` take them; the
keyword forms (``train(out_dir, epochs=...)``, ``certify_dataset(..., n0=..., n=...)``) build
the config from the keywords.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models import RECORDED_NORMALIZATION_KEY
from .runs.logged import LEGACY_DEFAULTS, Selection, read_meta
from .shards import parse_shard
from .seeding import check_seed
from .sequential import check_radii
from .validation import ArgumentError, check_alpha, check_float, check_int

SCHEDULES = ("step", "cosine")
OPTIMIZERS = ("sgd", "adam")


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # a frozen dataclass normalising its own fields in __post_init__


def _mapping(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ArgumentError(name, f"{name} must be a dict, got {type(value).__name__}")
    return dict(value)


def _name(name: str, value: Any, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ArgumentError(name, f"{name} must be a name (a non-empty string), got {value!r}")
    return value


def _recorded_model_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``model_kwargs`` as config.json records them: ``create_model``'s ``normalization`` under
    the key every release recorded (``models.RECORDED_NORMALIZATION_KEY``, "norm"), so that a run
    resumes however it was asked for."""
    if "normalization" in kwargs:
        if RECORDED_NORMALIZATION_KEY in kwargs:
            raise ArgumentError("model_kwargs", "model_kwargs: give the normalization layers once (normalization or "
                                                f"{RECORDED_NORMALIZATION_KEY}), not both")
        kwargs[RECORDED_NORMALIZATION_KEY] = kwargs.pop("normalization")
    return kwargs


def _optional_count(name: str, value: Any) -> int | None:
    return None if value is None else check_int(name, value, 1)


# -- training --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (``train``), validated when built.

    What is trained: ``dataset``, ``arch`` (None: the method's or the dataset's default),
    ``method`` with ``method_params`` (its constructor arguments), ``model_kwargs`` (for
    ``create_model``, e.g. {"normalization": "dubin"}, recorded as {"norm": "dubin"}). The
    optimisation (Cohen et al.'s CIFAR-10 recipe by default): ``epochs``, the global
    ``batch_size`` (over all torchrun processes), the ``optimizer`` (``"sgd"`` with ``momentum``,
    or ``"adam"``, Kingma & Ba, with its default betas; momentum is then unused), ``lr``,
    ``weight_decay``, the ``schedule`` (step: x ``lr_gamma`` every ``lr_step_size``
    epochs; cosine), ``seed`` (any integer in [0, 2**63 - 1]), ``amp``, ``channels_last`` (speed
    only; a resume may change it). The data: ``data_root`` (resolved to an absolute path),
    ``max_train_samples`` / ``max_test_samples`` (the first N inputs of a split). ``init``: a run
    directory or checkpoint of the same arch whose weights a fresh run starts from (fine-tuning,
    e.g. Salman et al.'s stability denoiser from an MSE one); config.json records the path and
    ``init_fingerprint``, the SHA-256 of those weights; a resume continues from its own checkpoint.
    ``download`` and ``num_workers`` change how the data are read, not what is computed: they
    are not recorded in config.json.
    """

    dataset: str = "digits"
    arch: str | None = None
    method: str = "gauss"
    method_params: Mapping[str, Any] = field(default_factory=dict)
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 90
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    lr_step_size: int = 30
    lr_gamma: float = 0.1
    seed: int = 0
    amp: bool = False
    channels_last: bool = False
    data_root: str | None = None
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    init: str | None = None
    download: bool = False
    num_workers: int = 0

    # the settings config.json records (under these names); the others are how data are read
    RECORDED = ("dataset", "data_root", "arch", "model_kwargs", "method", "method_params", "epochs", "batch_size",
                "optimizer", "lr", "momentum", "weight_decay", "schedule", "lr_step_size", "lr_gamma", "seed", "amp",
                "channels_last", "max_train_samples", "max_test_samples", "init")

    def __post_init__(self) -> None:
        _set(self, "epochs", check_int("epochs", self.epochs, 1))
        _set(self, "batch_size", check_int("batch_size", self.batch_size, 1))
        if self.optimizer not in OPTIMIZERS:
            raise ArgumentError("optimizer",
                                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        _set(self, "lr", check_float("lr", self.lr, 0.0, lo_open=True))
        _set(self, "momentum", check_float("momentum", self.momentum, 0.0, 1.0, hi_open=True))
        _set(self, "weight_decay", check_float("weight_decay", self.weight_decay, 0.0))
        if self.schedule not in SCHEDULES:
            raise ArgumentError("schedule", f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        _set(self, "lr_step_size", check_int("lr_step_size", self.lr_step_size, 1))
        _set(self, "lr_gamma", check_float("lr_gamma", self.lr_gamma, 0.0, 1.0, lo_open=True))
        _set(self, "seed", check_seed(self.seed))
        _set(self, "max_train_samples", _optional_count("max_train_samples", self.max_train_samples))
        _set(self, "max_test_samples", _optional_count("max_test_samples", self.max_test_samples))
        if self.data_root is not None:
            root = str(Path(self.data_root).resolve())
            if not Path(root).is_dir():
                raise ArgumentError("data_root", f"data_root {root!r} does not exist")
            _set(self, "data_root", root)
        if self.init is not None:
            if not isinstance(self.init, (str, os.PathLike)) or not str(self.init):
                raise ArgumentError("init", f"init must be a run directory or checkpoint, got {self.init!r}")
            if not Path(self.init).exists():
                raise ArgumentError("init", f"init {str(self.init)!r} does not exist (a run directory or checkpoint "
                                            "whose weights the run starts from)")
            _set(self, "init", str(self.init))
        _set(self, "num_workers", check_int("num_workers", self.num_workers, 0))
        _set(self, "dataset", _name("dataset", self.dataset))
        _set(self, "arch", _name("arch", self.arch, optional=True))
        _set(self, "method", _name("method", self.method))
        _set(self, "method_params", _mapping("method_params", self.method_params))
        _set(self, "model_kwargs", _recorded_model_kwargs(_mapping("model_kwargs", self.model_kwargs)))
        for flag in ("amp", "channels_last", "download"):
            _set(self, flag, bool(getattr(self, flag)))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The settings as config.json records them (``RECORDED``; ``arch`` None is the default)."""
        return {k: getattr(self, k) if not isinstance(getattr(self, k), Mapping) else dict(getattr(self, k))
                for k in self.RECORDED}

    @classmethod
    def from_json(cls, config: Mapping[str, Any], **changes: Any) -> "TrainConfig":
        """The settings a config.json records (keys it lacks: the defaults; the keys that follow
        from the settings are ignored), with ``changes`` (e.g. ``epochs``, ``data_root``)."""
        if not isinstance(config, Mapping):
            raise ArgumentError("config", f"config must be a dict (a config.json), got {type(config).__name__}")
        return cls(**{**{k: config[k] for k in cls.RECORDED if k in config}, **changes})

    @classmethod
    def build(cls, config: "TrainConfig | None", settings: Mapping[str, Any]) -> "TrainConfig":
        """``config`` with the keyword ``settings`` applied (no config: the settings alone)."""
        if config is None:
            return cls(**settings)
        if not isinstance(config, cls):
            raise ArgumentError("config", f"config must be a TrainConfig, got {type(config).__name__}")
        return config.replace(**settings) if settings else config


# -- certification ---------------------------------------------------------------------------------
# certify metadata keys -> CertifyConfig fields; and the keys the smoothed classifier adds
_META_FIELDS = {"N0": "n0", "N": "n", "alpha": "alpha", "batch": "batch_size", "norm": "norm", "bound": "bound",
                "sequential": "sequential", "radii": "radii", "tol": "tol", "pack": "pack", "noise": "noise",
                "sigma": "sigma", "pool": "pool"}
_CLASSIFIER_KEYS = ("model_sha256", "amp", "channels_last")


@dataclass(frozen=True)
class CertifyConfig:
    """The settings of a certify log (``certify_dataset``), validated when built.

    CERTIFY's ``n0`` selection and ``n`` estimation samples, failure probability ``alpha``;
    ``batch_size``, the noise block: samples are drawn ``batch_size`` at a time from the input's
    seeded generator, so it is part of what is computed (recorded as ``batch``; how many rows a
    forward pass holds is the smoothed classifier's ``max_batch`` / ``chunk_size``, speed only).
    ``norm`` (None: the noise's natural norm) and ``bound`` (``noise.BOUNDS``), checked for the
    noise by ``Smooth.check_options``; ``sequential`` with its grid ``radii`` or tolerance ``tol``;
    ``selection`` and ``seed`` (None: 0 on a fresh log, the recorded one on a resume); ``pack``
    inputs per call; ``pool`` (sequential only, with ``pack`` 1): up to ``pool`` active inputs
    whose samples fill each forward batch, each from its own generator, so the rows are those of
    the unpooled run (recorded, not checked: speed only; ``certify_dataset``); ``options``:
    further keyword options of ``Smooth.certify_batch`` /
    ``certify_sequential_batch``. ``noise`` and ``sigma`` describe the smoothed classifier (the
    metadata records them): None takes the classifier's, a value must be the classifier's.
    """

    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch_size: int = 1000
    norm: str | None = None
    bound: str = "one-sided"
    sequential: bool = False
    radii: tuple[float, ...] | None = None
    tol: float | None = None
    selection: Selection = Selection()
    seed: int | None = None
    pack: int = 1
    pool: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    noise: str | None = None
    sigma: float | None = None

    def __post_init__(self) -> None:
        for name in ("n0", "n", "batch_size"):
            _set(self, name, check_int(name, getattr(self, name), 1))
        _set(self, "alpha", check_alpha(self.alpha))
        _set(self, "pack", check_int("pack", self.pack, 1))
        if self.pool is not None:
            _set(self, "pool", check_int("pool", self.pool, 1))
            if not self.sequential:
                raise ArgumentError("pool", "pool needs sequential=True (a pool of inputs at their own looks)")
            if self.pack != 1:
                raise ArgumentError("pool", f"pool: the pool packs inputs itself, each with its own generator; "
                                            f"leave pack at 1 (got pack={self.pack})")
        if not isinstance(self.selection, Selection):
            raise ArgumentError("selection", f"selection must be a Selection, got {type(self.selection).__name__}")
        self.selection.indices(0)  # checks skip and max_count
        if not self.sequential:
            for name in ("radii", "tol"):
                if getattr(self, name) is not None:
                    raise ArgumentError(name, f"{name} needs sequential=True (a sequential stopping rule)")
        else:
            radii = check_radii(self.radii)
            _set(self, "radii", None if radii is None else tuple(radii.tolist()))
            if self.tol is not None:
                _set(self, "tol", check_float("tol", self.tol, 0.0, lo_open=True))
        _set(self, "sequential", bool(self.sequential))
        if self.seed is not None:
            _set(self, "seed", check_seed(self.seed))
        _set(self, "norm", _name("norm", self.norm, optional=True))
        _set(self, "bound", _name("bound", self.bound))
        _set(self, "options", _mapping("options", self.options))
        _set(self, "noise", _name("noise", self.noise, optional=True))
        if self.sigma is not None:
            _set(self, "sigma", check_float("sigma", self.sigma, 0.0))

    def replace(self, **changes: Any) -> "CertifyConfig":
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def settings(self, norm: str, bound: str) -> dict[str, Any]:
        """The checked settings of the ``"certify"`` metadata entry this config gives (the
        smoothed classifier adds sigma, noise and model_sha256), with the ``norm`` and ``bound``
        the noise certifies (``Smooth.check_options``): a resume compares what was certified."""
        settings = {"N0": self.n0, "N": self.n, "alpha": self.alpha, "pack": self.pack, **self.options,
                    "norm": norm, "bound": bound, "sequential": self.sequential}
        if self.sequential:
            settings.update({"radii": None if self.radii is None else list(self.radii), "tol": self.tol})
        return settings

    def call_options(self) -> dict[str, Any]:
        """The keyword options of the Smooth call: ``options``, with ``norm`` and ``bound`` where
        they are not the defaults (None, one-sided) -- so a stand-in with Smooth's positional
        signature alone certifies with the defaults."""
        given = {"norm": self.norm} if self.norm is not None else {}
        if self.bound != "one-sided":
            given["bound"] = self.bound
        return {**given, **self.options}

    def recorded(self) -> dict[str, Any]:
        """The recorded-only settings (not checked on resume) this config gives: the noise block,
        and the pool where there is one (speed only: the rows are those of the unpooled run)."""
        return {"batch": self.batch_size, **({"pool": self.pool} if self.pool is not None else {})}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], **changes: Any) -> "CertifyConfig":
        """The config a certify log's metadata records (a first-release log: Gaussian, L2,
        one-sided, fixed n, as the runner resumes it), with ``changes``. ArgumentError (``out``)
        if the metadata is not a certify log's."""
        entry = meta.get("certify") if isinstance(meta, Mapping) else None
        if not isinstance(entry, Mapping):
            raise ArgumentError("out", "out: the metadata records no certify settings (not a certify log)")
        entry = {**LEGACY_DEFAULTS, **entry}
        fields = {f: entry[k] for k, f in _META_FIELDS.items() if k in entry}
        known = set(_META_FIELDS) | set(_CLASSIFIER_KEYS)
        fields["options"] = {k: v for k, v in entry.items() if k not in known}
        selection = meta.get("selection") if isinstance(meta.get("selection"), Mapping) else {}
        shard = selection.get("shard")  # a shard's log (smoothcert.shards): its selection is that shard
        fields["selection"] = Selection(selection.get("skip", 1), selection.get("max", -1),
                                        parse_shard(shard) if isinstance(shard, str) else None)
        fields["seed"] = meta.get("seed")
        return cls(**{**fields, **changes})

    @classmethod
    def from_log(cls, out: str | Path, **changes: Any) -> "CertifyConfig":
        """``from_meta`` of the log ``out``'s metadata (``<out>.meta.json``)."""
        return cls.from_meta(read_meta(out), **changes)

    @classmethod
    def build(cls, config: "CertifyConfig | None", settings: Mapping[str, Any]) -> "CertifyConfig":
        """``config`` with the keyword ``settings`` applied (no config: the settings alone); keywords
        that are not fields are ``options`` of the Smooth call."""
        names = {f.name for f in dataclasses.fields(cls)}
        own = {k: v for k, v in settings.items() if k in names}
        extra = {k: v for k, v in settings.items() if k not in names}
        if config is not None and not isinstance(config, cls):
            raise ArgumentError("config", f"config must be a CertifyConfig, got {type(config).__name__}")
        if extra:
            base = config.options if config is not None else {}
            own["options"] = {**base, **_mapping("options", own.get("options")), **extra}
        if config is None:
            return cls(**own)
        return config.replace(**own) if own else config


__all__ = ["CertifyConfig", "OPTIMIZERS", "SCHEDULES", "TrainConfig"]
