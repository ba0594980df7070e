"""Tie a process's life to the engine's: when the engine dies, so does everything it started.

Workers and strategies are started through multiprocessing's forkserver, so their parent
is the forkserver, not the engine. Two lines of defence, both needed:
- ``die_with_parent()`` asks Linux to SIGKILL this process when its parent dies (used in
  the forkserver itself, through ``PRELOAD`` of this module, and in every child);
- ``watch_engine(pid)`` polls the engine's pid from a daemon thread and ends the process
  when it is gone, for whatever the first line misses.
"""
from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 0.5


def die_with_parent() -> None:
    """SIGKILL this process when its parent exits (Linux; a no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: watch_engine() alone keeps children from outliving the engine


def _engine_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch_engine(pid: int) -> None:
    """End this process (at once, like the engine did) when process ``pid`` is gone."""
    def watch():
        while _engine_alive(pid):
            time.sleep(WATCH_INTERVAL_S)  # a liveness poll, not synchronisation
        os._exit(70)

    threading.Thread(target=watch, name="engine-lifeline", daemon=True).start()


# Imported by the forkserver as a preload module: the forkserver, whose parent is the
# engine, must not outlive it (its children, the workers, die with it in turn).
if os.environ.get("MAOTRADE_FORKSERVER_LIFELINE") == "1":
    die_with_parent()
