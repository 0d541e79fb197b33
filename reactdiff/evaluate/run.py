"""`reactdiff evaluate`: REACT2024 metrics for a model, the four naive baselines and the learned
reference B_Ridge, side by side.

A stage-2 (ReactDiff) model is scored on the reactions it generates. A stage-1 (MMT) model is
scored on its reconstructions (`recon_FRDist`, `recon_3dmm_mse`, `recon_emotion_l1`,
`recon_au_f1`, `recon_va_ccc`; see evaluate/validation.py) next to B_MeanSeq's, so that it can be
promoted under its own registered name (`reactdiff promote --model-name reactdiff-mmt --metric
recon_FRDist --mode min`) and trained over as `train.stage1_model=models:/reactdiff-mmt@champion`.

Runs before a trained model exists (baselines only) and after. Writes a results table
(stdout, `results.md`, `results.csv`), sample plots, a metric chart and (for a stage-2 model with
the corpus known) a few sample videos to `out_dir`, and logs all of it to MLflow: into the
model's own training run when the model is a `runs:/` or `models:/` URI (so `reactdiff promote`
can rank runs by these metrics), else into a new evaluation run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from reactdiff import predict, tracking
from reactdiff.config import ExperimentConfig
from reactdiff.data.store import Store, to_samples
from reactdiff.evaluate import baselines, metrics, report, validation
from reactdiff.models.mmt import MMT
from reactdiff.request_checks import DEFAULT_ALPHA, MODES
from reactdiff.tags import EVAL_MODE_TAG, EVAL_PRECISION_TAG, EVAL_SPLIT_TAG, STORE_FINGERPRINT_TAG

log = logging.getLogger(__name__)

MMT_LABEL = "MMT"  # the row of a stage-1 model, scored on its reconstructions
# Reactions per evaluation video (of α), beside the real listener: enough to see how they differ,
# few enough that two 750-frame videos add seconds to an evaluation.
VIDEO_REACTIONS = 3
VIDEO_FACE_SIZE = 96  # pixels per face: ~5 CPU-s per 750-frame video here (bench/bench_render.py)


@dataclass
class Evaluation:
    rows: dict[str, dict[str, float]]
    table_markdown: str
    out_dir: Path
    run_id: str
    verdict: str  # per model row and metric, which naive baselines it beats
    heading: str  # what was measured, on which split and how many samples
    files: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)  # also among `files`

    def summary(self) -> str:
        return f"{self.heading}:\n\n{self.table_markdown}" + (f"\n{self.verdict}" if self.verdict else "")


def _reconstructions(
    reconstructor, listener: dict[str, np.ndarray], streams: dict[str, int]
) -> tuple[np.ndarray, dict[str, float]]:
    """Emotion reconstructions (N, 1, T, 25) of every listener and their weight-free metrics, by a
    stage-1 MMT or a baseline that ignores its input."""
    totals, emotions = validation.ReconstructionTotals(), []
    n = len(listener["emotion"])
    for start in range(0, n, validation.GENERATION_BATCH):
        batch = {k: v[start : start + validation.GENERATION_BATCH] for k, v in listener.items()}
        if isinstance(reconstructor, MMT):
            threedmm, emotion = validation.reconstruct(
                reconstructor, predict.tensors({k: v for k, v in batch.items() if k in streams})
            )
        else:
            out = reconstructor.generate(batch, alpha=1)
            threedmm, emotion = out["3dmm"][:, 0], out["emotion"][:, 0]
        totals.add(threedmm, emotion, batch["3dmm"], batch["emotion"])
        emotions.append(emotion[:, None])
    return np.concatenate(emotions), totals.metrics(prefix="")


def _videos(
    network,
    samples: dict,
    scored: int,
    split: str,
    alpha: int,
    mode: str,
    seed: int,
    count: int,
    corpus_root: Path,
    out_dir: Path,
    bf16_sampling: bool,
) -> list[Path]:
    """`count` of the first `scored` samples, a seeded choice, as videos (`render.video.write_video`): the speaker's real video
    and audio, the first `VIDEO_REACTIONS` of the model's α reactions (global style) and the
    real listener. Each sample's reactions are generated again alone, with the seed it had in the
    scored batch (`seed + i`), so they are the scored ones up to batched rounding (~1e-7)."""
    from reactdiff.data import corpus
    from reactdiff.render import video
    from reactdiff.render.face import Face

    videos = []
    for i in validation.eval_indices(scored, count, seed):
        feats = {k: v[i : i + 1] for k, v in samples["speaker"].items()}
        (out,) = predict.reactions(
            network, feats, min(alpha, VIDEO_REACTIONS), mode, int(seed + i), bf16_sampling=bf16_sampling
        )
        faces = [Face(f"reaction {k}", out["emotion"][0, k], out["3dmm"][0, k]) for k in range(out["emotion"].shape[1])]
        faces.append(Face("real listener", samples["listener"]["emotion"][i], samples["listener"]["3dmm"][i]))
        clip = samples["speaker_clip"][i]
        speaker = corpus.load_clip(corpus_root, split, clip, len(faces[-1].emotion))
        videos.append(
            video.write_video(
                out_dir / f"video_sample_{i}.mp4",
                speaker,
                faces,
                VIDEO_FACE_SIZE,
                title=f"{split} sample {i}: speaker {clip}",
            )
        )
    return videos


def evaluate(
    cfg: ExperimentConfig,
    model: str | None = None,
    split: str = "test",
    mode: str = MODES[0],
    alpha: int = DEFAULT_ALPHA,
    out_dir: Path = Path("runs/eval"),
    max_samples: int = 0,
    seed: int = 0,
    precision: str = "fp32",
    videos: int = 2,
) -> Evaluation:
    """Score `model` (none: the baselines only) on `split`; see the module docstring.

    `videos` samples of a stage-2 model, a seeded choice, are rendered as MP4s next to the plots
    (`_videos`); they need the corpus (`cfg.data.corpus`) for the speakers' video and audio.

    `precision` "bf16" runs a ReactDiff's denoiser under bfloat16 autocast while sampling (encoding,
    decoding and DDIM steps stay fp32): faster where bf16 is native, and the reactions, hence the
    metrics, move slightly; the run is tagged with it. "fp32" is the reference."""
    from reactdiff.models.checkpoint import load_checkpoint

    torch.manual_seed(seed)
    client = tracking.client_for(cfg.tracking.tracking_uri)
    ref = tracking.check_model(cfg.tracking.tracking_uri, model) if model else None
    store = Store(cfg.data.store)
    manifest = store.manifest

    network = load_checkpoint(tracking.resolve_checkpoint(cfg.tracking.tracking_uri, ref)) if ref else None
    is_mmt = isinstance(network, MMT)
    model_streams = (network.streams if is_mmt else network.mmt.streams) if network is not None else {}
    streams = sorted(set(model_streams) | {"emotion", "3dmm"})

    train_samples = to_samples(store.read_split(cfg.data.train_split, streams=["emotion", "3dmm"]), ["emotion", "3dmm"])
    train_listeners = train_samples["listener"]
    mean_seq = baselines.MeanSeqBaseline.fit(train_listeners["emotion"], train_listeners["3dmm"])

    samples = to_samples(store.read_split(split, streams=streams), streams)
    split_appropriate = store.appropriate(split)
    n = len(samples["speaker_clip"])
    if max_samples and max_samples < n:
        n = max_samples
    appropriate = split_appropriate[:n, :n]
    speaker = {k: v[:n] for k, v in samples["speaker"].items()}
    listener_emotion = samples["listener"]["emotion"][:n]
    speaker_emotion = speaker["emotion"]

    rows: dict[str, dict[str, float]] = {}
    predictions: dict[str, np.ndarray] = {}
    if is_mmt:
        # Stage 1 reconstructs each listener from their own features; the mean training sequence
        # (B_MeanSeq) is the reference a useful autoencoder must beat by far.
        listener = {k: v[:n] for k, v in samples["listener"].items()}
        for label, reconstructor in ((MMT_LABEL, network), (mean_seq.name, mean_seq)):
            predictions[label], rows[label] = _reconstructions(reconstructor, listener, model_streams)
    else:
        if network is not None:
            start = time.perf_counter()
            scores = validation.score_reactions(
                network,
                samples,
                split_appropriate,
                alpha,
                mode,
                seed,
                indices=np.arange(n),
                bf16_sampling=precision == "bf16",
            )
            rows.update(scores.rows)
            predictions.update(scores.predictions)
            log.info("%s: generated and scored in %.1fs", " + ".join(scores.rows), time.perf_counter() - start)
        mean_face = np.asarray(manifest.normalisation.get("3dmm_mean", train_listeners["3dmm"].mean((0, 1))))
        naive = (
            baselines.RandomBaseline(mean_face),
            baselines.MimeBaseline(),
            mean_seq,
            baselines.MeanFrameBaseline.fit(train_listeners["emotion"], train_listeners["3dmm"]),
            baselines.RidgeBaseline.fit(train_samples["speaker"], train_listeners["emotion"], train_listeners["3dmm"]),
        )
        for baseline in naive:
            (out,) = predict.reactions(
                baseline, speaker, alpha, mode, seed, keys=("emotion",), progress=f"generate {baseline.name}"
            )
            predictions[baseline.name] = out["emotion"]
            rows[baseline.name] = metrics.compute_all(
                predictions[baseline.name], listener_emotion, speaker_emotion, appropriate
            )

    out_dir = Path(out_dir)
    markdown, files = report.write_results(out_dir, rows)
    shown = (MMT_LABEL if is_mmt else validation.MODEL_LABEL) if model else baselines.MimeBaseline.name
    for k in range(min(report.PLOTTED_SAMPLES, n)):
        files.append(
            report.plot_sample(
                out_dir / f"sample_{k}.png",
                speaker_emotion[k],
                listener_emotion[k],
                predictions[shown][k],
                title=f"{shown} | {split} sample {k}: speaker {samples['speaker_clip'][k]}",
            )
        )

    videos_written: list[Path] = []
    if videos and network is not None and not is_mmt:
        if cfg.data.corpus is None:
            log.warning(
                "no videos: the speakers' real video and audio are in the corpus the store was prepared "
                "from; set data.corpus=<corpus root> (or pass --videos 0)"
            )
        else:
            videos_written = _videos(
                network, samples, n, split, alpha, mode, seed, videos, cfg.data.corpus, out_dir, precision == "bf16"
            )
            files += videos_written

    if ref is not None and not ref.is_file:
        run_id = ref.source_run(client)
    else:
        name = f"evaluate-{Path(model).stem}" if model else f"baselines-{split}"
        run_id = tracking.create_finished_run(client, cfg.tracking.experiment, name)
    tags = {
        EVAL_SPLIT_TAG: split,
        EVAL_MODE_TAG: mode,
        EVAL_PRECISION_TAG: precision,
        STORE_FINGERPRINT_TAG: manifest.store_fingerprint,
    }
    tracking.log_scores(
        client, run_id, rows, MMT_LABEL if is_mmt else validation.MODEL_LABEL, files, f"evaluation/{split}-{mode}", tags
    )

    what = "reconstruction metrics" if is_mmt else f"REACT2024 metrics (α={alpha}, {mode})"
    verdict = "\n".join(
        [
            report.baseline_verdict(rows, label)
            for label in (validation.MODEL_LABEL, validation.LRS_LABEL)
            if label in rows
        ]
        + ([report.LEARNED_REFERENCE_NOTE] if report.LEARNED_REFERENCE in rows else [])
    )
    heading = f"{what} on '{split}' ({n} samples)"
    return Evaluation(
        rows=rows,
        table_markdown=markdown,
        out_dir=out_dir,
        run_id=run_id,
        verdict=verdict,
        heading=heading,
        files=files,
        videos=videos_written,
    )
