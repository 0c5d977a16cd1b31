"""Atomic file writes: readers see the old file or the new one, never half of one.

A leaf module (standard library and :mod:`stridelab.errors` only): run results, the measurement suite's figures and the
studies' tables all write through it. A file written here gets the mode the user's umask gives a new file (0644
under umask 022), as ``open(path, "w")`` would, not the 0600 of the temporary file: collaborators on a cluster read
the results.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stridelab.errors import WriteError


def new_file_mode() -> int:
    """0666 minus the process's umask: the mode ``open(path, "w")`` gives a new file. Read from
    /proc (Linux): ``os.umask`` can only be read by setting it, which would race with other threads
    creating files, so it is the fallback where /proc is missing."""
    try:
        status = Path("/proc/self/status").read_text()
        umask = int(next(x for x in status.splitlines() if x.startswith("Umask:")).split()[1], 8)
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path beside ``path`` for a writer that takes a path (``torch.save``, Lightning's
    ``save_checkpoint``); synced and moved onto ``path`` when the block ends without error, removed
    otherwise. An OSError (full disk, read-only folder) becomes a :class:`WriteError` naming ``path``;
    so does a ``RuntimeError`` raised while writing by a writer that hides the OSError (PyTorch's
    zip writer: "file write failed"), when the disk is what stopped it (:func:`write_failure`)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            yield Path(tmp)
        except RuntimeError as err:
            cause = write_failure(err, Path(tmp))
            if cause is None:
                raise
            raise cause from err
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except OSError as err:
        raise WriteError(path, err) from err
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


# What a disk says when it stops a write: full, over quota, past the file-size limit, read-only.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def as_write_error(err: BaseException) -> BaseException:
    """A disk's refusal raised by a writer that is not ours (TensorBoard's event writer, Lightning's
    CSV logger) as the :class:`WriteError` paragraph; anything else unchanged."""
    if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
        return WriteError(
            err.filename or "a log file of the run (TensorBoard's or the CSV logger's)", err, atomic=False
        )
    return err


@contextmanager
def disk_errors_said_once() -> Iterator[None]:
    """A writer thread that dies of a full disk (TensorBoard's event writer) prints a traceback, and
    its owner raises the same error again in the main thread at the next write, where the run says it
    in one paragraph (:func:`as_write_error`). While the block runs such a thread's traceback is left
    out; every other error of a thread is printed as before."""
    previous = threading.excepthook

    def hook(args) -> None:
        if not (isinstance(args.exc_value, OSError) and args.exc_value.errno in DISK_ERRNOS):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def write_failure(err: RuntimeError, tmp: Path) -> OSError | None:
    """The OSError behind a writer's ``RuntimeError`` ("file write failed", "unexpected pos"), found
    by writing one more byte where it stopped (a full disk, a quota or the file-size limit refuse it
    again, now with an errno); None when that write succeeds (the error was not the disk's)."""
    message = str(err)
    if "write" not in message and "unexpected pos" not in message:
        return None
    try:
        with open(tmp, "ab") as f:
            f.write(b"\0")
            f.flush()
            os.fsync(f.fileno())
    except OSError as probe:
        return probe
    return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``: readers see
    the old file or the new one, never half of one."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())
