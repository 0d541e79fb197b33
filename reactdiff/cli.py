"""The `reactdiff` command. Each subcommand parses its flags and calls one entry point.

Heavy imports (torch, ray, mlflow) happen inside the subcommands so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys
from pathlib import Path

from reactdiff import console, ray_runtime
from reactdiff.errors import Refused, UserError
from reactdiff.serve import ServeOptions

EPILOG = """\
the pipeline, in order (the README's "Using it" runs exactly these):
  reactdiff synth    --config configs/demo.yaml --out data/corpus   # a synthetic REACT2024-layout corpus
  reactdiff prepare  --corpus data/corpus --out data/store          # Ray Data → Parquet feature store
  MMT=$(reactdiff train stage1 --config configs/demo.yaml)         # MMT autoencoder; prints its model URI
  reactdiff evaluate --model $MMT --split val --config configs/demo.yaml
  reactdiff promote  --model-name reactdiff-mmt --metric recon_FRDist --mode min --config configs/demo.yaml
  reactdiff train    stage2 --config configs/demo.yaml train.stage1_model=models:/reactdiff-mmt@champion
  reactdiff tune     --stage 2 --config configs/demo.yaml train.stage1_model=models:/reactdiff-mmt@champion
  reactdiff evaluate --model <uri> --split val --config configs/demo.yaml
  reactdiff promote  --metric FRCorr --mode max --config configs/demo.yaml
  reactdiff generate --model models:/reactdiff@champion --speaker data/store:test --out out/
  reactdiff serve-request --model models:/reactdiff@champion --speaker data/store:test --out request.json
  reactdiff serve    --model models:/reactdiff@champion          # Ray Serve: /react, /stream; follows the alias
  reactdiff render   out/ --corpus data/corpus --out reaction.mp4     # watch them beside the speaker
  reactdiff score    out/ --store data/store --split test             # REACT2024 metrics of any predictions
  reactdiff demo                                            # all of the above, end to end

configs are YAML recipes (configs/) plus dotted overrides: train.epochs=3 model.lrs.mode=off;
`reactdiff config --config configs/demo.yaml` prints every effective value.
the terminal shows stages, epochs and results; Ray's and MLflow's output goes to logs/ (-v: here).
"""


# Commands that start neither Ray nor MLflow print straight to the terminal, with no log file.
QUICK_COMMANDS = {"config", "synth"}


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML recipe (see configs/); defaults if omitted")
    # Overrides are the leftover key=value words (see main), so they may come before or after flags.
    parser.set_defaults(accepts_overrides=True)
    parser.epilog = "overrides: any number of key=value words, e.g. train.epochs=3 train.num_workers=2"


def _load(args, stage: int | None = None, sweep: bool = False) -> "ExperimentConfig":  # noqa: F821
    from reactdiff.config import load_config

    return load_config(args.config, args.overrides, stage=stage, sweep=sweep)


# ---- subcommands -------------------------------------------------------------------------------


def cmd_config(args) -> int:
    from reactdiff.config import flatten

    for key, value in flatten(_load(args)).items():
        print(f"{key} = {value}")
    return 0


def cmd_synth(args) -> int:
    from reactdiff.data.synth import write_recipe_corpus

    sizes = _load(args).synth
    for flag in ("dyads", "val_dyads", "test_dyads", "frames", "seed", "video_size"):
        if getattr(args, flag) is not None:
            setattr(sizes, flag, getattr(args, flag))
    summary = write_recipe_corpus(args.out, sizes)
    console.result(f"wrote a synthetic REACT2024 corpus to {args.out}: {summary}")
    return 0


def cmd_prepare(args) -> int:
    from reactdiff.data.prepare import PrepareOptions, prepare
    from reactdiff.data.store import Location

    facial = {}
    for item in args.facial or []:
        name, _, path = item.partition("=")
        facial[name] = Path(path)
    options = PrepareOptions(
        corpus=args.corpus,
        out=args.out,
        profile=args.profile,
        rows_per_part=args.rows_per_part,
        wav2vec2_dir=args.wav2vec2,
        facial_predictors=facial,
        appropriate_dir=args.appropriate,
        threshold=args.threshold,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        rebuild=args.rebuild,
    )
    manifest = prepare(options)  # PrepareError (nothing usable) is reported by main, status 1
    splits = ", ".join(f"{s}: {v['rows']} dyads" for s, v in manifest.splits.items())
    location = Location(args.out)
    console.result(
        f"feature store {location.shown} ({manifest.profile} profile, {manifest.frames} frames): "
        f"{splits}; {manifest.rejected_count} rejected (see {location.name('rejected.json')})"
    )
    return 0


def cmd_train(args) -> int:
    from reactdiff.train.progress import format_metrics
    from reactdiff.train.trainer import run_training

    stage = 1 if args.stage == "stage1" else 2
    cfg = _load(args, stage=stage)
    what = "the MMT autoencoder" if stage == 1 else "the latent conditional DDIM (MMT frozen)"
    console.say(
        f"train stage {stage}: {what}, {cfg.train.epochs} epochs on {cfg.train.num_workers} "
        f"{cfg.train.strategy} worker(s), run name {cfg.train.name}-stage{stage}"
    )
    result = run_training(cfg)
    console.say(
        f"done: run {result.run_id}, checkpoint {result.checkpoint}  " + "  ".join(format_metrics(result.metrics))
    )
    console.result(result.model_uri)
    return 0


def cmd_tune(args) -> int:
    from reactdiff.config import ConfigError
    from reactdiff.tune import load_space, plan_sweep, run_sweep

    cfg = _load(args, stage=args.stage, sweep=True)
    space_path = args.space or cfg.tune.space
    if space_path is None:
        raise ConfigError("no search space: give --space tune_spaces/<file>.yaml or set tune.space in the recipe")
    num_samples = args.num_samples or cfg.tune.num_samples
    # The space and the objectives are checked here, before Ray or MLflow start (run_sweep checks
    # them again, the window sizes also against the store's frame count).
    space = load_space(space_path, cfg, args.stage)
    plan_sweep(
        args.stage,
        space.objective,
        args.metric,
        args.mode,
        args.objectives,
        args.search,
        args.scheduler,
        args.promote,
        args.pick,
    )
    console.say(
        f"tune: {num_samples} stage-{args.stage} trials over {space_path}, {cfg.train.epochs} epochs each, "
        f"sweep name {cfg.train.name}"
    )
    sweep = run_sweep(
        cfg,
        space=space_path,
        stage=args.stage,
        num_samples=num_samples,
        search=args.search,
        scheduler=args.scheduler,
        metric=args.metric,
        mode=args.mode,
        objectives=args.objectives,
        promote=args.promote,
        pick=args.pick,
    )
    console.result(sweep.summary)
    if sweep.promotion is not None:
        console.result(sweep.promotion.summary())
    return 0


def cmd_evaluate(args) -> int:
    from reactdiff.evaluate.run import evaluate

    cfg = _load(args)
    evaluation = evaluate(
        cfg,
        model=args.model,
        split=args.split,
        mode=args.mode,
        alpha=args.alpha,
        out_dir=args.out,
        max_samples=args.max_samples,
        precision=args.precision,
        videos=args.videos,
    )
    console.result(evaluation.summary())
    console.say(f"tables, plots and videos: {evaluation.out_dir} (and in MLflow run {evaluation.run_id})")
    return 0


def cmd_render(args) -> int:
    from reactdiff.render import render

    try:
        path = render(
            args.source,
            args.out,
            speaker=args.speaker,
            clip=args.clip,
            corpus_root=args.corpus,
            alpha=args.alpha,
            seed=args.seed,
            tracking_uri=args.tracking_uri,
            truth=not args.no_truth,
            face_size=args.face_size,
            renderer=args.renderer,
            still=args.still,
        )
    except (ValueError, FileNotFoundError) as err:
        raise Refused(str(err)) from None
    console.result(f"wrote {path}")
    return 0


def cmd_score(args) -> int:
    from reactdiff import tracking
    from reactdiff.evaluate.score import load_predictions, score, truth_from_corpus, truth_from_store

    if (args.corpus is None) == (args.store is None):
        raise Refused("give the ground truth as exactly one of --corpus ROOT or --store DIR (with --split)")
    try:
        truth = (
            truth_from_corpus(args.corpus, args.split, args.appropriate)
            if args.corpus
            else truth_from_store(args.store, args.split, args.appropriate)
        )
        predictions = load_predictions(args.predictions, truth, args.threedmm, args.clips)
    except ValueError as err:  # ScoreError, and the corpus reader's, store's and matrix loader's refusals
        raise Refused(str(err)) from None
    train = None
    if args.baselines:
        try:  # B_Ridge is fitted on the train split of the same ground truth
            train = (
                truth_from_corpus(args.corpus, "train", with_matrix=False)
                if args.corpus
                else truth_from_store(args.store, "train", with_matrix=False)
            )
        except ValueError as err:
            console.say(f"note: B_Ridge left out, it is fitted on the train split, which could not be read: {err}")
    rows, markdown, files = score(
        predictions, truth, args.out, label=args.label, with_baselines=args.baselines, train=train
    )
    console.result(
        f"REACT2024 metrics of {predictions.source} (α={predictions.emotion.shape[1]}) on {truth.source} "
        f"({len(truth.listener)} samples):\n\n{markdown}"
    )
    console.say(f"tables and plots: {args.out}")
    if args.tracking_uri:
        run_id = tracking.log_scoring(
            args.tracking_uri,
            args.experiment,
            f"score-{args.label}",
            rows,
            args.label,
            files,
            f"evaluation/{args.split}-score",
            {tracking.EVAL_SPLIT_TAG: args.split, tracking.EVAL_MODE_TAG: "score"},
        )
        console.result(f"logged to MLflow run {run_id} ({args.tracking_uri}, experiment '{args.experiment}')")
    return 0


def cmd_promote(args) -> int:
    from reactdiff import registry

    cfg = _load(args)
    uri = args.tracking_uri or cfg.tracking.tracking_uri
    name = args.model_name or cfg.tracking.registered_model
    if args.rollback:
        version = registry.rollback(uri, name)
        console.result(f"champion of {name} rolled back to version {version}")
        return 0
    result = registry.promote(
        uri,
        args.experiment or cfg.tracking.experiment,
        args.metric,
        args.mode,
        name,
        split=args.split,
        force=args.force,
    )
    console.result(result.summary())
    return 0


def cmd_generate(args) -> int:
    from reactdiff.generate import generate_to_dir

    files = generate_to_dir(
        args.model,
        args.speaker,
        args.out,
        alpha=args.alpha,
        mode=args.mode,
        listener_ref=args.listener_ref,
        seed=args.seed,
        tracking_uri=args.tracking_uri,
        max_clips=args.max_clips,
    )
    console.result(f"wrote {len(files)} files under {args.out}")
    return 0


def cmd_serve_request(args) -> int:
    from reactdiff.generate import serving_request

    body = serving_request(
        args.model,
        args.speaker,
        max_clips=args.max_clips,
        alpha=args.alpha,
        mode=args.mode,
        seed=args.seed,
        tracking_uri=args.tracking_uri,
    )
    args.out.write_text(json.dumps(body))
    console.result(f"wrote the request body for {args.model} to {args.out}")
    return 0


def cmd_serve(args) -> int:
    import os
    import signal
    import threading

    from mlflow.exceptions import MlflowException

    from reactdiff.serve import app as serve

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeOptions)}
    given["tracking_uri"] = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    given["data_root"] = str(args.data_root.resolve()) if args.data_root else None
    options = ServeOptions(**given)
    try:
        names = serve.check_source(options)
    except (ValueError, OSError, MlflowException) as err:
        raise Refused(f"--model {args.model}: {err}") from None
    console.say(
        f"serve: {args.model} names {names}; replicas {args.min_replicas}-{args.max_replicas}, "
        f"{args.num_cpus} CPU each" + (f", alias polled every {args.poll_s} s" if "@" in args.model else "")
    )
    url = serve.deploy(options)
    console.result(url)
    console.say("serving: POST /react, WebSocket /stream, GET /model; Ctrl-C (or SIGTERM) stops it")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.undeploy()
    console.say("stopped")
    return 0


def cmd_demo(args) -> int:
    from reactdiff.demo import run_demo

    return run_demo(workdir=args.workdir, size=args.size)


# ---- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reactdiff",
        description="Train, sweep, evaluate, promote and serve ReactDiff facial-reaction models on Ray.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # -v and --log-dir work before or after the subcommand (the subcommand's copy must not reset
    # the value given before it, hence SUPPRESS).
    common = argparse.ArgumentParser(add_help=False)
    for target, default in ((parser, None), (common, argparse.SUPPRESS)):
        target.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=default or False,
            help="print everything (Ray, MLflow and library output, debug logging) instead of "
            "writing it to the log file",
        )
        target.add_argument(
            "--log-dir",
            type=Path,
            default=default or Path("logs"),
            help="where the log file goes (default logs/; the demo: <workdir>/logs)",
        )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser = functools.partial(sub.add_parser, parents=[common])

    p = add_parser("config", help="print the effective configuration (defaults + recipe + overrides)")
    _add_config_args(p)
    p.set_defaults(func=cmd_config)

    p = add_parser(
        "synth",
        help="write a seeded synthetic corpus in the REACT2024 layout",
        description="Write a synthetic corpus (WAV, Emotion CSV, 3DMM NPY, MP4, split CSVs) "
        "whose listeners react to their speakers with a lag, a personal style and "
        "several reaction modes, so models have something real to learn.",
    )
    p.add_argument("--out", type=Path, required=True, help="new, empty folder for the corpus")
    # Sizes come from the recipe's synth: section (`reactdiff config` shows the defaults); flags win.
    p.add_argument("--dyads", type=int, help="train dyads (split CSV rows)")
    p.add_argument("--val-dyads", type=int)
    p.add_argument("--test-dyads", type=int)
    p.add_argument("--frames", type=int, help="frames used per clip (files hold one more, like REACT2024)")
    p.add_argument("--seed", type=int)
    p.add_argument("--video-size", type=int, help="pixels of the square MP4s")
    _add_config_args(p)
    p.set_defaults(func=cmd_synth)

    p = add_parser(
        "prepare",
        help="extract per-frame features into a Parquet feature store (Ray Data)",
        description="Read a REACT2024-layout corpus, skip and report bad clips "
        "(<out>/rejected.json), and write one Parquet row per dyad plus manifest.json "
        "and the appropriate-reaction matrices. Exit status 1 only when nothing usable remains.",
    )
    p.add_argument("--corpus", type=Path, required=True, help="corpus root holding train.csv/val.csv/test.csv")
    p.add_argument(
        "--out",
        required=True,
        help="store folder or pyarrow.fs URI (s3://bucket/prefix); a re-run with the same settings resumes it, skipping finished parts",
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="delete --out first (needed when settings or extractors changed since it was written)",
    )
    p.add_argument(
        "--profile",
        choices=["lite", "paper"],
        default="lite",
        help="lite: the person's Emotion+3DMM and MFCC; paper: adds wav2vec2 and facial predictors",
    )
    p.add_argument("--wav2vec2", type=Path, help="paper profile: local wav2vec2 folder (save_pretrained)")
    p.add_argument(
        "--facial",
        nargs="*",
        metavar="NAME=PATH",
        help="paper profile: TorchScript predictors va=<.pt> au=<.pt> fe=<.pt>",
    )
    p.add_argument(
        "--appropriate",
        type=Path,
        help="folder of given matrices <split>.npy (2R×2R); computed from speaker similarity if omitted",
    )
    p.add_argument(
        "--threshold", type=float, default=0.6, help="similarity threshold of the computed appropriateness matrix"
    )
    p.add_argument("--rows-per-part", type=int, default=8, help="dyads per Parquet file")
    p.add_argument("--workers", type=int, default=2, help="parallel Ray Data extraction actors")
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        help="paper profile: GPU fraction per extraction actor (0: CPU); default: the "
        "cluster's GPUs shared among the workers, at most one each, or CPU when it has none",
    )
    p.set_defaults(func=cmd_prepare)

    p = add_parser(
        "train",
        help="train stage 1 (MMT) or stage 2 (latent DDIM) with Ray Train",
        description="Run a Ray Train TorchTrainer (DDP or DeepSpeed). Re-running the same "
        "train.name resumes from its latest checkpoint and MLflow run.",
    )
    p.add_argument("stage", choices=["stage1", "stage2"])
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = add_parser(
        "tune",
        help="Ray Tune sweep over a YAML search space (tune_spaces/), ranked by reaction quality",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Every trial is a Ray Train run scored on val in units that mean the same in every trial:\n"
        "  stage 1: reconstructions (val_recon_FRDist, val_recon_3dmm_mse, val_recon_emotion_l1,\n"
        "           val_recon_au_f1, val_recon_va_ccc); default objective val_recon_FRDist:min\n"
        "  stage 2: REACT2024 metrics of generated reactions, global style (val_FRDist, val_FRCorr,\n"
        "           val_FRDiv, val_FRDvs, val_FRVar, val_FRSyn, val_FRSyn_all, val_FRRea) and LRS style\n"
        "           (val_LRS_FRDist, ...); default objective val_FRCorr:max (a flat output that ignores\n"
        "           the speaker wins FRDist, not FRCorr)\n"
        "val_loss is reported too, but its scale moves with loss weights, T, window and LRS.\n\n"
        "examples:\n"
        "  reactdiff tune --space tune_spaces/stage2.yaml --stage 2 --num-samples 8 train.stage1_model=<ckpt>\n"
        "  reactdiff tune --space tune_spaces/stage2.yaml --stage 2 --objectives val_FRDist:min,val_FRDiv:max\n"
        "  ... --promote                  evaluate the best trial on val (α = 10) and promote it\n"
        "  ... --objectives ... --promote --pick <trial>   promote a Pareto-front member",
    )
    p.add_argument("--space", type=Path, help="search space YAML (default: the recipe's tune.space)")
    p.add_argument(
        "--stage",
        type=int,
        choices=[1, 2],
        required=True,
        help="the stage trained; the recipe's stage<k>: and sweep: blocks apply",
    )
    p.add_argument("--num-samples", type=int, help="trials (default: the recipe's tune.num_samples)")
    p.add_argument(
        "--search",
        choices=["random", "optuna"],
        default="random",
        help="several objectives always use Optuna's NSGA-II",
    )
    p.add_argument(
        "--scheduler",
        choices=["asha", "none"],
        default=None,
        help="default: asha for one objective (rungs at train.eval_every·2^k epochs); "
        "none for several (ASHA does not apply to a Pareto search)",
    )
    p.add_argument(
        "--metric", help="the metric to rank by (default: the space's sweep: entry, else the stage default above)"
    )
    p.add_argument("--mode", choices=["min", "max"], help="must agree with the metric's direction")
    p.add_argument("--objectives", help="several metrics, name:min|max separated by commas: a Pareto search")
    p.add_argument(
        "--promote",
        action="store_true",
        help="after the sweep, evaluate the winner on val with α = 10 and register it as challenger "
        "(champion if it beats the current one)",
    )
    p.add_argument(
        "--pick",
        help="multi-objective sweeps: the Pareto-front trial to promote: its name, its id, "
        "or its row in the printed front table (1 = first)",
    )
    _add_config_args(p)
    p.set_defaults(func=cmd_tune)

    p = add_parser("evaluate", help="REACT2024 metrics for a model, the four naive baselines and B_Ridge")
    p.add_argument("--model", help="checkpoint path or MLflow URI; omit to evaluate the baselines only")
    p.add_argument("--split", default="test")
    p.add_argument("--mode", choices=["offline", "online"], default="offline")
    p.add_argument("--alpha", type=int, default=10, help="reactions per speaker")
    p.add_argument("--max-samples", type=int, default=0, help="evaluate the first N samples only (0: all)")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="the denoiser's precision while sampling; bf16 is ~1.7x faster on CPUs with native bf16 "
        "(AVX-512 BF16/AMX) and moves the metrics slightly; fp32 is the reference",
    )
    p.add_argument(
        "--videos",
        type=int,
        default=2,
        help="stage-2 models: this many seeded samples as MP4s (speaker video and audio beside "
        "3 reactions and the real listener), logged next to the plots; needs data.corpus=<corpus root>",
    )
    p.add_argument("--out", type=Path, default=Path("runs/eval"), help="tables and plots")
    _add_config_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = add_parser(
        "promote",
        help="register the best run and move the champion alias if it is better",
        description="Pick the best finished run on --metric, register its model, alias it "
        "'challenger', and move 'champion' only if it beats the current one (or --force). "
        "Undo with: reactdiff promote --rollback",
    )
    p.add_argument("--experiment")
    p.add_argument(
        "--metric",
        default="FRCorr",
        help="the evaluation metric runs are compared by (default FRCorr: FRDist alone rewards flat outputs "
        "that ignore the speaker); stage-1 MMTs: recon_FRDist",
    )
    p.add_argument("--mode", choices=["min", "max"], default="max", help="whether lower or higher --metric is better")
    p.add_argument("--split", default="val")
    p.add_argument("--model-name")
    p.add_argument("--tracking-uri")
    p.add_argument("--force", action="store_true")
    p.add_argument("--rollback", action="store_true", help="move champion back to the previous champion")
    _add_config_args(p)
    p.set_defaults(func=cmd_promote)

    p = add_parser("generate", help="generate listener reactions in REACT2024 formats")
    p.add_argument("--model", required=True, help="checkpoint or MLflow URI, e.g. models:/reactdiff@champion")
    p.add_argument(
        "--speaker",
        required=True,
        help="<store dir>:<split> for every speaker of a split, or a corpus clip file "
        "(e.g. <root>/test/Audio_files/NoXI/<session>/Expert_video/3.wav; lite-profile models)",
    )
    p.add_argument("--alpha", type=int, default=10)
    p.add_argument("--mode", choices=["offline", "online"], default="offline")
    p.add_argument("--listener-ref", nargs="*", help="reference clips of the target listener (LRS)")
    p.add_argument("--seed", type=int)
    p.add_argument("--tracking-uri")
    p.add_argument(
        "--max-clips", type=int, default=0, help="generate for the first N speaker clips of a split only (0: all)"
    )
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_generate)

    p = add_parser(
        "serve-request",
        help="write a JSON request body for `mlflow models serve` of a model",
        description="Speaker features from a store split or a corpus clip, in the JSON body "
        "that the served pyfunc takes: POST it to http://<host>:<port>/invocations "
        "(README, 'Serving the champion').",
    )
    p.add_argument(
        "--model", required=True, help="the served model (its streams are sent), e.g. models:/reactdiff@champion"
    )
    p.add_argument("--speaker", required=True, help="<store dir>:<split> or a corpus clip file, as for generate")
    p.add_argument("--max-clips", type=int, default=1, help="the first N speaker clips (0: all)")
    p.add_argument("--alpha", type=int, default=10)
    p.add_argument("--mode", choices=["offline", "online"], default="offline")
    p.add_argument("--seed", type=int)
    p.add_argument("--tracking-uri")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_serve_request)

    p = add_parser(
        "serve",
        help="serve reactions over HTTP and WebSocket with Ray Serve, following a registry alias",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A Ray Serve application (reactdiff/serve/app.py) on this machine's Ray runtime, or the\n"
        "cluster in RAY_ADDRESS. It serves the model the alias names and polls the registry every\n"
        "--poll-s seconds: when `reactdiff promote` moves the alias, replicas load the new version and\n"
        "switch to it; requests and streams already running finish on the version they started with.\n\n"
        '  POST /react    speaker features (the body of `reactdiff serve-request`, {"inputs": ..., "params": ...})\n'
        '                 or {"speaker": "<store>:<split>" | "<clip file>"} under --data-root; answers the\n'
        '                 REACT2024 layout as JSON, or .npy / .npz ("format", or the Accept header)\n'
        '  WS   /stream   {"alpha": 10, "seed": 0}, then one speaker window per message; each is answered\n'
        "                 with the next listener window (online mode)\n"
        "  GET  /model    the registered name, version and run id served\n\n"
        "Bad input is answered 4xx with the reason; over the size limits, 413. Prints the URL; runs until\n"
        "Ctrl-C or SIGTERM (`ray job stop` for jobs.serve), then deletes the app.",
        epilog="examples:\n"
        "  reactdiff serve                                   # models:/reactdiff@champion on 127.0.0.1:8000\n"
        "  reactdiff serve --data-root data --port 8001      # requests may name data/store:test etc.\n"
        "  reactdiff serve --model models:/reactdiff/3 --max-replicas 4 --num-cpus 2\n"
        "  curl -s http://127.0.0.1:8000/model\n"
        '(README, "Serving with Ray Serve", has curl and a Python WebSocket client)',
    )
    serving = ServeOptions()  # the defaults
    p.add_argument(
        "--model",
        default=serving.model,
        help="models:/<name>@<alias> (followed), models:/<name>/<version>, runs:/<id>/model or a "
        "checkpoint file (default: %(default)s)",
    )
    p.add_argument("--tracking-uri", help="the MLflow server of the registry (default: $MLFLOW_TRACKING_URI)")
    p.add_argument(
        "--host",
        default=serving.host,
        help="address Serve's HTTP proxy binds (default %(default)s; 0.0.0.0 exposes it to the network)",
    )
    p.add_argument("--port", type=int, default=serving.port, help="default %(default)s")
    p.add_argument(
        "--data-root",
        type=Path,
        help="requests may name speaker paths under this folder (stores, corpus clips); without it, features only",
    )
    p.add_argument(
        "--poll-s", type=float, default=serving.poll_s, help="seconds between looks at the alias (default %(default)s)"
    )
    p.add_argument("--min-replicas", type=int, default=serving.min_replicas, help="default %(default)s")
    p.add_argument(
        "--max-replicas",
        type=int,
        default=serving.max_replicas,
        help="the autoscaler adds replicas up to this under load (default %(default)s)",
    )
    p.add_argument(
        "--target-ongoing-requests",
        type=float,
        default=serving.target_ongoing_requests,
        help="requests (an open stream is one) per replica the autoscaler aims for (default %(default)s)",
    )
    p.add_argument(
        "--max-ongoing-requests",
        type=int,
        default=serving.max_ongoing_requests,
        help="requests and open streams one replica takes at once; more wait in Serve's queue (default %(default)s)",
    )
    p.add_argument(
        "--num-cpus",
        type=float,
        default=serving.num_cpus,
        help="CPUs per replica, its torch threads (default %(default)s)",
    )
    p.add_argument(
        "--max-clips",
        type=int,
        default=serving.max_clips,
        help="the most speaker clips (B) in one /react request (default %(default)s)",
    )
    p.add_argument(
        "--max-frames",
        type=int,
        default=serving.max_frames,
        help="the most frames (T) per clip of one /react request (default %(default)s)",
    )
    p.add_argument(
        "--max-stream-frames",
        type=int,
        default=serving.max_stream_frames,
        help="the most listener frames one /stream generates (default %(default)s: 5 minutes at 25 fps)",
    )
    p.add_argument(
        "--max-body-mb", type=float, default=serving.max_body_mb, help="the largest /react body (default %(default)s)"
    )
    p.set_defaults(func=cmd_serve)

    p = add_parser(
        "render",
        help="an MP4 of a speaker (real video and audio) beside drawn faces of the reactions",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The faces are drawn from the 25 emotion values and the 6 pose values of the 3DMM\n"
        "(reactdiff/render.py documents which channel moves which feature); a bar strip under each face shows\n"
        "valence, arousal and the 8 expression probabilities. α reactions form a grid; the real listener\n"
        "(the speaker's partner in the split CSV) is one more face. 25 fps, H.264 + AAC: plays in browsers.",
        epilog="examples:\n"
        "  reactdiff generate --model models:/reactdiff@champion --speaker data/store:test --out out/ --max-clips 2\n"
        "  reactdiff render out/ --corpus data/corpus --out reaction.mp4             # out/'s first clip\n"
        "  reactdiff render out/ --corpus data/corpus --clip NoXI/001_test/Expert_video/1 --out r.mp4\n"
        "  reactdiff render models:/reactdiff@champion --out r.mp4 \\\n"
        "      --speaker data/corpus/test/Audio_files/NoXI/001_test/Expert_video/1.wav\n"
        "  reactdiff render out/ --corpus data/corpus --renderer mypkg.faceverse:render --out mesh.mp4\n"
        "      (a 3DMM mesh renderer of your own: f(emotion (25,), 3dmm (58,), size) -> (size, size, 3) uint8)",
    )
    p.add_argument("source", help="a folder written by `reactdiff generate`, or a model (checkpoint or MLflow URI)")
    p.add_argument("--out", type=Path, required=True, help="the MP4 to write")
    p.add_argument("--speaker", help="with a model: the speaker, a corpus clip file outside the Emotion tree")
    p.add_argument("--clip", help="with a folder: the speaker clip to render (default: its first)")
    p.add_argument("--corpus", type=Path, help="the corpus root, where the folder's speakers came from a store split")
    p.add_argument("--alpha", type=int, default=10, help="with a model: reactions to generate")
    p.add_argument("--seed", type=int, default=0, help="with a model: the generation seed")
    p.add_argument("--tracking-uri", help="with an MLflow model URI: the tracking server")
    p.add_argument("--no-truth", action="store_true", help="leave the real listener out")
    p.add_argument("--face-size", type=int, default=128, help="pixels of each face")
    p.add_argument("--still", type=int, metavar="FRAME", help="write this frame as a PNG instead of the video")
    p.add_argument(
        "--renderer",
        default="drawn",
        help="'drawn' (built in) or package.module:function of your own (e.g. a FaceVerse mesh renderer)",
    )
    p.set_defaults(func=cmd_render)

    p = add_parser(
        "score",
        help="REACT2024 metrics for predictions made elsewhere (the official shapes)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score emotion predictions (N, α, T, 25) against a split's ground truth, with the same\n"
        "table, JSON and plots as `evaluate`. Sample order: with R rows in <split>.csv, sample s < R is row s\n"
        "as written (speaker_path speaks), sample R + s is row s role-swapped (listener_path speaks).\n"
        "Refused, naming the file and field: a wrong shape or sample count, NaN/inf, an AU or expression\n"
        "probability outside [0, 1], valence/arousal outside [-1, 1], a matrix of the wrong size, clips\n"
        "that do not match the split. Details: docs/scoring.md.",
        epilog="examples:\n"
        "  reactdiff score emotion.npy --corpus /data/REACT2024 --split test \\\n"
        "      --appropriate /data/REACT2024/neighbour_emotion_test.npy --out score_out/\n"
        "  reactdiff score preds.pt --threedmm 3dmm.npy --corpus /data/REACT2024 --split val --clips order.txt\n"
        "  reactdiff score out/ --store data/store --split test          # a folder written by `generate`\n"
        "  reactdiff score csv_folder/ --corpus data/corpus --split test --baselines \\\n"
        "      --tracking-uri http://127.0.0.1:5000 --label my-team   # also a run of its own in MLflow",
    )
    p.add_argument(
        "predictions",
        type=Path,
        help="emotion .npy/.pt (N, α, T, 25), a `generate` folder, or a folder of per-clip CSVs",
    )
    p.add_argument("--corpus", type=Path, help="ground truth: a REACT2024-layout corpus root")
    p.add_argument("--store", help="ground truth: a feature store, folder or URI (its matrix included)")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--appropriate",
        type=Path,
        help="the (N, N) appropriateness matrix (.npy/.csv), e.g. the official neighbour_emotion_test.npy; "
        "default: the store's, or for a corpus computed from speaker similarity like `prepare`",
    )
    p.add_argument("--threedmm", type=Path, help="3DMM predictions (N, α, T, 58), checked for shape and values")
    p.add_argument(
        "--clips",
        type=Path,
        help="the speaker clip of each prediction row, one per line, to match an array to the split",
    )
    p.add_argument("--label", default="predictions", help="the row name in the table and MLflow")
    p.add_argument(
        "--baselines",
        action="store_true",
        help="add B_Random, B_Mime and B_Ridge rows (each costs a scoring; "
        "B_Ridge is fitted on the train split of the same --corpus or --store)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/score"), help="tables and plots")
    p.add_argument("--tracking-uri", help="log the results to this MLflow server as a run of its own")
    p.add_argument("--experiment", default="reactdiff-score", help="the MLflow experiment of that run")
    p.set_defaults(func=cmd_score)

    p = add_parser(
        "demo",
        help="the whole pipeline on a synthetic corpus, locally, end to end",
        description="synth → prepare → stage 1 → stage 2 → sweep → evaluate → promote → "
        "generate from models:/…@champion, on a local Ray runtime with an MLflow server "
        "on a SQLite file (127.0.0.1). Ends with the metric table against the naive "
        "baselines, the real-time factor of online generation, where the plots, a reaction "
        "video and the MLflow database are, and the command that opens the MLflow UI. The full size "
        "takes about 15 minutes on 2 CPU cores.",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("demo_out"),
        help="folder for the corpus, store, checkpoints, MLflow database, plots and "
        "generated reactions (its demo outputs are replaced)",
    )
    p.add_argument(
        "--size",
        choices=["full", "small"],
        default="full",
        help="full: the recipe in configs/demo.yaml at learning size; small: a minute-long "
        "smoke run (what the end-to-end test runs)",
    )
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    ray_runtime.bind_local_ray_to_loopback()  # first: before anything imports ray
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    bad = [word for word in extra if "=" not in word or word.startswith("-")]
    if bad or (extra and not getattr(args, "accepts_overrides", False)):
        parser.error(
            f"unrecognized arguments: {' '.join(bad or extra)} (overrides are key=value words, e.g. train.epochs=3)"
        )
    args.overrides = extra
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log_dir = args.workdir / "logs" if args.command == "demo" else args.log_dir
    log = None
    try:
        if args.command in QUICK_COMMANDS:
            return args.func(args)
        with console.session(log_dir, args.command, args.verbose, expected=(UserError,)) as log:
            return args.func(args)
    except UserError as err:  # its message says what to do: printed alone, the traceback only with -v
        logging.getLogger(__name__).debug("where the error below was raised", exc_info=True)
        print(f"error: {err}" + (f"\n(log: {log})" if log else ""), file=sys.stderr)
        return err.exit_status


if __name__ == "__main__":
    sys.exit(main())
