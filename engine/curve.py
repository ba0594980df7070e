"""CurveZMQ for bus connections over tcp: the engine's keys and the clients it accepts.

Layout under ``<data dir>/curve`` (created 0700):
- ``server.key`` / ``server.key_secret``: the engine's key pair (clients need ``server.key``);
- ``authorized/*.key``: public keys of the clients allowed to connect;
- ``clients/NAME.key`` / ``NAME.key_secret``: key pairs made by ``maotrade keys add NAME``,
  to hand to that client.

ipc connections on one host do not use Curve: they rely on the 0700 run folder.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from maotrade.errors import ConfigError


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
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"client name {name!r} may hold only letters, digits, '-' and '_'")
    folder = curve_dir(data_dir)
    public, secret = zmq.auth.create_certificates(str(folder / "clients"), name)
    os.chmod(secret, 0o600)
    shutil.copy(public, folder / "authorized" / f"{name}.key")
    return Path(secret)


def secure_router(ctx: zmq.Context, router: zmq.Socket, data_dir: Path) -> ThreadAuthenticator:
    """Make ``router`` a Curve server that accepts only authorized client keys."""
    public, secret = server_keys(data_dir)
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(curve_dir(data_dir) / "authorized"))
    router.curve_publickey = public
    router.curve_secretkey = secret
    router.curve_server = True
    return auth


def secure_client(socket: zmq.Socket, server_public_file: Path, client_secret_file: Path) -> None:
    """Make ``socket`` a Curve client of the engine whose public key is in ``server_public_file``."""
    server_public, _ = zmq.auth.load_certificate(str(server_public_file))
    public, secret = zmq.auth.load_certificate(str(client_secret_file))
    if secret is None:
        raise ConfigError(f"{client_secret_file} holds no secret key")
    socket.curve_serverkey = server_public
    socket.curve_publickey = public
    socket.curve_secretkey = secret
