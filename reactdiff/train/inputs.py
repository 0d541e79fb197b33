"""What a training run reads, checked before any runtime starts and before the trainer's imports
(torch, Ray Train: many seconds on a busy machine), so that a user error is refused at once."""

from __future__ import annotations

from dataclasses import dataclass

from reactdiff.config import ConfigError, ExperimentConfig
from reactdiff.data.store import Store


@dataclass(frozen=True)
class TrainingInputs:
    """What a training run reads, checked before any runtime starts (`training_inputs`)."""

    store: Store
    stage1_checkpoint: str | None  # stage 2: the frozen MMT's local file


def training_inputs(cfg: ExperimentConfig) -> TrainingInputs:
    """The store and (stage 2) the stage-1 checkpoint of `cfg`. A missing or wrong store, a
    missing `train.stage1_model` or one that does not resolve raises a UserError naming it."""
    if cfg.train.stage == 2 and not cfg.train.stage1_model:
        raise ConfigError(
            "stage 2 trains over a stage-1 MMT: add train.stage1_model=<checkpoint | models:/name@alias>, "
            "e.g. the URI `reactdiff train stage1` printed"
        )
    store = Store(cfg.data.store)
    for split in (cfg.data.train_split, cfg.data.val_split):
        store.files(split)  # a clear error now rather than inside a worker
    stage1_checkpoint = None
    if cfg.train.stage == 2:
        from reactdiff import tracking  # imports MLflow (seconds): after the store is checked

        # Resolved once, here: workers run elsewhere and read the file.
        stage1_checkpoint = str(
            tracking.resolve_checkpoint(cfg.tracking.tracking_uri, cfg.train.stage1_model).resolve()
        )
    return TrainingInputs(store, stage1_checkpoint)
