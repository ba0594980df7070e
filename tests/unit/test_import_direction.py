"""The dependency rule, read from the source: ``maotrade/`` imports neither ``engine/`` nor
``account_managers/``, and those two never import each other."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "maotrade": {"engine", "account_managers"},
    "engine": {"account_managers"},
    "account_managers": {"engine"},
}


def imported_packages(path: Path) -> set[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``path``, wherever it sits."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_the_dependency_rule_allows(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources found under {package}/"
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {target}"
             for path in files for line, target in imported_packages(path) if target in FORBIDDEN[package]]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from engine.paths import data_dir\n    import engine.cli\n")
    assert imported_packages(source) == {(2, "engine"), (3, "engine")}
