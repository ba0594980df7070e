"""A local Aster perpetual-futures exchange, for the real ccxt ``aster`` client.

Aster's futures API is Binance USD-M's in shape (paths under ``/fapi/v3``, the same JSON
for orders, trades, balances and positions, ``ORDER_TRADE_UPDATE`` on the user data
stream), so ``AsterExchangeServer`` is the Binance-protocol ``ExchangeServer`` with what
Aster does otherwise:

* every private request is signed by a wallet key (EIP-712, ``aster_signing``), not by
  an API key and HMAC: the server recovers the signer from ``signature``, requires it to
  be ``signer`` and to be allowed to trade for ``user``, and refuses a ``nonce``
  (microseconds) it has seen or one more than ``NONCE_WINDOW_MS`` from its clock;
* stops are ordinary orders (``STOP_MARKET``), there is no Algo Service;
* market streams are combined streams at ``/stream`` (``<symbol>@aggTrade``), the user
  data stream is ``/ws/<listenKey>`` with the key from ``POST /fapi/v3/listenKey``;
* spot lives apart (``/api/v3``): this server lists no spot market.
"""
from __future__ import annotations

import time
from decimal import Decimal
from typing import Optional
from urllib.parse import parse_qsl

from aiohttp import web

from tests.ccxt.aster_signing import address_of, recover_signer
from tests.ccxt.exchange_server import ASTER, ExchangeServer, _error, _fmt, _signed_payload

#: A nonce further than this from the server's clock is refused (a replayed or stale request).
NONCE_WINDOW_MS = 10_000
#: A fixed test wallet (never a real one).
TEST_PRIVATE_KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


class AsterExchangeServer(ExchangeServer):
    """Aster perpetual futures (BTCUSDT) on 127.0.0.1, orders signed by ``private_key``."""

    def __init__(self, private_key: str = TEST_PRIVATE_KEY, **kwargs):
        super().__init__(ASTER, **kwargs)
        self.private_key = private_key
        self.wallet = address_of(private_key)
        self.signers = {self.wallet: {self.wallet}}  # user -> addresses allowed to sign for it
        self.signed_requests = 0
        self.builder_orders = 0  # orders that carried a builder fee
        self._nonces: set[int] = set()
        self.last_signed_at = 0.0  # monotonic time of the last signed request taken

    def urls(self) -> dict:
        """The ``urls`` brokerConfig value that points ccxt's Aster client here."""
        http, ws = self.base, f"ws://127.0.0.1:{self.port}"
        return {"fapiPublic": f"{http}/fapi", "fapiPrivate": f"{http}/fapi",
                "sapiPublic": f"{http}/api", "sapiPrivate": f"{http}/api",
                "ws": {"public": {"swap": f"{ws}/stream", "spot": f"{ws}/spot/stream"},
                       "private": {"swap": f"{ws}/ws", "spot": f"{ws}/spot/ws"}}}

    # ---------------------------------------------------------------- routes
    def _route(self, method: str, path: str, name: str):
        if path == "/api/v3/exchangeInfo":
            return lambda p: web.json_response({"timezone": "UTC", "serverTime": self.now_ms(),
                                                "rateLimits": [], "exchangeFilters": [], "symbols": []})
        if not path.startswith("/fapi/v3/"):
            return None
        return super()._route(method, path, name)

    def _signed_handlers(self):
        return super()._signed_handlers() | {self._new_listen_key}

    def _new_order(self, params: dict) -> web.Response:
        if params.get("builder"):
            self.builder_orders += 1
        return super()._new_order(params)

    def _check_signature(self, request: web.Request, body: str) -> Optional[web.Response]:
        payload = _signed_payload(request, body)
        signed, _, signature = payload.rpartition("&signature=")
        if not signed:
            return _error(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        params = dict(parse_qsl(signed))
        user, signer = params.get("user", "").lower(), params.get("signer", "").lower()
        try:
            recovered = recover_signer(signed, signature)
        except ValueError:
            return _error(400, -1022, "Signature for this request is not valid.")
        if recovered != signer:
            return _error(400, -1022, "Signature for this request is not valid.")
        if signer not in self.signers.get(user, set()):
            return _error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        try:
            nonce = int(params.get("nonce", ""))
        except ValueError:
            return _error(400, -1102, "Mandatory parameter 'nonce' was not sent, was empty/null, or malformed.")
        with self._lock:
            if nonce in self._nonces or abs(nonce // 1000 - self.now_ms()) > NONCE_WINDOW_MS:
                return _error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
            self._nonces.add(nonce)
            self.signed_requests += 1
            self.last_signed_at = time.monotonic()
        return None

    def session_alive(self, within: float = 3.0) -> bool:
        """True if a signed request was taken in the last ``within`` seconds (a REST-polling
        client's session is its requests)."""
        return not self.down and time.monotonic() - self.last_signed_at < within

    # ---------------------------------------------------------------- streams
    def _market_trade(self, now: int, qty: Decimal) -> tuple[str, dict]:
        trade_id = next(self._market_trade_ids)
        event = {"e": "aggTrade", "E": now, "s": self.symbol, "a": trade_id, "p": _fmt(self.price),
                 "q": _fmt(qty), "f": trade_id, "l": trade_id, "T": now, "m": False}
        return f"{self.symbol.lower()}@aggTrade", event

    def _user_stream_key(self, request: web.Request) -> Optional[str]:
        if request.path.startswith("/ws/"):
            return request.path[len("/ws/"):]
        return None
