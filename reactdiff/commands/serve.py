"""`reactdiff serve`: reactions over HTTP and WebSocket with Ray Serve, following a registry alias."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from reactdiff import console
from reactdiff.errors import Refused
from reactdiff.serve import ServeOptions

DESCRIPTION = """\
A Ray Serve application (reactdiff/serve/app.py) on this machine's Ray runtime, or the
cluster in RAY_ADDRESS. It serves the model the alias names and polls the registry every
--poll-s seconds: when `reactdiff promote` moves the alias, replicas load the new version and
switch to it; requests and streams already running finish on the version they started with.

  POST /react    speaker features (the body of `reactdiff serve-request`, {"inputs": ..., "params": ...})
                 or {"speaker": "<store>:<split>" | "<clip file>"} under --data-root; answers the
                 REACT2024 layout as JSON, or .npy / .npz ("format", or the Accept header)
  WS   /stream   {"alpha": 10, "seed": 0}, then one speaker window per message; each is answered
                 with the next listener window (online mode)
  GET  /model    the registered name, version and run id served

Bad input is answered 4xx with the reason; over the size limits, 413. Prints the URL; runs until
Ctrl-C or SIGTERM (`ray job stop` for jobs.serve), then deletes the app."""
EPILOG = """\
examples:
  reactdiff serve                                   # models:/reactdiff@champion on 127.0.0.1:8000
  reactdiff serve --data-root data --port 8001      # requests may name data/store:test etc.
  reactdiff serve --model models:/reactdiff/3 --max-replicas 4 --num-cpus 2
  curl -s http://127.0.0.1:8000/model
(README, "Serving with Ray Serve", has the curl requests; docs/serving.md a Python WebSocket client)"""
DEFAULTS = ServeOptions()
# (flag, type, help) of each ServeOptions field set by a flag of its own name; its default is ServeOptions'.
OPTION_FLAGS = [
    (
        "model",
        str,
        "models:/<name>@<alias> (followed), models:/<name>/<version>, runs:/<id>/model or a checkpoint file",
    ),
    ("host", str, "address Serve's HTTP proxy binds (0.0.0.0 exposes it to the network)"),
    ("port", int, "the HTTP port"),
    ("poll_s", float, "seconds between looks at the alias"),
    ("min_replicas", int, "replicas kept running when idle"),
    ("max_replicas", int, "the autoscaler adds replicas up to this under load"),
    ("target_ongoing_requests", float, "requests (an open stream is one) per replica the autoscaler aims for"),
    ("max_ongoing_requests", int, "requests and open streams one replica takes at once; more wait in Serve's queue"),
    ("num_cpus", float, "CPUs per replica, its torch threads"),
    ("max_clips", int, "the most speaker clips (B) in one /react request"),
    ("max_frames", int, "the most frames (T) per clip of one /react request"),
    ("max_stream_frames", int, "the most listener frames one /stream generates (the default: 5 minutes at 25 fps)"),
    ("max_body_mb", float, "the largest /react body"),
]


def register(add_parser) -> argparse.ArgumentParser:
    parser = add_parser(
        "serve",
        help="serve reactions over HTTP and WebSocket with Ray Serve, following a registry alias",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    for field, kind, text in OPTION_FLAGS:
        parser.add_argument(
            f"--{field.replace('_', '-')}",
            type=kind,
            default=getattr(DEFAULTS, field),
            help=f"{text} (default %(default)s)",
        )
    parser.add_argument("--tracking-uri", help="the MLflow server of the registry (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument(
        "--data-root",
        type=Path,
        help="requests may name speaker paths under this folder (stores, corpus clips); without it, features only",
    )
    return parser


def run(args) -> int:
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
