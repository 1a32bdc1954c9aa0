"""Loading denoisers and denoised classifiers from run directories.

* A ``denoiser`` run (``smoothcert train --method denoiser``) records the classifier it was
  trained for: ``method_params["classifier"]`` (the path as given) and
  ``method_params["classifier_fingerprint"]`` (``runs.loading.model_fingerprint``: the SHA-256 of its
  weights). ``smoothcert.load_model(run)`` (hence ``smoothcert certify RUN``) returns
  ``Denoised(denoiser, classifier)`` (``deployed``), after checking that the classifier found
  at that path still has those weights, the run's classes and input shape.
* ``load_denoiser(path, sigma)``: the denoiser alone -- the network of a ``denoiser`` run, the
  one-shot denoiser of a ``ddpm`` run (``OneShotDenoiser`` at ``sigma``), or of a diffusers
  pipeline folder (diffusers installed).
* ``through_denoiser(classifier, config, path, sigma)``: any classifier behind such a denoiser
  (``smoothcert certify CLASSIFIER_RUN --denoiser DENOISER_RUN``): the certify log's metadata
  records both (``denoiser``, ``denoiser_config``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..validation import ArgumentError, check_sigma
from .compose import Denoised

DENOISER_METHODS = ("denoiser", "ddpm")  # training methods whose runs hold a denoiser, not a classifier


def load_classifier(path: Any, arg: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(classifier in eval mode, config) from a run directory or checkpoint (``runs.load_model``);
    ArgumentError naming ``arg`` if it cannot be loaded or is itself a denoiser run."""
    from ..runs import load_model

    p = Path(path)
    if (p / "config.json").is_file():
        from ..runs import read_config

        try:
            method = read_config(p).get("method")
        except ValueError as e:
            raise ArgumentError(arg, f"{arg}: {e}") from None
        if method in DENOISER_METHODS:
            raise ArgumentError(arg, f"{arg}: {str(path)!r} is a {method} run (a denoiser), not a classifier")
    try:
        return load_model(p, device)
    except ValueError as e:
        raise ArgumentError(arg, f"{arg}: {e}") from None


def deployed(model: nn.Module, config: dict[str, Any], device: str | torch.device = "cpu",
             where: str = "the run") -> nn.Module:
    """What a trained model is certified as: ``Denoised(model, classifier)`` for a ``denoiser``
    run (its recorded classifier, fingerprint checked), ``model`` itself for a classifier run.
    A ``ddpm`` run is refused (ArgumentError ``model``): it is certified through ``--denoiser``."""
    method = config.get("method")
    if method == "ddpm":
        raise ArgumentError("model", f"model: {where} is a DDPM (a denoiser, not a classifier); certify a classifier "
                                     f"run through it: smoothcert certify CLASSIFIER_RUN --denoiser {where}")
    if method != "denoiser":
        return model
    from ..runs import model_fingerprint

    params = config.get("method_params") or {}
    path, fingerprint = params.get("classifier"), params.get("classifier_fingerprint")
    if not path:
        raise ArgumentError("model", f"model: denoiser run {where} records no classifier path (it was trained "
                                     "with a classifier module); certify a classifier with --denoiser")
    if not Path(path).exists():
        raise ArgumentError("model", f"model: the classifier {path!r} that denoiser run {where} was trained for is "
                                     "not there (paths are as given at training: run from that folder, or certify "
                                     "the classifier with --denoiser)")
    classifier, cconfig = load_classifier(path, "model", device)
    if fingerprint is not None and model_fingerprint(classifier) != fingerprint:
        raise ArgumentError("model", f"model: the classifier {path!r} has other weights than when denoiser run "
                                     f"{where} was trained (its fingerprint changed); certify it with --denoiser to "
                                     "use it anyway")
    if list(cconfig.get("input_shape") or []) != list(config["input_shape"]):
        raise ArgumentError("model", f"model: classifier {path!r} takes inputs of shape {cconfig.get('input_shape')}, "
                                     f"denoiser run {where} {config['input_shape']}")
    return Denoised(model, classifier, input_shape=config["input_shape"], num_classes=int(config["num_classes"]))


def _run_config(path: Path) -> dict[str, Any] | None:
    from ..runs import read_config

    folder = path if path.is_dir() else path.parent
    if not (folder / "config.json").is_file():
        return None
    try:
        return read_config(folder)
    except ValueError as e:
        raise ArgumentError("denoiser", f"denoiser: {e}") from None


def load_denoiser(path: str | Path, sigma: float | None = None, device: str | torch.device = "cpu"
                  ) -> tuple[nn.Module, dict[str, Any] | None]:
    """(denoiser in eval mode on ``device``, its run config or None) from a ``denoiser`` run
    (the trained network), a ``ddpm`` run (``OneShotDenoiser`` at ``sigma``, default the run's
    recorded sigma) or a diffusers pipeline folder (``load_diffusers``; needs ``sigma``).
    ArgumentError (``denoiser``) for anything else."""
    from ..runs.directory import RunDir
    from .diffusion import OneShotDenoiser, PackedEps, is_diffusers_folder, linear_schedule, load_diffusers

    p = Path(path)
    config = _run_config(p)
    if config is None:
        if p.is_dir() and is_diffusers_folder(p):
            if sigma is None:
                raise ArgumentError("sigma", "sigma: a diffusers denoiser needs the noise level to certify at")
            return load_diffusers(str(p), check_sigma(sigma, positive=True)).to(device).eval(), None
        raise ArgumentError("denoiser", f"denoiser: {str(path)!r} is neither a run directory of smoothcert train "
                                        "(method denoiser or ddpm) nor a diffusers pipeline folder")
    method = config.get("method")
    if method not in DENOISER_METHODS:
        raise ArgumentError("denoiser", f"denoiser: {str(path)!r} is a {method} run, not a denoiser (train one with "
                                        "--method denoiser or --method ddpm)")
    try:
        net, config = RunDir(p if p.is_dir() else p.parent).load_model(device)
    except ValueError as e:
        raise ArgumentError("denoiser", f"denoiser: {e}") from None
    if method == "denoiser":
        return net, config
    params = config.get("method_params") or {}
    if sigma is None:
        sigma = config.get("sigma") or None
        if sigma is None:
            raise ArgumentError("sigma", f"sigma: DDPM run {str(path)!r} records no sigma: give the noise level to "
                                         "certify at")
    schedule = linear_schedule(params.get("num_steps", 1000), params.get("beta_start", 1e-4),
                               params.get("beta_end", 0.02))
    return OneShotDenoiser(PackedEps(net), schedule, check_sigma(sigma, positive=True)).to(device).eval(), config


def through_denoiser(classifier: nn.Module, config: dict[str, Any], denoiser: str | Path, sigma: float | None = None,
                     device: str | torch.device = "cpu") -> tuple[Denoised, float]:
    """(``Denoised(denoiser, classifier)``, sigma): ``classifier`` (with its run ``config``)
    behind the denoiser at path ``denoiser`` (``load_denoiser``). ``sigma`` None: the denoiser
    run's recorded sigma, else the classifier's; ArgumentError(``sigma``) if neither records one.
    Shapes and classes are checked (``Denoised.check``); the composition's provenance records
    the classifier's and the denoiser's (path, config)."""
    from ..runs.loading import _PROVENANCE, provenance  # the loader's provenance table (runs.provenance reads it)

    if sigma is None:
        dconfig = _run_config(Path(denoiser))
        sigma = (dconfig or {}).get("sigma") or config.get("sigma") or None
        if sigma is None:
            raise ArgumentError("sigma", "sigma: neither the denoiser nor the classifier records a training sigma: "
                                         "give the sigma to certify at")
    sigma = check_sigma(sigma, positive=True)
    den, dconfig = load_denoiser(denoiser, sigma, device)
    if dconfig is not None and list(dconfig["input_shape"]) != list(config["input_shape"]):
        raise ArgumentError("denoiser", f"denoiser: {str(denoiser)!r} was trained on inputs of shape "
                                        f"{dconfig['input_shape']}, the classifier takes {config['input_shape']}")
    model = Denoised(den, classifier, input_shape=config["input_shape"], num_classes=int(config["num_classes"]))
    _PROVENANCE[model] = {**(provenance(classifier) or {}), "denoiser": str(denoiser), "denoiser_config": dconfig}
    return model, sigma


__all__ = ["DENOISER_METHODS", "deployed", "load_classifier", "load_denoiser", "through_denoiser"]
