"""Turn the engine's bus events into notifications (pure: no I/O).

``Classifier`` keeps the little state needed to tell a reconnect from a first start: an
account that becomes ready after being disconnected or reconnecting has reconnected.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from engine.notify.config import EventKind
from engine.risk import RiskCode

RISK_CODES = frozenset(v for k, v in vars(RiskCode).items() if not k.startswith("_") and isinstance(v, str))
DOWN_STATES = frozenset({"disconnected", "reconnecting"})
KILL_TEXT = {"active": "ACTIVE", "reduce_only": "REDUCE ONLY", "halted": "HALTED"}


@dataclass(frozen=True)
class Notification:
    """One thing to tell a person: ``kind`` (an ``EventKind``), the account, a line of text, the facts."""

    kind: str
    account: Optional[str]
    text: str
    data: dict = field(default_factory=dict)


def _qty(value) -> str:
    return f"{abs(float(value or 0)):g}"


def _price(value) -> str:
    return "-" if value is None else f"{float(value):.6g}"


class Classifier:
    """Notifications for engine events (one event may give none)."""

    def __init__(self):
        self._down: set[str] = set()

    def classify(self, event: dict) -> Optional[Notification]:
        """The notification for ``event``, or None if a person need not hear of it."""
        kind = event.get("type")
        handler = getattr(self, f"_on_{kind}", None) if isinstance(kind, str) else None
        return handler(event) if handler is not None else None

    def _on_order(self, event: dict) -> Optional[Notification]:
        account = event.get("account")
        side = "BUY" if (event.get("qty") or 0) > 0 else "SELL"
        facts = {k: event.get(k) for k in ("client_order_id", "epic", "qty", "status", "order_type", "source")}
        fills = event.get("fills") or []
        if fills:
            done = ", ".join(f"{_qty(f.get('qty'))} @ {_price(f.get('price'))}" for f in fills)
            return Notification(EventKind.FILL, account, f"[{account}] FILL {side} {done} {event.get('epic')} "
                                f"({event.get('status')}, order {event.get('client_order_id')})",
                                {**facts, "fills": fills})
        if event.get("status") == "REJECTED" and not event.get("duplicate"):
            reason = event.get("error") or event.get("reason") or ""
            code = event.get("code")
            kind = EventKind.RISK_DENIAL if code in RISK_CODES else EventKind.REJECTED
            label = "RISK DENIED" if kind == EventKind.RISK_DENIAL else "REJECTED"
            return Notification(kind, account, f"[{account}] {label} {side} {_qty(event.get('qty'))} "
                                f"{event.get('epic')}: {reason}", {**facts, "code": code, "reason": reason})
        return None

    def _on_account_status(self, event: dict) -> Optional[Notification]:
        account, state = event.get("account"), event.get("state")
        reason = event.get("reason") or ""
        facts = {"state": state, "reason": reason, "broker": event.get("broker")}
        if state in DOWN_STATES:
            if account in self._down:
                return None  # reconnecting after disconnected: the same outage
            self._down.add(account)
            return Notification(EventKind.DISCONNECTED, account, f"[{account}] {state.upper()}: {reason}", facts)
        if state == "ready" and account in self._down:
            self._down.discard(account)
            return Notification(EventKind.RECONNECTED, account, f"[{account}] reconnected and synchronised", facts)
        return None

    def _on_stale_data(self, event: dict) -> Notification:
        account = event.get("account")
        what = f"{event.get('epic')} {event.get('time_frame')}s"
        text = (f"[{account}] STALE market data: {what} silent {event.get('silent_s')}s" if event.get("stale")
                else f"[{account}] market data flowing again: {what}")
        return Notification(EventKind.STALE_DATA, account, text,
                            {k: event.get(k) for k in ("epic", "time_frame", "stale", "silent_s")})

    def _on_kill_switch(self, event: dict) -> Notification:
        account, mode = event.get("account"), event.get("mode")
        scope = f"[{account}]" if account else "[all accounts]"
        return Notification(EventKind.KILL_SWITCH, account, f"{scope} kill switch {KILL_TEXT.get(mode, mode)}",
                            {"mode": mode})

    def _on_operator_action(self, event: dict) -> Notification:
        account = event.get("account")
        scope = f"[{account}]" if account else "[all accounts]"
        text = (f"{scope} {str(event.get('action')).replace('_', '-')} by {event.get('by')}: "
                f"{len(event.get('cancelled') or [])} cancel(s), {len(event.get('closing') or [])} close(s), "
                f"{len(event.get('refused') or [])} refused")
        return Notification(EventKind.OPERATOR_ACTION, account, text,
                            {k: event.get(k) for k in ("action", "by", "cancelled", "closing", "refused")})
