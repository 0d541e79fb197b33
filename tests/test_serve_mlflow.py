"""The champion served by `mlflow models serve` (README "Serving the champion"): a real HTTP
request with speaker features from the tiny store returns the pyfunc's own predictions, and every
malformed request gets a 400 that names the problem while the server keeps answering."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
from mlflow.exceptions import MlflowException
from test_generate import save_tiny_checkpoint
from test_registry import METRIC, make_run

from reactdiff import registry, tracking
from reactdiff.generate import serving_request
from reactdiff.mlflow_server import _kill_group, free_port, wait_until_answering
from reactdiff.models import load_checkpoint
from reactdiff.pyfunc import ReactDiffPyfunc

NAME = "serve-champion"
ALPHA, SEED, CLIPS, FRAMES = 3, 0, 2, 50  # conftest's tiny store: 50 frames per clip
STARTUP_TIMEOUT_S = 180.0  # the scoring server imports mlflow and torch on a busy 2-core machine


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def bad_requests(good: dict) -> list[tuple[str, dict, list[str]]]:
    """(what is wrong, body, substrings the 400's message must contain)."""

    def changed(inputs=None, params=None, drop=None) -> dict:
        body = copy.deepcopy(good)
        body["inputs"].update(inputs or {})
        body["params"].update(params or {})
        body["inputs"].pop(drop, None)
        return body

    mfcc = np.asarray(good["inputs"]["mfcc"])
    nan = mfcc.copy()
    nan[1, 7, 3] = np.nan
    return [
        (
            "unknown stream",
            changed(inputs={"au": [[[0.0] * 12] * FRAMES] * CLIPS}),
            ["unknown stream(s) ['au']", '"mfcc": (B, T, 26)', '"3dmm": (B, T, 58)'],
        ),
        (
            "wrong feature dim",
            changed(inputs={"mfcc": mfcc[..., :20].tolist()}),
            ["stream 'mfcc': expected shape (B, T, 26)", f"got ({CLIPS}, {FRAMES}, 20)"],
        ),
        ("missing stream", changed(drop="3dmm"), ["missing stream(s) ['3dmm']"]),
        (
            "mismatched frames",
            changed(inputs={"mfcc": mfcc[:, :40].tolist()}),
            ["streams differ in (B clips, T frames)", f"'mfcc': ({CLIPS}, 40)"],
        ),
        (
            "NaN",
            changed(inputs={"mfcc": nan.tolist()}),  # json.dumps writes NaN, MLflow reads it
            ["stream 'mfcc': 1 NaN or infinite value(s) (the first in clip 1, frame 7)"],
        ),
        ("alpha 0", changed(params={"alpha": 0}), ["params.alpha", "1 to 100", "got 0"]),
        ("alpha too big", changed(params={"alpha": 101}), ["params.alpha", "got 101"]),
        (
            "unknown mode",
            changed(params={"mode": "realtime"}),
            ["params.mode: expected one of ['offline', 'online']", "got 'realtime'"],
        ),
    ]


@pytest.mark.slow
def test_served_champion_answers_like_the_pyfunc_and_refuses_bad_requests(uri, tiny_store, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "stage2.pt")
    make_run(uri, "serve-1", 0.5, checkpoint)
    registry.promote(uri, "serve-1", METRIC, "min", NAME)
    model_uri = f"models:/{NAME}@champion"
    good = serving_request(model_uri, f"{tiny_store}:val", max_clips=CLIPS, alpha=ALPHA, seed=SEED, tracking_uri=uri)
    local = tracking.load_pyfunc(uri, model_uri).predict(
        {name: np.asarray(values, dtype=np.float32) for name, values in good["inputs"].items()}, params=good["params"]
    )

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    venv_bin = Path(sys.executable).parent
    command = [
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    # The venv's bin on PATH, as in an activated venv: `mlflow models serve` runs `uvicorn` from PATH.
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
    with log.open("wb") as log_file:
        # Its own process group: `mlflow models serve` starts uvicorn in a child process.
        server = subprocess.Popen(
            [str(venv_bin / command[0]), *command[1:]],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    group = [psutil.Process(server.pid)]
    try:
        wait_until_answering(f"{url}/ping", server, log, STARTUP_TIMEOUT_S)
        group += group[0].children(recursive=True)
        listening = {
            (c.laddr.ip, c.laddr.port)
            for p in group
            for c in p.net_connections("inet")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening == {("127.0.0.1", port)}

        status, first = post(url, good)
        assert status == 200, first
        served = {key: np.asarray(value) for key, value in first["predictions"].items()}
        assert served["3dmm"].shape == (CLIPS, ALPHA, FRAMES, 58)
        assert served["emotion"].shape == (CLIPS, ALPHA, FRAMES, 25)
        for key in ("3dmm", "emotion"):
            np.testing.assert_allclose(served[key], local[key], rtol=0, atol=1e-5)

        for problem, body, expected in bad_requests(good):
            status, answer = post(url, body)
            assert status == 400, (problem, answer)
            assert answer["error_code"] == "INVALID_PARAMETER_VALUE", (problem, answer)
            for text in expected:
                assert text in answer["message"], (problem, text, answer["message"][-600:])

        status, again = post(url, good)  # the refusals left the server answering
        assert status == 200 and again == first
    finally:
        _kill_group(server, signal.SIGTERM)
        _, alive = psutil.wait_procs(group, timeout=20)
        _kill_group(server, signal.SIGKILL)
        server.wait()
    assert not alive, f"still running after SIGTERM: {alive}"


def test_clips_the_model_cannot_window_are_refused(tmp_path):
    """A pad_mode=drop model refuses clips that are not a multiple of its window (5 frames)."""
    model = load_checkpoint(save_tiny_checkpoint(tmp_path / "stage2.pt"))
    model.config = model.config.model_copy(
        update={"diffusion": model.config.diffusion.model_copy(update={"pad_mode": "drop"})}
    )
    pyfunc = ReactDiffPyfunc()
    pyfunc.model = model
    feats = {name: np.zeros((1, 12, dim), np.float32) for name, dim in model.mmt.streams.items()}
    with pytest.raises(MlflowException, match="12 frames is not a multiple of .*window_size=5") as err:
        pyfunc.predict(None, feats, {"alpha": 2})
    assert err.value.get_http_status_code() == 400
