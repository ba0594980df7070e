"""Spawn, watch and restart Account Manager processes, one per account.

A worker that exits, or stays silent past ``heartbeat_timeout``, is killed (if needed)
and started again after a backoff that doubles with each consecutive failure
(``RESTART_BACKOFF_FIRST`` = 0.5 s up to ``RESTART_BACKOFF_MAX`` = 30 s) and starts again
from 0.5 s once a worker has run ``STABLE_AFTER`` seconds (as long as the longest
backoff: a worker that outlives the longest wait was not failing in a loop). A worker
that exits with ``EXIT_FATAL`` (bad credentials, bad config) is not restarted.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from typing import Optional

from engine.worker import run_worker
from maotrade.account_manager import EXIT_FATAL

log = logging.getLogger(__name__)

RESTART_BACKOFF_FIRST = 0.5
RESTART_BACKOFF_MAX = 30.0
STABLE_AFTER = RESTART_BACKOFF_MAX
# engine.lifeline first: it makes the forkserver itself die with the engine.
PRELOAD = ["engine.lifeline", "engine.worker", "maotrade.account_manager", "account_managers.paper", "zmq",
           "msgspec"]

_context = None


def process_context():
    """Return the forkserver context, with the modules every worker needs preloaded."""
    global _context
    if _context is None:
        os.environ["MAOTRADE_FORKSERVER_LIFELINE"] = "1"  # read by engine.lifeline in the forkserver
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def restart_backoff(failures: int, ran_s: float) -> tuple[int, float]:
    """Return (consecutive failures, seconds to wait) for a worker that died after ``ran_s``.

    ``failures`` counts the failures before this one; a worker that ran ``STABLE_AFTER``
    seconds or more starts the count again.
    """
    if ran_s >= STABLE_AFTER:
        failures = 0
    return failures + 1, min(RESTART_BACKOFF_MAX, RESTART_BACKOFF_FIRST * 2 ** failures)


@dataclass
class WorkerHandle:
    """One account's worker process and what the supervisor knows of it."""

    account: str
    spec: dict
    process: Optional[multiprocessing.Process] = None
    started_at: float = 0.0
    last_seen: float = 0.0
    heard: bool = False
    failures: int = 0
    restarts: int = 0
    next_start_at: Optional[float] = None
    fatal_reason: str = ""
    stopping: bool = False

    @property
    def pid(self) -> Optional[int]:
        """The worker's pid while it runs."""
        return self.process.pid if self.process is not None and self.process.is_alive() else None


class Supervisor:
    """The engine's process table."""

    def __init__(self, heartbeat_timeout: float = 15.0, init_timeout: float = 120.0):
        self.heartbeat_timeout = heartbeat_timeout
        self.init_timeout = init_timeout
        self.workers: dict[str, WorkerHandle] = {}

    def add(self, account: str, spec: dict) -> WorkerHandle:
        """Register and start a worker for ``account``."""
        handle = self.workers[account] = WorkerHandle(account, spec)
        self._spawn(handle)
        return handle

    def _spawn(self, handle: WorkerHandle) -> None:
        handle.process = process_context().Process(target=run_worker, args=(handle.spec,),
                                                   name=f"account-{handle.account}", daemon=True)
        handle.process.start()
        handle.started_at = handle.last_seen = time.monotonic()
        handle.heard = False
        handle.next_start_at = None
        log.info("event=worker_started account=%s pid=%s", handle.account, handle.process.pid)

    def heard_from(self, account: str) -> None:
        """Note that ``account``'s worker is alive (any message counts as a heartbeat)."""
        handle = self.workers.get(account)
        if handle is not None:
            handle.last_seen = time.monotonic()
            handle.heard = True

    def sentinels(self) -> dict[int, str]:
        """File descriptors that become readable when a worker exits, by account."""
        return {h.process.sentinel: a for a, h in self.workers.items()
                if h.process is not None and h.next_start_at is None and not h.fatal_reason}

    def check(self) -> list[tuple[str, str]]:
        """Detect dead or hung workers, start due restarts; return (account, event) pairs.

        Events: ``died``, ``hung``, ``fatal``, ``restarted``.
        """
        now = time.monotonic()
        events = []
        for account, handle in self.workers.items():
            if handle.stopping or handle.fatal_reason:
                continue
            process = handle.process
            if handle.next_start_at is not None:
                if now >= handle.next_start_at:
                    handle.restarts += 1
                    self._spawn(handle)
                    events.append((account, "restarted"))
                continue
            if process is not None and not process.is_alive():
                process.join(0)
                code = process.exitcode
                if code == EXIT_FATAL:
                    handle.fatal_reason = f"worker exited with a fatal error (code {code})"
                    events.append((account, "fatal"))
                    continue
                self._schedule_restart(handle, now, f"exited with code {code}")
                events.append((account, "died"))
                continue
            limit = self.heartbeat_timeout if handle.heard else self.init_timeout
            if now - handle.last_seen > limit:
                log.error("event=worker_hung account=%s silent_s=%.1f", account, now - handle.last_seen)
                process.kill()
                process.join(5)
                self._schedule_restart(handle, now, "stopped heartbeating")
                events.append((account, "hung"))
        return events

    def _schedule_restart(self, handle: WorkerHandle, now: float, why: str) -> None:
        handle.failures, delay = restart_backoff(handle.failures, now - handle.started_at)
        handle.next_start_at = now + delay
        log.warning("event=worker_down account=%s why=%r restart_in_s=%.1f", handle.account, why, delay)

    def stop_all(self, send_shutdown, timeout: float = 10.0) -> None:
        """Ask every worker to stop (``send_shutdown(account)``), wait, kill the rest."""
        for account, handle in self.workers.items():
            handle.stopping = True
            if handle.process is not None and handle.process.is_alive():
                send_shutdown(account)
        deadline = time.monotonic() + timeout
        for handle in self.workers.values():
            if handle.process is None:
                continue
            handle.process.join(max(0.0, deadline - time.monotonic()))
            if handle.process.is_alive():
                log.warning("event=worker_killed account=%s why=no_shutdown_ack", handle.account)
                handle.process.kill()
                handle.process.join(5)
