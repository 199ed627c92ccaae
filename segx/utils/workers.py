"""Worker processes that never outlive segx: a pool whose workers exit when their parent dies
(``kill -9`` included), so a killed check_dataset leaves no orphans running."""
from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor

_PR_SET_PDEATHSIG = 1


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(1.0)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: ask the kernel for SIGKILL when the parent goes (Linux), and watch
    the parent pid as a fallback elsewhere."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


def process_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``workers`` (None: all cores) bound to this process."""
    return ProcessPoolExecutor(workers or os.cpu_count() or 1, initializer=_die_with_parent,
                               initargs=(os.getpid(),))
