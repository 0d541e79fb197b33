"""Shared fixtures: a tiny synthetic REACT2024 corpus written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from reactdiff import ray_runtime
from reactdiff.data.synth import SynthClip, generate_corpus, write_synthetic_corpus

# 51 frames on disk → 50 used; train has a NoXI and a RECOLA session with 2 clips each.
TINY = {"dyads": {"train": 4, "val": 2, "test": 2}, "frames_on_disk": 51, "seed": 0, "clips_per_session": 2}
TINY_VIDEO_SIZE = 32


def pytest_configure(config: pytest.Config) -> None:
    """Before test modules are collected, so before anything imports ray: this process's Ray
    runtimes bind 127.0.0.1 only (docs/architecture.md, "Network binding")."""
    ray_runtime.bind_local_ray_to_loopback()


@pytest.fixture
def one_torch_thread():
    """torch on one thread for a test (2 shared cores: OpenMP threads contending with other work
    crawl), restored after it, so the rest of the session keeps its thread count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a tiny synthetic corpus (read-only: copy it before corrupting anything)."""
    root = tmp_path_factory.mktemp("tiny") / "corpus"
    write_synthetic_corpus(root, video_size=TINY_VIDEO_SIZE, **TINY)
    return root


@pytest.fixture(scope="session")
def tiny_rows() -> list[tuple[SynthClip, SynthClip]]:
    """The arrays `tiny_corpus` was written from: (CSV speaker, CSV listener) per row, CSV order."""
    return list(generate_corpus(**TINY))


@pytest.fixture(scope="session")
def tiny_store(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lite-profile feature store of `tiny_corpus`, written by the real Ray Data `prepare`."""
    from reactdiff.data.prepare import PrepareOptions, prepare

    out = tmp_path_factory.mktemp("store") / "store"
    prepare(PrepareOptions(corpus=tiny_corpus, out=out, rows_per_part=1, workers=2))
    return out


@pytest.fixture(scope="session")
def untrained_stage1(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny MMT (configs/tiny.yaml) with its latent statistics, as stage 1 exports it."""
    import numpy as np
    import torch

    from reactdiff.config import load_config
    from reactdiff.data.store import Store, to_samples
    from reactdiff.models import MMT, LatentStatsAccumulator, save_checkpoint

    torch.manual_seed(0)
    config = load_config(Path(__file__).parent.parent / "configs" / "tiny.yaml").model.mmt
    store = Store(tiny_store)
    manifest = store.manifest
    mmt = MMT(manifest.model_streams(), config).eval()
    norm = manifest.normalisation
    mmt.set_threedmm_normalisation(torch.tensor(norm["3dmm_mean"]), torch.tensor(norm["3dmm_std"]))
    samples = to_samples(store.read_split("train"), list(manifest.model_streams()))
    accumulator = LatentStatsAccumulator(config.latent_dim)
    with torch.no_grad():
        accumulator.update(
            mmt.encode({k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in samples["listener"].items()})
        )
    mmt.set_latent_stats(accumulator.finalize())
    return save_checkpoint(tmp_path_factory.mktemp("stage1") / "stage1.pt", mmt)


@pytest.fixture(scope="module")
def local_ray():
    """This process's local Ray runtime for a module of tests (cores + 2 logical CPUs: two 1-CPU
    trials at a time, two CPUs for Ray Data)."""
    import ray

    from reactdiff.ray_runtime import ray_init

    ray_init()
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` on 127.0.0.1 (SQLite), shared by the session, stopped by pid."""
    from reactdiff.mlflow_server import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow-session")) as uri:
        yield uri


@pytest.fixture(scope="module")
def uri(tracking_uri: str) -> str:
    """`tracking_uri` for a module. Not set as MLflow's process-global URI: the code under test
    passes its URI explicitly (reactdiff.tracking)."""
    return tracking_uri


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray():
    """A Ray runtime a test started is shut down at the end."""
    yield
    import sys

    if "ray" in sys.modules:
        import ray

        ray.shutdown()


@pytest.fixture
def no_inprocess_ray():
    """End-to-end tests start Ray in other processes. Two Ray runtimes on one machine break Ray's
    state API (Train's placement-group cleaner then leaks CPUs), so this process's runtime goes first."""
    import ray

    ray.shutdown()
