"""Cross-process locks on local files, that say who holds them.

`local_lock(path)` takes `flock(LOCK_EX)` on a lock file. The kernel drops the
lock when its holder dies, so a process killed inside the critical section
(SIGKILL, OOM, power loss) never blocks the next one; there is no staleness
guess and no race between two processes breaking a stale lock. The lock file
stays; its holder writes who it is into it (pid, host, command, since when),
so a process that has to wait, and `lock_holder`, can say whom it waits for.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
import time

from pipelines.errors import OasisError


class LockTimeout(OasisError, TimeoutError):
    """A lock stayed taken longer than the caller would wait; the message says
    by whom."""


def _me(doing: str = "") -> dict:
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:300],
          "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    return {**me, "doing": doing[:200]} if doing else me


def describe_holder(data: bytes) -> str:
    """What a lock file says about its holder, as one phrase; "an unknown
    process" when it says nothing usable (an older writer, or damaged bytes)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("pid"), int):
        return "an unknown process"
    parts = [f"pid {doc['pid']}"]
    if isinstance(doc.get("host"), str):
        parts.append(f"on {doc['host']}")
    if isinstance(doc.get("doing"), str) and doc["doing"]:
        parts.append(f"({doc['doing'][:120]})")
    elif isinstance(doc.get("command"), str) and doc["command"]:
        parts.append(f"({doc['command'][:120]})")
    if isinstance(doc.get("since"), str):
        parts.append(f"since {doc['since']}")
    return " ".join(parts)


def _read_holder(fd: int) -> str:
    try:
        return describe_holder(os.pread(fd, 4096, 0))
    except OSError:
        return "an unknown process"


def lock_holder(path: str) -> str | None:
    """Who holds the lock at `path` now, or None when it is free (or has never
    been taken). Probes with a non-blocking try, released at once."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class local_lock:
    """An exclusive lock on a local lock file (see the module docstring).

    holder: what the holder is doing, written into the lock file for whoever
    waits. on_wait(holder, timeout_s): called once when the lock is taken by
    another process, before waiting up to `timeout_s`. `waited_s` is how long
    taking it took. `stale_s` is accepted for compatibility and unused."""

    def __init__(self, path: str, timeout_s: float = 30.0, stale_s: float | None = None, on_wait=None, *,
                 holder: str = ""):
        self.path, self.timeout_s, self.on_wait, self.holder = path, timeout_s, on_wait, holder
        self.fd: int | None = None
        self.waited_s = 0.0

    def __enter__(self):
        started = time.monotonic()
        deadline = started + self.timeout_s
        os.makedirs(os.path.dirname(os.path.abspath(self.path)) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and self.on_wait is not None:
                    self.on_wait(_read_holder(fd), self.timeout_s)
                    told = True
                if time.monotonic() > deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise LockTimeout(f"could not take the lock {self.path} within {self.timeout_s:.0f} s: "
                                      f"held by {holder}") from None
                time.sleep(0.02)
        self.fd = fd
        self.waited_s = time.monotonic() - started
        try:  # who holds it, for whoever waits next (best effort: a full disk must not fail the lock)
            data = json.dumps(_me(self.holder)).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError:
            pass
        return self

    def __exit__(self, *exc):
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
