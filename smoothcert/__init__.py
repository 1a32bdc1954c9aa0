"""smoothcert: certified robustness by randomized smoothing.

Public API: ``Smooth`` (CERTIFY/PREDICT of Cohen et al., 2019), the model and dataset
registries, and ``load_model`` for run directories and checkpoints.
"""
from .data import get_dataset, list_datasets
from .models import create_model, list_models
from .noise import GaussianNoise
from .runs import load_model
from .smoothing import ABSTAIN, Smooth, sample_counts

__version__ = "0.1.0"

__all__ = ["ABSTAIN", "GaussianNoise", "Smooth", "create_model", "get_dataset", "list_datasets",
           "list_models", "load_model", "sample_counts", "__version__"]
