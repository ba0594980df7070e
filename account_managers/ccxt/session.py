"""The exchange session: ccxt's async (pro) client on its own asyncio loop in a thread.

``ExchangeSession.call`` runs one ccxt coroutine on that loop and hands its result or
error back through ``deliver`` (the manager's ``call_soon_threadsafe``), so the Account
Manager's loop never blocks. Two protocol rules live here, once for every call:

* a 429/418 answer (ccxt ``DDoSProtection``) closes a gate until ``Retry-After`` has
  passed: no request is sent meanwhile, read calls are retried after it, order
  placement is not (the caller decides);
* a ``-1021`` (ccxt ``InvalidNonce``: our clock is off) resynchronises ccxt's time
  difference with the server and retries the call once (the request was refused before
  it was processed, so the retry cannot duplicate anything).

``watch`` keeps one ``watch_*`` stream running: each batch goes to ``on_items``, an
error to ``on_error``, and the stream is watched again after ``retry`` seconds.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable, Optional

import ccxt
import ccxt.pro

log = logging.getLogger(__name__)

Deliver = Callable[..., None]
#: Times a read answered 429/418 is retried (each after its Retry-After) before it fails.
RATE_LIMIT_RETRIES = 5


def deep_merge(target: dict, extra: dict) -> dict:
    """Merge ``extra`` into ``target`` (nested dicts key by key); return ``target``."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_merge(target[key], value)
        else:
            target[key] = value
    return target


def retry_after_seconds(headers: Optional[dict], default: float) -> float:
    """Seconds to wait from a ``Retry-After`` header (seconds form), else ``default``."""
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return default
    return default


def is_clock_error(exc: BaseException) -> bool:
    """True for Binance's -1021 (timestamp outside recvWindow), whatever class ccxt gave it."""
    return isinstance(exc, ccxt.InvalidNonce) or "-1021" in str(exc)


class ExchangeSession:
    """One ccxt pro client and the asyncio loop thread it lives on."""

    def __init__(self, exchange_id: str, config: dict, urls: dict, deliver: Deliver,
                 rate_limit_wait_max: float = 120.0):
        if not hasattr(ccxt.pro, exchange_id):
            raise ValueError(f"ccxt has no exchange {exchange_id!r}")
        self.exchange_id = exchange_id
        self._config, self._urls = config, urls
        self._deliver = deliver
        self._wait_max = rate_limit_wait_max
        self.client: Any = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name=f"ccxt-{exchange_id}")
        self._thread.start()
        self._gate_until = 0.0
        self._watchers: dict[str, asyncio.Task] = {}

    # ------------------------------------------------------------------ lifecycle
    def open(self, sandbox: bool) -> None:
        """Create the ccxt client (blocking, from the manager's thread)."""
        async def make():
            client = getattr(ccxt.pro, self.exchange_id)(dict(self._config))
            if sandbox:
                client.set_sandbox_mode(True)
            deep_merge(client.urls["api"], self._urls)
            return client
        self.client = asyncio.run_coroutine_threadsafe(make(), self.loop).result(30)

    def run(self, coro_fn: Callable, *args: Any, timeout: float = 60.0) -> Any:
        """Run ``coro_fn(client, *args)`` with the session's rules and wait for it (blocking)."""
        return asyncio.run_coroutine_threadsafe(self._guarded(coro_fn, args, True), self.loop).result(timeout)

    def close(self) -> None:
        """Stop every stream, close the client and end the loop thread."""
        async def shut():
            for task in self._watchers.values():
                task.cancel()
            self._watchers.clear()
            if self.client is not None:
                try:
                    await self.client.close()
                except Exception as exc:  # closing must finish whatever the sockets do
                    log.debug("event=ccxt_close_failed reason=%s", exc)
        if self.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
            except Exception as exc:  # the loop may already be wedged; stop it regardless
                log.debug("event=ccxt_shutdown_failed reason=%s", exc)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)

    # ------------------------------------------------------------------ calls
    def call(self, coro_fn: Callable, *args: Any, on_result: Optional[Callable] = None,
             on_error: Optional[Callable] = None, retry_reads: bool = True) -> None:
        """Run ``coro_fn(client, *args)`` on the session loop; answer through ``deliver``."""
        async def job():
            try:
                result = await self._guarded(coro_fn, args, retry_reads)
            except Exception as exc:  # every failure becomes the caller's on_error
                if on_error is not None:
                    self._deliver(on_error, exc)
                else:
                    log.warning("event=ccxt_call_failed call=%s reason=%s",
                                getattr(coro_fn, "__name__", coro_fn), exc)
                return
            if on_result is not None:
                self._deliver(on_result, result)
        asyncio.run_coroutine_threadsafe(job(), self.loop)

    async def _guarded(self, coro_fn: Callable, args: tuple, retry_reads: bool) -> Any:
        synced = False
        limited = 0
        while True:
            wait = self._gate_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return await coro_fn(self.client, *args)
            except ccxt.DDoSProtection:
                headers = getattr(self.client, "last_response_headers", None) or {}
                pause = min(self._wait_max, retry_after_seconds(headers, 1.0))
                self._gate_until = max(self._gate_until, time.monotonic() + pause)
                log.warning("event=rate_limited exchange=%s pause_s=%.1f", self.exchange_id, pause)
                limited += 1
                if not retry_reads or limited >= RATE_LIMIT_RETRIES:
                    raise
            except (ccxt.InvalidNonce, ccxt.BadRequest) as exc:
                if synced or not is_clock_error(exc):
                    raise
                synced = True
                offset = await self.client.load_time_difference()
                log.warning("event=clock_resync exchange=%s offset_ms=%s", self.exchange_id, offset)

    def after(self, delay: float, callback: Callable[[], None]) -> None:
        """Hand ``callback`` to ``deliver`` after ``delay`` seconds (a timer off the manager's loop)."""
        async def later():
            await asyncio.sleep(delay)
            self._deliver(callback)
        asyncio.run_coroutine_threadsafe(later(), self.loop)

    # ------------------------------------------------------------------ streams
    def renew_stream_auth(self) -> None:
        """Make ccxt ask for a user data stream key (listenKey) again on its next subscription."""
        def renew():
            for value in (self.client.options if self.client is not None else {}).values():
                if isinstance(value, dict) and "listenKey" in value:
                    value["lastAuthenticatedTime"] = 0
        self.loop.call_soon_threadsafe(renew)

    def watch(self, key: str, coro_fn: Callable, on_items: Callable, on_error: Callable,
              retry: float) -> None:
        """Keep ``coro_fn(client)`` (a ``watch_*`` call) running under ``key``."""
        async def loop():
            while True:
                try:
                    items = await coro_fn(self.client)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a dropped socket: report, then watch again
                    self._deliver(on_error, key, exc)
                    await asyncio.sleep(retry)
                    continue
                self._deliver(on_items, key, items)

        def start():
            if key not in self._watchers:
                self._watchers[key] = self.loop.create_task(loop())
        self.loop.call_soon_threadsafe(start)

    def unwatch(self, key: str) -> None:
        """Stop the stream under ``key``."""
        def stop():
            task = self._watchers.pop(key, None)
            if task is not None:
                task.cancel()
        self.loop.call_soon_threadsafe(stop)
