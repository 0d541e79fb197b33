"""`python -m jobs.prepare --corpus /abs/corpus --out /abs/store [flags]` = `reactdiff prepare` as a Ray job.

Builds the Parquet feature store with Ray Data on the cluster; corpus and store must be on
storage every node sees. See jobs/__init__.py for the submit command and the path rules.
"""

from jobs import run_cli

if __name__ == "__main__":
    run_cli(["prepare"], path_flags=("corpus", "out", "appropriate"))
