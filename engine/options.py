"""How one engine runs: the options of ``maotrade start``, built once and never changed."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from maotrade.errors import ConfigError

DURABILITY = ("normal", "full")
ON_STRATEGY_FAILURE = ("restart", "stop")


@dataclass(frozen=True)
class EngineOptions:
    """Every setting of one engine run, with the defaults ``maotrade start`` shows.

    Built once (by the CLI from its options, or by a test or a script) and handed to
    ``engine.runner.start`` and ``Engine``; nothing changes it afterwards. Bad values
    raise ``ConfigError`` naming the option.
    """

    data_dir: Path
    accounts: tuple[str, ...] = ()  # ids to run (all of the registry's when empty)
    config_url: Optional[str] = None  # the admin service; None runs an embedded one on data_dir
    config_ca_file: Optional[str] = None  # CA the config service's TLS certificate must chain to
    strategies: tuple[str, ...] = ()  # "module:Class" or "file.py:Class", one process each
    strategy_path: tuple[str, ...] = ()  # more directories to import strategy modules from
    strategy_params: dict = field(default_factory=dict)  # passed to every strategy
    on_strategy_failure: str = "restart"  # "restart" (with backoff) or "stop" (the engine, exit code 1)
    no_demo: bool = False  # do not start the demo strategy when none is given
    duration: Optional[float] = None  # seconds to run, then stop (None: until stopped)
    log_level: str = "INFO"  # of the log file
    verbosity: int = 0  # console: -1 quiet, 0 warnings and events, 1 info, 2 debug
    show_bars: bool = True  # print completed bars on the console
    heartbeat_timeout: float = 15.0  # seconds of worker silence before it is restarted
    unknown_timeout: float = 60.0  # seconds of broker silence before an order is UNKNOWN
    listen: Optional[str] = None  # tcp:// address for CurveZMQ clients besides ipc
    durability: str = "normal"  # journal commits: "normal" or "full" (fsync per order)
    risk_config: Optional[Path] = None  # risk settings file (None: conf/risk.json)
    notify_config: Optional[Path] = None  # notification settings (None: notify.json in data_dir, if any)
    api_port: Optional[int] = None  # serve the REST API, webhooks and dashboard on this port
    api_host: str = "127.0.0.1"
    trusted_proxies: tuple[str, ...] = ()  # reverse proxies whose X-Forwarded-For names the client
    allow_broker_classes: tuple[str, ...] = ()  # brokerClass paths allowed besides account_managers/

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalised once, here
        set_(self, "data_dir", Path(self.data_dir))
        for name in ("accounts", "strategies", "strategy_path", "trusted_proxies", "allow_broker_classes"):
            set_(self, name, tuple(str(item) for item in getattr(self, name)))
        set_(self, "strategy_params", dict(self.strategy_params or {}))
        for name in ("risk_config", "notify_config"):
            if getattr(self, name) is not None:
                set_(self, name, Path(getattr(self, name)))
        if self.durability not in DURABILITY:
            raise ConfigError(f"durability must be one of {', '.join(DURABILITY)}, got {self.durability!r}")
        if self.on_strategy_failure not in ON_STRATEGY_FAILURE:
            raise ConfigError(f"on_strategy_failure must be one of {', '.join(ON_STRATEGY_FAILURE)}, "
                              f"got {self.on_strategy_failure!r}")
        for name in ("heartbeat_timeout", "unknown_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {getattr(self, name)!r}")
        if self.api_port is not None and not 1 <= self.api_port <= 65535:
            raise ConfigError(f"api_port must be from 1 to 65535, got {self.api_port!r}")
        set_(self, "verbosity", max(-1, min(2, int(self.verbosity))))
