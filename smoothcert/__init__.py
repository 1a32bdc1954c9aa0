"""smoothcert: certified robustness by randomized smoothing.

Public API: ``Smooth`` (CERTIFY/PREDICT of Cohen et al., 2019) and its sampler, the smoothing
noises (``get_noise``: gaussian, laplace, uniform), dataset-level
``certify_dataset``/``predict_dataset``, the model, dataset and method registries, and
``load_model`` / ``load_model_and_dataset`` for run directories and checkpoints. Training is
``smoothcert.train.train``; tables and plots are in ``smoothcert.analysis`` and
``smoothcert.plotting``.
"""
from .certification import Selection, certify_dataset, predict_dataset
from .data import get_dataset, list_datasets
from .methods import create_method, list_methods
from .models import create_model, list_models
from .noise import NOISES, GaussianNoise, LaplaceNoise, Noise, UniformNoise, get_noise
from .runs import load_model, load_model_and_dataset
from .smoothing import ABSTAIN, Smooth, sample_counts

__version__ = "0.1.0"

__all__ = ["ABSTAIN", "GaussianNoise", "LaplaceNoise", "NOISES", "Noise", "Selection", "Smooth", "UniformNoise",
           "certify_dataset", "create_method", "create_model", "get_dataset", "get_noise", "list_datasets", "list_methods", "list_models", "load_model", "load_model_and_dataset",
           "predict_dataset", "sample_counts", "__version__"]
