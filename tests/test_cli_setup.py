"""The set-up in two commands (Makefile, .ci/run) and the CLI's start-up (no torch for --help)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
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
