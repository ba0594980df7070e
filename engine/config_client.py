"""Fetch and validate account documents from the config service over HTTP(S).

The engine authenticates with the read token (``MAOTRADE_CONFIG_TOKEN`` or the
``config.token`` file in its data dir) and requires ``https://`` unless the service is on
loopback; ``ca_file`` pins the CA that must have signed the service's certificate.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from maotrade.config import AccountDocument, is_loopback_host, parse_document
from maotrade.errors import ConfigError, ConfigServiceError
from maotrade.log import register_secret
from maotrade.secrets import SecretBox, any_encrypted, secret_values

log = logging.getLogger(__name__)

CONFIG_URL_ENV = "MAOTRADE_CONFIG_URL"
TOKEN_ENV = "MAOTRADE_CONFIG_TOKEN"
TOKEN_FILE = "config.token"
# brokerConfig keys that decide where credentials go: hosts, ports, URLs.
_WHERE_WORDS = ("host", "port", "endpoint", "url", "server", "tls")


def load_config_token(data_dir: Path) -> Optional[str]:
    """The read token for the config service: ``MAOTRADE_CONFIG_TOKEN`` or ``config.token`` (0600)."""
    import os

    from engine.http_guard import check_token, load_or_create_token

    if os.environ.get(TOKEN_ENV) is not None:
        return check_token(os.environ[TOKEN_ENV], TOKEN_ENV)
    path = Path(data_dir) / TOKEN_FILE
    return load_or_create_token(path, TOKEN_ENV) if path.exists() else None


class ConfigClient:
    """Client of ``GET {config_url}/api/accounts/{id}/config`` with retries and backoff."""

    def __init__(self, base_url: str, retries: int = 3, backoff: float = 0.3, timeout: float = 5.0,
                 token: Optional[str] = None, ca_file: Optional[str] = None):
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"config URL {base_url!r} must start with http:// or https://")
        host = urlsplit(base_url).hostname or ""
        if base_url.startswith("http://") and not is_loopback_host(host):
            raise ConfigError(f"config URL {base_url!r} must use https:// off loopback (the document decides "
                              "where broker credentials are sent)")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        retry = Retry(total=retries, connect=retries, read=retries, backoff_factor=backoff,
                      status_forcelist=(502, 503, 504), allowed_methods=frozenset({"GET"}))
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        if ca_file:
            self.session.verify = str(ca_file)

    def fetch(self, account_id: str) -> AccountDocument:
        """Return the validated document of ``account_id`` (secrets still encrypted)."""
        url = f"{self.base_url}/api/accounts/{account_id}/config"
        try:
            response = self.session.get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ConfigServiceError(f"config service at {self.base_url} did not answer "
                                     f"({type(exc).__name__}) for account {account_id}") from None
        if response.status_code == 401:
            raise ConfigError(f"config service at {self.base_url} refused the read token (set {TOKEN_ENV} "
                              f"or put the service's {TOKEN_FILE} in the engine's data dir)")
        if response.status_code == 404:
            raise ConfigError(f"unknown account {account_id} at config service {self.base_url}")
        if response.status_code != 200:
            raise ConfigServiceError(f"config service answered HTTP {response.status_code} for account {account_id}")
        try:
            data = response.json()
        except ValueError:
            raise ConfigError(f"config service sent a non-JSON document for account {account_id}") from None
        document = parse_document(data, f"account {account_id}")
        if document.idAccount != str(account_id):
            raise ConfigError(f"config service sent account {document.idAccount} when asked for {account_id}")
        return document

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()


def decrypted_config(document: AccountDocument, box: Optional[SecretBox]) -> dict:
    """Return the document as a dict with accountConfig secrets decrypted, each secret
    registered for redaction (in logs, and at every boundary a message crosses)."""
    data = document.model_dump()
    stored = data["accountConfig"]
    if any_encrypted(stored):
        if box is None:
            raise ConfigError(f"account {document.idAccount}: accountConfig holds encrypted values "
                              "but no master key is available (set MAOTRADE_MASTER_KEY)")
        data["accountConfig"] = box.decrypt_all(stored, document.idAccount)
    for value in secret_values(data["accountConfig"], stored):
        register_secret(value, scope=document.idAccount)
    return data


def security_fingerprint(document: dict) -> tuple[str, dict]:
    """A short hash of what decides where an account's credentials go (broker class and the
    brokerConfig hosts, ports and URLs), and those settings themselves."""
    config = document.get("brokerConfig") or {}
    relevant = {"brokerClass": document.get("brokerClass"),
                **{k: v for k, v in sorted(config.items()) if any(w in k.lower() for w in _WHERE_WORDS)}}
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return digest, relevant


def check_fingerprint(document: dict, data_dir: Path) -> Optional[str]:
    """Log the account's security fingerprint; warn (and return the old one) when it changed
    since the last start on this data dir."""
    digest, relevant = security_fingerprint(document)
    account = str(document.get("idAccount"))
    path = Path(data_dir) / "fingerprints.json"
    known = {}
    if path.exists():
        try:
            known = json.loads(path.read_text())
        except ValueError:
            known = {}
    previous = known.get(account)
    log.info("event=account_fingerprint account=%s fingerprint=%s settings=%s", account, digest,
             json.dumps(relevant, sort_keys=True, default=str))
    if previous and previous.get("fingerprint") != digest:
        log.warning("event=account_settings_changed account=%s was=%s now=%s before=%s after=%s", account,
                    previous.get("fingerprint"), digest, json.dumps(previous.get("settings"), sort_keys=True),
                    json.dumps(relevant, sort_keys=True, default=str))
    known[account] = {"fingerprint": digest, "settings": relevant}
    path.write_text(json.dumps(known, indent=1, sort_keys=True, default=str))
    return previous.get("fingerprint") if previous and previous.get("fingerprint") != digest else None
