"""The registry behind the admin/config service, in SQLite.

Secret values in an account's config are encrypted with the operator's master key,
bound to their account and field, before they are written, and stay encrypted in the
served document; the engine decrypts them with the same key. Secret are the fields the
broker's settings model declares ``SecretStr`` and every secret-named key at any depth.
A broker class must be on this service's allowlist and load; an account's config must
fit its broker's settings model (an unknown key is refused, named). Every write is
recorded in the audit table: who, what, when.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Optional

from engine.sqlite_tx import transaction
from maotrade.account_manager import ENGINE_KEYS  # accountConfig keys the engine reads itself
from maotrade.config import AccountDocument, parse_settings, secret_fields
from maotrade.errors import BrokerClassError, ConfigError
from maotrade.log import MIN_SECRET_LENGTH
from maotrade.secrets import SecretBox, redact, secret_values

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
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


class NotFound(LookupError):
    """The named broker, account or mapping does not exist."""


class Conflict(ValueError):
    """The write would break the registry (e.g. removing a broker that accounts use)."""


class RegistryStore:
    """Brokers, accounts and epic mappings; safe to share between threads."""

    def __init__(self, path: Path, box: SecretBox, allow: Iterable[str] = ()):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.box = box
        self.allow = tuple(allow)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)

    @contextlib.contextmanager
    def _write(self):
        """One transaction under the lock: a change and its audit record commit together."""
        with self._lock, transaction(self.db):
            yield

    # -- brokers --------------------------------------------------------------------
    def put_broker(self, name: str, broker_class: str, broker_config: dict, actor: str = "unknown") -> dict:
        """Create or replace a broker; its class must be allowed here and load."""
        self._check_name(name, "broker name")
        AccountDocument(idAccount="check", brokerName=name, brokerClass=broker_class,
                        brokerConfig=broker_config)
        cls = self._broker_class(broker_class)
        parse_settings(cls.settings_model, broker_config, f"broker {name} brokerConfig")
        with self._write():
            self.db.execute("INSERT INTO brokers (name, broker_class, broker_config) VALUES (?, ?, ?)"
                            " ON CONFLICT (name) DO UPDATE SET broker_class = excluded.broker_class,"
                            " broker_config = excluded.broker_config",
                            (name, broker_class, json.dumps(broker_config)))
            self._audit(actor, "put_broker", name, {"brokerClass": broker_class, "brokerConfig": broker_config})
        return self.get_broker(name)

    def _broker_class(self, broker_class: str):
        from engine.loader import load_broker_class  # the allowlist is checked before any import

        try:
            return load_broker_class(broker_class, self.allow)
        except BrokerClassError as exc:
            raise ConfigError(str(exc)) from None

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

    def remove_broker(self, name: str, actor: str = "unknown") -> None:
        """Remove a broker no account uses."""
        self.get_broker(name)
        used = self.db.execute("SELECT COUNT(*) FROM accounts WHERE broker_name = ?", (name,)).fetchone()[0]
        if used:
            raise Conflict(f"broker {name!r} is used by {used} account(s); remove them first")
        with self._write():
            self.db.execute("DELETE FROM brokers WHERE name = ?", (name,))
            self._audit(actor, "remove_broker", name, {})

    # -- accounts -------------------------------------------------------------------
    def put_account(self, account_id: str, broker_name: str, account_config: dict, actor: str = "unknown") -> dict:
        """Create or replace an account; its config must fit the broker's settings model, and
        secret values are encrypted (bound to this account and field) before writing."""
        account_id = str(account_id)
        self._check_name(account_id, "account id")
        broker = self.get_broker(broker_name)
        cls = self._broker_class(broker["brokerClass"])
        declared: set[str] = set()
        if cls.account_settings_model is not None:
            own = {k: v for k, v in account_config.items() if k not in ENGINE_KEYS}
            parse_settings(cls.account_settings_model, own, f"account {account_id} accountConfig")
            declared = set(secret_fields(cls.account_settings_model))
        stored = self.box.encrypt_secrets(account_config, account_id, declared | {"webhook_secret"})
        for value in secret_values(account_config, stored):
            if len(value) < MIN_SECRET_LENGTH:
                raise ConfigError(f"account {account_id} accountConfig: a secret is shorter than "
                                  f"{MIN_SECRET_LENGTH} characters")
        with self._write():
            # An upsert, not REPLACE: a replaced row would take its mappings with it (cascade).
            self.db.execute("INSERT INTO accounts (id, broker_name, account_config) VALUES (?, ?, ?)"
                            " ON CONFLICT (id) DO UPDATE SET broker_name = excluded.broker_name,"
                            " account_config = excluded.account_config",
                            (account_id, broker_name, json.dumps(stored)))
            self._audit(actor, "put_account", account_id, {"brokerName": broker_name,
                                                           "accountConfig": redact(stored)})
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

    def remove_account(self, account_id: str, actor: str = "unknown") -> None:
        """Remove an account and its mappings."""
        self.get_account(account_id)
        with self._write():
            self.db.execute("DELETE FROM accounts WHERE id = ?", (str(account_id),))
            self._audit(actor, "remove_account", str(account_id), {})

    # -- mappings -------------------------------------------------------------------
    def set_mapping(self, account_id: str, epic: str, epic_broker: str, actor: str = "unknown") -> None:
        """Map a MAOTrade epic to the broker's code for one account."""
        self.get_account(account_id)
        self._check_name(epic, "epic")
        self._check_name(epic_broker, "epicBroker")
        with self._write():
            self.db.execute("INSERT OR REPLACE INTO mappings (account_id, epic, epic_broker) VALUES (?, ?, ?)",
                            (str(account_id), epic, epic_broker))
            self._audit(actor, "set_mapping", f"{account_id}/{epic}", {"epicBroker": epic_broker})

    def remove_mapping(self, account_id: str, epic: str, actor: str = "unknown") -> None:
        """Remove one mapping."""
        with self._write():
            cur = self.db.execute("DELETE FROM mappings WHERE account_id = ? AND epic = ?", (str(account_id), epic))
            if cur.rowcount:
                self._audit(actor, "remove_mapping", f"{account_id}/{epic}", {})
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

    # -- audit ------------------------------------------------------------------------------
    def _audit(self, actor: str, action: str, target: str, detail: dict) -> None:
        self.db.execute("INSERT INTO audit (at_ms, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                        (int(time.time() * 1000), actor, action, target, json.dumps(redact(detail))))

    def audit_log(self, limit: int = 100, target: Optional[str] = None) -> list[dict]:
        """The latest writes, newest first: who, what, when (secrets never recorded)."""
        query = "SELECT id, at_ms, actor, action, target, detail FROM audit"
        args: tuple = ()
        if target:
            query += " WHERE target = ? OR target LIKE ?"
            args = (target, f"{target}/%")
        rows = self.db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, int(limit))).fetchall()
        return [{"id": r[0], "at_ms": r[1], "actor": r[2], "action": r[3], "target": r[4],
                 "detail": json.loads(r[5])} for r in rows]

    def is_empty(self) -> bool:
        """True when no broker is registered."""
        return self.db.execute("SELECT COUNT(*) FROM brokers").fetchone()[0] == 0

    def seed(self, registry: dict, actor: str = "seed") -> None:
        """Load brokers, accounts and mappings from a registry dict (conf/demo-registry.json)."""
        for broker in registry.get("brokers", []):
            self.put_broker(broker["name"], broker["brokerClass"], broker.get("brokerConfig", {}), actor)
        for account in registry.get("accounts", []):
            self.put_account(account["idAccount"], account["brokerName"], account.get("accountConfig", {}), actor)
            for epic, epic_broker in (account.get("epicMapping") or {}).items():
                self.set_mapping(account["idAccount"], epic, epic_broker, actor)

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    @staticmethod
    def _check_name(value: str, what: str) -> None:
        if not isinstance(value, str) or not value.strip() or len(value) > 128:
            raise ConfigError(f"{what} must be a non-empty string of at most 128 characters")


def open_store(data_dir: Path, box: SecretBox, path: Optional[Path] = None, allow: Iterable[str] = ()) -> RegistryStore:
    """Open the registry in ``data_dir`` (or at ``path``); ``allow`` extends the broker class allowlist."""
    return RegistryStore(path or Path(data_dir) / "registry.sqlite", box, allow)
