"""Kite sessions: the daily request-token exchange and the hand-over of a new access token.

Kite access tokens expire every morning (around 06:00 IST); a person logs in in a browser
and gets a request token, which ``maotrade admin account kite-login`` exchanges (with the
app's API secret) for the day's access token. That command stores the token encrypted in
the registry (for the next start) and also leaves it, sealed with a key derived from the
API secret, in the account's token file under the data dir, where a running worker whose
token expired picks it up without a restart. Only a holder of the API secret can read it.
"""
from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Optional

from cryptography.fernet import Fernet, InvalidToken
from kiteconnect import KiteConnect

from account_managers.kite.parsing import translate_error

_KEY_CONTEXT = b"maotrade kite access token v1\x00"


def token_path(data_dir: Path, account_id: str) -> Path:
    """The token file of one account."""
    return Path(data_dir) / "kite" / f"account-{account_id}.token"


def _box(api_secret: str) -> Fernet:
    digest = hashlib.sha256(_KEY_CONTEXT + api_secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def write_token(path: Path, api_secret: str, access_token: str) -> None:
    """Seal ``access_token`` into ``path`` (mode 0600, replaced atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(_box(api_secret).encrypt(access_token.encode()))
    os.replace(partial, path)


def read_token(path: Path, api_secret: str) -> Optional[str]:
    """The access token sealed in ``path``, or None if there is none (or not ours)."""
    try:
        sealed = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return _box(api_secret).decrypt(sealed).decode()
    except InvalidToken:
        return None  # sealed for another API secret: not a token for this account


def exchange_request_token(api_root: str, api_key: str, api_secret: str, request_token: str,
                           timeout: float = 10.0) -> dict:
    """Exchange a request token for a session (``access_token``, ``user_id``, ...).

    Raises the translated MAOTrade error (``TokenExpired`` for a used or stale request
    token, ``AuthenticationError`` for a bad checksum or key).
    """
    client = KiteConnect(api_key, root=api_root, timeout=timeout)
    try:
        return client.generate_session(request_token, api_secret=api_secret)
    except Exception as exc:  # any failure of the library is translated at this boundary
        raise translate_error(exc, "Kite login") from exc
