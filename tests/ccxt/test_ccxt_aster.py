"""Aster perpetual futures through the real ccxt ``aster`` client: requests signed with the
wallet key (EIP-712) and checked by the local exchange, orders and positions over REST."""
from __future__ import annotations

import ccxt
import pytest
import requests

from maotrade.messages import EngineToWorker as In
from tests.ccxt.accounts import EPICS, ccxt_document
from tests.ccxt.aster_server import AsterExchangeServer
from tests.ccxt.exchange_server import ASTER
from tests.kit import WorkerHarness

OTHER_KEY = "0x" + "22" * 32


@pytest.fixture
def aster():
    with AsterExchangeServer() as server:
        yield server


def sync_client(server: AsterExchangeServer, private_key: str) -> ccxt.aster:
    client = ccxt.aster({"privateKey": private_key, "options": {"builderFee": False, "defaultType": "swap"}})
    client.urls["api"].update({k: v for k, v in server.urls().items() if k != "ws"})
    return client


def test_a_request_signed_by_the_wallet_key_is_taken(aster):
    balance = sync_client(aster, aster.private_key).fetch_balance()
    assert balance["USDT"]["total"] == 10000.0 and aster.signed_requests == 1


def test_a_request_signed_by_another_key_is_refused(aster):
    with pytest.raises(ccxt.AuthenticationError):
        sync_client(aster, OTHER_KEY).fetch_balance()  # signer is a wallet not allowed for itself
    aster.signers[aster.wallet] = {aster.wallet}
    client = sync_client(aster, aster.private_key)
    client.options["signerAddress"] = "0x" + "33" * 20  # claims a signer whose key did not sign
    with pytest.raises(ccxt.AuthenticationError):
        client.fetch_balance()
    assert aster.signed_requests == 0


def test_a_replayed_request_is_refused(aster):
    client = sync_client(aster, aster.private_key)
    signed = client.sign("v3/balance", ["fapiPrivate"], "GET", {})
    first = requests.get(signed["url"], timeout=5)
    again = requests.get(signed["url"], timeout=5)
    assert first.status_code == 200 and again.status_code == 400 and again.json()["code"] == -1021


def test_worker_trades_aster_with_signed_requests_and_no_builder_fee(aster, tmp_path):
    aster.set_price(50000)
    with WorkerHarness(ccxt_document(aster), tmp_path) as worker:
        init = worker.wait_type("init_result", timeout=60)
        assert init["ok"] is True and init["account_info"]["balance"] == 10000.0
        worker.wait_type("connection", state="connected")
        order = worker.order(EPICS[ASTER], 0.01)
        mark = worker.request(In.ORDER_OPEN, order)
        filled = worker.wait_order(order.client_order_id, "FILLED", since=mark)
        assert filled["order"]["avg_fill_price"] == 50000.0
        [trade] = [t for t in aster.trades if t["client_id"] == order.client_order_id]
        fills = [m["fill"] for m in worker.received[mark:] if m.get("type") == "order_event"
                 and m["order"]["client_order_id"] == order.client_order_id and m.get("fill")]
        assert [f["exec_id"] for f in fills] == [f"BTC/USDT:USDT:{trade['id']}"]
        mark = worker.request(In.PORTFOLIO_REQUEST)
        [position] = worker.wait_type("portfolio", since=mark)["portfolio"]["positions"]
        assert position["qty"] == 0.01 == float(aster.position_qty)
        assert position["avg_price"] == float(aster.entry_price) == 50000.0
    assert aster.order_posts == {order.client_order_id: 1}
    assert aster.builder_orders == 0  # ccxt's builder fee is never approved nor charged unasked
    assert not any(path.endswith("/approveBuilder") for _, path, _ in aster.requests)


def test_a_cancel_signed_in_its_body_is_taken(aster):
    client = sync_client(aster, aster.private_key)
    client.load_markets()
    aster.set_price(50000)
    client.create_order("BTC/USDT:USDT", "limit", "buy", 0.01, 45000, {"newClientOrderId": "rest-1"})
    cancelled = client.cancel_order(None, "BTC/USDT:USDT", {"origClientOrderId": "rest-1"})
    assert cancelled["status"] == "canceled" and aster.order_by_client_id("rest-1").status == "CANCELED"
