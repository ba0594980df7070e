"""Test kit: run a real Account Manager process on real ZeroMQ sockets and talk to it.

``WorkerHarness`` plays the engine's side of one account: it binds the in/out queues on
ipc sockets in a temporary folder, starts ``engine.worker.run_worker`` in its own OS
process, sends requests and waits for answers with a deadline (never a bare sleep).
"""
from __future__ import annotations

import multiprocessing
import os
import socket
import time
from pathlib import Path
from typing import Callable, Optional

import zmq

from engine.worker import run_worker
from maotrade.messages import EngineToWorker as In, WorkerToEngine, message
from maotrade.protocol import FROM_WORKER
from maotrade.protocol.bar_block import expand_blocks
from maotrade.order import BaseOrder, OrderEvent, new_client_order_id
from maotrade.queues import MessageQueue

MP = multiprocessing.get_context("spawn")


def run_worker_target():
    """The worker entry point (looked up at start so a profiler can wrap it)."""
    return run_worker


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01,
               what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class WorkerHarness:
    """The engine's end of one Account Manager process."""

    def __init__(self, document: dict, workdir: Path, log_level: str = "WARNING"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.document = dict(document)
        self.document.setdefault("runtime", {"data_dir": str(self.workdir)})
        self.ctx = zmq.Context()
        account = self.document["idAccount"]
        self.in_addr = f"ipc://{self.workdir}/w{account}.in"
        self.out_addr = f"ipc://{self.workdir}/w{account}.out"
        self.to_worker = MessageQueue.sender(self.ctx, self.in_addr, bind=True)
        self.from_worker = MessageQueue.receiver(self.ctx, self.out_addr, FROM_WORKER, bind=True, as_maps=True)
        self.received: list[dict] = []
        self._views: dict[str, dict] = {}
        self.process: Optional[multiprocessing.Process] = None
        self.log_level = log_level

    # -- process ---------------------------------------------------------------------
    def start(self) -> "WorkerHarness":
        """Start the worker process."""
        spec = {"config": self.document, "in_addr": self.in_addr, "out_addr": self.out_addr,
                "log_level": self.log_level}
        self.process = MP.Process(target=run_worker_target(), args=(spec,), daemon=True)
        self.process.start()
        return self

    def kill(self) -> None:
        """SIGKILL the worker, as a crash would, and rebind its in_queue as the engine does.

        A PUSH socket may still route a frame to a dead peer's pipe; a fresh socket makes
        sure the next worker gets every request.
        """
        self.process.kill()
        self.process.join(10)
        self.to_worker.close(linger_ms=0)
        self.to_worker = MessageQueue.sender(self.ctx, self.in_addr, bind=True)

    def stop(self, timeout: float = 10.0) -> int:
        """Ask the worker to shut down and wait for it; return its exit code."""
        if self.process and self.process.is_alive():
            self.send(message(In.SHUTDOWN))
            self.process.join(timeout)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)
        return self.process.exitcode if self.process else 0

    def close(self) -> None:
        """Stop the worker and close the sockets."""
        try:
            self.stop()
        finally:
            self.to_worker.close(linger_ms=0)
            self.from_worker.close(linger_ms=0)
            self.ctx.term()

    def __enter__(self) -> "WorkerHarness":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- messages --------------------------------------------------------------------
    def send(self, msg: dict) -> None:
        """Send one message on the worker's in_queue."""
        self.to_worker.send(msg)
        wait_until(lambda: self.to_worker.flush(), 5, what="in_queue to accept a frame")

    def poll(self) -> list[dict]:
        """Collect what the worker sent so far.

        Each ``order_event`` also gets ``order``: the order as the worker's events so far
        describe it (the request this harness sent, updated by the event), so a test can
        read the broker's view of an order from one message.
        """
        # Blocks of bars are read as the bars they hold, as a client receives them.
        new = expand_blocks(self.from_worker.drain())
        for msg in new:
            if msg.get("type") == WorkerToEngine.ORDER_EVENT:
                self._project(msg)
        self.received.extend(new)
        return new

    def _project(self, event: dict) -> None:
        key = event["client_order_id"]
        view = dict(event.get("order") or self._views.get(key) or {"client_order_id": key})
        for name in ("status", "reason", "broker_ref", "filled_qty", "avg_fill_price", "price", "stop_loss",
                     "take_profit"):
            if event.get(name) is not None or name in ("stop_loss", "take_profit"):
                view[name] = event.get(name)
        view.setdefault("reason", "")
        self._views[key] = view
        event["order"] = dict(view)
        # The event's kind, as the flag a test asks for ("refused" in answer, answer["not_found"]).
        kind = event.get("event")
        if kind in (OrderEvent.REFUSED, OrderEvent.UNKNOWN):
            event[kind] = event.get("reason") or kind
        elif kind == OrderEvent.NOT_FOUND:
            event[kind] = True

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 10.0,
                 what: str = "message", since: int = 0) -> dict:
        """Return the first received message (from index ``since``) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        checked = since
        while True:
            for msg in self.received[checked:]:
                if predicate(msg):
                    return msg
            checked = max(checked, len(self.received))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                types = [m.get("type") for m in self.received[-20:]]
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"last messages: {types}")
            if self.from_worker.wait(int(min(remaining, 0.2) * 1000)):
                self.poll()

    def wait_type(self, msg_type: str, timeout: float = 10.0, since: int = 0, **match) -> dict:
        """Wait for a message of ``msg_type`` whose fields equal ``match``."""
        return self.wait_for(lambda m: m.get("type") == msg_type and
                             all(m.get(k) == v for k, v in match.items()),
                             timeout, what=f"{msg_type} {match}", since=since)

    def positions_when(self, settled: Callable[[list], bool], timeout: float = 10.0) -> list[dict]:
        """Ask for the portfolio until ``settled(positions)`` holds; return those positions.

        A broker such as IB updates its portfolio on its own schedule after a fill's messages,
        so a portfolio asked for at once may not show the fill yet."""
        def asked():
            mark = self.request(In.PORTFOLIO_REQUEST)
            positions = self.wait_type("portfolio", since=mark)["portfolio"]["positions"]
            return (positions,) if settled(positions) else None  # a tuple: no positions is an answer too
        return wait_until(asked, timeout, what="the portfolio to show the fill")[0]

    def wait_order(self, client_order_id: str, status: Optional[str] = None, timeout: float = 10.0,
                   since: int = 0, **match) -> dict:
        """Wait for an order_event about ``client_order_id`` (the broker's word ``status`` if given)."""
        def ok(m):
            if m.get("type") != WorkerToEngine.ORDER_EVENT:
                return False
            return (m.get("client_order_id") == client_order_id
                    and (status is None or m.get("status") == status)
                    and all(m.get(k) == v for k, v in match.items()))
        return self.wait_for(ok, timeout, what=f"order {client_order_id} {status or ''}", since=since)

    # -- requests --------------------------------------------------------------------
    def order(self, epic: str, qty: float, **fields) -> BaseOrder:
        """Build an order for this account with the epic mapped as the engine would."""
        mapping = self.document.get("epicMapping") or {}
        return BaseOrder(client_order_id=fields.pop("client_order_id", new_client_order_id("t")),
                         account=str(self.document["idAccount"]), epic=epic,
                         epicBroker=mapping.get(epic, epic), qty=qty, **fields)

    def request(self, kind: str, order: Optional[BaseOrder] = None, **fields) -> int:
        """Send a request; return the index of received messages to wait from."""
        self.poll()
        mark = len(self.received)
        request = fields.get("request")
        if kind == In.MARKET_DATA_REQUEST and isinstance(request, dict) and "epicBroker" not in request:
            # As the engine does: the instrument is resolved from the account's mapping.
            mapping = self.document.get("epicMapping") or {}
            fields["request"] = {**request, "epicBroker": mapping.get(request.get("epic"), request.get("epic"))}
        if order is not None:
            fields["order"] = order.to_dict()
            self._views.setdefault(order.client_order_id, order.to_dict(with_fills=False))
        self.send(message(kind, **fields))
        return mark


def pid_alive(pid: int) -> bool:
    """True if a process with ``pid`` exists."""
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


# -- account documents of every broker, aimed at the local fakes --------------------------
IG_EPICS = {"EURUSD": "CS.D.EURUSD.CFD.IP", "GBPUSD": "CS.D.GBPUSD.CFD.IP", "FTSE": "IX.D.FTSE.DAILY.IP"}
IB_MAPPING = {"SPY": "SPY-USD-STK-SMART", "EURUSD": "EUR-USD-CASH-IDEALPRO",
              "ES_FUT": "ES-USD-FUT-CME-202412", "AAPL": "AAPL-USD-STK-SMART",
              "NOPE": "NOPE-USD-STK-SMART"}
FIX_SYMBOL = "ES-202412-FUT-CME"


def paper_document(account: str = "900", **broker) -> dict:
    """A paper account document with fast prices, for tests."""
    config = {"seed": 7, "price_interval": 0.02, "reconnect_base": 0.2, "reconnect_max": 1.0,
              "order_timeout": 2.0}
    config.update(broker)
    return {"idAccount": account, "brokerName": "paper", "brokerClass": "paper.PaperAccountManager",
            "brokerConfig": config, "accountConfig": {"initial_balance": 10000.0, "currency": "USD"},
            "epicMapping": {"EURUSD": "EURUSD", "SPY": "SPY"}}


def ig_document(sim, account: str = "701", ig_account: str = "XYZ02", **broker) -> dict:
    """An IG account document aimed at the IG simulator ``sim`` with fast timeouts for tests."""
    config = {"endpoint_demo": sim.rest_url, "endpoint_prod": "http://127.0.0.1:9/unused",
              "timeout": 2.0, "reconnect_base": 0.2, "reconnect_max": 1.0, "max_retries": 20,
              "order_timeout": 3.0, "stream_keepalive_ms": 300, "stream_stalled_ms": 300,
              "stream_reconnect_ms": 300,
              "confirm_interval": 0.05, "stream_connect_timeout": 5.0}
    config.update(broker)
    return {"idAccount": account, "brokerName": "ig", "brokerClass": "ig.IGAccountManager",
            "brokerConfig": config,
            "accountConfig": {"user": sim.user, "password": sim.password, "apiKey": sim.api_key,
                              "accountId": ig_account, "demo": True},
            "epicMapping": dict(IG_EPICS)}


def ib_document(port: int, account: str = "41", client_id: int = 11, **broker) -> dict:
    """An IB account document pointing at the fake TWS on ``port``, with fast reconnects."""
    config = {"tws_host": "127.0.0.1", "tws_port": port, "client_id": client_id, "timeout": 3.0,
              "reconnect_base": 0.2, "reconnect_max": 1.0, "max_retries": 20,
              "order_timeout": 5.0, "commission_wait": 1.0}
    config.update(broker)
    return {"idAccount": account, "brokerName": "ib", "brokerClass": "ib.IBAccountManager",
            "brokerConfig": config, "accountConfig": {"account": "DU123456"},
            "epicMapping": dict(IB_MAPPING)}


def fix_document(port: int, account: str = "501", password: str | None = None, **broker) -> dict:
    """A FIX account document pointing at ``port`` with fast timers, for tests."""
    config = {"host": "127.0.0.1", "port": port, "sender_comp_id": "CLIENT", "target_comp_id": "BROKER",
              "heartbeat_interval": 1, "reconnect_base": 0.2, "reconnect_max": 0.5,
              "order_timeout": 3.0, "timeout": 5.0}
    config.update(broker)
    account_config = {"account": "ACC-1", "username": "trader"}
    if password:
        account_config["password"] = password
    return {"idAccount": account, "brokerName": "fixtest", "brokerClass": "fix.FIXAccountManager",
            "brokerConfig": config, "accountConfig": account_config,
            "epicMapping": {"ES_FUT": FIX_SYMBOL, "BAD_FUT": "BAD-SYMBOL"}}
