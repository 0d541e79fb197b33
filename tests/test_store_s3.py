"""A feature store on object storage: `prepare` writes it to S3, training and evaluation read it
from there, against a real S3 API (`moto_server` on 127.0.0.1, stopped by pid)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from reactdiff.config import load_config
from reactdiff.data.prepare import PrepareOptions, prepare
from reactdiff.data.store import Location, Store
from reactdiff.evaluate.run import evaluate
from reactdiff.mlflow_server import free_port, wait_until_answering
from reactdiff.train.trainer import run_training

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def s3_store(tmp_path, monkeypatch, no_inprocess_ray):
    """The URI of an empty store folder in a bucket of a fresh moto_server. Credentials are set as
    a user sets them, in the environment, before the Ray runtime (and so its workers) starts; the
    endpoint goes in the URI, as pyarrow 25 does not read AWS_ENDPOINT_URL."""
    import ray

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path / "moto.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_answering(f"{endpoint}/moto-api/", server, log)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "reactdiff-test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "reactdiff-test-secret")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True).create_dir("reactdiff")
        yield f"s3://reactdiff/store?endpoint_override={endpoint}"
    finally:
        ray.shutdown()  # its workers hold this test's credentials
        server.terminate()
        server.wait(timeout=30)


def test_store_on_s3_prepare_train_evaluate(tiny_corpus, tiny_store, s3_store, tracking_uri, tmp_path, capsys):
    prepare(PrepareOptions(corpus=tiny_corpus, out=s3_store, rows_per_part=1, workers=2))
    # Every file of the store went to the bucket, byte for byte those of the same store on disk.
    local = Location(tiny_store)
    remote = Location(s3_store)
    assert remote.files() == local.files()
    assert "rejected.json" in remote.files() and "val/appropriate.npy" in remote.files()
    for rel in remote.files():
        assert remote.read_bytes(rel) == local.read_bytes(rel), rel
    prepare(PrepareOptions(corpus=tiny_corpus, out=s3_store, rows_per_part=1, workers=2))
    assert "all 8 parts already done" in capsys.readouterr().err  # resumes on S3 too

    overrides = [f"data.store={s3_store}", f"tracking.tracking_uri={tracking_uri}", "tracking.experiment=test-s3"]
    trained = run_training(
        load_config(
            REPO / "configs" / "tiny.yaml",
            overrides + [f"train.storage_path={tmp_path / 'runs'}", "train.name=s3", "train.stage=1", "train.epochs=1"],
        )
    )
    assert trained.checkpoint.is_file()

    result = evaluate(
        load_config(REPO / "configs" / "tiny.yaml", overrides),
        model=str(trained.checkpoint),
        split="val",
        alpha=2,
        out_dir=tmp_path / "eval",
    )
    assert Store(s3_store).manifest.splits["val"]["samples"] == 4
    assert result.rows and all(row for row in result.rows.values())
