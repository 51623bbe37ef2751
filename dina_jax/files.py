"""Writing a workdir safely: atomic file replacement and one writer per workdir.

* :func:`atomic_write` (and :func:`write_json`, :func:`write_bytes`): the new content goes to a
  temp file with a unique name in the target's folder, is flushed and fsync-ed, then renamed over
  the target. A reader (or a rerun after a kill) sees the old file or the new one, never half.
* :func:`workdir_lock`: an advisory ``flock`` on ``<workdir>/.lock``, held by the process that
  writes the workdir. The OS releases it when the process dies, so a killed run never leaves a
  stale lock; a second process gets :class:`WorkdirBusy` naming the holder's PID. Re-entrant
  within a process (``train_and_evaluate`` calls ``evaluate``, both lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import tempfile
from collections.abc import Iterator

LOCK_NAME = ".lock"
_TEMP_SUFFIX = ".tmp"


class WorkdirBusy(RuntimeError):
    """Another process holds the workdir's lock; the message is one line naming its PID."""


def _fsync_folder(folder: str) -> None:
    """Makes a rename in ``folder`` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a unique temp path beside ``path``; renamed onto ``path`` when the block succeeds.

    For writers that want a file name (h5py, matplotlib); the file is fsync-ed before the rename.
    On an exception the temp file is removed and ``path`` is left as it was.
    """
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=_TEMP_SUFFIX)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """``open(path, mode)`` that replaces ``path`` atomically when the block succeeds.

    Example::

        with atomic_write("results.json") as f:
            json.dump(results, f)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write opens for writing only ('w' or 'wb'), got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_json(path: str | os.PathLike, payload, **dump_kwargs) -> None:
    """Writes ``payload`` as JSON (plus a final newline) to ``path`` atomically."""
    with atomic_write(path) as f:
        json.dump(payload, f, **dump_kwargs)
        f.write("\n")


def remove_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Removes the temp files :func:`atomic_path` left in ``folder`` when killed; returns them.

    Call it only while holding the folder's :func:`workdir_lock`: a temp file of a live writer
    would be removed too.
    """
    removed = []
    for tmp in glob.glob(os.path.join(os.fspath(folder), f".*{_TEMP_SUFFIX}")):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
            removed.append(tmp)
    return removed


# ------------------------------------------------------------------------------ the workdir lock

_HELD: dict[str, list] = {}  # real path of a held lock file -> [fd, depth]


def _holder(lock_path: str) -> str:
    try:
        with open(lock_path) as f:
            pid = f.read().strip()
    except OSError:
        pid = ""
    return f"PID {pid}" if pid.isdigit() else "a process whose PID is not yet recorded"


@contextlib.contextmanager
def workdir_lock(
    workdir: str | os.PathLike, *, enabled: bool = True, create: bool = True
) -> Iterator[None]:
    """Holds the advisory lock of ``workdir`` (created if needed) for the block.

    The lock file holds the holder's PID while it runs and is emptied on release, so a finished
    workdir's files are the same whether or not a later process briefly held the lock. Stale
    temp files of a killed writer are removed once the lock is held.

    Args:
      workdir: the run's folder.
      enabled: False makes this a no-op (processes other than 0 of a multi-host run).
      create: create a missing workdir; False: a missing workdir is a FileNotFoundError
        (evaluating or analysing needs a trained one).

    Raises:
      WorkdirBusy: another process holds the lock.
      OSError: the workdir cannot be created or written (e.g. permissions).
    """
    if not enabled:
        yield
        return
    workdir = os.path.abspath(os.fspath(workdir))
    if not create and not os.path.isdir(workdir):
        raise FileNotFoundError(2, "no such workdir (train it first)", workdir)
    os.makedirs(workdir, exist_ok=True)
    lock_path = os.path.realpath(os.path.join(workdir, LOCK_NAME))
    if lock_path in _HELD:
        _HELD[lock_path][1] += 1
        try:
            yield
        finally:
            _HELD[lock_path][1] -= 1
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WorkdirBusy(
            f"{workdir}: in use by another dina_jax process ({_holder(lock_path)}); wait for it "
            "to finish or use another --workdir"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    _HELD[lock_path] = [fd, 1]
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        remove_stale_temps(workdir)
        yield
    finally:
        del _HELD[lock_path]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # Closing the descriptor releases the flock.


__all__ = [
    "WorkdirBusy",
    "atomic_path",
    "atomic_write",
    "remove_stale_temps",
    "workdir_lock",
    "write_bytes",
    "write_json",
]
