"""IG's REST trading API over ``requests``: session tokens, re-login, throttle, errors.

Every call carries ``X-IG-API-KEY``, ``CST`` and ``X-SECURITY-TOKEN``. When IG says a
token is invalid or expired the client logs in again (and switches back to the
configured account) and repeats the call once: IG refused it before acting on it, so
repeating it cannot duplicate a deal. Methods block; the manager runs them through
``run_blocking``.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional

import requests

from account_managers.ig.parsing import ALLOWANCE_ERRORS, AUTH_ERRORS, TOKEN_ERRORS, error_code
from account_managers.ig.throttle import NON_TRADING, TRADING, Throttle
from maotrade.errors import AuthenticationError, BrokerUnavailable, MAOTradeError
from maotrade.log import register_secret

log = logging.getLogger(__name__)


class IGApiError(MAOTradeError):
    """IG answered a request with an error body; ``code`` is IG's ``errorCode``."""

    def __init__(self, method: str, path: str, status: int, code: str):
        super().__init__(f"IG {method} {path} failed: HTTP {status} {code or 'without errorCode'}")
        self.status = status
        self.code = code


class IGSession:
    """What a login returned: tokens, the account in use and the streaming endpoint."""

    def __init__(self, cst: str, xst: str, account_id: str, lightstreamer_endpoint: str, accounts: list):
        self.cst, self.xst = cst, xst
        self.account_id = account_id
        self.lightstreamer_endpoint = lightstreamer_endpoint
        self.accounts = accounts

    @property
    def stream_password(self) -> str:
        """Lightstreamer password IG expects: ``CST-{cst}|XST-{xst}``."""
        return f"CST-{self.cst}|XST-{self.xst}"

    def __repr__(self) -> str:
        return f"IGSession(account_id={self.account_id!r}, tokens=***)"


class IGRestClient:
    """Blocking client of one IG account's REST session."""

    def __init__(self, base_url: str, user: str, password: str, api_key: str, account_id: str,
                 timeout: float, throttle: Throttle,
                 on_session: Optional[Callable[[IGSession], None]] = None):
        self.base_url = base_url.rstrip("/")
        self._user, self._password, self._api_key = user, password, api_key
        self.account_id = account_id
        self.timeout = timeout
        self.throttle = throttle
        self.on_session = on_session
        self.session: Optional[IGSession] = None
        self.logins = 0
        self._http = requests.Session()
        self._login_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"IGRestClient(base_url={self.base_url!r}, account_id={self.account_id!r}, password=***)"

    # -- session --------------------------------------------------------------------
    def login(self) -> IGSession:
        """POST /session (v2), then switch to ``account_id`` if IG chose another account."""
        with self._login_lock:
            return self._login()

    def _login(self) -> IGSession:
        self.throttle.acquire(NON_TRADING, self.timeout)
        response = self._send("POST", "/session", 2, {"identifier": self._user, "password": self._password},
                              auth=False)
        body = _body(response)
        if response.status_code != 200:
            code = error_code(body)
            if code in AUTH_ERRORS or response.status_code in (401, 403):
                raise AuthenticationError(f"IG login of user {self._user!r} refused: {code or response.status_code}")
            raise BrokerUnavailable(f"IG login failed: HTTP {response.status_code} {code}")
        cst, xst = response.headers.get("CST"), response.headers.get("X-SECURITY-TOKEN")
        if not cst or not xst or not isinstance(body, dict):
            raise BrokerUnavailable("IG login answered without CST / X-SECURITY-TOKEN")
        register_secret(cst)
        register_secret(xst)
        accounts = [a.get("accountId") for a in body.get("accounts") or []]
        session = IGSession(cst, xst, str(body.get("currentAccountId")),
                            str(body.get("lightstreamerEndpoint") or ""), accounts)
        self.session = session
        self.logins += 1
        if session.account_id != self.account_id:
            if self.account_id not in accounts:
                raise AuthenticationError(f"IG user {self._user!r} has no account {self.account_id!r} "
                                          f"(has {', '.join(map(str, accounts)) or 'none'})")
            self._call("PUT", "/session", 1, {"accountId": self.account_id, "defaultAccount": False},
                       NON_TRADING, relogin=False)
            session.account_id = self.account_id
        log.info("event=ig_login account=%s logins=%d", self.account_id, self.logins)
        if self.on_session:
            self.on_session(session)
        return session

    def logout(self) -> None:
        """DELETE /session; errors are ignored (the tokens expire by themselves)."""
        if self.session is None:
            return
        try:
            self._send("DELETE", "/session", 1, None)
        except (requests.RequestException, OSError):
            pass  # logout on shutdown is a courtesy: the session expires at IG anyway
        self.session = None

    # -- calls ----------------------------------------------------------------------
    def get(self, path: str, version: int = 1) -> Any:
        """GET a non-trading resource."""
        return self._call("GET", path, version, None, NON_TRADING)

    def deal(self, method: str, path: str, version: int, body: dict) -> Any:
        """Send a trading request (POST/PUT/DELETE of a deal or working order)."""
        return self._call(method, path, version, body, TRADING)

    def _call(self, method: str, path: str, version: int, body: Optional[dict], kind: str,
              relogin: bool = True) -> Any:
        self.throttle.acquire(kind, self.timeout)
        tokens = self.session
        response = self._send(method, path, version, body)
        code = error_code(_body(response))
        if response.status_code in (401, 403) and code in TOKEN_ERRORS and relogin:
            log.info("event=ig_token_invalid account=%s code=%s action=relogin", self.account_id, code)
            with self._login_lock:
                if self.session is tokens:  # nobody logged in again meanwhile
                    self._login()
            self.throttle.acquire(kind, self.timeout)
            response = self._send(method, path, version, body)
            code = error_code(_body(response))
        if response.status_code >= 500:
            raise BrokerUnavailable(f"IG {method} {path}: HTTP {response.status_code} {code}".rstrip())
        if response.status_code >= 400:
            if code in TOKEN_ERRORS or code in AUTH_ERRORS:
                raise BrokerUnavailable(f"IG {method} {path}: session refused ({code})")
            raise IGApiError(method, path, response.status_code, code)
        if code in ALLOWANCE_ERRORS:
            raise IGApiError(method, path, response.status_code, code)
        return _body(response)

    def _send(self, method: str, path: str, version: int, body: Optional[dict],
              auth: bool = True) -> requests.Response:
        headers = {"X-IG-API-KEY": self._api_key, "Version": str(version),
                   "Accept": "application/json; charset=UTF-8",
                   "Content-Type": "application/json; charset=UTF-8"}
        if auth and self.session is not None:
            headers["CST"] = self.session.cst
            headers["X-SECURITY-TOKEN"] = self.session.xst
        http_method = method
        if method == "DELETE" and body is not None:
            # IG takes a DELETE with a body as a POST carrying "_method: DELETE".
            headers["_method"] = "DELETE"
            http_method = "POST"
        try:
            return self._http.request(http_method, self.base_url + path, json=body, headers=headers,
                                      timeout=self.timeout)
        except (requests.RequestException, OSError) as exc:
            raise BrokerUnavailable(f"IG {method} {path}: {type(exc).__name__}") from exc

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._http.close()


def _body(response: requests.Response) -> Any:
    if not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        return {"errorCode": f"non-JSON answer ({response.status_code})"}
