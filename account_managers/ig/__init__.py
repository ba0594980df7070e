"""IG Markets: REST (requests) and Lightstreamer streaming (lightstreamer-client-lib).

``brokerClass: ig.IGAccountManager``. See docs/brokers/ig.md.
"""
from account_managers.ig.manager import IGAccountManager

__all__ = ["IGAccountManager"]
