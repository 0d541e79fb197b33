"""`python -m jobs.tune --space tune_spaces/<space>.yaml --stage 1|2 --config <recipe> [key=value ...]`.

= `reactdiff tune` as a Ray job: a Ray Tune sweep whose trials are Ray Train runs, each logged
to MLflow. The space file travels with the working dir, so it may stay relative.
See jobs/__init__.py for the submit command and the path rules.
"""

from jobs import run_cli

if __name__ == "__main__":
    run_cli(["tune"])
