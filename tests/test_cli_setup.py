"""The set-up in two commands (Makefile, .ci/run) and the CLI's start-up (no torch for --help)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make_n(*args: str) -> list[str]:
    """The commands ``make -n ARGS`` would run (from the repository root)."""
    env = {k: v for k, v in os.environ.items()  # as typed in a shell, not inside a make run with its variables
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHON", "VENV", "TORCH_SPEC", "TORCH", "QUICKSTART",
                        "PYTEST")}
    r = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    return [line.strip() for line in r.stdout.splitlines() if line.strip()]


def _ci_commands() -> list[str]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("cd "))
    return [line.strip() for line in lines[start + 1:] if line.strip() and not line.startswith("#")]


@needs_make
def test_ci_runs_the_steps_of_make_test():
    install = [c for c in _make_n("install") if not c.startswith("echo ")]  # the stamp is make's own
    test = _make_n("test", "VENV=/nonexistent-venv")  # no set-up there: the set-up and the tests
    assert install == [c.replace("/nonexistent-venv", ".venv") for c in test[1:-1] if not c.startswith("echo ")]
    assert _ci_commands() == install + [test[-1].replace("/nonexistent-venv", ".venv")]
    assert _ci_commands()[-1] == ".venv/bin/python -m pytest -q"  # the README's test command


@needs_make
def test_make_variables_choose_torch():
    cuda = "torch --index-url https://download.pytorch.org/whl/cu126"
    install = _make_n("install", f"TORCH_SPEC={cuda}")
    assert f".venv/bin/python -m pip install --quiet {cuda}" in install
    skipped = _make_n("install", "TORCH=skip")
    assert not any("torch" in c and "pip install" in c for c in skipped)
    assert '.venv/bin/python -m pip install --quiet -e ".[test]"' in skipped
    assert _make_n("quickstart", "VENV=/nonexistent-venv")[-1] == "/nonexistent-venv/bin/smoothcert quickstart " \
                                                                  "--out quickstart"


def test_readme_names_both_commands_and_the_test_command():
    readme = (ROOT / "README.md").read_text()
    for text in ("make quickstart", "make test", "TORCH_SPEC=", "TORCH=skip", "python -m pytest -q"):
        assert text in readme, text
    assert re.search(r"^\.venv/bin/python -m pytest -q$", (ROOT / ".ci" / "run").read_text(), re.M)


def test_importing_the_cli_does_not_import_torch():
    code = ("import sys, smoothcert.cli; heavy = sorted(m for m in ('torch', 'numpy', 'scipy', 'matplotlib', "
            "'sklearn') if m in sys.modules); print(','.join(heavy))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"importing smoothcert.cli imported {r.stdout.strip()}"


def test_help_of_every_command_without_torch():
    code = ("import sys\n"
            "from click.testing import CliRunner\n"
            "from smoothcert.cli import main\n"
            "names = sorted(main.commands)\n"
            "for name in [None] + names:\n"
            "    r = CliRunner().invoke(main, ([name] if name else []) + ['--help'])\n"
            "    assert r.exit_code == 0, (name, r.output)\n"
            "print(' '.join(names)); print('torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    names, torch_loaded = r.stdout.split("\n")[:2]
    for cmd in ("train", "certify", "predict", "attack", "check-certificates", "evaluate", "analyze", "plot",
                "quickstart", "methods", "merge", "plot-pa"):
        assert cmd in names.split()
    assert torch_loaded == "False"


def test_certify_help_lists_the_cohen_flags_first(runner):
    from smoothcert.cli import main

    out = runner.invoke(main, ["certify", "--help"]).output
    flags = re.findall(r"^\s+(--[A-Za-z0-9][\w-]*)", out, re.M)
    assert flags[:3] == ["--N0", "--N", "--alpha"], flags[:6]


def test_the_package_keeps_its_public_names_lazily():
    code = ("import sys, smoothcert; assert 'torch' not in sys.modules; "
            "from smoothcert import Smooth, train, certify_dataset, RunDir, get_noise, __version__; "
            "import smoothcert.train, smoothcert.cli.train; assert callable(smoothcert.train) and "
            "smoothcert.train is train and sys.modules['smoothcert.train'].train is train; "
            "assert sorted(smoothcert.__all__) == sorted(set(smoothcert.__all__)); "
            "[getattr(smoothcert, n) for n in smoothcert.__all__]; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_the_cli_choices_are_the_librarys():
    from smoothcert.analysis import FORMATS
    from smoothcert.attacks import NORMS as ATTACK_NORMS
    from smoothcert.cli import names
    from smoothcert.models.dubin import NORMALIZATIONS as NORM_LAYERS
    from smoothcert.noise import BOUNDS, NOISES, NORMS
    from smoothcert.configs import OPTIMIZERS
    from smoothcert.train import SCHEDULES

    assert names.NOISES == tuple(NOISES.names()) and names.CERT_NORMS == NORMS and names.BOUNDS == BOUNDS
    assert names.ATTACK_NORMS == ATTACK_NORMS and names.TABLE_FORMATS == FORMATS
    assert names.SCHEDULES == SCHEDULES and names.NORM_LAYERS == NORM_LAYERS
    assert names.OPTIMIZERS == OPTIMIZERS
    from smoothcert.sequential import DEFAULT_SEQUENCE, SEQUENCES
    assert names.SEQUENCES == SEQUENCES and names.DEFAULT_SEQUENCE == DEFAULT_SEQUENCE
