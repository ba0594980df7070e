"""Outgoing notifications: engine events to Telegram and to signed JSON webhooks.

``config`` reads the settings file, ``events`` turns bus events into notifications (pure),
``channels`` delivers them, ``notifier`` runs it all on a thread of its own fed by the
engine's PUB socket, so a slow or dead endpoint never holds the engine up.
docs/DASHBOARD.md ("Notifications") documents the settings.
"""
