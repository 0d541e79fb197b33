"""The quiet terminal: what reaches the terminal, and what goes to the log file."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from reactdiff import console
from reactdiff.config import ConfigError

SESSION_SCRIPT = """
import os, subprocess, sys
from pathlib import Path
from reactdiff import console

with console.session(Path(sys.argv[1]), "train", verbose=False) as log:
    print("library chatter on sys.stdout")
    os.write(2, b"C-level chatter on fd 2\\n")
    subprocess.run([sys.executable, "-c", "print('a child process')"], check=True)
    console.say("stage 1 epoch 1/2")
    console.result("runs:/abc/model")
print("after the session")
"""


def test_a_session_sends_library_output_to_its_log_and_progress_to_the_terminal(tmp_path):
    # A process of its own: pytest's capture would stand between sys.stdout and fd 1.
    done = subprocess.run(
        [sys.executable, "-c", SESSION_SCRIPT, str(tmp_path)], capture_output=True, text=True, check=True
    )
    (log,) = tmp_path.glob("train-*.log")
    assert done.stdout == "runs:/abc/model\nafter the session\n"  # scripts capture the result alone
    assert done.stderr.splitlines() == [
        f"log: {log}  (Ray, MLflow and library output; `reactdiff -v train` prints it here instead)",
        "stage 1 epoch 1/2",
    ]
    text = log.read_text()
    for line in ("library chatter on sys.stdout", "C-level chatter on fd 2", "a child process", "stage 1 epoch 1/2"):
        assert line in text
    assert "after the session" not in text


def test_verbose_prints_everything_and_writes_no_log(tmp_path, capfd):
    with console.session(tmp_path, "train", verbose=True) as log:
        print("library chatter")
        console.say("progress")
    assert log is None and not list(tmp_path.iterdir())
    out, err = capfd.readouterr()
    assert out == "library chatter\n" and err == "progress\n"


@pytest.mark.parametrize(("error", "shows_tail"), [(ConfigError("bad key"), False), (RuntimeError("boom"), True)])
def test_an_unexpected_failure_shows_the_log_tail_and_path(tmp_path, capfd, error, shows_tail):
    with pytest.raises(type(error)):
        with console.session(tmp_path, "tune", verbose=False, expected=(ConfigError,)):
            os.write(1, b"the line before the failure\n")
            raise error
    err = capfd.readouterr().err
    assert ("full log: " in err) == shows_tail
    assert ("the line before the failure" in err) == shows_tail


def test_epoch_lines_show_the_metrics_and_an_eta_once_a_rate_is_known():
    from reactdiff.train.progress import EpochClock

    clock = EpochClock()
    first = clock.line(
        "stage 1", {"epoch": 0, "train_loss": 1.5, "val_loss": float("nan"), "data_wait_fraction": 0.25}, epochs=3
    )
    assert first.startswith("stage 1 epoch 1/3  train_loss 1.5  data_wait_fraction 25.0%")
    assert "with start-up" in first and "ETA" not in first and "val_loss" not in first  # NaN: not scored yet
    second = clock.line("stage 1", {"epoch": 1, "train_loss": 1.0}, epochs=3)
    assert second.startswith("stage 1 epoch 2/3  train_loss 1  ") and "/epoch, ETA " in second
    assert "with start-up" in clock.line("trial a", {"epoch": 0}, epochs=3)  # each run has its own clock
