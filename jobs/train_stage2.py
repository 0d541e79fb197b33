"""`python -m jobs.train_stage2 --config <recipe> train.stage1_model=<uri> [key=value ...]` as a Ray job.

= `reactdiff train stage2`: the latent DDIM on a frozen stage-1 model, given as an MLflow URI
(runs:/<id>/model, models:/reactdiff-mmt@champion) or an absolute checkpoint path.
See jobs/__init__.py for the submit command and the path rules.
"""

from jobs import run_cli

if __name__ == "__main__":
    run_cli(["train", "stage2"])
