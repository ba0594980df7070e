"""``maotrade start``: config, engine, workers and strategies, from start to clean stop."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Callable, Optional

import psutil

from engine.admin.server import EmbeddedAdminServer, load_or_create_token, open_registry
from engine.api.server import ApiServer
from engine.notify.service import Notifications, load_notifications
from engine.config_client import ConfigClient, decrypted_config
from engine.console import ConsolePrinter
from engine.core import Engine
from engine.loader import load_broker_class, load_strategy_class
from engine.paths import conf_dir, engine_file, make_run_dir
from engine.risk import load_settings as load_risk_settings
from engine.strategy_host import run_strategy_process
from engine.strategy_supervisor import StrategySupervisor
from engine.supervisor import process_context
from maotrade.errors import ConfigError
from maotrade.log import (CONSOLE_LEVEL_ENV, RedactingFormatter, console_handler, console_level, console_prefix,
                          register_secret)
from maotrade.strategy_loader import resolve_target
from maotrade.secrets import MASTER_KEY_ENV, SecretBox, load_or_create_key, secret_values

log = logging.getLogger(__name__)

DEMO_STRATEGY = "maotrade.examples.demo:DemoStrategy"
DEMO_REGISTRY = "demo-registry.json"
RISK_SETTINGS = "risk.json"


def seed_if_empty(data_dir: Path, echo: Callable[[str], None]) -> None:
    """Fill an empty local registry from conf/demo-registry.json (demo account 123, paper)."""
    store = open_registry(data_dir)
    try:
        if store.is_empty():
            store.seed(json.loads((conf_dir() / DEMO_REGISTRY).read_text()))
            echo(f"seeded the local registry from conf/{DEMO_REGISTRY} (demo account 123 on the paper broker)")
    finally:
        store.close()


def master_box(data_dir: Path) -> Optional[SecretBox]:
    """The master key's SecretBox, if a key is set or exists (never creates one here)."""
    path = data_dir / "master.key"
    if os.environ.get(MASTER_KEY_ENV) or path.exists():
        return SecretBox(load_or_create_key(path))
    return None


def fetch_documents(client: ConfigClient, accounts: list[str], box: Optional[SecretBox]) -> list[dict]:
    """Fetch, validate and decrypt every account document; check each broker class loads."""
    documents = []
    for account in accounts:
        document = client.fetch(account)
        config = decrypted_config(document, box)
        for value in secret_values(config["accountConfig"]):
            register_secret(value)
        load_broker_class(document.brokerClass)
        documents.append(config)
    return documents


def setup_file_logging(data_dir: Path, level: str) -> Path:
    """Log every event to data_dir/logs/maotrade.log; stderr gets the console level
    (``MAOTRADE_CONSOLE_LEVEL``, warnings unless ``-v``/``-q``) in the console format."""
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    path = logs / "maotrade.log"
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = RedactingFormatter("%(asctime)s %(levelname)s %(processName)s %(name)s %(message)s")
    file_handler = RotatingFileHandler(path, maxBytes=20_000_000, backupCount=3)
    file_handler.setFormatter(formatter)
    file_handler.setLevel(getattr(logging, level.upper(), logging.INFO))
    stderr = console_handler()
    stderr.setLevel(console_level())
    root.addHandler(file_handler)
    root.addHandler(stderr)
    root.setLevel(min(getattr(logging, level.upper(), logging.INFO), stderr.level))
    for noisy in ("urllib3", "uvicorn", "uvicorn.error", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return path


def check_not_running(data_dir: Path) -> None:
    """Refuse to start a second engine on the same data directory."""
    path = engine_file(data_dir)
    if path.exists():
        try:
            pid = json.loads(path.read_text())["pid"]
        except (ValueError, KeyError):
            pid = None
        if pid and psutil.pid_exists(pid) and pid != os.getpid():
            raise ConfigError(f"an engine is already running on {data_dir} (pid {pid}); "
                              "use 'maotrade stop' or another --data-dir")
        path.unlink()


def start(accounts: list[str], data_dir: Path, config_url: Optional[str] = None,
          strategies: Optional[list[str]] = None, strategy_params: Optional[dict] = None,
          no_demo: bool = False, duration: Optional[float] = None, log_level: str = "INFO",
          show_bars: bool = True, heartbeat_timeout: float = 15.0, listen: Optional[str] = None,
          durability: str = "normal", echo: Callable[[str], None] = print,
          risk_config: Optional[Path] = None, api_port: Optional[int] = None, api_host: str = "127.0.0.1",
          unknown_timeout: float = 60.0, notify_config: Optional[Path] = None, verbosity: int = 0,
          on_strategy_failure: str = "restart", strategy_path: tuple = ()) -> int:
    """Run the engine until Ctrl-C, SIGTERM, ``maotrade stop`` or ``duration`` seconds.

    ``risk_config`` is the risk settings file (default conf/risk.json); ``api_port``
    serves the engine's REST API and webhooks on ``api_host``; ``notify_config`` is the
    notification settings file (default ``notify.json`` in the data directory, if present).
    ``verbosity`` (-1 quiet, 1 info, 2 debug) sets what every process prints on the console;
    ``on_strategy_failure`` is ``restart`` (with backoff) or ``stop`` (the engine stops, exit
    code 1). Return the exit code: 1 when a strategy failure stopped the engine or every
    account failed for good (bad credentials, bad configuration).
    """
    os.environ[CONSOLE_LEVEL_ENV] = CONSOLE_LEVELS[max(-1, min(2, verbosity))]
    plain_echo = echo

    def echo(line: str) -> None:  # one console format: the time first, as every other line
        plain_echo(f"{console_prefix()} {line}")

    check_not_running(data_dir)
    if risk_config is not None and not Path(risk_config).exists():
        raise ConfigError(f"risk settings file {risk_config} does not exist")
    risk_settings = load_risk_settings(Path(risk_config) if risk_config else conf_dir() / RISK_SETTINGS)
    notify_settings = load_notifications(data_dir, notify_config)
    log_path = setup_file_logging(data_dir, log_level)
    server = None
    if config_url is None:
        seed_if_empty(data_dir, echo)
        server = EmbeddedAdminServer(open_registry(data_dir), load_or_create_token(data_dir)).start()
        config_url = server.url
        echo(f"config service: embedded at {config_url} (registry in {data_dir})")
    else:
        echo(f"config service: {config_url}")
    client = ConfigClient(config_url)
    try:
        documents = fetch_documents(client, accounts, master_box(data_dir))
    except BaseException:
        if server is not None:
            server.stop()
        raise
    finally:
        client.close()
    strategies = list(strategies or [])
    if server is not None and not strategies and not no_demo:
        strategies = [DEMO_STRATEGY]
        echo(f"no --strategy given: running the demo strategy {DEMO_STRATEGY} (--no-demo to skip)")
    strategies = [resolve_target(target) for target in strategies]
    for target in strategies:
        load_strategy_class(target, strategy_path)
    run_dir = make_run_dir(data_dir)
    engine = Engine(documents, data_dir, run_dir, log_level=log_level, log_file=str(log_path),
                    heartbeat_timeout=heartbeat_timeout, tcp_address=listen,
                    journal_durability=durability,
                    on_event=ConsolePrinter(show_bars=show_bars and verbosity >= 0, quiet=verbosity < 0),
                    risk_settings=risk_settings, unknown_timeout=unknown_timeout)
    api = None
    notifications = None
    stop_signals = {signal.SIGINT: signal.getsignal(signal.SIGINT), signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
    supervisor = StrategySupervisor(process_context(), run_strategy_process, run_dir, on_strategy_failure, echo)
    engine.status_extras["strategies"] = supervisor.status
    accounts_watch = AccountsWatch(engine)
    exit_code = 0
    try:
        engine.start()
        if notify_settings is not None:
            notifications = Notifications(notify_settings, engine.bus.pub_address).start()
            echo(f"notifications: {', '.join(sorted(notify_settings.channels))}")
        if api_port is not None:
            api = ApiServer(engine.bus.client_address, data_dir, documents, host=api_host, port=api_port,
                            pub_address=engine.bus.pub_address).start()
            echo(f"engine API on {api.url} (token in {data_dir / 'api.token'} or MAOTRADE_API_TOKEN)")
            echo(f"dashboard: {api.login_url()}")
        # Written whole then renamed: whoever sees the file (CLI, tests) never reads half of it.
        info_tmp = engine_file(data_dir).with_suffix(".tmp")
        info_tmp.write_text(json.dumps({
            "pid": os.getpid(), "client_address": engine.bus.client_address,
            "pub_address": engine.bus.pub_address, "tcp_address": engine.bus.tcp_address,
            "accounts": accounts, "started": time.time(), "api_url": api.url if api else None}))
        os.replace(info_tmp, engine_file(data_dir))
        for sig in stop_signals:
            signal.signal(sig, lambda *_: engine.stop())
        for index, target in enumerate(strategies):
            name = f"{target.rpartition(':')[2]}-{index + 1}"
            spec = {"target": target, "strategy_path": list(strategy_path), "address": engine.bus.client_address,
                    "log_level": log_level, "log_file": str(log_path), "engine_pid": os.getpid(),
                    "params": (strategy_params or {}), "name": name}
            supervisor.add(name, target, spec)
        if engine.bus.tcp_address:
            echo(f"clients over tcp at {engine.bus.tcp_address} (CurveZMQ keys required)")
        echo(f"engine running (pid {os.getpid()}); logs in {log_path}; Ctrl-C to stop")
        deadline = time.monotonic() + duration if duration else None

        def must_stop() -> bool:
            return supervisor.check() or accounts_watch.all_failed() or bool(deadline and time.monotonic() >= deadline)

        engine.run(until=must_stop)
        if supervisor.stop_reason:
            exit_code = 1  # the supervisor's line said which strategy died and why
        elif accounts_watch.all_failed():
            exit_code = 1
            echo(f"stopping with exit code 1: {accounts_watch.why()}")
        echo("stopping: strategies, then accounts...")
    finally:
        if api is not None:
            api.stop()
        if notifications is not None:
            notifications.stop()
        if engine.running:
            engine.shutdown()
        supervisor.stop_all()
        for sig, previous in stop_signals.items():
            signal.signal(sig, previous)
        if server is not None:
            server.stop()
        engine_file(data_dir).unlink(missing_ok=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    echo("stopped cleanly" if exit_code == 0 else "stopped")
    return exit_code


CONSOLE_LEVELS = {-1: "ERROR", 0: "WARNING", 1: "INFO", 2: "DEBUG"}


class AccountsWatch:
    """Tell when every account of the engine failed for good (a fatal worker exit: the
    supervisor will not restart it), and why."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def all_failed(self) -> bool:
        """True when no account can ever become ready again."""
        workers = self.engine.supervisor.workers
        # DISCONNECTED is final: a fatal exit, or a worker that gave up reconnecting.
        return bool(workers) and all(handle.fatal_reason or self.engine.accounts[account].state == "disconnected"
                                     for account, handle in workers.items())

    def why(self) -> str:
        """One line naming each account and the reason it failed."""
        parts = []
        for account, handle in self.engine.supervisor.workers.items():
            reason = self.engine.accounts[account].reason or handle.fatal_reason
            parts.append(f"account {account} failed for good ({reason})")
        return "; ".join(parts) + "; nothing left to run"

