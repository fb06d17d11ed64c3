"""Evaluation harness: samples carry the true offset, metrics are right, the CLI writes files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from sar_optical_matcher.core import classical
from training import evaluation_harness as harness
from training.sources import PairRecord

ROOT = Path(__file__).resolve().parents[2]
DATA_3MOS = ROOT.parent / "shared" / "data" / "3mos"


def texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape)
    for sigma in (1.5, 4.0):
        layer = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
        out += layer / layer.std()
    return 100.0 + 20.0 * out


def shifted_record(
    rng: np.random.Generator, shape=(90, 110), bias=(0, 0), name="rec", scene="scene-a"
) -> PairRecord:
    """SAR = optical displaced by ``bias`` (x, y): sar[y, x] = optical[y - by, x - bx]."""
    pad = 8
    base = texture(rng, (shape[0] + 2 * pad, shape[1] + 2 * pad))
    optical = base[pad : pad + shape[0], pad : pad + shape[1]]
    bx, by = bias
    sar = base[pad - by : pad - by + shape[0], pad - bx : pad - bx + shape[1]]
    return PairRecord(
        sar=sar.astype(np.float32),
        optical=optical.astype(np.float32),
        sar_scale="db",
        scene=scene,
        sensor="TEST",
        source="synthetic",
        name=name,
        offset_xy_px=(float(bx), float(by)),
    )


def test_error_metrics_hand_made() -> None:
    m = harness.error_metrics(np.array([0.0, 1.0, 2.0, 10.0]))
    assert m["n"] == 4
    assert m["mean_px"] == pytest.approx(3.25)
    assert m["median_px"] == pytest.approx(1.5)
    assert m["p1_px"] == pytest.approx(0.03)  # linear interpolation between 0 and 1
    assert (m["within_1px"], m["within_2px"], m["within_3px"], m["within_5px"]) == (
        0.5,
        0.75,
        0.75,
        0.75,
    )
    with pytest.raises(ValueError, match="at least one"):
        harness.error_metrics(np.array([]))


@pytest.mark.parametrize("bias", [(0, 0), (3, -2)])
def test_make_samples_true_offset_matches_exactly(bias: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    rec = shifted_record(rng, bias=bias)
    samples = harness.make_samples([rec], 12, template=24, search=56, rng=rng)
    assert len(samples) == 12
    seen = set()
    for s in samples:
        dx, dy = s.true_offset_xy_px
        assert s.template.shape == (24, 24) and s.region.shape == (56, 56)
        assert 0 <= dx <= 32 and 0 <= dy <= 32 and float(dx).is_integer()
        window = s.region[int(dy) : int(dy) + 24, int(dx) : int(dx) + 24]
        np.testing.assert_array_equal(s.template, window)  # the bias is corrected exactly
        cmap = classical.ncc_map(s.template, s.region)
        assert np.unravel_index(int(cmap.argmax()), cmap.shape) == (dy, dx)
        seen.add((dx, dy))
        assert (s.scene, s.sensor, s.record, s.sar_scale) == ("scene-a", "TEST", "rec", "db")
    assert len(seen) > 8  # offsets are drawn, not fixed


def test_make_samples_whole_tile_when_record_equals_search() -> None:
    rng = np.random.default_rng(1)
    rec = shifted_record(rng, shape=(64, 64), bias=(2, 0))
    samples = harness.make_samples([rec], 30, template=32, search=64, rng=rng)
    for s in samples:
        np.testing.assert_array_equal(s.region, rec.sar)
        dx, dy = s.true_offset_xy_px
        assert 2 <= dx <= 32 and 0 <= dy <= 32  # the optical cut (dx - 2) stays inside


def test_make_samples_rotation_scale_geometry() -> None:
    """On a linear ramp optical = x (column), bilinear resampling is exact: check R and s."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:80, :80].astype(np.float32)
    rec = PairRecord(xx.copy(), xx.copy(), "db", "ramp", "TEST", "synthetic", "ramp")
    samples = harness.make_samples(
        [rec], 8, template=31, search=60, rng=rng, max_rotation_deg=20.0, max_scale=0.2
    )
    assert len({round(s.rotation_deg, 6) for s in samples}) == 8
    for s in samples:
        dx, dy = s.true_offset_xy_px
        x0 = s.region_origin_xy_px[0]
        assert s.template[15, 15] == pytest.approx(x0 + dx + 15, abs=1e-4)  # centre stays put
        d_row, d_col = np.gradient(s.template.astype(np.float64))
        a = np.deg2rad(s.rotation_deg)
        assert d_col.mean() == pytest.approx(s.scale * np.cos(a), abs=1e-4)
        assert d_row.mean() == pytest.approx(s.scale * np.sin(a), abs=1e-4)
        assert np.isfinite(s.template).all()  # margins keep the rotated cut inside


def test_make_samples_subpixel_recovered_by_ncc() -> None:
    rng = np.random.default_rng(3)
    rec = shifted_record(rng, shape=(80, 80))
    samples = harness.make_samples([rec], 10, template=32, search=64, rng=rng, subpixel=True)
    assert any(not float(s.true_offset_xy_px[0]).is_integer() for s in samples)
    pred = harness.run_method(samples, harness.classical_map_fn("ncc"), batch=4, name="ncc")
    assert pred.error_px.max() < 0.3


def test_make_samples_exceptions() -> None:
    rng = np.random.default_rng(4)
    rec = shifted_record(rng, shape=(40, 40))
    with pytest.raises(ValueError, match="smaller than"):
        harness.make_samples([rec], 1, template=16, search=48, rng=rng)
    with pytest.raises(ValueError, match="template <= search"):
        harness.make_samples([rec], 1, template=48, search=32, rng=rng)
    with pytest.raises(ValueError, match="no offset keeps"):
        harness.make_samples([shifted_record(rng, shape=(40, 40), bias=(6, 0))], 1, 38, 40, rng=rng)


def test_make_samples_draws_regions_where_the_pair_has_data() -> None:
    """A pair that overlaps over its right part only: every search region is >= 90 % valid
    (they were drawn anywhere, up to all NaN, and scored as misses); a pair without overlap is
    an error that says so. Records without invalid pixels draw exactly as before."""
    import dataclasses

    rng = np.random.default_rng(6)
    rec = shifted_record(rng, shape=(64, 200))
    valid = np.zeros(rec.sar.shape, bool)
    valid[:, 90:] = True
    partial = dataclasses.replace(rec, valid=valid)
    samples = harness.make_samples([partial], 30, template=16, search=48, rng=rng)
    assert all(np.isfinite(s.region).mean() >= 0.9 for s in samples)
    assert min(s.region_origin_xy_px[0] for s in samples) >= 85
    corner = np.zeros(rec.sar.shape, bool)
    corner[:, 150:] = True  # 7 of the 153 column origins qualify: drawn among them, exactly
    edge = harness.make_samples([dataclasses.replace(rec, valid=corner)], 200, 16, 48, rng=rng)
    assert {s.region_origin_xy_px[0] for s in edge} <= set(range(146, 153))
    none = dataclasses.replace(rec, valid=np.zeros(rec.sar.shape, bool))
    with pytest.raises(ValueError, match=r"no 48x48 px search region .* \(0% of the pair is "
                       r"valid.*cover the same area"):  # fmt: skip
        harness.make_samples([none], 1, template=16, search=48, rng=rng)
    full = dataclasses.replace(rec, valid=np.ones(rec.sar.shape, bool))
    a = harness.make_samples([rec], 5, 16, 48, rng=np.random.default_rng(1))
    b = harness.make_samples([full], 5, 16, 48, rng=np.random.default_rng(1))
    assert [x.region_origin_xy_px for x in a] == [x.region_origin_xy_px for x in b]


def test_evaluate_cli_says_what_is_wrong(tmp_path: Path, capsys) -> None:
    """User mistakes in --data and sizes: 'error: ...' and exit 2, no traceback, no output."""
    from scripts import evaluate

    cases = {
        "3mos:/nonexistent": "not found",
        "synthetic:abc": "needs whole numbers",
        "gdal:only_one.tif": "gdal needs OPTICAL.tif,SAR.tif",
        "foo:bar": "unknown --data kind 'foo'",
    }
    if DATA_3MOS.is_dir():  # the sample data sits beside the repository, not in a clone
        cases[f"3mos:{DATA_3MOS}:SEN_cty"] = "3MOS scenes ['SEN_cty'] not in"
    for data, message in cases.items():
        out = tmp_path / "eval"
        assert evaluate.main(["--data", data, "--methods", "ncc", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (data, err)
        assert not out.exists()
    with pytest.raises(SystemExit):
        evaluate.main(["--data", "synthetic:1:256", "--samples-per-pair", "0"])
    assert "--samples-per-pair: must be an integer >= 1" in capsys.readouterr().err
    # were accepted: results.json with AUC NaN and precision 0, a "kept @2" column
    for flag, value, message in (
        ("--correct-px", "-1", "--correct-px must be a number > 0 (pixels), got -1.0"),
        ("--correct-px", "nan", "--correct-px must be a number > 0 (pixels), got nan"),
        ("--threshold", "2", "--threshold must be a confidence in [0, 1], got 2.0"),
        ("--threshold", "nan", "--threshold must be a confidence in [0, 1], got nan"),
    ):
        out = tmp_path / "eval"
        with pytest.raises(SystemExit):
            evaluate.main(["--data", "synthetic:1:256", flag, value, "--out", str(out)])
        assert message in capsys.readouterr().err and not out.exists()


def test_evaluate_ctrl_c_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    """Ctrl-C during the matching printed a full traceback; now one line and exit 130, and
    --out holds nothing of the run."""
    from scripts import evaluate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "run_all", interrupted)
    out = tmp_path / "eval"
    argv = ["--data", "synthetic:1:256", "--methods", "ncc", "--out", str(out)]
    assert evaluate.main(argv) == 130
    err = capsys.readouterr().err
    assert err.strip().endswith(f"interrupted: {out} keeps what it held before this run")
    assert "Traceback" not in err and not out.exists()


def test_run_method_and_summarise() -> None:
    rng = np.random.default_rng(5)
    records = [
        shifted_record(rng, shape=(70, 70), name="a", scene="s1"),
        shifted_record(rng, shape=(70, 70), name="b", scene="s2"),
    ]
    samples = harness.make_samples(records, 3, template=24, search=56, rng=rng)
    pred = harness.run_method(
        samples, harness.classical_map_fn("cfog"), 4, name="cfog", keep_maps=2
    )
    assert pred.maps.shape == (2, 33, 33)
    assert pred.map_indices.tolist() == [0, 5]  # spread over the set: records a and b
    last = samples[5]  # the second kept map is that sample's map
    direct = harness.classical_map_fn("cfog")(last.template[None], last.region[None], ["db"])
    np.testing.assert_allclose(pred.maps[1], direct[0], atol=1e-6)
    assert pred.features.shape == (6, 4) and pred.confidence.shape == (6,)
    np.testing.assert_allclose(pred.pred_offset_xy_px, pred.true_offset_xy_px, atol=0.5)
    s = harness.summarise(pred)
    assert s["within_1px"] == 1.0 and s["n"] == 6 and s["matches_per_s"] > 0
    assert sorted(s["per_scene"]) == ["s1", "s2"] and s["per_scene"]["s1"]["n"] == 3
    assert np.isnan(s["confidence"]["auc"])  # all correct: no ranking to measure
    table = harness.markdown_table([s, {**s, "method": "other"}])
    assert table.count("\n") == 4 and "| cfog | 6 |" in table


def test_peers_peak_ratio_is_taken_over_their_own_value_range() -> None:
    """MI (nats) and CFOG (negative SSD) maps have no fixed range: ``evaluate`` analyses each
    over its own min..max, where a cosine's [-1, 1] squeezed the peak-to-second ratio to ~1
    and so flattened the feature the peers' cross-validated confidence is fitted on."""
    from sar_optical_matcher.core import peaks
    from scripts import evaluate

    argv = ["--data", "synthetic:1:256", "--methods", "ncc,mi,cfog", "--samples-per-pair", "3"]
    args = evaluate.parse_args([*argv, "--maps", "0"])
    samples = evaluate.build_samples(args)
    preds, _ = evaluate.run_all(args, samples)
    for pred in preds:
        maps = harness.classical_map_fn(pred.method)(
            np.stack([s.template for s in samples]),
            np.stack([s.region for s in samples]),
            [s.sar_scale for s in samples],
        )
        own = peaks.map_features(
            peaks.analyse_maps(maps, similarity_range=classical.SIMILARITY_RANGE[pred.method])
        )
        np.testing.assert_allclose(pred.features, own, rtol=1e-6, atol=1e-9)
        cosine = peaks.map_features(peaks.analyse_maps(maps))
        if pred.method == "ncc":  # a bounded map keeps the fixed range
            np.testing.assert_allclose(pred.features, cosine, rtol=1e-6, atol=1e-9)
        else:  # log ratio: squeezed by a fixed (-1, 1)
            assert (own[:, 1] > cosine[:, 1] + 0.05).all(), (pred.method, own[:, 1], cosine[:, 1])


def test_cross_validated_confidence_ranks_separable_data() -> None:
    rng = np.random.default_rng(6)
    correct = rng.random(200) < 0.4
    features = rng.normal(size=(200, 4))
    features[:, 3] += 3.0 * correct  # z-score separates correct matches
    conf = harness.cross_validated_confidence(features, correct)
    assert conf.shape == (200,) and ((conf >= 0) & (conf <= 1)).all()
    m = harness.confidence_metrics(conf, correct)
    assert m["auc"] > 0.9
    i = m["thresholds"].index(0.5)
    assert m["precision"][i] > 0.8 and 0.2 < m["kept"][i] < 0.6


@pytest.mark.skipif(not DATA_3MOS.is_dir(), reason="3MOS sample data not available")
def test_evaluate_cli_end_to_end_on_3mos(tmp_path: Path) -> None:
    from scripts import evaluate

    out = tmp_path / "eval"
    argv = [
        "--data",
        f"3mos:{DATA_3MOS}:SEN_city",
        "--max-records",
        "2",
        "--methods",
        "ncc,cfog",
        "--samples-per-pair",
        "2",
        "--maps",
        "2",
        "--calibrate-confidence",
        "--out",
        str(out),
    ]
    assert evaluate.main(argv) == 0
    for name in ("results.json", "results.md", "histograms.png", "precision.png", "maps.png"):
        assert (out / name).stat().st_size > 0, name
    doc = json.loads((out / "results.json").read_text())
    assert [s["method"] for s in doc["summaries"]] == ["ncc", "cfog"]
    assert all(s["n"] == 4 for s in doc["summaries"])
    assert len(doc["errors_px"]["cfog"]) == 4
    assert "| cfog | 4 |" in (out / "results.md").read_text()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-weight model (T=32, S=48) exported through the real ONNX path."""
    torch = pytest.importorskip("torch")
    from sar_optical_matcher.model.contract import ModelContract
    from training.export import export_onnx
    from training.models import Encoder, EncoderSpec

    torch.manual_seed(0)
    spec = EncoderSpec(widths=(4, 4), convs_per_stage=(2, 1), descriptor_size=8, patch_size=32)
    contract = ModelContract("tiny", "0", template_size=32, search_size=48, descriptor_size=8)
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    return export_onnx(Encoder(spec).eval(), Encoder(spec).eval(), contract, path)


def test_learned_map_fn_preprocesses_with_the_contract(tiny_model: Path) -> None:
    from sar_optical_matcher.core.preprocessing import preprocess
    from sar_optical_matcher.model.runtime import OnnxMatcher

    matcher = OnnxMatcher(tiny_model, device="cpu")
    rng = np.random.default_rng(7)
    rec = shifted_record(rng, shape=(60, 60))
    rec.sar = np.exp(rec.sar / 20.0).astype(np.float32)  # linear: the contract converts to dB
    rec.sar_scale = "linear"
    samples = harness.make_samples([rec], 3, template=32, search=48, rng=rng)
    pred = harness.run_method(samples, harness.learned_map_fn(matcher), 2, name="learned")
    assert pred.error_px.shape == (3,) and np.isfinite(pred.error_px).all()
    c = matcher.contract
    s = samples[0]
    expected = matcher.correspondence_maps(
        preprocess(s.template, c.optical)[None],
        preprocess(s.region, c.sar, sar_scale="linear")[None],
    )
    got = harness.learned_map_fn(matcher)(s.template[None], s.region[None], ["linear"])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not np.allclose(
        got, harness.learned_map_fn(matcher)(s.template[None], s.region[None], ["db"]), atol=1e-3
    )
    with pytest.raises(ValueError, match="expects 32px templates"):
        harness.learned_map_fn(matcher)(np.zeros((1, 30, 30)), np.zeros((1, 48, 48)), ["db"])


@pytest.mark.skipif(not DATA_3MOS.is_dir(), reason="3MOS sample data not available")
def test_evaluate_cli_with_model(tmp_path: Path, tiny_model: Path) -> None:
    from scripts import evaluate

    argv = ["--data", f"3mos:{DATA_3MOS}:RCM_city", "--max-records", "2", "--model"]
    argv += [str(tiny_model), "--methods", "learned,ncc", "--template", "32", "--search", "48"]
    argv += ["--samples-per-pair", "3", "--device", "cpu", "--out", str(tmp_path)]
    assert evaluate.main(argv) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert [s["method"] for s in doc["summaries"]] == ["learned", "ncc"]
    assert doc["summaries"][0]["n"] == 6
    assert "agreement_learned_cfog" not in doc  # needs both learned and cfog
    argv[argv.index("learned,ncc")] = "learned,cfog"
    assert evaluate.main(argv) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    rows = doc["agreement_learned_cfog"]
    assert [r["radius_px"] for r in rows] == [1.0, 2.0, 3.0]
    assert all(0 <= r["n_agree"] <= 6 for r in rows)
    assert [r["n_agree"] for r in rows] == sorted(r["n_agree"] for r in rows)
    assert "Agreement of learned and cfog" in (tmp_path / "results.md").read_text()


def test_scene_offset_option_replaces_the_truth_of_a_scene() -> None:
    from scripts import evaluate

    parsed = evaluate.parse_scene_offsets(["A=1.5,-2", "B=0,0"])
    assert parsed == {"A": (1.5, -2.0), "B": (0.0, 0.0)}
    with pytest.raises(SystemExit, match="SCENE=X,Y"):
        evaluate.parse_scene_offsets(["A=1.5"])
    if not DATA_3MOS.is_dir():
        pytest.skip(f"3MOS sample not found at {DATA_3MOS}")
    from training.sources import load_3mos

    base = ["--data", f"3mos:{DATA_3MOS}:SEN_city", "--samples-per-pair", "1", "--seed", "3"]
    moved = evaluate.build_samples(evaluate.parse_args([*base, "--scene-offset", "SEN_city=3,-2"]))
    optical = {r.name: r.optical for r in load_3mos(DATA_3MOS, scenes=["SEN_city"])}
    assert len(moved) == 10
    for s in moved:  # the truth says: SAR window (dx, dy) shows optical (dx - 3, dy + 2)
        dx, dy = (int(v) for v in s.true_offset_xy_px)
        cut = optical[s.record][dy + 2 : dy + 2 + 128, dx - 3 : dx - 3 + 128]
        np.testing.assert_array_equal(s.template, cut)
    with pytest.raises(SystemExit, match="not in --data"):
        evaluate.build_samples(evaluate.parse_args([*base, "--scene-offset", "GF3_city=1,1"]))


def _predictions(
    name: str, pred: np.ndarray, true: np.ndarray, scenes: list[str]
) -> harness.Predictions:
    n = len(true)
    return harness.Predictions(
        method=name,
        pred_offset_xy_px=pred,
        true_offset_xy_px=true,
        error_px=np.hypot(*(pred - true).T),
        features=np.zeros((n, 4)),
        confidence=np.zeros(n),
        elapsed_s=1.0,
        sensors=["s"] * n,
        scenes=scenes,
    )


def test_agreement_counts_agreed_matches_and_scores_them_against_the_truth() -> None:
    true = np.zeros((6, 2))
    # learned: right, right, off by 4 px (a biased truth), right, wrong, wrong
    a = np.array([[0, 0], [1, 0], [4, 0], [0, 2], [40, 0], [0, 30]], dtype=float)
    # cfog agrees with samples 0 (0 px), 1 (1.5 px), 2 (0.5 px), 4 (2.5 px); not 3, 5
    b = np.array([[0, 0], [1, 1.5], [4.5, 0], [20, 20], [40, 2.5], [50, 50]], dtype=float)
    scenes = ["x", "x", "y", "y", "y", "x"]
    rows = harness.agreement(
        _predictions("learned", a, true, scenes), _predictions("cfog", b, true, scenes)
    )
    assert [r["radius_px"] for r in rows] == [1.0, 2.0, 3.0]
    assert [r["n_agree"] for r in rows] == [2, 3, 4]
    assert rows[0]["precision"] == 0.5  # samples 0 and 2: 2 is 4 px from the truth
    assert rows[1]["precision"] == pytest.approx(2 / 3) and rows[1]["kept"] == 0.5
    assert rows[2]["precision"] == 0.5 and rows[2]["precision_loose"] == 0.75
    assert rows[1]["per_scene"] == {"x": [2, 1.0], "y": [1, 0.0]}
    table = harness.agreement_table(rows, "learned", "cfog")
    assert "| 2 | 3 | 50.0% | 66.7% | 100.0% | x 2 / 100%, y 1 / 0% |" in table
    none = harness.agreement(
        _predictions("learned", a, true, scenes), _predictions("cfog", a + 9, true, scenes)
    )
    assert none[0]["n_agree"] == 0 and np.isnan(none[0]["precision"])
    assert "| 1 | 0 | 0.0% | - | - | x 0 / -, y 0 / - |" in harness.agreement_table(none, "a", "b")
    with pytest.raises(ValueError, match="not run on the same samples"):
        harness.agreement(
            _predictions("learned", a, true, scenes), _predictions("cfog", b, true + 1, scenes)
        )


def test_agreed_residuals_find_a_tile_whose_truth_is_off() -> None:
    true = np.array([[10, 10], [50, 20], [90, 70], [30, 30], [60, 60], [5, 5], [7, 7]], float)
    off = np.array([-4.0, 1.0])  # tile "t1": its truth is 4 px off, every window shows it
    a = true.copy()
    a[:3] += off + np.array([[0.1, 0.0], [-0.1, 0.2], [0.0, -0.1]])
    a[3:5] += [[0.5, 0.0], [-0.5, 0.0]]  # tile "t2": right, within 1 px
    a[5] += [30.0, 0.0]  # tile "t3": one agreed (too few), one disagreed
    b = a + 0.3
    b[6] += 20.0
    groups = ["t1", "t1", "t1", "t2", "t2", "t3", "t3"]
    rows = harness.agreed_residuals(
        _predictions("learned", a, true, ["s"] * 7),
        _predictions("cfog", b, true, ["s"] * 7),
        groups,
    )
    assert [r["group"] for r in rows] == ["t1", "t2"]  # t3 has 1 agreed match
    t1, t2 = rows
    assert t1["n_agreed"] == 3 and t2["n_agreed"] == 2
    np.testing.assert_allclose(t1["residual_xy_px"], [-4.0, 1.0 + 0.1 / 3], atol=1e-9)
    assert t1["residual_px"] > 4.0 and t1["spread_px"] < 0.25
    assert t2["residual_px"] < 1e-9 and t2["spread_px"] == pytest.approx(0.5)
    assert harness.agreed_residuals(
        _predictions("learned", a, true, ["s"] * 7), _predictions("cfog", b, true, ["s"] * 7),
        groups, min_agreed=3,
    )[0]["group"] == "t1"  # fmt: skip
    with pytest.raises(ValueError, match="groups for 7 samples"):
        harness.agreed_residuals(
            _predictions("learned", a, true, ["s"] * 7), _predictions("cfog", b, true, ["s"] * 7),
            groups[:3],
        )  # fmt: skip


def test_markdown_table_reports_the_threshold_it_names() -> None:
    """At confidence >= 0.33 three of four matches are kept, two right: 66.7 % at 75 %. The
    table used to show the nearest grid threshold's figures (0.35: 100 % at 25 %) under the
    label "@0.33"; now the threshold is computed exactly, or refused when not computed."""
    true = np.array([[0, 0], [0, 0], [10, 0], [10, 0]], float)
    pred = _predictions("m", np.zeros((4, 2)), true, ["a"] * 4)
    pred.confidence = np.array([0.34, 0.4, 0.33, 0.2])
    s = harness.summarise(pred, thresholds=[*harness.DEFAULT_THRESHOLDS, 0.33])
    row = harness.markdown_table([s], threshold=0.33).splitlines()[2]
    assert row.endswith("| 66.7% | 75.0% |"), row
    assert (
        harness.markdown_table([s], threshold=0.35).splitlines()[2].endswith("| 100.0% | 25.0% |")
    )
    with pytest.raises(ValueError, match=r"0.33 is not among .* \(nearest 0.35\)"):
        harness.markdown_table([harness.summarise(pred)], threshold=0.33)


def test_histogram_title_uses_the_correct_radius() -> None:
    from scripts import evaluate

    true = np.zeros((4, 2))
    pred = _predictions(
        "cfog", np.array([[1, 0], [4, 0], [4.5, 0], [9, 0]], float), true, ["a"] * 4
    )
    assert evaluate.histogram_title(pred, 5.0) == "cfog: 75% <= 5 px"  # was "25% <= 3 px"
    assert evaluate.histogram_title(pred, 3.0) == "cfog: 25% <= 3 px"


def test_learned_alone_without_a_model_is_refused_before_any_work(tmp_path, monkeypatch):
    """--methods learned with no shipped model and no --model: a clear exit, not an empty run
    that writes results.json and then fails."""
    import argparse

    from sar_optical_matcher.model import runtime
    from scripts import evaluate

    monkeypatch.setattr(runtime, "DEFAULT_MODEL_PATH", tmp_path / "missing.onnx")
    args = argparse.Namespace(methods="learned", model=None)
    with pytest.raises(SystemExit, match=r"no shipped model at .*missing\.onnx and no other"):
        evaluate.resolve_methods(args)
    args = argparse.Namespace(methods="learned,ncc", model=None)
    assert evaluate.resolve_methods(args) == (["ncc"], None)
