"""The registry behind the admin/config service, in SQLite.

Secret values in an account's config (password, apiKey, ...) are encrypted with the
operator's master key before they are written, and stay encrypted in the served
document; the engine decrypts them with the same key.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Optional

from maotrade.config import AccountDocument
from maotrade.errors import ConfigError
from maotrade.secrets import SecretBox, redact

SCHEMA = """
CREATE TABLE IF NOT EXISTS brokers (
    name TEXT PRIMARY KEY,
    broker_class TEXT NOT NULL,
    broker_config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    broker_name TEXT NOT NULL REFERENCES brokers (name),
    account_config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mappings (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    epic TEXT NOT NULL,
    epic_broker TEXT NOT NULL,
    PRIMARY KEY (account_id, epic)
);
"""


class NotFound(LookupError):
    """The named broker, account or mapping does not exist."""


class Conflict(ValueError):
    """The write would break the registry (e.g. removing a broker that accounts use)."""


class RegistryStore:
    """Brokers, accounts and epic mappings; safe to share between threads."""

    def __init__(self, path: Path, box: SecretBox):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.box = box
        self._lock = threading.Lock()
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)

    # -- brokers --------------------------------------------------------------------
    def put_broker(self, name: str, broker_class: str, broker_config: dict) -> dict:
        """Create or replace a broker."""
        self._check_name(name, "broker name")
        AccountDocument(idAccount="check", brokerName=name, brokerClass=broker_class,
                        brokerConfig=broker_config)
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO brokers (name, broker_class, broker_config) VALUES (?, ?, ?)",
                            (name, broker_class, json.dumps(broker_config)))
        return self.get_broker(name)

    def get_broker(self, name: str) -> dict:
        """Return one broker."""
        row = self.db.execute("SELECT name, broker_class, broker_config FROM brokers WHERE name = ?",
                              (name,)).fetchone()
        if not row:
            raise NotFound(f"unknown broker {name!r}")
        return {"name": row[0], "brokerClass": row[1], "brokerConfig": json.loads(row[2])}

    def list_brokers(self) -> list[dict]:
        """Return every broker."""
        names = [r[0] for r in self.db.execute("SELECT name FROM brokers ORDER BY name")]
        return [self.get_broker(n) for n in names]

    def remove_broker(self, name: str) -> None:
        """Remove a broker no account uses."""
        self.get_broker(name)
        used = self.db.execute("SELECT COUNT(*) FROM accounts WHERE broker_name = ?", (name,)).fetchone()[0]
        if used:
            raise Conflict(f"broker {name!r} is used by {used} account(s); remove them first")
        with self._lock:
            self.db.execute("DELETE FROM brokers WHERE name = ?", (name,))

    # -- accounts -------------------------------------------------------------------
    def put_account(self, account_id: str, broker_name: str, account_config: dict) -> dict:
        """Create or replace an account; secret values are encrypted before writing."""
        account_id = str(account_id)
        self._check_name(account_id, "account id")
        self.get_broker(broker_name)
        stored = self.box.encrypt_secrets(account_config)
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO accounts (id, broker_name, account_config) VALUES (?, ?, ?)",
                            (account_id, broker_name, json.dumps(stored)))
        return self.get_account(account_id)

    def get_account(self, account_id: str) -> dict:
        """Return one account with its secrets redacted."""
        row = self.db.execute("SELECT id, broker_name, account_config FROM accounts WHERE id = ?",
                              (str(account_id),)).fetchone()
        if not row:
            raise NotFound(f"unknown account {account_id!r}")
        return {"idAccount": row[0], "brokerName": row[1], "accountConfig": redact(json.loads(row[2]))}

    def list_accounts(self) -> list[dict]:
        """Return every account, secrets redacted."""
        ids = [r[0] for r in self.db.execute("SELECT id FROM accounts ORDER BY id")]
        return [self.get_account(i) for i in ids]

    def remove_account(self, account_id: str) -> None:
        """Remove an account and its mappings."""
        self.get_account(account_id)
        with self._lock:
            self.db.execute("DELETE FROM accounts WHERE id = ?", (str(account_id),))

    # -- mappings -------------------------------------------------------------------
    def set_mapping(self, account_id: str, epic: str, epic_broker: str) -> None:
        """Map a MAOTrade epic to the broker's code for one account."""
        self.get_account(account_id)
        self._check_name(epic, "epic")
        self._check_name(epic_broker, "epicBroker")
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO mappings (account_id, epic, epic_broker) VALUES (?, ?, ?)",
                            (str(account_id), epic, epic_broker))

    def remove_mapping(self, account_id: str, epic: str) -> None:
        """Remove one mapping."""
        with self._lock:
            cur = self.db.execute("DELETE FROM mappings WHERE account_id = ? AND epic = ?", (str(account_id), epic))
        if cur.rowcount == 0:
            raise NotFound(f"account {account_id!r} has no mapping for {epic!r}")

    def mappings(self, account_id: str) -> dict[str, str]:
        """Return an account's epic mapping."""
        self.get_account(account_id)
        return dict(self.db.execute("SELECT epic, epic_broker FROM mappings WHERE account_id = ? ORDER BY epic",
                                    (str(account_id),)).fetchall())

    # -- the served document ------------------------------------------------------------
    def document(self, account_id: str) -> dict:
        """Return the MAOTrade account document, secrets still encrypted."""
        row = self.db.execute(
            "SELECT a.id, b.name, b.broker_class, b.broker_config, a.account_config FROM accounts a"
            " JOIN brokers b ON b.name = a.broker_name WHERE a.id = ?", (str(account_id),)).fetchone()
        if not row:
            raise NotFound(f"unknown account {account_id!r}")
        return {"idAccount": row[0], "brokerName": row[1], "brokerClass": row[2],
                "brokerConfig": json.loads(row[3]), "accountConfig": json.loads(row[4]),
                "epicMapping": self.mappings(account_id)}

    def is_empty(self) -> bool:
        """True when no broker is registered."""
        return self.db.execute("SELECT COUNT(*) FROM brokers").fetchone()[0] == 0

    def seed(self, registry: dict) -> None:
        """Load brokers, accounts and mappings from a registry dict (conf/demo-registry.json)."""
        for broker in registry.get("brokers", []):
            self.put_broker(broker["name"], broker["brokerClass"], broker.get("brokerConfig", {}))
        for account in registry.get("accounts", []):
            self.put_account(account["idAccount"], account["brokerName"], account.get("accountConfig", {}))
            for epic, epic_broker in (account.get("epicMapping") or {}).items():
                self.set_mapping(account["idAccount"], epic, epic_broker)

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    @staticmethod
    def _check_name(value: str, what: str) -> None:
        if not isinstance(value, str) or not value.strip() or len(value) > 128:
            raise ConfigError(f"{what} must be a non-empty string of at most 128 characters")


def open_store(data_dir: Path, box: SecretBox, path: Optional[Path] = None) -> RegistryStore:
    """Open the registry in ``data_dir`` (or at ``path``)."""
    return RegistryStore(path or Path(data_dir) / "registry.sqlite", box)
