"""Shared test set-up: offscreen Qt, and a temporary QGIS profile with the plugin installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent


def qgis_process_command() -> list[str]:
    """The qgis_process executable.

    Debian's ``/usr/bin/qgis_process`` wrapper adds ``$QGIS_OPTS`` from ``/etc/default/qgis``
    (``--noversioncheck``, a GUI-only option) and then fails with "Command --noversioncheck not
    known!"; the real binary beside it takes the same arguments without that.
    """
    for name in ("qgis_process.bin", "qgis_process"):
        path = shutil.which(name)
        if path:
            return [path]
    pytest.fail("qgis_process not found: run `make install` (Debian package qgis)")
    raise AssertionError  # unreachable, for type checkers


@pytest.fixture(scope="session")
def qgis_profile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for ``qgis_process`` with the plugin installed and enabled in a temp profile.

    Returns the environment to pass to ``subprocess.run``.
    """
    from scripts.build_zip import install_plugin

    config = tmp_path_factory.mktemp("qgis_config")
    plugins = config / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    install_plugin(plugins)
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(config), QT_QPA_PLATFORM="offscreen")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__import__("numpy").__file__).parents[1]), env.get("PYTHONPATH")) if p
    )
    run = subprocess.run(
        [*qgis_process_command(), "plugins", "enable", "sar_optical_matcher"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if run.returncode != 0:
        pytest.fail(f"qgis_process plugins enable failed:\n{run.stdout}\n{run.stderr}")
    return env
