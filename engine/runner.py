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

from engine.admin.server import EmbeddedAdminServer, load_or_create_read_token, load_or_create_token, open_registry
from engine.api.server import ApiServer
from engine.config_client import ConfigClient, check_fingerprint, decrypted_config, load_config_token
from engine.notify.service import Notifications, load_notifications
from engine.console import ConsolePrinter
from engine.core import Engine
from engine.loader import ALLOW_ENV, allowed_broker_classes, load_broker_class, load_strategy_class
from engine.options import EngineOptions
from engine.paths import conf_dir, engine_file, make_run_dir
from engine.risk import load_settings as load_risk_settings
from engine.strategy_host import run_strategy_process
from engine.strategy_supervisor import StrategySupervisor
from engine.supervisor import process_context
from maotrade.errors import ConfigError
from maotrade.log import (CONSOLE_LEVEL_ENV, RedactingFormatter, WarningRateLimit, console_handler, console_level,
                          console_prefix)
from maotrade.secrets import MASTER_KEY_ENV, SecretBox, load_or_create_key
from maotrade.strategy_loader import resolve_target

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


def fetch_documents(client: ConfigClient, accounts: list[str], box: Optional[SecretBox],
                    data_dir: Optional[Path] = None) -> list[dict]:
    """Fetch, validate and decrypt every account document; check each broker class is
    allowed (before anything is imported) and loads; log each account's fingerprint."""
    documents = []
    for account in accounts:
        document = client.fetch(account)
        load_broker_class(document.brokerClass)
        config = decrypted_config(document, box)
        if data_dir is not None:
            check_fingerprint(config, data_dir)
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
    file_handler.addFilter(WarningRateLimit())
    file_handler.setLevel(getattr(logging, level.upper(), logging.INFO))
    stderr = console_handler()
    stderr.addFilter(WarningRateLimit())
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


def start(options: EngineOptions, echo: Callable[[str], None] = print) -> int:
    """Run the engine until Ctrl-C, SIGTERM, ``maotrade stop`` or ``options.duration`` seconds.

    Return the exit code: 1 when a strategy failure stopped the engine
    (``on_strategy_failure="stop"``) or every account failed for good (bad credentials,
    bad configuration), else 0.
    """
    data_dir, accounts, log_level = options.data_dir, list(options.accounts), options.log_level
    config_url, risk_config, verbosity = options.config_url, options.risk_config, options.verbosity
    os.environ[CONSOLE_LEVEL_ENV] = CONSOLE_LEVELS[verbosity]
    plain_echo = echo

    def echo(line: str) -> None:  # one console format: the time first, as every other line
        plain_echo(f"{console_prefix()} {line}")

    check_not_running(data_dir)
    if options.allow_broker_classes:
        # Workers are started from this process and check the same list.
        os.environ[ALLOW_ENV] = ",".join(allowed_broker_classes(options.allow_broker_classes))
    if risk_config is not None and not Path(risk_config).exists():
        raise ConfigError(f"risk settings file {risk_config} does not exist")
    risk_settings = load_risk_settings(Path(risk_config) if risk_config else conf_dir() / RISK_SETTINGS)
    notify_settings = load_notifications(data_dir, options.notify_config)
    log_path = setup_file_logging(data_dir, log_level)
    server = None
    if config_url is None:
        seed_if_empty(data_dir, echo)
        read_token = load_or_create_read_token(data_dir)
        server = EmbeddedAdminServer(open_registry(data_dir), load_or_create_token(data_dir),
                                     read_token=read_token).start()
        config_url = server.url
        echo(f"config service: embedded at {config_url} (registry in {data_dir})")
    else:
        read_token = load_config_token(data_dir)
        echo(f"config service: {config_url}")
    client = ConfigClient(config_url, token=read_token, ca_file=options.config_ca_file)
    try:
        documents = fetch_documents(client, accounts, master_box(data_dir), data_dir)
    except BaseException:
        if server is not None:
            server.stop()
        raise
    finally:
        client.close()
    strategies = list(options.strategies)
    if server is not None and not strategies and not options.no_demo:
        strategies = [DEMO_STRATEGY]
        echo(f"no --strategy given: running the demo strategy {DEMO_STRATEGY} (--no-demo to skip)")
    strategies = [resolve_target(target) for target in strategies]
    for target in strategies:
        load_strategy_class(target, options.strategy_path)
    run_dir = make_run_dir(data_dir)
    engine = Engine(documents, options, run_dir, log_file=str(log_path), risk_settings=risk_settings,
                    on_event=ConsolePrinter(show_bars=options.show_bars and verbosity >= 0, quiet=verbosity < 0))
    api = None
    notifications = None
    stop_signals = {signal.SIGINT: signal.getsignal(signal.SIGINT), signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
    supervisor = StrategySupervisor(process_context(), run_strategy_process, run_dir, options.on_strategy_failure,
                                    echo)
    engine.status_extras["strategies"] = supervisor.status
    accounts_watch = AccountsWatch(engine)
    exit_code = 0
    try:
        engine.start()
        if notify_settings is not None:
            notifications = Notifications(notify_settings, engine.bus.pub_address).start()
            echo(f"notifications: {', '.join(sorted(notify_settings.channels))}")
        if options.api_port is not None:
            api = ApiServer(engine.bus.client_address, data_dir, documents, host=options.api_host,
                            port=options.api_port, pub_address=engine.bus.pub_address,
                            trusted_proxies=list(options.trusted_proxies)).start()
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
            spec = {"target": target, "strategy_path": list(options.strategy_path),
                    "address": engine.bus.client_address, "log_level": log_level, "log_file": str(log_path),
                    "engine_pid": os.getpid(), "params": dict(options.strategy_params), "name": name}
            supervisor.add(name, target, spec)
        if engine.bus.tcp_address:
            echo(f"clients over tcp at {engine.bus.tcp_address} (CurveZMQ keys required)")
        echo(f"engine running (pid {os.getpid()}); logs in {log_path}; Ctrl-C to stop")
        deadline = time.monotonic() + options.duration if options.duration else None

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

