"""Review finding L7: dependency floors stay past known advisories, and the constraints
file the install uses covers the transitive ones."""
from __future__ import annotations

import configparser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
# The first fixed version of each advisory the review named.
FLOORS = {"pyarrow": "14.0.1", "requests": "2.32.4", "cryptography": "42.0.4", "starlette": "0.40.0",
          "aiohttp": "3.9.4", "setuptools": "70.0.0", "urllib3": "2.2.2"}


def _floor(requirement: Requirement) -> Version:
    return max(Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "=="))


def test_l7_constraints_file_sets_every_advisory_floor():
    constraints = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            constraints[requirement.name.lower()] = _floor(requirement)
    for name, fixed in FLOORS.items():
        assert constraints.get(name, Version("0")) >= Version(fixed), name


def test_l7_setup_cfg_floors_exclude_the_vulnerable_versions():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra in config["options.extras_require"].values():
        lines += extra.splitlines()
    declared = {}
    for line in filter(None, (x.strip() for x in lines)):
        requirement = Requirement(line)
        declared[requirement.name.lower()] = _floor(requirement)
    for name, fixed in FLOORS.items():
        if name in declared:
            assert declared[name] >= Version(fixed), name


def test_l7_the_install_paths_use_the_constraints():
    assert "-c constraints.txt" in (ROOT / "scripts" / "test").read_text()
    assert "-c constraints.txt" in (ROOT / "README.md").read_text()
