"""Running a sweep: `reactdiff tune`, Ray Tune over Ray Train runs, one MLflow parent run per sweep.

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
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reactdiff import console, tracking
from reactdiff.config import ConfigError, ExperimentConfig, apply_flat, flatten
from reactdiff.evaluate import report
from reactdiff.ray_compat import release_orphaned_placement_groups
from reactdiff.tags import EARLY_STOPPED_TAG, GIT_COMMIT_TAG, STAGE_TAG, SWEEP_RUN_TAG, SWEEP_TAG, TRIAL_TAG
from reactdiff.tune.objectives import Objective, evaluation_metric, pareto_front, parse_objectives
from reactdiff.tune.space import load_space

# CPUs left free for Ray Data's read tasks (ray_init advertises this many beyond the cores):
# training workers hold their CPUs for the whole trial, so trials filling every CPU would leave
# their own data pipelines unschedulable.
DATA_CPUS = 2
# Columns every ranking shows besides the objectives, and the trade-off drawn as a Pareto front
# when a stage-2 sweep has one objective (appropriateness against diversity, as in the paper).
HEADLINE = {
    1: [
        "val_recon_FRDist",
        "val_recon_3dmm_mse",
        "val_recon_emotion_l1",
        "val_recon_au_f1",
        "val_recon_va_ccc",
        "val_loss",
    ],
    2: ["val_FRDist", "val_FRCorr", "val_FRDiv", "val_loss"],
}
TRADEOFF = {2: [Objective("val_FRDist", "min"), Objective("val_FRDiv", "max")]}


# --------------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------------


@dataclass
class TrialRow:
    rank: int
    trial: str  # the trial's training-run name, <sweep>-<trial id>
    status: str  # "completed" | "early-stopped" | "errored"
    metrics: dict[str, float]  # the objectives and the stage's headline metrics (NaN: not reported)
    epochs: int
    params: dict[str, Any]
    run_id: str  # the MLflow child run ("" if the trial never started one)
    on_front: bool = False  # non-dominated on the Pareto objectives


@dataclass
class SweepResult:
    name: str
    path: Path  # the Tune experiment folder
    parent_run_id: str
    objectives: list[Objective]
    table: list[TrialRow]
    best: TrialRow | None  # single objective: the best completed trial; several: None (pick one)
    best_config: ExperimentConfig | None
    front: list[TrialRow]  # the Pareto front over `pareto_objectives`
    pareto_objectives: list[Objective]
    summary: str = field(repr=False, default="")  # the ranked table (and front) as Markdown
    promotion: Any = None  # registry.PromotionResult of --promote

    @property
    def metric(self) -> str:
        return self.objectives[0].metric


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
        cfg,
        tags={"mlflow.parentRunId": parent_run_id, SWEEP_TAG: sweep_name, TRIAL_TAG: trial_id},
        callbacks=[TuneReportCallback()],
    )
    try:
        trainer.fit()
    except Exception:
        tracking.finish_run(tracking.client_for(cfg.tracking.tracking_uri), run_id, status="FAILED")
        raise


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


def _trial_lines(epochs: int):
    """A Tune callback (it runs in the driver) printing one terminal line per trial epoch."""
    from ray import tune

    from reactdiff.train.progress import EpochClock

    class TrialLines(tune.Callback):
        def __init__(self):
            self.clock = EpochClock()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            console.say(self.clock.line(f"trial {trial.trial_id}", result, epochs))

        def on_trial_complete(self, iteration, trials, trial, **info):
            console.say(f"trial {trial.trial_id} finished")

        def on_trial_error(self, iteration, trials, trial, **info):
            console.say(f"trial {trial.trial_id} failed: see the log, and its error.txt under {trial.local_path}")

    return TrialLines()


def max_concurrent_trials(cfg: ExperimentConfig) -> int:
    """Trials that fit the cluster at once: its CPUs (less the Ray Data reserve), and GPUs if used."""
    import ray

    resources = ray.cluster_resources()
    per_trial = cfg.train.num_workers * cfg.train.cpus_per_worker
    fit = max(1, math.floor((resources.get("CPU", 0.0) - DATA_CPUS) / per_trial))
    if cfg.train.use_gpu:
        fit = min(fit, max(1, math.floor(resources.get("GPU", 0.0) / cfg.train.num_workers)))
    return fit


def _ranked_rows(
    client: tracking.MlflowClient,
    results,
    sweep_name: str,
    stage: int,
    columns: list[str],
    objectives: list[Objective],
    pareto: list[Objective],
    max_epochs: int,
    sampled: list[str],
    experiment_id: str,
) -> list[TrialRow]:
    """Completed trials first, then early-stopped, then errored. One objective: each group best
    first. Several: the Pareto front first, each part by the first objective."""
    rows = []
    for result in results:
        trial_id = Path(result.path).name
        name = trial_name(sweep_name, trial_id)
        reported = result.metrics or {}  # empty for a trial that failed before its first epoch
        epochs = int(reported.get("training_iteration", 0))
        if result.error is not None:
            status = "errored"
        elif epochs < max_epochs:
            status = "early-stopped"
        else:
            status = "completed"
        values = {}
        for column in columns:
            value = reported.get(column)
            values[column] = float(value) if isinstance(value, (int, float)) else math.nan
        rows.append(
            TrialRow(
                rank=0,
                trial=name,
                status=status,
                metrics=values,
                epochs=epochs,
                params={k: (result.config or {}).get(k) for k in sampled},
                run_id=tracking.find_run(client, experiment_id, f"{name}-stage{stage}") or "",
            )
        )
    completed = [row for row in rows if row.status == "completed"]
    for index in pareto_front([row.metrics for row in completed], pareto):
        completed[index].on_front = True
    order = {"completed": 0, "early-stopped": 1, "errored": 2}
    first = objectives[0]
    rows.sort(
        key=lambda r: (
            order[r.status],
            len(objectives) > 1 and not r.on_front,
            first.sort_key(r.metrics[first.metric]),
            r.trial,
        )
    )  # ties: by name
    for rank, row in enumerate(rows, start=1):
        row.rank = rank
    return rows


def _table(
    rows: list[TrialRow], columns: list[str], sampled: list[str], pareto: list[Objective]
) -> tuple[list[str], list[list[object]]]:
    """The header and the rows of a ranking, values as they are: Markdown rounds them, CSV keeps them."""
    front_column = ["pareto"] if pareto else []
    header = ["rank", "trial", "status", *front_column, *columns, "epochs", *sampled, "mlflow_run_id"]
    body = [
        [
            r.rank,
            r.trial,
            r.status,
            *(["*" if r.on_front else ""] if pareto else []),
            *(r.metrics[c] for c in columns),
            r.epochs,
            *(r.params[k] for k in sampled),
            r.run_id,
        ]
        for r in rows
    ]
    return header, body


def _markdown(header: list[str], body: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(report.cell(value) for value in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _csv(header: list[str], body: list[list[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(body)
    return out.getvalue()


def _close_child_runs(client: tracking.MlflowClient, rows: list[TrialRow]) -> None:
    """ASHA ends a trial by stopping its driver, so its training run never finishes itself."""
    for row in rows:
        if row.status == "completed" or not row.run_id:
            continue
        if row.status == "early-stopped":
            client.set_tag(row.run_id, EARLY_STOPPED_TAG, "true")
        # A stopped trial's fit() may already have marked its run FAILED: ASHA's stop wins.
        if client.get_run(row.run_id).info.status != "FINISHED":
            client.set_terminated(row.run_id, status="KILLED" if row.status == "early-stopped" else "FAILED")


def _describe(objective: Objective) -> str:
    return f"{objective.metric} ({'lower' if objective.mode == 'min' else 'higher'} is better)"


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep optimises, checked before Ray or MLflow start (`plan_sweep`)."""

    objectives: list[Objective]
    search: str  # "random" | "optuna" (several objectives: Optuna's NSGA-II)
    scheduler: str  # "asha" | "none"
    promote: bool
    pick: str | None


def plan_sweep(
    stage: int,
    space_objective: dict[str, str] | None = None,
    metric: str | None = None,
    mode: str | None = None,
    objectives: str | None = None,
    search: str = "random",
    scheduler: str | None = None,
    promote: bool = False,
    pick: str | None = None,
) -> SweepPlan:
    """Objectives, search and scheduler of a sweep, or a ConfigError saying what to change.

    `scheduler` None means ASHA for one objective and none for several (ASHA stops trials on one
    metric, which a Pareto search does not have)."""
    parsed = parse_objectives(stage, metric, mode, objectives, space_objective)
    if search not in ("random", "optuna"):
        raise ConfigError(f"search '{search}' is not one of random, optuna")
    if scheduler not in (None, "asha", "none"):
        raise ConfigError(f"scheduler '{scheduler}' is not one of asha, none")
    several = len(parsed) > 1
    if several:
        if scheduler == "asha":
            raise ConfigError(
                "ASHA stops trials on a single metric and does not apply to a multi-objective "
                "search: drop --scheduler asha (or pass --scheduler none), or give one objective"
            )
        search, scheduler = "optuna", "none"
    scheduler = scheduler or "asha"
    if pick is not None and not several:
        raise ConfigError(
            "--pick names a Pareto-front member of a multi-objective sweep; a single-objective "
            "sweep promotes its best trial"
        )
    if promote:
        if stage != 2:
            raise ConfigError(
                "--promote registers stage-2 (ReactDiff) models; a stage-1 sweep's best MMT is "
                "used through train.stage1_model=<its checkpoint>"
            )
        if evaluation_metric(parsed[0].metric) is None:
            raise ConfigError(
                f"--promote compares models by a REACT2024 metric evaluated on val; "
                f"'{parsed[0].metric}' is not one: rank by e.g. val_FRDist"
            )
        if several and pick is None:
            raise ConfigError(
                "a multi-objective sweep has no single best trial: run it, read its Pareto front, "
                "then run the same command with --promote --pick <trial> (a front member)"
            )
    return SweepPlan(parsed, search, scheduler, promote, pick)


def _promote(cfg: ExperimentConfig, result: "SweepResult", row: TrialRow, objective: Objective):
    """Evaluate `row`'s model on val with α = 10, then promote it through the registry's rules."""
    from reactdiff import registry
    from reactdiff.evaluate.run import evaluate

    if row.status != "completed" or not row.run_id:
        raise ConfigError(f"trial {row.trial} is {row.status} and cannot be promoted; pick a completed trial")
    model_uri = f"runs:/{row.run_id}/{tracking.MODEL_ARTIFACT}"
    console.say(f"promote: evaluating {row.trial} ({model_uri}) on '{cfg.data.val_split}' with α = 10")
    evaluate(
        cfg,
        model=model_uri,
        split=cfg.data.val_split,
        alpha=10,
        out_dir=Path(cfg.train.storage_path) / result.name / "promotion-eval",
    )
    promotion = registry.promote(
        cfg.tracking.tracking_uri,
        cfg.tracking.experiment,
        evaluation_metric(objective.metric),
        objective.mode,
        cfg.tracking.registered_model,
        split=cfg.data.val_split,
        run_id=row.run_id,
        record={SWEEP_RUN_TAG: result.parent_run_id, SWEEP_TAG: result.name, TRIAL_TAG: row.trial},
    )
    return promotion


def run_sweep(
    cfg: ExperimentConfig,
    space: Path,
    stage: int,
    num_samples: int = 4,
    search: str = "random",
    scheduler: str | None = None,
    metric: str | None = None,
    mode: str | None = None,
    objectives: str | None = None,
    promote: bool = False,
    pick: str | None = None,
) -> SweepResult:
    """Run (or resume) the sweep named `cfg.train.name`; prints and logs the ranked trials and the
    Pareto front, and with `promote` hands the best (or the picked) trial to the registry."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from reactdiff.data.store import Location, Store
    from reactdiff.ray_runtime import ray_init

    if num_samples < 1:
        raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
    cfg = apply_flat(cfg, {"train.stage": stage}, "tune --stage")
    if stage == 2 and not cfg.train.stage1_model:
        raise ConfigError(
            "a stage-2 sweep needs train.stage1_model=<stage-1 checkpoint | models:/name@alias> "
            "(the frozen MMT every trial trains over)"
        )
    # Trials run with Tune's trial folder as their working directory: paths given relative to
    # this one are made absolute for them.
    absolute = {
        "data.store": Location(cfg.data.store).uri,
        "train.storage_path": str(Path(cfg.train.storage_path).resolve()),
    }
    # Checked here, not in every trial: a model that does not resolve is refused before Ray starts.
    if stage == 2 and tracking.check_model(cfg.tracking.tracking_uri, cfg.train.stage1_model).is_file:
        absolute["train.stage1_model"] = str(Path(cfg.train.stage1_model).resolve())
    cfg = apply_flat(cfg, absolute, "tune (absolute paths)")
    store = Store(cfg.data.store)  # a clear error now, not in every trial
    parsed = load_space(space, cfg, stage, frames=store.manifest.frames)
    plan = plan_sweep(stage, parsed.objective, metric, mode, objectives, search, scheduler, promote, pick)
    if plan.search == "optuna" and parsed.has_grid():
        raise ConfigError(f"{parsed.source}: grid is for search=random; use choice with search=optuna")
    base = parsed.apply_constants(cfg)
    if base.train.eval_alpha is None:  # α = 3 keeps a trial's evaluation cheap (10 outside sweeps)
        base = apply_flat(base, {"train.eval_alpha": 3}, "sweep default")
    sampled = sorted(parsed.sampled)
    objective_list = plan.objectives
    pareto = objective_list if len(objective_list) > 1 else TRADEOFF.get(stage, [])
    columns = list(dict.fromkeys([o.metric for o in objective_list + pareto] + HEADLINE[stage]))

    ray_init()
    sweep_name = base.train.name
    storage = Path(base.train.storage_path).resolve()
    objective_text = ",".join(f"{o.metric}:{o.mode}" for o in objective_list)
    client = tracking.client_for(base.tracking.tracking_uri)
    parent_run_id = tracking.start_or_resume_run(
        client,
        base.tracking.experiment,
        f"{sweep_name}-sweep-stage{stage}",
        tags={SWEEP_TAG: sweep_name, STAGE_TAG: str(stage), GIT_COMMIT_TAG: tracking.git_commit()},
        params={
            **flatten(base),
            "sweep.space": str(parsed.source),
            "sweep.search": plan.search,
            "sweep.scheduler": plan.scheduler,
            "sweep.objectives": objective_text,
            "sweep.num_samples": num_samples,
        },
    )
    client.log_artifact(parent_run_id, str(parsed.source), "sweep")

    trainable = tune.with_resources(
        tune.with_parameters(
            _run_trial, base_config=base.model_dump(mode="json"), sweep_name=sweep_name, parent_run_id=parent_run_id
        ),
        {"cpu": 0, "memory": 1},
    )
    path = storage / sweep_name
    if tune.Tuner.can_restore(path):
        console.say(f"resuming sweep {sweep_name} from {path}")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    else:
        # Concurrency is set on the search algorithm: Tune ignores TuneConfig.max_concurrent_trials
        # (with only a warning) when given a BasicVariantGenerator instance.
        concurrency = max_concurrent_trials(base)
        single = objective_list[0] if len(objective_list) == 1 else None
        if plan.search == "optuna":
            import optuna

            sampler = None
            if single is None:  # NSGA-II: generations of at least 2 trials, at most half the budget
                sampler = optuna.samplers.NSGAIISampler(
                    population_size=max(2, min(50, num_samples // 2)), seed=base.train.seed
                )
            searcher = ConcurrencyLimiter(
                OptunaSearch(
                    metric=[o.metric for o in objective_list] if single is None else None,
                    mode=[o.mode for o in objective_list] if single is None else None,
                    sampler=sampler,
                    seed=base.train.seed,
                ),
                max_concurrent=concurrency,
            )
        else:
            searcher = BasicVariantGenerator(max_concurrent=concurrency, random_state=base.train.seed)
        tuner = tune.Tuner(
            trainable,
            param_space=parsed.param_space(),
            tune_config=tune.TuneConfig(
                metric=single.metric if single else None,
                mode=single.mode if single else None,
                num_samples=num_samples,
                search_alg=searcher,
                scheduler=_asha(base) if plan.scheduler == "asha" else None,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=sweep_name,
                storage_path=str(storage),
                verbose=1,
                callbacks=[_orphan_release_callback(), _trial_lines(base.train.epochs)],
            ),
        )
    try:
        results = tuner.fit()
    except Exception:
        tracking.finish_run(client, parent_run_id, status="FAILED")
        raise

    release_orphaned_placement_groups()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    rows = _ranked_rows(
        client, results, sweep_name, stage, columns, objective_list, pareto, base.train.epochs, sampled, experiment_id
    )
    _close_child_runs(client, rows)
    header, body = _table(rows, columns, sampled, pareto)
    front = [row for row in rows if row.on_front]
    ranked_by = " and ".join(_describe(o) for o in objective_list)
    summary = f"sweep {sweep_name} (stage {stage}, {len(rows)} trials, ranked by {ranked_by}):\n\n"
    summary += _markdown(header, body)
    if pareto:
        front_header, front_body = _table(front, columns, sampled, [])
        front_table = (
            f"Pareto front over {' vs '.join(_describe(o) for o in pareto)}: the completed trials "
            f"no other completed trial beats on all of them\n\n" + _markdown(front_header, front_body)
        )
        summary += "\n" + front_table
        client.log_text(parent_run_id, front_table, "sweep/pareto.md")
        client.log_text(parent_run_id, _csv(front_header, front_body), "sweep/pareto.csv")

    client.log_text(parent_run_id, summary, "sweep/ranking.md")
    client.log_text(parent_run_id, _csv(header, body), "sweep/ranking.csv")
    if pareto:
        x, y = pareto[0], pareto[1]
        with tempfile.TemporaryDirectory() as tmp:
            plot = report.plot_tradeoff(
                Path(tmp) / "pareto.png",
                {row.trial: (row.metrics[x.metric], row.metrics[y.metric]) for row in rows},
                [row.trial for row in front],
                _describe(x),
                _describe(y),
                f"sweep {sweep_name}: {len(rows)} trials, Pareto front highlighted",
            )
            client.log_artifact(parent_run_id, str(plot), "sweep")
    counts = {s: sum(r.status == s for r in rows) for s in ("completed", "early-stopped", "errored")}
    tracking.log_epoch(client, parent_run_id, {f"trials_{s.replace('-', '_')}": n for s, n in counts.items()}, 0)
    best = None
    if len(objective_list) == 1:
        first = objective_list[0].metric
        best = next((r for r in rows if r.status == "completed" and not math.isnan(r.metrics[first])), None)
    best_config = None
    if best is not None:
        tracking.log_epoch(
            client, parent_run_id, {f"best_{objective_list[0].metric}": best.metrics[objective_list[0].metric]}, 0
        )
        client.set_tag(parent_run_id, "reactdiff.best_trial", best.trial)
        client.set_tag(parent_run_id, "reactdiff.best_run_id", best.run_id)
        best_config = apply_flat(base, {**best.params, "train.name": best.trial}, f"best trial {best.trial}")
    if front:
        client.set_tag(parent_run_id, "reactdiff.pareto_front", ",".join(row.trial for row in front))
    tracking.finish_run(client, parent_run_id, status="FINISHED" if (best or front) else "FAILED")
    result = SweepResult(
        name=sweep_name,
        path=path,
        parent_run_id=parent_run_id,
        objectives=objective_list,
        table=rows,
        best=best,
        best_config=best_config,
        front=front,
        pareto_objectives=pareto,
        summary=summary,
    )
    if plan.promote:
        chosen = best if plan.pick is None else _picked(rows, plan.pick, sweep_name)
        if chosen is None:
            raise ConfigError(f"sweep {sweep_name} has no completed trial with {objective_list[0].metric} to promote")
        result.promotion = _promote(base, result, chosen, objective_list[0])
    return result


def _picked(rows: list[TrialRow], pick: str, sweep_name: str) -> TrialRow:
    """The front member named by --pick: the trial name, its id, or its rank in the printed front table."""
    front = [row for row in rows if row.on_front]
    if pick.isdigit():
        if not 1 <= int(pick) <= len(front):
            raise ConfigError(
                f"--pick {pick}: the Pareto front of sweep {sweep_name} has {len(front)} trials "
                f"(ranks 1-{len(front)} of its table): " + ", ".join(r.trial for r in front)
            )
        return front[int(pick) - 1]
    for row in rows:
        if pick in (row.trial, row.trial[len(sweep_name) + 1 :]):
            if not row.on_front:
                front = ", ".join(r.trial for r in rows if r.on_front)
                raise ConfigError(f"--pick {pick}: {row.trial} is not on the Pareto front ({front}); pick one of those")
            return row
    raise ConfigError(
        f"--pick {pick}: no trial of sweep {sweep_name} has that name; its trials: "
        + ", ".join(row.trial for row in rows)
    )


def _asha(base: ExperimentConfig):
    """ASHA with rungs at e, 2e, 4e, ... epochs (e = train.eval_every), all below train.epochs, so
    every rung sees freshly scored reactions; None when no rung fits.

    A stop at a trial's last report would kill its training run while it exports the model and
    closes its MLflow run, and stop_last_trials=False leaves trials that reach max_t to finish."""
    from ray.tune.schedulers import ASHAScheduler

    grace, max_t = base.train.eval_every, base.train.epochs - 1
    if grace > max_t or max_t < 1:
        return None
    return ASHAScheduler(
        time_attr="training_iteration", max_t=max_t, grace_period=grace, reduction_factor=2, stop_last_trials=False
    )
