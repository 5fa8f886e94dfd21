"""Atomic file writes and the writers' lock: readers see the old file or the whole new one, never a half-written one.

Usage::

    atomic_write(Path("out.json"), b"{}", durable=True)
    with locked(path): ...          # one writer at a time (portable: POSIX lockf, msvcrt on Windows)
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
import time
from pathlib import Path

from .errors import PacsEmbedError


def atomic_write(path: Path, data: bytes, durable: bool = False, private: bool = False) -> None:
    """Write ``data`` to ``<path>.partial`` and rename it to ``path``; ``durable`` fsyncs first (power loss);
    ``private``: a temporary name of this process and thread's own (writers that may race on one ``path``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + (f".{os.getpid()}.{threading.get_ident()}" if private else "") + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)       # nothing half-written is left behind
        if e.errno in NO_SPACE:
            raise NoSpaceError(f"no space to write {path} ({os.strerror(e.errno)}); {path.name} is as it was. "
                               f"Free some space (or raise the file-size limit) and run the command again.") from e
        raise


NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class NoSpaceError(PacsEmbedError, OSError):
    """The disk (or a quota or file-size limit) is full: nothing was half-written."""


_HELD: dict[str, int] = {}        # locks this process holds, and how deeply (a writer may nest)
_THREADS = threading.RLock()      # one writer thread at a time within this process


class LockBusy(PacsEmbedError, RuntimeError):
    """Another process holds the lock (``locked(..., wait=False)``)."""


def _lock_file(f, wait: bool) -> None:
    """An exclusive lock on the open file ``f``: POSIX ``lockf`` (it belongs to the process, so DataLoader workers
    forked meanwhile do not inherit it, and a killed writer's lock dies with it), or ``msvcrt.locking`` on Windows
    (also released when the process dies). Imported here, when a writer asks: reading a cache needs neither."""
    try:
        import fcntl
    except ImportError:   # Windows
        import msvcrt
        f.seek(0)
        while True:
            try:
                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                if not wait:
                    raise
                time.sleep(0.1)
    fcntl.lockf(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))


def _unlock_file(f) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        return
    fcntl.lockf(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked(path, wait: bool = True, what: str = "writing"):
    """An exclusive lock ``<path>.lock`` (one writer at a time); ``wait=False`` fails at once with ``LockBusy``.

    Usage: ``with locked(cache_path): ...``
    """
    lock = Path(str(path) + ".lock")
    key = str(lock.resolve())
    busy = LockBusy(f"another process is {what} {str(path)!r} (lock {lock}); wait for it to finish")
    if not _THREADS.acquire(blocking=wait):
        raise busy
    try:
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        lock.parent.mkdir(parents=True, exist_ok=True)
        f = _open_locked(lock, wait, busy)
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
            if os.name == "posix":   # removed while held: nothing is left behind (a waiter sees it gone and retries)
                lock.unlink(missing_ok=True)
            _unlock_file(f)
            f.close()
    finally:
        _THREADS.release()


def _open_locked(lock: Path, wait: bool, busy: Exception):
    """The lock file, open and locked — the one at ``lock`` now: a holder removes it when done, so a waiter that
    locked the removed file opens the path again."""
    while True:
        f = open(lock, "a+b")
        try:
            _lock_file(f, wait)
        except OSError:
            f.close()
            raise busy from None
        try:
            same = os.name != "posix" or os.stat(lock).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return f
        _unlock_file(f)
        f.close()


def component(name, fallback: str = "unnamed") -> str:
    """``name`` (read from a cache or a file: a dataset or model name, a file stem) as one safe path component: path
    separators and NULs become "_", and "", "." and ".." (or only dots) cannot climb out of the folder it is put in.

    Usage: ``folder / component(cache.attrs["dataset_name"])``"""
    text = re.sub(r"[/\\\x00:]", "_", str(name)).strip()
    if not text.strip("."):
        text = text.replace(".", "_") or fallback
    return text[:120]
