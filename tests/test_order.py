"""The order state machine and order validation."""
import pytest

from maotrade.errors import IllegalTransition, InvalidOrder
from maotrade.order import ALLOWED_TRANSITIONS, BaseOrder, Fill, OrderStatus, new_client_order_id


def order(**fields):
    base = dict(client_order_id="c1", account="1", epic="EURUSD", qty=10)
    base.update(fields)
    return BaseOrder(**base)


def test_every_final_state_refuses_every_move():
    for final in OrderStatus.DONE:
        for target in OrderStatus.ALL - {final}:
            o = order(status=final)
            with pytest.raises(IllegalTransition):
                o.set_status(target)
            assert o.status == final


def test_transition_table_covers_every_state():
    assert set(ALLOWED_TRANSITIONS) == set(OrderStatus.ALL)


def test_partial_fills_sum_to_filled_with_weighted_average():
    o = order(qty=-10)
    o.set_submitted("REF1")
    assert o.add_fill(Fill("e1", 4, 100.0, 1))
    assert o.status == OrderStatus.PARTIALLY_FILLED and o.filled_qty == -4
    assert o.add_fill(Fill("e2", 6, 110.0, 2))
    assert o.status == OrderStatus.FILLED and o.filled_qty == -10
    assert o.avg_fill_price == pytest.approx((4 * 100 + 6 * 110) / 10)
    assert o.broker_ref == "REF1"


def test_overfill_is_refused_and_changes_nothing():
    o = order(qty=5)
    o.add_fill(Fill("e1", 3, 1.0, 1))
    with pytest.raises(InvalidOrder, match="exceeds"):
        o.add_fill(Fill("e2", 3, 1.0, 1))
    assert o.filled_qty == 3 and len(o.fills) == 1


def test_cancel_after_partial_fill_keeps_the_fill():
    o = order()
    o.set_accepted()
    o.add_fill(Fill("e1", 4, 1.0, 1))
    o.set_cancelled("user")
    assert o.status == OrderStatus.CANCELLED and o.filled_qty == 4
    with pytest.raises(IllegalTransition):
        o.add_fill(Fill("e2", 1, 1.0, 1))


@pytest.mark.parametrize("fields, message", [
    ({"qty": 0}, "non-zero"),
    ({"qty": float("nan")}, "non-zero"),
    ({"order_type": "ICEBERG"}, "order_type"),
    ({"order_type": "LIMIT"}, "positive price"),
    ({"order_type": "STOP", "price": -1}, "positive price"),
    ({"epic": ""}, "epic"),
    ({"stop_loss": 1.2, "take_profit": 1.1}, "stop_loss below take_profit"),
    ({"qty": -1, "stop_loss": 1.0, "take_profit": 1.1}, "stop_loss above"),
    ({"time_in_force": "FOREVER"}, "time_in_force"),
])
def test_illegal_orders_name_the_problem(fields, message):
    with pytest.raises(InvalidOrder, match=message):
        order(**fields).validate()


def test_round_trip_through_wire_dict_ignores_unknown_keys():
    o = order(stop_loss=1.0, take_profit=2.0)
    copy = BaseOrder.from_dict({**o.to_dict(), "future_field": 1})
    assert copy == o


def test_client_order_ids_are_unique_and_short():
    ids = {new_client_order_id() for _ in range(10000)}
    assert len(ids) == 10000
    assert max(len(i) for i in ids) <= 30
