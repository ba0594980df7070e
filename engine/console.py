"""Human-readable lines for what a person watching ``maotrade start`` needs to see.

Every line looks like a console log line (``maotrade.log.console_prefix``): the time,
the level for warnings and errors, the text. A close the broker made on its own (a stop
loss or take profit of the strategy's bracket, whether reported as a broker close or as
the bracket's ``{parent}/SL`` / ``{parent}/TP`` child order) reads as what it is.
"""
from __future__ import annotations

import sys
from typing import Optional, TextIO

import logging

from maotrade.log import console_prefix, redact_text
from maotrade.messages import EngineToClient as ToClient

# Child-order suffixes of a bracket (maotrade.order.child_id) and what they are.
BRACKET_LEGS = {"/SL": "stop loss", "/TP": "take profit"}


def _money(value) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _price(value) -> str:
    return "-" if value is None else f"{value:.6g}"


class ConsolePrinter:
    """Format engine events as one short line each and write them to ``stream``."""

    def __init__(self, stream: Optional[TextIO] = None, show_bars: bool = True, quiet: bool = False):
        self.stream = stream or sys.stdout
        self.show_bars = show_bars and not quiet
        self.quiet = quiet  # only what needs a person: failures, rejections, broker errors

    @property
    def wants_bars(self) -> bool:
        """Whether bars are worth sending here (the engine skips them otherwise)."""
        return self.show_bars

    def __call__(self, msg: dict) -> None:
        line = self.format(msg)
        if line:
            level = self.level(msg)
            if self.quiet and level < logging.WARNING:
                return
            line = redact_text(line)
            self.stream.write(f"{console_prefix(level)} {line}\n")
            self.stream.flush()

    @staticmethod
    def level(msg: dict) -> int:
        """How much ``msg`` needs a person: WARNING for failures and rejections, else INFO."""
        kind = msg.get("type")
        if kind in (ToClient.DISCREPANCY, ToClient.WORKER_ERROR) or (kind == ToClient.STALE_DATA and msg.get("stale")):
            return logging.WARNING
        if kind == ToClient.ACCOUNT_STATUS and msg.get("state") == "disconnected":
            return logging.ERROR
        if kind == ToClient.ORDER and (msg.get("status") == "REJECTED" or msg.get("error")):
            return logging.WARNING
        return logging.INFO

    def format(self, msg: dict) -> Optional[str]:
        """Return the line for ``msg``, or None if a person need not see it."""
        kind = msg.get("type")
        account = msg.get("account")
        if kind == ToClient.ACCOUNT_STATUS:
            reason = f" ({msg['reason']})" if msg.get("reason") else ""
            return f"account {account} [{msg.get('broker')}]: {msg.get('state')}{reason}"
        if kind == ToClient.ACCOUNT_INFO:
            info = msg.get("info") or {}
            return (f"account {account}: balance {_money(info.get('balance'))} {info.get('currency', '')}"
                    f"  equity {_money(info.get('equity'))}  available {_money(info.get('available'))}"
                    f"  open P&L {_money(info.get('unrealized_pnl'))}")
        if kind == ToClient.MARKET_DATA and self.show_bars and msg.get("completed"):
            return (f"{msg.get('epic')} {msg.get('time_frame')}s bar  O {_price(msg.get('open'))}"
                    f"  H {_price(msg.get('high'))}  L {_price(msg.get('low'))}  C {_price(msg.get('close'))}")
        if kind == ToClient.ORDER and self._broker_close(msg):
            return self._broker_close_line(msg)
        if kind == ToClient.ORDER:
            side = "BUY" if (msg.get("qty") or 0) > 0 else "SELL"
            text = (f"order {msg.get('client_order_id')} {side} {abs(msg.get('qty') or 0):g} {msg.get('epic')}"
                    f" {msg.get('order_type')} ({msg.get('action')}, {msg.get('source')}): {msg.get('status')}")
            if msg.get("filled_qty"):
                text += f" {abs(msg['filled_qty']):g} @ {_price(msg.get('avg_fill_price'))}"
            if msg.get("error") or (msg.get("status") == "REJECTED" and msg.get("reason")):
                text += f" - {msg.get('error') or msg.get('reason')}"
            return text
        if kind == ToClient.DISCREPANCY:
            return (f"account {account}: {msg.get('kind')} {msg.get('key')} differs"
                    f" (engine {msg.get('engine')}, broker {msg.get('broker')}); see maotrade reconcile")
        if kind == ToClient.STALE_DATA:
            state = f"STALE (silent {msg.get('silent_s')}s)" if msg.get("stale") else "flowing again"
            return f"account {account}: {msg.get('epic')} {msg.get('time_frame')}s market data {state}"
        if kind == ToClient.KILL_SWITCH:
            return f"WARNING kill switch {'of account ' + str(account) if account else '(global)'}: {msg.get('mode')}"
        if kind == ToClient.OPERATOR_ACTION:
            scope = f"account {account}" if account else "every account"
            return (f"WARNING {str(msg.get('action')).replace('_', '-')} of {scope} by {msg.get('by')}: "
                    f"{len(msg.get('cancelled') or [])} cancel(s), {len(msg.get('closing') or [])} closing order(s), "
                    f"{len(msg.get('refused') or [])} not done")
        if kind == ToClient.WORKER_ERROR:
            return f"account {account}: broker error: {msg.get('reason')}"
        return None

    @staticmethod
    def _broker_close(msg: dict) -> str:
        """The bracket leg (stop loss / take profit) a broker-made close comes from, or ""."""
        key = str(msg.get("client_order_id") or "")
        for suffix, leg in BRACKET_LEGS.items():
            if key.endswith(suffix):
                return leg
        if msg.get("source") == "broker" and msg.get("reason") in BRACKET_LEGS.values():
            return msg["reason"]
        return ""

    def _broker_close_line(self, msg: dict) -> Optional[str]:
        leg = self._broker_close(msg)
        key = str(msg.get("client_order_id") or "")
        parent = key.rsplit("/", 1)[0] if key.endswith(tuple(BRACKET_LEGS)) else ""
        of = f" of order {parent}" if parent else ""
        qty = abs(msg.get("filled_qty") or msg.get("qty") or 0)
        status = msg.get("status")
        if status == "FILLED" or (status == "PARTIALLY_FILLED" and msg.get("filled_qty")):
            side = "sold" if (msg.get("qty") or 0) < 0 else "bought"
            return (f"{msg.get('epic')} {leg}{of} hit: the broker closed the position, {side} {qty:g} "
                    f"@ {_price(msg.get('avg_fill_price'))}")
        if status in ("CANCELLED", "EXPIRED"):
            return f"{msg.get('epic')} {leg}{of} {status.lower()} ({msg.get('reason') or 'position closed'})"
        if status == "REJECTED":
            return f"{msg.get('epic')} {leg}{of} REJECTED - {msg.get('reason') or msg.get('error')}"
        return None  # NEW / ACCEPTED legs: working quietly at the broker
