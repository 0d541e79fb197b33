"""`reactdiff score` and `evaluate --videos`: predictions saved by `generate` score exactly what
`evaluate` reported for the same model, split, α and seed; the ground truth read from the corpus
is the store's; every refusal names what is wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import mlflow
import numpy as np
import pytest
from test_generate import save_tiny_checkpoint

from reactdiff.cli import main
from reactdiff.config import load_config
from reactdiff.data import layout
from reactdiff.evaluate.run import evaluate
from reactdiff.evaluate.score import ScoreError, load_predictions, score, truth_from_corpus, truth_from_store
from reactdiff.evaluate.validation import MODEL_LABEL
from reactdiff.generate import generate_to_dir

REPO = Path(__file__).resolve().parents[1]
ALPHA, SEED, FRAMES = 3, 5, 50


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("model") / "stage2.pt")


@pytest.fixture(scope="module")
def evaluation(checkpoint, tiny_store, tiny_corpus, tracking_uri, tmp_path_factory):
    cfg = load_config(
        REPO / "configs" / "tiny.yaml",
        [
            f"data.store={tiny_store}",
            f"data.corpus={tiny_corpus}",
            f"tracking.tracking_uri={tracking_uri}",
            "tracking.experiment=test-score",
        ],
    )
    return evaluate(
        cfg,
        model=str(checkpoint),
        split="test",
        alpha=ALPHA,
        seed=SEED,
        out_dir=tmp_path_factory.mktemp("eval"),
        videos=1,
    )


@pytest.fixture(scope="module")
def generated(checkpoint, tiny_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    generate_to_dir(checkpoint, f"{tiny_store}:test", out, alpha=ALPHA, seed=SEED)
    return out


def test_score_of_generated_predictions_equals_evaluate(evaluation, generated, tiny_store, tiny_corpus, tmp_path):
    store_truth = truth_from_store(tiny_store, "test")
    rows, markdown, files = score(load_predictions(generated, store_truth), store_truth, tmp_path / "store")
    assert rows["predictions"] == evaluation.rows[MODEL_LABEL]  # every metric, exactly
    assert {"results.md", "results.json", "metrics.png", "sample_0.png"} <= {f.name for f in files}

    # The corpus reader gives the same samples, in the same order (role swap of the split CSV).
    corpus_truth = truth_from_corpus(tiny_corpus, "test", tiny_store / "test" / "appropriate.npy")
    assert corpus_truth.speaker_clips == store_truth.speaker_clips
    np.testing.assert_array_equal(corpus_truth.listener, store_truth.listener)
    rows, _, _ = score(load_predictions(generated / layout.EMOTION_FILE, corpus_truth), corpus_truth, tmp_path / "c")
    assert rows["predictions"] == evaluation.rows[MODEL_LABEL]


def test_score_reads_per_clip_csvs_by_clip_name(generated, tiny_store, tmp_path):
    folder = tmp_path / "csvs"
    shutil.copytree(generated / layout.REACTIONS_DIR, folder)
    truth = truth_from_store(tiny_store, "test")
    predictions = load_predictions(folder, truth)
    # The CSVs hold AU occurrences: the generated values thresholded at 0.5.
    raw = np.load(generated / layout.EMOTION_FILE)
    np.testing.assert_array_equal(predictions.emotion[..., layout.AU_SLICE], raw[..., layout.AU_SLICE] >= 0.5)
    np.testing.assert_allclose(predictions.emotion[..., 15:], raw[..., 15:], atol=1e-6)


def test_evaluate_logs_seeded_sample_videos_next_to_its_plots(evaluation, tracking_uri):
    (video,) = evaluation.videos
    assert video in evaluation.files and video.name.startswith("video_sample_")
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == FRAMES
    artifacts = [
        a.path for a in mlflow.MlflowClient(tracking_uri).list_artifacts(evaluation.run_id, "evaluation/test-offline")
    ]
    assert any(path.endswith(video.name) for path in artifacts)
    assert any(path.endswith("sample_0.png") for path in artifacts)


def test_score_command_logs_a_run_of_its_own(generated, tiny_store, tracking_uri, tmp_path, capfd):
    assert (
        main(
            [
                "score",
                str(generated),
                "--store",
                str(tiny_store),
                "--split",
                "test",
                "--out",
                str(tmp_path),
                "--tracking-uri",
                tracking_uri,
                "--label",
                "team-x",
                "--baselines",
                "--log-dir",
                str(tmp_path / "logs"),
            ]
        )
        == 0
    )
    printed = capfd.readouterr().out  # results reach the terminal's stdout past the session's log file
    assert "team-x" in printed and "B_Mime" in printed and "B_Ridge" in printed
    run_id = printed.rsplit("logged to MLflow run ", 1)[1].split()[0]
    run = mlflow.MlflowClient(tracking_uri).get_run(run_id)
    assert run.data.tags["reactdiff.eval_split"] == "test"
    assert run.data.metrics["B_Mime.FRSyn"] == 0.0 and "FRDist" in run.data.metrics
    assert run.data.metrics["B_Ridge.FRDiv"] == 0.0  # fitted on the store's train split, deterministic


@pytest.fixture(scope="module")
def truth(tiny_store):
    return truth_from_store(tiny_store, "test")


def valid(truth) -> np.ndarray:
    """Random predictions within every channel's range."""
    emotion = np.random.default_rng(0).random((len(truth.listener), 2, FRAMES, layout.EMOTION_DIM), dtype=np.float32)
    emotion[..., layout.VA_SLICE] = emotion[..., layout.VA_SLICE] * 2 - 1
    return emotion


def saved(tmp_path: Path, array: np.ndarray, name: str = "emotion.npy") -> Path:
    np.save(tmp_path / name, array)
    return tmp_path / name


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda e: e[:-1], r"emotion shape.*expected \(N=4, α, T=50, 25\).*split has 4 samples"),
        (lambda e: e[:, :, :-1], r"emotion shape.*T=50"),
        (lambda e: e[..., :24], r"emotion shape.*25\)"),
        (lambda e: np.where(np.arange(25) == 3, np.nan, e), r"finite number"),
        (lambda e: np.where(np.arange(25) == 0, 1.5, e), r"'AU1 \[sample 0 .*AU occurrence probability in \[0, 1\]"),
        (lambda e: np.where(np.arange(25) == 15, -1.2, e), r"'Valence \[sample 0.*valence/arousal in \[-1, 1\]"),
        (lambda e: np.where(np.arange(25) == 24, -0.1, e), r"'Contempt .*expression probability in \[0, 1\]"),
    ],
)
def test_score_refuses_bad_predictions(truth, tmp_path, change, message):
    with pytest.raises(ScoreError, match=message):
        load_predictions(saved(tmp_path, change(valid(truth)).astype(np.float32)), truth)


def test_score_reads_pt_files(truth, tmp_path):
    import torch

    emotion = valid(truth)
    torch.save({"emotion": torch.from_numpy(emotion)}, tmp_path / "predictions.pt")
    np.testing.assert_array_equal(load_predictions(tmp_path / "predictions.pt", truth).emotion, emotion)
    torch.save({"reactions": torch.from_numpy(emotion)}, tmp_path / "other.pt")
    with pytest.raises(ScoreError, match="a dict with an 'emotion' entry"):
        load_predictions(tmp_path / "other.pt", truth)


def test_score_refuses_bad_files_matrices_and_orders(truth, tiny_corpus, generated, tmp_path, capsys):
    emotion = valid(truth)
    with pytest.raises(ScoreError, match="3dmm shape"):
        load_predictions(saved(tmp_path, emotion), truth, threedmm=saved(tmp_path, emotion, "3dmm.npy"))
    (tmp_path / "emotion.txt").write_text("1 2 3")
    with pytest.raises(ScoreError, match="suffix.*a .npy or .pt file"):
        load_predictions(tmp_path / "emotion.txt", truth)
    np.save(tmp_path / "small.npy", np.eye(3))
    with pytest.raises(ValueError, match=r"shape'.*expected \(4, 4\)"):
        truth_from_corpus(tiny_corpus, "test", tmp_path / "small.npy")

    # Orders that cannot be matched: a clip list naming a clip of another split, a folder lacking a clip.
    order = tmp_path / "order.txt"
    order.write_text("\n".join(truth.speaker_clips[:-1] + ["NoXI/999_val/Expert_video/1"]))
    with pytest.raises(ScoreError, match=r"1 missing .* 1 not in the split"):
        load_predictions(saved(tmp_path, emotion), truth, clips_file=order)
    folder = tmp_path / "csvs"
    shutil.copytree(generated / layout.REACTIONS_DIR, folder)
    shutil.rmtree(folder / truth.speaker_clips[0])
    with pytest.raises(ScoreError, match=f"1 missing .*{truth.speaker_clips[0]}"):
        load_predictions(folder, truth)
    # A reversed clip list puts the rows back in the split's order.
    order.write_text("\n".join(reversed(truth.speaker_clips)))
    loaded = load_predictions(saved(tmp_path, emotion[::-1].copy()), truth, clips_file=order)
    np.testing.assert_array_equal(loaded.emotion, emotion)

    # The command line prints the refusal and exits 1.
    assert (
        main(
            [
                "score",
                str(saved(tmp_path, emotion[:-1])),
                "--corpus",
                str(tiny_corpus),
                "--split",
                "test",
                "--out",
                str(tmp_path / "out"),
                "--log-dir",
                str(tmp_path / "logs"),
            ]
        )
        == 1
    )
    assert "split has 4 samples" in capsys.readouterr().err
