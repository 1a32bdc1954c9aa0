"""The choices that the commands' options and help texts list, as plain constants: the CLI's
``--help`` must not import the library (torch, numpy, scipy) to show them. Each mirrors the
library's own definition named beside it; tests/test_cli_setup.py checks that they are equal."""
from __future__ import annotations

NOISES = ("gaussian", "laplace", "uniform")  # smoothcert.noise.NOISES.names()
CERT_NORMS = ("l1", "l2", "linf")  # smoothcert.noise.NORMS
BOUNDS = ("one-sided", "two-sided")  # smoothcert.noise.BOUNDS
ATTACK_NORMS = ("linf", "l2")  # smoothcert.attacks.NORMS
TABLE_FORMATS = ("md", "latex", "json", "csv")  # smoothcert.analysis.FORMATS
SCHEDULES = ("step", "cosine")  # smoothcert.train.SCHEDULES
OPTIMIZERS = ("sgd", "adam")  # smoothcert.configs.OPTIMIZERS
NORM_LAYERS = ("bn", "dubn", "dubin")  # smoothcert.models.dubin.NORMALIZATIONS
SEQUENCES = ("mixture", "cp-union", "cp-geometric")  # smoothcert.sequential.SEQUENCES
DEFAULT_SEQUENCE = "mixture"  # smoothcert.sequential.DEFAULT_SEQUENCE
