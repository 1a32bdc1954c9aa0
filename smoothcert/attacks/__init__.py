"""Empirical robustness: attacks on a base model or on the soft smoothed classifier, their
dataset-level evaluation, and the empirical test of certificates. One job a module:

* ``base``           Lp geometry (``lp_norm``, ``ascent_direction``, ``project``), ``frozen_eval``
                     and the ``Attack`` base class (validation and mode switching).
* ``fgsm``, ``pgd``  one class an attack, torchattacks-style: settings in the object, one calling
                     convention ``attack(model, x, y, generator=None) -> x_adv``. ``model`` maps
                     (B, C, H, W) pixels in [0, 1] to (B, K) logits -- or log-probabilities, as
                     ``SoftSmoothed`` returns; the cross-entropy is the same for both.
* ``soft_smoothed``  ``SoftSmoothed``, the soft smoothed classifier (Salman et al., 2019).
* ``evaluate``       ``attack_dataset``: clean and robust accuracy of f, or of PREDICT of g.
* ``certificates``   ``check_certificates``: attack certified inputs inside their radius and test
                     the violations against the binomial that CERTIFY's and PREDICT's alphas allow.
* ``smoothcert.runs.logged`` (not in this package) the resumable TSV runner both evaluations
                     write through.
"""
from .base import NORMS, Attack, ascent_direction, check_norm, frozen_eval, lp_norm, project
from .certificates import CHECK_COLUMNS, CertificateCheck, check_certificates, read_certificates, violation_pvalue
from .evaluate import ATTACK_COLUMNS, AttackSummary, SmoothedEval, attack_dataset, summarize_attack_log
from .fgsm import FGSM
from .pgd import PGD
from .soft_smoothed import SoftSmoothed

__all__ = ["ATTACK_COLUMNS", "CHECK_COLUMNS", "NORMS", "FGSM", "PGD", "Attack", "AttackSummary", "CertificateCheck",
           "SmoothedEval", "SoftSmoothed", "ascent_direction", "attack_dataset", "check_certificates", "check_norm",
           "frozen_eval", "lp_norm", "project", "read_certificates", "summarize_attack_log", "violation_pvalue"]
