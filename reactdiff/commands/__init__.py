"""The `reactdiff` commands, one module each: its flags beside the code that runs it.

A command module has `register(add_parser) -> ArgumentParser`, which makes its subparser with
`add_parser` (argparse's, with the common -v/--log-dir flags) and adds its flags, and `run(args) ->
int`, the exit status. Optional: `QUICK = True` for a command that starts neither Ray nor MLflow
(it prints straight to the terminal, no log file), and `log_dir(args)` where its log goes elsewhere
than --log-dir. Heavy imports (torch, ray, mlflow) happen inside `run`, so `--help` stays instant.
"""

from __future__ import annotations

from reactdiff.commands import (
    config,
    demo,
    evaluate,
    generate,
    prepare,
    promote,
    render,
    score,
    serve,
    serve_request,
    synth,
    train,
    tune,
)

# In the order of `reactdiff --help` (the pipeline's).
COMMANDS = [config, synth, prepare, train, tune, evaluate, promote, generate, serve_request, serve, render, score, demo]
