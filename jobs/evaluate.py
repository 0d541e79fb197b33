"""`python -m jobs.evaluate --model <uri> --out /abs/eval --config <recipe> [key=value ...]` as a Ray job.

= `reactdiff evaluate`: REACT2024 metrics of a model and the naive baselines. --out defaults to
the relative runs/eval, so a submitted job must name an absolute --out.
See jobs/__init__.py for the submit command and the path rules.
"""

from jobs import run_cli

if __name__ == "__main__":
    run_cli(["evaluate"], path_flags=("model", "out"))
