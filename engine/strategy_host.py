"""The strategy process: connect to the engine, feed the strategy its messages, stop cleanly."""
from __future__ import annotations

import logging
import signal
import sys
import time

from engine.lifeline import die_with_parent, watch_engine
from engine.loader import load_strategy_class
from maotrade.client import EngineClient
from maotrade.log import setup_logging
from maotrade.messages import ClientToEngine, message

log = logging.getLogger(__name__)

POLL_MS = 100
READY_TIMEOUT = 120.0


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
    strategy.on_start()
    client.flush()
    try:
        while not strategy.stop_requested:
            for msg in by_priority(client.receive(POLL_MS)):
                if msg.get("type") == "stopping":
                    strategy.stop()
                    break
                try:
                    strategy.dispatch(msg)
                except Exception:  # a bug in one callback must not kill the strategy
                    log.exception("event=strategy_callback_failed strategy=%s type=%s",
                                  strategy.name, msg.get("type"))
                if msg.get("replay_seq") is not None and msg.get("type") == "market_data":
                    # After the requests the bar caused: the replaying broker may move on.
                    client.put(message(ClientToEngine.BAR_ACK, account=msg.get("account"),
                                       replay_seq=msg["replay_seq"]))
            client.flush()
    finally:
        try:
            strategy.on_stop()
        finally:
            client.flush()


def run_strategy_process(spec: dict) -> None:
    """Process entry: ``spec`` has ``target`` (module:Class), ``address``, ``params``, ``log_level``."""
    die_with_parent()
    if spec.get("engine_pid"):
        watch_engine(spec["engine_pid"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(spec.get("log_level", "INFO"), log_file=spec.get("log_file"))
    cls = load_strategy_class(spec["target"])
    strategy = cls(spec.get("params") or {})
    client = EngineClient(spec["address"], name=spec.get("name") or strategy.name)
    try:
        welcome = client.hello(acks_replay=True)
        run_strategy(strategy, client, welcome)
    finally:
        client.send(message(ClientToEngine.BYE))
        client.close()
    sys.exit(0)
