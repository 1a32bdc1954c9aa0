"""``smoothcert train``: a thin wrapper over ``smoothcert.train.train``.

One convention for every method's hyperparameters: they are the keyword arguments of the
method's constructor, named as in its paper, given as ``-p NAME=VALUE`` (``--param``, repeatable;
``smoothcert methods NAME`` lists them with their defaults), values converted by the constructor's
annotations (``methods.parse_params``). ``--sigma`` and ``--noise`` (every noise-based method)
and ``--m`` (MaxUp) have flags of their own; the per-method flags of earlier releases
(``--epsilon``, ``--alps-eps``, ...) still work as hidden shorthands of ``-p``. A
hyperparameter the method does not take is an error, never ignored; one given twice too.
Library errors map to their flags in ``cli/common.py`` like every command's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from . import main
from .common import amp_option, channels_last_option, deprecated_option, device_option, resolve_device, user_errors
from .names import NORM_LAYERS as NORMS, OPTIMIZERS, SCHEDULES

# (flag, type, help): every method parameter the CLI knows; each goes to the methods that take it
METHOD_FLAGS: list[tuple[str, Any, str]] = [
    ("--sigma", float, "Gaussian noise level in [0, 1] pixel units (gauss, maxup-gauss, maxup, alps, smoothadv); "
                       "recorded as the sigma to certify at."),
    ("--noise", str, "Smoothing noise drawn at --sigma: gaussian (default), laplace, uniform (gauss, maxup-gauss, "
                      "maxup, alps, smoothadv); recorded as the noise to certify with."),
    ("--m", int, "MaxUp: number of augmented copies per input (maxup-gauss, maxup). Under torchrun write "
                 "--num-copies (torchrun's parser claims --m)."),
    ("--warmup-epochs", int, "MaxUp: epochs of plain augmentation (m = 1) first [maxup-gauss: 5, maxup: 0]."),
    ("--augment", str, "maxup: augmentation chain, names joined by '+', each with an optional :value -- gaussian, "
                       "crop-flip[:padding], crop[:padding] (no flip), cutout[:size], cutmix[:mix_alpha], "
                       "mixup[:mix_alpha]; e.g. 'crop-flip+cutmix'."),
    ("--select-resolution", int, "maxup: rank the m copies on images downsampled to this side; train at full size."),
    ("--alps-alpha", float, "ALPS: lam ~ Beta(alps-alpha, alps-beta) [8]."),
    ("--alps-beta", float, "ALPS: lam ~ Beta(alps-alpha, alps-beta) [2]."),
    ("--alps-eps", float, "ALPS: label mass budget E in (0, 1]; E/2 moves to the least-likely class [0.5]."),
    ("--epsilon", float, "SmoothAdv: L2 radius of the attack in [0, 1] pixel units, i.e. the original code's "
                         "--epsilon divided by 256 (its 64 is 0.25 here)."),
    ("--num-steps", int, "SmoothAdv: PGD steps T."),
    ("--num-noise-vec", int, "SmoothAdv: noisy copies M per input."),
    ("--warmup", int, "SmoothAdv: epochs over which epsilon ramps up."),
    ("--classifier", str, "denoiser (and ddpm): the run directory of the classifier the denoiser is trained for "
                          "(frozen; its path and fingerprint are recorded); same as -p classifier=RUN."),
    ("--js-lambda", float, "AugMix/AugMax: weight of the Jensen-Shannon consistency loss."),
    ("--augmax-steps", int, "AugMax: steps of the adversarial mixing search."),
    ("--augmax-step-size", float, "AugMax: step size of the adversarial mixing search."),
]


ALIASES = {"--m": ("--num-copies",)}  # torchrun's argument parser takes --m for an abbreviation of its own options
SHOWN = ("--sigma", "--noise", "--m", "--classifier")  # the rest of METHOD_FLAGS are hidden shorthands of -p NAME=VALUE


def _param(flag: str) -> str:
    return flag[2:].replace("-", "_")


def method_params(method: str, given: dict[str, Any], items: tuple[str, ...] = ()) -> dict[str, Any]:
    """The constructor arguments of ``method`` from the method flags given (None = not given) and
    the ``-p NAME=VALUE`` items. UsageError for a flag the method does not take, a hyperparameter
    given both ways, or a required one that is missing."""
    from ..methods import hyperparameters, parse_params

    accepted = {hp.name for hp in hyperparameters(method)}  # ArgumentError("method") if unknown
    params = parse_params(method, items)
    for flag, _, _ in METHOD_FLAGS:
        value = given.get(_param(flag))
        if value is None:
            continue
        if _param(flag) not in accepted:
            raise click.UsageError(f"{flag} is not used by method {method}")
        if _param(flag) in params:
            raise click.UsageError(f"{flag} and -p {_param(flag)}=... give the same hyperparameter twice")
        params[_param(flag)] = value
    flags = {_param(f): f for f, _, _ in METHOD_FLAGS}
    for hp in hyperparameters(method):
        if hp.required and hp.name not in params:
            raise click.UsageError(f"method {method} needs {flags.get(hp.name, f'-p {hp.name}=VALUE')}")
    return params


def _method_options(fn: Any) -> Any:
    for flag, typ, help_text in reversed(METHOD_FLAGS):
        fn = click.option(flag, *ALIASES.get(flag, ()), _param(flag), type=typ, default=None, help=help_text,
                          hidden=flag not in SHOWN)(fn)
    return click.option("-p", "--param", "param_items", multiple=True, metavar="NAME=VALUE",
                        help="A hyperparameter of the method, by its name in the paper (repeatable), e.g. "
                             "-p lbd=20 -p eta=0.5; `smoothcert methods NAME` lists them with their defaults.")(fn)


@main.command("train")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory to write (config.json, checkpoint.pt, train_log.tsv).")
@click.option("--dataset", default="digits", show_default=True,
              help="digits (bundled), mnist, cifar10, cifar100, svhn, imagenet, synthetic.")
@click.option("--data-root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder with the dataset files (mnist, cifar10, ...).")
@click.option("--download", is_flag=True, help="Fetch missing dataset files (needs torchvision and internet).")
@click.option("--arch", default=None, help="Model (default: the dataset's), e.g. lenet, cifar_resnet110, wrn.")
@click.option("--norm-layers", "norm_layers", type=click.Choice(NORMS), default="bn", show_default=True,
              help="Normalisation layers: bn, or AugMax's dual BatchNorm dubn / dubin.")
@click.option("--model-kwargs", default=None, metavar="JSON",
              help="Keyword arguments of --arch as a JSON object, e.g. '{\"depth\": 17, \"width\": 64}' for dncnn.")
@deprecated_option("--normalize", "norm_layers", "--norm-layers",
                   " (--normalize MEAN,STD is the input normalisation of certify's --model)", type=click.Choice(NORMS))
@click.option("--method", default="gauss", show_default=True,
              help="Training method: gauss, maxup-gauss, maxup, alps, smoothadv, augmix, augmax, stability, "
                   "consistency, macer, smoothmix, catrs, denoiser, ddpm (`smoothcert methods` lists them).")
@_method_options
@click.option("--epochs", type=int, default=90, show_default=True)
@click.option("--batch-size", "batch_size", type=int, default=256, show_default=True,
              help="Global optimisation batch (over all torchrun processes).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd", show_default=True,
              help="sgd (with --momentum) or adam.")
@click.option("--lr", type=float, default=0.1, show_default=True)
@click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum.")
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--schedule", type=click.Choice(SCHEDULES), default="step", show_default=True,
              help="step: lr x lr-gamma every lr-step-size epochs; cosine: to 0 over the epochs.")
@click.option("--lr-step-size", type=int, default=30, show_default=True)
@click.option("--lr-gamma", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initialisation, batches and noise.")
@device_option()
@amp_option(("none", "auto"), "Mixed precision training, CUDA only: --amp alone = auto, bf16 where the GPU "
                              "supports it, else fp16 with loss scaling (train picks the dtype). The trained weights "
                              "differ slightly from a float32 run.")
@channels_last_option()
@click.option("--resume", is_flag=True, help="Continue the run in --out (same settings; --epochs may grow).")
@click.option("--overwrite", is_flag=True,
              help="Start afresh in an --out that is not empty: its config.json, checkpoint.pt and train_log.tsv are "
                   "deleted (other files stay). Without it (or --resume) a folder with content is refused.")
@click.option("--num-workers", type=int, default=0, show_default=True, help="DataLoader workers (image folders).")
@click.option("--max-train-samples", type=int, default=None, help="Train on the first N inputs only.")
@click.option("--max-test-samples", type=int, default=None, help="Evaluate on the first N test inputs only.")
@click.option("--init", default=None, metavar="RUN",
              help="Start from the weights of this run directory (or checkpoint) of the same arch: fine-tuning.")
@click.option("--quiet", is_flag=True, help="No progress bar or epoch lines.")
@click.option("--tensorboard", is_flag=True,
              help="Also write each epoch's loss, accuracies and lr for TensorBoard to OUT/tensorboard "
                   "(tensorboard --logdir OUT/tensorboard); needs the optional tensorboard package.")
@user_errors
def train(out: Path | None, dataset: str, data_root: str | None, download: bool,
          arch: str | None, model_kwargs: str | None, norm_layers: str, method: str, epochs: int, batch_size: int,
          optimizer: str, lr: float, momentum: float, weight_decay: float, schedule: str, lr_step_size: int,
          lr_gamma: float, seed: int, device: str | None,
          amp: str, channels_last: bool, resume: bool, overwrite: bool, num_workers: int,
          max_train_samples: int | None, max_test_samples: int | None, init: str | None, quiet: bool,
          tensorboard: bool, **given: Any) -> None:
    """Train a base classifier into the run directory --out.

    --out gets config.json (what `smoothcert certify` needs), checkpoint.pt (each epoch,
    atomically) and train_log.tsv. Defaults follow Cohen et al. (2019). Under torchrun, run
    `torchrun --nproc_per_node N -m smoothcert.cli train ...`.

    \b
    Examples:
      smoothcert train --out runs/gauss --method gauss --sigma 0.25
      smoothcert train --out runs/maxup --dataset cifar10 --data-root data --method maxup-gauss --m 25 --sigma 0.25
      smoothcert train --out runs/cons --method consistency --sigma 0.5 -p lbd=20 -p num_noise_vec=2
    """
    if out is None:
        raise click.UsageError("Missing option '--out' (the run directory to write).")
    from ..models.external import parse_model_kwargs
    from ..train import NonFiniteLoss, train as train_run

    params = method_params(method, given, given.pop("param_items", ()))
    dev = resolve_device(device)
    try:
        train_run(out, dataset=dataset, arch=arch, method=method, method_params=params, epochs=epochs,
                  batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                  schedule=schedule, lr_step_size=lr_step_size, lr_gamma=lr_gamma, data_root=data_root,
                  download=download, seed=seed,
                  device=dev, amp=amp == "auto", channels_last=channels_last, resume=resume, overwrite=overwrite,
                  quiet=quiet, model_kwargs={**parse_model_kwargs(model_kwargs), "norm": norm_layers},
                  num_workers=num_workers, max_train_samples=max_train_samples, max_test_samples=max_test_samples,
                  init=init,
                  tensorboard=tensorboard)
    except NonFiniteLoss as e:
        raise click.ClickException(str(e)) from None


@main.command("methods")
@click.argument("name", required=False)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the listing as JSON: {method: {hyperparameter: {type, default, required}}}.")
@user_errors
def methods(name: str | None, out: Path | None) -> None:
    """List the training methods, or the hyperparameters of method NAME (for -p NAME=VALUE)."""
    import json

    from ..logs import atomic_write_bytes
    from ..methods import METHODS, hyperparameters

    listing: dict[str, Any] = {}
    for n in [name] if name else METHODS.names():
        doc = (METHODS.get(n).__doc__ or "").strip().splitlines()
        click.echo(f"{n}: {doc[0] if doc else ''}")
        listing[n] = {hp.name: {"type": hp.annotation, "required": hp.required,
                                "default": None if hp.required else hp.default} for hp in hyperparameters(n)}
        if name:
            for hp in hyperparameters(n):
                default = "required" if hp.required else f"default {hp.default!r}"
                click.echo(f"  -p {hp.name}=VALUE  ({hp.annotation}; {default})")
    if out is not None:
        atomic_write_bytes(out, (json.dumps(listing, indent=2, default=repr) + "\n").encode())
