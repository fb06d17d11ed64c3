"""The plugin installs into a QGIS profile and its provider is visible to qgis_process."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from scripts.build_zip import build_zip
from tests.conftest import qgis_process_command


@pytest.mark.qgis_process
def test_qgis_process_lists_provider_and_algorithms(qgis_profile: dict[str, str]) -> None:
    run = subprocess.run(
        [*qgis_process_command(), "list"],
        env=qgis_profile,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "SAR-Optical Matcher" in out
    for alg in (
        "sarmatcher:detectkeypoints",
        "sarmatcher:computecorrespondence",
        "sarmatcher:registersartooptical",
    ):
        assert alg in out, f"{alg} missing from qgis_process list"


def test_zip_holds_only_the_plugin(tmp_path: Path) -> None:
    path = build_zip(tmp_path / "p.zip")
    names = zipfile.ZipFile(path).namelist()
    assert {n.split("/")[0] for n in names} == {"sar_optical_matcher"}
    for required in ("metadata.txt", "__init__.py", "LICENSE", "plugin.py"):
        assert f"sar_optical_matcher/{required}" in names
    assert not [n for n in names if "__pycache__" in n or "/tests/" in n or n.endswith(".pt")]
    assert not [n for n in names if n.startswith("sar_optical_matcher/training")]
    modes = {
        n: (i.external_attr >> 16) & 0o777 for n, i in zipfile.ZipFile(path).NameToInfo.items()
    }
    assert set(modes.values()) == {0o644}, modes  # the model was 0600 (unreadable when shared)


def test_metadata_has_required_fields() -> None:
    from configparser import ConfigParser

    cfg = ConfigParser()  # interpolation on, as QGIS's Plugin Manager and plugins.qgis.org read it
    cfg.read(Path(__file__).resolve().parent.parent / "metadata.txt")
    general = cfg["general"]
    # every value must read back: a bare '%' in the changelog ("1 % response floor") raised
    # InterpolationSyntaxError, so the Plugin Manager showed no changelog and the plugin site's
    # upload check (parser.items("general")) refused the zip; '%%' is a percent sign
    items = dict(cfg.items("general"))
    assert "%" in items["changelog"] and "%%" not in items["changelog"]
    for key in (
        "name",
        "qgisMinimumVersion",
        "description",
        "about",
        "version",
        "author",
        "email",
        "repository",
    ):
        assert general.get(key), f"metadata.txt lacks {key}"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"


def test_class_factory_registers_and_unloads_provider(qgis_app) -> None:
    from qgis.core import QgsApplication

    import sar_optical_matcher

    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("sarmatcher")  # registered by other tests' fixtures?
    plugin = sar_optical_matcher.classFactory(None)
    plugin.initProcessing()
    plugin.initProcessing()  # QGIS calls it from initGui too: still one provider
    if existing is None:
        assert plugin.provider is not None
        assert registry.providerById("sarmatcher") is plugin.provider
        assert registry.algorithmById("sarmatcher:registersartooptical") is not None
        plugin.unload()
        assert registry.providerById("sarmatcher") is None
    else:  # never a duplicate, and unload leaves the other copy alone
        assert plugin.provider is None
        plugin.unload()
        assert registry.providerById("sarmatcher") is existing


def test_a_missing_package_is_said_not_dumped(tmp_path: Path) -> None:
    """Without scipy the provider cannot import: the plugin logs what to install and loads
    nothing (a traceback and a failed plugin load before). Run in a fresh interpreter."""

    script = (
        "import sys; sys.modules['scipy'] = None\n"
        "from qgis.core import Qgis, QgsApplication\n"
        "app = QgsApplication([], False); app.initQgis()\n"
        "logged = []\n"
        "QgsApplication.messageLog().messageReceived.connect("
        "lambda text, tag, level: logged.append((text, int(level))))\n"
        "import sar_optical_matcher\n"
        "plugin = sar_optical_matcher.classFactory(None); plugin.initProcessing()\n"
        "assert plugin.provider is None\n"
        "assert QgsApplication.processingRegistry().providerById('sarmatcher') is None\n"
        "print([t for t, level in logged if level == int(Qgis.Critical)][0])\n"
        "plugin.unload()\n"
    )
    run = _fresh_python(script, tmp_path)
    assert "package 'scipy' is missing" in run.stdout and "python3-scipy" in run.stdout


def test_reload_leaves_one_provider_and_unload_leaves_none(tmp_path: Path) -> None:
    """A plugin reload (unload, purge the modules, load again, as qgis.utils.reloadPlugin does)
    registers the provider once with its three algorithms; the last unload leaves nothing.
    Run in a fresh interpreter: purging the modules here would split other tests' classes."""

    script = (
        "import sys\n"
        "from qgis.core import QgsApplication\n"
        "app = QgsApplication([], False); app.initQgis()\n"
        "reg = QgsApplication.processingRegistry()\n"
        "def ours():\n"
        "    ids = [p.id() for p in reg.providers()].count('sarmatcher')\n"
        "    return ids, len([a for a in reg.algorithms() if a.id().startswith('sarmatcher:')])\n"
        "import sar_optical_matcher\n"
        "plugin = sar_optical_matcher.classFactory(None); plugin.initGui()\n"
        "first = ours(); plugin.unload(); gone = ours()\n"
        "for name in [m for m in sys.modules if m.split('.')[0] == 'sar_optical_matcher']:\n"
        "    del sys.modules[name]\n"
        "import sar_optical_matcher\n"
        "plugin = sar_optical_matcher.classFactory(None)\n"
        "plugin.initGui(); plugin.initProcessing()\n"
        "again = ours(); plugin.unload()\n"
        "print(first, gone, again, ours())\n"
    )
    run = _fresh_python(script, tmp_path)
    assert run.stdout.split("\n")[-2] == "(1, 3) (0, 0) (1, 3) (0, 0)"


def _fresh_python(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh offscreen interpreter with the repository importable."""
    import os
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(root)}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120, cwd=cwd)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def test_install_replaces_the_old_copy_and_a_failed_one_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make deploy`` removed the installed plugin before a copy that could fail."""
    import shutil

    from scripts import build_zip as bz

    plugins = tmp_path / "my plugins"  # a space, as in macOS's 'Application Support'
    dest = bz.install_plugin(plugins)
    shipped = {arc for _, arc in bz.plugin_files()}
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} == shipped
    assert {oct(p.stat().st_mode & 0o777) for p in dest.rglob("*") if p.is_file()} == {"0o644"}
    assert oct(dest.stat().st_mode & 0o777) == "0o755"
    (dest / "stale.py").write_text("# from an older version\n")
    bz.install_plugin(plugins)  # a second install: the same files, nothing stale, no leftovers
    assert not (dest / "stale.py").exists()
    assert [p.name for p in plugins.iterdir()] == ["sar_optical_matcher"]

    marker = dest / "metadata.txt"
    before = marker.read_bytes()
    real_copy, calls = shutil.copyfile, []

    def failing_copy(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(bz.shutil, "copyfile", failing_copy)
    with pytest.raises(OSError, match="No space left"):
        bz.install_plugin(plugins)
    assert marker.read_bytes() == before  # the installed copy is whole
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} == shipped
    assert [p.name for p in plugins.iterdir()] == ["sar_optical_matcher"]


def test_install_over_a_link_a_strict_umask_and_a_failed_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A linked checkout was renamed aside and left as a hidden link for good; sub-folders
    followed a umask of 077 (unreadable to other users' QGIS); a failed swap whose restore
    failed too deleted the only installed copy."""
    import os

    from scripts import build_zip as bz

    plugins, checkout = tmp_path / "plugins", tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "mine.py").write_text("# a developer's work\n")
    plugins.mkdir()
    (plugins / "sar_optical_matcher").symlink_to(checkout, target_is_directory=True)
    old_umask = os.umask(0o077)
    try:
        dest = bz.install_plugin(plugins)
    finally:
        os.umask(old_umask)
    assert not dest.is_symlink() and (dest / "metadata.txt").is_file()
    assert (checkout / "mine.py").read_text() == "# a developer's work\n"  # target untouched
    assert [p.name for p in plugins.iterdir()] == ["sar_optical_matcher"]
    folders = [dest, *(p for p in dest.rglob("*") if p.is_dir())]
    assert len(folders) > 3 and {oct(p.stat().st_mode & 0o777) for p in folders} == {"0o755"}

    before = (dest / "metadata.txt").read_bytes()
    real_rename = Path.rename

    def busy(self: Path, target: Path) -> Path:  # both renames onto the plugin folder fail
        if Path(target) == dest:
            raise OSError(16, "Device or resource busy")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", busy)
    with pytest.raises(OSError, match="busy"):
        bz.install_plugin(plugins)
    monkeypatch.undo()
    kept = [p for p in plugins.iterdir() if (p / "metadata.txt").is_file()]
    assert len(kept) == 1 and (kept[0] / "metadata.txt").read_bytes() == before
