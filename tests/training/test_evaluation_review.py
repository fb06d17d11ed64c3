"""Review findings on the evaluation harness and evaluate.py's results.json.

* only the search region had to be 90 % valid: a template up to 40 % nodata was scored, where
  the plugin skips such a keypoint (``nodata_optical``); 69 of 200 samples on a pair with a
  24 px nodata strip;
* results.json held bare ``NaN`` (precision with nothing accepted, an AUC of one class), which
  strict JSON readers refuse, and not the confidences its precision curves come from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.training.test_evaluation_harness import shifted_record
from training import evaluation_harness as harness


def _strip_record(valid_strip: bool = True):
    rec = shifted_record(np.random.default_rng(0), shape=(320, 320))
    valid = np.ones(rec.sar.shape, bool)
    if valid_strip:
        valid[:, 150:174] = False  # 24 columns: a 256 px region is >= 90.6 % valid anywhere
    return type(rec)(**{**rec.__dict__, "valid": valid})


def test_every_template_is_as_valid_as_the_plugin_asks() -> None:
    rec = _strip_record()
    samples = harness.make_samples([rec], 200, 128, 256, rng=np.random.default_rng(1))
    shares = np.array([np.isfinite(s.template).mean() for s in samples])
    regions = np.array([np.isfinite(s.region).mean() for s in samples])
    assert shares.min() >= harness.MIN_VALID_FRACTION, shares.min()  # was 0.81 (69 below)
    assert regions.min() >= harness.MIN_VALID_FRACTION
    assert (shares < 1).any()  # templates that cross the strip by a few columns are kept
    # the truth of a redrawn sample is its own: the template is the optical at the true offset
    for s in samples[:20]:
        (dx, dy), (sx, sy) = s.true_offset_xy_px, s.region_origin_xy_px
        cut = rec.optical[int(sy + dy) : int(sy + dy) + 128, int(sx + dx) : int(sx + dx) + 128]
        np.testing.assert_array_equal(np.isfinite(s.template), rec.valid[
            int(sy + dy) : int(sy + dy) + 128, int(sx + dx) : int(sx + dx) + 128])  # fmt: skip
        ok = np.isfinite(s.template)
        np.testing.assert_array_equal(s.template[ok], cut[ok])


def test_a_record_without_nodata_keeps_its_first_draws() -> None:
    """Same seed, same samples, whether the record has no mask or an all-valid one."""
    rec = _strip_record(valid_strip=False)
    bare = type(rec)(**{**rec.__dict__, "valid": None})
    a = harness.make_samples([rec], 30, 128, 256, rng=np.random.default_rng(4))
    b = harness.make_samples([bare], 30, 128, 256, rng=np.random.default_rng(4))
    assert [s.true_offset_xy_px for s in a] == [s.true_offset_xy_px for s in b]
    assert [s.region_origin_xy_px for s in a] == [s.region_origin_xy_px for s in b]


def test_a_record_with_no_valid_template_is_named(monkeypatch) -> None:
    rec = _strip_record()
    real = harness._draw_one

    def all_nodata(*args):
        s = real(*args)
        return type(s)(**{**s.__dict__, "template": np.full_like(s.template, np.nan)})

    monkeypatch.setattr(harness, "_draw_one", all_nodata)
    with pytest.raises(ValueError, match=r"^rec: no 128x128 px template with >= 90% valid pixels "
                       r"in 50 draws \(92% of the pair is valid"):  # fmt: skip
        harness.make_samples([rec], 1, 128, 256, rng=np.random.default_rng(0))


def _refuse_constant(name: str):
    raise ValueError(f"not strict JSON: {name}")


def test_results_json_is_strict_and_holds_what_its_curves_come_from(tmp_path: Path) -> None:
    from scripts import evaluate

    out = tmp_path / "eval"
    argv = ["--data", "synthetic:1:512", "--methods", "ncc,phase", "--samples-per-pair", "6",
            "--seed", "2", "--out", str(out)]  # fmt: skip
    assert evaluate.main(argv) == 0
    text = (out / "results.json").read_text()
    doc = json.loads(text, parse_constant=_refuse_constant)  # bare NaN was written
    assert "NaN" not in text
    per = doc["errors_px"]
    n = len(per["record"])
    assert n == 6 and len(per["scene"]) == n and len(per["sensor"]) == n
    for summary in doc["summaries"]:
        method, conf = summary["method"], summary["confidence"]
        confidence = np.array(per["confidence"][method])
        error = np.array(per[method])
        pred = np.array(per["pred_offset_xy_px"][method])
        true = np.array(per["true_offset_xy_px"])
        assert confidence.shape == (n,) and pred.shape == (n, 2)
        np.testing.assert_allclose(np.hypot(*(pred - true).T), error, atol=2e-3)
        for t, precision, kept in zip(conf["thresholds"], conf["precision"], conf["kept"]):
            accepted = confidence >= t
            assert kept == pytest.approx(accepted.mean(), abs=1e-9)
            if accepted.any():
                expected = (error[accepted] <= 3.0).mean()
                assert precision == pytest.approx(expected, abs=1e-9), (method, t)
            else:
                assert precision is None  # NaN: nothing accepted


def test_samples_that_repeat_an_earlier_one_are_counted_and_warned_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 36 px template in a 40 px region has 5 x 5 offsets: 60 draws from one 40 x 40 pair
    repeat samples, which the figures counted as independent without a word. The warning's
    count is the draws less the distinct (region, offset) pairs; a wide search range is
    quiet. evaluate.py says it on stderr."""
    from scripts import evaluate

    rng = np.random.default_rng(0)
    recs = [shifted_record(rng, shape=(40, 40), name=n) for n in ("a", "b")]
    samples = harness.make_samples(recs, 60, template=36, search=40, rng=rng)
    distinct = {(s.record, s.true_offset_xy_px) for s in samples}
    assert len(distinct) <= 50
    n_repeat = len(samples) - len(distinct)
    by_record = {r: 60 - len({d for d in distinct if d[0] == r}) for r in ("a", "b")}
    worst = max(by_record, key=lambda r: by_record[r])
    text = harness.repeated_samples(samples)
    assert text is not None
    assert text.startswith(f"{n_repeat} of 120 samples repeat an earlier sample of the same pair")
    assert f"(2 pairs; {worst}: {by_record[worst]})" in text
    wide = harness.make_samples(recs[:1], 3, template=8, search=40, rng=rng)
    assert harness.repeated_samples(wide) is None

    out = tmp_path / "eval"
    argv = ["--data", "synthetic:1:256", "--methods", "ncc", "--samples-per-pair", "40",
            "--template", "250", "--search", "256", "--seed", "1", "--out", str(out)]  # fmt: skip
    assert evaluate.main(argv) == 0
    err = capsys.readouterr().err
    assert re.search(r"warning: \d+ of 40 samples repeat an earlier sample", err), err
    argv[5] = "4"  # 4 draws at the default 128 in 256 (129 x 129 offsets): no repeat here
    assert evaluate.main(argv[:6] + ["--seed", "1", "--out", str(out)]) == 0
    assert "repeat" not in capsys.readouterr().err
