"""`reactdiff generate` from a checkpoint: store-split and corpus-clip speakers, listener styles,
REACT2024-format outputs read back with the corpus reader. (The MLflow-URI path is exercised
against a real server in test_registry.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reactdiff.config import DiffusionConfig, MMTConfig, ModelConfig
from reactdiff.data import corpus, layout
from reactdiff.data.store import Location, Manifest, StreamSpec, write_manifest, write_part
from reactdiff.generate import generate_to_dir, lite_features
from reactdiff.models import MMT, LatentStatsAccumulator, ReactDiff, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LITE = {"emotion": 25, "3dmm": 58, "mfcc": 26}
ALPHA = 2
SEED = 7
FRAMES = 50  # conftest's tiny corpus: 51 frames on disk, 50 used


def save_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A tiny untrained stage-2 ReactDiff over the lite streams, ready to generate."""
    torch.manual_seed(seed)
    config = ModelConfig(
        mmt=MMTConfig(d_model=16, n_heads=2, latent_dim=4, decoder_layers=1, dropout=0.0),
        diffusion=DiffusionConfig(window_size=5, steps=2, cond_dim=16, unet_channels=[8, 16], time_embed_dim=8),
    )
    model = ReactDiff(MMT(LITE, config.mmt), config).eval()
    feats = {name: torch.randn(4, 20, dim) for name, dim in LITE.items()}
    accumulator = LatentStatsAccumulator(config.mmt.latent_dim)
    accumulator.update(model.mmt.encode(feats))
    model.set_latent_stats(accumulator.finalize())
    latents = model.encode_latent(feats)
    model.lrs.fit({"NoXI/fit/Expert_video": [latents[0], latents[1]], "NoXI/fit/Novice_video": [latents[2] + 0.5]})
    return save_checkpoint(path, model)


def audio_file(root: Path, split: str, clip: corpus.ClipRef) -> Path:
    return clip.file(root, split, layout.AUDIO_DIR)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "stage2.pt")


@pytest.fixture(scope="module")
def val_store(tiny_corpus: Path, tmp_path_factory) -> Path:
    """A lite feature store of the tiny corpus's val split, written with the store's own writer."""
    root = tmp_path_factory.mktemp("store")
    pairs = corpus.read_split(tiny_corpus, "val")
    rows = [
        {
            "pair_id": p.row,
            "clip_a": p.speaker.path,
            "clip_b": p.listener.path,
            "a": lite_features(audio_file(tiny_corpus, "val", p.speaker))[1],
            "b": lite_features(audio_file(tiny_corpus, "val", p.listener))[1],
        }
        for p in pairs
    ]
    streams = {
        "emotion": StreamSpec(25, "float32", "target"),
        "3dmm": StreamSpec(58, "float32", "target"),
        "mfcc": StreamSpec(26, "float32", "audio"),
    }
    manifest = Manifest(
        profile="lite",
        frames=len(rows[0]["a"]["emotion"]),
        fps=layout.FPS,
        streams=streams,
        splits={"val": {"rows": len(rows), "samples": 2 * len(rows), "files": ["val/part-00000.parquet"]}},
    )
    location = Location(root)
    write_part(location, "val/part-00000.parquet", rows, manifest)
    write_manifest(location, manifest)
    return root


def read_reactions(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(α, T, 25) emotion and (α, T, 58) 3DMM, parsed with the corpus reader's file readers."""
    emotion = np.stack([corpus.read_emotion(folder / f"{k}.csv") for k in range(ALPHA)])
    face3d = np.stack([corpus.read_face3d(folder / f"{k}.npy", FRAMES) for k in range(ALPHA)])
    return emotion, face3d


def test_store_split_outputs_parse_back_and_match_the_model(checkpoint, val_store, tiny_corpus, tmp_path):
    files = generate_to_dir(checkpoint, f"{val_store}:val", tmp_path, alpha=ALPHA, seed=SEED)
    pairs_clips = [(r["clip_a"], r["clip_b"]) for r in _store_rows(val_store)]
    speakers = [a for a, _ in pairs_clips] + [b for _, b in pairs_clips]  # role-swapped order
    assert len(files) == len(speakers) * (2 * ALPHA + 1) + 3
    model = load_checkpoint(checkpoint)
    feats = [lite_features(audio_file(tiny_corpus, "val", corpus.parse_clip_path(clip)))[1] for clip in speakers]
    # One batch, speaker i seeded SEED + i: what `evaluate` generates for these speakers.
    expected = model.generate(
        {k: torch.from_numpy(np.stack([f[k] for f in feats])) for k in LITE}, alpha=ALPHA, seed=SEED
    )
    np.testing.assert_array_equal(np.load(tmp_path / layout.EMOTION_FILE), expected["emotion"].numpy())
    np.testing.assert_array_equal(np.load(tmp_path / layout.FACE3D_FILE), expected["3dmm"].numpy())
    for i, clip in enumerate(speakers):
        folder = tmp_path / "reactions" / clip
        emotion, face3d = read_reactions(folder)
        assert emotion.shape == (ALPHA, FRAMES, 25) and face3d.shape == (ALPHA, FRAMES, 58)
        assert np.load(folder / "0.npy").shape == (FRAMES, 1, 58)
        assert (folder / "emotion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        np.testing.assert_array_equal(face3d, expected["3dmm"][i].numpy())
        wanted = expected["emotion"][i].numpy()
        np.testing.assert_array_equal(emotion[..., layout.AU_SLICE], wanted[..., layout.AU_SLICE] >= 0.5)
        np.testing.assert_allclose(emotion[..., 15:], wanted[..., 15:], atol=1e-6)


def assert_same_reactions(folder: Path, other: Path) -> None:
    """Equal up to the ~1e-7 by which a batch of speakers rounds differently from one speaker."""
    for got, want in zip(read_reactions(folder), read_reactions(other), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_clip_speaker_matches_store_speaker(checkpoint, val_store, tiny_corpus, tmp_path):
    store_out, clip_out = tmp_path / "store", tmp_path / "clip"
    generate_to_dir(checkpoint, f"{val_store}:val", store_out, alpha=ALPHA, seed=SEED)
    rows = _store_rows(val_store)
    clip = rows[0]["clip_b"]  # speaker of sample R + 0 (role-swapped), seeded SEED + R
    files = generate_to_dir(
        checkpoint,
        audio_file(tiny_corpus, "val", corpus.parse_clip_path(clip)),
        clip_out,
        alpha=ALPHA,
        seed=SEED + len(rows),
    )
    assert sorted(p.relative_to(clip_out).as_posix() for p in files) == sorted(
        [f"reactions/{clip}/{k}.{ext}" for k in range(ALPHA) for ext in ("csv", "npy")]
        + [f"reactions/{clip}/emotion.png", "generation.json", "emotion.npy", "3dmm.npy"]
    )
    assert_same_reactions(clip_out / "reactions" / clip, store_out / "reactions" / clip)


def test_max_clips_generates_for_the_first_speakers_only(checkpoint, val_store, tmp_path):
    generate_to_dir(checkpoint, f"{val_store}:val", tmp_path / "all", alpha=ALPHA, seed=SEED)
    generate_to_dir(checkpoint, f"{val_store}:val", tmp_path / "one", alpha=ALPHA, seed=SEED, max_clips=1)
    first = _store_rows(val_store)[0]["clip_a"]
    assert [
        p.relative_to(tmp_path / "one" / "reactions").as_posix()
        for p in (tmp_path / "one" / "reactions").rglob("emotion.png")
    ] == [f"{first}/emotion.png"]
    assert_same_reactions(tmp_path / "one" / "reactions" / first, tmp_path / "all" / "reactions" / first)
    with pytest.raises(ValueError, match="max_clips"):
        generate_to_dir(checkpoint, f"{val_store}:val", tmp_path / "bad", max_clips=-1)


def test_listener_reference_shifts_the_reactions(checkpoint, tiny_corpus, tmp_path):
    pair = corpus.read_split(tiny_corpus, "val")[0]
    speaker, listener = (audio_file(tiny_corpus, "val", ref) for ref in (pair.speaker, pair.listener))
    read = {}
    for name, ref in [("global", None), ("reference", [listener]), ("fitted", ["NoXI/fit/Novice_video"])]:
        generate_to_dir(checkpoint, speaker, tmp_path / name, alpha=ALPHA, seed=SEED, listener_ref=ref)
        read[name] = read_reactions(tmp_path / name / "reactions" / pair.speaker.path)[1]
    assert not np.allclose(read["global"], read["reference"])
    model = load_checkpoint(checkpoint)
    _, feats = lite_features(speaker)
    expected = model.generate(
        {k: torch.from_numpy(v)[None] for k, v in feats.items()},
        alpha=ALPHA,
        seed=SEED,
        listener_style=model.lrs.styles["NoXI/fit/Novice_video"],
    )
    np.testing.assert_array_equal(read["fitted"], expected["3dmm"][0].numpy())


def test_refusals_name_the_problem(checkpoint, tiny_corpus, tmp_path):
    pair = corpus.read_split(tiny_corpus, "val")[0]
    emotion_file = pair.speaker.file(tiny_corpus, "val", layout.EMOTION_DIR)
    with pytest.raises(ValueError, match="outside the Emotion tree"):
        generate_to_dir(checkpoint, emotion_file, tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a checkpoint file nor an MLflow URI"):
        generate_to_dir(tmp_path / "missing.pt", audio_file(tiny_corpus, "val", pair.speaker), tmp_path)
    stage1 = save_checkpoint(tmp_path / "stage1.pt", load_checkpoint(checkpoint).mmt)
    with pytest.raises(ValueError, match="stage 1"):
        generate_to_dir(stage1, audio_file(tiny_corpus, "val", pair.speaker), tmp_path)


def _store_rows(store: Path) -> list[dict]:
    """The store's (clip_a, clip_b) rows, read with pyarrow."""
    import pyarrow.parquet as pq

    return pq.read_table(store / "val" / "part-00000.parquet", columns=["clip_a", "clip_b"]).to_pylist()


def test_real_time_factor_times_every_streamed_window(tmp_path):
    from reactdiff.generate import measure_real_time

    model = load_checkpoint(save_tiny_checkpoint(tmp_path / "model.pt"))
    speaker = {name: torch.randn(1, 23, dim) for name, dim in LITE.items()}
    real_time = measure_real_time(model, speaker, alpha=3)
    assert len(real_time.seconds_per_window) == 5  # ceil(23 / ws 5)
    assert real_time.window_seconds == 5 / layout.FPS
    assert real_time.factor == pytest.approx(sum(real_time.seconds_per_window) / (5 * 0.2))
    assert "real-time factor" in real_time.summary()
