"""Pure translation: epic format, order parameters, IB statuses, account values."""
import pytest

from account_managers.ib import parsing as p
from maotrade.errors import InvalidOrder
from maotrade.order import BaseOrder


def _order(**fields):
    base = {"client_order_id": "c1", "account": "1", "epic": "SPY", "qty": 10}
    base.update(fields)
    return BaseOrder(**base)


@pytest.mark.parametrize("text,spec", [
    ("SPY-USD-STK-SMART", p.ContractSpec("SPY", "USD", "STK", "SMART")),
    ("EUR-USD-CASH-IDEALPRO", p.ContractSpec("EUR", "USD", "CASH", "IDEALPRO")),
    ("ES-USD-FUT-CME-202412", p.ContractSpec("ES", "USD", "FUT", "CME", "202412")),
])
def test_epic_broker_format(text, spec):
    assert p.parse_epic_broker(text) == spec


@pytest.mark.parametrize("text,word", [("SPY", "SYMBOL-CURRENCY"), ("SPY-USD-XXX-SMART", "security type"),
                                       ("SPY-USDX-STK-SMART", "currency"), ("ES-USD-FUT-CME", "expiry"),
                                       ("ES-USD-FUT-CME-2024", "expiry"), ("A--STK-SMART", "SYMBOL")])
def test_bad_epic_broker_names_the_problem(text, word):
    with pytest.raises(InvalidOrder, match=word):
        p.parse_epic_broker(text)


def test_order_params():
    assert p.order_params(_order(qty=-3, order_type="LIMIT", price=1.5, time_in_force="DAY")) == \
        p.OrderParams("SELL", 3.0, "LMT", 1.5, None, "DAY", "c1")
    assert p.order_params(_order(order_type="STOP", price=2.0)).stop_price == 2.0


def test_status_table():
    order = _order()
    assert p.status_target(order, "PendingSubmit") == ("SUBMITTED", "")
    assert p.status_target(order, "Submitted") == ("ACCEPTED", "")
    assert p.status_target(order, "Filled") is None  # fills, not statuses, fill orders
    assert p.status_target(order, "Cancelled", 201, "Error 201, reqId 3: Order rejected - reason:NO") == \
        ("REJECTED", "IB 201: Order rejected - reason:NO")
    order.set_accepted()
    assert p.status_target(order, "Cancelled", 202, "Warning 202, reqId 3: Order Canceled - reason:") == \
        ("CANCELLED", "IB 202: Order Canceled - reason:")
    assert p.status_target(order, "Cancelled", 201, "Error 201: late")[0] == "CANCELLED"
    assert p.status_target(order, "PendingCancel") is None
    # a refused amend of a working order does not end it
    assert p.status_target(order, "Cancelled", 104, "Error 104: Can't modify a filled order.") is None


def test_connectivity_codes_are_not_order_errors():
    assert [p.connectivity_change(c) for c in (1100, 1101, 1102, 2103, 2104, 2110, 201)] == \
        ["lost", "restored_data_lost", "restored", "farm_broken", "farm_ok", "lost", None]


def test_account_values_prefer_base_currency():
    rows = [("NetLiquidation", "1000", "USD"), ("TotalCashValue", "900", "USD"),
            ("TotalCashValue", "50", "EUR"), ("AvailableFunds", "700", "USD"),
            ("MaintMarginReq", "bad", "USD"), ("AccountCode", "DU1", "")]
    info = p.normalize_account("DU1", rows)
    assert info == {"account": "DU1", "currency": "USD", "equity": 1000.0, "balance": 900.0,
                    "available": 700.0, "margin_used": 0.0, "unrealized_pnl": 0.0, "realized_pnl": 0.0}


def test_position_average_cost_divides_multiplier():
    row = p.normalize_position("ES_FUT", "ES-USD-FUT-CME-202412", 2, 225000.0, 50.0, 4510.0, 1000.0, 0.0)
    assert row["avg_price"] == 4500.0 and row["qty"] == 2.0


def test_history_duration():
    assert p.history_duration(60, 5) == "300 S"
    assert p.history_duration(3600, 48) == "2 D"
