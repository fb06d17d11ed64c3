"""scripts/measure_predicted_error.py: the Monte Carlo behind ERROR_BOUND_FACTOR runs and ranks."""

from __future__ import annotations

import numpy as np

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
