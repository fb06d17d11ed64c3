"""The toolbox dialog, batch mode and the modeler (``gui_cases.py``), in a process of their own.

Processing's GUI classes leave Qt objects that outlive QGIS's exit once other algorithm tests
have run in the same process (all pass, then the interpreter segfaults at exit, rc 139), so
they run in a child pytest whose result is asserted here. Alone, they still did so on some
runs; the child leaves through ``hard_exit`` once pytest has reported, before the
interpreter's last garbage collection.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CASES = Path(__file__).with_name("gui_cases.py")


def test_dialogs_batch_and_modeler_cases_pass_in_their_own_process() -> None:
    root = CASES.parents[2]
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.processing.hard_exit",
            str(CASES),
        ],  # fmt: skip
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = (run.stdout + run.stderr)[-4000:]
    assert run.returncode == 0, tail
    assert "9 passed" in run.stdout and "skipped" not in run.stdout, tail
