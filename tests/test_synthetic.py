"""Synthetic SAR/optical generator: physics of the SAR rendering and the ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from osgeo import gdal
from scipy import ndimage

from sar_optical_matcher.core import synthetic as syn
from sar_optical_matcher.synthetic import make_georeferenced_pair, read_truth, write_pair


def _fine_shift(moving: np.ndarray, ref: np.ndarray, upsample: int = 50) -> np.ndarray:
    """(dx, dy), ``moving(x) ~ ref(x - d)``, |d| small: windowed cross-correlation whose Fourier
    series is evaluated on a 1/``upsample`` px grid around its integer peak."""
    win = np.outer(np.hanning(ref.shape[0]), np.hanning(ref.shape[1]))
    a, b = ((im - im.mean()) / im.std() * win for im in (moving, ref))
    spec = np.fft.fft2(a) * np.conj(np.fft.fft2(b))
    h, w = spec.shape
    r, c = np.unravel_index(np.argmax(np.real(np.fft.ifft2(spec))), spec.shape)
    dy0, dx0 = (r + h // 2) % h - h // 2, (c + w // 2) % w - w // 2
    steps = np.arange(-1.0, 1.0 + 1e-9, 1.0 / upsample)
    ey = np.exp(2j * np.pi * np.outer(dy0 + steps, np.fft.fftfreq(h)))
    ex = np.exp(2j * np.pi * np.outer(np.fft.fftfreq(w), dx0 + steps))
    i, j = np.unravel_index(np.argmax(np.real(ey @ spec @ ex)), (steps.size, steps.size))
    return np.array([dx0 + steps[j], dy0 + steps[i]])


def xcorr_shift(moving: np.ndarray, ref: np.ndarray, margin: int = 16) -> np.ndarray:
    """Sub-pixel (dx, dy) with ``moving(x) ~ ref(x - d)`` for equally shaped images, |d| < margin.

    Two passes: the integer shift, then the fraction on crops re-aligned by it (a window pulls
    the correlation peak towards zero, so the fine pass must start near zero).
    """
    inner = np.s_[margin:-margin, margin:-margin]
    dx0, dy0 = np.rint(_fine_shift(moving[inner], ref[inner])).astype(int)
    h, w = ref.shape
    crop = moving[margin + dy0 : h - margin + dy0, margin + dx0 : w - margin + dx0]
    return np.array([dx0, dy0]) + _fine_shift(crop, ref[inner])


def test_xcorr_shift_sign_and_accuracy():
    big = syn.smooth_noise((120, 120), 3.0, np.random.default_rng(0))
    moving = np.roll(big, (2, -5), axis=(0, 1))  # moving(x) = big(x - (-5, 2))
    np.testing.assert_allclose(xcorr_shift(moving, big), [-5, 2], atol=0.03)
    sub = ndimage.shift(big, (7.3, -0.6), order=3, mode="wrap")  # sub(x) = big(x - d)
    np.testing.assert_allclose(xcorr_shift(sub, big), [-0.6, 7.3], atol=0.05)


def homogeneous_scene(shape=(64, 128), cls=syn.GRASS, px=5.0) -> syn.Scene:
    return syn.Scene(
        labels=np.full(shape, cls, np.uint8),
        height_m=np.zeros(shape, np.float32),
        parcel=np.zeros(shape, np.int32),
        optical=np.full((*shape, 3), 0.1, np.float32),
        pixel_size_m=px,
    )


def test_same_seed_same_arrays_other_seed_differs():
    a = syn.make_pair(64, np.random.default_rng(7), polynomial=1.0)
    b = syn.make_pair(64, np.random.default_rng(7), polynomial=1.0)
    c = syn.make_pair(64, np.random.default_rng(8), polynomial=1.0)
    np.testing.assert_array_equal(a.optical, b.optical)
    np.testing.assert_array_equal(a.sar, b.sar)
    np.testing.assert_array_equal(a.truth.shift_px, b.truth.shift_px)
    assert not np.array_equal(a.truth.shift_px, c.truth.shift_px)
    assert not np.array_equal(a.labels, c.labels)


def test_scene_has_every_land_cover_and_sane_ranges():
    scene = syn.render_scene(256, np.random.default_rng(1))
    counts = np.bincount(scene.labels.ravel(), minlength=len(syn.CLASS_NAMES))
    assert (counts > 0).all(), dict(zip(syn.CLASS_NAMES, counts))
    assert scene.optical.dtype == np.float32 and scene.optical.shape == (256, 256, 3)
    assert 0.0 <= scene.optical.min() and scene.optical.max() <= 1.0
    assert 6.0 < np.median(scene.height_m[scene.labels == syn.BUILDING]) < 40.0
    assert (scene.height_m[scene.labels == syn.WATER] == 0).all()


def test_sar_radiometry_is_not_a_copy_of_the_optical():
    rng = np.random.default_rng(1)
    scene = syn.render_scene(256, rng)
    amp = syn.render_sar(scene, rng, looks=4)
    med = [float(np.median(amp[scene.labels == k])) for k in range(len(syn.CLASS_NAMES))]
    built_up = amp[np.isin(scene.labels, [syn.URBAN, syn.BUILDING])].mean()
    assert built_up > 5 * amp[scene.labels == syn.WATER].mean()  # > 14 dB contrast
    assert med[syn.FOREST] > 1.5 * med[syn.GRASS]  # volume scattering
    assert med[syn.ROAD] < 0.5 * med[syn.CROP]  # roads dark in SAR, not in the optical
    lum = scene.optical @ np.array([0.299, 0.587, 0.114], np.float32)
    r = np.corrcoef(lum.ravel(), amp.ravel())[0, 1]
    assert abs(r) < 0.5, r


@pytest.mark.parametrize("looks", [1, 4])
def test_speckle_intensity_coefficient_of_variation(looks):
    sigma0 = syn.render_sigma0(homogeneous_scene((128, 128)), np.random.default_rng(1))
    assert np.ptp(sigma0) < 1e-6 * sigma0.mean()  # homogeneous ground, no texture
    intensity = syn.render_sar(
        homogeneous_scene((128, 128)), np.random.default_rng(1), looks=looks, output="intensity"
    )
    cv = intensity.std() / intensity.mean()
    assert abs(cv * np.sqrt(looks) - 1.0) < 0.15
    assert abs(intensity.mean() / sigma0.mean() - 1.0) < 0.05  # speckle preserves the mean
    amp = syn.render_sar(homogeneous_scene((128, 128)), np.random.default_rng(1), looks=looks)
    np.testing.assert_allclose(amp**2, intensity, rtol=1e-5)


def tall_building_scene(height=40.0) -> syn.Scene:
    scene = homogeneous_scene((64, 128), px=5.0)
    scene.labels[20:44, 60:80] = syn.BUILDING
    scene.height_m[20:44, 60:80] = height
    scene.parcel[20:44, 60:80] = 1
    return scene


@pytest.mark.parametrize("look", ["east", "west"])
def test_layover_towards_sensor_shadow_behind_double_bounce_at_foot(look):
    scene = tall_building_scene()
    if look == "west":  # mirror the scene: the same physics must come out mirrored
        for a in (scene.labels, scene.height_m, scene.parcel):
            a[:] = a[:, ::-1]
    sigma0 = syn.render_sigma0(scene, np.random.default_rng(0), 35.0, look)
    profile = sigma0[24:40].mean(axis=0).astype(np.float64)
    if look == "west":
        profile = profile[::-1]
    ground = np.median(profile[:30])
    layover_px = 40.0 / np.tan(np.deg2rad(35.0)) / 5.0  # 11.4 px
    shadow_px = 40.0 * np.tan(np.deg2rad(35.0)) / 5.0  # 5.6 px
    onset = np.argmax(profile > 2 * ground)  # first bright pixel, sensor side (west)
    assert abs(onset - (60 - layover_px)) <= 1.0, onset
    assert set(np.argsort(profile)[-2:]) == {59, 60}  # double bounce at the wall foot x = 60
    assert profile[59] > 30 * ground
    dark = profile[int(np.ceil(80 - layover_px)) : int(80 + shadow_px)]
    assert dark.max() < 0.05 * ground  # radar shadow (noise floor)
    assert abs(profile[int(80 + shadow_px) + 2] / ground - 1) < 0.01


def test_south_look_displaces_towards_north():
    sigma0 = syn.render_sigma0(tall_building_scene(), np.random.default_rng(0), 35.0, "south")
    col = sigma0[:, 64:76].mean(axis=1)
    assert abs(np.argmax(col > 2 * np.median(col[50:])) - (20 - 40 / np.tan(0.6109) / 5)) <= 1


def test_truth_inverse_and_json_round_trip():
    pair = syn.make_pair(64, np.random.default_rng(3), max_affine=0.03, polynomial=2.0)
    truth = pair.truth
    p = np.random.default_rng(0).uniform(-10, 74, (200, 2))
    s = truth.optical_px_to_sar_px(p)
    np.testing.assert_allclose(truth.sar_px_to_optical_px(s), p, atol=1e-6)
    back = syn.Truth.from_json(json.dumps(json.loads(truth.to_json())))
    np.testing.assert_allclose(back.optical_px_to_sar_px(p), s, atol=1e-9)
    np.testing.assert_allclose(back.misregistration_at(truth.centre_px[None]), [truth.shift_px])
    assert back.sar_gt == truth.sar_gt and back.sar_shape == truth.sar_shape


@pytest.mark.parametrize(("ratio", "epsg"), [(1.0, None), (1.5, 3857)])
def test_warping_sar_with_truth_aligns_with_the_reference(ratio, epsg):
    pair = make_georeferenced_pair(
        128, np.random.default_rng(5), sar_crs_epsg=epsg, looks=None, max_shift_px=8,
        max_affine=0.03, polynomial=2.0, sar_pixel_size_ratio=ratio,
    )  # fmt: skip
    warped = syn.warp_sar_to_optical(pair.sar_sigma0, pair.truth)
    assert np.isfinite(warped).all()  # the SAR covers the optical footprint
    ref = pair.sigma0_optical_grid
    # linear intensity: its bright lines keep their centroid under (double) linear resampling;
    # in log units the resampling blur of the bright lines biases the peak by up to ~0.3 px
    assert np.abs(xcorr_shift(warped, ref)).max() < 0.12
    if ratio == 1.0:  # same grid resolution: the images agree pixel for pixel
        assert np.corrcoef(np.log(warped).ravel(), np.log(ref).ravel())[0, 1] > 0.9
    # the check can fail: a truth off by one pixel is detected
    wrong = syn.Truth.from_dict(dict(pair.truth.to_dict(), shift_px=pair.truth.shift_px + [1, 0]))
    off = syn.warp_sar_to_optical(pair.sar_sigma0, wrong)
    np.testing.assert_allclose(xcorr_shift(off, ref), [-1.0, 0.0], atol=0.12)


@pytest.mark.parametrize("epsg", [None, 3857, 32632])
def test_stored_georeference_is_off_by_the_drawn_shift(tmp_path, epsg):
    pair = make_georeferenced_pair(
        128, np.random.default_rng(11), sar_crs_epsg=epsg, looks=None, max_shift_px=10,
        max_affine=0.0,
    )  # fmt: skip
    paths = write_pair(pair, tmp_path, sar_dtype="float32")
    opt = gdal.Open(str(paths["optical"]))
    warped = gdal.Warp(
        "", str(paths["sar"]), format="MEM", dstSRS=opt.GetProjection(), resampleAlg="bilinear",
        outputBounds=(*pair.truth.optical_gt[0:1], pair.truth.optical_gt[3] - 128 * 10.0,
                      pair.truth.optical_gt[0] + 128 * 10.0, pair.truth.optical_gt[3]),
        width=128, height=128,
    ).ReadAsArray()  # fmt: skip
    assert warped.min() > 0  # the SAR covers the optical footprint
    shift = xcorr_shift(warped**2, pair.sigma0_optical_grid)  # stored amplitude -> intensity
    np.testing.assert_allclose(shift, pair.truth.shift_px, atol=0.12)
    assert np.abs(pair.truth.shift_px).max() > 2  # a real misregistration was drawn


@pytest.mark.parametrize("sar_dtype", ["float32", "uint16", "uint8", "db"])
def test_geotiffs_open_in_gdal_with_crs_geotransform_and_nodata(tmp_path, sar_dtype):
    pair = make_georeferenced_pair(64, np.random.default_rng(2), sar_crs_epsg=32632)
    paths = write_pair(pair, tmp_path, stem="x", sar_dtype=sar_dtype)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "x_optical.tif",
        "x_sar.tif",
        "x_truth.json",
    ]
    opt, sar = gdal.Open(str(paths["optical"])), gdal.Open(str(paths["sar"]))
    assert opt.RasterCount == 3 and opt.RasterXSize == 64
    assert opt.GetRasterBand(1).DataType == gdal.GDT_UInt16
    assert opt.GetSpatialRef().GetAuthorityCode(None) == "32633"
    assert sar.GetSpatialRef().GetAuthorityCode(None) == "32632"
    np.testing.assert_allclose(opt.GetGeoTransform(), pair.truth.optical_gt)
    np.testing.assert_allclose(sar.GetGeoTransform(), pair.truth.sar_gt)
    assert (sar.RasterYSize, sar.RasterXSize) == pair.truth.sar_shape
    band = sar.GetRasterBand(1)
    nodata = band.GetNoDataValue()
    assert nodata == 0 if sar_dtype.startswith("uint") else np.isnan(nodata)
    values = band.ReadAsArray().astype(np.float64)
    # the stored values are a monotonic encoding of the rendered intensity
    rho = np.corrcoef(
        np.argsort(np.argsort(values.ravel())), np.argsort(np.argsort(pair.sar.ravel()))
    )
    assert rho[0, 1] > 0.99
    truth = read_truth(paths["truth"])
    assert truth.meta["sar_encoding"]["dtype"] == sar_dtype
    p = np.array([[10.0, 20.0], [50.5, 3.25]])
    np.testing.assert_allclose(truth.optical_px_to_sar_px(p), pair.truth.optical_px_to_sar_px(p))


def test_cli_writes_the_pair_and_prints_the_truth(tmp_path, capsys):
    from scripts.make_synthetic_pair import main

    main(["--size", "64", "--seed", "4", "--out", str(tmp_path), "--sar-crs", "3857",
          "--sar-dtype", "uint8", "--polynomial", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert "misregistration" in out and "pair_sar.tif" in out
    truth = read_truth(tmp_path / "pair_truth.json")
    assert truth.sar_epsg == 3857 and truth.meta["sar_encoding"]["dtype"] == "uint8"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: syn.render_scene(8, np.random.default_rng(0)), "size_px"),
        (
            lambda: syn.render_sigma0(homogeneous_scene(), np.random.default_rng(0), 35, "up"),
            "look",
        ),
        (lambda: syn.apply_speckle(np.ones((4, 4)), 0.5, np.random.default_rng(0)), "looks"),
        (lambda: syn.make_pair(32, np.random.default_rng(0), sar_crs_epsg=3857), "crs_transform"),
        # the script's bad values gave LinAlgError, ZeroDivisionError, OverflowError
        (lambda: syn.make_pair(0, np.random.default_rng(0)), "size_px must be a whole number"),
        (lambda: syn.make_pair(64, np.random.default_rng(0), pixel_size_m=0), "pixel_size_m"),
        (lambda: syn.make_pair(64, np.random.default_rng(0), max_shift_px=np.inf), "finite"),
        (lambda: syn.make_pair(64, np.random.default_rng(0), polynomial=np.nan), "finite"),
        (lambda: syn.Truth.optical_px_to_sar_px(None, np.zeros(3)), r"\(N, 2\)"),  # type: ignore[arg-type]
    ],
)
def test_bad_inputs_raise_helpful_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_make_synthetic_pair_script_says_what_is_wrong(tmp_path, capsys) -> None:
    """An unknown EPSG wrote rasters with no CRS at all, exit 0; a stem with a folder in it
    blamed the folder's permissions."""
    from scripts import make_synthetic_pair as msp

    for argv, message in (
        (["--optical-crs", "99999"], "EPSG:99999 is not a coordinate system GDAL knows"),
        (["--stem", "a/b"], "is a file name prefix, not a path"),
        (["--size", "0"], "size_px must be a whole number"),
    ):
        with pytest.raises(SystemExit, match=message):
            msp.main([*argv, "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit, match="make_synthetic_pair.py: error: .*afile"):
        msp.main(["--size", "64", "--out", str(tmp_path / "afile" / "sub")])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--transform", "9"], "invalid choice: 9"),  # crashed QGIS's exit (segfault)
        (["--match-pixel-size", "-1"], "must be 0 (automatic) or a positive finite size, got -1.0"),
        (["--model", "/nonexistent.onnx"], "not found"),  # was "REGISTRATION REFUSED"
        (["--size", "200"], "leaves no room for keypoints"),
        (["--pixel-size", "0"], "pixel_size_m must be a positive number"),  # ZeroDivisionError
    ],
)
def test_demo_refuses_bad_options_before_starting_qgis(tmp_path, monkeypatch, capsys, argv,
                                                       message) -> None:  # fmt: skip
    from scripts import demo

    monkeypatch.setattr("sys.argv", ["demo.py", *argv, "--out", str(tmp_path / "d")])
    with pytest.raises(SystemExit) as exit_info:
        demo.main()
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
