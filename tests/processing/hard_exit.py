"""A pytest plugin for the child process of ``test_gui_and_modeler.py``: leave at once when
pytest is done, with its exit status.

Processing's GUI classes leave Qt objects whose Python wrappers the interpreter's last garbage
collection frees after QGIS has exited: a segfault (rc 139) once every case has passed and
pytest has printed its summary, on some runs and not others (when the collector runs moves
with unrelated code). ``os._exit`` skips that finalisation; nothing is left to write by then.
"""

from __future__ import annotations

import os
import sys

import pytest

_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_STATUS[-1])
