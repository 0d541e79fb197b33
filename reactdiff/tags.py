"""Every MLflow tag name the package writes or reads, in one place.

Run tags are written by training, sweeps and evaluation and read by promotion and the tests; model-
version tags are written by promotion (reactdiff.registry documents what each holds); the lock tags
sit on the registry's lock model.
"""

from __future__ import annotations

# Run tags.
RUN_NAME_TAG = "reactdiff.run_name"  # a run is found again by it (a resumed job keeps its run)
STAGE_TAG = "reactdiff.stage"  # 1: an MMT, 2: a ReactDiff (also a model-version tag)
STORE_FINGERPRINT_TAG = "reactdiff.store_fingerprint"  # the feature store's manifest fingerprint
GIT_COMMIT_TAG = "reactdiff.git_commit"
STAGE1_MODEL_TAG = "reactdiff.stage1_model"  # the frozen MMT a stage-2 run trained over
EVAL_SPLIT_TAG = "reactdiff.eval_split"
EVAL_MODE_TAG = "reactdiff.eval_mode"  # offline | online | score
EVAL_PRECISION_TAG = "reactdiff.eval_precision"  # fp32 | bf16
SWEEP_TAG = "reactdiff.sweep"
TRIAL_TAG = "reactdiff.trial_id"
EARLY_STOPPED_TAG = "reactdiff.early_stopped"

# Model-version tags (promotion).
METRICS_TAG = "reactdiff.metrics"
CONFIG_TAG = "reactdiff.config"
MODEL_URI_TAG = "reactdiff.model_uri"
DECISION_TAG = "reactdiff.promotion.decision"
PREVIOUS_CHAMPION_TAG = "reactdiff.promotion.previous_champion"
ROLLED_BACK_TAG = "reactdiff.promotion.rolled_back"
SWEEP_RUN_TAG = "reactdiff.promotion.sweep_run_id"  # on a model version promoted from a sweep

# Tags of the registry's lock model.
LOCK_OWNER_TAG = "reactdiff.lock.owner"
LOCK_ACQUIRED_TAG = "reactdiff.lock.acquired_at"
