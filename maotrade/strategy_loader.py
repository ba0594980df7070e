"""Find a strategy class from what a person types after ``--strategy``.

Three spellings:

- ``path/to/file.py:ClassName`` (or ``path/to/file.py`` when the file defines exactly one
  ``Strategy`` subclass): the file is loaded as a module;
- ``module:ClassName`` or ``package.module:ClassName``: imported from the directories in
  ``search_path`` (``--strategy-path``), then the current directory, then the installed
  packages;
- ``ClassName`` alone is refused with a hint (which module is it in?).

Errors are ``StrategyLoadError``, one line naming what was wrong.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Iterable, Optional

from maotrade.errors import OperationalError


class StrategyLoadError(OperationalError, ImportError):
    """The strategy cannot be found, imported, or is not a ``Strategy`` subclass."""


def resolve_target(target: str, search_path: Iterable[str] = ()) -> str:
    """Return ``target`` with a file path made absolute (so another process, started
    elsewhere, loads the same file); module targets are returned as they are."""
    location, sep, class_name = str(target).rpartition(":") if ":" in str(target) else (str(target), "", "")
    if _is_file_target(location):
        return f"{Path(location).resolve()}{sep}{class_name}"
    return str(target)


def load_strategy(target: str, search_path: Iterable[str] = ()):
    """Return the ``Strategy`` subclass named by ``target`` (see the module docstring)."""
    from maotrade.strategy import Strategy

    text = str(target).strip()
    location, sep, class_name = text.rpartition(":") if ":" in text else (text, "", "")
    if _is_file_target(location):
        module = _load_file(Path(location), text)
    elif not sep:
        raise StrategyLoadError(f"strategy {text!r} must look like 'path/to/file.py:ClassName' or "
                                f"'module:ClassName'")
    else:
        module = _import(location, text, list(search_path))
    if not class_name:
        found = [c for c in vars(module).values() if inspect.isclass(c) and issubclass(c, Strategy)
                 and c is not Strategy and c.__module__ == module.__name__]
        if len(found) != 1:
            names = ", ".join(c.__name__ for c in found) or "none"
            raise StrategyLoadError(f"strategy {text!r}: name the class as {location}:ClassName "
                                    f"(Strategy subclasses defined there: {names})")
        return found[0]
    cls = getattr(module, class_name, None)
    if cls is None:
        raise StrategyLoadError(f"strategy {text!r}: {location} has no {class_name!r}")
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
        raise StrategyLoadError(f"strategy {text!r} is not a subclass of maotrade.strategy.Strategy")
    return cls


def _is_file_target(location: str) -> bool:
    return location.endswith(".py") or os.sep in location or "/" in location


def _load_file(path: Path, target: str):
    if not path.is_file():
        raise StrategyLoadError(f"strategy {target!r}: file {path} does not exist")
    path = path.resolve()
    # One module name per file: loading the same file twice gives the same module.
    name = f"maotrade_strategy_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise StrategyLoadError(f"strategy {target!r}: {path} cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # Its neighbours (helper modules next to the strategy) import as they would from there.
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        raise StrategyLoadError(f"strategy {target!r}: {_import_failure(exc, path)}") from None
    return module


def _import(module_name: str, target: str, search_path: list[str]):
    for folder in [*search_path, os.getcwd()]:
        folder = str(Path(folder).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            where = ", ".join([*search_path, "the current directory"])
            raise StrategyLoadError(f"strategy {target!r}: no module {module_name!r} in {where} or the "
                                    f"installed packages (give a file as path/to/file.py:ClassName, or "
                                    f"--strategy-path DIR)") from None
        raise StrategyLoadError(f"strategy {target!r}: {module_name} needs {exc.name!r}, which is not "
                                f"installed") from None
    except BaseException as exc:  # an import can fail in any way; report it in one line
        raise StrategyLoadError(f"strategy {target!r}: {_import_failure(exc, None)}") from None


def _import_failure(exc: BaseException, path: Optional[Path]) -> str:
    if isinstance(exc, SyntaxError):
        return f"{exc.filename or path} line {exc.lineno}: {exc.msg}"
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if path is None or tb.tb_frame.f_code.co_filename == str(path):
            line = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    where = f" ({line[0]} line {line[1]})" if line else ""
    return f"importing it raised {type(exc).__name__}: {exc}{where}"
