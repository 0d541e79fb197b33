"""Promotion rules, refusals, a race of two promotions, rollback, and generation from the
champion — against a real `mlflow server` (SQLite) on loopback with tiny models."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from test_generate import save_tiny_checkpoint

from reactdiff import registry, registry_lock, tracking
from reactdiff.data import corpus, layout
from reactdiff.generate import generate_to_dir
from reactdiff.registry import PromotionError

METRIC = "FRDist"
STORE = "store-1"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "stage2.pt")


@pytest.fixture(scope="module")
def racing_runs(uri, checkpoint) -> tuple[str, str]:
    """The best runs of two experiments: registry-race-a (worse) and registry-race-b (better)."""
    return make_run(uri, "registry-race-a", 0.4, checkpoint), make_run(uri, "registry-race-b", 0.2, checkpoint)


def make_run(
    uri: str,
    experiment: str,
    value: float | None,
    checkpoint: Path | None,
    *,
    status: str = "FINISHED",
    split: str = "val",
    store: str = STORE,
) -> str:
    """An evaluated run as training + `reactdiff evaluate` leave it."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(
        experiment_id,
        tags={
            registry.EVAL_SPLIT_TAG: split,
            registry.STORE_FINGERPRINT_TAG: store,
            registry.STAGE1_MODEL_TAG: "models:/reactdiff-mmt@champion",
            registry.GIT_COMMIT_TAG: "abc123",
        },
    )
    run_id = run.info.run_id
    client.log_param(run_id, "model.diffusion.steps", "2")
    if value is not None:
        client.log_metric(run_id, METRIC, value)
    client.log_metric(run_id, "FRDiv", 0.25)
    if checkpoint is not None:
        tracking.log_model(client, run_id, checkpoint)
    if status != "RUNNING":
        client.set_terminated(run_id, status=status)
    return run_id


def aliases(uri: str, name: str) -> dict[str, str]:
    return dict(MlflowClient(uri).get_registered_model(name).aliases)


def version_tags(uri: str, name: str, version: str) -> dict[str, str]:
    return MlflowClient(uri).get_model_version(name, version).tags


def test_promotion_rules_refusals_and_rollback(uri, checkpoint):
    name = "registry-rules"
    # 1. Only the FINISHED run on the right split with the metric qualifies; the rest are explained.
    best = make_run(uri, "registry-rules-1", 0.5, checkpoint)
    running = make_run(uri, "registry-rules-1", 0.1, None, status="RUNNING")
    failed = make_run(uri, "registry-rules-1", 0.2, None, status="FAILED")
    on_test = make_run(uri, "registry-rules-1", 0.05, None, split="test")
    no_metric = make_run(uri, "registry-rules-1", None, None)
    first = registry.promote(uri, "registry-rules-1", METRIC, "min", name)
    assert (first.run_id, first.decision, first.version, first.previous_champion) == (best, "promoted", "1", None)
    notes = "\n".join(first.notes)
    for run_id in (running, failed, on_test, no_metric):
        assert run_id in notes
    assert f"run {running}, which is RUNNING" in notes
    assert aliases(uri, name) == {"champion": "1", "challenger": "1"}
    tags = version_tags(uri, name, "1")
    assert json.loads(tags[registry.METRICS_TAG]) == {METRIC: 0.5, "FRDiv": 0.25}
    assert json.loads(tags[registry.CONFIG_TAG]) == {"model.diffusion.steps": "2"}
    assert (tags[registry.STORE_FINGERPRINT_TAG], tags[registry.EVAL_SPLIT_TAG]) == (STORE, "val")
    assert tags[registry.STAGE1_MODEL_TAG] == "models:/reactdiff-mmt@champion"
    assert tags[registry.GIT_COMMIT_TAG] == "abc123"
    assert tags[registry.MODEL_URI_TAG] == f"runs:/{best}/model"
    assert tags[registry.PREVIOUS_CHAMPION_TAG] == ""
    assert "v1" in first.summary() and "promoted" in first.summary()

    # 2. Promoting the same best run again changes nothing.
    again = registry.promote(uri, "registry-rules-1", METRIC, "min", name)
    assert (again.decision, again.version) == ("already champion", "1")

    # 3. A worse model becomes challenger only.
    make_run(uri, "registry-rules-2", 0.7, checkpoint)
    worse = registry.promote(uri, "registry-rules-2", METRIC, "min", name)
    assert (worse.decision, worse.version, worse.champion_version) == ("kept champion", "2", "1")
    assert aliases(uri, name) == {"champion": "1", "challenger": "2"}
    assert version_tags(uri, name, "2")[registry.DECISION_TAG] == "kept champion v1"

    # 4. A better one replaces the champion and records it; rollback restores it, then refuses.
    make_run(uri, "registry-rules-3", 0.3, checkpoint)
    better = registry.promote(uri, "registry-rules-3", METRIC, "min", name)
    assert (better.decision, better.version, better.previous_champion) == ("promoted", "3", "1")
    assert version_tags(uri, name, "3")[registry.PREVIOUS_CHAMPION_TAG] == "1"
    assert registry.rollback(uri, name) == "1"
    assert aliases(uri, name)["champion"] == "1"
    assert "v1" in version_tags(uri, name, "3")[registry.ROLLED_BACK_TAG]
    with pytest.raises(PromotionError, match="records no previous champion"):
        registry.rollback(uri, name)

    # 5. Runs of another store are not compared with the champion's store; forcing is explicit.
    other_store = make_run(uri, "registry-rules-4", 0.01, checkpoint, store="store-2")
    with pytest.raises(PromotionError, match=f"another store than {STORE}(.|\n)*{other_store}"):
        registry.promote(uri, "registry-rules-4", METRIC, "min", name)
    with pytest.raises(PromotionError, match="evaluated on store store-1, the candidate on store-2"):
        registry.promote(uri, "registry-rules-4", METRIC, "min", name, store_fingerprint="store-2")
    assert aliases(uri, name) == {"champion": "1", "challenger": "4"}
    forced = registry.promote(uri, "registry-rules-4", METRIC, "min", name, store_fingerprint="store-2", force=True)
    assert (forced.decision, forced.version, forced.previous_champion) == ("forced", "4", "1")  # v4 re-used

    # 6. The best run must have a logged model.
    no_model = make_run(uri, "registry-rules-5", 0.001, None, store="store-2")
    with pytest.raises(PromotionError, match=f"run {no_model} is the best candidate but has no logged model"):
        registry.promote(uri, "registry-rules-5", METRIC, "min", name)
    assert aliases(uri, name)["champion"] == "4"


def test_refusals_of_names_experiments_and_runs(uri, checkpoint):
    with pytest.raises(PromotionError, match="'registry-missing' does not exist"):
        registry.rollback(uri, "registry-missing")
    make_run(uri, "registry-names-1", 0.5, checkpoint)
    with pytest.raises(PromotionError, match="'registry-missing' does not exist"):
        registry.promote(uri, "registry-names-1", METRIC, "min", "registry-missing", require_existing=True)
    with pytest.raises(PromotionError, match="experiment 'no-such-experiment' does not exist"):
        registry.promote(uri, "no-such-experiment", METRIC, "min", "registry-missing")
    with pytest.raises(PromotionError, match="no FINISHED run with metric 'FRCorr'"):
        registry.promote(uri, "registry-names-1", "FRCorr", "max", "registry-missing")
    make_run(uri, "registry-names-2", 0.5, checkpoint, store="store-a")
    make_run(uri, "registry-names-2", 0.4, checkpoint, store="store-b")
    with pytest.raises(PromotionError, match="2 different feature stores"):
        registry.promote(uri, "registry-names-2", METRIC, "min", "registry-names")
    # The refusals left no lock behind.
    names = {m.name for m in MlflowClient(uri).search_registered_models()}
    assert not any(n.endswith(registry_lock.LOCK_SUFFIX) for n in names)


# Seconds the first promotion waits after reading the champion, so that the second one is running
# meanwhile: without the lock it reads the same (empty) champion and both promote.
OVERLAP_S = 2.0


@pytest.mark.parametrize("first", ["registry-race-a", "registry-race-b"])  # the worse one first, then the better
def test_racing_promotions_leave_the_better_champion(uri, racing_runs, first, monkeypatch):
    """The overlap is forced: the second promotion starts once the first has read the champion,
    while the first waits OVERLAP_S before acting on what it read. With the lock the second waits
    for the first to finish and sees its champion; without it, both would promote."""
    name = f"registry-race-{first[-1]}"
    worse_run, better_run = racing_runs
    first_read = threading.Event()
    read_champion = registry._alias_version

    def slow_first_read(client, model_name, alias):
        version = read_champion(client, model_name, alias)
        if threading.current_thread().name == first and not first_read.is_set():
            first_read.set()
            time.sleep(OVERLAP_S)
        return version

    monkeypatch.setattr(registry, "_alias_version", slow_first_read)
    results, errors = {}, []

    def promote(experiment: str) -> None:
        if experiment != first:
            first_read.wait(timeout=120)
        try:
            results[experiment] = registry.promote(uri, experiment, METRIC, "min", name)
        except Exception as err:  # surfaced by the assertion below
            errors.append(err)

    experiments = ("registry-race-a", "registry-race-b")
    threads = [threading.Thread(target=promote, args=(e,), name=e) for e in experiments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert first_read.is_set() and not errors, errors
    worse, better = results["registry-race-a"], results["registry-race-b"]
    assert (worse.run_id, better.run_id) == (worse_run, better_run)
    champion = MlflowClient(uri).get_model_version_by_alias(name, "champion")
    assert champion.run_id == better_run and champion.version == better.version
    better_tags, worse_tags = version_tags(uri, name, better.version), version_tags(uri, name, worse.version)
    assert better_tags[registry.DECISION_TAG].startswith("promoted")
    if first == "registry-race-a":  # the worse one was champion when the better one came
        assert worse_tags[registry.DECISION_TAG].startswith("promoted")
        assert better_tags[registry.PREVIOUS_CHAMPION_TAG] == worse.version
        assert aliases(uri, name)["challenger"] == better.version
    else:  # the better one was champion when the worse one came
        assert worse_tags[registry.DECISION_TAG] == f"kept champion v{better.version}"
        assert better_tags[registry.PREVIOUS_CHAMPION_TAG] == ""
        assert aliases(uri, name)["challenger"] == worse.version


def test_a_held_lock_blocks_promotion_until_timeout(uri, checkpoint):
    name = "registry-locked"
    make_run(uri, "registry-locked-1", 0.5, checkpoint)
    with registry_lock.RegistryLock(MlflowClient(uri), name, timeout_s=5):
        with pytest.raises(PromotionError, match=f"'{name}{registry_lock.LOCK_SUFFIX}' is held by .*break_lock"):
            registry.promote(uri, "registry-locked-1", METRIC, "min", name, lock_timeout_s=1)
    assert registry.promote(uri, "registry-locked-1", METRIC, "min", name).decision == "promoted"
    assert registry_lock.break_lock(uri, name) is False  # released on exit


def test_generate_from_the_champion_uses_the_registered_pyfunc(uri, checkpoint, tiny_corpus, tmp_path):
    name = "registry-serve"
    make_run(uri, "registry-serve-1", 0.5, checkpoint)
    registry.promote(uri, "registry-serve-1", METRIC, "min", name)
    pair = corpus.read_split(tiny_corpus, "val")[0]
    speaker = pair.speaker.file(tiny_corpus, "val", layout.AUDIO_DIR)
    for source, out in [(f"models:/{name}@champion", tmp_path / "served"), (checkpoint, tmp_path / "local")]:
        generate_to_dir(source, speaker, out, alpha=3, seed=5, tracking_uri=uri)
    folder = Path("reactions") / pair.speaker.path
    for k in range(3):
        served = np.load(tmp_path / "served" / folder / f"{k}.npy")
        np.testing.assert_array_equal(served, np.load(tmp_path / "local" / folder / f"{k}.npy"))
        assert (tmp_path / "served" / folder / f"{k}.csv").read_text() == (
            tmp_path / "local" / folder / f"{k}.csv"
        ).read_text()
    assert not (tmp_path / "served" / folder / "3.npy").exists()  # alpha reached the pyfunc


def test_stage1_models_are_evaluated_and_promoted_under_their_own_name(
    uri, checkpoint, tiny_store, untrained_stage1, tmp_path
):
    """A stage-1 run is scored on val reconstructions, becomes `reactdiff-mmt`'s champion, and that
    URI resolves to the MMT a stage-2 run trains over; a stage-2 model cannot take its place."""
    from reactdiff.config import load_config
    from reactdiff.data.store import Store
    from reactdiff.evaluate.run import evaluate
    from reactdiff.models import MMT, load_checkpoint

    experiment, name = "registry-stage1", "reactdiff-mmt-test"
    fingerprint = Store(tiny_store).manifest.store_fingerprint
    client = tracking.client_for(uri)
    run_id = tracking.start_or_resume_run(
        client,
        experiment,
        "mmt-stage1",
        params={},
        tags={registry.STAGE_TAG: "1", registry.STORE_FINGERPRINT_TAG: fingerprint},
    )
    tracking.log_model(client, run_id, untrained_stage1)
    tracking.finish_run(client, run_id)
    cfg = load_config(
        Path(__file__).parent.parent / "configs" / "tiny.yaml",
        [f"data.store={tiny_store}", f"tracking.tracking_uri={uri}", f"tracking.experiment={experiment}"],
    )
    evaluation = evaluate(cfg, model=f"runs:/{run_id}/model", split="val", out_dir=tmp_path / "eval")
    assert set(evaluation.rows) == {"MMT", "B_MeanSeq"}
    for row in evaluation.rows.values():
        assert set(row) == {"recon_FRDist", "recon_3dmm_mse", "recon_emotion_l1", "recon_au_f1", "recon_va_ccc"}
        assert all(np.isfinite(v) for v in row.values())
    logged = MlflowClient(uri).get_run(run_id).data
    assert logged.metrics["recon_FRDist"] == pytest.approx(evaluation.rows["MMT"]["recon_FRDist"])
    assert logged.tags[registry.EVAL_SPLIT_TAG] == "val"

    result = registry.promote(uri, experiment, "recon_FRDist", "min", name, split="val")
    assert result.decision == "promoted" and aliases(uri, name) == {"challenger": "1", "champion": "1"}
    assert version_tags(uri, name, "1")[registry.STAGE_TAG] == "1"
    mmt = load_checkpoint(tracking.resolve_checkpoint(uri, f"models:/{name}@champion"))
    assert isinstance(mmt, MMT)  # the champion URI resolves to the logged stage-1 model
    torch.testing.assert_close(mmt.state_dict(), load_checkpoint(untrained_stage1).state_dict(), rtol=0, atol=0)

    # A stage-2 run with a (nonsensically) better recon_FRDist is refused as this name's champion.
    stage2 = make_run(uri, experiment, None, checkpoint, store=fingerprint)
    MlflowClient(uri).set_tag(stage2, registry.STAGE_TAG, "2")
    MlflowClient(uri).log_metric(stage2, "recon_FRDist", 0.0)
    with pytest.raises(PromotionError, match="register each stage under its own name"):
        registry.promote(uri, experiment, "recon_FRDist", "min", name, split="val")
    assert aliases(uri, name)["champion"] == "1"
