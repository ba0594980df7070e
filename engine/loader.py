"""Load an Account Manager class from its configured ``brokerClass`` path.

Only operator-approved code runs: a class is imported only if its path is on the
engine-local allowlist, checked before anything is imported. The brokers shipped under
``account_managers/`` are always allowed; more come from ``--allow-broker-class`` or
``MAOTRADE_ALLOW_BROKER_CLASS`` (comma separated): an exact ``package.module.Class``,
or ``package.module.*`` for every class of a module or package.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from typing import Iterable

from maotrade.account_manager import BaseAccountManager
from maotrade.errors import BrokerClassError
from maotrade.strategy_loader import load_strategy

BUILTIN_PACKAGE = "account_managers"
ALLOW_ENV = "MAOTRADE_ALLOW_BROKER_CLASS"


def allowed_broker_classes(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The allowlist: ``extra`` plus ``MAOTRADE_ALLOW_BROKER_CLASS`` (the built-in brokers always are)."""
    from_env = [item.strip() for item in os.environ.get(ALLOW_ENV, "").split(",") if item.strip()]
    return tuple(dict.fromkeys([*extra, *from_env]))


def _allowed(qualified: str, allow: Iterable[str]) -> bool:
    for entry in allow:
        if entry.endswith(".*") and qualified.startswith(entry[:-1]):
            return True
        if entry == qualified:
            return True
    return False


def _builtin_module(module_name: str) -> bool:
    # find_spec of a submodule imports only its parent package: ours.
    try:
        return importlib.util.find_spec(f"{BUILTIN_PACKAGE}.{module_name.split('.')[0]}") is not None
    except (ImportError, ValueError):
        return False


def resolve_broker_class(path: str, allow: Iterable[str] = ()) -> str:
    """Return the import path ``path`` names, if it may be imported; ``BrokerClassError`` if not.

    Nothing outside the package ``account_managers`` is imported here.
    """
    if not isinstance(path, str) or "." not in path:
        raise BrokerClassError(f"brokerClass {path!r} must look like 'module.ClassName'")
    module_name, _, class_name = path.rpartition(".")
    if path.startswith(BUILTIN_PACKAGE + "."):
        return path
    if _builtin_module(module_name):
        return f"{BUILTIN_PACKAGE}.{path}"
    if _allowed(path, allowed_broker_classes(allow)):
        return path
    raise BrokerClassError(f"brokerClass {path!r} is not allowed on this host: only brokers under "
                           f"{BUILTIN_PACKAGE}/ run unless the operator adds it (--allow-broker-class or "
                           f"{ALLOW_ENV})")


def load_broker_class(path: str, allow: Iterable[str] = ()) -> type[BaseAccountManager]:
    """Return the class named by ``path``: ``module.Class`` under account_managers, or an
    allowed fully qualified ``package.module.Class``. Raise ``BrokerClassError`` in one line."""
    qualified = resolve_broker_class(path, allow)
    module_name, _, class_name = qualified.rpartition(".")
    candidates = [module_name]
    module, last_error = None, None
    for candidate in candidates:
        try:
            module = importlib.import_module(candidate)
            break
        except ModuleNotFoundError as exc:
            # Only "this module does not exist" moves on; a missing dependency inside
            # an existing broker module is the real error and must be reported.
            if exc.name and not candidate.startswith(exc.name) and not exc.name.startswith(candidate):
                raise BrokerClassError(f"brokerClass {path!r}: module {candidate} needs "
                                       f"{exc.name!r}, which is not installed") from None
            last_error = exc
        except Exception as exc:  # an import can fail in any way; report it in one line
            raise BrokerClassError(f"brokerClass {path!r}: importing {candidate} failed: "
                                   f"{type(exc).__name__}: {exc}") from None
    if module is None:
        raise BrokerClassError(f"brokerClass {path!r}: no module {module_name!r} under "
                               f"{BUILTIN_PACKAGE} or on the Python path") from last_error
    cls = getattr(module, class_name, None)
    if cls is None:
        raise BrokerClassError(f"brokerClass {path!r}: module {module.__name__} has no {class_name!r}")
    if not (inspect.isclass(cls) and issubclass(cls, BaseAccountManager)):
        raise BrokerClassError(f"brokerClass {path!r} is not a subclass of BaseAccountManager")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise BrokerClassError(f"brokerClass {path!r} does not implement: {missing}")
    return cls


def load_strategy_class(target: str, search_path=()):
    """Return the ``Strategy`` subclass named by ``target`` (``path/file.py:Class`` or
    ``module:Class``, see ``maotrade.strategy_loader``); one-line error if not."""
    return load_strategy(target, search_path)
