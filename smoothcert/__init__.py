"""smoothcert: certified robustness by randomized smoothing.

Public API: ``Smooth`` (CERTIFY/PREDICT of Cohen et al., 2019) and its sampler, the smoothing
noises (``get_noise``: gaussian, laplace, uniform), dataset-level
``certify_dataset``/``predict_dataset`` (on the one logged runner, ``smoothcert.runs.logged``), the
model, method, dataset and augmentation registries (one ``Registry`` class), ``train()`` (the
function; the module is ``smoothcert.train``), ``RunDir`` and ``load_model`` /
``load_model_and_dataset`` for run directories and checkpoints. Tables and plots are in
``smoothcert.analysis`` and ``smoothcert.plotting``.
"""
__version__ = "0.1.0"  # before the imports: smoothcert.train records it

from .augment import AUGMENTATIONS  # noqa: E402
from .certification import certify_dataset, predict_dataset  # noqa: E402
from .data import DATASETS, get_dataset, list_datasets  # noqa: E402
from .methods import METHODS, create_method, list_methods  # noqa: E402
from .methods.maxup import maxup_loss  # noqa: E402
from .models import MODELS, create_model, list_models  # noqa: E402
from .noise import NOISES, GaussianNoise, LaplaceNoise, Noise, UniformNoise, get_noise  # noqa: E402
from .registry import Registry  # noqa: E402
from .runs import RunDir, RunReport, Selection, load_model, load_model_and_dataset  # noqa: E402
from .smoothing import ABSTAIN, Smooth, sample_counts  # noqa: E402
from .train import train  # noqa: E402  (the function: ``from smoothcert import train``)
from .validation import ArgumentError  # noqa: E402

__all__ = ["ABSTAIN", "AUGMENTATIONS", "ArgumentError", "DATASETS", "GaussianNoise", "LaplaceNoise", "METHODS",
           "MODELS", "NOISES", "Noise", "Registry", "RunDir", "RunReport", "Selection", "Smooth", "UniformNoise",
           "certify_dataset", "create_method", "create_model", "get_dataset", "get_noise", "list_datasets",
           "list_methods", "list_models", "load_model", "load_model_and_dataset", "maxup_loss", "predict_dataset",
           "sample_counts", "train", "__version__"]
