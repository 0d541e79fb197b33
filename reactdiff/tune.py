"""`reactdiff tune`: Ray Tune sweeps over Ray Train runs, with one MLflow parent run per sweep.

Search spaces (tune_spaces/*.yaml) map dotted config keys (those `reactdiff config` prints) to a
constant or to one distribution:

    train.lr: {loguniform: [1.0e-4, 1.0e-2]}        # float, log-uniform in [lo, hi)
    model.mmt.w_3dmm: {uniform: [1.0, 20.0]}         # float, uniform in [lo, hi)
    model.lrs.reference_clips: {randint: [2, 8]}     # integer in lo..hi, both included (`int:` too)
    model.diffusion.window_size: {choice: [25, 50]}  # one of the values, drawn per trial
    model.lrs.mode: {grid: ["off", "mean"]}          # every value, each num_samples times (random search)
    model.lrs.shrinkage: 4.0                         # a constant, applied to every trial

Write floats as `1.0e-3` and quote "off"/"on"/"yes"/"no": YAML 1.1 reads `1e-3` as a string
(range ends are converted anyway) and bare `off` as a boolean. The space is checked before any
trial starts: every key must be a config field relevant to the stage (stage 2 takes its MMT from
`train.stage1_model`, so `model.mmt.*` is refused there; stage 1 refuses `model.diffusion.*` and
`model.lrs.*`); `train.name`/`train.stage` are set by the sweep and `train.epochs` can only be a
constant (it is ASHA's max_t); ranges need lo < hi (and lo > 0 for loguniform), float ranges need
a float field, `randint` an integer one; every choice/grid value and both ends of every range must
be accepted by the config. A window size that does not divide the clip length is fine with the
default `model.diffusion.pad_mode=replicate`; with `drop` it is refused against the store's frame
count. Errors name the file and the key.

How a sweep runs: a `Tuner` over a driver function (Ray Train V2 refuses `Tuner(trainer)`). Each
trial applies its sampled values to the base config, names its training run `<sweep>-<trial id>`
(stable across restarts, so a resumed trial continues from its own Train checkpoint and MLflow
run), and fits a `TorchTrainer` whose `TuneReportCallback` forwards every epoch's metrics to Tune.
The driver holds no CPU (`{"cpu": 0, "memory": 1}`: Tune needs a non-empty bundle); the training
workers hold the CPUs, and as many trials run at once as the cluster's CPUs (less 2 for Ray
Data) or GPUs allow. ASHA (rungs at 1, 2, 4, ... epochs, all below `train.epochs`; none when
`train.epochs` is 1) stops a trial whose validation metric is worse than the median of its rung.

Resuming: the sweep lives at `<train.storage_path>/<train.name>`. Running the same command again
(same `train.name`) restores it with `Tuner.restore(..., resume_errored=True)`: finished trials
stay as they are, unfinished and errored ones continue from their latest checkpoint. The space,
search and scheduler of a restored sweep are those it was started with; use a new `train.name`
for a new sweep.

MLflow: the sweep's parent run (`<name>-sweep-stage<k>`) holds the base config as params, the space
file, and at the end the ranked table (`sweep/ranking.md`, `sweep/ranking.csv`) and
`best_<metric>`; every trial's training run is a child run (`mlflow.parentRunId`). Trials stopped
by ASHA have their run marked KILLED with the tag `reactdiff.early_stopped=true`.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from reactdiff import tracking
from reactdiff.config import ConfigError, ExperimentConfig, apply_flat, flatten, read_yaml_mapping

RANGE_KINDS = ("uniform", "loguniform", "randint")
LIST_KINDS = ("choice", "grid")
KIND_ALIASES = {"int": "randint"}
SET_BY_SWEEP = ("train.name", "train.stage")
# Sections a stage's training never reads: sweeping them would waste trials.
IGNORED_BY_STAGE = {1: ("model.diffusion.", "model.lrs."), 2: ("model.mmt.",)}
# CPUs left free for Ray Data's read tasks (ray_init advertises this many beyond the cores):
# training workers hold their CPUs for the whole trial, so trials filling every CPU would leave
# their own data pipelines unschedulable.
DATA_CPUS = 2
SWEEP_TAG = "reactdiff.sweep"
TRIAL_TAG = "reactdiff.trial_id"
EARLY_STOPPED_TAG = "reactdiff.early_stopped"


# --------------------------------------------------------------------------------------------
# Search spaces
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    key: str
    kind: str  # "constant" | "choice" | "grid" | "uniform" | "loguniform" | "randint"
    values: tuple  # the constant, the choice/grid values, or (lo, hi)

    def domain(self):
        """The Ray Tune domain of a sampled parameter."""
        from ray import tune

        lo, hi = self.values[0], self.values[-1]
        return {
            "choice": lambda: tune.choice(list(self.values)),
            "grid": lambda: tune.grid_search(list(self.values)),
            "uniform": lambda: tune.uniform(lo, hi),
            "loguniform": lambda: tune.loguniform(lo, hi),
            "randint": lambda: tune.randint(lo, hi + 1),  # Tune's upper bound is exclusive
        }[self.kind]()


@dataclass
class SearchSpace:
    source: Path
    params: dict[str, Param]

    @property
    def constants(self) -> dict[str, Any]:
        return {k: p.values[0] for k, p in self.params.items() if p.kind == "constant"}

    @property
    def sampled(self) -> dict[str, Param]:
        return {k: p for k, p in self.params.items() if p.kind != "constant"}

    def has_grid(self) -> bool:
        return any(p.kind == "grid" for p in self.params.values())

    def param_space(self) -> dict[str, Any]:
        return {k: p.domain() for k, p in self.sampled.items()}

    def apply_constants(self, cfg: ExperimentConfig) -> ExperimentConfig:
        return apply_flat(cfg, self.constants, f"{self.source} (constants)")


def _fail(source: Path, key: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {message}")


def _number(source: Path, key: str, value: Any) -> float:
    """A range end; YAML 1.1 leaves `1e-3` a string, so numeric strings are accepted."""
    if isinstance(value, bool):
        raise _fail(source, key, f"range ends must be numbers, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _fail(source, key, f"range ends must be numbers, got {value!r}") from None


def _check_value(base: ExperimentConfig, source: Path, key: str, value: Any) -> Any:
    """Validate one candidate by building the config; returns it as the config stores it."""
    try:
        return flatten(apply_flat(base, {key: value}, f"{source} key {key} value {value!r}"))[key]
    except ConfigError as err:
        hint = ""
        if isinstance(value, bool) and isinstance(flatten(base)[key], str):
            hint = " (YAML reads bare off/on/yes/no as booleans: quote the value)"
        raise ConfigError(f"{err}{hint}") from None


def _parse_param(base: ExperimentConfig, defaults: dict[str, Any], source: Path, key: str, spec: Any) -> Param:
    if not isinstance(spec, dict):
        return Param(key, "constant", (_check_value(base, source, key, spec),))
    kinds = ", ".join(LIST_KINDS + RANGE_KINDS)
    if len(spec) != 1:
        raise _fail(source, key, f"a distribution has exactly one of {kinds}; got {sorted(spec)}")
    (raw_kind, args), = spec.items()
    kind = KIND_ALIASES.get(raw_kind, raw_kind)
    if kind not in LIST_KINDS + RANGE_KINDS:
        raise _fail(source, key, f"unknown distribution '{raw_kind}' (expected one of {kinds}, or a constant)")
    if key == "train.epochs":
        raise _fail(source, key, "train.epochs is ASHA's max_t: give it as a constant")
    if not isinstance(args, list):
        raise _fail(source, key, f"{raw_kind} takes a list, got {args!r}")

    if kind in LIST_KINDS:
        if not args:
            raise _fail(source, key, f"{raw_kind} needs at least one value")
        return Param(key, kind, tuple(_check_value(base, source, key, v) for v in args))

    if len(args) != 2:
        raise _fail(source, key, f"{raw_kind} takes [lo, hi], got {args!r}")
    lo, hi = (_number(source, key, v) for v in args)
    if not lo < hi:
        raise _fail(source, key, f"{raw_kind} needs lo < hi, got [{args[0]}, {args[1]}]")
    default = defaults[key]
    is_int_field = isinstance(default, int) and not isinstance(default, bool)
    if kind == "randint":
        if not is_int_field:
            raise _fail(source, key, f"randint needs an integer field; {key} is {type(default).__name__}: "
                        "use uniform/loguniform or choice")
        if lo != int(lo) or hi != int(hi):
            raise _fail(source, key, f"randint takes integer ends, got [{args[0]}, {args[1]}]")
        lo, hi = int(lo), int(hi)
    else:
        if not isinstance(default, float):
            raise _fail(source, key, f"{kind} samples floats but {key} is {type(default).__name__}: "
                        "use randint or choice")
        if kind == "loguniform" and lo <= 0:
            raise _fail(source, key, f"loguniform needs 0 < lo, got lo={args[0]}")
    return Param(key, kind, (_check_value(base, source, key, lo), _check_value(base, source, key, hi)))


def _candidates(param: Param | None, fallback: Any) -> list[Any]:
    """Every value a key can take in a trial (ranges of ints enumerated)."""
    if param is None:
        return [fallback]
    if param.kind == "randint":
        return list(range(param.values[0], param.values[1] + 1))
    return list(param.values)


def load_space(path: str | Path, base: ExperimentConfig, stage: int, frames: int | None = None) -> SearchSpace:
    """Parse and validate a search-space file against `base`; `frames` is the store's clip length."""
    path = Path(path)
    expected = "a mapping of dotted config keys to values or distributions"
    tree = read_yaml_mapping(path, "search space", "spaces live in tune_spaces/", expected)
    if not tree:
        raise ConfigError(f"{path}: expected {expected}")

    defaults = flatten(ExperimentConfig())
    params: dict[str, Param] = {}
    for key, spec in tree.items():
        key = str(key)
        if key not in defaults:
            raise _fail(path, key, "unknown key (see `reactdiff config` for every key)")
        if key in SET_BY_SWEEP:
            raise _fail(path, key, "is set by the sweep itself (trial names and --stage); remove it")
        if key.startswith(IGNORED_BY_STAGE[stage]):
            why = ("stage 2 takes the MMT from train.stage1_model" if stage == 2
                   else "stage 1 trains the MMT only")
            raise _fail(path, key, f"has no effect in a stage-{stage} sweep ({why})")
        params[key] = _parse_param(base, defaults, path, key, spec)
    space = SearchSpace(path, params)
    checked = space.apply_constants(base)  # constants together (cross-field checks)

    ws_key, pad_key = "model.diffusion.window_size", "model.diffusion.pad_mode"
    pad_modes = _candidates(params.get(pad_key), checked.model.diffusion.pad_mode)
    if frames and "drop" in pad_modes:
        bad = [ws for ws in _candidates(params.get(ws_key), checked.model.diffusion.window_size) if frames % ws]
        if bad:
            raise _fail(path, ws_key, f"window sizes {bad} do not divide the store's {frames} frames and "
                        f"{pad_key}=drop refuses such clips: choose divisors of {frames} or pad_mode=replicate")
    return space


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------


@dataclass
class TrialRow:
    rank: int
    trial: str  # the trial's training-run name, <sweep>-<trial id>
    status: str  # "completed" | "early-stopped" | "errored"
    metric: float
    epochs: int
    params: dict[str, Any]
    run_id: str  # the MLflow child run ("" if the trial never started one)


@dataclass
class SweepResult:
    name: str
    path: Path  # the Tune experiment folder
    parent_run_id: str
    metric: str
    table: list[TrialRow]
    best: TrialRow | None  # the best completed trial
    best_config: ExperimentConfig | None
    summary: str = field(repr=False, default="")  # the ranked table as Markdown


def trial_name(sweep_name: str, trial_id: str) -> str:
    return f"{sweep_name}-{trial_id}"


def _trial_dirname(trial) -> str:
    # The trial id names the folder, so results map back to trials (and runs) without parsing.
    return trial.trial_id


def _run_trial(params: dict[str, Any], base_config: dict[str, Any], sweep_name: str, parent_run_id: str) -> None:
    """A trial: the base config + sampled params → a TorchTrainer fitted under Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from reactdiff.train.trainer import build_trainer

    trial_id = tune.get_context().get_trial_id()
    name = trial_name(sweep_name, trial_id)
    cfg = apply_flat(ExperimentConfig.model_validate(base_config), {**params, "train.name": name}, f"trial {name}")
    trainer, run_id, _ = build_trainer(
        cfg, tags={"mlflow.parentRunId": parent_run_id, SWEEP_TAG: sweep_name, TRIAL_TAG: trial_id},
        callbacks=[TuneReportCallback()],
    )
    try:
        trainer.fit()
    except Exception:
        tracking.finish_run(run_id, status="FAILED")
        raise


def release_orphaned_placement_groups() -> int:
    """Remove this job's placement groups whose creating actor has died; returns how many.

    ASHA stops a trial by ending its driver actor, and the Train controller it owns dies with
    it; but a placement group made by a non-detached actor lives as long as the job (Ray's
    rule), so the controller's worker group keeps its CPUs. Train V2 frees them from a cleaner
    that asks the Ray State API, which needs the dashboard the local runtime does not start
    (`ray_init`): without this, each stopped trial would hold its CPUs until the sweep ends and
    later trials' Ray Data tasks would never be scheduled. Only the GCS record of a group names
    its creator, hence the private accessor.
    """
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job_id = ray.get_runtime_context().get_job_id()
    freed = 0
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        record = gcs_pb2.PlacementGroupTableData.FromString(raw)
        # A group made by the driver itself (Tune's trial groups) has no creator actor and counts
        # as "creator dead" from the start.
        made_by_dead_actor = record.creator_actor_dead and not ray.ActorID(record.creator_actor_id).is_nil()
        if (made_by_dead_actor and not record.is_detached and record.creator_job_id.hex() == job_id
                and record.state != gcs_pb2.PlacementGroupTableData.REMOVED):
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(record.placement_group_id)))
            freed += 1
    return freed


def _orphan_release_callback(interval_s: float = 5.0):
    """A Tune callback that runs `release_orphaned_placement_groups` every `interval_s`."""
    from ray import tune

    class ReleaseOrphanedPlacementGroups(tune.Callback):
        def __init__(self):
            self.last = 0.0

        def on_step_begin(self, iteration, trials, **info):
            if time.monotonic() - self.last >= interval_s:
                self.last = time.monotonic()
                release_orphaned_placement_groups()

    return ReleaseOrphanedPlacementGroups()


def max_concurrent_trials(cfg: ExperimentConfig) -> int:
    """Trials that fit the cluster at once: its CPUs (less the Ray Data reserve), and GPUs if used."""
    import ray

    resources = ray.cluster_resources()
    per_trial = cfg.train.num_workers * cfg.train.cpus_per_worker
    fit = max(1, math.floor((resources.get("CPU", 0.0) - DATA_CPUS) / per_trial))
    if cfg.train.use_gpu:
        fit = min(fit, max(1, math.floor(resources.get("GPU", 0.0) / cfg.train.num_workers)))
    return fit


def _ranked_rows(results, sweep_name: str, stage: int, metric: str, max_epochs: int,
                 sampled: list[str], experiment_id: str) -> list[TrialRow]:
    """Completed trials first, then early-stopped, then errored; each group by the metric (lower first)."""
    client = MlflowClient()
    rows = []
    for result in results:
        trial_id = Path(result.path).name
        name = trial_name(sweep_name, trial_id)
        metrics = result.metrics or {}  # empty for a trial that failed before its first epoch
        epochs = int(metrics.get("training_iteration", 0))
        value = metrics.get(metric)
        if result.error is not None:
            status = "errored"
        elif epochs < max_epochs:
            status = "early-stopped"
        else:
            status = "completed"
        rows.append(TrialRow(
            rank=0, trial=name, status=status,
            metric=float(value) if isinstance(value, (int, float)) else math.nan,
            epochs=epochs, params={k: (result.config or {}).get(k) for k in sampled},
            run_id=tracking.find_run(client, experiment_id, f"{name}-stage{stage}") or "",
        ))
    order = {"completed": 0, "early-stopped": 1, "errored": 2}
    rows.sort(key=lambda r: (order[r.status], math.isnan(r.metric), r.metric, r.trial))  # ties: by name
    for rank, row in enumerate(rows, start=1):
        row.rank = rank
    return rows


def _columns(rows: list[TrialRow], metric: str, sampled: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["rank", "trial", "status", metric, "epochs", *sampled, "mlflow_run_id"]
    body = [[str(r.rank), r.trial, r.status, f"{r.metric:.6g}", str(r.epochs),
             *(str(r.params[k]) for k in sampled), r.run_id] for r in rows]
    return header, body


def _markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _csv(header: list[str], body: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(body)
    return out.getvalue()


def _close_child_runs(rows: list[TrialRow]) -> None:
    """ASHA ends a trial by stopping its driver, so its training run never finishes itself."""
    client = MlflowClient()
    for row in rows:
        if row.status == "completed" or not row.run_id:
            continue
        if row.status == "early-stopped":
            client.set_tag(row.run_id, EARLY_STOPPED_TAG, "true")
        # A stopped trial's fit() may already have marked its run FAILED: ASHA's stop wins.
        if client.get_run(row.run_id).info.status != "FINISHED":
            client.set_terminated(row.run_id, status="KILLED" if row.status == "early-stopped" else "FAILED")


def run_sweep(cfg: ExperimentConfig, space: Path, stage: int, num_samples: int = 4, search: str = "random",
              scheduler: str = "asha", metric: str = "val_loss") -> SweepResult:
    """Run (or resume) the sweep named `cfg.train.name`; prints and logs the ranked trials."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from reactdiff.data.store import Store
    from reactdiff.ray_runtime import ray_init

    if search not in ("random", "optuna"):
        raise ConfigError(f"search '{search}' is not one of random, optuna")
    if scheduler not in ("asha", "none"):
        raise ConfigError(f"scheduler '{scheduler}' is not one of asha, none")
    if num_samples < 1:
        raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
    cfg = apply_flat(cfg, {"train.stage": stage}, "tune --stage")
    if stage == 2 and not cfg.train.stage1_model:
        raise ConfigError("a stage-2 sweep needs train.stage1_model=<stage-1 checkpoint | models:/name@alias> "
                          "(the frozen MMT every trial trains over)")
    store = Store(cfg.data.store)  # a clear error now, not in every trial
    parsed = load_space(space, cfg, stage, frames=store.manifest.frames)
    if search == "optuna" and parsed.has_grid():
        raise ConfigError(f"{parsed.source}: grid is for search=random; use choice with search=optuna")
    base = parsed.apply_constants(cfg)
    sampled = sorted(parsed.sampled)

    ray_init()
    sweep_name = base.train.name
    storage = Path(base.train.storage_path).resolve()
    parent_run_id = tracking.start_or_resume_run(
        base.tracking.tracking_uri, base.tracking.experiment, f"{sweep_name}-sweep-stage{stage}",
        tags={SWEEP_TAG: sweep_name, tracking.STAGE_TAG: str(stage), tracking.GIT_COMMIT_TAG: tracking.git_commit()},
        params={**flatten(base), "sweep.space": str(parsed.source), "sweep.search": search,
                "sweep.scheduler": scheduler, "sweep.metric": metric, "sweep.num_samples": num_samples},
    )
    client = MlflowClient()
    client.log_artifact(parent_run_id, str(parsed.source), "sweep")

    trainable = tune.with_resources(
        tune.with_parameters(_run_trial, base_config=base.model_dump(mode="json"), sweep_name=sweep_name,
                             parent_run_id=parent_run_id),
        {"cpu": 0, "memory": 1},
    )
    path = storage / sweep_name
    if tune.Tuner.can_restore(path):
        print(f"resuming sweep {sweep_name} from {path}")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    else:
        # Concurrency is set on the search algorithm: Tune ignores TuneConfig.max_concurrent_trials
        # (with only a warning) when given a BasicVariantGenerator instance.
        concurrency = max_concurrent_trials(base)
        if search == "optuna":
            searcher = ConcurrencyLimiter(OptunaSearch(seed=base.train.seed), max_concurrent=concurrency)
        else:
            searcher = BasicVariantGenerator(max_concurrent=concurrency, random_state=base.train.seed)
        # Rungs at 1, 2, 4, ... epochs, all below train.epochs: a stop at a trial's last report
        # would kill its training run while it exports the model and closes its MLflow run, and
        # stop_last_trials=False leaves trials that reach max_t to finish on their own.
        asha = None
        if scheduler == "asha" and base.train.epochs >= 2:
            asha = ASHAScheduler(time_attr="training_iteration", max_t=base.train.epochs - 1, grace_period=1,
                                 reduction_factor=2, stop_last_trials=False)
        tuner = tune.Tuner(
            trainable,
            param_space=parsed.param_space(),
            tune_config=tune.TuneConfig(
                metric=metric, mode="min", num_samples=num_samples, search_alg=searcher,
                scheduler=asha,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(name=sweep_name, storage_path=str(storage), verbose=1,
                                      callbacks=[_orphan_release_callback()]),
        )
    try:
        results = tuner.fit()
    except Exception:
        tracking.finish_run(parent_run_id, status="FAILED")
        raise

    release_orphaned_placement_groups()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    rows = _ranked_rows(results, sweep_name, stage, metric, base.train.epochs, sampled, experiment_id)
    _close_child_runs(rows)
    header, body = _columns(rows, metric, sampled)
    summary = _markdown(header, body)
    print(f"\nsweep {sweep_name} (stage {stage}, {len(rows)} trials, ranked by {metric}, lower is better):\n{summary}")

    client.log_text(parent_run_id, summary, "sweep/ranking.md")
    client.log_text(parent_run_id, _csv(header, body), "sweep/ranking.csv")
    counts = {s: sum(r.status == s for r in rows) for s in ("completed", "early-stopped", "errored")}
    tracking.log_epoch(parent_run_id, {f"trials_{s.replace('-', '_')}": n for s, n in counts.items()}, 0)
    best = next((r for r in rows if r.status == "completed" and not math.isnan(r.metric)), None)
    best_config = None
    if best is not None:
        tracking.log_epoch(parent_run_id, {f"best_{metric}": best.metric}, 0)
        client.set_tag(parent_run_id, "reactdiff.best_trial", best.trial)
        client.set_tag(parent_run_id, "reactdiff.best_run_id", best.run_id)
        best_config = apply_flat(base, {**best.params, "train.name": best.trial}, f"best trial {best.trial}")
    tracking.finish_run(parent_run_id, status="FINISHED" if best is not None else "FAILED")
    return SweepResult(name=sweep_name, path=path, parent_run_id=parent_run_id, metric=metric, table=rows,
                       best=best, best_config=best_config, summary=summary)
