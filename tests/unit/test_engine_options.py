"""EngineOptions: built once, normalised, frozen, and bad values refused with the option's name."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engine.options import EngineOptions
from maotrade.errors import ConfigError


def test_options_are_normalised_once_and_frozen(tmp_path):
    options = EngineOptions(data_dir=str(tmp_path), accounts=[123, "456"], strategies=["a.py:A"],
                            risk_config=str(tmp_path / "risk.json"), verbosity=5, strategy_params={"fast": 3})
    assert options.data_dir == tmp_path and options.accounts == ("123", "456") and options.strategies == ("a.py:A",)
    assert options.risk_config == Path(tmp_path / "risk.json") and options.notify_config is None
    assert options.verbosity == 2, "clamped to the console's most verbose level"
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.unknown_timeout = 1.0  # type: ignore[misc]


def test_the_defaults_are_the_start_commands(tmp_path):
    options = EngineOptions(data_dir=tmp_path)
    assert (options.heartbeat_timeout, options.unknown_timeout, options.durability, options.api_host,
            options.on_strategy_failure, options.show_bars) == (15.0, 60.0, "normal", "127.0.0.1", "restart", True)


@pytest.mark.parametrize("field, value, says", [
    ("durability", "sometimes", "durability must be one of normal, full"),
    ("on_strategy_failure", "ignore", "on_strategy_failure must be one of restart, stop"),
    ("heartbeat_timeout", 0, "heartbeat_timeout must be a positive number of seconds"),
    ("unknown_timeout", -1.0, "unknown_timeout must be a positive number of seconds"),
    ("api_port", 70000, "api_port must be from 1 to 65535"),
])
def test_a_bad_value_is_refused_naming_the_option(tmp_path, field, value, says):
    with pytest.raises(ConfigError, match=says):
        EngineOptions(data_dir=tmp_path, **{field: value})
