"""Start, watch and restart the strategy processes of ``maotrade start``.

A strategy process that exits while the engine runs has died: the supervisor prints one
line saying which strategy, where and why (the reason its host wrote to a failure file;
the traceback is in the log file), then, as the operator chose with
``--on-strategy-failure``:

- ``restart``: start it again after a backoff that doubles with each consecutive
  failure (``RESTART_BACKOFF_FIRST`` .. ``RESTART_BACKOFF_MAX`` seconds) and resets once
  it has run ``STABLE_AFTER`` seconds;
- ``stop``: stop the engine, which then exits with code 1.

``status()`` is what ``maotrade status`` shows of each strategy.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger(__name__)

RESTART_BACKOFF_FIRST = 1.0
RESTART_BACKOFF_MAX = 60.0
STABLE_AFTER = 60.0
ON_FAILURE = ("restart", "stop")


@dataclass
class StrategyHandle:
    """One strategy process and what the supervisor knows of it."""

    name: str
    target: str
    spec: dict
    process: object = None
    started_at: float = 0.0
    state: str = "starting"  # running, restarting, failed, stopped
    reason: str = ""
    failures: int = 0
    restarts: int = 0
    next_start_at: Optional[float] = None
    history: list = field(default_factory=list)


class StrategySupervisor:
    """The strategy processes of one engine."""

    def __init__(self, context, entry: Callable[[dict], None], run_dir: Path, on_failure: str = "restart",
                 echo: Callable[[str], None] = print):
        if on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure must be one of {', '.join(ON_FAILURE)}, got {on_failure!r}")
        self.context = context
        self.entry = entry
        self.run_dir = Path(run_dir)
        self.on_failure = on_failure
        self.echo = echo
        self.handles: list[StrategyHandle] = []
        self.stop_reason = ""  # set when a failure means the engine must stop

    def add(self, name: str, target: str, spec: dict) -> StrategyHandle:
        """Register and start one strategy process."""
        handle = StrategyHandle(name, target, {**spec, "failure_file": str(self.run_dir / f"{name}.failure")})
        self.handles.append(handle)
        self._spawn(handle)
        self.echo(f"strategy {name} ({target}) started (pid {handle.process.pid})")
        return handle

    def _spawn(self, handle: StrategyHandle) -> None:
        Path(handle.spec["failure_file"]).unlink(missing_ok=True)
        handle.process = self.context.Process(target=self.entry, args=(handle.spec,), name=f"strategy-{handle.name}",
                                              daemon=True)
        handle.process.start()
        handle.started_at = time.monotonic()
        handle.next_start_at = None
        handle.state = "running"

    def check(self) -> bool:
        """Notice dead strategies, start due restarts; return True when the engine must stop."""
        now = time.monotonic()
        for handle in self.handles:
            if handle.state == "restarting" and handle.next_start_at is not None and now >= handle.next_start_at:
                handle.restarts += 1
                self._spawn(handle)
                self.echo(f"strategy {handle.name} restarted (pid {handle.process.pid}, restart {handle.restarts})")
            elif handle.state == "running" and not handle.process.is_alive():
                handle.process.join(0)
                if handle.process.exitcode == 0:  # it called stop(): its choice, not a failure
                    handle.state = "stopped"
                    self.echo(f"strategy {handle.name} stopped by itself")
                else:
                    self._died(handle, now)
        return bool(self.stop_reason)

    def _died(self, handle: StrategyHandle, now: float) -> None:
        failure = Path(handle.spec["failure_file"])
        code = handle.process.exitcode
        reason = failure.read_text().strip() if failure.exists() else (
            f"exited with code {code}" if code is None or code >= 0 else f"killed by signal {-code}")
        handle.reason = reason
        handle.history.append(reason)
        # The console line is the echo below; the log file gets the record.
        log.error("event=strategy_died name=%s target=%s reason=%r exit_code=%s", handle.name, handle.target,
                  reason, code, extra={"file_only": True})
        if self.on_failure == "stop":
            handle.state = "failed"
            self.stop_reason = f"strategy {handle.name} {reason}"
            self.echo(f"strategy {handle.name} {reason}; stopping the engine (--on-strategy-failure stop; "
                      f"traceback in the log file)")
            return
        if now - handle.started_at > STABLE_AFTER:
            handle.failures = 0
        delay = min(RESTART_BACKOFF_MAX, RESTART_BACKOFF_FIRST * 2 ** handle.failures)
        handle.failures += 1
        handle.state, handle.next_start_at = "restarting", now + delay
        self.echo(f"strategy {handle.name} {reason}; restarting in {delay:g}s (traceback in the log file)")

    def status(self) -> list[dict]:
        """Each strategy's name, target, state, pid, restarts and last failure."""
        now = time.monotonic()
        return [{"name": h.name, "target": h.target, "state": h.state, "reason": h.reason,
                 "pid": h.process.pid if h.process is not None and h.process.is_alive() else None,
                 "restarts": h.restarts,
                 "restart_in_s": round(max(0.0, h.next_start_at - now), 1) if h.next_start_at else None}
                for h in self.handles]

    def stop_all(self, timeout: float = 5.0) -> None:
        """Wait for every strategy to end (the engine told them to), kill what stays."""
        for handle in self.handles:
            handle.next_start_at = None
            if handle.process is None:
                continue
            handle.process.join(timeout)
            if handle.process.is_alive():
                handle.process.kill()
                handle.process.join(5)
            if handle.state in ("running", "restarting", "starting"):
                handle.state = "stopped"
