"""`reactdiff tune`: Ray Tune sweeps over Ray Train runs.

- `space`: the YAML search-space grammar (tune_spaces/*.yaml), checked before any trial starts;
- `objectives`: what a sweep ranks by (one metric, or a Pareto search over several), checked too;
- `sweep`: the runner: trials, ranking, Pareto front, MLflow parent run, promotion of the winner.
"""

from reactdiff.tags import EARLY_STOPPED_TAG, SWEEP_RUN_TAG
from reactdiff.tune.objectives import Objective, known_metrics, pareto_front, parse_objectives
from reactdiff.tune.space import SearchSpace, load_space
from reactdiff.tune.sweep import SweepResult, TrialRow, plan_sweep, run_sweep

__all__ = [
    "EARLY_STOPPED_TAG",
    "SWEEP_RUN_TAG",
    "Objective",
    "SearchSpace",
    "SweepResult",
    "TrialRow",
    "known_metrics",
    "load_space",
    "pareto_front",
    "parse_objectives",
    "plan_sweep",
    "run_sweep",
]
