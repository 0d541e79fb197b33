"""The quality ladder: where between the speaker and the generated reaction the coupling is lost.

Every rung is scored on one split with the REACT2024 metrics and `track_corr` / `track_sd_ratio`
(does the α-mean follow the real listener?), next to B_Mime and B_Ridge:

- `ceiling`  the stage-1 MMT's reconstruction of the real listener, scored as a prediction: the
             best any stage 2 can do through this decoder;
- `direct`   the paper's "w/o DDIM" rung: the same denoiser network trained to map the speaker
             condition straight to the listener's latent (deterministic, `DirectRegression`);
- `ddim`     the full model, scored at each `--guidance` scale, after each of `--steps` optimiser
             steps (a learning curve: a modelling fault stays flat, undertraining climbs).

Stage 2 trains here in one process over latents encoded once by the frozen MMT (the same
`ReactDiff.latent_loss` the Ray Train loop runs, with the same optimiser, schedule, crop length,
EMA and LRS; each sample of a batch is cropped at its own start, where the Train loop crops a
batch at one), so a rung costs minutes. It is a diagnostic, not the training path: `reactdiff train stage2`
is. Example (the demo's store and stage-1 model; docs/quality.md has the runs):

    .venv/bin/python bench/quality_ladder.py --store demo_out/store \
        --stage1 demo_out/runs/<stage-1 run>/export/model.pt --config configs/demo.yaml \
        --rungs ceiling direct ddim --steps 480 1920 7680 --guidance 1 2 4 \
        --set model.diffusion.prediction=sample
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from reactdiff.config import load_config
from reactdiff.data import layout
from reactdiff.data.store import Store, person_of, to_samples
from reactdiff.evaluate import baselines, metrics, validation
from reactdiff.models.checkpoint import load_checkpoint
from reactdiff.models.diffusion import DirectRegression
from reactdiff.models.reactdiff import GENERATION_BATCH, ReactDiff

COLUMNS = ("FRCorr", "FRDist", "FRDiv", "FRVar", "FRSyn", "track_corr", "track_sd_ratio")
GROUPS = {"AU": layout.AU_SLICE, "VA": layout.VA_SLICE, "expression": layout.EXPR_SLICE}


def encode_split(model: ReactDiff, samples: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Speaker and listener latents (N, T, D) of every sample, through the frozen MMT."""
    streams = list(model.mmt.streams)
    speakers, listeners = [], []
    n = len(samples["speaker_clip"])
    for start in range(0, n, GENERATION_BATCH):
        part = {
            role: validation.tensors({s: samples[role][s][start : start + GENERATION_BATCH] for s in streams})
            for role in ("speaker", "listener")
        }
        speaker, listener = model.training_latents(part["speaker"], part["listener"])
        speakers.append(speaker)
        listeners.append(listener)
    return torch.cat(speakers), torch.cat(listeners)


def fit_lrs(model: ReactDiff, listener_latent: torch.Tensor, listener_clips: list[str]) -> None:
    """Each listener's first `reference_clips` clips of the train split, as the Train loop does."""
    clips: dict[str, list[torch.Tensor]] = {}
    model.lrs.keep_references(clips, listener_latent, [person_of(clip) for clip in listener_clips])
    model.lrs.fit(dict(sorted(clips.items())))


def crops(latents: tuple[torch.Tensor, ...], index: np.ndarray, frames: int, rng: np.random.Generator):
    """The same random crop of `frames` frames from each of `latents` per sampled row."""
    total = latents[0].shape[1]
    starts = rng.integers(0, total - frames + 1, size=len(index)) if frames < total else np.zeros(len(index), int)
    return [torch.stack([x[i, s : s + frames] for i, s in zip(index, starts, strict=True)]) for x in latents]


def score(model, samples: dict, appropriate: np.ndarray, alpha: int) -> validation.ReactionScores:
    return validation.score_reactions(model, samples, appropriate, alpha, seed=0, progress=False)


def save(folder: Path | None, label: str, emotion: np.ndarray) -> None:
    """`--save`: a rung's emotion predictions (N, α, T, 25) as <folder>/<label>.npy, for per-channel looks."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / (label.replace(" ", "_").replace(",", "").replace(":", "") + ".npy"), emotion)


def repeated_rows(label: str, emotion: np.ndarray, samples: dict, appropriate: np.ndarray, alpha: int) -> dict:
    preds = np.repeat(emotion[:, None], alpha, axis=1)
    return {
        label: metrics.compute_all(preds, samples["listener"]["emotion"], samples["speaker"]["emotion"], appropriate)
    }


def by_group(label: str, emotion: np.ndarray, listener: np.ndarray) -> str:
    """`--by-group`: where FRCorr is won or lost. Per channel group, the CCC of each reaction with
    its own listener (FRCorr's term before the max over appropriate reactions), and the
    reactions' spread over time over the listener's."""
    preds = emotion if emotion.ndim == 4 else emotion[:, None]
    own = np.stack([metrics.paired_ccc(preds[:, i], listener) for i in range(preds.shape[1])])  # (α, N, 25)
    spread = preds.std(axis=2).mean(axis=(0, 1)) / listener.std(axis=1).mean(axis=0)
    cells = [f"{own[..., s].mean():.3f} / {spread[s].mean():.2f}" for s in GROUPS.values()]
    return f"| {label} | " + " | ".join(cells) + " |"


def markdown(rows: list[tuple[str, dict[str, float]]]) -> str:
    lines = ["| rung | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for label, row in rows:
        lines.append(f"| {label} | " + " | ".join(f"{row[c]:.4g}" for c in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, help="feature store written by `reactdiff prepare`")
    parser.add_argument("--stage1", required=True, help="stage-1 checkpoint file (model.pt)")
    parser.add_argument("--config", default="configs/demo.yaml", help="recipe; its stage2: block applies")
    parser.add_argument(
        "--rungs", nargs="+", default=["ceiling", "direct", "ddim"], choices=["ceiling", "direct", "ddim"]
    )
    parser.add_argument("--steps", nargs="+", type=int, default=[480], help="score after these optimiser steps")
    parser.add_argument("--guidance", nargs="+", type=float, default=[None], help="guidance scales (default: recipe)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--curve-split", default="val", help="split scored at intermediate --steps")
    parser.add_argument("--alpha", type=int, default=10)
    parser.add_argument("--batch", type=int, default=0, help="samples per step (default: train.batch_size)")
    parser.add_argument("--json", type=Path, help="also write every row here")
    parser.add_argument(
        "--by-group", action="store_true", help="also print each row's own-listener CCC and spread per channel group"
    )
    parser.add_argument("--save", type=Path, help="also write each rung's emotion predictions here (.npy)")
    parser.add_argument("--set", nargs="+", default=[], dest="overrides", help="dotted key=value config overrides")
    args = parser.parse_args()

    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = load_config(args.config, args.overrides, stage=2)
    store = Store(args.store)
    mmt = load_checkpoint(args.stage1)
    streams = sorted(set(mmt.streams) | {"emotion", "3dmm"})
    split = {
        name: to_samples(store.read_split(name, streams=streams), streams)
        for name in {"train", args.split, args.curve_split}
    }
    appropriate = {name: store.appropriate(name) for name in split}
    train, test = split["train"], split[args.split]
    rows: list[tuple[str, dict[str, float]]] = []
    groups: list[str] = []  # --by-group lines, printed at the end

    mime = baselines.MimeBaseline().generate(test["speaker"], alpha=1)["emotion"][:, 0]
    rows += repeated_rows("B_Mime", mime, test, appropriate[args.split], args.alpha).items()
    ridge = baselines.RidgeBaseline.fit(train["speaker"], train["listener"]["emotion"], train["listener"]["3dmm"])
    ridge_emotion = ridge.predict(test["speaker"])[..., :25]
    rows += repeated_rows("B_Ridge", ridge_emotion, test, appropriate[args.split], args.alpha).items()
    if args.by_group:
        groups += [
            by_group(n, e, test["listener"]["emotion"]) for n, e in (("B_Mime", mime), ("B_Ridge", ridge_emotion))
        ]
    print(markdown(rows), flush=True)

    if "ceiling" in args.rungs:
        listener = {s: test["listener"][s] for s in mmt.streams}
        emotion = np.concatenate(
            [
                validation.reconstruct(mmt, validation.tensors({s: v[i : i + 8] for s, v in listener.items()}))[1]
                for i in range(0, len(test["speaker_clip"]), 8)
            ]
        )
        rows += repeated_rows(
            "ceiling: stage-1 reconstruction", emotion, test, appropriate[args.split], args.alpha
        ).items()
        if args.by_group:
            groups.append(by_group("ceiling: stage-1 reconstruction", emotion, test["listener"]["emotion"]))
        print(markdown(rows[-1:]), flush=True)

    for rung in [r for r in args.rungs if r != "ceiling"]:
        torch.manual_seed(cfg.train.seed)
        model = ReactDiff.from_stage1(load_checkpoint(args.stage1), cfg.model)
        if rung == "direct":
            model.diffusion = DirectRegression()
        started = time.perf_counter()
        speaker_latent, listener_latent = encode_split(model, train)
        fit_lrs(model, listener_latent, train["listener_clip"])
        print(
            f"[{rung}] encoded {len(speaker_latent)} train samples in {time.perf_counter() - started:.1f}s", flush=True
        )
        use_lrs = cfg.model.lrs.mode != "off"
        styles = model.lrs.styles_for([person_of(c) for c in train["listener_clip"]]) if use_lrs else None
        batch = args.batch or cfg.train.batch_size
        optimizer = torch.optim.AdamW(
            model.trainable_parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
        )
        from transformers import get_cosine_schedule_with_warmup

        total = max(args.steps)
        schedule = get_cosine_schedule_with_warmup(optimizer, cfg.train.warmup_steps, total)
        rng, generator = np.random.default_rng(cfg.train.seed), torch.Generator().manual_seed(cfg.train.seed)
        frames = cfg.data.crop_frames or speaker_latent.shape[1]
        model.train()
        started, loss_sum = time.perf_counter(), 0.0
        for step in range(1, total + 1):
            index = rng.choice(len(speaker_latent), size=batch, replace=False)
            speaker, listener = crops((speaker_latent, listener_latent), index, frames, rng)
            style = None if styles is None else type(styles)(styles.mean[index], styles.scale[index])
            loss, _ = model.latent_loss(speaker, listener, style, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), cfg.train.grad_clip)
            optimizer.step()
            schedule.step()
            model.update_ema()
            loss_sum += float(loss.detach())
            if step not in args.steps:
                continue
            seconds = time.perf_counter() - started
            print(f"[{rung}] step {step}: train loss {loss_sum / step:.4f}, {step / seconds:.1f} steps/s", flush=True)
            model.eval()
            final = step == total
            name = args.split if final else args.curve_split
            for scale in args.guidance if rung == "ddim" else [None]:
                if scale is not None:
                    model.diffusion.guidance_scale = scale
                scores = score(model, split[name], appropriate[name], args.alpha)
                for label, row in scores.rows.items():
                    shown = (
                        f"{rung} {label}, {step} steps" + (f", w={scale:g}" if scale is not None else "") + f" ({name})"
                    )
                    rows.append((shown, row))
                    save(args.save, shown, scores.predictions[label])
                    if args.by_group:
                        groups.append(by_group(shown, scores.predictions[label], split[name]["listener"]["emotion"]))
                    print(markdown(rows[-1:]), flush=True)
            model.train()
            started = time.perf_counter() - seconds

    print("\n" + markdown(rows))
    if args.by_group:
        print("\n| own-listener CCC / spread ratio | " + " | ".join(GROUPS) + " |\n" + "|---" * (len(GROUPS) + 1) + "|")
        print("\n".join(groups))
    if args.json:
        args.json.write_text(
            json.dumps(
                [{"rung": r, **{k: (v if math.isfinite(v) else None) for k, v in row.items()}} for r, row in rows],
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
