"""What every command shares: the one mapping from library argument errors to CLI flags, the
option definitions whose names mean one thing across commands, deprecated spellings, devices.

Conventions (one meaning per name, every command):

* ``--out``     the output (a file; ``train``'s run directory). Commands that can just print
                (``attack``, ``analyze``, ``evaluate``) write only when it is given.
* ``--batch``   the batch a command computes in, part of its results: certify/predict's noise
                block (recorded), attack's rows per forward pass, evaluate's images per forward;
                ``train``'s optimisation batch is ``--batch-size``. What only bounds memory has its
                own flag (certify/predict ``--max-batch``), as has PREDICT's block in attack
                (``--predict-batch``).
* ``--max``     at most MAX inputs; omitted = all.
* ``--seed``    default 0: every random command is reproducible unless told otherwise.
* ``--amp``     ``--amp [MODE]``: none (default), bf16, fp16, or ``--amp`` alone = auto.
* ``--channels-last/--no-channels-last``  default on (the measured faster layout; same maths).
* ``--norm``    the Lp norm of a threat model or certificate; ``train``'s normalisation layers
                are ``--norm-layers``.
* ``--normalize MEAN,STD``  the input normalisation put in front of a ``--model`` (certify, predict,
                attack, check-certificates, evaluate); pixels stay in [0, 1].

An old spelling kept for one release prints a deprecation warning (``deprecated_option``,
``warn_deprecated``); CHANGELOG.md lists the old spellings and when each goes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click
from click.core import ParameterSource

from ..validation import ArgumentError
from .names import NOISES

if TYPE_CHECKING:  # torch is imported by the commands' work, not by the CLI's start (--help)
    import torch

# -- library argument -> CLI flag (the one place) ---------------------------------------------------
# Flags whose spelling differs from "--" + the argument's name with "-" for "_"; per command first.
FLAG_OF_ARG: dict[str, str] = {"n0": "--N0", "n": "--N", "batch_size": "--batch", "max_count": "--max",
                               "max_images": "--max", "max": "--max", "out_dir": "--out", "labels": "--label"}
FLAG_OF_ARG_IN: dict[str, dict[str, str]] = {
    "train": {"batch_size": "--batch-size", "normalization": "--norm-layers", "max_count": "--max-train-samples"},
}


def flag_for(ctx: click.Context | None, arg: str) -> str | None:
    """The flag of ``ctx``'s command that sets library argument ``arg``; None if it has none."""
    if ctx is None:
        return None
    cmd = ctx.command
    opts = {o for p in cmd.params for o in p.opts if o.startswith("-")}
    flag = FLAG_OF_ARG_IN.get(cmd.name or "", {}).get(arg) or FLAG_OF_ARG.get(arg) or "--" + arg.replace("_", "-")
    if flag in opts:
        return flag
    for p in cmd.params:  # an option whose parameter is named like the argument
        if p.name == arg and isinstance(p, click.Option):
            return p.opts[0]
    return None


def _strip_arg(message: str, arg: str) -> str:
    """The message without its leading argument name ("alpha must be ..." -> "must be ...")."""
    if message.startswith(arg):
        rest = message[len(arg):]
        if rest[:1] in (" ", ":"):
            return rest.lstrip(": ").strip() or message
    return message


def as_click_error(error: Exception, ctx: click.Context | None = None) -> click.ClickException:
    """A library error as click's one-line error (exit status 2): ``ArgumentError`` names its flag."""
    msg = (str(error).splitlines() or ["invalid input"])[0] or "invalid input"
    if isinstance(error, ArgumentError):
        flag = flag_for(ctx if ctx is not None else click.get_current_context(silent=True), error.arg)
        if flag is not None:
            return click.BadParameter(_strip_arg(msg, error.arg), param_hint=flag)
    if isinstance(error, OSError) and error.filename is not None:
        msg = f"{error.filename}: {error.strerror or msg}"
    return click.UsageError(msg)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The library's ValueError (and file-system errors) as a one-line usage error, exit status 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, PermissionError, IsADirectoryError, NotADirectoryError, FileNotFoundError) as e:
            raise as_click_error(e) from None

    return wrapper


# -- deprecations ------------------------------------------------------------------------------------
def warn_deprecated(old: str, new: str) -> None:
    click.echo(f"warning: {old} is deprecated and will be removed in the next release; {new}", err=True)


def given(ctx: click.Context, name: str) -> bool:
    """Whether the user set parameter ``name`` (not a default)."""
    return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def deprecated_option(old: str, dest: str, new: str, note: str = "",
                      **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A hidden option ``old`` kept for one release: its value goes to parameter ``dest`` (the new
    option ``new``), with a warning on stderr (plus ``note``); giving both is an error."""
    hidden = "deprecated_" + old.lstrip("-").replace("-", "_")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            value = kw.pop(hidden)
            if value is not None:
                ctx = click.get_current_context()
                if given(ctx, dest):
                    raise click.UsageError(f"give {new} or {old}, not both ({old} is deprecated)")
                warn_deprecated(old, f"use {new}{note}")
                kw[dest] = value
            return fn(*args, **kw)

        return click.option(old, hidden, hidden=True, default=None, **kwargs)(wrapper)

    return deco


# -- shared options ----------------------------------------------------------------------------------
def out_option(help: str, required: bool = False, file_okay: bool = True) -> Callable[..., Any]:
    return click.option("--out", type=click.Path(path_type=Path, file_okay=file_okay),
                        required=required, default=None, help=help)


def batch_option(default: int, help: str = "Rows per forward pass.") -> Callable[..., Any]:
    return click.option("--batch", "batch", type=int, default=default, show_default=True, help=help)


def _max_callback(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise click.BadParameter(f"must be >= 1 (omit it for all), got {value}", ctx=ctx, param=param)
    return value


def max_option(what: str = "inputs") -> Callable[..., Any]:
    return click.option("--max", "--max-inputs", "max_count", type=int, default=None, callback=_max_callback,
                        help=f"Process at most MAX {what} (default: all). Under torchrun write --max-inputs "
                             "(torchrun's parser claims --max).")


def seed_option(what: str = "the noise") -> Callable[..., Any]:
    return click.option("--seed", type=int, default=0, show_default=True,
                        help=f"Seed of {what}: reruns and resumes give identical output.")


AMP_MODES = ("none", "auto", "bf16", "fp16")
AMP_HELP = ("Autocast the forward passes: --amp alone = auto (bf16 where the device supports it, else fp16), or "
            "none, bf16, fp16. bf16 runs on CUDA and on the CPU alike (on the CPU it is often slower); fp16 is for "
            "CUDA. Lower precision changes the logits slightly, so votes, predictions and radii can differ from a "
            "float32 run (the certificate is for the model as run).")


def amp_option(modes: tuple[str, ...] = AMP_MODES, help: str = AMP_HELP) -> Callable[..., Any]:
    """``--amp [MODE]``: one shape in every command (``--amp`` alone = auto)."""
    return click.option("--amp", type=click.Choice(modes), is_flag=False, flag_value="auto", default="none",
                        show_default=True, help=help)


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``--amp`` mode on ``device`` (None: float32)."""
    if mode == "none":
        return None
    import torch

    if mode == "auto":
        bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def channels_last_option() -> Callable[..., Any]:
    return click.option("--channels-last/--no-channels-last", default=True, show_default=True,
                        help="Channels-last (NHWC) memory format for the model and its batches: the same maths, "
                             "often faster convolutions (see experiments/bench_certify.py).")


def device_option() -> Callable[..., Any]:
    return click.option("--device", default=None,
                        help="cpu, cuda, cuda:1 ... (default: cuda if available). Under torchrun cuda is each "
                             "process's own GPU, cuda:LOCAL_RANK.")


def noise_option() -> Callable[..., Any]:
    """``--noise``: the smoothing noise (certify, predict, attack --smoothed); default the run's own."""
    return click.option("--noise", default=None,
                        help=f"Smoothing noise: {', '.join(NOISES)}. Default: the noise the model was trained with.")


def quiet_option() -> Callable[..., Any]:
    return click.option("--quiet", is_flag=True, help="No progress (a bar on a terminal, else a line every 30 s on stderr).")


def data_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--dataset, --data-root, --split for commands that load a model's data."""
    for opt in reversed([
        click.option("--dataset", default=None,
                     help="Dataset name, or the path of a tensor file (.pt / .npz with x, y; pixels in [0, 1] or "
                          "uint8) or of an image folder (one sub-folder per class). Default: the model's training "
                          "dataset."),
        click.option("--data-root", default=None, help="Folder with the dataset files (mnist, cifar10, ...)."),
        click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True),
    ]):
        fn = opt(fn)
    return fn


# -- the model a command evaluates: MODEL (a run directory or checkpoint) or --model SPEC ------------------
_MODEL_FLAGS = ("model_spec", "model_kwargs", "weights", "normalize", "num_classes")


@dataclass(frozen=True)
class ModelSource:
    """What the flags name as the model to evaluate: the positional MODEL (``path``) or ``--model``
    (``spec``) with ``--model-kwargs`` (JSON text), ``--weights``, ``--normalize`` (text) and
    ``--num-classes``. ``str()`` is the path or the spec."""

    path: Path | None = None
    spec: str | None = None
    model_kwargs: str | None = None
    weights: Path | None = None
    normalize: str | None = None
    num_classes: int | None = None

    def __str__(self) -> str:
        return self.spec if self.spec is not None else str(self.path)

    def load(self, dataset: str | None, data_root: str | None, split: str, device: Any) -> tuple[Any, Any, Any]:
        """(model, config, dataset) from ``sources.load_classifier``, the flags' texts parsed; an error
        about the positional MODEL names MODEL (one about --model names --model)."""
        from ..models.external import parse_model_kwargs, parse_normalize
        from ..sources import load_classifier

        if self.path is not None and self.spec is not None:
            raise click.UsageError("give MODEL (a run directory or checkpoint) or --model SPEC, not both")
        if self.path is None and self.spec is None:
            raise click.UsageError("Missing argument 'MODEL' (a run directory or checkpoint), or give --model SPEC")
        kwargs = None if self.model_kwargs is None else parse_model_kwargs(self.model_kwargs)
        norm = None if self.normalize is None else parse_normalize(self.normalize)
        try:
            c = load_classifier(self.path, spec=self.spec, weights=self.weights, model_kwargs=kwargs, normalize=norm,
                                num_classes=self.num_classes, dataset=dataset, data_root=data_root, split=split,
                                device=device)
        except ArgumentError as e:
            if e.arg == "model" and self.path is not None:
                raise click.BadParameter(_strip_arg(str(e).splitlines()[0], "model"), param_hint="MODEL") from None
            raise
        return c.model, c.config, c.dataset


def model_source_options(fn: Callable[..., Any] | None = None, *, argument: bool = True) -> Any:
    """The optional positional MODEL (unless ``argument=False``) and --model, --model-kwargs,
    --weights, --normalize, --num-classes; the command gets them as one ``ModelSource`` in its
    parameter ``model`` (with ``argument=False`` it gets ``model=None`` to fill in)."""
    if fn is None:
        return lambda f: model_source_options(f, argument=argument)

    @wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        flags = {name: kw.pop(name) for name in _MODEL_FLAGS}
        kw["model"] = ModelSource(kw.get("model"), flags.pop("model_spec"), **flags)
        return fn(*args, **kw)

    for opt in reversed([
        *([click.argument("model", required=False, type=click.Path(path_type=Path))] if argument else []),
        click.option("--model", "model_spec", default=None, metavar="SPEC",
                     help="Any model instead of MODEL: FILE.py:NAME or package.module:NAME (a class, or a function "
                          "returning an nn.Module), timm:NAME, torchvision:NAME, a TorchScript file or a "
                          "torch.export .pt2 file. Needs --dataset."),
        click.option("--model-kwargs", default=None, metavar="JSON",
                     help="With --model: keyword arguments of NAME as a JSON object, e.g. '{\"depth\": 20}'."),
        click.option("--weights", type=click.Path(path_type=Path), default=None,
                     help="With --model: a state dict file (torch.load with weights_only=True) to load into it."),
        click.option("--normalize", default=None, metavar="MEAN,STD",
                     help="With --model: put (x - mean) / std in front of it, one mean then one std per channel "
                          "(m1,..,mC,s1,..,sC) or imagenet, cifar10, cifar100, mnist; data, noise and radii stay "
                          "in [0, 1] pixels. Give it when the model expects normalised inputs."),
        click.option("--num-classes", type=int, default=None,
                     help="Number of classes, where the data cannot tell (a tensor file whose labels miss the "
                          "last classes); with --model it must equal the model's number of logits."),
    ]):
        wrapper = opt(wrapper)
    return wrapper


def resolve_device(device: str | None) -> torch.device:
    """``--device`` as this process's device: ``processes.choose_device`` (under torchrun ``cuda``
    is the local rank's GPU, cuda:LOCAL_RANK; another ``cuda:k`` is refused), a bad one as a
    usage error naming ``--device``."""
    from ..processes import choose_device

    try:
        return choose_device(device)
    except ValueError as e:
        raise click.BadParameter(_strip_arg(str(e), "device"), param_hint="--device") from None
