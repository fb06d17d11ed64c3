"""Per-scene (or per-tile) registration bias of a co-registered data set, measured by a matcher.

A data set's ground truth can carry a bias per scene (3MOS: "GF-3 tiles seem to carry a ~2 px
x bias"; measured, it differs per scene, and single tiles can be off by several pixels more).
:func:`scene_offsets` takes a matcher's predictions on known-offset samples
(``evaluation_harness.run_method``) and returns each scene's (or each tile's, with ``keys``)
median residual; ``scripts/measure_offsets.py`` is its command line. numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.evaluation_harness import Predictions


@dataclass(frozen=True)
class SceneOffset:
    """A scene's residual misregistration measured by a matcher (see :func:`scene_offsets`).

    Attributes:
        scene: scene key (the group key: ``"<scene>/<k>"`` when measured per tile).
        n_samples: samples of the scene.
        n_used: samples whose match lay within the radius (the ones the median is taken over).
        residual_xy_px: median (x, y) of prediction - truth over the used samples.
        mad_xy_px: median absolute deviation of the residuals, per axis.
        offset_xy_px: the record offset after correction: current offset + residual, or the
            current offset unchanged when fewer than ``min_used`` samples were used.
        corrected: whether the offset was corrected.
    """

    scene: str
    n_samples: int
    n_used: int
    residual_xy_px: tuple[float, float]
    mad_xy_px: tuple[float, float]
    offset_xy_px: tuple[float, float]
    corrected: bool


def scene_offsets(
    pred: Predictions,
    current_xy_px: dict[str, tuple[float, float]],
    radius_px: float = 8.0,
    min_used: int = 10,
    *,
    keys: Sequence[str] | None = None,
    max_mad_px: float = float("inf"),
    min_residual_px: float = 0.0,
) -> list[SceneOffset]:
    """Per-scene median residual of a matcher's predictions: a scene's registration bias.

    A co-registered data set's ground truth can carry a bias per scene (3MOS: "GF-3 tiles seem
    to carry a ~2 px x bias"). Matches farther than ``radius_px`` from the truth are failures,
    not evidence of a bias, and are left out; the median of the others is robust to the rest.

    Args:
        pred: predictions of one method (e.g. CFOG, independent of any trained model).
        current_xy_px: the ``offset_xy_px`` each scene's records carry now.
        radius_px: matches within this distance of the truth are used.
        min_used: scenes with fewer used matches keep their current offset.
        keys: the group of each sample (default ``pred.scenes``), e.g. its tile
            ``"<scene>/<k>"`` to measure single tiles; ``current_xy_px`` is keyed the same.
        max_mad_px: groups whose used residuals spread more than this (median absolute
            deviation, either axis) keep their offset: the matches do not agree on one shift.
        min_residual_px: groups whose median residual is shorter than this keep their offset
            (within the matcher's own noise, not worth a label change).

    Returns:
        One :class:`SceneOffset` per group, sorted by key.
    """
    groups = list(pred.scenes) if keys is None else list(keys)
    if len(groups) != len(pred.error_px):
        raise ValueError(f"keys has {len(groups)} entries for {len(pred.error_px)} predictions")
    names = np.asarray(groups)
    residual = pred.pred_offset_xy_px - pred.true_offset_xy_px
    out = []
    for group in sorted(set(groups)):
        in_group = names == group
        used = in_group & (pred.error_px <= radius_px)
        n_used = int(used.sum())
        med = np.median(residual[used], axis=0) if n_used else np.zeros(2)
        mad = np.median(np.abs(residual[used] - med), axis=0) if n_used else np.zeros(2)
        base = current_xy_px.get(group, (0.0, 0.0))
        fix = (
            n_used >= min_used
            and float(mad.max()) <= max_mad_px
            and float(np.hypot(*med)) >= min_residual_px
        )
        offset = (base[0] + med[0], base[1] + med[1]) if fix else base
        out.append(
            SceneOffset(
                group,
                int(in_group.sum()),
                n_used,
                (float(med[0]), float(med[1])),
                (float(mad[0]), float(mad[1])),
                (round(float(offset[0]), 2), round(float(offset[1]), 2)),
                fix,
            )
        )
    return out
