"""Where MAOTrade keeps its files."""
from __future__ import annotations

import os
import site
import sys
import stat
import tempfile
from pathlib import Path
from typing import Optional

from platformdirs import user_data_dir

from maotrade.client import ENGINE_FILE
from maotrade.errors import ConfigError

DATA_DIR_ENV = "MAOTRADE_DATA_DIR"
CONF_DIR_ENV = "MAOTRADE_CONF_DIR"
# Unix socket paths are limited to about 107 bytes; keep ipc paths well below.
MAX_IPC_PATH = 90


def data_dir(explicit: Optional[str] = None) -> Path:
    """The data directory: ``--data-dir``, ``MAOTRADE_DATA_DIR`` or the user's data folder.

    It holds the journal, the registry, keys, tokens and logs, so it is private: made 0700,
    tightened to 0700 if it exists looser, refused if it is not ours. Files made from here
    on are 0600 (umask 077) in this process and the workers it starts.
    """
    path = Path(explicit or os.environ.get(DATA_DIR_ENV) or user_data_dir("maotrade", appauthor=False))
    os.umask(0o077)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    make_private(path)
    return path


def make_private(path: Path) -> None:
    """Make the folder ``path`` 0700, or raise ``ConfigError`` if that is not possible."""
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"data dir {path} is not a folder")
    if stat.S_IMODE(info.st_mode) & 0o077:
        if info.st_uid != os.getuid():
            raise ConfigError(f"data dir {path} is open to other users (mode {stat.S_IMODE(info.st_mode):o}) "
                              "and owned by someone else; use a private folder")
        os.chmod(path, 0o700)


def conf_dir() -> Path:
    """The folder of default settings and the demo registry: ``MAOTRADE_CONF_DIR``, the
    source checkout's ``conf/``, or where an installed copy put it (``share/maotrade/conf``
    under the install prefix)."""
    env = os.environ.get(CONF_DIR_ENV)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "conf"
    if checkout.is_dir():
        return checkout
    for prefix in (sys.prefix, site.getuserbase()):
        installed = Path(prefix) / "share" / "maotrade" / "conf"
        if installed.is_dir():
            return installed
    return checkout  # nothing found: the error then names the expected place


def make_run_dir(data: Path) -> Path:
    """A private (0700) folder for this engine's ipc sockets, short enough for socket paths."""
    preferred = Path(data) / "run"
    if len(str(preferred)) + 24 < MAX_IPC_PATH:
        preferred.mkdir(mode=0o700, exist_ok=True)
        os.chmod(preferred, 0o700)
        return preferred
    return Path(tempfile.mkdtemp(prefix="maotrade-"))


def engine_file(data: Path) -> Path:
    """The file that tells ``maotrade status``/``stop`` where the running engine listens."""
    return Path(data) / ENGINE_FILE


def reports_dir(data: Path) -> Path:
    """Where ``maotrade backtest``/``optimize`` write by default and the dashboard looks for
    reports: ``<data dir>/reports``."""
    return Path(data) / "reports"
