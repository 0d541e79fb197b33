"""`python -m jobs.train_stage1 --config <recipe> [key=value ...]` = `reactdiff train stage1` as a Ray job.

Trains the MMT autoencoder with Ray Train and logs the run and its pyfunc model to MLflow.
Re-submitting with the same train.name resumes from the latest checkpoint in train.storage_path.
See jobs/__init__.py for the submit command and the path rules.
"""

from jobs import run_cli

if __name__ == "__main__":
    run_cli(["train", "stage1"])
