"""Pure translation between MAOTrade and ccxt's unified structures (no I/O).

Market filters come from ``load_markets`` (``precision`` and ``limits``, which ccxt builds
from Binance's LOT_SIZE, PRICE_FILTER and (MIN_)NOTIONAL filters); an order that breaks
one is refused here, naming the filter, before anything is sent.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Callable, Optional

from maotrade.order import BaseOrder, Fill, OrderAction, OrderType

#: ccxt unified order status -> what it means for a MAOTrade order (fills drive FILLED).
CCXT_STATUS = {"open": "ACCEPTED", "closed": "FILLED", "canceled": "CANCELLED",
               "expired": "EXPIRED", "rejected": "REJECTED"}

#: MAOTrade time in force -> Binance's (DAY has no Binance equivalent and is refused).
TIME_IN_FORCE = {"GTC": "GTC", "IOC": "IOC", "FOK": "FOK"}

#: Binance's rule for client order ids (newClientOrderId).
CLIENT_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:/_-")
CLIENT_ID_MAX = 36


def _d(value) -> Decimal:
    return Decimal(str(value))


def _multiple_of(value: float, step: float) -> bool:
    # Within float noise of a multiple counts (49800.200000000004 on a 0.1 tick); ccxt
    # then sends the value rounded to the market's precision.
    try:
        ratio = _d(value) / _d(step)
    except (InvalidOperation, ZeroDivisionError):
        return False
    return abs(ratio - ratio.to_integral_value()) < Decimal("1e-6")


def leg_on_tick(order: BaseOrder, market: dict) -> None:
    """Round a bracket leg's price to the market's tick (nearest).

    A leg's level is the strategy's stop loss or take profit, given in the instrument's
    terms and not the exchange's; moving it by less than a tick is what a trader expects,
    where refusing it would leave an open position without its protection. Orders the
    strategy prices itself are checked, never moved (``filter_violation``)."""
    tick = (market.get("precision") or {}).get("price")
    if order.leg and order.price is not None and tick:
        order.price = float((_d(order.price) / _d(tick)).to_integral_value() * _d(tick))


def filter_violation(order: BaseOrder, market: dict, reference_price: Optional[float]) -> str:
    """Return a one-line reason naming the market filter ``order`` breaks, or ''."""
    symbol = market.get("symbol")
    qty = abs(order.qty)
    precision = market.get("precision") or {}
    limits = market.get("limits") or {}
    step = precision.get("amount")
    amount = limits.get("market" if order.order_type == OrderType.MARKET else "amount") or limits.get("amount") or {}
    if step and not _multiple_of(qty, step):
        return f"LOT_SIZE: quantity {qty:g} of {symbol} is not a multiple of the step {step:g}"
    if amount.get("min") is not None and qty < amount["min"]:
        return f"LOT_SIZE: quantity {qty:g} of {symbol} is below the minimum {amount['min']:g}"
    if amount.get("max") is not None and qty > amount["max"]:
        return f"LOT_SIZE: quantity {qty:g} of {symbol} is above the maximum {amount['max']:g}"
    tick = precision.get("price")
    price_limits = limits.get("price") or {}
    for name in ("price",):
        value = getattr(order, name)
        if value is None:
            continue
        if tick and not _multiple_of(value, tick):
            return f"PRICE_FILTER: {name} {value:g} of {symbol} is not a multiple of the tick {tick:g}"
        if price_limits.get("min") and value < price_limits["min"]:
            return f"PRICE_FILTER: {name} {value:g} of {symbol} is below the minimum {price_limits['min']:g}"
        if price_limits.get("max") and value > price_limits["max"]:
            return f"PRICE_FILTER: {name} {value:g} of {symbol} is above the maximum {price_limits['max']:g}"
    cost = (limits.get("cost") or {}).get("min")
    price = order.price or reference_price
    if cost and price and qty * price < cost - 1e-12:
        return (f"MIN_NOTIONAL: {qty:g} x {price:g} = {qty * price:g} of {symbol} is below the "
                f"minimum notional {cost:g}")
    return ""


def client_id_problem(client_order_id: str) -> str:
    """Return why Binance would refuse this id as newClientOrderId, or ''."""
    if len(client_order_id) > CLIENT_ID_MAX:
        return f"client order id {client_order_id!r} is longer than {CLIENT_ID_MAX} characters"
    if not set(client_order_id) <= CLIENT_ID_CHARS:
        return f"client order id {client_order_id!r} has characters Binance does not accept"
    return ""


def order_request(order: BaseOrder, market: dict, wire_booleans: bool = False) -> tuple:
    """Return ccxt ``create_order`` arguments ``(symbol, type, side, amount, price, params)``;
    ``wire_booleans`` spells flags as the exchange's strings (``"true"``)."""
    side = "buy" if order.qty > 0 else "sell"
    params: dict = {"newClientOrderId": order.client_order_id}
    if order.order_type != OrderType.MARKET:
        tif = TIME_IN_FORCE.get(order.time_in_force)
        if tif is None:
            raise ValueError(f"time in force {order.time_in_force} is not offered by the exchange")
    kind, price = "market", None
    if order.order_type == OrderType.LIMIT:
        kind, price = "limit", order.price
        params["timeInForce"] = TIME_IN_FORCE[order.time_in_force]
    elif order.order_type == OrderType.STOP:
        params["stopLossPrice"] = order.price
    if order.action == OrderAction.CLOSE and market.get("contract"):
        # As the wire spells it: some ccxt clients (Aster's) send a Python True as "True".
        params["reduceOnly"] = "true" if wire_booleans else True
    return market["symbol"], kind, side, abs(order.qty), price, params


def trade_fill(trade: dict) -> Fill:
    """Return the MAOTrade fill of one ccxt trade; the exec id is ``symbol:trade id``."""
    fee = trade.get("fee") or {}
    return Fill(exec_id=f"{trade['symbol']}:{trade['id']}", qty=abs(float(trade["amount"])),
                price=float(trade["price"]), time=int(trade.get("timestamp") or 0),
                commission=float(fee.get("cost") or 0.0))


def trade_client_id(trade: dict) -> str:
    """The client order id carried in a raw trade or execution report, if any."""
    info = trade.get("info") or {}
    if isinstance(info.get("o"), dict):
        info = info["o"]
    return str(info.get("c") or info.get("clientOrderId") or "")


def account_info(balance: dict, positions: list, account: str, currency: str,
                 assets: list, contract: bool) -> dict:
    """Normalize a ccxt balance (and futures positions) into MAOTrade account info."""
    total = balance.get("total") or {}
    free = balance.get("free") or {}
    used = balance.get("used") or {}
    shown = assets or sorted(a for a, v in total.items() if v)
    per_asset = {a: {"available": float(free.get(a) or 0.0), "locked": float(used.get(a) or 0.0),
                     "total": float(total.get(a) or 0.0)} for a in shown}
    unrealized = sum(float(p.get("unrealizedPnl") or 0.0) for p in positions)
    margin = sum(float(p.get("initialMargin") or 0.0) for p in positions)
    cash = float(total.get(currency) or 0.0)
    info = {"account": account, "currency": currency, "balance": cash, "unrealized_pnl": unrealized,
            "margin_used": margin, "equity": cash + unrealized,
            "available": float(free.get(currency) or 0.0), "realized_pnl": 0.0,
            "assets": per_asset}
    if contract:
        raw = balance.get("info") or {}
        if "availableBalance" in raw:
            info["available"] = float(raw["availableBalance"])
    return info


def normalize_positions(positions: list, to_epic: Callable[[str], str]) -> list:
    """ccxt futures positions -> MAOTrade rows (signed qty, entry, P&L, margin, leverage)."""
    rows = []
    for p in positions:
        contracts = float(p.get("contracts") or 0.0) * float(p.get("contractSize") or 1.0)
        if not contracts:
            continue
        qty = -contracts if p.get("side") == "short" else contracts
        rows.append({"epic": to_epic(p["symbol"]), "epicBroker": p["symbol"], "qty": qty,
                     "avg_price": float(p.get("entryPrice") or 0.0),
                     "market_price": float(p.get("markPrice") or 0.0),
                     "unrealized_pnl": float(p.get("unrealizedPnl") or 0.0), "realized_pnl": 0.0,
                     "margin": float(p.get("initialMargin") or 0.0),
                     "leverage": float(p.get("leverage") or 0.0),
                     "stop_loss": None, "take_profit": None})
    return rows


def spot_positions(balance: dict, markets: dict, symbols: list, to_epic: Callable[[str], str],
                   prices: dict) -> list:
    """Spot holdings of the mapped markets' base assets, as positions."""
    total = balance.get("total") or {}
    rows = []
    for symbol in symbols:
        market = markets.get(symbol)
        if not market or market.get("contract"):
            continue
        qty = float(total.get(market["base"]) or 0.0)
        if qty:
            rows.append({"epic": to_epic(symbol), "epicBroker": symbol, "qty": qty, "avg_price": 0.0,
                         "market_price": prices.get(symbol), "unrealized_pnl": 0.0,
                         "realized_pnl": 0.0, "stop_loss": None, "take_profit": None})
    return rows


def working_order_row(raw: dict, to_epic: Callable[[str], str]) -> dict:
    """A ccxt open order as a MAOTrade portfolio row."""
    sign = 1 if raw.get("side") == "buy" else -1
    return {"client_order_id": raw.get("clientOrderId") or "", "broker_ref": str(raw.get("id") or ""),
            "epic": to_epic(raw["symbol"]), "epicBroker": raw["symbol"],
            "qty": sign * float(raw.get("amount") or 0.0), "filled_qty": sign * float(raw.get("filled") or 0.0),
            "order_type": "LIMIT" if raw.get("type") == "limit" else
                          ("STOP" if raw.get("triggerPrice") or raw.get("stopPrice") else "MARKET"),
            "price": raw.get("price") or raw.get("triggerPrice"), "status": "ACCEPTED"}
