"""`prepare` through the real Ray Data pipeline: layout, both profiles, determinism, bad clips."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reactdiff.cli import main as cli_main
from reactdiff.data import corpus
from reactdiff.data.prepare import (
    CRASH_ENV,
    DELAY_ENV,
    PROGRESS_DIR,
    Placement,
    PrepareError,
    PrepareOptions,
    extraction_dataset,
    extraction_placement,
    placement_shortfall,
    prepare,
)
from reactdiff.data.store import Store, StoreError, column, to_samples
from reactdiff.data.tiny_models import make_tiny_facial_predictors, make_tiny_wav2vec2
from reactdiff.ray_runtime import ray_init


def test_lite_store_holds_every_dyad_and_reads_back(tiny_store, tiny_corpus):
    store = Store(tiny_store)
    manifest = store.manifest
    assert manifest.profile == "lite" and manifest.frames == 50
    assert set(manifest.streams) == {"emotion", "3dmm", "mfcc"}
    for split in ("train", "val", "test"):
        rows = corpus.read_split(tiny_corpus, split)
        arrays = store.read_split(split)
        assert arrays["pair_id"].tolist() == [p.row for p in rows]
        assert store.appropriate(split).shape == (2 * len(rows), 2 * len(rows))
        first = corpus.load_clip(tiny_corpus, split, rows[0].speaker, frames=50)
        np.testing.assert_array_equal(arrays[column("a", "emotion")][0], first.emotion)
        np.testing.assert_array_equal(arrays[column("a", "3dmm")][0], first.face3d)
    samples = to_samples(store.read_split("train"), ["emotion"])
    n = len(corpus.read_split(tiny_corpus, "train"))
    # Role swap: sample n + s is row s with the persons exchanged.
    np.testing.assert_array_equal(samples["speaker"]["emotion"][n], samples["listener"]["emotion"][0])
    assert len(manifest.normalisation["3dmm_mean"]) == 58


def _store_files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def assert_same_store(expected, actual, what):
    files = _store_files(expected)
    assert files == _store_files(actual), what
    for path in files:
        assert (expected / path).read_bytes() == (actual / path).read_bytes(), f"{path} differs ({what})"


def test_store_written_twice_is_identical(tiny_corpus, tiny_store, tmp_path, monkeypatch):
    # tiny_store had 2 extraction actors; 1 and 3, each part held up by its own seeded delay, finish
    # the parts in other orders. The statistics are reduced in part order, so the manifest
    # (normalisation, fingerprint) does not move.
    for workers in (1, 3):
        monkeypatch.setenv(DELAY_ENV, f"{workers}:0.4")
        again = tmp_path / f"workers-{workers}"
        prepare(PrepareOptions(corpus=tiny_corpus, out=again, rows_per_part=1, workers=workers))
        assert_same_store(tiny_store, again, f"{workers} workers")


def test_store_interrupted_by_killing_the_driver_resumes_to_the_same_bytes(tiny_corpus, tiny_store, tmp_path, capsys):
    import ray

    out = tmp_path / "store"
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address, **{DELAY_ENV: "7:1.5"})
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reactdiff.cli",
            "prepare",
            "--corpus",
            str(tiny_corpus),
            "--out",
            str(out),
            "--rows-per-part",
            "1",
            "--workers",
            "1",
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while len(list((out / PROGRESS_DIR).glob("*/*.json"))) < 2:
            assert driver.poll() is None, "prepare ended before it could be interrupted"
            assert time.monotonic() < deadline, "prepare recorded no part in 120 s"
            time.sleep(0.1)
    finally:
        driver.kill()
        driver.wait()
    done = len(list((out / PROGRESS_DIR).glob("*/*.json")))
    assert 2 <= done < 8 and not (out / "manifest.json").exists()

    prepare(PrepareOptions(corpus=tiny_corpus, out=out, rows_per_part=1, workers=2))
    assert f"({done} already done)" in capsys.readouterr().err
    assert_same_store(tiny_store, out, "resumed after the driver was killed")
    prepare(PrepareOptions(corpus=tiny_corpus, out=out, rows_per_part=1, workers=2))
    assert "all 8 parts already done" in capsys.readouterr().err
    assert_same_store(tiny_store, out, "re-run with nothing to do")


def test_store_whose_extraction_actor_was_killed_has_the_same_bytes(tiny_corpus, tiny_store, tmp_path, monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setenv(CRASH_ENV, f"{marker}:train:2")  # after the part file, before its record
    out = tmp_path / "store"
    # Ray Data restarts the actor and retries the part (max_restarts/max_task_retries -1 by default).
    prepare(PrepareOptions(corpus=tiny_corpus, out=out, rows_per_part=1, workers=2))
    assert marker.is_file()
    assert_same_store(tiny_store, out, "an actor was killed")


def test_changed_option_is_refused_unless_rebuild(tiny_corpus, tiny_store, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(tiny_store, out)
    with pytest.raises(PrepareError, match=r"rows_per_part: 1 → 2.*--rebuild"):
        prepare(PrepareOptions(corpus=tiny_corpus, out=out, rows_per_part=2, workers=2))
    assert (out / "manifest.json").read_bytes() == (tiny_store / "manifest.json").read_bytes()  # untouched
    manifest = prepare(PrepareOptions(corpus=tiny_corpus, out=out, rows_per_part=2, workers=2, rebuild=True))
    assert manifest.splits["train"]["files"] == ["train/part-00000.parquet", "train/part-00001.parquet"]
    assert (
        not (out / "train" / "part-00003.parquet").exists()
        and not (out / "progress" / "train" / "part-00003.json").exists()
    )


def test_folder_that_is_not_a_store_is_not_deleted(tiny_corpus, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("not a store")
    with pytest.raises(PrepareError, match=r"holds no feature store.*--rebuild"):
        prepare(PrepareOptions(corpus=tiny_corpus, out=out))
    assert (out / "todo.txt").read_text() == "not a store"


def test_rows_appended_to_the_corpus_add_parts_and_keep_the_old_ones(tiny_corpus, tiny_store, tmp_path):
    corpus_copy = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus_copy)
    full_csv = (corpus_copy / "train.csv").read_text()
    header, *rows = full_csv.splitlines(keepends=True)
    (corpus_copy / "train.csv").write_text(header + "".join(rows[:2]))
    out = tmp_path / "store"
    options = PrepareOptions(corpus=corpus_copy, out=out, splits=("train",), rows_per_part=1, workers=2)
    prepare(options)
    old_parts = {p: p.stat().st_mtime_ns for p in (out / "train").glob("part-*.parquet")}
    assert len(old_parts) == 2

    (corpus_copy / "train.csv").write_text(full_csv)
    manifest = prepare(options)
    assert {p: p.stat().st_mtime_ns for p in old_parts} == old_parts  # not rewritten
    assert manifest.splits["train"] == Store(tiny_store).manifest.splits["train"]
    for part in manifest.splits["train"]["files"] + ["train/appropriate.npy"]:
        assert (out / part).read_bytes() == (tiny_store / part).read_bytes(), part


def test_paper_profile_with_local_models(tiny_corpus, tmp_path):
    wav2vec2 = make_tiny_wav2vec2(tmp_path / "wav2vec2", hidden_size=16)
    facial = make_tiny_facial_predictors(tmp_path / "facial")
    out = tmp_path / "paper"
    manifest = prepare(
        PrepareOptions(
            corpus=tiny_corpus,
            out=out,
            profile="paper",
            splits=("val",),
            wav2vec2_dir=wav2vec2,
            facial_predictors=facial,
            workers=1,
        )
    )
    dims = {name: spec.dim for name, spec in manifest.streams.items()}
    assert dims == {"emotion": 25, "3dmm": 58, "mfcc": 26, "afr": 32, "va": 64, "au": 25088, "fe": 1408}
    assert manifest.streams["au"].dtype == "float16"  # network activations stored at half precision
    arrays = Store(out).read_split("val", streams=["afr", "au"])
    assert arrays[column("a", "au")].shape == (2, 50, 25088)
    assert np.isfinite(arrays[column("b", "afr")]).all()


def test_paper_profile_without_models_says_what_is_missing(tiny_corpus, tmp_path):
    with pytest.raises(PrepareError, match="--wav2vec2"):
        prepare(PrepareOptions(corpus=tiny_corpus, out=tmp_path / "x", profile="paper"))


def test_bad_clip_is_skipped_and_reported(tiny_corpus, tmp_path):
    broken = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, broken)
    row = corpus.read_split(broken, "train")[1]
    wav = row.listener.file(broken, "train", "Audio_files")
    wav.write_bytes(wav.read_bytes()[:100])  # truncated WAV
    out = tmp_path / "store"
    manifest = prepare(PrepareOptions(corpus=broken, out=out, rows_per_part=2, workers=1))
    rejected = json.loads((out / "rejected.json").read_text())
    assert len(rejected) == 1 and rejected[0]["pair_id"] == row.row
    assert rejected[0]["file"] == str(wav) and rejected[0]["field"] and rejected[0]["expected"]
    kept = Store(out).read_split("train")["pair_id"].tolist()
    assert row.row not in kept and len(kept) == len(corpus.read_split(broken, "train")) - 1
    assert manifest.splits["val"]["rows"] == 2  # the other splits are untouched


def test_nothing_usable_exits_non_zero(tiny_corpus, tmp_path, capsys):
    broken = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, broken)
    for csv_file in broken.rglob("Emotion/**/*.csv"):
        csv_file.write_text("garbage\n1,2\n")
    status = cli_main(
        [
            "prepare",
            "--corpus",
            str(broken),
            "--out",
            str(tmp_path / "store"),
            "--workers",
            "1",
            "--log-dir",
            str(tmp_path / "logs"),
        ]
    )
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(broken) in err


def test_store_whose_parquet_disagrees_with_its_manifest_is_refused(tiny_store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(tiny_store, copy)
    part = sorted((copy / "val").glob("*.parquet"))[0]
    table = pq.read_table(part).drop_columns(["a__mfcc"])
    table = table.append_column("a__mfcc", pa.array([[0.0] * 10] * table.num_rows, pa.list_(pa.float32(), 10)))
    pq.write_table(table, part)
    with pytest.raises(StoreError, match=r"a__mfcc.*manifest"):
        Store(copy)


@pytest.mark.parametrize(
    ("profile", "gpus_per_worker", "cluster_gpus", "expected"),
    [
        ("lite", None, 4, Placement(2, 1, 0, "cpu")),  # no network to place
        ("paper", None, 0, Placement(2, 1, 0, "cpu")),  # CPU where the cluster has no GPU
        ("paper", None, 1, Placement(2, 1, 0.5, "cuda")),  # by default the workers share the GPUs
        ("paper", None, 8, Placement(2, 1, 1.0, "cuda")),  # ... at most one each
        ("paper", 0.25, 1, Placement(2, 1, 0.25, "cuda")),
        ("paper", 0, 2, Placement(2, 1, 0, "cpu")),
    ],
)
def test_extraction_placement(profile, gpus_per_worker, cluster_gpus, expected):
    options = PrepareOptions(corpus="c", out="o", profile=profile, workers=2, gpus_per_worker=gpus_per_worker)
    assert extraction_placement(options, parts=10, cluster_gpus=cluster_gpus) == expected
    assert extraction_placement(options, parts=1, cluster_gpus=cluster_gpus).concurrency == 1


@pytest.mark.parametrize(
    ("profile", "gpus_per_worker", "cluster_gpus", "message"),
    [
        ("lite", 0.5, 1, "lite profile runs no network"),
        ("paper", 0.5, 0, "cluster has no GPU"),
        ("paper", -1, 1, "expected a GPU fraction"),
    ],
)
def test_extraction_placement_refuses_what_cannot_work(profile, gpus_per_worker, cluster_gpus, message):
    options = PrepareOptions(corpus="c", out="o", profile=profile, gpus_per_worker=gpus_per_worker)
    with pytest.raises(PrepareError, match=message):
        extraction_placement(options, parts=4, cluster_gpus=cluster_gpus)


@pytest.mark.parametrize("placement", [Placement(3, 1, 0.25, "cuda"), Placement(2, 1, 0, "cpu")])
def test_extraction_actors_request_the_placement(placement):
    # The built (not executed) Ray Data plan: no GPU needed to check what the actors ask for.
    from ray.data._internal.compute import ActorPoolStrategy

    ray_init()

    parts = [{"split": "train", "part": i, "rows": "[]"} for i in range(4)]
    options = PrepareOptions(corpus="c", out="o", profile="paper", workers=placement.concurrency)
    dataset = extraction_dataset(parts, options, {}, 50, placement)
    operator = dataset._logical_plan.dag
    remote_args = operator.ray_remote_args
    assert remote_args["num_cpus"] == 1 and remote_args.get("num_gpus", 0) == placement.num_gpus
    assert isinstance(operator.compute, ActorPoolStrategy)
    assert operator.compute.min_size == operator.compute.max_size == placement.concurrency
    # Parts wait for every actor and go out one per actor, so all actors (and nodes) get parts.
    assert operator.compute.max_tasks_in_flight_per_actor == 1 and dataset.context.wait_for_min_actors_s > 0
    assert operator.fn_constructor_args[-1] == placement.device  # PartWriter's device


def test_placement_shortfall_names_what_the_cluster_lacks():
    assert placement_shortfall(Placement(2, 1, 0.5, "cuda"), {"CPU": 4.0, "GPU": 1.0}) is None
    assert placement_shortfall(Placement(3, 1, 0, "cpu"), {"CPU": 2.0}) == (
        "3 extraction workers need 3 CPU (1 each) where the cluster has 2"
    )
    assert placement_shortfall(Placement(2, 1, 1.0, "cuda"), {"CPU": 8.0, "GPU": 1.0}) == (
        "2 extraction workers need 2 GPU (1 each) where the cluster has 1"
    )


def test_workers_the_cluster_cannot_place_fail_naming_the_flag(tiny_corpus, tmp_path, monkeypatch, capsys):
    """More extraction workers than the cluster's CPUs: after the actor-start timeout (shortened
    here), an error that names --workers, and nothing half-written is called finished."""
    import ray

    from reactdiff.data import prepare as prepare_module

    ray_init()
    workers = int(ray.cluster_resources()["CPU"]) + 1
    monkeypatch.setattr(prepare_module, "ACTORS_START_TIMEOUT_S", 3)
    out = tmp_path / "store"
    with pytest.raises(PrepareError, match=rf"{workers} extraction workers need {workers} CPU.*lower --workers"):
        prepare(PrepareOptions(corpus=tiny_corpus, out=out, rows_per_part=1, workers=workers))
    assert "wait up to 3 s for nodes to join" in capsys.readouterr().err
    assert not (out / "manifest.json").exists() and not list((out / PROGRESS_DIR).rglob("*.json"))
