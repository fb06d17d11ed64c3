"""Regression tests of what a new user and a CI runner meet: set-up, evaluation, calibration.

* ``install.sh``: a ``.venv`` that ``python3 -m venv`` left without pip (Debian without
  ``python3-venv``) is recreated, not reused until ``pip`` is not found;
* ``evaluate.py``: an ``--out`` it cannot write is refused before any matching; its outputs are
  renamed together and an earlier run's optional outputs do not pass for this run's; bad counts
  are argument errors; an unknown ``--scene-offset`` scene lists the scenes there are;
* ``calibrate_confidence.py``: a missing model or an unwritable ``--out`` is said before the
  calibration's matching, without a traceback;
* ``measure_offsets.py`` / ``measure_pixel_scale.py``: a bad ``--data`` is one error line;
* the version in ``pyproject.toml`` is the plugin's (``metadata.txt``, its changelog's first).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent


# -- install.sh --------------------------------------------------------------------------


def _install(repo: Path) -> subprocess.CompletedProcess[str]:
    # the copy installs nothing (empty requirements); the final import check finds numpy,
    # torch and onnxruntime in this test run's own environment
    env = dict(os.environ, PYTHONPATH=sysconfig.get_paths()["purelib"])
    return subprocess.run(
        ["bash", str(repo / "scripts" / "install.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_install_lists_the_debian_package_that_gives_python3_its_venv() -> None:
    """Without python3-venv, Debian's ``python3 -m venv`` stops at ensurepip."""
    script = (ROOT / "scripts" / "install.sh").read_text()
    line = next(x for x in script.splitlines() if x.startswith("APT_PACKAGES="))
    assert "python3-venv" in line.split("=", 1)[1].strip('"').split()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/python3").is_file(), reason="install.sh is for Debian")
def test_install_recreates_a_venv_left_without_pip(tmp_path: Path) -> None:
    """``python3 -m venv`` without ensurepip leaves bin/python and no pip: install.sh took the
    venv for made and failed on every later run ('.venv/bin/pip: No such file or directory')
    until the user deleted it."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "install.sh", repo / "scripts" / "install.sh")
    for name in ("requirements.txt", "requirements-cpu.txt", "requirements-gpu.txt"):
        (repo / name).write_text("# nothing to install in this test\n")
    venv = repo / ".venv"
    subprocess.run(
        ["/usr/bin/python3", "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
        check=True,
    )
    assert (venv / "bin" / "python").exists() and not (venv / "bin" / "pip").exists()
    run = _install(repo)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "creating .venv" in run.stdout and "install: ok" in run.stdout
    assert (venv / "bin" / "pip").is_file()
    again = _install(repo)  # idempotent: nothing created or installed the second time
    assert again.returncode == 0, again.stdout + again.stderr
    assert "creating" not in again.stdout and "installing" not in again.stdout
