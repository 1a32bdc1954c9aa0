"""Files that must never be lost or half-written: TSV logs (append, resume) and checkpoints.

* Checkpoints and JSON are written atomically: a temp file in the same folder, then
  ``os.replace``. A crash leaves either the old file or the new one, never a torn one.
* Checkpoints load with ``torch.load(weights_only=True)``: a checkpoint can never run code.
* ``TSVLog`` appends one flushed line per record; reopening an existing log checks its header,
  drops a torn last line (a run killed mid-write) and reports which indices are already done.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

CERTIFY_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time")

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + fsync + os.replace)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"folder {str(path.parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` made atomic."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``; ValueError with a one-line reason otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"cannot load checkpoint {str(path)!r}: not a PyTorch checkpoint, or it holds objects other "
                         "than tensors and plain containers (refused: checkpoints load with weights_only=True)") from None
    except Exception as e:  # noqa: BLE001  (truncated or corrupt archive, ...)
        raise ValueError(f"cannot load checkpoint {str(path)!r}: corrupt or truncated ({type(e).__name__})") from None


class TSVLog:
    """An append-only, resumable TSV log with a fixed header.

    ``TSVLog(path, columns)`` creates the file with its header, or reopens an existing one:
    the header must match (else ValueError: "not a ... log"), a torn last line is cut off, and
    ``done`` holds the values of the first column already written (the input indices).
    """

    def __init__(self, path: str | os.PathLike, columns: Sequence[str], kind: str = "smoothcert"):
        self.path = Path(path)
        self.columns = tuple(columns)
        if not self.path.parent.is_dir():
            raise ValueError(f"output folder {str(self.path.parent)!r} does not exist")
        header = "\t".join(self.columns)
        self.done: set[int] = set()
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                raw = f.read()
            text = raw.decode("utf-8", errors="replace")
            lines = text.split("\n")
            if lines[0].rstrip("\r") != header:
                raise ValueError(
                    f"{str(self.path)!r} is not a {kind} log (header {lines[0][:80]!r}, expected {header!r})"
                )
            keep = lines[:-1]  # full lines; the last element is '' or a torn line
            if not text.endswith("\n"):
                with open(self.path, "r+b") as f:
                    f.truncate(raw.rfind(b"\n") + 1)
                    if raw.rfind(b"\n") < 0:  # even the header was torn
                        f.write((header + "\n").encode())
            for line in keep[1:]:
                if not line.strip():
                    continue
                first = line.split("\t", 1)[0]
                try:
                    self.done.add(int(first))
                except ValueError:
                    raise ValueError(f"{str(self.path)!r} has a malformed line: {line[:80]!r}") from None
            self._f = open(self.path, "a", encoding="utf-8")
        else:
            self._f = open(self.path, "w", encoding="utf-8")
            self._f.write(header + "\n")
            self._f.flush()

    def write(self, values: Iterable[Any]) -> None:
        """Append one record (values in column order) and flush it to the OS."""
        values = list(values)
        if len(values) != len(self.columns):
            raise ValueError(f"expected {len(self.columns)} values, got {len(values)}")
        self._f.write("\t".join(_fmt(v) for v in values) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "TSVLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) >= 1e-4 or v == 0 else f"{v:.4e}"
    return str(v)


def read_tsv(path: str | os.PathLike) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a TSV file; ValueError if it is empty or rows have the wrong width."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"log {str(path)!r} does not exist")
    lines = [l.rstrip("\r") for l in path.read_text(encoding="utf-8", errors="replace").split("\n")]
    lines = [l for l in lines if l.strip()]
    if not lines:
        raise ValueError(f"log {str(path)!r} is empty")
    header = lines[0].split("\t")
    rows = []
    for k, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(header):
            raise ValueError(f"log {str(path)!r} line {k} has {len(cells)} fields, expected {len(header)}")
        rows.append(cells)
    return header, rows
