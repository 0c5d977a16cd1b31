"""One writer per run: an exclusive lock file in the run's folder (issue 13).

Two sweeps started into the same folder reach the same run folders; the first to create
``<run>/.lock`` (``O_CREAT | O_EXCL``, atomic on local and NFS v3+ filesystems) trains the run, the
other skips it and says who holds it. The file names the holder (host, pid); a background thread
touches it every ``TOUCH_EVERY_S`` while it is held. A lock is stale, and taken over, when its
process is gone (same host) or, for a holder on another host, when it has not been touched for
``stale_after_s`` (a job killed on a cluster node). A lock file that cannot be read (garbage: it
names no host and pid) is judged the same way by its age, and the messages say it could not be read.
The file is written whole (a temporary file hard-linked into place, atomic on local and NFS
filesystems), so a reader never sees a lock half-written by stridelab.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from pathlib import Path

from stridelab.errors import WriteError

LOCK_FILE = ".lock"
STALE_AFTER_S = 600.0
TOUCH_EVERY_S = 30.0


def readable(holder: dict) -> bool:
    return isinstance(holder.get("pid"), int) and isinstance(holder.get("host"), str)


class RunLocked(Exception):
    """Another live process holds the run's lock (or an unreadable lock is younger than the timeout)."""

    def __init__(self, path: Path, holder: dict, stale_after_s: float = STALE_AFTER_S) -> None:
        self.path, self.holder = path, holder
        if readable(holder):
            text = (
                f"another process (pid {holder['pid']} on {holder['host']}, since "
                f"{holder.get('started', '?')}) is training the run in {path.parent}; its results will be "
                "there when that process is done"
            )
        else:
            try:
                until = time.strftime("%H:%M:%S", time.localtime(path.stat().st_mtime + stale_after_s))
            except OSError:
                until = "?"
            text = (
                f"the run in {path.parent} has a lock file that cannot be read: it does not name a host and pid "
                "as stridelab's locks do (garbage, or written by something else). It counts as held until it "
                f"is {stale_after_s / 60:g} minutes old, the timeout of a holder's heartbeat (at {until}), and is "
                f"taken over then; if no process is training this run, delete {path} and run again"
            )
        super().__init__(text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


class RunLock:
    def __init__(self, run_dir: str | os.PathLike, stale_after_s: float = STALE_AFTER_S) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.stale_after_s = stale_after_s
        self.held = False
        self.taken_over: str | None = None  # what acquire() took over, in words
        self._stop = threading.Event()
        self._toucher: threading.Thread | None = None

    def holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
            return holder if isinstance(holder, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or garbage: judged by its age

    def _stale(self, holder: dict) -> bool:
        if readable(holder) and holder["host"] == socket.gethostname():
            return not _alive(holder["pid"])
        try:
            return time.time() - self.path.stat().st_mtime > self.stale_after_s
        except FileNotFoundError:
            return True

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunLocked`; a stale lock is taken over (``taken_over`` says which)."""
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        self.taken_over = None
        for _ in range(3):
            if self._create(me):
                self.held = True
                self._stop.clear()
                self._toucher = threading.Thread(target=self._touch_while_held, name="stridelab-lock", daemon=True)
                self._toucher.start()
                return
            holder = self.holder()
            if holder is None:
                continue  # released meanwhile: try again
            if not self._stale(holder):
                raise RunLocked(self.path, holder, self.stale_after_s)
            self.taken_over = (
                f"took over the stale lock of pid {holder['pid']} on {holder['host']} (that process is gone)"
                if readable(holder)
                else f"took over the lock {self.path}: it could not be read and was untouched for over "
                f"{self.stale_after_s / 60:g} minutes"
            )
            self.path.unlink(missing_ok=True)
        raise RunLocked(self.path, self.holder() or {}, self.stale_after_s)

    def _create(self, me: dict) -> bool:
        """Put a lock naming ``me`` in place, whole, unless one exists (then False)."""
        tmp = self.path.with_name(f"{LOCK_FILE}.{me['host']}.{me['pid']}.{threading.get_ident()}")
        try:
            tmp.write_text(json.dumps(me))
            try:
                os.link(tmp, self.path)  # fails if the lock exists; atomic, also on NFS
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                    raise
                # a filesystem without hard links: create it exclusively, then write (briefly empty)
                with os.fdopen(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), "w") as f:
                    f.write(json.dumps(me))
            return True
        except FileExistsError:
            return False
        except OSError as err:  # a full disk or a read-only folder: said as for every other write
            raise WriteError(self.path, err) from err
        finally:
            tmp.unlink(missing_ok=True)

    def _touch_while_held(self) -> None:
        while not self._stop.wait(TOUCH_EVERY_S):
            try:
                os.utime(self.path)
            except OSError:
                pass  # a full or vanished disk: the run itself will say so

    def release(self) -> None:
        self._stop.set()
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
