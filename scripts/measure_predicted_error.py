"""How well Register's predicted-error check decides: a Monte Carlo on synthetic tie points.

Each draw lays tie points over a square overlap (SAR and optical of one size, the truth a
near-identity affine), adds match noise, and runs Register's own fit and overlap grid
(``registration.fit_tie_points`` and the grid of ``registration.check_predicted_error``,
inside the keypoints' border of 192 px: BORDER 128 + half of MIN_DISTANCE 128). Its true
largest error over that overlap (the fit against the truth, on Register's grid of that
overlap as the truth places it, 41 x 41 with its outline and corners) is set against each
candidate acceptance rule's decision:

* false acceptance: accepted, yet truly wrong somewhere by more than the residual threshold;
* false refusal: refused, yet truly within the threshold everywhere (and the share of those
  truly within half of it).

Layouts: well spread (random, a jittered grid), two crossing lines, one line, bunched in a
corner, and "few" (random, 1.2-2.5 inliers per term); 20-200 tie points, 0.3-1.5 px of
noise (at most half the threshold), affine / poly2 / poly3, overlaps of 1000-4000 px,
thresholds 1.5 and 3 px. The band along the edges (outside the border, where no tie point
lies but the output is warped) is measured too: its predicted and true largest errors
against those inside. The figures cover match noise only (the truth is affine, so every
fitted kind is unbiased)::

    .venv/bin/python scripts/measure_predicted_error.py --draws 4000 --seed 0
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sar_optical_matcher import registration as reg  # noqa: E402
from sar_optical_matcher.core import transforms as tf  # noqa: E402

LAYOUTS = ("random", "grid", "cross", "line", "corner", "few")
KINDS = ("affine", "poly2", "poly3")
THRESHOLDS_PX = (1.5, 3.0)
#: Register's defaults: keypoints keep BORDER (128 px) from the edges; the overlap is judged
#: inside BORDER + MIN_DISTANCE / 2.
BORDER_PX, JUDGED_PX = 128.0, 192.0


def _layout(name: str, n: int, side: float, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``(N, 2)`` tie-point SAR pixels of layout ``name`` at least BORDER_PX from the edges."""
    lo, hi = BORDER_PX, side - BORDER_PX
    if name == "few":
        terms = tf.min_points(kind)
        n = max(terms + reg.EXTRA_INLIERS, math.ceil(rng.uniform(1.2, 2.5) * terms))
    if name in ("random", "few"):
        return rng.uniform(lo, hi, (n, 2))
    if name == "grid":
        k = max(3, round(math.sqrt(n)))
        g = np.linspace(lo, hi, k)
        pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        return np.clip(pts + rng.normal(0, 0.1 * (hi - lo) / k, pts.shape), lo, hi)
    t = rng.uniform(lo, hi, n)
    if name == "line":  # along one road, a few px off it, at any angle across the overlap
        c, a = rng.uniform(0.4, 0.6) * side, rng.uniform(-0.4, 0.4)
        pts = np.column_stack([t, c + a * (t - side / 2) + rng.normal(0, 3, n)])
        return pts if rng.random() < 0.5 else pts[:, ::-1]
    if name == "cross":  # two crossing roads
        c = rng.uniform(0.3, 0.7, 2) * side
        half = n // 2
        return np.vstack([
            np.column_stack([t[:half], c[1] + rng.normal(0, 3, half)]),
            np.column_stack([c[0] + rng.normal(0, 3, n - half), t[half:]]),
        ])  # fmt: skip
    w = rng.uniform(0.15, 0.4) * (hi - lo)  # corner: a square of 15-40 % of the side
    return lo + rng.uniform(0, w, (n, 2))


def _truth(rng: np.random.Generator) -> np.ndarray:
    """A near-identity affine (2, 3) SAR px -> optical px: 1 % scale / shear, 20 px shift."""
    return np.column_stack([np.eye(2) + rng.normal(0, 0.01, (2, 2)), rng.uniform(-20, 20, 2)])


def _inner_and_band(
    fit: Any, ties: Any, a: np.ndarray, side: float
) -> tuple[np.ndarray, np.ndarray]:
    """SAR px of the output inside the judged border, and of the band around it, truly.

    Register's own grids (``registration._output_grid`` / ``_band_grid``: out to the margin's
    outline and the output's outermost pixels, corners included), 41 / 82 points a side,
    placed by the true affine ``a``, not by the fit's inliers: the region Register judges.
    """
    corners = np.array([[0.0, 0.0], [side, 0.0], [0.0, side], [side, side]])
    truth = tf.fit_transform(corners, corners @ a[:, :2].T + a[:, 2], "affine")
    sizes = (int(side), int(side)), (int(side), int(side))
    inner = reg._output_grid(truth, *sizes, JUDGED_PX, 41)
    band = reg._band_grid(fit, ties, *sizes, JUDGED_PX, 82, (truth, truth))
    assert inner is not None and len(inner) and len(band)
    return inner, band


def simulated_bound(src: np.ndarray, kind: str, grid: np.ndarray, sigma: float,
                    dof: int, q: float = 0.95, draws: int = 400) -> float:  # fmt: skip
    """``q`` quantile of the fit's largest error over ``grid``, simulated from its design."""
    t = tf.fit_transform(src, src, kind)
    degree = tf._DEGREE[kind]
    design = tf._monomials((src - t.src_centre) / t.src_scale, degree)
    at = tf._monomials((grid - t.src_centre) / t.src_scale, degree)
    _, sv, vt = np.linalg.svd(design, full_matrices=False)
    a = at @ vt.T / sv  # (M, p): the error at each grid point per unit noise of U^T e
    rng = np.random.default_rng(0)
    z = rng.standard_normal((draws, a.shape[1], 2))
    worst = np.sqrt(((a @ z) ** 2).sum(axis=-1)).max(axis=1)  # (draws,)
    scale = np.sqrt(rng.chisquare(dof, draws) / dof)  # sigma_hat / sigma
    return float(sigma * np.quantile(worst / scale, q))


def draw(rng: np.random.Generator) -> dict[str, Any]:
    """One case: its settings, Register's figures and the truth (``upstream``: fit refused)."""
    name = LAYOUTS[rng.integers(len(LAYOUTS))]
    kind = KINDS[rng.integers(len(KINDS))]
    side = float(rng.integers(1000, 4001))
    thr = THRESHOLDS_PX[rng.integers(len(THRESHOLDS_PX))]
    noise = rng.uniform(0.3, min(1.5, thr / 2))
    n = int(round(math.exp(rng.uniform(math.log(20), math.log(200)))))
    src = _layout(name, n, side, kind, rng)
    a = _truth(rng)
    dst = src @ a[:, :2].T + a[:, 2] + rng.normal(0, noise, src.shape)
    ties = reg.TiePoints(src, dst, np.ones(len(src), bool), np.arange(len(src)))
    sizes = (int(side), int(side)), (int(side), int(side))
    try:
        fit = reg.fit_tie_points(ties, kind, thr, 8, rng)
    except reg.RegistrationError:
        return {"layout": name, "kind": kind, "upstream": True}
    pred, isrc, _, grid = reg._predicted(fit, ties, *sizes, JUDGED_PX, 32)
    inner, band = _inner_and_band(fit, ties, a, side)

    def true_max(pts: np.ndarray) -> float:
        truth = pts @ a[:, :2].T + a[:, 2]
        return float(np.hypot(*(fit.transform.apply(pts) - truth).T).max())

    k, p = len(isrc), tf.min_points(kind)
    sigma = math.sqrt(float((fit.residual_xy_px[fit.inliers] ** 2).sum()) / (2 * (k - p)))
    warned = reg.check_border_band(fit, ties, *sizes, thr, JUDGED_PX) is not None
    return {
        "layout": name, "kind": kind, "upstream": False, "side": side, "thr": thr,
        "noise": noise, "k": k, "p": p, "rmse": fit.rmse_px, "pred": pred,
        "true": true_max(inner), "true_band": true_max(band), "warned": warned,
        "pred_band": fit.extra["predicted_error_band_px"],
        "sim95": simulated_bound(isrc, kind, grid, sigma, 2 * (k - p)),
    }  # fmt: skip


def _f_quantile(q: float, d1: int, d2: int) -> float:
    from scipy import stats

    return float(stats.f.ppf(q, d1, d2))


def _factor(q: float) -> Callable[[dict[str, Any]], bool]:
    return lambda c: q * c["pred"] > c["thr"]


def _f_bound(c: dict[str, Any], terms: int) -> float:
    """``pred`` times the F-quantile factor of ``terms`` terms (1: one point's error)."""
    return c["pred"] * math.sqrt(terms * _f_quantile(0.95, 2 * terms, 2 * (c["k"] - c["p"])))


#: Candidate rules: refuse when ``rule(case)`` is True. The first is the rule before
#: ERROR_BOUND_FACTOR; ``registration`` is the rule Register applies now.
RULES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "pred > max(10 RMSE, thr) (0.3.5)": lambda c: c["pred"] > max(10 * c["rmse"], c["thr"]),
    "pred > max(10 RMSE, or 3 RMSE under 2.5 inliers/term; thr)": lambda c: c["pred"]
    > max((10 if c["k"] >= reg.MIN_INLIERS_PER_TERM * c["p"] else 3) * c["rmse"], c["thr"]),
    **{f"{q:g} pred > thr": _factor(q) for q in (1.0, 1.1, 1.2, 1.25, 1.3, 1.4, 1.5, 1.75, 2.0)},
    "pred sqrt(F(2, nu, 0.95)) > thr (one point)": lambda c: _f_bound(c, 1) > c["thr"],
    "pred sqrt(p F(2p, nu, 0.95)) > thr (Scheffe)": lambda c: _f_bound(c, c["p"]) > c["thr"],
    "simulated 95 % bound of the largest error > thr": lambda c: c["sim95"] > c["thr"],
    "registration (ERROR_BOUND_FACTOR pred > thr)": lambda c: reg._too_large(c["pred"], c["thr"]),
}


def score(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """False acceptance and refusal of each rule over the cases Register's fit accepted."""
    judged = [c for c in cases if not c["upstream"]]
    over = np.array([c["true"] / c["thr"] for c in judged])  # true largest error / threshold
    rows = []
    for name, rule in RULES.items():
        refused = np.array([rule(c) for c in judged], bool)
        rows.append({
            "rule": name, "bad": int((over > 1).sum()), "good": int((over <= 1).sum()),
            "small": int((over <= 0.5).sum()),
            "false_accept": int((~refused & (over > 1)).sum()),
            "false_accept_2x": int((~refused & (over > 2)).sum()),
            "worst_accepted": float(over[~refused].max()) if (~refused).any() else math.nan,
            "false_refuse": int((refused & (over <= 1)).sum()),
            "false_refuse_small": int((refused & (over <= 0.5)).sum()),
        })  # fmt: skip
    return rows


GROUPS = {"well spread": ("random", "grid"), "few per term": ("few",),
          "lines / corner": ("cross", "line", "corner")}  # fmt: skip


def band_rows(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The border band against the inside, per layout group and kind, of fits accepted inside."""
    rows = []
    for group, layouts in GROUPS.items():
        for kind in KINDS:
            sel = [c for c in cases if not c["upstream"] and c["layout"] in layouts
                   and c["kind"] == kind and not reg._too_large(c["pred"], c["thr"])]  # fmt: skip
            if not sel:
                continue
            pred = np.array([c["pred_band"] / c["pred"] for c in sel])
            true = np.array([c["true_band"] / c["true"] for c in sel])
            ratio = np.array([c["true_band"] / c["pred_band"] for c in sel])
            rows.append({
                "group": group, "kind": kind, "n": len(sel),
                "pred_ratio": np.quantile(pred, [0.5, 0.95]).tolist(),
                "true_ratio": np.quantile(true, [0.5, 0.95]).tolist(),
                "true_over_pred": np.quantile(ratio, [0.5, 0.95]).tolist(),
                "warned": sum(c["warned"] for c in sel),
                "band_bad": sum(c["true_band"] > c["thr"] for c in sel),
                "warned_bad": sum(c["warned"] and c["true_band"] > c["thr"] for c in sel),
            })  # fmt: skip
    return rows


def _print(rows: list[dict[str, Any]], band: list[dict[str, Any]], ratio: np.ndarray) -> None:
    print("| rule | false acceptance | of which > 2 x thr | worst accepted, x thr "
          "| false refusal | of which truly < thr/2 |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rule']} | {r['false_accept']} / {r['bad']} | {r['false_accept_2x']} | "
              f"{r['worst_accepted']:.2f} | {r['false_refuse']} / {r['good']} | "
              f"{r['false_refuse_small']} / {r['small']} |")  # fmt: skip
    q = np.quantile(ratio, [0.05, 0.5, 0.8, 0.95])
    print(
        f"\ntrue largest / predicted error inside: 5 / 50 / 80 / 95 %: "
        f"{' / '.join(f'{v:.2f}' for v in q)}\n"
    )
    print("| layouts | kind | fits accepted | band / inside, predicted (median, 95 %) | "
          "band / inside, true | band true / predicted | band warned | band truly > thr | "
          "warned of those |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for b in band:
        pr, tr, tp = (" / ".join(f"{v:.2f}" for v in b[k])
                      for k in ("pred_ratio", "true_ratio", "true_over_pred"))  # fmt: skip
        print(f"| {b['group']} | {b['kind']} | {b['n']} | {pr} | {tr} | {tp} | {b['warned']} | "
              f"{b['band_bad']} | {b['warned_bad']} |")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the Monte Carlo and print its tables; returns their rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=4000, help="synthetic cases")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws")
    args = parser.parse_args(argv)
    if args.draws < 1:
        parser.error(f"--draws must be >= 1, got {args.draws}")
    rng = np.random.default_rng(args.seed)
    cases = [draw(rng) for _ in range(args.draws)]
    judged = [c for c in cases if not c["upstream"]]
    ratio = np.array([c["true"] / c["pred"] for c in judged])
    out = {"rules": score(cases), "band": band_rows(cases), "ratio": ratio,
           "upstream": len(cases) - len(judged)}  # fmt: skip
    print(f"{len(cases)} draws, {out['upstream']} refused by fit_tie_points before the check")
    _print(out["rules"], out["band"], ratio)
    return out


if __name__ == "__main__":
    main()
