"""Secrets: encryption at rest (Fernet), recognising secret keys, and redaction.

Encrypted values are strings ``enc:v1:<fernet token>``; anything else is a plain value.
The master key is a Fernet key (urlsafe base64 of 32 bytes) kept in a file with 0600
permissions or given in ``MAOTRADE_MASTER_KEY``.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, Iterable

from cryptography.fernet import Fernet, InvalidToken

from maotrade.errors import ConfigError

ENCRYPTED_PREFIX = "enc:v1:"
MASTER_KEY_ENV = "MAOTRADE_MASTER_KEY"
REDACTED = "***"
# Keys whose values are secrets wherever they appear in a config document.
_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|api_?key|private_?key|credential)", re.I)


def is_secret_key(name: str) -> bool:
    """Return True if a config key by this name holds a secret."""
    return bool(_SECRET_KEY.search(name))


def is_encrypted(value: Any) -> bool:
    """Return True if ``value`` is an encrypted string made by ``SecretBox``."""
    return isinstance(value, str) and value.startswith(ENCRYPTED_PREFIX)


def load_or_create_key(path: Path) -> bytes:
    """Return the master key at ``path``, creating it with 0600 permissions if absent."""
    env = os.environ.get(MASTER_KEY_ENV)
    if env:
        return env.encode()
    path = Path(path)
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"master key file {path} is readable by others (mode {mode:o}); chmod 600 it")
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


class SecretBox:
    """Encrypt and decrypt config values with the operator's master key."""

    def __init__(self, key: bytes):
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ConfigError("master key is not a valid Fernet key (44 urlsafe base64 characters)") from exc

    def encrypt(self, value: str) -> str:
        """Return ``value`` encrypted, or unchanged if it already is."""
        if is_encrypted(value):
            return value
        return ENCRYPTED_PREFIX + self._fernet.encrypt(str(value).encode()).decode()

    def decrypt(self, value: Any, key_name: str = "value") -> Any:
        """Return the plain value of ``value``; plain values pass through unchanged."""
        if not is_encrypted(value):
            return value
        try:
            return self._fernet.decrypt(value[len(ENCRYPTED_PREFIX):].encode()).decode()
        except InvalidToken as exc:
            raise ConfigError(f"{key_name}: cannot decrypt (wrong master key or corrupted value)") from exc

    def encrypt_secrets(self, config: dict) -> dict:
        """Return a copy of ``config`` with every secret key's value encrypted."""
        return {k: (self.encrypt(v) if is_secret_key(k) and isinstance(v, str) else v) for k, v in config.items()}

    def decrypt_all(self, config: dict, where: str = "accountConfig") -> dict:
        """Return a copy of ``config`` with every encrypted value decrypted."""
        return {k: self.decrypt(v, f"{where}.{k}") for k, v in config.items()}


def redact(value: Any) -> Any:
    """Return ``value`` with every secret key's value replaced by ``***`` (recursively)."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v not in (None, "")
                    else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def secret_values(config: dict) -> Iterable[str]:
    """Yield the plain secret values of a config dict (for the log redaction filter)."""
    for key, value in config.items():
        if isinstance(key, str) and is_secret_key(key) and isinstance(value, str) and len(value) >= 4:
            yield value


def any_encrypted(config: dict) -> bool:
    """Return True if any value of ``config`` is encrypted."""
    return any(is_encrypted(v) for v in config.values())

