"""Account Managers, one folder per broker. The engine loads them by ``brokerClass``."""
