"""Model registry: promote the best evaluated run to `champion`, and roll a promotion back.

MLflow 3 deprecates registry stages, so promotion moves aliases:

    best FINISHED run ──register──▶ version N ──alias──▶ challenger
                                        └── better than champion (or force) ──alias──▶ champion

Run tags the evaluation code sets (and `promote` reads):
    reactdiff.eval_split          split the run's metrics were computed on ("val", "test")
    reactdiff.store_fingerprint   `store_fingerprint` of the feature store's manifest.json
    reactdiff.stage1_model        the frozen stage-1 model the run trained on (URI or path)
    reactdiff.git_commit          the code version that trained the run

Model-version tags written here: `reactdiff.metrics` (the run's metrics, JSON), `reactdiff.config`
(the run's params, JSON), the four run tags above, `reactdiff.stage` (1: an MMT, 2: a ReactDiff;
a name's champion is replaced only by a model of its stage), `reactdiff.model_uri` (runs:/<id>/model), and
the promotion record `reactdiff.promotion.decision` / `reactdiff.promotion.previous_champion`
(the champion version this one replaced, "" if none) and, on a champion rolled back,
`reactdiff.promotion.rolled_back`; a version promoted from a sweep (`reactdiff tune --promote`) also
carries `reactdiff.promotion.sweep_run_id` (the sweep's parent run), `reactdiff.sweep` and
`reactdiff.trial_id`. Champion comparisons read the metric and
the split from these version tags, so they do not depend on the run still existing.

Registered-model existence: `promote` creates the registered model on the first promotion, unless
`require_existing=True`; `rollback` refuses a name that does not exist.

Concurrency: promotions and rollbacks of one registered model hold `registry_lock.RegistryLock`.

Command line (reactdiff/commands/promote.py):
    reactdiff promote --experiment reactdiff --metric FRDist --mode min --model-name reactdiff
    reactdiff promote --rollback --model-name reactdiff
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Literal

from mlflow.entities import LoggedModelStatus, Run, RunStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from reactdiff.errors import PromotionError
from reactdiff.registry_lock import RegistryLock
from reactdiff.tags import (
    CONFIG_TAG,
    DECISION_TAG,
    EVAL_SPLIT_TAG,
    GIT_COMMIT_TAG,
    METRICS_TAG,
    MODEL_URI_TAG,
    PREVIOUS_CHAMPION_TAG,
    ROLLED_BACK_TAG,
    STAGE1_MODEL_TAG,
    STAGE_TAG,
    STORE_FINGERPRINT_TAG,
)
from reactdiff.tracking import MODEL_ARTIFACT, already_exists, client_for, not_found

CHAMPION, CHALLENGER = "champion", "challenger"

Mode = Literal["min", "max"]


PROMOTED = ("promoted", "forced")  # the decisions that move the champion alias


@dataclass
class PromotionResult:
    model_name: str
    version: str  # the version registered (or re-used) for the best run
    run_id: str
    metric: str
    split: str
    value: float
    decision: str  # "promoted" | "forced" | "kept champion" | "already champion"
    champion_version: str  # the champion after this promotion
    previous_champion: str | None  # the champion before it (None: there was none)
    previous_value: float | None
    notes: list[str] = field(default_factory=list)  # runs skipped and why

    @property
    def promoted(self) -> bool:
        return self.decision in PROMOTED

    def summary(self) -> str:
        before = (
            "no champion before"
            if self.previous_champion is None
            else f"previous champion v{self.previous_champion} ({self.metric}={_fmt(self.previous_value)})"
        )
        lines = [
            f"{self.model_name} v{self.version} (run {self.run_id}, {self.split} {self.metric}="
            f"{_fmt(self.value)}): {self.decision}; {before}; champion is now v{self.champion_version}",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _named(run: Run, detail: str = "") -> str:
    """A run as a note names it: its name (what it is, e.g. demo-stage1) and its id."""
    return f"{run.info.run_name or 'unnamed'} (run {run.info.run_id}{', ' + detail if detail else ''})"


# --------------------------------------------------------------------------------------------
# Run selection
# --------------------------------------------------------------------------------------------


def _all_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def _better(value: float, than: float, mode: Mode) -> bool:
    return value < than if mode == "min" else value > than


def _select(
    runs: list[Run], metric: str, mode: Mode, split: str, store_fingerprint: str | None
) -> tuple[Run, list[str]]:
    """The best FINISHED run evaluated on `split` (and on `store_fingerprint` when given), plus
    notes on what was skipped. Runs of several stores without a reference fingerprint refuse."""
    notes: list[str] = []
    comparable: list[Run] = []
    skipped: dict[str, list[str]] = {}
    for run in runs:
        tags = run.data.tags
        value = run.data.metrics.get(metric)
        if value is None or not math.isfinite(value):
            why = (
                f"have no finite '{metric}': no `reactdiff evaluate` scored them on it (training runs and sweeps "
                "log val_-prefixed metrics; stage-1 evaluations log recon_ ones)"
            )
            skipped.setdefault(why, []).append(_named(run))
        elif tags.get(EVAL_SPLIT_TAG) != split:
            why = f"were evaluated on another split than '{split}' (--split chooses the split compared)"
            skipped.setdefault(why, []).append(_named(run, f"split {tags.get(EVAL_SPLIT_TAG, 'not recorded')}"))
        elif not tags.get(STORE_FINGERPRINT_TAG):
            why = f"do not record the feature store they were evaluated on (no {STORE_FINGERPRINT_TAG} tag)"
            skipped.setdefault(why, []).append(_named(run))
        elif store_fingerprint is not None and tags[STORE_FINGERPRINT_TAG] != store_fingerprint:
            why = f"were evaluated on another store than {store_fingerprint} (metrics of two stores do not compare)"
            skipped.setdefault(why, []).append(_named(run, f"store {tags[STORE_FINGERPRINT_TAG]}"))
        else:
            comparable.append(run)
    notes += [f"skipped {len(named)} run(s) that {why}: {', '.join(named)}" for why, named in skipped.items()]

    order = 1.0 if mode == "min" else -1.0
    comparable.sort(key=lambda r: (order * r.data.metrics[metric], r.info.start_time or 0))
    finished_status = RunStatus.to_string(RunStatus.FINISHED)
    finished = [r for r in comparable if r.info.status == finished_status]
    unfinished = [r for r in comparable if r.info.status != finished_status]
    if unfinished:
        notes.append(
            f"skipped {len(unfinished)} run(s) that are running, failed or were killed (only FINISHED runs are "
            "promoted): " + ", ".join(_named(r, r.info.status) for r in unfinished)
        )
    if comparable and comparable[0].info.status != finished_status:
        best = comparable[0]
        notes.append(
            f"the best {split} {metric} overall ({_fmt(best.data.metrics[metric])}) is run "
            f"{best.info.run_id}, which is {best.info.status}: promote again once it has FINISHED"
        )
    if not finished:
        raise PromotionError(
            f"no FINISHED run with metric '{metric}' evaluated on split '{split}'"
            + (f" and store {store_fingerprint}" if store_fingerprint else "")
            + (":\n  " + "\n  ".join(notes) if notes else " (the experiment has no runs)")
            + "\nEvaluate a finished run (`reactdiff evaluate`) and promote again."
        )
    stores = sorted({r.data.tags[STORE_FINGERPRINT_TAG] for r in finished})
    if store_fingerprint is None and len(stores) > 1:
        raise PromotionError(
            f"the candidate runs were evaluated on {len(stores)} different feature stores "
            f"({', '.join(stores)}) and there is no champion to pick one: their metrics are not "
            "comparable. Choose one with `reactdiff promote --store-fingerprint <fingerprint>`."
        )
    return finished[0], notes


def _logged_model_id(client: MlflowClient, run: Run) -> str:
    models = client.search_logged_models(
        [run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}' AND name = '{MODEL_ARTIFACT}'",
    )
    ready = [m for m in models if m.status == LoggedModelStatus.READY]
    if not ready:
        raise PromotionError(
            f"run {run.info.run_id} is the best candidate but has no logged model named "
            f"'{MODEL_ARTIFACT}' (runs:/{run.info.run_id}/{MODEL_ARTIFACT}): log its checkpoint with "
            "reactdiff.tracking.log_model(client, run_id, checkpoint) and promote again"
        )
    return max(ready, key=lambda m: m.creation_timestamp).model_id


# --------------------------------------------------------------------------------------------
# Promotion and rollback
# --------------------------------------------------------------------------------------------


def _alias_version(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    # Read through the model's alias map: a missing alias is a plain None, not an error to parse.
    version = client.get_registered_model(model_name).aliases.get(alias)
    return None if version is None else client.get_model_version(model_name, version)


def _version_metric(version: ModelVersion, metric: str) -> float | None:
    value = json.loads(version.tags.get(METRICS_TAG, "{}")).get(metric)
    return None if value is None else float(value)


def _ensure_model(client: MlflowClient, model_name: str, create: bool) -> None:
    try:
        client.get_registered_model(model_name)
    except MlflowException as err:
        if not not_found(err):
            raise
        if not create:
            raise PromotionError(
                f"registered model '{model_name}' does not exist in the registry; check the name "
                "(--model-name) or promote without requiring an existing model to create it"
            ) from None
        try:
            client.create_registered_model(model_name, description="ReactDiff listener-reaction models")
        except MlflowException as create_err:
            if not already_exists(create_err):
                raise


def _version_tags(run: Run, split: str) -> dict[str, str]:
    tags = run.data.tags
    return {
        METRICS_TAG: json.dumps(run.data.metrics, sort_keys=True),
        CONFIG_TAG: json.dumps(run.data.params, sort_keys=True),
        EVAL_SPLIT_TAG: split,
        STORE_FINGERPRINT_TAG: tags[STORE_FINGERPRINT_TAG],
        STAGE1_MODEL_TAG: tags.get(STAGE1_MODEL_TAG, ""),
        STAGE_TAG: tags.get(STAGE_TAG, ""),
        GIT_COMMIT_TAG: tags.get(GIT_COMMIT_TAG, ""),
        MODEL_URI_TAG: f"runs:/{run.info.run_id}/{MODEL_ARTIFACT}",
    }


def _register(client: MlflowClient, model_name: str, run: Run, split: str) -> ModelVersion:
    """The run's version: an existing one (tags refreshed) or a new one from its logged model."""
    model_id = _logged_model_id(client, run)
    tags = _version_tags(run, split)
    existing = client.search_model_versions(f"name = '{model_name}' AND run_id = '{run.info.run_id}'")
    if existing:
        version = max(existing, key=lambda v: int(v.version))
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version.version, key, value)
        return client.get_model_version(model_name, version.version)
    return client.create_model_version(
        model_name,
        source=f"models:/{model_id}",
        run_id=run.info.run_id,
        tags=tags,
        model_id=model_id,
    )


def _move_champion(client: MlflowClient, model_name: str, version: str) -> None:
    client.set_registered_model_alias(model_name, CHAMPION, version)
    now = _alias_version(client, model_name, CHAMPION)
    if now is None or now.version != version:
        raise PromotionError(
            f"'{CHAMPION}' of {model_name} was moved to v{now.version if now else '(none)'} by another "
            f"client while reactdiff held the registry lock (expected v{version}): something edits "
            "aliases without `reactdiff promote`. Check the registry and promote again."
        )


def promote(
    tracking_uri: str,
    experiment: str,
    metric: str,
    mode: Mode,
    model_name: str,
    split: str = "val",
    force: bool = False,
    store_fingerprint: str | None = None,
    require_existing: bool = False,
    lock_timeout_s: float = 120.0,
    run_id: str | None = None,
    record: dict[str, str] | None = None,
) -> PromotionResult:
    """Register the best FINISHED run of `experiment` on `metric` (`mode` min|max, evaluated on
    `split`) as `challenger`, and make it `champion` if it beats the current champion (or `force`).

    Candidates are compared only on the current champion's feature store, or on
    `store_fingerprint` when given; a champion from another store or split, or without the
    metric, is replaced only with `force`. `run_id` makes that one run the only candidate (a
    sweep's winner), under the same rules; `record` adds tags to its version (e.g. the sweep).
    """
    if mode not in ("min", "max"):
        raise PromotionError(f"mode must be 'min' or 'max' (how '{metric}' improves), got {mode!r}")
    client = client_for(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise PromotionError(
            f"experiment '{experiment}' does not exist at {tracking_uri}; "
            "check --experiment (the tracking.experiment of the runs)"
        )
    with RegistryLock(client, model_name, lock_timeout_s):
        _ensure_model(client, model_name, create=not require_existing)
        champion = _alias_version(client, model_name, CHAMPION)
        reference = store_fingerprint
        if reference is None and champion is not None:
            reference = champion.tags.get(STORE_FINGERPRINT_TAG) or None
        runs = _all_runs(client, found.experiment_id)
        if run_id is not None:
            runs = [run for run in runs if run.info.run_id == run_id]
            if not runs:
                raise PromotionError(f"run {run_id} is not in experiment '{experiment}' at {tracking_uri}")
        best, notes = _select(runs, metric, mode, split, reference)
        value = best.data.metrics[metric]

        stage = best.data.tags.get(STAGE_TAG, "")
        champion_stage = champion.tags.get(STAGE_TAG) if champion is not None else None
        if champion_stage and stage and champion_stage != stage:
            raise PromotionError(
                f"run {best.info.run_id} trained a stage-{stage} model, but champion v{champion.version} of "
                f"'{model_name}' is a stage-{champion_stage} model: register each stage under its own name "
                "(stage-1 MMTs e.g. as --model-name reactdiff-mmt, evaluated with --metric recon_FRDist --mode min)"
            )
        if champion is not None and champion.run_id == best.info.run_id:
            version, decision = champion.version, "already champion"
        else:
            version = _register(client, model_name, best, split).version
            for tag, text in (record or {}).items():
                client.set_model_version_tag(model_name, version, tag, text)
            client.set_registered_model_alias(model_name, CHALLENGER, version)
            decision = _decide(champion, best, version, metric, split, mode, force, notes)
            _record_decision(
                client, model_name, version, champion, decision, f"{split} {metric}={_fmt(value)}, mode {mode}"
            )
    previous = None if champion is None else champion.version
    return PromotionResult(
        model_name=model_name,
        version=version,
        run_id=best.info.run_id,
        metric=metric,
        split=split,
        value=value,
        decision=decision,
        champion_version=version if decision in PROMOTED else previous,
        previous_champion=previous,
        previous_value=None if champion is None else _version_metric(champion, metric),
        notes=notes,
    )


def _decide(
    champion: ModelVersion | None,
    best: Run,
    version: str,
    metric: str,
    split: str,
    mode: Mode,
    force: bool,
    notes: list[str],
) -> str:
    """Whether registered `version` (of run `best`) replaces `champion`: "promoted", "forced" or
    "kept champion" (with a note why); a champion it cannot be compared with is refused unless forced."""
    if champion is None:
        return "promoted"
    comparable_why = _incomparable(champion, metric, split, best.data.tags[STORE_FINGERPRINT_TAG])
    if comparable_why and not force:
        raise PromotionError(
            f"cannot compare run {best.info.run_id} (v{version}, now '{CHALLENGER}') with "
            f"champion v{champion.version}: {comparable_why}. Pass force=True (--force) to "
            "replace the champion anyway."
        )
    if force:
        return "forced"
    value, champion_value = best.data.metrics[metric], _version_metric(champion, metric)
    if _better(value, champion_value, mode):
        return "promoted"
    notes.append(
        f"v{version} {split} {metric}={_fmt(value)} does not beat champion "
        f"v{champion.version} ({_fmt(champion_value)}, mode {mode})"
    )
    return "kept champion"


def _record_decision(
    client: MlflowClient, model_name: str, version: str, champion: ModelVersion | None, decision: str, why: str
) -> None:
    """The decision as version tags, and the champion alias moved where `decision` promotes."""
    previous = None if champion is None else champion.version
    if decision not in PROMOTED:
        client.set_model_version_tag(model_name, version, DECISION_TAG, f"kept champion v{previous}")
        return
    # The rollback record goes first: a crash after it leaves a champion that can be rolled back.
    client.set_model_version_tag(model_name, version, PREVIOUS_CHAMPION_TAG, previous or "")
    _move_champion(client, model_name, version)
    client.set_model_version_tag(model_name, version, DECISION_TAG, f"{decision} ({why})")


def _incomparable(champion: ModelVersion, metric: str, split: str, store: str) -> str:
    """Why the candidate cannot be compared with the champion ("" when it can)."""
    if champion.tags.get(EVAL_SPLIT_TAG) != split:
        return f"the champion was evaluated on split '{champion.tags.get(EVAL_SPLIT_TAG)}', not '{split}'"
    if champion.tags.get(STORE_FINGERPRINT_TAG) != store:
        return (
            f"the champion was evaluated on store {champion.tags.get(STORE_FINGERPRINT_TAG)}, the candidate on {store}"
        )
    if _version_metric(champion, metric) is None:
        return f"the champion has no '{metric}' in its {METRICS_TAG} tag"
    return ""


def rollback(tracking_uri: str, model_name: str, lock_timeout_s: float = 120.0) -> str:
    """Move `champion` back to the version the current champion replaced; returns that version.

    Rolling back again goes one further step back (each version records its predecessor).
    """
    client = client_for(tracking_uri)
    with RegistryLock(client, model_name, lock_timeout_s):
        _ensure_model(client, model_name, create=False)
        champion = _alias_version(client, model_name, CHAMPION)
        if champion is None:
            raise PromotionError(f"registered model '{model_name}' has no '{CHAMPION}' alias to roll back")
        previous = champion.tags.get(PREVIOUS_CHAMPION_TAG, "")
        if not previous:
            raise PromotionError(
                f"{model_name} v{champion.version} is '{CHAMPION}' but records no previous champion "
                f"({PREVIOUS_CHAMPION_TAG} tag empty or missing): it was the first champion, or was "
                "set outside `reactdiff promote`. Set the alias by hand if you need another version."
            )
        try:
            client.get_model_version(model_name, previous)
        except MlflowException as err:
            if not_found(err):
                raise PromotionError(
                    f"{model_name} v{champion.version} records v{previous} as the previous champion, "
                    "but that version was deleted; set the alias by hand"
                ) from None
            raise
        _move_champion(client, model_name, previous)
        client.set_model_version_tag(
            model_name, champion.version, ROLLED_BACK_TAG, f"champion moved back to v{previous} at {time.time():.0f}"
        )
    return previous
