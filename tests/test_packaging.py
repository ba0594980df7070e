"""A plain (non-editable) ``pip install .`` works: the demo finds conf/, the sample data
and the template ship with the package, and the README's backtest runs from anywhere.

The scratch venv gets MAOTrade itself by a real ``pip install`` of this checkout; its
dependencies are borrowed from the test environment (a .pth line), so nothing is fetched.
"""
import os
import shutil
import site
import subprocess
import sys
import venv

import pytest

from tests.engine_kit import ROOT

pytestmark = pytest.mark.slow
PROJECT_FILES = ["setup.cfg", "pyproject.toml", "README.md", "maotrade", "engine", "account_managers", "conf"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    home = tmp_path_factory.mktemp("installed")
    env_dir = home / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # Dependencies from this environment, appended after the scratch venv's own packages.
    ours = [p for p in site.getsitepackages() if p.endswith("site-packages")]
    (home / "venv" / purelib.split(str(env_dir) + os.sep, 1)[1] / "deps.pth").write_text("\n".join(ours) + "\n")
    # A copy of what a release holds, so the build leaves nothing behind in the checkout.
    source = home / "source"
    source.mkdir()
    for name in PROJECT_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                           str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return home, env_dir


def run(installed, *args, timeout=180):
    home, env_dir = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MAOTRADE_CONF_DIR")}
    return subprocess.run([str(env_dir / "bin" / "maotrade"), *args], capture_output=True, text=True,
                          cwd=home, env=env, timeout=timeout)


def test_the_installed_copy_is_not_this_checkout(installed):
    home, env_dir = installed
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import maotrade, engine.paths as p; "
                            "print(maotrade.__file__); print(p.conf_dir())"],
                           capture_output=True, text=True, cwd=home, check=True).stdout.split()
    assert str(ROOT) not in where[0] and str(env_dir) in where[0]
    assert where[1].startswith(str(env_dir)) and where[1].endswith("share/maotrade/conf")


def test_the_demo_starts_from_a_plain_install(installed, tmp_path):
    done = run(installed, "start", "--account", "123", "--duration", "4", "--no-bars", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "seeded the local registry from conf/demo-registry.json" in done.stdout
    assert "account 123 [paper]: ready" in done.stdout


def test_the_readme_backtest_and_new_strategy_from_a_plain_install(installed):
    done = run(installed, "backtest", "--strategy", "maotrade.examples.ma_cross:MovingAverageCross", "--sample",
               "--epic", "EURUSD", "--no-html")
    assert done.returncode == 0, done.stderr
    assert "total return" in done.stdout
    new = run(installed, "new-strategy", "breakout_one")
    assert new.returncode == 0, new.stderr
    done = run(installed, "backtest", "--strategy", "breakout_one.py:BreakoutOne", "--sample", "--epic", "GBPUSD",
               "--no-html", "--no-chart")
    assert done.returncode == 0, done.stderr


def test_what_a_backtest_imports_is_a_core_dependency(installed):
    """The README's install (no extras) must carry the progress bar, the charts and Parquet."""
    home, env_dir = installed
    requires = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import importlib.metadata as m; "
                               "print('\\n'.join(r for r in m.requires('maotrade') if 'extra ==' not in r))"],
                              capture_output=True, text=True, cwd=home, check=True).stdout.split("\n")
    core = {line.split(">")[0].split("=")[0].split("<")[0].strip().lower() for line in requires if line.strip()}
    assert {"tqdm", "matplotlib", "pyarrow", "plotly", "numpy"} <= core, core
