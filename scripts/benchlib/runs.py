"""The processes each benchmark run starts, and what they measure.

Every run uses real processes on loopback: the engine (``engine.core.Engine``), its
Account Manager workers, and a client process speaking the bus protocol. Results come
back to the orchestrating process over a ``multiprocessing`` pipe.
"""
from __future__ import annotations

import contextlib
import inspect
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

import psutil
import zmq

from maotrade.client import RECEIVE_BATCH, EngineClient
from maotrade.log import setup_logging
from maotrade.messages import PROTOCOL_VERSION, message, pack_batch, unpack_batch
from maotrade.protocol.bar_block import expand_blocks, pack_rows

from benchlib.floor import FloorChain, FloorClient, wait_floor_ready

CTX = mp.get_context("forkserver")
FLOOD_CLASS = "tests.brokers.flood.FloodAccountManager"
PAPER_CLASS = "paper.PaperAccountManager"


# -- documents ---------------------------------------------------------------------------
def flood_document(account: str, bars: int) -> dict:
    """An account on the flood broker."""
    return {"idAccount": account, "brokerName": "flood", "brokerClass": FLOOD_CLASS,
            "brokerConfig": {"bars": bars}, "accountConfig": {}, "epicMapping": {}}


def paper_document(account: str, price_interval: float = 0.25) -> dict:
    """An account on the paper broker."""
    return {"idAccount": account, "brokerName": "paper", "brokerClass": PAPER_CLASS,
            "brokerConfig": {"price_interval": price_interval, "seed": int(account) % 1000},
            "accountConfig": {}, "epicMapping": {}}


# -- the engine ----------------------------------------------------------------------------
def _engine_main(documents: list[dict], data_dir: str, conn) -> None:
    from engine.core import Engine
    from engine.loader import ALLOW_ENV
    setup_logging("WARNING")
    # The flood broker lives in tests/, outside the brokers an engine runs unasked (the
    # workers inherit this; `maotrade start --allow-broker-class` sets the same).
    os.environ[ALLOW_ENV] = FLOOD_CLASS
    run_dir = Path(tempfile.mkdtemp(prefix="mtb-"))
    if "data_dir" in inspect.signature(Engine).parameters:
        # An older engine (comparing revisions): the parameters it took then.
        engine = Engine(documents, Path(data_dir), run_dir, log_level="WARNING")
    else:
        from engine.options import EngineOptions
        engine = Engine(documents, EngineOptions(data_dir=Path(data_dir), log_level="WARNING"), run_dir)
    engine.start()
    conn.send(engine.bus.client_address)
    engine.run()
    engine.shutdown(timeout=20)
    conn.send("stopped")


class EngineRun:
    """An engine process with its workers, for the length of one measurement."""

    def __init__(self, documents: list[dict]):
        self.tmp = tempfile.TemporaryDirectory(prefix="maotrade-bench-")
        self.parent, child = CTX.Pipe()
        self.started = time.perf_counter()
        self.process = CTX.Process(target=_engine_main, args=(documents, self.tmp.name, child), daemon=False)
        self.process.start()
        self.address = self.parent.recv()

    def tree(self) -> list[psutil.Process]:
        """The engine process and every process under it."""
        root = psutil.Process(self.process.pid)
        return [root] + root.children(recursive=True)

    def stop(self) -> None:
        """Stop the engine through the bus and wait for it."""
        client = EngineClient(self.address, name="bench-stop")
        try:
            client.request(message("stop_engine"), "stopping", timeout=10)
        finally:
            client.close()
        if self.parent.poll(30):
            self.parent.recv()
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
        self.tmp.cleanup()


def wait_ready(client: EngineClient, accounts: list[str], timeout: float = 300.0) -> None:
    """Block until every account reports ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.request(message("status_request"), "status", timeout=10)["status"]
        if all(a["state"] == "ready" for a in status["accounts"] if a["account"] in accounts):
            return
        time.sleep(0.05)
    raise RuntimeError(f"accounts {accounts} not ready within {timeout}s")


# -- market data ---------------------------------------------------------------------------
def count_bars(receive, expected: dict, conn, started: float) -> None:
    """Count numbered bars per account until each account's last one has arrived; report
    the rate since ``started`` (when the bars were asked for) and the bars that never came
    or came out of order."""
    next_date = dict.fromkeys(expected, 0)
    done = {account: count == 0 for account, count in expected.items()}
    gaps = total = 0
    while not all(done.values()):
        for msg in receive():
            if msg.get("type") != "market_data":
                continue
            account, date = msg.get("account", ""), msg["date"]
            if date != next_date[account]:
                gaps += abs(date - next_date[account])
            next_date[account] = date + 1
            total += 1
            if date == expected[account] - 1:
                done[account] = True
    conn.send({"bars": total, "seconds": time.perf_counter() - started, "gaps": gaps})


def _md_client_main(address: str, accounts: list[str], bars: int, conn) -> None:
    client = EngineClient(address, name="bench-md")
    client.hello()
    wait_ready(client, accounts)
    for account in accounts:
        client.put(message("subscribe", account=account, epic="FLOOD", time_frame=1))
    client.flush()
    count_bars(lambda: client.receive(1000), {a: bars for a in accounts}, conn, time.perf_counter())
    client.close()


def engine_market_data(accounts: int, bars: int) -> dict:
    """Bars per second from ``accounts`` flood workers through the engine to one client."""
    ids = [str(100 + i) for i in range(accounts)]
    run = EngineRun([flood_document(a, bars) for a in ids])
    try:
        parent, child = CTX.Pipe()
        client = CTX.Process(target=_md_client_main, args=(run.address, ids, bars, child))
        client.start()
        result = _answer_of(client, parent)
        client.join(30)
    finally:
        run.stop()
    return result


def _answer_of(process, conn) -> object:
    """What ``process`` sends on ``conn``; an error in one line if it dies first."""
    while not conn.poll(1.0):
        if not process.is_alive():
            raise RuntimeError(f"the measuring process exited ({process.exitcode}) before it reported; "
                               "see the engine's messages above")
    return conn.recv()


# -- baselines -------------------------------------------------------------------------------
def _bars(start: int, end: int, account: str) -> list[dict]:
    return [{"type": "market_data", "v": PROTOCOL_VERSION, "account": account, "epic": "FLOOD", "time_frame": 1, "date": i,
             "open": 1.0, "high": 1.5, "low": 0.5, "close": 1.25, "volume": 10.0, "completed": True}
            for i in range(start, end)]


def _block(start: int, end: int, account: str) -> list[dict]:
    """One frame holding bars start..end-1 as one ``market_data_block``, packed as the worker packs it."""
    return [{"type": "market_data_block", "v": PROTOCOL_VERSION, "account": account, "epic": "FLOOD",
             "time_frame": 1, "completed": True,
             "bars": pack_rows([(i, 1.0, 1.5, 0.5, 1.25, 10.0) for i in range(start, end)])}]


def _zmq_producer(address: str, bars: int, blocks: bool) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.connect(address)
    frame_of = _block if blocks else _bars
    for start in range(0, bars, 2000):
        sock.send(pack_batch(frame_of(start, min(bars, start + 2000), "100")))
    sock.close(linger=-1)
    ctx.term()


def _zmq_relay(in_address: str, out_address: str, frames_expected: int) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(in_address)
    router = ctx.socket(zmq.ROUTER)
    router.bind(out_address)
    identity, _ = router.recv_multipart()
    for _ in range(frames_expected):
        router.send_multipart([identity, pull.recv()])
    router.close(linger=-1)
    pull.close()
    ctx.term()


def _zmq_consumer(address: str, bars: int, conn) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(address)
    sock.send(b"hello")
    started = time.perf_counter()

    def receive():
        # Bounded like EngineClient.receive, and reading blocks back as bars as it does.
        out = expand_blocks(unpack_batch(sock.recv()))
        while len(out) < RECEIVE_BATCH:
            try:
                out.extend(expand_blocks(unpack_batch(sock.recv(zmq.NOBLOCK))))
            except zmq.Again:
                break
        return out

    count_bars(receive, {"100": bars}, conn, started)
    sock.close()
    ctx.term()


def bare_zmq_relay(bars: int, blocks: bool = True) -> dict:
    """The floor: the same frames producer -> relay -> consumer with no engine logic
    (bars packed in blocks as the engine carries them, or one map per bar)."""
    tmp = tempfile.mkdtemp(prefix="mtb-")
    in_address, out_address = f"ipc://{tmp}/in", f"ipc://{tmp}/out"
    parent, child = CTX.Pipe()
    relay = CTX.Process(target=_zmq_relay, args=(in_address, out_address, -(-bars // 2000)))
    relay.start()
    consumer = CTX.Process(target=_zmq_consumer, args=(out_address, bars, child))
    consumer.start()
    producer = CTX.Process(target=_zmq_producer, args=(in_address, bars, blocks))
    producer.start()
    result = parent.recv()
    for process in (producer, relay, consumer):
        process.join(30)
    return result


def _queue_producer(queue, bars: int) -> None:
    for bar in _bars(0, bars, "100"):
        queue.put(bar)


def _queue_relay(source, sink, bars: int) -> None:
    for _ in range(bars):
        sink.put(source.get())


def _queue_consumer(queue, bars: int, conn) -> None:
    count_bars(lambda: [queue.get()], {"100": bars}, conn, time.perf_counter())


def naive_queue_relay(bars: int) -> dict:
    """The naive design: multiprocessing.Queue, one message per put, through a relay."""
    first, second = CTX.Queue(), CTX.Queue()
    parent, child = CTX.Pipe()
    processes = [CTX.Process(target=_queue_consumer, args=(second, bars, child)),
                 CTX.Process(target=_queue_relay, args=(first, second, bars)),
                 CTX.Process(target=_queue_producer, args=(first, bars))]
    for process in processes:
        process.start()
    result = parent.recv()
    for process in processes:
        process.join(30)
    return result


# -- order round trip ------------------------------------------------------------------------
def measure_round_trips(client: EngineClient, account: str, count: int, pace_hz: float = 0.0,
                        prefix: str = "b") -> list[float]:
    """Send ``count`` market orders; return seconds from send to FILLED for each.

    Back to back when ``pace_hz`` is 0, else one order every 1/pace_hz seconds whatever
    the answers. Buys and sells alternate so the position stays near flat.
    """
    sent: dict[str, float] = {}
    latencies: list[float] = []
    interval = 1.0 / pace_hz if pace_hz else 0.0
    start = time.perf_counter()
    index = 0
    while len(latencies) < count:
        now = time.perf_counter()
        may_send = index < count and (not pace_hz and not sent or pace_hz and now >= start + index * interval)
        if may_send:
            key = f"{prefix}{os.getpid()}-{index}"
            client.send(message("order_open", account=account, client_order_id=key, epic="EURUSD",
                                qty=1 if index % 2 == 0 else -1))
            sent[key] = time.perf_counter()
            index += 1
            continue
        wait_ms = 1000 if not pace_hz else max(0, int((start + index * interval - now) * 1000))
        for msg in client.receive(wait_ms if index < count or not pace_hz else 1000):
            if msg.get("type") == "order" and msg.get("status") == "FILLED":
                key = msg["client_order_id"]
                if key in sent:
                    latencies.append(time.perf_counter() - sent.pop(key))
            elif msg.get("type") == "order" and msg.get("status") == "REJECTED":
                raise RuntimeError(f"order refused during benchmark: {msg.get('reason')}")
    return latencies


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (all their threads)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):  # gone: it used nothing more
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def measure_throughput(client, accounts: list[str], count: int, window: int = 500,
                       prefix: str = "t", processes: Optional[dict] = None) -> dict:
    """Keep up to ``window`` market orders in flight (each in its own frame, round-robin over
    ``accounts``) until ``count`` are FILLED; return the rate, how many never came back and,
    for each of ``processes`` (name -> pids), its CPU microseconds per order."""
    processes = processes or {}
    cpu_before = {name: cpu_seconds(pids) for name, pids in processes.items()}
    sent: set[str] = set()
    filled = 0
    index = 0
    start = time.perf_counter()
    last = start
    quiet_since = time.monotonic()
    while filled < count:
        while index < count and len(sent) < window:
            key = f"{prefix}{os.getpid()}-{index}"
            client.send(message("order_open", account=accounts[index % len(accounts)], client_order_id=key,
                                epic="EURUSD", qty=1 if (index // len(accounts)) % 2 == 0 else -1))
            sent.add(key)
            index += 1
        got = False
        for msg in client.receive(100):
            if msg.get("type") == "order" and msg.get("status") == "FILLED" and msg["client_order_id"] in sent:
                sent.discard(msg["client_order_id"])
                filled += 1
                got = True
            elif msg.get("type") == "order" and msg.get("status") == "REJECTED":
                raise RuntimeError(f"order refused during benchmark: {msg.get('reason')}")
        now = time.monotonic()
        if got:
            last, quiet_since = time.perf_counter(), now
        elif now - quiet_since > 30:
            break  # nothing for 30 s: what is still out counts as lost
    cpu = {f"{name}_cpu_us": (cpu_seconds(pids) - cpu_before[name]) / max(1, filled) * 1e6
           for name, pids in processes.items()}
    return {"orders": filled, "seconds": last - start, "lost": count - filled, **cpu}


def measure_fan_out(client, accounts: list[str], reps: int, prefix: str = "f") -> list[float]:
    """One market order to each account in one frame; seconds until the last FILLED, per repetition."""
    out = []
    for rep in range(reps):
        keys = {}
        for account in accounts:
            key = f"{prefix}{os.getpid()}-{rep}-{account}"
            keys[key] = account
            client.put(message("order_open", account=account, client_order_id=key, epic="EURUSD",
                               qty=1 if rep % 2 == 0 else -1))
        began = time.perf_counter()
        client.flush()
        deadline = time.monotonic() + 60
        while keys and time.monotonic() < deadline:
            for msg in client.receive(100):
                if msg.get("type") == "order" and msg.get("status") == "FILLED":
                    keys.pop(msg["client_order_id"], None)
                elif msg.get("type") == "order" and msg.get("status") == "REJECTED":
                    raise RuntimeError(f"order refused during benchmark: {msg.get('reason')}")
        if keys:
            raise RuntimeError(f"fan-out: {len(keys)} of {len(accounts)} orders never FILLED")
        out.append(time.perf_counter() - began)
        time.sleep(0.02)  # between repetitions, not synchronisation: let the tails settle
    return out


def run_plan(client, accounts: list[str], plan: list[tuple], processes: Optional[dict] = None) -> dict:
    """Run measurements in order: ``("rtt", label, count, pace_hz)``,
    ``("tput", label, count, window)`` or ``("fanout", label, reps)``; ``processes`` (name ->
    pids) are the ones whose CPU per order the throughput run reports."""
    out = {}
    for step, (kind, label, *params) in enumerate(plan):
        prefix = f"p{step}"  # client order ids stay unique across the plan's measurements
        if kind == "rtt":
            out[label] = measure_round_trips(client, accounts[0], params[0], params[1], prefix=prefix)
        elif kind == "tput":
            out[label] = measure_throughput(client, accounts, params[0], params[1], prefix=prefix,
                                            processes=processes)
        else:
            out[label] = measure_fan_out(client, accounts, params[0], prefix=prefix)
    return out


def _reporting(conn, measure) -> None:
    """Send ``measure()``'s result, or the failure, to the orchestrator (which never hangs on it)."""
    try:
        conn.send(measure())
    except Exception as exc:  # a benchmark that fails says why instead of hanging
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


def _received(conn) -> dict:
    result = conn.recv()
    if isinstance(result, dict) and "error" in result:
        raise RuntimeError(f"benchmark client failed: {result['error']}")
    return result


def _engine_plan_main(address: str, accounts: list[str], plan: list[tuple], conn) -> None:
    client = EngineClient(address, name="bench-orders")

    def measure():
        welcome = client.hello()
        wait_ready(client, accounts, timeout=300)
        status = client.request(message("status_request"), "status", timeout=30)["status"]
        workers = [a["pid"] for a in status["accounts"] if a.get("pid")]
        measure_round_trips(client, accounts[0], 300, prefix="warm")
        return run_plan(client, accounts, plan, {"engine": [welcome["engine_pid"]], "workers": workers})

    _reporting(conn, measure)
    client.close()


def engine_orders(plan: list[tuple], accounts: int = 1) -> dict:
    """Run ``plan`` (see ``run_plan``) against an engine with ``accounts`` paper accounts."""
    ids = [str(100 + i) for i in range(accounts)]
    run = EngineRun([paper_document(a, price_interval=1.0) for a in ids])
    try:
        parent, child = CTX.Pipe()
        client = CTX.Process(target=_engine_plan_main, args=(run.address, ids, plan, child))
        client.start()
        result = _received(parent)
        client.join(30)
    finally:
        run.stop()
    return result


def _floor_plan_main(address: str, accounts: list[str], plan: list[tuple], pids: dict, conn) -> None:
    client = FloorClient(address)

    def measure():
        wait_floor_ready(client, accounts)
        measure_round_trips(client, accounts[0], 300, prefix="warm")
        return run_plan(client, accounts, plan, pids)

    _reporting(conn, measure)
    client.close()


def floor_orders(plan: list[tuple], accounts: int = 1, bar_interval: float = 0.0) -> dict:
    """Run ``plan`` over the bare ZeroMQ chain (``benchlib.floor``) with ``accounts`` workers."""
    chain = FloorChain(accounts, bar_interval)
    try:
        parent, child = CTX.Pipe()
        pids = {"engine": [chain.relay.pid], "workers": [w.pid for w in chain.workers]}
        client = CTX.Process(target=_floor_plan_main, args=(chain.address, chain.accounts, plan, pids, child))
        client.start()
        result = _received(parent)
        client.join(30)
    finally:
        chain.stop()
    return result


def order_round_trip(runs: list[tuple]) -> dict:
    """Round trips on one paper account: ``runs`` = [(label, count, pace_hz)]."""
    return engine_orders([("rtt", label, count, pace) for label, count, pace in runs])


# -- scale -------------------------------------------------------------------------------------
def _scale_client_main(address: str, accounts: list[str], orders: int, conn) -> None:
    client = EngineClient(address, name="bench-scale")
    client.hello()
    wait_ready(client, accounts, timeout=300)
    conn.send(("ready", time.perf_counter()))
    for account in accounts:
        client.put(message("subscribe", account=account, epic="EURUSD", time_frame=1))
    client.flush()
    conn.recv()  # the orchestrator has measured memory and CPU
    latencies = measure_round_trips(client, accounts[0], orders, pace_hz=1000.0, prefix="s")
    conn.send(("rtt", latencies))
    client.close()


def scale(accounts: int, orders: int, cpu_window: float = 3.0) -> dict:
    """Start ``accounts`` streaming paper accounts; measure start-up, memory, engine CPU, RTT."""
    ids = [str(100 + i) for i in range(accounts)]
    started = time.perf_counter()
    run = EngineRun([paper_document(a) for a in ids])
    try:
        parent, child = CTX.Pipe()
        client = CTX.Process(target=_scale_client_main, args=(run.address, ids, orders, child))
        client.start()
        _, ready_at = parent.recv()
        startup = ready_at - started
        engine = psutil.Process(run.process.pid)
        engine.cpu_percent(None)
        time.sleep(cpu_window)  # a measurement window, not synchronisation
        cpu = engine.cpu_percent(None)
        pss = uss = 0
        for proc in run.tree():
            try:
                info = proc.memory_full_info()
                pss += info.pss
                uss += info.uss
            except psutil.Error:
                pass  # exited between listing and measuring: nothing to count
        parent.send("go")
        _, latencies = parent.recv()
        client.join(30)
    finally:
        run.stop()
    return {"startup_s": startup, "pss": pss, "uss": uss, "engine_cpu": cpu, "latencies": latencies}
