"""Secrets: encryption at rest (AES-GCM bound to where the value lives), secret keys, redaction.

An encrypted value is the string ``enc:v2:<urlsafe base64 of nonce + ciphertext>``. The
plaintext is the JSON of the original value (any type), and the associated data is the
place it belongs to: ``account id`` and ``field path`` (``accountConfig.credentials``).
A ciphertext copied to another account or field, or made with another key, does not
decrypt. The master key is a 32-byte key in urlsafe base64 (the Fernet format, so
existing keys keep working) kept in a 0600 file or given in ``MAOTRADE_MASTER_KEY``;
the AES key is derived from it with HKDF.

Which values are secret: the fields a broker's settings model declares as ``SecretStr``,
and any key whose name looks secret (``SECRET_KEY_PATTERN``), with everything below it.
"""
from __future__ import annotations

import base64
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, Iterable, Optional

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from maotrade.errors import ConfigError

ENCRYPTED_PREFIX = "enc:v2:"
LEGACY_PREFIX = "enc:v1:"
MASTER_KEY_ENV = "MAOTRADE_MASTER_KEY"
REDACTED = "***"
# A key is secret if one of its words (split at '_', '-', '.' and camelCase humps) is one
# of these: ``apiKey``, ``access_key_id``, ``totp_seed``, ``client_cert_pem`` all are.
SECRET_WORDS = frozenset({"password", "passwd", "pass", "passcode", "passphrase", "pwd", "secret", "secrets",
                          "token", "key", "apikey", "pin", "otp", "totp", "session", "cookie", "bearer", "auth",
                          "authorization", "jwt", "cert", "credential", "credentials", "private"})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_NONCE_BYTES = 12


def is_secret_key(name: str) -> bool:
    """Return True if a config key by this name holds a secret."""
    return any(word.lower() in SECRET_WORDS for word in _WORD.findall(str(name)))


def is_encrypted(value: Any) -> bool:
    """Return True if ``value`` is an encrypted string (of any version)."""
    return isinstance(value, str) and value.startswith((ENCRYPTED_PREFIX, LEGACY_PREFIX))


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


def _aad(account: str, field: str) -> bytes:
    return json.dumps(["maotrade-secret", 2, str(account), field]).encode()


class SecretBox:
    """Encrypt and decrypt config values with the operator's master key, each bound to
    its (account, field)."""

    def __init__(self, key: bytes):
        try:
            raw = base64.urlsafe_b64decode(key)
        except (ValueError, TypeError) as exc:
            raise ConfigError("master key is not a valid key (44 urlsafe base64 characters)") from exc
        if len(raw) != 32:
            raise ConfigError("master key is not a valid key (44 urlsafe base64 characters)")
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"maotrade config secrets v2").derive(raw)
        self._aead = AESGCM(derived)

    def encrypt(self, value: Any, account: str, field: str) -> str:
        """Return ``value`` (any JSON value) encrypted for ``field`` of ``account``."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, json.dumps(value).encode(), _aad(account, field))
        return ENCRYPTED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, value: Any, account: str, field: str) -> Any:
        """Return the plain value of ``value`` stored at ``field`` of ``account``; plain values pass."""
        if not is_encrypted(value):
            return value
        if value.startswith(LEGACY_PREFIX):
            raise ConfigError(f"account {account} {field}: an enc:v1 value is not bound to its account; "
                              "register the account again with the plain value")
        try:
            blob = base64.urlsafe_b64decode(value[len(ENCRYPTED_PREFIX):])
            plain = self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _aad(account, field))
            return json.loads(plain)
        except (InvalidTag, ValueError) as exc:
            raise ConfigError(f"account {account} {field}: cannot decrypt (encrypted for another account or "
                              "field, wrong master key, or corrupted)") from exc

    def encrypt_secrets(self, config: dict, account: str, secret_fields: Iterable[str] = (),
                        where: str = "accountConfig") -> dict:
        """Return a copy of ``config`` with every secret encrypted: the top-level
        ``secret_fields``, and at any depth every key that ``is_secret_key`` (its whole value)."""
        declared = set(secret_fields)

        def walk(value: Any, path: str, depth: int) -> Any:
            if depth > 32:
                raise ConfigError(f"{path}: nested too deep")
            if isinstance(value, dict):
                out = {}
                for key, item in value.items():
                    child = f"{path}.{key}"
                    if is_encrypted(item):
                        raise ConfigError(f"{child}: encrypted values cannot be submitted; send the plain value")
                    secret = (depth == 0 and key in declared) or (isinstance(key, str) and is_secret_key(key))
                    out[key] = (self.encrypt(item, account, child) if secret and item not in (None, "")
                                else walk(item, child, depth + 1))
                return out
            if isinstance(value, list):
                return [walk(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
            if is_encrypted(value):
                raise ConfigError(f"{path}: encrypted values cannot be submitted; send the plain value")
            return value

        return walk(config, where, 0)

    def decrypt_all(self, config: dict, account: str, where: str = "accountConfig") -> dict:
        """Return a copy of ``config`` with every encrypted value (at any depth) decrypted."""

        def walk(value: Any, path: str) -> Any:
            if isinstance(value, dict):
                return {k: walk(v, f"{path}.{k}") for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
            return self.decrypt(value, account, path)

        return walk(config, where)


def redact(value: Any) -> Any:
    """Return ``value`` with every secret key's value, and every encrypted value, replaced by ``***``."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v not in (None, "")
                    else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if is_encrypted(value):
        return REDACTED
    return value


def secret_values(config: dict, encrypted: Optional[dict] = None) -> Iterable[str]:
    """Yield every plain secret of a config dict (for redaction): values under secret keys at
    any depth, and every value that was encrypted in ``encrypted`` (the stored form)."""

    def leaves(value: Any):
        if isinstance(value, dict):
            for item in value.values():
                yield from leaves(item)
        elif isinstance(value, list):
            for item in value:
                yield from leaves(item)
        elif value is not None and not isinstance(value, bool):
            yield str(value)

    def walk(plain: Any, stored: Any):
        if isinstance(plain, dict):
            for key, item in plain.items():
                stored_item = stored.get(key) if isinstance(stored, dict) else None
                if (isinstance(key, str) and is_secret_key(key)) or is_encrypted(stored_item):
                    yield from leaves(item)
                else:
                    yield from walk(item, stored_item)
        elif isinstance(plain, list):
            for i, item in enumerate(plain):
                yield from walk(item, stored[i] if isinstance(stored, list) and i < len(stored) else None)

    yield from walk(config, encrypted)


def any_encrypted(config: Any) -> bool:
    """Return True if any value of ``config`` (at any depth) is encrypted."""
    if isinstance(config, dict):
        return any(any_encrypted(v) for v in config.values())
    if isinstance(config, list):
        return any(any_encrypted(v) for v in config)
    return is_encrypted(config)
