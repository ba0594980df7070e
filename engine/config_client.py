"""Fetch and validate account documents from the config service over HTTP."""
from __future__ import annotations

import logging
from typing import Optional

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from maotrade.config import AccountDocument, parse_document
from maotrade.errors import ConfigError, ConfigServiceError
from maotrade.secrets import SecretBox, any_encrypted

log = logging.getLogger(__name__)

CONFIG_URL_ENV = "MAOTRADE_CONFIG_URL"


class ConfigClient:
    """Client of ``GET {config_url}/api/accounts/{id}/config`` with retries and backoff."""

    def __init__(self, base_url: str, retries: int = 3, backoff: float = 0.3, timeout: float = 5.0,
                 token: Optional[str] = None):
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"config URL {base_url!r} must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        retry = Retry(total=retries, connect=retries, read=retries, backoff_factor=backoff,
                      status_forcelist=(502, 503, 504), allowed_methods=frozenset({"GET"}))
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def fetch(self, account_id: str) -> AccountDocument:
        """Return the validated document of ``account_id`` (secrets still encrypted)."""
        url = f"{self.base_url}/api/accounts/{account_id}/config"
        try:
            response = self.session.get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ConfigServiceError(f"config service at {self.base_url} did not answer "
                                     f"({type(exc).__name__}) for account {account_id}") from None
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
    """Return the document as a dict with accountConfig secrets decrypted."""
    data = document.model_dump()
    if any_encrypted(data["accountConfig"]):
        if box is None:
            raise ConfigError(f"account {document.idAccount}: accountConfig holds encrypted values "
                              "but no master key is available (set MAOTRADE_MASTER_KEY)")
        data["accountConfig"] = box.decrypt_all(data["accountConfig"])
    return data
