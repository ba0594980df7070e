"""Which IG deal reference belongs to which MAOTrade request (pure bookkeeping).

Opens and working orders carry a dealReference we derive from the client order id;
closes, amendments and cancels get one from IG in the HTTP answer. A confirm can
arrive on the TRADE stream before that answer, so confirms for references not yet
known wait in ``orphans`` until the reference is claimed. Each confirm is applied
once: ``resolved`` remembers the references already handled.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

OPEN_MARKET = "open_market"
OPEN_WORKING = "open_working"
CLOSE = "close"
AMEND = "amend"
CANCEL = "cancel"

MAX_ORPHANS = 500


@dataclass
class Batch:
    """One MAOTrade request that became one or more IG deals."""

    client_order_id: str
    kind: str
    expected: int = 1
    refs: set = field(default_factory=set)
    done: set = field(default_factory=set)
    rejections: list = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True once every deal of the request has a confirm."""
        return len(self.done) >= self.expected


class DealBook:
    """Deal references in flight and the requests they answer."""

    def __init__(self) -> None:
        self.by_ref: dict[str, Batch] = {}
        self.resolved: set[str] = set()
        self.orphans: "OrderedDict[str, dict]" = OrderedDict()

    def track(self, ref: str, batch: Batch) -> Optional[dict]:
        """Link ``ref`` to ``batch``; return a confirm that already arrived for it, if any."""
        batch.refs.add(ref)
        self.by_ref[ref] = batch
        return self.orphans.pop(ref, None)

    def batch_of(self, ref: str) -> Optional[Batch]:
        """The request waiting for ``ref``'s confirm, or None."""
        return self.by_ref.get(ref)

    def claim(self, ref: str) -> bool:
        """Mark ``ref`` handled; False if it was handled before (a repeat confirm)."""
        if ref in self.resolved:
            return False
        self.resolved.add(ref)
        return True

    def keep_orphan(self, ref: str, confirm: dict) -> None:
        """Hold a confirm nobody claimed yet (bounded: the oldest are forgotten)."""
        self.orphans[ref] = confirm
        while len(self.orphans) > MAX_ORPHANS:
            self.orphans.popitem(last=False)

    def finish(self, batch: Batch) -> None:
        """Forget a completed request's references (their confirms stay resolved)."""
        for ref in batch.refs:
            self.by_ref.pop(ref, None)

    def pending(self) -> list[tuple[str, Batch]]:
        """References still waiting for a confirm."""
        return [(ref, b) for ref, b in self.by_ref.items() if ref not in b.done]
