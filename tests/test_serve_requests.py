"""The JSON `reactdiff serve` and the pyfunc take, checked by their pydantic models and refused in
the project's words: the field, what it expects, what was sent. (tests/test_serve.py sends the
same bodies to a running server.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from reactdiff.request_checks import BadRequest, StreamParams, generation_params, refusal
from reactdiff.serve.requests import ReactBody

GOOD = {"inputs": {"mfcc": [[[0.0] * 26]]}, "params": {"alpha": 2, "seed": 0}}


def refused(body) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ValidationError) as err:
        ReactBody.model_validate_json(raw)
    return str(refusal(err.value, ReactBody, "body"))


@pytest.mark.parametrize(
    "body, message",
    [
        ({**GOOD, "params": {"alpha": 0}}, "params.alpha: expected the number of reactions per speaker clip, 1 to 100"),
        (
            {**GOOD, "params": {"alpha": "3"}},
            "params.alpha: expected the number of reactions per speaker clip, 1 to 100 (REACT2024 uses 10), got '3'",
        ),
        (
            {**GOOD, "params": {"alpha": True}},
            "params.alpha: expected the number of reactions per speaker clip, 1 to 100 (REACT2024 uses 10), got True",
        ),
        (
            {**GOOD, "params": {"alhpa": 3}},
            "params: unknown field(s) ['alhpa']; expected any of ['alpha', 'mode', 'seed']",
        ),
        ({**GOOD, "params": {"mode": "realtime"}}, "params.mode: expected one of ['offline', 'online']"),
        ({**GOOD, "params": [2]}, "params: expected an object {alpha, mode, seed}, got list"),
        ({**GOOD, "format": "csv"}, "format: expected one of ['json', 'npy', 'npz'], got 'csv'"),
        (
            {**GOOD, "output": "au"},
            "output: expected one of ['emotion', '3dmm'] (the array of a .npy answer), got 'au'",
        ),
        (b"{inputs: 1", "body: not JSON (key must be a string"),
        ([GOOD], 'body: expected a JSON object {"inputs": ...} or {"speaker": ...}, got list'),
        ({**GOOD, "pad": 1}, "body: unknown field(s) ['pad']"),
        ({**GOOD, "speaker": "store:val"}, 'body: expected exactly one of "inputs" (the features) and "speaker"'),
        ({"params": {"alpha": 2}}, 'body: expected exactly one of "inputs"'),
        ({**GOOD, "max_clips": 2}, 'max_clips: applies to "speaker" paths only'),
        (
            {"speaker": "store:val", "max_clips": 0},
            "max_clips: expected the number of speaker clips to answer (>= 1), got 0",
        ),
        (
            {"speaker": ""},
            "speaker: expected '<store dir>:<split>' or a corpus clip file under the server's data root, got ''",
        ),
    ],
)
def test_a_bad_react_body_is_refused_naming_the_field(body, message):
    assert refused(body).startswith(message)


def test_a_good_react_body_has_the_defaults():
    body = ReactBody.model_validate_json(json.dumps({"speaker": "store:val"}))
    assert (body.max_clips, body.params.alpha, body.params.mode, body.params.seed, body.output) == (
        1,
        10,
        "offline",
        None,
        "emotion",
    )


def test_the_stream_start_and_the_pyfunc_params_are_worded_alike():
    with pytest.raises(ValidationError) as err:
        StreamParams.model_validate({"alpha": 2, "mode": "offline"})
    assert str(refusal(err.value, StreamParams, "first message", prefix="params")) == (
        "first message: unknown field(s) ['mode']; expected any of ['alpha', 'seed']"
    )
    with pytest.raises(BadRequest, match=r"params\.alpha: .* got 101"):
        generation_params({"alpha": 101})
    assert generation_params({"alpha": np.int64(4), "seed": None}) == (4, "offline", None)
