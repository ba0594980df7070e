"""MAOTrade: one trading engine, many brokers.

What users import: ``BaseAccountManager`` (to add a broker), ``BaseOrder`` and the
order constants, and ``Strategy`` (to trade).
"""
import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

from maotrade.order import BaseOrder, Fill, OrderAction, OrderStatus, OrderType, TimeInForce  # noqa: E402

__all__ = ["BaseOrder", "Fill", "OrderAction", "OrderStatus", "OrderType", "TimeInForce", "__version__"]
