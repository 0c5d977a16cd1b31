"""One writer per run: an exclusive lock file in the run's folder (issue 13).

Two sweeps started into the same folder reach the same run folders; the first to create
``<run>/.lock`` (``O_CREAT | O_EXCL``, atomic on local and NFS v3+ filesystems) trains the run, the
other skips it and says who holds it. The file names the holder (host, pid); a background thread
touches it every ``TOUCH_EVERY_S`` while it is held. A lock is stale, and taken over, when its
process is gone (same host) or, for a holder on another host, when it has not been touched for
``stale_after_s`` (a job killed on a cluster node).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

LOCK_FILE = ".lock"
STALE_AFTER_S = 600.0
TOUCH_EVERY_S = 30.0


class RunLocked(Exception):
    """Another live process holds the run's lock."""

    def __init__(self, path: Path, holder: dict) -> None:
        self.path, self.holder = path, holder
        super().__init__(
            f"another process (pid {holder.get('pid')} on {holder.get('host')}, since "
            f"{holder.get('started', '?')}) is training the run in {path.parent}"
        )


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
        self._stop = threading.Event()
        self._toucher: threading.Thread | None = None

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or garbage: judged by its age

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not _alive(holder["pid"])
        try:
            return time.time() - self.path.stat().st_mtime > self.stale_after_s
        except FileNotFoundError:
            return True

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunLocked`; a stale lock is taken over."""
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None:
                    continue  # released meanwhile: try again
                if not self._stale(holder):
                    raise RunLocked(self.path, holder) from None
                self.path.unlink(missing_ok=True)  # a dead holder's
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            self._stop.clear()
            self._toucher = threading.Thread(target=self._touch_while_held, name="stridelab-lock", daemon=True)
            self._toucher.start()
            return
        raise RunLocked(self.path, self.holder() or {})

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
