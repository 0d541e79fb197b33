"""`reactdiff serve` (reactdiff/serve): the Ray Serve app answers real HTTP and WebSocket requests
like `generate` does, follows the champion alias while a stream on the old champion finishes on
it, and answers every bad input with a 4xx that names it, while the replica keeps answering.

One Serve deployment (one replica, the alias polled every second) serves the whole module, on a
local Ray runtime and the session's real `mlflow server`; the tests run in file order and the last
one promotes a second version.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
from test_generate import save_tiny_checkpoint
from test_readme import REPO, VENV, bash_blocks
from test_registry import METRIC, make_run

from reactdiff import registry
from reactdiff.generate import Generator, serving_request
from reactdiff.mlflow_server import free_port
from reactdiff.request_checks import BadRequest, speaker_features
from reactdiff.serve import ServeOptions

SERVING_DOC = REPO / "docs" / "serving.md"  # stream_client.py
NAME = "serve-app"
EXPERIMENT = "serve-app-runs"
ALPHA, SEED, CLIPS, FRAMES, WS = 3, 0, 2, 50, 5  # tiny store: 50 frames per clip; tiny model: window 5
LIMITS = {"max_clips": 4, "max_frames": FRAMES, "max_stream_frames": FRAMES, "max_body_mb": 1.0}
TIMEOUT_S = 120
# Cached window-by-window sums round differently from whole-clip ones, and this untrained tiny model
# (two DDIM steps, x0 clamped) amplifies rounding: generate() itself moves by up to 4.5e-3 between a
# batch of 1 and of 2. Versions 1 and 2 differ by far more (checked in the promotion test).
STREAM_ATOL = 1e-2


# ---------------------------------------------------------------------------------------- no server


def test_window_checks_name_the_window_form():
    streams = {"mfcc": 26, "emotion": 25}
    good = {"mfcc": np.zeros((WS, 26)).tolist(), "emotion": np.zeros((WS, 25)).tolist()}
    assert {k: v.shape for k, v in speaker_features(good, streams, window=WS).items()} == {
        "mfcc": (1, WS, 26),
        "emotion": (1, WS, 25),
    }
    with pytest.raises(BadRequest, match=r"stream 'mfcc': expected shape \(5, 26\), one window, got \(4, 26\)"):
        speaker_features({**good, "mfcc": np.zeros((4, 26)).tolist()}, streams, window=WS)
    with pytest.raises(BadRequest, match="got nested lists of unequal lengths"):
        speaker_features({**good, "mfcc": [[0.0] * 26] * 4 + [[0.0] * 3]}, streams, window=WS)


# ---------------------------------------------------------------------------------------- the app


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def post(url: str, body: dict | bytes, headers: dict | None = None) -> tuple[int, bytes, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url}/react", data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def react(url: str, body: dict) -> dict:
    status, content, _ = post(url, body)
    assert status == 200, content[-2000:]
    return json.loads(content)


class Served:
    def __init__(self, url: str, uri: str, store: Path, checkpoints: list[Path]):
        self.url, self.uri, self.store, self.checkpoints = url, uri, store, checkpoints
        self.ws_url = url.replace("http://", "ws://") + "/stream"
        self.request = serving_request(
            f"models:/{NAME}@champion", f"{store}:val", max_clips=CLIPS, alpha=ALPHA, seed=SEED, tracking_uri=uri
        )
        self.feats = {k: np.asarray(v, np.float32) for k, v in self.request["inputs"].items()}

    def expected(self, version: str, mode: str = "offline", alpha: int = ALPHA, seed: int = SEED, clips: int = CLIPS):
        """What `generate` gives with registry version `version`."""
        generator = Generator(f"models:/{NAME}/{version}", self.uri)
        return generator({k: v[:clips] for k, v in self.feats.items()}, alpha, mode, seed, None)


@pytest.fixture(scope="module")
def served(uri, tiny_store, tmp_path_factory):
    """The app serving models:/serve-app@champion (v1), with the tiny store's folder as data root."""
    import ray
    from ray import serve

    from reactdiff.serve import app

    folder = tmp_path_factory.mktemp("serve")
    checkpoints = [save_tiny_checkpoint(folder / f"stage2-{seed}.pt", seed=seed) for seed in (0, 1)]
    make_run(uri, EXPERIMENT, 0.5, checkpoints[0])
    assert registry.promote(uri, EXPERIMENT, METRIC, "min", NAME).version == "1"
    options = ServeOptions(
        model=f"models:/{NAME}@champion",
        tracking_uri=uri,
        data_root=str(tiny_store.parent),
        poll_s=1.0,
        port=free_port(),
        max_replicas=1,
        **LIMITS,
    )
    try:
        url = app.deploy(options)
        yield Served(url, uri, tiny_store, checkpoints)
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.mark.slow
def test_react_answers_like_generate_in_every_format(served):
    status, model = get(f"{served.url}/model")
    assert status == 200 and (model["name"], model["version"], model["alias"]) == (NAME, "1", "champion")
    listening = {
        c.laddr.ip
        for c in psutil.net_connections("inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == int(served.url.rsplit(":", 1)[1])
    }
    assert listening == {"127.0.0.1"}

    for mode in ("offline", "online"):
        body = {**served.request, "params": {**served.request["params"], "mode": mode}}
        answer = react(served.url, body)
        assert answer["model"]["version"] == "1"
        expected = served.expected("1", mode)
        for key in ("3dmm", "emotion"):
            got = np.asarray(answer["predictions"][key], np.float32)
            assert got.shape == (CLIPS, ALPHA, FRAMES, expected[key].shape[-1])
            np.testing.assert_allclose(got, expected[key], rtol=0, atol=1e-5)

    # A path under the data root gives the same clips' reactions, and names them.
    by_path = react(served.url, {"speaker": "store:val", "max_clips": CLIPS, "params": served.request["params"]})
    first = react(served.url, served.request)
    assert by_path["predictions"] == first["predictions"]
    assert len(by_path["model"]["clips"]) == CLIPS

    status, content, headers = post(served.url, {**served.request, "format": "npz"})
    assert status == 200 and headers["content-type"] == "application/x-npz"
    arrays = np.load(io.BytesIO(content))
    for key in ("3dmm", "emotion"):
        np.testing.assert_array_equal(arrays[key], np.asarray(first["predictions"][key], np.float32))
    status, content, _ = post(served.url, served.request, {"Accept": "application/x-npy"})
    assert status == 200
    np.testing.assert_array_equal(np.load(io.BytesIO(content)), np.asarray(first["predictions"]["emotion"], np.float32))


def open_stream(served: Served, alpha: int, seed: int):
    from websockets.sync.client import connect

    socket = connect(served.ws_url, open_timeout=TIMEOUT_S)
    socket.send(json.dumps({"alpha": alpha, "seed": seed}))
    header = json.loads(socket.recv(timeout=TIMEOUT_S))
    return socket, header


def speaker_window(served: Served, t: int, clip: int = 0) -> str:
    return json.dumps({name: values[clip, t * WS : (t + 1) * WS].tolist() for name, values in served.feats.items()})


def stream_windows(socket, served: Served, first: int, last: int) -> list[dict]:
    """Listener windows first..last-1: window t answers speaker window t-1 (window 0 comes unasked)."""
    windows = []
    for t in range(first, last):
        if t > 0:
            socket.send(speaker_window(served, t - 1))
        message = json.loads(socket.recv(timeout=TIMEOUT_S))
        assert message.get("window") == t, message
        windows.append(message)
    return windows


def assert_stream_equals(windows: list[dict], expected: dict) -> None:
    for key in ("3dmm", "emotion"):
        got = np.concatenate([np.asarray(w[key], np.float32) for w in windows], axis=1)  # (α, T, D)
        np.testing.assert_allclose(got, expected[key][0], rtol=0, atol=STREAM_ATOL)


@pytest.mark.slow
def test_stream_equals_batched_online_generation(served):
    socket, header = open_stream(served, ALPHA, SEED)
    with socket:
        assert (header["model"]["version"], header["window_size"], header["alpha"]) == ("1", WS, ALPHA)
        windows = stream_windows(socket, served, 0, FRAMES // WS)
    assert_stream_equals(windows, served.expected("1", "online", clips=1))


def refused_stream(served: Served, start: dict, messages: list[str]) -> tuple[dict, int, str]:
    """Send `start`, then one of `messages` after each listener window; return the error message
    the server sends, and the code and reason it closes with."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    pending, error = list(messages), None
    with connect(served.ws_url, open_timeout=TIMEOUT_S) as socket:
        socket.send(json.dumps(start))
        try:
            while True:
                received = json.loads(socket.recv(timeout=TIMEOUT_S))
                if "error" in received:
                    error = received
                elif "window" in received:
                    socket.send(pending.pop(0))
        except ConnectionClosed as closed:
            assert error is not None, "closed without an error message"
            return error, closed.rcvd.code, closed.rcvd.reason


@pytest.mark.slow
def test_bad_input_gets_its_4xx_and_the_replica_keeps_answering(served):
    status, before = get(f"{served.url}/model")
    good = served.request
    mfcc = np.asarray(good["inputs"]["mfcc"])
    nan = mfcc.copy()
    nan[1, 7, 3] = np.nan

    def changed(inputs=None, params=None, **fields) -> dict:
        return {
            **good,
            "inputs": {**good["inputs"], **(inputs or {})},
            "params": {**good["params"], **(params or {})},
            **fields,
        }

    big = {name: np.zeros((1, FRAMES + WS, dim)).tolist() for name, dim in before["streams"].items()}
    cases = [
        (
            "wrong dims",
            changed(inputs={"mfcc": mfcc[..., :20].tolist()}),
            400,
            ["stream 'mfcc': expected shape (B, T, 26)", f"got ({CLIPS}, {FRAMES}, 20)"],
        ),
        (
            "NaN",
            changed(inputs={"mfcc": nan.tolist()}),
            400,
            ["stream 'mfcc': 1 NaN or infinite value(s) (the first in clip 1, frame 7)"],
        ),
        ("unknown stream", changed(inputs={"au": [[[0.0] * 12] * FRAMES] * CLIPS}), 400, ["unknown stream(s) ['au']"]),
        ("alpha 0", changed(params={"alpha": 0}), 400, ["params.alpha", "1 to 100", "got 0"]),
        ("alpha 101", changed(params={"alpha": 101}), 400, ["params.alpha", "got 101"]),
        ("alpha text", changed(params={"alpha": "3"}), 400, ["params.alpha", "got '3'"]),
        ("misspelt param", changed(params={"alhpa": 3}), 400, ["params: unknown field(s) ['alhpa']"]),
        ("unknown mode", changed(params={"mode": "realtime"}), 400, ["params.mode", "got 'realtime'"]),
        ("unknown format", changed(format="csv"), 400, ["format: expected one of ['json', 'npy', 'npz']"]),
        ("not JSON", b"{inputs: 1", 400, ["body: not JSON"]),
        ("both forms", changed(speaker="store:val"), 400, ['exactly one of "inputs"']),
        (
            "too many frames",
            {"inputs": big, "params": good["params"]},
            413,
            [f"frames (T): {FRAMES + WS} is over this server's limit of {FRAMES}"],
        ),
        ("too many clips", {"speaker": "store:val", "max_clips": 5}, 413, ["max_clips: 5 is over", "--max-clips"]),
        ("too large a body", changed(pad="x" * 2**20), 413, ["body:", "--max-body-mb"]),
        ("path outside the root", {"speaker": "../../etc:passwd"}, 403, ["outside the server's data root"]),
        ("absolute path outside", {"speaker": "/etc/hostname"}, 403, ["outside the server's data root"]),
        ("missing path", {"speaker": "nostore:val"}, 404, ["'nostore' does not exist"]),
    ]
    for problem, body, expected_status, texts in cases:
        status, content, _ = post(served.url, body)
        assert status == expected_status, (problem, content[-600:])
        message = json.loads(content)["error"]
        for text in texts:
            assert text in message, (problem, text, message)

    window = json.loads(speaker_window(served, 0))
    nan_window = {**window, "mfcc": [[math.nan] * 26] * WS}
    stream_cases = [
        (
            "window of the wrong length",
            {"alpha": 2},
            [json.dumps({**window, "mfcc": window["mfcc"][:4]})],
            1008,
            "stream 'mfcc': expected shape (5, 26), one window, got (4, 26)",
        ),
        (
            "wrong dims",
            {"alpha": 2},
            [json.dumps({**window, "emotion": [[0.0] * 24] * WS})],
            1008,
            "stream 'emotion': expected shape (5, 25)",
        ),
        (
            "NaN",
            {"alpha": 2},
            [json.dumps(nan_window)],
            1008,
            "stream 'mfcc': 130 NaN or infinite value(s) (the first in frame 0)",
        ),
        (
            "unknown stream",
            {"alpha": 2},
            [json.dumps({**window, "au": [[0.0] * 3] * WS})],
            1008,
            "unknown stream(s) ['au']",
        ),
        ("alpha out of range", {"alpha": 101}, [], 1008, "params.alpha"),
        ("unknown start field", {"alpha": 2, "mode": "offline"}, [], 1008, "unknown field(s) ['mode']"),
        ("not JSON", {"alpha": 2}, ["{"], 1008, "speaker window 0: not JSON"),
        (
            "too long a stream",
            {"alpha": 1},
            [json.dumps(window)] * (FRAMES // WS),
            1009,
            f"stream frames: {FRAMES + WS} is over this server's limit of {FRAMES}",
        ),
    ]
    for problem, start, messages, code, text in stream_cases:
        error, closed_code, reason = refused_stream(served, start, messages)
        assert text in error["error"], (problem, error)
        assert error["status"] == (413 if code == 1009 else 400), (problem, error)
        assert closed_code == code and reason and reason in error["error"], (problem, closed_code, reason)

    status, after = get(f"{served.url}/model")
    assert status == 200 and after["replica"] == before["replica"]  # the same replica, still up
    assert react(served.url, good)["model"]["version"] == "1"


@pytest.mark.slow
def test_the_readme_requests_and_stream_client_run_against_the_app(served, tmp_path):
    """README "Serving with Ray Serve": its middle block (the requests), and docs/serving.md's
    `stream_client.py`, as written but for the port and the model name; the README's first and last
    blocks start and stop a server."""
    requests = bash_blocks("Serving with Ray Serve")[1]
    (client,) = re.findall(r"```python\n(.*?)```", SERVING_DOC.read_text(), re.S)
    host_port = served.url.removeprefix("http://")

    def as_here(text: str) -> str:
        return text.replace("127.0.0.1:8000", host_port).replace(
            "models:/reactdiff@champion", f"models:/{NAME}@champion"
        )

    (tmp_path / "stream_client.py").write_text(as_here(client))
    (tmp_path / "data").symlink_to(served.store.parent)  # the app's data root
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": served.uri,
        "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    done = subprocess.run(
        ["bash", "-c", "set -eo pipefail\n" + as_here(requests)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert '"version":"1"' in done.stdout
    assert "{'3dmm': (2, 10, 50, 58), 'emotion': (2, 10, 50, 25)}" in done.stdout
    assert f"listener window {FRAMES // WS - 1}: {ALPHA} reactions" in done.stdout
    assert np.asarray(json.loads((tmp_path / "reactions.json").read_text())["predictions"]["emotion"]).shape == (
        1,
        ALPHA,
        FRAMES,
        25,
    )


@pytest.mark.slow
def test_a_promotion_reaches_new_requests_while_an_open_stream_finishes_on_its_version(served):
    socket, header = open_stream(served, alpha=2, seed=5)
    with socket:
        assert header["model"]["version"] == "1"
        windows = stream_windows(socket, served, 0, 3)

        make_run(served.uri, EXPERIMENT, 0.4, served.checkpoints[1])
        assert registry.promote(served.uri, EXPERIMENT, METRIC, "min", NAME).champion_version == "2"
        deadline = time.monotonic() + TIMEOUT_S
        while get(f"{served.url}/model")[1]["version"] != "2":
            assert time.monotonic() < deadline, "the replica did not switch to v2"
            time.sleep(0.5)

        windows += stream_windows(socket, served, 3, FRAMES // WS)
    assert_stream_equals(windows, served.expected("1", "online", alpha=2, seed=5, clips=1))

    answer = react(served.url, served.request)
    assert answer["model"]["version"] == "2"
    expected = served.expected("2")
    np.testing.assert_allclose(
        np.asarray(answer["predictions"]["emotion"], np.float32), expected["emotion"], rtol=0, atol=1e-5
    )
    assert np.abs(expected["emotion"] - served.expected("1")["emotion"]).max() > 10 * STREAM_ATOL  # another model
    socket, header = open_stream(served, alpha=2, seed=5)
    with socket:
        assert header["model"]["version"] == "2"
