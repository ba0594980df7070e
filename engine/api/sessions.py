"""Dashboard login: one-time login tokens exchanged for browser sessions.

The console prints a login URL holding a one-time token in its fragment (never sent to
the server by the browser, never in an access log). The page posts it once to
``/ui/api/login`` and gets an HttpOnly session cookie plus a CSRF token that every
action must echo in ``X-CSRF-Token``. The API's bearer token may be posted instead of a
one-time token (a new browser without a fresh console link). All state is in memory:
an engine restart logs every browser out.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

LOGIN_TOKEN_TTL_S = 24 * 3600.0  # an unused login link stops working after a day
SESSION_TTL_S = 12 * 3600.0  # idle time after which a browser must log in again
MAX_SESSIONS = 64  # the oldest session is dropped beyond this


def _digest(token: str) -> str:
    # Only digests are kept: a memory dump does not hand out working tokens.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Session:
    """One logged-in browser."""

    csrf: str
    expires: float


class LoginManager:
    """One-time login tokens, sessions and their CSRF tokens (thread-safe)."""

    def __init__(self, api_token: str, clock: Callable[[], float] = time.monotonic):
        self._api_token = api_token
        self._clock = clock
        self._lock = threading.Lock()
        self._login_tokens: dict[str, float] = {}  # digest -> expiry
        self._sessions: dict[str, Session] = {}  # digest of session id -> session

    def new_login_token(self) -> str:
        """Make a token that logs one browser in once, within ``LOGIN_TOKEN_TTL_S``."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._login_tokens[_digest(token)] = self._clock() + LOGIN_TOKEN_TTL_S
        return token

    def login(self, token: str) -> Optional[tuple[str, str]]:
        """Spend a login token (or check the API token); return ``(session_id, csrf)`` or None."""
        if not token:
            return None
        now = self._clock()
        with self._lock:
            expiry = self._login_tokens.pop(_digest(token), None)
            valid = (expiry is not None and expiry > now) or hmac.compare_digest(token.encode(),
                                                                                 self._api_token.encode())
            if not valid:
                return None
            session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
            self._sessions[_digest(session_id)] = Session(csrf, now + SESSION_TTL_S)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
            return session_id, csrf

    def session(self, session_id: Optional[str]) -> Optional[Session]:
        """The live session of a cookie value (its idle timer restarts), or None."""
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            key = _digest(session_id)
            found = self._sessions.get(key)
            if found is None or found.expires <= now:
                self._sessions.pop(key, None)
                return None
            found.expires = now + SESSION_TTL_S
            return found

    def check_csrf(self, session_id: Optional[str], csrf: Optional[str]) -> bool:
        """True when ``csrf`` is the token of the cookie's live session."""
        found = self.session(session_id)
        return found is not None and bool(csrf) and hmac.compare_digest(found.csrf.encode(), csrf.encode())

    def logout(self, session_id: Optional[str]) -> None:
        """End a session."""
        if session_id:
            with self._lock:
                self._sessions.pop(_digest(session_id), None)
