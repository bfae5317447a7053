"""The writer lock: one writer per bank at a time (``fcntl.flock`` on ``<bank>/.lock``).

The OS releases a ``flock`` when its holder dies, so a killed writer never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from ._errors import BankLockedError

LOCK_FILE = ".lock"


class WriterLock:
    """Exclusive writer lock, waiting up to ``timeout`` seconds.

    Parameters
    ----------
    root
        Bank directory.
    timeout
        Seconds to wait for another writer to finish; 0 fails at once.
    """

    def __init__(self, root: Path, timeout: float) -> None:
        self.path = root / LOCK_FILE
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise BankLockedError(
                        f"another process (pid {holder}) is writing to {self.path.parent}; "
                        f"waited {self.timeout:g} s. Retry when it has finished, or open the "
                        "bank with a longer lock_timeout"
                    ) from None
                time.sleep(0.05)
        # The pid is only for the error message above; the lock itself is the flock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
