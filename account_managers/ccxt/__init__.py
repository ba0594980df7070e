"""Crypto exchanges through ccxt: Binance spot, Binance USD-M futures (and other ccxt venues).

``brokerClass: ccxt.CCXTAccountManager``. See docs/brokers/ccxt.md.
"""
from account_managers.ccxt.manager import CCXTAccountManager

__all__ = ["CCXTAccountManager"]
