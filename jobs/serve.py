"""`python -m jobs.serve --model models:/reactdiff@champion [--data-root /abs/data] ...` as a Ray job.

= `reactdiff serve`: deploys the Ray Serve app on the cluster the job runs on and keeps it until the
job is stopped (`ray job stop <id>` deletes the app). --data-root must be absolute on storage the
replicas' nodes see. See jobs/__init__.py for the submit command and the path rules.
"""

from jobs import run_cli

if __name__ == "__main__":
    run_cli(["serve"], path_flags=("data_root",))
