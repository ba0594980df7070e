"""The notifier wired to the running engine: its settings file, its own event feed."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from engine.notify.config import NotifySettings, load_notify_settings
from engine.notify.notifier import Notifier
from engine.observer import EventFeed
from maotrade.errors import ConfigError

DEFAULT_FILE = "notify.json"


def load_notifications(data_dir: Path, path: Optional[Path]) -> Optional[NotifySettings]:
    """Settings from ``path``, else from ``notify.json`` in ``data_dir`` if there is one, else None."""
    if path is not None:
        if not Path(path).exists():
            raise ConfigError(f"notification settings file {path} does not exist")
        return load_notify_settings(Path(path))
    default = Path(data_dir) / DEFAULT_FILE
    return load_notify_settings(default) if default.exists() else None


class Notifications:
    """A ``Notifier`` fed by its own subscription to the engine's events."""

    def __init__(self, settings: NotifySettings, pub_address: str):
        self.notifier = Notifier(settings)
        self.feed = EventFeed(pub_address, name="notify-feed")
        self.feed.add_listener(self.notifier.offer)

    def start(self) -> "Notifications":
        """Start delivering, then start listening."""
        self.notifier.start()
        self.feed.start()
        return self

    def stop(self) -> None:
        """Stop listening, deliver what is queued, stop."""
        self.feed.stop()
        self.notifier.stop()
