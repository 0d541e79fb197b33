"""The `reactdiff` command: parses the command line and hands it to one command of
`reactdiff.commands`; a user error (`errors.UserError`) is printed alone, with its exit status.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path

from reactdiff import console, ray_runtime
from reactdiff.commands import COMMANDS
from reactdiff.errors import UserError

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
    for command in COMMANDS:
        command.register(add_parser).set_defaults(command_module=command)
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
    command = args.command_module
    log_dir = command.log_dir(args) if hasattr(command, "log_dir") else args.log_dir
    log = None
    try:
        if getattr(command, "QUICK", False):
            return command.run(args)
        with console.session(log_dir, args.command, args.verbose, expected=(UserError,)) as log:
            return command.run(args)
    except UserError as err:  # its message says what to do: printed alone, the traceback only with -v
        logging.getLogger(__name__).debug("where the error below was raised", exc_info=True)
        print(f"error: {err}" + (f"\n(log: {log})" if log else ""), file=sys.stderr)
        return err.exit_status


if __name__ == "__main__":
    sys.exit(main())
