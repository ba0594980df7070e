"""Interactive Brokers: TWS or IB Gateway over the TWS socket API, through ib_insync.

``brokerClass: ib.IBAccountManager``. See docs/brokers/ib.md.
"""
from account_managers.ib.manager import IBAccountManager

__all__ = ["IBAccountManager"]
