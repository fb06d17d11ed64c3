"""Atomic and staged file outputs: no partial file, earlier results kept, umask permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sar_optical_matcher.core.files import (
    atomic_output,
    check_destination,
    kept_until_replaced,
    staged_outputs,
    temporary_name,
    write_text_atomic,
)


def test_write_text_atomic_creates_the_folder_and_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = write_text_atomic(tmp_path / "new" / "r.points", "a,b\n")
        assert out.read_text(encoding="utf-8") == "a,b\n"
        # mkstemp's 0600 made outputs unreadable to the group on shared folders
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        os.umask(0o077)
        assert stat.S_IMODE(write_text_atomic(tmp_path / "p.txt", "x").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["r.points"]


def test_atomic_output_failure_keeps_the_earlier_file(tmp_path: Path) -> None:
    target = tmp_path / "x.tif"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and f"partial-{os.getpid()}-" in tmp.name
        tmp.write_text("half")
        Path(f"{tmp}.aux.xml").write_text("sidecar")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tif"]
    assert target.read_text() == "old"
    with pytest.raises(ValueError, match="nothing was written to"), atomic_output(target):
        pass
    assert target.read_text() == "old"


def test_staged_outputs_are_renamed_together_or_not_at_all(tmp_path: Path) -> None:
    a, b = tmp_path / "a.tif", tmp_path / "sub" / "b.html"
    a.write_text("old a")
    with pytest.raises(RuntimeError, match="sink failed"), staged_outputs() as stage:
        stage.path(a).write_text("new a")
        stage.path(b).write_text("new b")
        raise RuntimeError("sink failed")  # a later output failed: the earlier ones stay
    assert a.read_text() == "old a" and not b.exists()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.tif"]
    with staged_outputs() as stage:
        stage.path(a).write_text("new a")
        stage.path(b).write_text("new b")
        assert a.read_text() == "old a"  # nothing renamed before the end of the block
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.tif", "b.html"]


def test_temporary_names_are_unique_beside_the_target(tmp_path: Path) -> None:
    names = {temporary_name(tmp_path / "r.tif") for _ in range(100)}
    assert len(names) == 100
    assert all(n.parent == tmp_path and n.suffix == ".tif" for n in names)
    assert temporary_name(tmp_path / "noext").suffix == ".tif"


def test_gdal_sidecars_go_with_the_file(tmp_path: Path) -> None:
    """A PNG's georeference lives in its .aux.xml: renamed with it; a replaced file's stale
    sidecar is removed."""
    target = tmp_path / "r.png"
    with atomic_output(target) as tmp:
        tmp.write_text("png")
        Path(f"{tmp}.aux.xml").write_text("<PAMDataset/>")
    assert Path(f"{target}.aux.xml").read_text() == "<PAMDataset/>"
    with atomic_output(target) as tmp:
        tmp.write_text("png without side file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.png"]


def test_check_destination_says_why_a_path_cannot_be_written(tmp_path: Path) -> None:
    """One check for the plugin's outputs and the trainer's export."""
    check_destination(tmp_path / "new" / "deeper" / "r.tif")  # missing folders: created later
    check_destination(tmp_path / "maps", folder=True)
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=r"cannot write .*afile is a file, not a folder"):
        check_destination(a_file / "sub" / "r.tif")
    with pytest.raises(ValueError, match="is a file, not a folder; choose a folder"):
        check_destination(a_file, folder=True)
    with pytest.raises(ValueError, match="is a folder; give a file name"):
        check_destination(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # the probes left nothing


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_check_destination_tries_the_folder_not_only_its_permissions() -> None:
    """os.access says yes to root in /proc; the output then failed after the whole matching
    with a bare "[Errno 2] No such file or directory: '/proc/nonexistent'"."""
    refusal = r"cannot write /proc/nonexistent/x\.tif: a file cannot be created in /proc \("
    with pytest.raises(ValueError, match=refusal + r"No such file or directory\); choose a"):
        check_destination("/proc/nonexistent/x.tif")


def test_a_layer_written_in_place_is_put_back_whole_when_its_writer_fails(tmp_path: Path) -> None:
    """A shapefile's 4 parts and a GeoPackage with its -journal: what a failed writer left is
    removed and the earlier files come back byte for byte; a writer that succeeds replaces
    them and no backup is left."""
    shp = {ext: f"earlier {ext}" for ext in (".shp", ".shx", ".dbf", ".prj")}
    for ext, text in shp.items():
        (tmp_path / f"tp{ext}").write_text(text)
    (tmp_path / "tp.gpkg").write_text("earlier gpkg")
    with pytest.raises(OSError, match="No space"):
        with kept_until_replaced(tmp_path / "tp.shp"), kept_until_replaced(tmp_path / "tp.gpkg"):
            assert not [e for e in [*shp, ".gpkg"] if (tmp_path / f"tp{e}").exists()]
            (tmp_path / "tp.shp").write_text("half")
            (tmp_path / "tp.cpg").write_text("UTF-8")
            (tmp_path / "tp.gpkg").write_text("half")
            (tmp_path / "tp.gpkg-journal").write_text("journal")
            raise OSError(28, "No space left on device")
    kept = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert kept == {**{f"tp{e}": t for e, t in shp.items()}, "tp.gpkg": "earlier gpkg"}
    with kept_until_replaced(tmp_path / "tp.gpkg"):
        (tmp_path / "tp.gpkg").write_text("new")
    assert (tmp_path / "tp.gpkg").read_text() == "new"
    assert len(list(tmp_path.iterdir())) == 5  # the shapefile's 4 parts and the new gpkg
