"""FIX 4.4 broker: an initiator with its own session layer, messages built with simplefix.

``brokerClass: fix.FIXAccountManager``. See docs/brokers/fix.md.
"""
from account_managers.fix.manager import FIXAccountManager

__all__ = ["FIXAccountManager"]
