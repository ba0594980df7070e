"""Human-readable lines for what a person watching ``maotrade start`` needs to see."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from maotrade.log import redact_text


def _money(value) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _price(value) -> str:
    return "-" if value is None else f"{value:.6g}"


class ConsolePrinter:
    """Format engine events as one short line each and write them to ``stream``."""

    def __init__(self, stream: Optional[TextIO] = None, show_bars: bool = True):
        self.stream = stream or sys.stdout
        self.show_bars = show_bars

    def __call__(self, msg: dict) -> None:
        line = self.format(msg)
        if line:
            line = redact_text(line)
            self.stream.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            self.stream.flush()

    def format(self, msg: dict) -> Optional[str]:
        """Return the line for ``msg``, or None if a person need not see it."""
        kind = msg.get("type")
        account = msg.get("account")
        if kind == "account_status":
            reason = f" ({msg['reason']})" if msg.get("reason") else ""
            return f"account {account} [{msg.get('broker')}]: {msg.get('state')}{reason}"
        if kind == "account_info":
            info = msg.get("info") or {}
            return (f"account {account}: balance {_money(info.get('balance'))} {info.get('currency', '')}"
                    f"  equity {_money(info.get('equity'))}  available {_money(info.get('available'))}"
                    f"  open P&L {_money(info.get('unrealized_pnl'))}")
        if kind == "market_data" and self.show_bars and msg.get("completed"):
            return (f"{msg.get('epic')} {msg.get('time_frame')}s bar  O {_price(msg.get('open'))}"
                    f"  H {_price(msg.get('high'))}  L {_price(msg.get('low'))}  C {_price(msg.get('close'))}")
        if kind == "order":
            side = "BUY" if (msg.get("qty") or 0) > 0 else "SELL"
            text = (f"order {msg.get('client_order_id')} {side} {abs(msg.get('qty') or 0):g} {msg.get('epic')}"
                    f" {msg.get('order_type')} ({msg.get('action')}, {msg.get('source')}): {msg.get('status')}")
            if msg.get("filled_qty"):
                text += f" {abs(msg['filled_qty']):g} @ {_price(msg.get('avg_fill_price'))}"
            if msg.get("error") or (msg.get("status") == "REJECTED" and msg.get("reason")):
                text += f" - {msg.get('error') or msg.get('reason')}"
            return text
        if kind == "discrepancy":
            return (f"WARNING account {account}: {msg.get('kind')} {msg.get('key')} differs"
                    f" (engine {msg.get('engine')}, broker {msg.get('broker')}); see maotrade reconcile")
        if kind == "stale_data":
            state = f"STALE (silent {msg.get('silent_s')}s)" if msg.get("stale") else "flowing again"
            return f"account {account}: {msg.get('epic')} {msg.get('time_frame')}s market data {state}"
        if kind == "kill_switch":
            return f"WARNING kill switch {'of account ' + str(account) if account else '(global)'}: {msg.get('mode')}"
        if kind == "operator_action":
            scope = f"account {account}" if account else "every account"
            return (f"WARNING {str(msg.get('action')).replace('_', '-')} of {scope} by {msg.get('by')}: "
                    f"{len(msg.get('cancelled') or [])} cancel(s), {len(msg.get('closing') or [])} closing order(s), "
                    f"{len(msg.get('refused') or [])} not done")
        if kind == "worker_error":
            return f"account {account}: broker error: {msg.get('reason')}"
        return None
