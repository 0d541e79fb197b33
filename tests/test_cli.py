"""The command line: every command's flags explain themselves, and the parser builds without the
runtimes (torch, Ray, MLflow) it hands the work to."""

from __future__ import annotations

import argparse
import subprocess
import sys

from reactdiff.cli import build_parser


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_flag_has_a_help_line():
    missing = [
        f"reactdiff {name} {action.option_strings[0] if action.option_strings else action.dest}"
        for name, command in commands(build_parser()).items()
        for action in command._actions
        if not action.help
    ]
    assert not missing, "flags without help:\n" + "\n".join(missing)


def test_help_imports_no_runtime():
    script = "import sys, reactdiff.cli; reactdiff.cli.build_parser(); print(sorted({'torch', 'ray', 'mlflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
