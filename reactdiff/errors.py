"""The one mark of an error the user can fix.

An input that cannot work (a missing store, a model that does not resolve, a space file that does
not parse) raises a subclass of `UserError` whose message names what is wrong and what to run. The
`reactdiff` command prints such a message alone, without a traceback (`-v` adds it), and exits with
the class's `exit_status`; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An input the user can fix; the message says what is wrong and what to do."""

    exit_status = 1


class Refused(UserError, ValueError):
    """An input a command refuses; the message names the file, the field and what to do."""


class ModelNotFound(UserError, FileNotFoundError):
    """A `--model` or `train.stage1_model` that names no checkpoint file and no MLflow model."""


class PromotionError(UserError, RuntimeError):
    """A promotion or rollback was refused (reactdiff.registry); the message says why and what to do."""
