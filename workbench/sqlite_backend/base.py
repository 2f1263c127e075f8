"""Django's SQLite backend with writers queued on an OS file lock.

Every transaction starts with BEGIN IMMEDIATE (see settings), so writers
already take turns on SQLite's lock. But SQLite's busy handler waits by
sleeping in growing steps of up to 100 ms, which with 8 concurrent annotators
showed as next-item p99 of about a second. Taking an exclusive flock on a file
beside the database before BEGIN makes waiters wake within a few milliseconds
of the holder's commit. flock locks differ per open file, so this queues
threads of one process (one connection each) and processes alike, and the
kernel drops the lock if a process dies.

A writer waits for the lock at most `settings.SQLITE_LOCK_TIMEOUT` seconds
(environment variable WORKBENCH_SQLITE_LOCK_TIMEOUT, default 10: above the
6.8 s a 1,000,000-item queue swap was measured to hold it, far below a
hanging request), then raises `DatabaseBusy`, which web requests answer with
503 (workbench.busy). Python has no timed flock, so a busy lock is polled:
sleeps start at 0.5 ms and grow to 5 ms, never SQLite's 100 ms.
"""
from __future__ import annotations

import fcntl
import os
import time

from django.conf import settings
from django.db.backends.sqlite3 import base
from django.db.utils import OperationalError

_FIRST_PAUSE_S = 0.0005
# The longest a waiter sleeps between tries, so it gets in at most this long after the holder commits.
_LONGEST_PAUSE_S = 0.005


class DatabaseBusy(OperationalError):
    """Another writer held the SQLite write lock for longer than `settings.SQLITE_LOCK_TIMEOUT`.

    Nothing was written and no transaction was opened; the same request can be sent again.
    """


def writer_lock_take(fd: int, timeout: float) -> None:
    """Take an exclusive flock on `fd`, waiting at most `timeout` seconds; raises DatabaseBusy after that."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    deadline = time.monotonic() + timeout
    pause = _FIRST_PAUSE_S
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DatabaseBusy(f"the database is busy (another writer has held it for more than {timeout:g} s); "
                               "try again")
        time.sleep(min(pause, left))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pause = min(pause * 2, _LONGEST_PAUSE_S)


class DatabaseWrapper(base.DatabaseWrapper):
    _writer_fd: int | None = None
    _writer_locked = False

    def _start_transaction_under_autocommit(self) -> None:
        if not self.is_in_memory_db():
            if self._writer_fd is None:
                self._writer_fd = os.open(f"{self.settings_dict['NAME']}.writers", os.O_CREAT | os.O_RDWR, 0o600)
            writer_lock_take(self._writer_fd, settings.SQLITE_LOCK_TIMEOUT)
            self._writer_locked = True
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._writer_unlock()
            raise

    def _writer_unlock(self) -> None:
        if self._writer_locked and self._writer_fd is not None:
            fcntl.flock(self._writer_fd, fcntl.LOCK_UN)
            self._writer_locked = False

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._writer_unlock()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._writer_unlock()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._writer_unlock()
            if self._writer_fd is not None:
                os.close(self._writer_fd)
                self._writer_fd = None
