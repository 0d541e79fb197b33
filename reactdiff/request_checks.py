"""Checks of a generation request, shared by every server of the model: the MLflow pyfunc
(`mlflow models serve`, pyfunc.ReactDiffPyfunc) and the Ray Serve app (`reactdiff serve`).

Each check raises `BadRequest` (or `TooLarge`) with a message that names the field, what was
expected and what to send; the servers turn it into their own HTTP 4xx (`status`).

Two forms of speaker features:
- a request: {stream: B clips × T frames × D values}, every stream of the model, the same B and T;
- a window of a stream (`window=ws`): {stream: ws frames × D values}, one clip, one window.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# REACT2024 scores α = 10 reactions per speaker clip. A request samples B·α·(T / window) DDIM
# windows in one batch, so memory and time grow linearly with α; the cap keeps one request from
# exhausting the server, and 100 is 10x what the protocol needs.
DEFAULT_ALPHA = 10
MAX_ALPHA = 100
MODES = ("offline", "online")  # the first is the default


class BadRequest(ValueError):
    """A request the model refuses; HTTP `status`."""

    status = 400


class TooLarge(BadRequest):
    """A request over a server's size limit."""

    status = 413


class RequestModel(BaseModel):
    """A request's JSON, checked by pydantic: unknown fields and other types than declared (no "3"
    for 3) are refused. `refusal` words what pydantic found as a BadRequest: a field's
    `description` says what it expects, `EXPECTED` what the whole object is."""

    model_config = ConfigDict(extra="forbid", strict=True)
    EXPECTED: ClassVar[str] = "a JSON object"


Alpha = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_ALPHA,
        description=f"the number of reactions per speaker clip, 1 to {MAX_ALPHA} (REACT2024 uses 10)",
    ),
]
Seed = Annotated[int | None, Field(description="an integer (or none for random reactions)")]


class StreamParams(RequestModel):
    """The params of an online stream (/stream's first message): its mode is online."""

    EXPECTED: ClassVar[str] = '{"alpha": 10, "seed": 0}'
    alpha: Alpha = DEFAULT_ALPHA
    seed: Seed = None


class GenerationParams(StreamParams):
    """The params of a generation request (the pyfunc's params, /react's "params")."""

    EXPECTED: ClassVar[str] = "an object {alpha, mode, seed}"
    mode: Literal[MODES] = Field(
        MODES[0], description=f"one of {list(MODES)} (online: each frame sees only earlier speaker windows)"
    )


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel]:
    """The model of the object at `loc` inside `model` (a nested request object)."""
    for part in loc:
        model = model.model_fields[part].annotation
    return model


def refusal(err: ValidationError, model: type[RequestModel], where: str, prefix: str | None = None) -> BadRequest:
    """The BadRequest that words `err`, pydantic's findings on `model`, in the project's form:
    '<field>: expected <what>, got <value>'. `where` names the whole request (its type, its JSON),
    `prefix` is put before its field names (params.alpha)."""
    errors = err.errors()
    first = errors[0]
    loc = tuple(first["loc"])

    def path(at: tuple) -> str:
        return ".".join(str(part) for part in ((prefix,) if prefix else ()) + at) if at else where

    if first["type"] == "json_invalid":
        return BadRequest(f"{where}: not JSON ({first['ctx']['error']})")
    if first["type"] == "extra_forbidden":
        parent = loc[:-1]
        unknown = sorted(
            str(e["loc"][-1]) for e in errors if e["type"] == "extra_forbidden" and e["loc"][:-1] == parent
        )
        known = sorted(_model_at(model, parent).model_fields)
        return BadRequest(f"{path(parent)}: unknown field(s) {unknown}; expected any of {known}")
    if first["type"] == "value_error":  # a model's own check: its message is the whole refusal
        return BadRequest(str(first["ctx"]["error"]))
    got = first.get("input")
    if first["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return BadRequest(f"{path(loc)}: expected {_model_at(model, loc).EXPECTED}, got {type(got).__name__}")
    description = _model_at(model, loc[:-1]).model_fields[loc[-1]].description
    return BadRequest(f"{path(loc)}: expected {description}, got {got!r}")


def speaker_features(model_input: Any, streams: dict[str, int], window: int | None = None) -> dict[str, np.ndarray]:
    """A request's speaker features, checked against the model's streams → {stream: (B, T, D) float32}
    (B = 1 for a `window`)."""
    if window is None:
        expected = ", ".join(f'"{name}": (B, T, {dim})' for name, dim in streams.items())
        send = (
            f'send {{"inputs": {{{expected}}}}}: every stream as a nested list of B clips × T frames '
            "× D values, with the same B and T for all streams"
        )
    else:
        expected = ", ".join(f'"{name}": ({window}, {dim})' for name, dim in streams.items())
        send = f"send each window as {{{expected}}}: every stream as {window} frames × D values"
    if not isinstance(model_input, dict):
        raise BadRequest(f"expected named speaker feature streams, got {type(model_input).__name__}; {send}")
    unknown = sorted(set(model_input) - set(streams))
    if unknown:
        raise BadRequest(f"unknown stream(s) {unknown}: this model reads {list(streams)}; {send}")
    missing = [name for name in streams if name not in model_input]
    if missing:
        raise BadRequest(f"missing stream(s) {missing}: this model reads all of {list(streams)}; {send}")
    feats = {}
    for name, dim in streams.items():
        shape = f"(B, T, {dim}) with B, T >= 1" if window is None else f"({window}, {dim}), one window"
        try:
            values = np.asarray(model_input[name])
        except ValueError:  # ragged nested lists
            raise BadRequest(
                f"stream '{name}': expected shape {shape}, got nested lists of unequal lengths; {send}"
            ) from None
        if window is not None and values.ndim == 2:
            values = values[None]
        if (
            values.ndim != 3
            or values.shape[2] != dim
            or 0 in values.shape
            or (window is not None and values.shape[1] != window)
        ):
            got = values.shape[1:] if window is not None and values.ndim == 3 else values.shape
            raise BadRequest(f"stream '{name}': expected shape {shape}, got {got}; {send}")
        if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
            raise BadRequest(f"stream '{name}': expected numbers, got {values.dtype} values; {send}")
        feats[name] = values.astype(np.float32)
        # After the cast: a float64 beyond float32's range would become inf here.
        bad = np.argwhere(~np.isfinite(feats[name]))
        if len(bad):
            clip, frame = bad[0][:2]
            where = f"frame {frame}" if window is not None else f"clip {clip}, frame {frame}"
            raise BadRequest(
                f"stream '{name}': {len(bad)} NaN or infinite value(s) (the first in {where}); "
                "send finite float32 numbers"
            )
    sizes = {name: values.shape[:2] for name, values in feats.items()}
    if len(set(sizes.values())) > 1:
        raise BadRequest(f"streams differ in (B clips, T frames): {sizes}; {send}")
    return feats


def generation_params(params: dict[str, Any] | None) -> tuple[int, str, int | None]:
    """(alpha, mode, seed) of a request's params, checked (`GenerationParams`)."""
    # numpy scalars (a caller's np.int64 α) count as the Python numbers they hold.
    given = {k: v.item() if isinstance(v, np.generic) else v for k, v in (params or {}).items()}
    try:
        checked = GenerationParams.model_validate(given)
    except ValidationError as err:
        raise refusal(err, GenerationParams, "params", prefix="params") from None
    return checked.alpha, checked.mode, checked.seed


def clip_frames(model, frames: int) -> None:
    """Refuses clips of `frames` frames that the model cannot cut into windows (`pad_mode=drop`)."""
    try:
        model.check_frames(frames)
    except ValueError as err:
        raise BadRequest(str(err)) from None
