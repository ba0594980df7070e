"""What both REST services (the engine API and the admin service) check before a route runs.

- ``BodyLimit``: a request body over the limit is answered 413 before it is buffered:
  from ``Content-Length`` at once, and by counting while it streams in.
- ``BearerGate``: the bearer token is checked before anything reads the body, so an
  unauthenticated client cannot make the server parse anything.
- ``HostAllowlist``: only the expected ``Host`` headers are served (DNS rebinding).
- ``harden``: 4xx, never 500, for NaN/Infinity and deeply nested JSON; offline ``/docs``;
  the bearer scheme declared in the OpenAPI document.
- Tokens: at least ``MIN_TOKEN_BYTES`` long, files 0600, created atomically.
"""
from __future__ import annotations

import hmac
import json
import math
import os
import secrets
import stat
from pathlib import Path
from typing import Iterable, Optional

from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from maotrade.errors import ConfigError

MAX_BODY_BYTES = 64 * 1024
MIN_TOKEN_BYTES = 32
# uvicorn answers 503 beyond this many connections in flight.
LIMIT_CONCURRENCY = 64
DOCS_STATIC = "/docs-static"


# -- tokens ------------------------------------------------------------------------------
def check_token(token: str, where: str) -> str:
    """Return ``token`` if it is long enough to guard a service; raise ``ConfigError`` if not."""
    if len(token.encode()) < MIN_TOKEN_BYTES:
        raise ConfigError(f"{where} is {'empty' if not token else 'too short'}: a token needs at least "
                          f"{MIN_TOKEN_BYTES} bytes (delete the file to have a new one made)")
    return token


def load_or_create_token(path: Path, env_name: str) -> str:
    """Return the token from ``env_name`` or ``path``; make a new one (0600) if neither exists.

    A token file readable by group or others, or a token under ``MIN_TOKEN_BYTES``, is
    refused: an empty file must never mean "no authentication".
    """
    env = os.environ.get(env_name)
    if env is not None:
        return check_token(env, env_name)
    path = Path(path)
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"token file {path} is readable by others (mode {mode:o}); chmod 600 it")
        return check_token(path.read_text().strip(), f"token file {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # Written whole to a private temporary file, then renamed: no reader ever sees it empty.
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
        fh.flush()
        os.fsync(fh.fileno())
    os.link(partial, path)  # fails if another process made the token first
    partial.unlink()
    return token


def token_matches(authorization: str, token: str) -> bool:
    """True if an ``Authorization`` header carries ``Bearer <token>``."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and bool(given) and hmac.compare_digest(given.strip().encode(), token.encode())


# -- ASGI middleware ---------------------------------------------------------------------
async def _answer(send, status: int, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(HTTPException):
    """The client sent more than the body limit (an HTTP error, so a route reading the body
    answers 413 through the framework's own handling)."""

    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=f"body over {limit} bytes")


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` (413) without buffering them."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await _answer(send, 400, "bad Content-Length")
                if declared > self.max_bytes:
                    return await _answer(send, 413, f"body over {self.max_bytes} bytes")
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await _answer(send, 413, f"body over {self.max_bytes} bytes")


class BearerGate:
    """Answer 401 to any request outside ``open_paths`` that lacks a valid bearer token,
    before the route (or anything else) reads its body. ``read_tokens`` are accepted for
    GET and HEAD only."""

    def __init__(self, app, token: str, open_paths: Iterable[str] = (), open_prefixes: Iterable[str] = (),
                 read_tokens: Iterable[str] = (), realm: str = "API"):
        self.app, self.token, self.realm = app, token, realm
        self.read_tokens = tuple(read_tokens)
        self.open_paths = frozenset(open_paths)
        self.open_prefixes = tuple(open_prefixes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if path in self.open_paths or (self.open_prefixes and path.startswith(self.open_prefixes)):
            return await self.app(scope, receive, send)
        authorization = ""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value.decode("latin-1")
        tokens = (self.token, *self.read_tokens) if scope.get("method") in ("GET", "HEAD") else (self.token,)
        # Every token is compared, so the time taken does not say which one nearly matched.
        matched = [token_matches(authorization, t) for t in tokens]
        if not any(matched):
            return await _answer(send, 401, f"missing or wrong {self.realm} token (Authorization: Bearer ...)",
                                 [(b"www-authenticate", b"Bearer")])
        scope.setdefault("state", {})["token_kind"] = "admin" if matched[0] else "read"
        return await self.app(scope, receive, send)


class HostAllowlist:
    """Serve only requests whose ``Host`` names this server (defeats DNS rebinding)."""

    def __init__(self, app, hosts: Iterable[str]):
        self.app = app
        self.hosts = frozenset(h.lower() for h in hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.hosts:
            host = ""
            for name, value in scope.get("headers", ()):
                if name == b"host":
                    host = value.decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if name not in self.hosts and host not in self.hosts:
                return await _answer(send, 421, f"this server does not serve host {host!r}")
        return await self.app(scope, receive, send)


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> list[str]:
    """Host names a server bound to ``bind_host`` answers to."""
    hosts = {"127.0.0.1", "localhost", "[::1]", *extra}
    if bind_host not in ("0.0.0.0", "::", ""):
        hosts.add(bind_host)
    else:
        return []  # bound to every interface: the operator names the hosts, or any is served
    return sorted(hosts)


# -- app-level hardening ---------------------------------------------------------------------
def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def harden(app: FastAPI, title: str) -> FastAPI:
    """Add the error handlers, offline docs and bearer scheme every MAOTrade service has.

    Build the app with ``docs_url=None`` and ``redoc_url=None``; this serves ``/docs``
    from the bundled Swagger UI files, never from a CDN.
    """

    @app.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError):
        # The input is left out: it may hold NaN (not JSON) or something the caller should not see echoed.
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid"), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": _finite(errors)})

    @app.exception_handler(RecursionError)
    async def too_deep(_, exc: RecursionError):
        return JSONResponse(status_code=400, content={"detail": "JSON nested too deep"})

    try:
        import swagger_ui_bundle
        from starlette.staticfiles import StaticFiles

        app.mount(DOCS_STATIC, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-static")

        @app.get("/docs", include_in_schema=False)
        def docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{title} docs",
                                       swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
                                       swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
                                       swagger_favicon_url=f"{DOCS_STATIC}/favicon-32x32.png")
    except ImportError:  # without the bundle there are no interactive docs; /openapi.json stays
        pass

    original = app.openapi

    def openapi_with_bearer() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "the service's token"}}
        schema["security"] = [{"bearer": []}]
        return schema

    app.openapi = openapi_with_bearer
    return app


def reject_constants(name: str):
    """``json.loads(parse_constant=...)`` hook: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not a JSON number")


def guard(app, token: str, open_paths: Iterable[str], open_prefixes: Iterable[str] = (),
          read_tokens: Iterable[str] = (), hosts: Iterable[str] = (), realm: str = "API",
          max_body: int = MAX_BODY_BYTES):
    """Wrap ``app`` in the middleware stack: host check, then auth, then the body cap."""
    wrapped = BearerGate(BodyLimit(app, max_body), token, open_paths, open_prefixes, read_tokens, realm)
    return HostAllowlist(wrapped, hosts)
