"""Load an Account Manager class from its configured ``brokerClass`` path."""
from __future__ import annotations

import importlib
import inspect

from maotrade.account_manager import BaseAccountManager
from maotrade.errors import BrokerClassError
from maotrade.strategy_loader import load_strategy

BUILTIN_PACKAGE = "account_managers"


def load_broker_class(path: str) -> type[BaseAccountManager]:
    """Return the class named by ``path``: ``module.Class`` under account_managers, or a
    fully qualified ``package.module.Class``. Raise ``BrokerClassError`` in one line."""
    if not isinstance(path, str) or "." not in path:
        raise BrokerClassError(f"brokerClass {path!r} must look like 'module.ClassName'")
    module_name, _, class_name = path.rpartition(".")
    candidates = [f"{BUILTIN_PACKAGE}.{module_name}", module_name]
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
