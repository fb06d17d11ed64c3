"""Windows behaviour simulated on any system: open files cannot be renamed, replaced or removed.

On Windows GDAL (and Excel) open files without FILE_SHARE_DELETE, so while a raster is loaded
as a QGIS layer ``os.replace`` onto it, renaming it and deleting it all fail with
``PermissionError``. These tests make ``os.replace`` / ``Path.unlink`` behave that way for the
files a test marks as open.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sar_optical_matcher.core import files


@pytest.fixture
def open_files(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[Path]]:
    """Paths held open 'as on Windows': renaming from or onto them, or removing them, fails."""
    held: set[Path] = set()
    real_replace, real_unlink = os.replace, Path.unlink

    def replace(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        for p in (Path(src), Path(dst)):
            if p in held:
                raise PermissionError(13, "Access is denied", str(src), None, str(dst))
        real_replace(src, dst)

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self in held:
            raise PermissionError(32, "The process cannot access the file", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(files.os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    yield held


def test_an_output_open_in_qgis_fails_with_a_clear_error_and_nothing_changes(
    tmp_path: Path, open_files: set[Path]
) -> None:
    """Register's outputs of an earlier run: the raster is free, the .points file is open.

    The raster was replaced and then the .points rename failed, leaving the new raster beside
    the old GCPs, and the error was '[Errno 13] Access is denied' naming a temporary file.
    """
    raster, points = tmp_path / "out.tif", tmp_path / "out.points"
    raster.write_text("old raster")
    Path(f"{raster}.aux.xml").write_text("old aux")
    points.write_text("old points")
    open_files.add(points)
    with pytest.raises(ValueError) as err, files.staged_outputs() as stage:
        stage.path(raster).write_text("new raster")
        stage.path(points).write_text("new points")
    text = str(err.value)
    assert text.startswith(f"cannot replace {points}: Access is denied")
    assert "loaded as a layer in QGIS" in text and "No output was changed." in text
    assert raster.read_text() == "old raster" and points.read_text() == "old points"
    assert Path(f"{raster}.aux.xml").read_text() == "old aux"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.points",
        "out.tif",
        "out.tif.aux.xml",
    ]
    open_files.clear()  # layer removed: the same run now replaces both, and the stale sidecar
    with files.staged_outputs() as stage:
        stage.path(raster).write_text("new raster")
        stage.path(points).write_text("new points")
    assert (raster.read_text(), points.read_text()) == ("new raster", "new points")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.points", "out.tif"]


def test_a_single_open_output_is_named(tmp_path: Path, open_files: set[Path]) -> None:
    target = tmp_path / "reg.tif"
    target.write_text("old")
    open_files.add(target)
    with pytest.raises(ValueError, match=r"cannot replace .*reg\.tif: .*No output was changed"):
        files.write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg.tif"]


def test_a_failed_write_keeps_its_error_when_the_temporary_file_is_still_open(
    tmp_path: Path, open_files: set[Path]
) -> None:
    """The writer failed with its file still open: the cleanup's PermissionError replaced the
    writer's error (the user saw 'The process cannot access the file ... .partial-...')."""
    target = tmp_path / "reg.tif"
    target.write_text("old")
    with pytest.raises(ValueError, match="writing reg.tif failed: disk full"):
        with files.atomic_output(target) as tmp:
            tmp.write_text("half")
            open_files.add(tmp)
            raise ValueError("writing reg.tif failed: disk full")
    assert target.read_text() == "old"
    held = open_files.pop()  # left: Windows removes no open file; its name says what it is
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([held.name, "reg.tif"])
    held.unlink()
    with pytest.raises(KeyboardInterrupt), files.atomic_output(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg.tif"]  # removed when it can be


def _open_paths_under(folder: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to list open files")
def test_a_failed_raster_write_closes_its_temporary_file(tmp_path: Path) -> None:
    """A write that failed after the GeoTIFF was created kept it open (the dataset lived on in
    the traceback): on Windows the cleanup could not remove it and it was left behind."""
    import numpy as np

    from sar_optical_matcher.rasters import write_raster_atomic

    gt = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)
    with pytest.raises(ValueError, match="could not convert") as err:
        write_raster_atomic(tmp_path / "x.tif", np.zeros((4, 4), np.float32), gt, "EPSG:32633",
                            nodata="none")  # type: ignore[arg-type]  # fmt: skip
    assert err.value.__traceback__ is not None  # the traceback is alive, as in a caller
    assert _open_paths_under(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_a_long_output_name_gets_a_temporary_name_that_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 249-character name (a Sentinel-1 product name and more) is legal, but its temporary
    name was 272: '[Errno 36] File name too long: ...partial-...points'."""
    target = tmp_path / ("S1A_IW_GRDH_é" + "x" * 229 + ".points")
    assert len(target.name) == 249
    assert files.write_text_atomic(target, "gcps\n").read_text(encoding="utf-8") == "gcps\n"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    tmp = files.temporary_name(target)
    assert len(tmp.name.encode("utf-8")) == files.MAX_NAME_BYTES
    assert tmp.name.startswith("S1A_IW_GRDH_é") and tmp.name.endswith(".points")
    assert tmp.name.split(".partial-")[0] in target.stem
    # Windows: a path under the 259-character limit gets a temporary path under it too
    monkeypatch.setattr(files, "WINDOWS", True)
    short = tmp_path / "reg.tif"
    folder = tmp_path / ("d" * (files.MAX_WINDOWS_PATH - 60 - len(str(tmp_path)) - 1))
    deep = folder / ("reg_" + "x" * 50 + ".tif")
    assert len(str(deep)) == files.MAX_WINDOWS_PATH - 1
    tmp = files.temporary_name(deep)
    assert len(str(tmp)) == files.MAX_WINDOWS_PATH and tmp.name.startswith("reg_xxx")
    assert files.temporary_name(short).name.startswith("reg.partial-")


def test_a_name_too_long_for_any_file_system_is_refused_before_the_run(tmp_path: Path) -> None:
    """It was an OSError traceback '[Errno 36] File name too long' out of the parameter check."""
    name = "é" * 128 + ".tif"  # 132 characters, 260 bytes
    with pytest.raises(ValueError, match=r"is 260 bytes long, file systems allow 255; choose a"):
        files.check_destination(tmp_path / name)
    with pytest.raises(ValueError, match=r"is 300 bytes long"):
        files.check_destination(tmp_path / ("x" * 300) / "r.tif")
    files.check_destination(tmp_path / ("x" * 251 + ".tif"))


@pytest.fixture(params=[False, True], ids=["DontUseExceptions", "UseExceptions"])
def gdal_exceptions(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Both GDAL error modes: QGIS 3.38 and later call gdal.UseExceptions() for every plugin."""
    from osgeo import gdal

    was = gdal.GetUseExceptions()
    gdal.UseExceptions() if request.param else gdal.DontUseExceptions()
    try:
        yield request.param
    finally:
        gdal.UseExceptions() if was else gdal.DontUseExceptions()


def test_a_truncated_raster_says_so_under_either_gdal_error_mode(
    tmp_path: Path, gdal_exceptions: bool
) -> None:
    """With gdal.UseExceptions() (QGIS 3.40) a read of a truncated GeoTIFF was GDAL's bare
    RuntimeError ('IReadBlock failed at X offset 0, Y offset 1'), without the file's name as
    given nor the hint to check and copy it again."""
    import numpy as np
    from osgeo import gdal, osr

    from sar_optical_matcher import rasters

    path = tmp_path / "sar.tif"
    ds = gdal.GetDriverByName("GTiff").Create(
        str(path), 512, 512, 1, gdal.GDT_Float32, ["TILED=YES", "COMPRESS=DEFLATE"]
    )
    ds.SetGeoTransform((500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    noise = np.random.default_rng(0).normal(size=(512, 512)).astype(np.float32)
    ds.GetRasterBand(1).WriteArray(noise)
    ds = None
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # the last tiles are cut off
    info = rasters.open_raster(path)
    calls = {
        "read_window": lambda: rasters.read_window(info, 1, 0, 0, 512, 512),
        "raster_sar_scale": lambda: rasters.raster_sar_scale(info, 1),
        "read_on_grid": lambda: rasters.read_on_grid(info, 1, info, 0, 0, 512, 512),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError) as err:
            call()
        text = str(err.value)
        assert text.startswith(f"reading {str(path)!r}"), name
        assert "IReadBlock failed" in text and text.endswith(rasters.CORRUPT_HINT), name


def test_a_raster_layer_with_gdal_open_options_is_explained(qgis_app, tmp_path: Path) -> None:
    """A layer added with GDAL open options has the source '<path>|option:KEY=VALUE'; the
    plugin handed that to GDAL and said '... as a raster (the file does not exist)'."""
    import numpy as np
    from qgis.core import QgsProcessingContext, QgsProcessingException, QgsRasterLayer

    from sar_optical_matcher.processing.detect_keypoints import DetectKeypointsAlgorithm
    from tests.processing import OPT_GT, _write

    path = _write(tmp_path / "opt é.tif", np.zeros((64, 64), np.uint8), OPT_GT)
    alg = DetectKeypointsAlgorithm()
    alg.initAlgorithm()
    plain = QgsRasterLayer(str(path), "opt", "gdal")
    assert alg.settings({"INPUT": plain}, QgsProcessingContext()).raster_path == str(path)
    layer = QgsRasterLayer(f"{path}|option:NUM_THREADS=2", "opt", "gdal")
    assert layer.isValid()
    with pytest.raises(QgsProcessingException) as err:
        alg.settings({"INPUT": layer}, QgsProcessingContext())
    text = str(err.value)
    del plain, layer, err  # freed before QGIS exits (after, it crashed at garbage collection)
    assert text.startswith(
        "INPUT: layer 'opt' is opened with the GDAL open option(s) NUM_THREADS=2"
    )
    assert str(path) in text and "does not exist" not in text


def test_a_model_under_a_non_ascii_folder_loads_as_onnxruntime_on_windows_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime on Windows failed to initialise a session from a path outside the ANSI code
    page (microsoft/onnxruntime#27724): the plugin's own default model under a profile folder
    'C:/Users/田中/...' did not load. Simulated: a str path with non-ASCII characters fails."""
    import numpy as np

    ort = pytest.importorskip("onnxruntime")
    from sar_optical_matcher.model.runtime import OnnxMatcher
    from tests.model_fixtures import make_twin_model

    ascii_model = make_twin_model(tmp_path / "twin.onnx", descriptor_size=32, widths=(4, 8, 8, 8))
    folder = tmp_path / "田中 José" / "plugins"
    folder.mkdir(parents=True)
    model = folder / "default.onnx"
    model.write_bytes(ascii_model.read_bytes())
    real = ort.InferenceSession

    def windows_session(source, *args, **kwargs):
        if isinstance(source, str) and not source.isascii():
            raise RuntimeError(
                "Exception during initialization: No mapping for the Unicode character exists "
                "in the target multi-byte code page."
            )
        return real(source, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", windows_session)
    rng = np.random.default_rng(0)
    t = OnnxMatcher(ascii_model, device="cpu", threads=1, log=lambda _: None).contract
    templates = rng.standard_normal((3, t.template_size, t.template_size)).astype(np.float32)
    want = OnnxMatcher(ascii_model, device="cpu", threads=1, log=lambda _: None)
    got = OnnxMatcher(model, device="cpu", threads=1, log=lambda _: None)
    np.testing.assert_array_equal(
        got.optical_descriptors(templates), want.optical_descriptors(templates)
    )


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to list open files")
def test_a_failed_map_raster_write_closes_its_temporary_file(tmp_path: Path) -> None:
    """write_map_rasters kept its GeoTIFF open when a step after Create failed: on Windows the
    temporary map could not be removed and was left behind."""
    from types import SimpleNamespace

    import numpy as np

    from sar_optical_matcher.registration import write_map_rasters

    class Optical:  # fails after the map's GeoTIFF is created (the CRS is read after Create)
        geotransform = (500000.0, 10.0, 0.0, 4100000.0, 0.0, -10.0)

        @property
        def crs_wkt(self) -> str:
            raise RuntimeError("no CRS")

    rec = SimpleNamespace(id=3, opt_x_px=100.0, opt_y_px=80.0)
    optical = Optical()
    maps = np.zeros((1, 33, 33), np.float32)
    with pytest.raises(RuntimeError, match="no CRS") as err:
        write_map_rasters(tmp_path / "maps", [rec], maps, optical, 96, 64)
    assert err.value.__traceback__ is not None  # the traceback is alive, as in a caller
    assert _open_paths_under(tmp_path) == []
    assert list((tmp_path / "maps").iterdir()) == []
