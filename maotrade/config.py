"""The MAOTrade account document and the broker settings every Account Manager shares.

``GET {config_url}/api/accounts/{id}/config`` returns an ``AccountDocument``:
``idAccount, brokerName, brokerClass, brokerConfig, accountConfig`` and optional
``epicMapping``. Models are frozen and strict: an unknown or mistyped key is an error
that names the key. A broker validates its own ``brokerConfig``/``accountConfig`` keys
by subclassing ``BrokerSettings`` / ``AccountSettings``.
"""
from __future__ import annotations

import ipaddress
import typing
from typing import Any, Dict
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from maotrade.errors import ConfigError
from maotrade.secrets import REDACTED, is_secret_key


class StrictModel(BaseModel):
    """Frozen model that rejects unknown keys and masks secrets in its repr."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, (REDACTED if name and is_secret_key(name) and value else value)


class AccountDocument(StrictModel):
    """The account document the config service serves (wire names as in the spec)."""

    idAccount: str = Field(min_length=1, max_length=64)
    brokerName: str = Field(min_length=1)
    brokerClass: str = Field(min_length=3, pattern=r"^[A-Za-z_][\w.]*\.[A-Za-z_]\w*$")
    brokerConfig: Dict[str, Any] = Field(default_factory=dict)
    accountConfig: Dict[str, Any] = Field(default_factory=dict)
    epicMapping: Dict[str, str] = Field(default_factory=dict)

    @field_validator("idAccount", mode="before")
    @classmethod
    def _id_as_string(cls, value: Any) -> Any:
        # Ids are often typed as numbers (123); they are names, so keep them as strings.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    def __repr__(self) -> str:
        return f"AccountDocument(idAccount={self.idAccount!r}, brokerClass={self.brokerClass!r})"


class BrokerSettings(StrictModel):
    """``brokerConfig`` keys the base class reads; brokers subclass to add their own.

    Every key has a default, so ``{}`` is a valid brokerConfig.
    """

    reconnect_base: float = Field(30.0, gt=0, description="first reconnect delay, seconds")
    reconnect_max: float = Field(300.0, gt=0, description="longest reconnect delay, seconds")
    max_retries: int = Field(10, ge=0, description="reconnect attempts before account_disconnected")
    order_timeout: float = Field(30.0, gt=0, description="seconds before an unanswered order is queried")
    timeout: float = Field(10.0, gt=0, description="seconds for one broker request")
    heartbeat_interval: float = Field(1.0, gt=0, description="seconds between worker heartbeats")
    tick_interval: float = Field(0.05, gt=0, le=5, description="longest idle wait of the tick loop, seconds")


class AccountSettings(StrictModel):
    """``accountConfig`` keys; brokers subclass to list theirs."""


def secret_fields(model: type[BaseModel]) -> list[str]:
    """Names of the fields ``model`` declares as ``SecretStr`` (or ``Optional[SecretStr]``)."""
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if annotation is SecretStr or SecretStr in typing.get_args(annotation):
            names.append(name)
    return names


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_https(url: str, what: str) -> str:
    """Return ``url`` if it is ``https://`` (or any scheme on loopback); raise ``ValueError`` if not."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} {url!r} is not an http(s) URL")
    if parts.scheme != "https" and not is_loopback_host(parts.hostname):
        raise ValueError(f"{what} {url!r} must use https:// (credentials are sent to it)")
    return url


def parse_document(data: Any, source: str = "config") -> AccountDocument:
    """Validate a raw account document; raise ``ConfigError`` naming the bad key in one line."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: account document must be a JSON object, got {type(data).__name__}")
    try:
        return AccountDocument.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {first_error(exc)}") from None


def parse_settings(model: type[StrictModel], data: dict, where: str) -> StrictModel:
    """Validate a broker's settings dict against ``model``; one-line ``ConfigError`` on failure."""
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{where}: {first_error(exc)}") from None


def first_error(exc: ValidationError) -> str:
    """Return pydantic's first error as ``key: message`` without echoing the value."""
    err = exc.errors()[0]
    if not err.get("loc"):  # a check of the whole model
        return str(err.get("msg", "invalid")).removeprefix("Value error, ")
    loc = ".".join(str(p) for p in err.get("loc", ()))
    kind = err.get("type", "")
    if kind == "missing":
        return f"missing key '{loc}'"
    if kind == "extra_forbidden":
        return f"unknown key '{loc}'"
    return f"key '{loc}': {err.get('msg', 'invalid')}"

