"""The strategy process: connect to the engine, feed the strategy its messages, stop cleanly.

A callback that raises does not end the strategy: the first error of each kind (callback
and exception type) is logged with its traceback (to the log file; one line on the
console), later ones are counted and summed up every ``ERROR_SUMMARY_S`` seconds. An
error that escapes (in the strategy's constructor or ``on_start``, or the host itself)
ends the process with ``EXIT_STRATEGY_FAILED``, after writing one line saying why to
``spec["failure_file"]`` for the engine's strategy supervisor.
"""
from __future__ import annotations

import logging
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

from engine.lifeline import die_with_parent, watch_engine
from engine.loader import load_strategy_class
from maotrade.client import EngineClient
from maotrade.log import setup_logging
from maotrade.protocol import from_client, to_client

log = logging.getLogger(__name__)

POLL_MS = 100
READY_TIMEOUT = 120.0
ERROR_SUMMARY_S = 60.0
EXIT_STRATEGY_FAILED = 4
# Keeps a record out of the console (its traceback is for the log file).
FILE_ONLY = {"file_only": True}


class StartFailed(Exception):
    """The strategy's ``on_start`` raised (the original error is the cause)."""


class CallbackErrors:
    """Log the first error of each kind in full, count the rest, sum them up now and then."""

    def __init__(self, strategy_name: str, summary_every: float = ERROR_SUMMARY_S):
        self.strategy_name = strategy_name
        self.summary_every = summary_every
        self.counts: dict[str, int] = {}  # kind -> errors since the last summary
        self.totals: dict[str, int] = {}
        self.next_summary = time.monotonic() + summary_every

    def record(self, callback: str, exc: Exception) -> None:
        """Note one error raised by ``callback`` (call inside the ``except``)."""
        kind = f"{callback} {type(exc).__name__}"
        first = kind not in self.totals
        self.totals[kind] = self.totals.get(kind, 0) + 1
        if first:
            log.error("event=strategy_callback_failed strategy=%s callback=%s error=%r (further %s errors are "
                      "counted, not logged)", self.strategy_name, callback, f"{type(exc).__name__}: {exc}", kind)
            log.error("event=strategy_callback_traceback strategy=%s callback=%s\n%s", self.strategy_name,
                      callback, traceback.format_exc(), extra=FILE_ONLY)
        else:
            self.counts[kind] = self.counts.get(kind, 0) + 1
        self.maybe_summarize()

    def maybe_summarize(self, force: bool = False) -> None:
        """Log how many errors of each kind came since the last summary, if it is time."""
        now = time.monotonic()
        if not force and now < self.next_summary:
            return
        self.next_summary = now + self.summary_every
        for kind, count in sorted(self.counts.items()):
            log.warning("event=strategy_callback_failed_again strategy=%s kind=%r count=%d total=%d",
                        self.strategy_name, kind, count, self.totals[kind])
        self.counts.clear()


def by_priority(messages: list[dict]) -> list[dict]:
    """Orders, account events and control messages first, market data after, each in order."""
    urgent = [m for m in messages if m.get("type") != "market_data"]
    if len(urgent) == len(messages) or not urgent:
        return messages
    return urgent + [m for m in messages if m.get("type") == "market_data"]


def wait_accounts_ready(client: EngineClient, accounts: list[dict], timeout: float) -> list[dict]:
    """Hold messages back until every account is ready (or ``timeout``); return them."""
    pending = {str(a["account"]) for a in accounts if a.get("state") != "ready"}
    held: list[dict] = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for msg in client.receive(POLL_MS):
            held.append(msg)
            if msg.get("type") == "account_status" and msg.get("state") == "ready":
                pending.discard(str(msg.get("account")))
    if pending:
        log.warning("event=strategy_starting_anyway accounts_not_ready=%s", sorted(pending))
    return held


def run_strategy(strategy, client: EngineClient, welcome: dict, ready_timeout: float = READY_TIMEOUT) -> None:
    """Drive ``strategy`` with ``client``'s messages until the engine stops or it asks to.

    ``on_start`` runs once every account is ready (or after ``ready_timeout`` seconds), so a
    strategy may trade from its first callback.
    """
    accounts = welcome.get("accounts") or []
    held = wait_accounts_ready(client, accounts, ready_timeout)
    strategy.attach(client, accounts)
    strategy.account_states.update({str(m["account"]): m["state"] for m in held if m.get("type") == "account_status"})
    try:
        strategy.on_start()
    except Exception as exc:
        raise StartFailed(f"{type(exc).__name__}: {exc}") from exc
    client.flush()
    errors = CallbackErrors(strategy.name)
    try:
        while not strategy.stop_requested:
            for msg in by_priority(client.receive(POLL_MS)):
                if msg.get("type") == "stopping":
                    strategy.stop()
                    break
                try:
                    strategy.dispatch(msg)
                except Exception as exc:  # a bug in one callback must not kill the strategy
                    errors.record(CALLBACKS.get(msg.get("type"), str(msg.get("type"))), exc)
                if msg.get("replay_seq") is not None and msg.get("type") == to_client.MarketData.TYPE:
                    # After the requests the bar caused: the replaying broker may move on.
                    client.put(from_client.BarAck(account=msg.get("account"), replay_seq=msg["replay_seq"]))
            client.flush()
            errors.maybe_summarize()
    finally:
        errors.maybe_summarize(force=True)
        try:
            strategy.on_stop()
        finally:
            client.flush()


CALLBACKS = {to_client.MarketData.TYPE: "on_market_data", to_client.Order.TYPE: "on_order",
             to_client.AccountInfo.TYPE: "on_account_info", to_client.Portfolio.TYPE: "on_portfolio",
             to_client.AccountStatus.TYPE: "on_account_status", to_client.StaleData.TYPE: "on_stale_data"}


def run_strategy_process(spec: dict) -> None:
    """Process entry: ``spec`` has ``target`` (file.py:Class or module:Class),
    ``strategy_path``, ``address``, ``params``, ``log_level``, ``failure_file``."""
    die_with_parent()
    if spec.get("engine_pid"):
        watch_engine(spec["engine_pid"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(spec.get("log_level", "INFO"), log_file=spec.get("log_file"))
    stage = "loading"
    client: Optional[EngineClient] = None
    try:
        cls = load_strategy_class(spec["target"], spec.get("strategy_path") or ())
        stage = "__init__"
        strategy = cls(spec.get("params") or {})
        client = EngineClient(spec["address"], name=spec.get("name") or strategy.name)
        stage = "connecting"
        welcome = client.hello(acks_replay=True)
        stage = "running"
        run_strategy(strategy, client, welcome)
    except Exception as exc:
        if isinstance(exc, StartFailed):
            stage, exc = "on_start", exc.__cause__
        reason = f"died in {stage}: {type(exc).__name__}: {exc}"
        log.error("event=strategy_died name=%s %s", spec.get("name"), reason, extra=FILE_ONLY)
        log.error("event=strategy_traceback name=%s\n%s", spec.get("name"), traceback.format_exc(),
                  extra=FILE_ONLY)
        if spec.get("failure_file"):
            Path(spec["failure_file"]).write_text(reason[:500])
        _say_goodbye(client)
        sys.exit(EXIT_STRATEGY_FAILED)
    _say_goodbye(client)
    sys.exit(0)


def _say_goodbye(client: Optional[EngineClient]) -> None:
    if client is None:
        return
    try:
        client.send(from_client.Bye())
    finally:
        client.close()
