"""What a sweep optimises: one metric (`--metric NAME --mode min|max`) or several
(`--objectives val_FRDist:min,val_FRDiv:max`, a Pareto search), checked before Ray or MLflow start.

A trial's ranking number must mean the same thing in every trial of a space. `val_loss` does not:
stage 1's is `w_3dmm·MSE + w_emotion·L1`, so a sweep over the weights prefers the smallest ones,
and stage 2's denoising L1 moves with T, the window size, the prediction target and the LRS
standardisation. So the defaults judge what each stage produces:
- stage 1: `val_recon_FRDist` (min), the REACT2024 emotion distance of reconstructions to the truth;
- stage 2: `val_FRCorr` (max), FRCorr of reactions generated for the val speakers. Not FRDist: a
  near-constant output with jitter is close, under DTW, to every listener, so FRDist ranks a model
  that ignores the speaker above one that follows it (docs/quality.md: FRDist fell from 151 to 138
  as the demo's model was trained less and reacted less). FRCorr is a concordance correlation with
  the best appropriate listener, so a flat output scores about 0 on it.
FRDist against FRDiv is the paper's trade-off (appropriateness against diversity): a two-objective
search shows it as a Pareto front.

Every metric a stage's training reports can be named (`known_metrics`); its direction is fixed
(FRCorr, FRDiv, FRDvs, FRVar, AU F1 and CCC improve upwards, the rest downwards), and a mode that
contradicts it is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reactdiff.config import ConfigError
from reactdiff.evaluate.validation import (
    LRS_LABEL,
    MODEL_LABEL,
    REACTION_DIRECTIONS,
    RECONSTRUCTION_DIRECTIONS,
    Direction,
)

DEFAULT_METRIC = {1: "val_recon_FRDist", 2: "val_FRCorr"}
_LOSSES: dict[str, Direction] = {"val_loss": "min", "train_loss": "min"}
# The REACT2024 rows of stage-2 validation, by metric-name prefix (see validation.reaction_metrics).
_REACTION_PREFIXES = {"val_": MODEL_LABEL, "val_LRS_": LRS_LABEL}


def known_metrics(stage: int) -> dict[str, Direction]:
    """Every metric a stage's training reports that a sweep may rank by, with its direction."""
    if stage == 1:
        return {**_LOSSES, **{f"val_{name}": d for name, d in RECONSTRUCTION_DIRECTIONS.items()}}
    return {
        **_LOSSES,
        **{f"{prefix}{name}": d for prefix in _REACTION_PREFIXES for name, d in REACTION_DIRECTIONS.items()},
    }


def evaluation_metric(metric: str) -> str | None:
    """The name `reactdiff evaluate` logs for the same quantity (what promotion compares):
    val_FRDist → FRDist, val_LRS_FRDist → ReactDiff-LRS.FRDist; None for other metrics."""
    for prefix, label in sorted(_REACTION_PREFIXES.items(), key=lambda item: -len(item[0])):
        name = metric[len(prefix) :]
        if metric.startswith(prefix) and name in REACTION_DIRECTIONS:
            return name if label == MODEL_LABEL else f"{label}.{name}"
    return None


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: Direction

    def better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def sort_key(self, value: float) -> float:
        """Ascending order puts the best first; NaN (never reported) last."""
        if math.isnan(value):
            return math.inf
        return value if self.mode == "min" else -value


def _checked(stage: int, metric: str, mode: str | None, source: str) -> Objective:
    known = known_metrics(stage)
    if metric not in known:
        raise ConfigError(
            f"{source}: unknown metric '{metric}' for a stage-{stage} sweep; it reports: {', '.join(known)}"
        )
    if mode is None:
        mode = known[metric]
    if mode not in ("min", "max"):
        raise ConfigError(f"{source}: mode must be min or max, got '{mode}'")
    if mode != known[metric]:
        better = "higher" if known[metric] == "max" else "lower"
        raise ConfigError(
            f"{source}: '{metric}:{mode}' contradicts the metric ({better} is better): use {metric}:{known[metric]}"
        )
    return Objective(metric, mode)


def parse_objectives(
    stage: int,
    metric: str | None = None,
    mode: str | None = None,
    objectives: str | None = None,
    space_objective: dict[str, str] | None = None,
    source: str = "reactdiff tune",
) -> list[Objective]:
    """The sweep's objectives from the command line, else the space file's `sweep:` entry, else
    the stage default. `objectives` is "name:mode,name:mode"; a mode may be left out."""
    if objectives is not None and (metric is not None or mode is not None):
        raise ConfigError(f"{source}: give either --metric/--mode or --objectives, not both")
    if objectives is None and metric is None:
        space_objective = space_objective or {}
        if space_objective:
            source = "the space file's sweep: entry"
        objectives = space_objective.get("objectives")
        if objectives is None:
            metric = space_objective.get("metric", DEFAULT_METRIC[stage])
            mode = mode or space_objective.get("mode")
    if objectives is None:
        return [_checked(stage, metric, mode, source)]
    parsed = []
    for item in str(objectives).split(","):
        name, _, item_mode = item.strip().partition(":")
        if not name:
            raise ConfigError(f"{source}: objectives are 'name:min|max' separated by commas, got '{objectives}'")
        parsed.append(_checked(stage, name, item_mode or None, source))
    if len({o.metric for o in parsed}) != len(parsed):
        raise ConfigError(f"{source}: a metric appears twice in '{objectives}'")
    return parsed


def dominates(a: dict[str, float], b: dict[str, float], objectives: list[Objective]) -> bool:
    """Trial `a` is no worse than `b` on every objective and better on at least one."""
    if any(math.isnan(a[o.metric]) or math.isnan(b[o.metric]) for o in objectives):
        return False
    no_worse = all(not o.better(b[o.metric], a[o.metric]) for o in objectives)
    return no_worse and any(o.better(a[o.metric], b[o.metric]) for o in objectives)


def pareto_front(values: list[dict[str, float]], objectives: list[Objective]) -> list[int]:
    """Indices of the non-dominated entries among those with every objective reported."""
    complete = [i for i, v in enumerate(values) if all(not math.isnan(v[o.metric]) for o in objectives)]
    return [i for i in complete if not any(dominates(values[j], values[i], objectives) for j in complete if j != i)]
