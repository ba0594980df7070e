"""Zerodha Kite Connect through the official kiteconnect library (REST and KiteTicker).

``brokerClass: kite.KiteAccountManager``. See docs/brokers/kite.md.
"""
from account_managers.kite.manager import KiteAccountManager

__all__ = ["KiteAccountManager"]
