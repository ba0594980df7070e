"""The running engine's REST API: orders, accounts, risk, kill switch and webhooks."""
