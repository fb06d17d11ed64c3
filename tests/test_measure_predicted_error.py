"""scripts/measure_predicted_error.py: the Monte Carlo behind ERROR_BOUND_FACTOR runs and ranks."""

from __future__ import annotations

import numpy as np
import pytest

from scripts import measure_predicted_error as mpe


def test_monte_carlo_counts_the_old_rule_s_false_acceptances_against_the_new(capsys) -> None:
    """200 draws: the 0.3.5 rule (10 x RMSE) accepts fits truly off by several thresholds
    that Register's rule refuses; each row's counts add up to the fits judged."""
    out = mpe.main(["--draws", "200", "--seed", "0"])
    rows = {r["rule"]: r for r in out["rules"]}
    old = rows["pred > max(10 RMSE, thr) (0.3.5)"]
    new = rows["registration (ERROR_BOUND_FACTOR pred > thr)"]
    assert new == {**rows["1.5 pred > thr"], "rule": new["rule"]}
    assert old["false_accept"] >= 10 and old["worst_accepted"] > 3.0
    assert new["false_accept"] <= old["false_accept"] / 4 and new["false_accept_2x"] == 0
    assert new["bad"] + new["good"] == 200 - out["upstream"]
    assert 0.9 < float(np.median(out["ratio"])) < 1.4  # true largest / predicted error
    assert "| registration (ERROR_BOUND_FACTOR pred > thr) |" in capsys.readouterr().out


def test_the_truth_is_taken_over_the_output_register_judges() -> None:
    """The true largest error is taken where Register judges the fit: the optical inside the
    192 px border, and the output pixels outside it, placed by the true affine (here 20 px
    off and 1 % scaled; a grid over SAR pixels 192-808 stood 20 px off the judged square),
    out to its outline and corners."""
    a = np.array([[1.01, 0.0, 20.0], [0.0, 0.99, -20.0]])
    rng = np.random.default_rng(0)
    src = rng.uniform(200, 800, (30, 2))
    ties = mpe.reg.TiePoints(src, src @ a[:, :2].T + a[:, 2], np.ones(30, bool), np.arange(30))
    fit = mpe.reg.fit_tie_points(ties, "affine", 1.5, 8, rng)
    inner, band = mpe._inner_and_band(fit, ties, a, 1000.0)
    on, off = (p @ a[:, :2].T + a[:, 2] for p in (inner, band))
    assert on.min(axis=0) == pytest.approx([192, 192])
    assert on.max(axis=0) == pytest.approx([808, 808])
    assert not ((off > 192 + 1e-6) & (off < 808 - 1e-6)).all(axis=1).any()
    assert off.min() == pytest.approx(0.5) and off.max() == pytest.approx(999.5)
    assert inner.min() > 0 and band.min() >= -1e-9 and band.max() <= 1000 + 1e-9
