"""The order-path floor: strategy -> engine -> worker -> engine -> strategy in bare ZeroMQ.

The same sockets the engine uses (a client DEALER, the engine's ROUTER, one PUSH per
worker, one PULL from all workers) and the same frames (msgpack batches), with no engine
logic: the relay decodes each client frame, splits it by account and sends each part
on (the least any router must do), forwards worker frames to the client untouched, and a
worker answers each order with one FILLED message. Whatever MAOTrade measures above this is
the engine's and the paper broker's work.
"""
from __future__ import annotations

import multiprocessing as mp
import tempfile
import time

import zmq

from maotrade.messages import message, pack_batch, unpack_batch

CTX = mp.get_context("forkserver")


class FloorClient:
    """The strategy end: the ``send``/``put``/``flush``/``receive`` of ``EngineClient``."""

    def __init__(self, address: str):
        self.ctx = zmq.Context()
        self.socket = self.ctx.socket(zmq.DEALER)
        self.socket.connect(address)
        self._outbox: list[dict] = []

    def put(self, msg: dict) -> None:
        self._outbox.append(msg)

    def flush(self) -> None:
        if self._outbox:
            self.socket.send(pack_batch(self._outbox))
            self._outbox = []

    def send(self, msg: dict) -> None:
        self.put(msg)
        self.flush()

    def receive(self, timeout_ms: int = 0) -> list[dict]:
        out: list[dict] = []
        if timeout_ms and not self.socket.poll(timeout_ms, zmq.POLLIN):
            return out
        while True:
            try:
                out.extend(unpack_batch(self.socket.recv(zmq.NOBLOCK)))
            except zmq.Again:
                return out

    def close(self) -> None:
        self.socket.close(linger=0)
        self.ctx.term()


def _relay_main(client_address: str, worker_in: list[str], worker_out: str) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(client_address)
    from_workers = ctx.socket(zmq.PULL)
    from_workers.bind(worker_out)
    to_workers = {}
    for index, address in enumerate(worker_in):
        sock = ctx.socket(zmq.PUSH)
        sock.bind(address)
        to_workers[str(100 + index)] = sock
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(from_workers, zmq.POLLIN)
    identity = None
    while True:
        ready = dict(poller.poll())
        if router in ready:
            identity, frame = router.recv_multipart()
            if frame == b"stop":
                for sock in to_workers.values():
                    sock.send(pack_batch([message("stop")]))
                break
            by_account: dict[str, list] = {}
            for msg in unpack_batch(frame):
                by_account.setdefault(msg["account"], []).append(msg)
            for account, batch in by_account.items():
                to_workers[account].send(pack_batch(batch))
        if from_workers in ready and identity is not None:
            router.send_multipart([identity, from_workers.recv()])
    for sock in (router, from_workers, *to_workers.values()):
        sock.close(linger=2000)
    ctx.term()


def _worker_main(account: str, in_address: str, out_address: str, bar_interval: float) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(in_address)
    push = ctx.socket(zmq.PUSH)
    push.connect(out_address)
    next_bar = time.monotonic() + bar_interval if bar_interval else None
    while True:
        timeout = None if next_bar is None else max(0, int((next_bar - time.monotonic()) * 1000))
        if pull.poll(timeout, zmq.POLLIN):
            batch = unpack_batch(pull.recv())
            if batch and batch[0]["type"] == "stop":
                break
            push.send(pack_batch([message("order", account=account, client_order_id=m["client_order_id"],
                                          status="FILLED") for m in batch]))
        if next_bar is not None and time.monotonic() >= next_bar:
            next_bar += bar_interval
            push.send(pack_batch([message("market_data", account=account, epic="EURUSD", time_frame=1,
                                          date=int(time.time() * 1000), close=1.1, completed=False)]))
    pull.close(linger=0)
    push.close(linger=0)
    ctx.term()


class FloorChain:
    """A relay process and ``workers`` worker processes, for the length of one measurement.

    ``bar_interval`` (seconds) makes every worker stream one bar per interval, as the
    paper workers of the scale runs do.
    """

    def __init__(self, workers: int = 1, bar_interval: float = 0.0):
        self.tmp = tempfile.TemporaryDirectory(prefix="mtb-floor-")
        self.address = f"ipc://{self.tmp.name}/router"
        worker_in = [f"ipc://{self.tmp.name}/w{i}.in" for i in range(workers)]
        worker_out = f"ipc://{self.tmp.name}/workers.out"
        self.accounts = [str(100 + i) for i in range(workers)]
        self.relay = CTX.Process(target=_relay_main, args=(self.address, worker_in, worker_out))
        self.relay.start()
        self.workers = [CTX.Process(target=_worker_main, args=(a, w, worker_out, bar_interval))
                        for a, w in zip(self.accounts, worker_in)]
        for process in self.workers:
            process.start()

    def stop(self) -> None:
        """Stop the workers and the relay and wait for them."""
        ctx = zmq.Context()
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(self.address)
        dealer.send(b"stop")
        dealer.close(linger=2000)
        ctx.term()
        for process in (self.relay, *self.workers):
            process.join(10)
            if process.is_alive():
                process.kill()
        self.tmp.cleanup()


def wait_floor_ready(client: FloorClient, accounts: list[str], timeout: float = 60.0) -> None:
    """Block until every floor worker answers (its sockets are connected)."""
    deadline = time.monotonic() + timeout
    missing = set(accounts)
    while missing and time.monotonic() < deadline:
        for account in missing:
            client.put(message("order_open", account=account, client_order_id=f"ping-{account}"))
        client.flush()
        end = time.monotonic() + 0.2
        while time.monotonic() < end and missing:
            for msg in client.receive(50):
                missing.discard(msg.get("account"))
    if missing:
        raise RuntimeError(f"floor workers {sorted(missing)[:5]} not answering within {timeout}s")
    # Late answers to repeated pings must not count as fills later.
    end = time.monotonic() + 0.2
    while time.monotonic() < end:
        client.receive(50)
