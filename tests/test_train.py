"""Distributed training on a real local Ray runtime and a real MLflow server (tiny dims).

Covers: 2-worker DDP and DeepSpeed ZeRO-2 for both stages (the loss falls), disjoint covering
shards (and the run's data_shards.json record of them), a rendezvous on loopback only, rows in
store order, batches equal to the numpy reader's samples, split caching, resume by name into the
same MLflow run, and a worker crash survived via FailureConfig.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from reactdiff.config import load_config
from reactdiff.data.store import Store
from reactdiff.models import load_checkpoint
from reactdiff.tracking import RUN_NAME_TAG, load_pyfunc
from reactdiff.train.loop import CRASH_ENV, SHARDS_ARTIFACT
from reactdiff.train.trainer import run_training

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _config(tiny_store: Path, tmp_path: Path, tracking_uri: str, name: str, *overrides: str):
    return load_config(
        REPO / "configs" / "tiny.yaml",
        [
            f"data.store={tiny_store}",
            f"train.storage_path={tmp_path / 'runs'}",
            f"tracking.tracking_uri={tracking_uri}",
            f"train.name={name}",
            "tracking.experiment=test-train",
            *overrides,
        ],
    )


def _history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    client = mlflow.MlflowClient(tracking_uri)
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _runs_named(tracking_uri: str, run_name: str) -> list:
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("test-train")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'")


@pytest.fixture(scope="module")
def stage1_runs(tiny_store, tmp_path_factory, tracking_uri):
    """One stage-1 model (2 DDP workers, seeded by configs/tiny.yaml's train.seed) for the stage-1,
    crash, resume and stage-2 tests: 3 epochs with rank 1 killed once at epoch 1 (FailureConfig
    restarts it), then resumed by name to 4 epochs. Returns (first result, resumed result, folder,
    the crash marker, the first run's train_loss steps)."""
    tmp = tmp_path_factory.mktemp("stage1")
    marker = tmp / "crashed"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CRASH_ENV, f"{marker}:1:1")  # rank 1 dies at epoch 1
        first = run_training(
            _config(tiny_store, tmp, tracking_uri, "ddp", "train.stage=1", "train.epochs=3", "train.max_failures=2")
        )
    first_steps = [s for s, _ in _history(tracking_uri, first.run_id, "train_loss")]
    resumed = run_training(_config(tiny_store, tmp, tracking_uri, "ddp", "train.stage=1", "train.epochs=4"))
    return first, resumed, tmp, marker, first_steps


@pytest.fixture(scope="module")
def stage1_run(stage1_runs):
    """The stage-1 model after its 4 epochs, and the folder it was trained in."""
    return stage1_runs[1], stage1_runs[2]


@pytest.fixture(scope="module")
def stage1_checkpoint(stage1_run) -> str:
    return str(stage1_run[0].checkpoint)


def test_stage1_ddp(stage1_run, tiny_store, tracking_uri):
    """What stage 1 must achieve: it learns (train and val loss fall), the two DDP replicas hold the
    same weights after every epoch's steps, and the exported checkpoint is the trained model with
    its latent statistics, loading with weights_only like the epoch checkpoints."""
    import torch

    from reactdiff.data.store import to_samples
    from reactdiff.models import MMT
    from reactdiff.train.engine import STATE_FILE

    result, tmp = stage1_run
    losses = [v for _, v in _history(tracking_uri, result.run_id, "train_loss")]
    assert len(losses) == 4 and losses[-1] < losses[0] * 0.9, losses
    val_losses = [v for _, v in _history(tracking_uri, result.run_id, "val_loss")]
    assert len(val_losses) == 4 and max(val_losses[1:]) < val_losses[0], val_losses
    spreads = _history(tracking_uri, result.run_id, "replica_weight_spread")
    assert spreads == [(epoch, 0.0) for epoch in range(4)], spreads  # bit-identical replicas
    # Weight-free reconstruction metrics every epoch, over both workers' val shards. The emotion
    # L1 is one term of val_loss = w_3dmm·MSE(normalised 3DMM) + w_emotion·L1, so it is bounded by it.
    for key in (
        "val_recon_FRDist",
        "val_recon_3dmm_mse",
        "val_recon_emotion_l1",
        "val_recon_au_f1",
        "val_recon_va_ccc",
    ):
        assert len(_history(tracking_uri, result.run_id, key)) == 4, key
    val_loss = dict(_history(tracking_uri, result.run_id, "val_loss"))
    for step, l1 in _history(tracking_uri, result.run_id, "val_recon_emotion_l1"):
        assert 0 < 10.0 * l1 <= val_loss[step] + 1e-6, (step, l1, val_loss[step])
    assert 0.0 <= result.metrics["val_recon_au_f1"] <= 1.0 and result.metrics["val_recon_FRDist"] > 0
    # The data wait, and its part after each epoch's first batch (which excludes the epoch's start-up).
    waits = dict(_history(tracking_uri, result.run_id, "data_wait_fraction"))
    steady = dict(_history(tracking_uri, result.run_id, "data_wait_steady_fraction"))
    assert sorted(steady) == sorted(waits) == list(range(4))
    assert all(0 <= steady[epoch] <= waits[epoch] < 1 for epoch in waits), (waits, steady)
    # The run's record of the workers' shards (written by each fit's first epoch: 3, the resumed
    # fit's): rank 0 and 1, each with its own rows, all of the split.
    client = mlflow.MlflowClient(tracking_uri)
    shards = json.loads(Path(client.download_artifacts(result.run_id, SHARDS_ARTIFACT, str(tmp))).read_text())
    assert shards["epoch"] == 3 and [r["rank"] for r in shards["ranks"]] == [0, 1]
    rows = [r["train_rows"] for r in shards["ranks"]]
    assert all(rows) and not set(rows[0]) & set(rows[1])
    assert sorted(rows[0] + rows[1]) == sorted(Store(tiny_store).read_split("train")["pair_id"].tolist())

    # The export loads with weights_only (load_checkpoint uses nothing else) and holds the last
    # epoch checkpoint's weights plus the latent statistics fitted after training.
    torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    model = load_checkpoint(result.checkpoint)
    assert isinstance(model, MMT) and bool(model.latent_stats_set)
    latest = sorted(p for p in (tmp / "runs" / "ddp-stage1").glob("checkpoint_*") if p.is_dir())[-1]
    trained = torch.load(latest / STATE_FILE, map_location="cpu", weights_only=True)["model"]
    exported = model.state_dict()
    for key, value in trained.items():
        if not key.startswith("latent_"):
            assert torch.equal(exported[key], value), key
    store = Store(tiny_store)
    listener = to_samples(store.read_split("train"), store.manifest.model_streams())["listener"]
    feats = {k: torch.from_numpy(v) for k, v in listener.items() if k in model.streams}
    with torch.no_grad():
        latents = model.encode(feats)
    # Every person's train latents span the fitted range: inside it, and touching both ends.
    offset = (latents - model.latent_center).abs().flatten(0, 1).max(dim=0).values
    torch.testing.assert_close(offset, model.latent_half_range, rtol=1e-4, atol=1e-5)
    # The logged model is the same: its pyfunc reconstructs what the checkpoint does.
    out = load_pyfunc(tracking_uri, result.model_uri).predict({k: v.numpy() for k, v in feats.items()})
    threedmm, _ = model.decode(latents)
    torch.testing.assert_close(torch.from_numpy(out["3dmm"]), threedmm)


def test_stage2_ddp(stage1_checkpoint, tiny_store, tmp_path, tracking_uri):
    cfg = _config(
        tiny_store,
        tmp_path,
        tracking_uri,
        "ddp",
        "train.stage=2",
        "train.epochs=3",
        f"train.stage1_model={stage1_checkpoint}",
        "train.eval_every=2",
        "train.eval_alpha=2",
        "train.eval_samples=3",
    )
    result = run_training(cfg)
    losses = [v for _, v in _history(tracking_uri, result.run_id, "train_loss")]
    assert len(losses) == 3 and min(losses[-2:]) < losses[0], losses
    # Generated val reactions scored at epoch 2 (step 1) and the last (step 2), global and LRS rows;
    # Ray's last report carries them.
    for key in ("val_FRDist", "val_FRCorr", "val_FRDiv", "val_FRSyn", "val_LRS_FRDist", "val_LRS_FRDiv"):
        steps = [step for step, _ in _history(tracking_uri, result.run_id, key)]
        assert steps == [1, 2], (key, steps)
    assert result.metrics["eval_epoch"] == 2
    assert result.metrics["val_FRDist"] == _history(tracking_uri, result.run_id, "val_FRDist")[-1][1]
    assert result.metrics["val_FRDiv"] > 0  # α = 2 reactions that differ
    generated = load_pyfunc(tracking_uri, result.model_uri)
    store = Store(tiny_store)
    arrays = store.read_split("test")
    from reactdiff.data.store import to_samples

    speaker = to_samples(arrays, store.manifest.model_streams())["speaker"]
    out = generated.predict({k: v[:1] for k, v in speaker.items()}, params={"alpha": 2, "seed": 0})
    assert out["emotion"].shape == (1, 2, store.manifest.frames, 25)


@pytest.mark.parametrize("stage", [1, 2])
def test_deepspeed_zero2(stage, stage1_checkpoint, tiny_store, tmp_path, tracking_uri):
    cfg = _config(
        tiny_store,
        tmp_path,
        tracking_uri,
        f"ds{stage}",
        f"train.stage={stage}",
        "train.strategy=deepspeed",
        "train.zero_stage=2",
        "train.epochs=2",  # the fewest that show the loss falling
        f"train.stage1_model={stage1_checkpoint}",
    )
    result = run_training(cfg)
    losses = [v for _, v in _history(tracking_uri, result.run_id, "train_loss")]
    assert len(losses) == 2 and losses[1] < losses[0], losses
    # Every rank saved its ZeRO shard into the epoch checkpoint.
    latest = sorted(p for p in (tmp_path / "runs" / f"ds{stage}-stage{stage}").glob("checkpoint_*") if p.is_dir())[-1]
    shards = sorted(p.name for p in latest.rglob("*optim_states.pt"))
    assert len(shards) == 2, shards
    # ZeRO-2 shards the optimiser state, not the weights: the replicas stay equal, and the export
    # (single-file format) is the last epoch's model.
    assert _history(tracking_uri, result.run_id, "replica_weight_spread") == [(e, 0.0) for e in range(2)]
    model = load_checkpoint(result.checkpoint)
    assert type(model).__name__ == ("MMT" if stage == 1 else "ReactDiff")
    assert bool(model.latent_stats_set)
    if stage == 2:
        assert model.lrs.global_style is not None and model.lrs.styles  # LRS fitted, exported with the weights


def test_shards_are_disjoint_and_cover_the_split(tiny_store, tmp_path):
    import ray.train
    from ray.train.torch import TorchTrainer

    from reactdiff.ray_runtime import ray_init

    def loop(config):
        ids = []
        for batch in ray.train.get_dataset_shard("train").iter_batches(batch_size=1, batch_format="pyarrow"):
            ids += batch["pair_id"].to_pylist()
        rank = ray.train.get_context().get_world_rank()
        (Path(config["out"]) / f"rank{rank}.json").write_text(json.dumps(ids))

    ray_init()
    store = Store(tiny_store)
    TorchTrainer(
        loop,
        train_loop_config={"out": str(tmp_path)},
        scaling_config=ray.train.ScalingConfig(num_workers=2),
        run_config=ray.train.RunConfig(name="shards", storage_path=str(tmp_path)),
        datasets={"train": store.ray_dataset("train")},
    ).fit()
    seen = {rank: json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)}
    assert seen[0] and seen[1], seen
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(store.read_split("train")["pair_id"].tolist())


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def test_the_rendezvous_listens_on_the_node_address_only(tmp_path):
    """torch's TCPStore started through Ray's own TorchConfig listens on every interface; ours
    listens where Ray does (127.0.0.1 for this local runtime), and the process group works."""
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train.torch import TorchTrainer

    from reactdiff.ray_runtime import ray_init
    from reactdiff.train.rendezvous import NodeAddressTorchConfig, interface_of

    def loop(config):
        import psutil

        total = torch.ones(1)
        dist.all_reduce(total)
        listening = sorted(
            {
                (c.laddr.ip, c.laddr.port)
                for c in psutil.Process().net_connections("inet")
                if c.status == psutil.CONN_LISTEN
            }
        )
        rank = ray.train.get_context().get_world_rank()
        (Path(config["out"]) / f"rank{rank}.json").write_text(
            json.dumps([total.item(), int(os.environ["MASTER_PORT"]), os.environ.get("GLOO_SOCKET_IFNAME"), listening])
        )

    ray_init()
    TorchTrainer(
        loop,
        train_loop_config={"out": str(tmp_path)},
        scaling_config=ray.train.ScalingConfig(num_workers=2),
        run_config=ray.train.RunConfig(name="rendezvous", storage_path=str(tmp_path)),
        torch_config=NodeAddressTorchConfig(),
    ).fit()
    for rank in (0, 1):
        total, store_port, gloo_interface, listening = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert total == 2.0
        assert gloo_interface == interface_of("127.0.0.1"), gloo_interface  # gloo's pairs bind there too
        assert all(_is_loopback(ip) for ip, _ in listening), (rank, listening)
        if rank == 0:  # the store itself is among them
            assert ["127.0.0.1", store_port] in listening, listening


def test_interface_of_names_the_interface_holding_an_address():
    """What the rendezvous points gloo and NCCL at (lo for 127.0.0.1), not whatever the hostname
    resolves to."""
    import psutil

    from reactdiff.train.rendezvous import interface_of

    loopback = interface_of("127.0.0.1")
    assert loopback and "127.0.0.1" in {a.address for a in psutil.net_if_addrs()[loopback]}
    assert interface_of("192.0.2.255") is None  # TEST-NET-1 broadcast: held by no interface


def test_rows_come_in_store_order_whichever_read_task_ends_first(tiny_store, monkeypatch):
    """One read task per part file, several running at once: rows still arrive in store order."""
    from reactdiff.data import store as store_module
    from reactdiff.ray_runtime import ray_init
    from reactdiff.train.trainer import _ingest_options

    ray_init()
    monkeypatch.setattr(store_module, "READ_TASK_BYTES", 1)
    store = Store(tiny_store)
    assert len(store.files("train")) > 2
    got = [row["pair_id"] for row in store.ray_dataset("train").iter_rows()]
    assert got == store.read_split("train")["pair_id"].tolist()
    assert _ingest_options().preserve_order  # what Ray Train's streaming_split runs with


def test_batches_are_the_role_swapped_samples_cropped_in_batch_order(tiny_store, monkeypatch):
    """Batches (a background collate thread, one copy per Arrow chunk) give what the numpy reader
    gives; started early (as the next epoch's, during validation), they read before iteration and
    give the same batches."""
    import threading

    import numpy as np
    import torch

    from reactdiff.data import store as store_module
    from reactdiff.data.store import person_of, to_samples
    from reactdiff.ray_runtime import ray_init
    from reactdiff.train.batches import Batches

    ray_init()
    monkeypatch.setattr(store_module, "READ_TASK_BYTES", 1)  # one block per part: batches span chunks
    store = Store(tiny_store)
    manifest, streams, rows, crop, seed = store.manifest, ["3dmm", "emotion"], 3, 7, 11
    arrays = store.read_split("train", streams)

    class WatchedShard:
        """A dataset shard that says when its first block has been read."""

        def __init__(self, shard):
            self.shard, self.read = shard, threading.Event()

        def iter_batches(self, **options):
            for block in self.shard.iter_batches(**options):
                self.read.set()
                yield block

    def batches_of(shard) -> Batches:
        return Batches(
            shard,
            manifest,
            streams,
            ("speaker", "listener"),
            rows_per_batch=rows,
            crop_frames=crop,
            seed=seed,
            device=torch.device("cpu"),
        )

    batches = batches_of(store.ray_dataset("train").iterator())
    rng = np.random.default_rng(seed)
    got = list(batches)
    assert len(got) == -(-len(arrays["pair_id"]) // rows) > 1
    for i, batch in enumerate(got):
        lo = int(rng.integers(0, manifest.frames - crop + 1))
        part = {k: v[i * rows : (i + 1) * rows] for k, v in arrays.items()}
        want = to_samples(part, streams)
        assert batch["listener_id"] == [person_of(c) for c in want["listener_clip"]]
        for role in ("speaker", "listener"):
            for stream in streams:
                expected = torch.from_numpy(want[role][stream][:, lo : lo + crop].astype(np.float32))
                assert batch[role][stream].dtype == torch.float32
                assert torch.equal(batch[role][stream], expected), (i, role, stream)
    assert 0 < batches.first_wait_seconds <= batches.wait_seconds

    watched = WatchedShard(store.ray_dataset("train").iterator())
    started = batches_of(watched).start()
    assert watched.read.wait(timeout=120), "start() did not begin reading"
    again = list(started)
    assert [b["listener_id"] for b in again] == [b["listener_id"] for b in got]
    for a, b in zip(again, got, strict=True):
        assert all(torch.equal(a[r][s], b[r][s]) for r in ("speaker", "listener") for s in streams)


def test_the_shuffle_draws_every_row_once_as_views_into_the_blocks(tiny_store):
    """The seeded shuffle: each row once per epoch, not in store order, repeatable, and zero-copy
    (each batch's feature values lie in the blocks' own memory, not in a copy)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from reactdiff.data.store import column
    from reactdiff.train.batches import Batches

    store = Store(tiny_store)
    table = pa.concat_tables(pq.read_table(path, filesystem=store.location.fs) for path in store.files("train"))
    blocks = [table.slice(i, 3) for i in range(0, table.num_rows, 3)]
    feature = column("a", "3dmm")

    def values_memory(array: pa.ChunkedArray) -> set[int]:
        return {chunk.values.buffers()[1].address for chunk in array.chunks}  # a list's values: [validity, data]

    def order(shuffle_rows: int, seed: int) -> list[list[int]]:
        batches = Batches(None, store.manifest, ["3dmm"], ("listener",), 2, 0, seed, torch.device("cpu"), shuffle_rows)
        tables = list(batches.batch_tables(blocks))
        for batch in tables:
            assert values_memory(batch[feature]) <= values_memory(table[feature])
        return [batch["pair_id"].to_pylist() for batch in tables]

    store_order = table["pair_id"].to_pylist()
    assert [row for batch in order(0, 1) for row in batch] == store_order
    shuffled = order(4, 1)
    assert all(len(batch) == 2 for batch in shuffled[:-1])
    assert sorted(row for batch in shuffled for row in batch) == sorted(store_order)
    assert [row for batch in shuffled for row in batch] != store_order
    assert order(4, 1) == shuffled and order(4, 2) != shuffled


def test_a_split_stays_in_the_object_store_when_it_fits(tiny_store, monkeypatch):
    from ray.data.dataset import MaterializedDataset

    from reactdiff.ray_runtime import ray_init
    from reactdiff.train import trainer

    ray_init()
    store = Store(tiny_store)
    assert isinstance(trainer._dataset(store, "train", "auto"), MaterializedDataset)
    assert not isinstance(trainer._dataset(store, "train", "never"), MaterializedDataset)
    monkeypatch.setattr(trainer, "CACHE_OBJECT_STORE_SHARE", 0.0)  # as if the split were too large
    assert not isinstance(trainer._dataset(store, "train", "auto"), MaterializedDataset)
    assert isinstance(trainer._dataset(store, "train", "always"), MaterializedDataset)


def test_a_local_runtime_binds_loopback_only_without_help_from_the_environment():
    """The `reactdiff` command's local runtime (as the demo starts it), in a fresh process without
    the tests' loopback setting: `main` sets it first (here it stops at --help), then ray is imported."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    script = (
        "import contextlib, io, reactdiff.cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    reactdiff.cli.main(['--help'])\n"
        "import ray\n"
        "from reactdiff.ray_runtime import ray_init\n"
        "ray_init()\n"
        "print([n['NodeManagerAddress'] for n in ray.nodes()], ray.get_runtime_context().gcs_address)\n"
        "ray.shutdown()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    nodes, gcs = out.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert nodes == "['127.0.0.1']" and gcs.startswith("127.0.0.1:"), out.stdout


def test_ray_data_limits_refresh_in_every_ray_process():
    """ray_init's setup hook reaches the Ray workers, where streaming_split's executor runs."""
    import ray.data

    from reactdiff.ray_runtime import RAY_DATA_LIMITS_REFRESH_S, ray_init

    def refresh_interval(batch):
        from ray.data._internal.execution.resource_manager import ResourceManager

        batch["refresh_s"] = [ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S] * len(batch["id"])
        return batch

    ray_init()
    rows = ray.data.range(4, override_num_blocks=2).map_batches(refresh_interval).take_all()
    assert {row["refresh_s"] for row in rows} == {RAY_DATA_LIMITS_REFRESH_S}


def test_a_worker_crash_is_survived(stage1_runs, tracking_uri):
    first, _, _, marker, first_steps = stage1_runs
    assert marker.exists(), "the injected crash did not happen"
    assert first.metrics["epoch"] == 2
    assert first_steps == [0, 1, 2]  # history intact, no epoch logged twice


def test_resume_continues_the_same_run(stage1_runs, tracking_uri):
    first, resumed, *_ = stage1_runs
    assert resumed.run_id == first.run_id and resumed.metrics["epoch"] == 3
    assert [s for s, _ in _history(tracking_uri, first.run_id, "train_loss")] == [0, 1, 2, 3]
    runs = _runs_named(tracking_uri, "ddp-stage1")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_latent_batches_draw_equal_seeded_crops_of_the_cache():
    import torch

    from reactdiff.train.batches import LatentBatches

    speaker = torch.arange(6 * 40, dtype=torch.float32).view(6, 40, 1).expand(6, 40, 3)
    listener = -speaker
    ids = [f"person{i}" for i in range(6)]

    def epoch(seed: int) -> list[dict]:
        return list(LatentBatches(speaker, listener, ids, [0, 1, 2], steps=5, samples=4, crop_frames=25, seed=seed))

    batches = epoch(7)
    assert len(batches) == 5  # `steps` batches whatever the cache's size: every rank steps alike
    drawn = [i for b in batches for i in (int(x) // 40 for x in b["speaker"][:, 0, 0])]
    assert sorted(drawn[:6]) == list(range(6))  # a permutation of the cache before any repeat
    for batch in batches:
        assert batch["speaker"].shape == (4, 25, 3)
        torch.testing.assert_close(batch["listener"], -batch["speaker"])  # the pairs stay together
        rows = batch["speaker"][:, :, 0]
        assert torch.equal(rows - rows[:, :1], torch.arange(25.0).expand(4, 25))  # contiguous crops
        assert batch["listener_id"] == [f"person{int(x) // 40}" for x in rows[:, 0]]
    assert [b["listener_id"] for b in epoch(7)] == [b["listener_id"] for b in batches]  # seeded
    assert [b["listener_id"] for b in epoch(8)] != [b["listener_id"] for b in batches]


def test_a_killed_op_build_lock_is_removed_and_a_live_one_kept(tmp_path, capsys):
    """A first DeepSpeed run killed while it compiles leaves `<op>/lock`; torch's builder would
    wait on it forever. Locks older than a build can take are removed, with a line saying so."""
    import time

    from reactdiff.train.trainer import STALE_BUILD_LOCK_SECONDS, remove_stale_build_locks

    stale, live = tmp_path / "deepspeed_shm_comm" / "lock", tmp_path / "other_op" / "lock"
    for lock in (stale, live):
        lock.parent.mkdir()
        lock.write_text("")
    old = time.time() - STALE_BUILD_LOCK_SECONDS - 60
    os.utime(stale, (old, old))
    assert remove_stale_build_locks(tmp_path) == [stale]
    assert not stale.exists() and live.exists()
    assert str(stale) in capsys.readouterr().err
