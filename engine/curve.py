"""CurveZMQ for bus connections over tcp: the engine's keys and the clients it accepts.

Layout under ``<data dir>/curve`` (created 0700):
- ``server.key`` / ``server.key_secret``: the engine's key pair (clients need ``server.key``);
- ``authorized/*.key``: public keys of the clients allowed to connect;
- ``clients/NAME.key`` / ``NAME.key_secret``: key pairs made by ``maotrade keys add NAME``
  on this host (the older way; prefer the client making its own pair with
  ``maotrade keys generate`` and handing over only ``NAME.key``).

The engine re-reads ``authorized/`` while it runs (``KeyWatcher``): a key added there is
accepted and a removed one refused from the next connection on, without a restart.
ipc connections on one host do not use Curve: they rely on the 0700 run folder.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Optional

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from maotrade.errors import ConfigError

log = logging.getLogger(__name__)
# How often the engine looks for added or removed client keys.
KEY_RELOAD_INTERVAL_S = 1.0


def _check_name(name: str) -> None:
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"client name {name!r} may hold only letters, digits, '-' and '_'")


def curve_dir(data_dir: Path) -> Path:
    """The folder holding Curve keys (created 0700)."""
    path = Path(data_dir) / "curve"
    for sub in (path, path / "authorized", path / "clients"):
        sub.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def server_keys(data_dir: Path) -> tuple[bytes, bytes]:
    """Return the engine's (public, secret) key, creating the pair once."""
    folder = curve_dir(data_dir)
    secret_file = folder / "server.key_secret"
    if not secret_file.exists():
        zmq.auth.create_certificates(str(folder), "server")
        os.chmod(secret_file, 0o600)
    return zmq.auth.load_certificate(str(secret_file))


def add_client(data_dir: Path, name: str) -> Path:
    """Make a key pair for client ``name``, authorize it, return its secret key file."""
    _check_name(name)
    folder = curve_dir(data_dir)
    public, secret = zmq.auth.create_certificates(str(folder / "clients"), name)
    os.chmod(secret, 0o600)
    shutil.copy(public, folder / "authorized" / f"{name}.key")
    return Path(secret)


def generate_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """Make a key pair for ``name`` in ``folder`` (on the client's host); return (public, secret) files."""
    _check_name(name)
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (folder / f"{name}.key_secret").exists():
        raise ConfigError(f"{folder / (name + '.key_secret')} exists; remove it or choose another name")
    public, secret = zmq.auth.create_certificates(str(folder), name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def authorize(data_dir: Path, name: str, public_key_file: Path) -> Path:
    """Authorize the client public key in ``public_key_file`` as ``name``; return where it is kept."""
    _check_name(name)
    try:
        public, secret = zmq.auth.load_certificate(str(public_key_file))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{public_key_file}: not a Curve public key file ({exc})") from None
    if secret is not None:
        raise ConfigError(f"{public_key_file} holds a secret key: hand over only the public .key file")
    target = curve_dir(data_dir) / "authorized" / f"{name}.key"
    if target.exists():
        raise ConfigError(f"a key named {name!r} is already authorized; remove it first")
    shutil.copy(public_key_file, target)
    os.chmod(target, 0o600)
    return target


def list_clients(data_dir: Path) -> list[dict]:
    """Authorized client keys: name and public key (Z85)."""
    out = []
    for path in sorted((curve_dir(data_dir) / "authorized").glob("*.key")):
        try:
            public, _ = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError):
            public = b"(unreadable)"
        out.append({"name": path.stem, "public_key": public.decode(), "file": str(path)})
    return out


def remove_client(data_dir: Path, name: str) -> None:
    """Revoke client ``name``: its key is refused from the next connection on."""
    _check_name(name)
    folder = curve_dir(data_dir)
    path = folder / "authorized" / f"{name}.key"
    if not path.exists():
        raise ConfigError(f"no authorized key named {name!r}")
    path.unlink()
    for leftover in (folder / "clients" / f"{name}.key", folder / "clients" / f"{name}.key_secret"):
        leftover.unlink(missing_ok=True)


class KeyWatcher:
    """Reload the authorized keys into the authenticator whenever the folder changes."""

    def __init__(self, auth: ThreadAuthenticator, folder: Path, interval: float = KEY_RELOAD_INTERVAL_S):
        self.auth, self.folder, self.interval = auth, Path(folder), interval
        self._stop = threading.Event()
        self._seen = self._snapshot()
        self._thread: Optional[threading.Thread] = None

    def _snapshot(self) -> tuple:
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in self.folder.glob("*.key")))

    def start(self) -> "KeyWatcher":
        """Watch on a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="curve-keys", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                now = self._snapshot()
                if now != self._seen:
                    self.auth.configure_curve(domain="*", location=str(self.folder))
                    log.warning("event=curve_keys_reloaded authorized=%d", len(now))
                    self._seen = now
            except OSError as exc:  # a key file removed while being read: next time
                log.debug("event=curve_keys_reload_retry reason=%s", exc)

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        if self._thread:
            self._thread.join(2)


def secure_router(ctx: zmq.Context, router: zmq.Socket, data_dir: Path) -> tuple[ThreadAuthenticator, KeyWatcher]:
    """Make ``router`` a Curve server that accepts only authorized client keys (re-read as
    they change); return the authenticator and its key watcher, to stop both at close."""
    public, secret = server_keys(data_dir)
    auth = ThreadAuthenticator(ctx)
    auth.start()
    folder = curve_dir(data_dir) / "authorized"
    auth.configure_curve(domain="*", location=str(folder))
    watcher = KeyWatcher(auth, folder).start()
    router.curve_publickey = public
    router.curve_secretkey = secret
    router.curve_server = True
    return auth, watcher


def secure_client(socket: zmq.Socket, server_public_file: Path, client_secret_file: Path) -> None:
    """Make ``socket`` a Curve client of the engine whose public key is in ``server_public_file``."""
    server_public, _ = zmq.auth.load_certificate(str(server_public_file))
    public, secret = zmq.auth.load_certificate(str(client_secret_file))
    if secret is None:
        raise ConfigError(f"{client_secret_file} holds no secret key")
    socket.curve_serverkey = server_public
    socket.curve_publickey = public
    socket.curve_secretkey = secret
