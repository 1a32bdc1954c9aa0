"""Files that must never be lost or half-written: TSV logs (append, resume) and checkpoints.

* Checkpoints and JSON are written atomically: a temp file in the same folder, then
  ``os.replace``. A crash leaves either the old file or the new one, never a torn one.
* Checkpoints load with ``torch.load(weights_only=True)``: a checkpoint can never run code.
* ``TSVLog`` appends one flushed line per record; reopening an existing log checks its header,
  drops a torn last line (a run killed mid-write), refuses a malformed line anywhere else (a
  wrong number of fields, a value not of its column's type, an idx seen before; naming the file
  and line) and reports which indices are already done.
* ``LogLock``: an exclusive ``fcntl.flock`` for the writer of a log; a second writer is refused
  with the holder's pid.
* ``floor_decimal``: radii are logged rounded DOWN, never up.
* ``OutputError`` / ``writing``: the one place that turns an OSError from writing (a read-only
  file system or folder, no permission, a full disk, a folder where a file should be) into one
  line naming the path -- every writer here goes through it.
"""
from __future__ import annotations

import fcntl
import io
import json
import math
import os
import pickle
import tempfile
from decimal import ROUND_FLOOR, Decimal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch

from .validation import ArgumentError

CERTIFY_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
# the trailing columns of a fixed-n certify log: nA, the estimation count of the selected class, of n
# (pA is estimated as nA / n); logs written before them have CERTIFY_COLUMNS alone (``resume_columns``)
COUNT_COLUMNS = ("nA", "n")
PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time")
# The type of each column of the logged runner's logs (certify, predict, attack, certificate check),
# by name: reopening a log checks every value of these columns (``read_rows``); others are not checked.
COLUMN_TYPES: dict[str, type] = {
    "idx": int, "label": int, "predict": int, "correct": int, "radius": float, "time": float, "n_used": int,
    "clean_predict": int, "delta_norm": float, "certified": int, "eps": float, "violation": int,
    "nA": int, "n": int,
}


def resume_columns(path: str | os.PathLike, columns: Sequence[str], legacy: Sequence[str]) -> tuple[str, ...]:
    """The columns to write to the log ``path``: ``legacy`` if it exists and already holds a log
    with that header (one written before ``columns`` existed: it keeps its format, so one file
    never mixes two), else ``columns``. Any other header is refused when the log is opened."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > 0:
            with open(path, encoding="utf-8", errors="replace") as f:
                if f.readline().rstrip("\r\n") == "\t".join(legacy):
                    return tuple(legacy)
    except OSError:
        pass  # the runner reports what is wrong with the file
    return tuple(columns)

_UMASK = os.umask(0)
os.umask(_UMASK)


class OutputError(ArgumentError):
    """An output could not be written: a read-only file system or folder, no permission, a full
    disk, a folder where a file should be, ... The message is one line naming the path and the
    OS's reason, ``"{arg}: cannot write '{path}': No space left on device"``; ``path`` and
    ``errno`` keep them. An ``ArgumentError`` (so a ``ValueError``) of the argument ``arg`` that
    chose the output (``out``, ``out_dir``), so the CLI's ``user_errors`` prints it as one line
    naming that flag, exit status 2.

    Raise it through ``writing(path, arg)`` around any write (the atomic writers, ``TSVLog``,
    ``LogLock`` and ``RunDir`` do), so that this stays the one place that words these errors;
    certify- and train-side code that writes by other means should use it too."""

    def __init__(self, arg: str, message: str, path: str | os.PathLike | None = None, errno: int | None = None):
        super().__init__(arg, message)
        self.path = None if path is None else str(path)
        self.errno = errno


@contextmanager
def writing(path: str | os.PathLike, arg: str = "out", action: str = "write") -> Iterator[None]:
    """Turn an OSError raised in the block into an ``OutputError`` naming ``path`` (the file or
    folder being written; not a temp file) and the OS's reason: ``"{arg}: cannot {action}
    '{path}': {reason}"``."""
    try:
        yield
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise OutputError(arg, f"{arg}: cannot {action} {str(path)!r}: {reason}", path, e.errno) from e


def atomic_write_bytes(path: str | os.PathLike, data: bytes, arg: str = "out") -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + fsync + os.replace):
    if anything fails (a full disk, ...) the old file stays and the temp file goes. An OSError
    becomes an ``OutputError`` (argument ``arg``) naming ``path``."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"folder {str(path.parent)!r} does not exist")
    with writing(path, arg):
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


def atomic_torch_save(obj: Any, path: str | os.PathLike, arg: str = "out") -> None:
    """``torch.save`` made atomic (``atomic_write_bytes``)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue(), arg)


def atomic_write_json(obj: Any, path: str | os.PathLike, arg: str = "out") -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), arg)


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True``; ValueError with a one-line reason otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {str(path)!r} is a directory, not a checkpoint file")
    if not path.exists():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} is not a regular file (a device, FIFO or socket)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"cannot load checkpoint {str(path)!r}: not a PyTorch checkpoint, or it holds objects other "
                         "than tensors and plain containers (refused: checkpoints load with weights_only=True)") from None
    except Exception as e:  # noqa: BLE001  (truncated or corrupt archive, ...)
        raise ValueError(f"cannot load checkpoint {str(path)!r}: corrupt or truncated ({type(e).__name__})") from None


class TSVLog:
    """An append-only, resumable TSV log with a fixed header.

    ``TSVLog(path, columns)`` creates the file with its header, or reopens an existing one: the
    header must match, a torn last line (a run killed mid-write) is cut off, every other line
    must be well formed (one field per column, an integer first field; else ArgumentError
    naming the line), and ``done`` holds the first-column values already written (input
    indices), ``rows`` the lines as lists of fields. Errors name the argument ``arg`` (``out``).
    """

    def __init__(self, path: str | os.PathLike, columns: Sequence[str], kind: str = "smoothcert", arg: str = "out"):
        self.path = Path(path)
        self.columns = tuple(columns)
        self.arg = arg
        check_output_file(self.path, arg)
        header = "\t".join(self.columns)
        self.rows: list[list[str]] = []
        with writing(self.path, arg):  # e.g. a read-only folder
            if self.path.exists() and self.path.stat().st_size > 0:
                self.rows = read_rows(self.path, self.columns, kind, arg, repair=True)
                self._f = open(self.path, "a", encoding="utf-8")
            else:
                self._f = open(self.path, "w", encoding="utf-8")
                self._f.write(header + "\n")
                self._f.flush()
        self.done: set[int] = {int(r[0]) for r in self.rows}

    def write(self, values: Iterable[Any]) -> None:
        """Append one record (values in column order) and flush it to the OS."""
        values = list(values)
        if len(values) != len(self.columns):
            raise ValueError(f"expected {len(self.columns)} values, got {len(values)}")
        with writing(self.path, self.arg):  # e.g. a full disk: a torn line, repaired on reopening
            self._f.write("\t".join(_fmt(v) for v in values) + "\n")
            self._f.flush()

    def close(self) -> None:
        with writing(self.path, self.arg):
            self._f.close()

    def __enter__(self) -> "TSVLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_output_file(path: Path, arg: str = "out") -> None:
    """ArgumentError naming ``arg`` unless ``path`` can be a file in an existing folder."""
    if path.is_dir():
        raise ArgumentError(arg, f"{arg}: {str(path)!r} is a folder, not a file")
    if not path.parent.is_dir():
        raise ArgumentError(arg, f"{arg}: output folder {str(path.parent)!r} does not exist")


def read_rows(path: Path, columns: Sequence[str], kind: str = "smoothcert", arg: str = "out",
              repair: bool = False) -> list[list[str]]:
    """The well-formed rows of a log with header ``columns``. A torn last line (no final
    newline: a run killed mid-write) is ignored, and cut off the file with ``repair``. Every
    other line is checked, the whole file before any row is returned: one with the wrong number
    of fields, a non-integer first field, a value not of its column's type (``COLUMN_TYPES``:
    an integer, or a finite number) or -- in a log whose first column is ``idx`` -- an idx an
    earlier line holds, is an ArgumentError naming the file and its line number."""
    return [cells for _, cells in numbered_rows(path, columns, kind, arg, repair)]


def _bad_value(column: str, cell: str) -> str | None:
    """Why ``cell`` cannot be a value of ``column`` (``COLUMN_TYPES``); None if it can."""
    kind = COLUMN_TYPES.get(column)
    try:
        if kind is int:
            int(cell)
        elif kind is float and not math.isfinite(float(cell)):
            return f"{column} {cell[:20]!r} is not a finite number"
    except ValueError:
        return f"{column} {cell[:20]!r} is not {'an integer' if kind is int else 'a number'}"
    return None


def numbered_rows(path: Path, columns: Sequence[str], kind: str = "smoothcert", arg: str = "out",
                  repair: bool = False) -> list[tuple[int, list[str]]]:
    """``read_rows`` with the line number of each row: ``[(line, fields), ...]``."""
    header = "\t".join(columns)
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines[0].rstrip("\r") != header and not (len(lines) == 1 and header.startswith(lines[0])):
        raise ArgumentError(arg, f"{arg}: {str(path)!r} is not a {kind} log (header {lines[0][:80]!r}, "
                                 f"expected {header!r})")
    if repair and not text.endswith("\n"):
        with open(path, "r+b") as f:
            f.truncate(raw.rfind(b"\n") + 1)
            if raw.rfind(b"\n") < 0:  # even the header was torn
                f.write((header + "\n").encode())
    rows: list[tuple[int, list[str]]] = []
    line_of: dict[int, int] = {}  # idx -> the line that holds it
    unique = bool(columns) and columns[0] == "idx"
    for k, line in enumerate(lines[1:-1], start=2):  # lines[-1] is '' or a torn line
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cells = line.split("\t")
        why = None if len(cells) == len(columns) else f"{len(cells)} fields, expected {len(columns)}"
        if why is None:
            try:
                int(cells[0])
            except ValueError:
                why = f"first field {cells[0][:20]!r} is not an integer"
        for column, cell in zip(columns, cells):
            why = why or _bad_value(column, cell)
        if why is not None:
            raise ArgumentError(arg, f"{arg}: {str(path)!r} line {k} is malformed ({why}): {line[:60]!r}; only a "
                                     "torn last line is repaired")
        if unique:
            i = int(cells[0])
            if i in line_of:
                raise ArgumentError(arg, f"{arg}: {str(path)!r} line {k} repeats idx {i} of line {line_of[i]}; a log "
                                         "holds each input once (remove one of the two lines or choose another file)")
            line_of[i] = k
        rows.append((k, cells))
    return rows


def floor_decimal(x: float, places: int = 4) -> str:
    """``x`` rounded DOWN to ``places`` decimals, as text: a logged radius never overstates the
    certificate (ordinary rounding could by up to 0.5e-places). Exact (decimal arithmetic)."""
    if not math.isfinite(x):
        raise ValueError(f"cannot log a non-finite radius {x!r}")
    return str(Decimal(x).quantize(Decimal(1).scaleb(-places), rounding=ROUND_FLOOR))


class LogLock:
    """An exclusive advisory lock (``fcntl.flock``) for writing one log, held through the file
    ``<log>.lock``, which holds the holder's pid. A second writer gets an ArgumentError naming
    that pid. The kernel drops the lock when its holder dies, so a killed run never blocks the
    next one; the file is removed on release."""

    def __init__(self, log: str | os.PathLike, arg: str = "out"):
        self.path = Path(str(log) + ".lock")
        self.arg = arg
        self._fd: int | None = None

    def acquire(self) -> "LogLock":
        while True:
            with writing(self.path, self.arg, "create"):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ArgumentError(self.arg, f"{self.arg}: {str(self.path)[:-5]!r} is being written by another "
                                              f"process (pid {holder}); wait for it or choose another file") from None
            try:  # the file we locked may have been removed by a holder releasing meanwhile
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        try:
            with writing(self.path, self.arg):  # a full disk: one line naming the lock file ...
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OutputError:
            self.release()  # ... and the lock is not kept
            raise
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing drops the lock
        self._fd = None

    def __enter__(self) -> "LogLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


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
