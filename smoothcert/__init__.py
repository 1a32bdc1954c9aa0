"""smoothcert: certified robustness by randomized smoothing.

Public API: ``Smooth`` (CERTIFY/PREDICT of Cohen et al., 2019) and its sampler, dataset-level
``certify_dataset``/``predict_dataset``, the model, dataset and method registries, and
``load_model`` / ``load_model_and_dataset`` for run directories and checkpoints. Training is
``smoothcert.train.train``; tables and plots are in ``smoothcert.analysis`` and
``smoothcert.plotting``.
"""
from .certification import Selection, certify_dataset, predict_dataset
from .data import get_dataset, list_datasets
from .methods import create_method, list_methods
from .methods.maxup import maxup_loss
from .models import create_model, list_models
from .noise import GaussianNoise
from .runs import load_model, load_model_and_dataset
from .smoothing import ABSTAIN, Smooth, sample_counts

__version__ = "0.1.0"

__all__ = ["ABSTAIN", "GaussianNoise", "Selection", "Smooth", "certify_dataset", "create_method", "create_model",
           "get_dataset", "list_datasets", "list_methods", "list_models", "load_model", "load_model_and_dataset",
           "maxup_loss", "predict_dataset", "sample_counts", "__version__"]
