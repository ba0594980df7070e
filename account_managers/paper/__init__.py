"""Paper broker: simulated prices and fills, so MAOTrade runs anywhere.

``brokerClass: paper.PaperAccountManager``. See docs/brokers/paper.md.
"""
from account_managers.paper.manager import PaperAccountManager

__all__ = ["PaperAccountManager"]
