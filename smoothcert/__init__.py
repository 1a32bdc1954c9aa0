"""smoothcert: certified robustness by randomized smoothing.

Public API: ``Smooth`` (CERTIFY/PREDICT of Cohen et al., 2019) and its sampler, the smoothing
noises (``get_noise``: gaussian, laplace, uniform), dataset-level
``certify_dataset``/``predict_dataset`` (on the one logged runner, ``smoothcert.runs.logged``), the
model, method, dataset and augmentation registries (one ``Registry`` class), ``train()`` (the
function; the module is ``smoothcert.train``), ``RunDir`` and ``load_model`` /
``load_model_and_dataset`` for run directories and checkpoints. Tables and plots are in
``smoothcert.analysis`` and ``smoothcert.plotting``.
"""
__version__ = "0.1.0"  # smoothcert.train records it

# The public names are imported on first use (PEP 562), so that ``import smoothcert`` -- and the
# command line's ``--help`` -- does not import torch: ``from smoothcert import Smooth`` works as before.
import importlib as _importlib
import sys as _sys
import types as _types

_SOURCES = {
    ".augment": ("AUGMENTATIONS",),
    ".certification": ("certify_dataset", "predict_dataset"),
    ".configs": ("CertifyConfig", "TrainConfig"),
    ".data": ("DATASETS", "get_dataset", "list_datasets"),
    ".methods": ("METHODS", "create_method", "list_methods"),
    ".methods.maxup": ("maxup_loss",),
    ".models": ("MODELS", "create_model", "list_models"),
    ".noise": ("NOISES", "GaussianNoise", "LaplaceNoise", "Noise", "UniformNoise", "get_noise"),
    ".registry": ("Registry",),
    ".runs": ("RunDir", "RunReport", "Selection", "load_model", "load_model_and_dataset"),
    ".smoothing": ("ABSTAIN", "Smooth", "sample_counts"),
    ".train": ("train",),  # the function: ``from smoothcert import train`` (the module: ``smoothcert.train``)
    ".validation": ("ArgumentError",),
}
_WHERE = {name: module for module, names in _SOURCES.items() for name in names}


def __getattr__(name: str):  # noqa: ANN201
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'smoothcert' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    setattr(_sys.modules[__name__], name, value)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


class _Package(_types.ModuleType):
    """The package module: importing the submodule ``smoothcert.train`` must not replace the
    function ``smoothcert.train`` (the import system sets a package's attribute to each submodule
    it imports)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "train" and isinstance(value, _types.ModuleType) and hasattr(value, "train"):
            value = value.train
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

__all__ = ["ABSTAIN", "AUGMENTATIONS", "ArgumentError", "CertifyConfig", "DATASETS", "GaussianNoise", "LaplaceNoise",
           "METHODS", "MODELS", "NOISES", "Noise", "Registry", "RunDir", "RunReport", "Selection", "Smooth",
           "TrainConfig", "UniformNoise",
           "certify_dataset", "create_method", "create_model", "get_dataset", "get_noise", "list_datasets",
           "list_methods", "list_models", "load_model", "load_model_and_dataset", "maxup_loss", "predict_dataset",
           "sample_counts", "train", "__version__"]
