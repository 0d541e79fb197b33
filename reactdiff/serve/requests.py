"""The JSON a client sends `reactdiff serve`, as pydantic models: /react's body and /stream's first
message (request_checks.StreamParams). Unknown fields and wrong types are refused;
`request_checks.refusal` words the 4xx."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from reactdiff.request_checks import GenerationParams, RequestModel

FORMATS = {"json": "application/json", "npy": "application/x-npy", "npz": "application/x-npz"}
OUTPUTS = ("emotion", "3dmm")


class ReactBody(RequestModel):
    """POST /react: the speaker's features ("inputs") or a path to them ("speaker"), how to generate
    and what to answer (serve/app.py's docstring)."""

    EXPECTED: ClassVar[str] = 'a JSON object {"inputs": ...} or {"speaker": ...}'
    inputs: Any = None  # checked against the served model's streams (request_checks.speaker_features)
    speaker: str | None = Field(
        None, min_length=1, description="'<store dir>:<split>' or a corpus clip file under the server's data root"
    )
    max_clips: int = Field(1, ge=1, description="the number of speaker clips to answer (>= 1)")
    params: GenerationParams = GenerationParams()
    format: Literal[tuple(FORMATS)] | None = Field(None, description=f"one of {list(FORMATS)}")
    output: Literal[OUTPUTS] = Field(OUTPUTS[0], description=f"one of {list(OUTPUTS)} (the array of a .npy answer)")

    @model_validator(mode="after")
    def _one_source(self) -> ReactBody:
        if (self.inputs is None) == (self.speaker is None):
            raise ValueError(
                'body: expected exactly one of "inputs" (the features) and "speaker" (a path '
                "under the server's data root)"
            )
        if self.inputs is not None and "max_clips" in self.model_fields_set:
            raise ValueError('max_clips: applies to "speaker" paths only')
        return self
