"""`reactdiff serve`: a Ray Serve application that generates listener reactions with the model a
registry alias names (default `models:/reactdiff@champion`), and follows that alias.

Endpoints (FastAPI ingress of one deployment, `ReactionServer`):

    POST /react    {"inputs": {<stream>: B × T × D numbers, ...}            the body `mlflow models
                    | "speaker": "<store dir>:<split>" or "<clip file>",     serve` takes, or a path
                      "max_clips": N,                                         under --data-root
                    "params": {"alpha": 10, "mode": "offline", "seed": 0},  all optional
                    "format": "json" | "npy" | "npz", "output": "emotion"}   optional
                   → {"predictions": {"3dmm": B×α×T×58, "emotion": B×α×T×25}, "model": {...}}
                   (json), or one array as .npy (`output`, default emotion), or both as .npz
                   (np.load(...)["3dmm"], ["emotion"]); `Accept: application/x-npy` or
                   `application/x-npz` choose too. Speaker b is seeded seed + b, as `generate` does.
    WS   /stream   first message {"alpha": 10, "seed": 0} → {"model": {...}, "window_size": ws,
                   "streams": {...}} and at once listener window 0; then each message, one speaker
                   window {<stream>: ws × D numbers}, is answered with the next listener window
                   {"window": t, "3dmm": α×ws×58, "emotion": α×ws×25} (online mode: listener
                   window t sees speaker windows < t). Per-connection `OnlineStream`.
    GET  /model    the version this replica serves: name, version, run id, alias, source.

Bad input gets a 4xx whose message names the field, what was expected and what to send
(request bodies are pydantic models, serve/requests.py, worded by `request_checks.refusal` in an
exception handler; the features get `request_checks`' checks, the same as the MLflow pyfunc's): 400 wrong dims, NaN, α out of range,
unknown or missing stream, unknown field, malformed JSON; 403 a path outside --data-root (or
any path when the server has none); 404 a path that does not exist; 413 more clips, frames or
body bytes than the server's limits. A WebSocket gets {"error": ..., "status": ...} and is
closed (1008, 1009 for a size limit, 1011 for a server fault) with the reason; a window of the
wrong length is refused the same way. Nothing a client sends ends the replica.

Following the alias. Each replica polls the registry (`get_model_version_by_alias`) every
`poll_s` seconds; when the alias names another version it loads it in a worker thread and then
swaps one attribute. A request reads that attribute once when it starts, so requests in flight
finish on the model they began with, and an open stream keeps its model (and its caches) to the
end; new requests and streams get the new version. We poll rather than redeploy with a new
`user_config` (Serve's `reconfigure`): redeploying needs a process of its own that watches the
registry and stays alive beside Serve, while polling keeps each replica self-sufficient: a
replica the autoscaler adds resolves the alias when it starts. The cost: replicas may serve
different versions for up to `poll_s`, and each replica asks the registry once per `poll_s`.
A version that fails to load (unreachable registry, a stage-1 model) is logged and the replica
keeps serving the one it has.
"""

import asyncio
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from ray import serve
from starlette.websockets import WebSocketDisconnect

from reactdiff import tracking
from reactdiff.request_checks import BadRequest, StreamParams, TooLarge, clip_frames, refusal, speaker_features
from reactdiff.serve import APP_NAME, ServeOptions
from reactdiff.serve.requests import FORMATS, ReactBody
from reactdiff.tracking import ModelRef

log = logging.getLogger(__name__)

# WebSocket close codes (RFC 6455): policy violation, message too big, server fault.
CLOSE_BAD_INPUT, CLOSE_TOO_LARGE, CLOSE_SERVER_FAULT = 1008, 1009, 1011
CLOSE_REASON_BYTES = 123  # the most a close frame's reason may hold


class Forbidden(BadRequest):
    status = 403


class NotFound(BadRequest):
    status = 404


@dataclass(frozen=True)
class ServedModel:
    """One loaded model version: replaced whole, never changed, so a request can hold it."""

    model: Any = field(repr=False)  # a ReactDiff
    source: str  # the URI loaded: models:/<name>/<version>, runs:/..., or a checkpoint file
    name: str | None
    version: str | None
    run_id: str | None
    alias: str | None
    loaded_at: float

    def describe(self) -> dict[str, Any]:
        info = {key: value for key, value in asdict(self).items() if key != "model"}
        info["window_size"] = self.model.window_size
        info["streams"] = dict(self.model.mmt.streams)
        return info


def resolve(source: ModelRef, tracking_uri: str | None) -> tuple[str, str | None, str | None]:
    """(URI to load, version, run id) of what `source` names now."""
    if source.is_file:
        return source.text, None, None
    client = tracking.client_for(tracking_uri)
    if source.kind == "registered":
        version = source.registered_version(client)
        return f"models:/{source.name}/{version.version}", version.version, version.run_id
    return source.text, None, source.source_run(client)


def load(
    source: ModelRef, tracking_uri: str | None, resolved: tuple[str, str | None, str | None] | None = None
) -> ServedModel:
    """Load the version `source` names (or the already `resolved` one), as `reactdiff generate` loads it."""
    from reactdiff.generate import Generator

    uri, version, run_id = resolved or resolve(source, tracking_uri)
    model = Generator(uri, tracking_uri).model
    return ServedModel(model, uri, source.name, version, run_id, source.alias, time.time())


def _shape_limit(what: str, value: int, limit: int, flag: str) -> None:
    if value > limit:
        raise TooLarge(
            f"{what}: {value} is over this server's limit of {limit} (reactdiff serve {flag}); "
            "send fewer, or split the request"
        )


def _json(text: str | bytes, where: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(f"{where}: not JSON ({err})") from None


def _encode(out: dict[str, np.ndarray], fmt: str, output: str, describe: dict) -> Response:
    headers = {"x-reactdiff-model-version": str(describe["version"]), "x-reactdiff-model-source": describe["source"]}
    if fmt == "json":
        return JSONResponse(
            {"predictions": {key: out[key].tolist() for key in ("3dmm", "emotion")}, "model": describe}, headers=headers
        )
    buffer = io.BytesIO()
    if fmt == "npy":
        np.save(buffer, out[output])
    else:
        np.savez(buffer, **{key: out[key] for key in ("3dmm", "emotion")})
    return Response(buffer.getvalue(), media_type=FORMATS[fmt], headers=headers)


def _window_message(t: int, out: dict) -> dict:
    return {"window": t, **{key: out[key][0].tolist() for key in ("3dmm", "emotion")}}


def _step(stream, window) -> dict[str, np.ndarray]:
    out = stream.step(window)
    return {"3dmm": out["3dmm"].numpy(), "emotion": out["emotion"].numpy()}


async def _receive_json(websocket: WebSocket, what: str) -> Any:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if message.get("text") is None:
        raise BadRequest(f"{what}: expected a JSON text message, got a binary one")
    return _json(message["text"], what)


async def _close(websocket: WebSocket, status: int, message: str, code: int) -> None:
    """Tell the client why, then close with the reason (cut to what a close frame holds)."""
    try:
        await websocket.send_json({"error": message, "status": status})
        reason = message.encode()[:CLOSE_REASON_BYTES].decode(errors="ignore")
        await websocket.close(code=code, reason=reason)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client left first


app = FastAPI(title="reactdiff", description="ReactDiff listener reactions (see reactdiff/serve/app.py)")


@app.exception_handler(BadRequest)
async def _refused(request: Request, err: BadRequest) -> JSONResponse:
    return JSONResponse({"error": str(err)}, status_code=err.status)


@app.exception_handler(ValidationError)
async def _invalid(request: Request, err: ValidationError) -> JSONResponse:
    """A /react body pydantic refused (ReactBody), in the project's 4xx wording."""
    if err.title != ReactBody.__name__:
        raise err  # not a request's: a fault of the server, answered 500
    return await _refused(request, refusal(err, ReactBody, "body"))


# `serve.deployment` pickles the class when it decorates it: whatever its methods call is defined above.
@serve.deployment
@serve.ingress(app)
class ReactionServer:
    """A replica: the served model (swapped whole when the alias moves) and the endpoints."""

    async def __init__(self, options: ServeOptions):
        self.options = options
        self.source = tracking.parse_model(options.model)
        self.data_root = Path(options.data_root).resolve() if options.data_root else None
        self.served: ServedModel = await asyncio.to_thread(load, self.source, options.tracking_uri)
        log.info("serving %s", self.served.describe())
        self._follower = asyncio.create_task(self._follow()) if self.source.alias is not None else None

    async def _follow(self) -> None:
        """Poll the alias; load a new version off the event loop, then swap it in."""
        while True:
            await asyncio.sleep(self.options.poll_s)
            try:
                resolved = await asyncio.to_thread(resolve, self.source, self.options.tracking_uri)
                if resolved[1] == self.served.version:
                    continue
                served = await asyncio.to_thread(load, self.source, self.options.tracking_uri, resolved)
            except Exception as err:  # a registry hiccup must not stop the following
                log.warning(
                    "%s: keeping v%s, could not load what it names now: %s", self.source.text, self.served.version, err
                )
                continue
            log.info("%s moved: v%s → v%s", self.source.text, self.served.version, served.version)
            self.served = served

    def _replica(self) -> str:
        return serve.get_replica_context().replica_tag

    @app.get("/model")
    async def model(self) -> dict:
        return {**self.served.describe(), "replica": self._replica()}

    # ------------------------------------------------------------------------------- /react

    async def _body(self, request: Request) -> ReactBody:
        limit = int(self.options.max_body_mb * 2**20)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TooLarge(
                f"body: {int(declared)} bytes is over this server's limit of {limit} "
                "(reactdiff serve --max-body-mb); send fewer clips or frames, or a path"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"body: over this server's limit of {limit} bytes (reactdiff serve --max-body-mb)")
            chunks.append(chunk)
        return ReactBody.model_validate_json(b"".join(chunks))  # ValidationError: refused by `_invalid`

    def _speaker_path(self, text: str) -> tuple[str, Path]:
        """(what load_speakers takes, the path checked) for a speaker path under the data root."""
        if self.data_root is None:
            raise Forbidden(
                "speaker: this server reads no files (started without --data-root); send the "
                'features as "inputs" instead'
            )
        store_dir, colon, split = text.rpartition(":")
        named = store_dir if colon and "/" not in split else text
        path = (self.data_root / named).resolve()
        if not path.is_relative_to(self.data_root):
            raise Forbidden(
                f"speaker: '{named}' is outside the server's data root; give a path relative "
                "to it (reactdiff serve --data-root)"
            )
        if not path.exists():
            raise NotFound(f"speaker: '{named}' does not exist under the server's data root")
        return (f"{path}:{split}" if named == store_dir else str(path)), path

    def _features(self, body: ReactBody, streams: dict[str, int]) -> tuple[dict[str, np.ndarray], list[str] | None]:
        from reactdiff.generate import load_speakers

        if body.inputs is not None:
            return speaker_features(body.inputs, streams), None
        max_clips = body.max_clips
        _shape_limit("max_clips", max_clips, self.options.max_clips, "--max-clips")
        speaker, _ = self._speaker_path(body.speaker)
        try:
            speakers = load_speakers(speaker, list(streams))
        except (OSError, ValueError, KeyError) as err:
            raise BadRequest(f"speaker: {err}") from None
        feats = {name: speakers.feats[name][:max_clips] for name in streams}
        return feats, speakers.clips[:max_clips]

    @app.post("/react")
    async def react(self, request: Request) -> Response:
        from reactdiff import predict  # torch: in the replicas, not in the `reactdiff serve` driver

        served = self.served  # the model this request finishes on, whatever the alias does meanwhile
        body = await self._body(request)
        params = body.params
        accept = request.headers.get("accept", "")
        fmt = body.format or next((f for f, media in FORMATS.items() if media in accept), "json")
        feats, clips = self._features(body, served.model.mmt.streams)
        batch, frames = next(iter(feats.values())).shape[:2]
        _shape_limit("clips (B)", batch, self.options.max_clips, "--max-clips")
        _shape_limit("frames (T)", frames, self.options.max_frames, "--max-frames")
        clip_frames(served.model, frames)
        (out,) = await asyncio.to_thread(predict.reactions, served.model, feats, params.alpha, params.mode, params.seed)
        describe = {**served.describe(), **({"clips": clips} if clips is not None else {})}
        return _encode(out, fmt, body.output, describe)

    # ------------------------------------------------------------------------------ /stream

    @app.websocket("/stream")
    async def stream(self, websocket: WebSocket) -> None:
        served = self.served  # an open stream keeps its model to the end
        await websocket.accept()
        try:
            await self._stream(websocket, served)
        except WebSocketDisconnect:
            return
        except BadRequest as err:
            await _close(
                websocket, err.status, str(err), CLOSE_TOO_LARGE if isinstance(err, TooLarge) else CLOSE_BAD_INPUT
            )
        except Exception as err:  # a fault ends this connection, never the replica
            log.exception("stream failed")
            await _close(websocket, 500, f"server fault: {type(err).__name__}: {err}", CLOSE_SERVER_FAULT)

    async def _stream(self, websocket: WebSocket, served: ServedModel) -> None:
        import torch

        try:
            start = StreamParams.model_validate(await _receive_json(websocket, "first message"))
        except ValidationError as err:
            raise refusal(err, StreamParams, "first message", prefix="params") from None
        model, streams = served.model, served.model.mmt.streams
        stream = model.open_stream(batch=1, alpha=start.alpha, seed=start.seed)
        ws = stream.window_size
        await websocket.send_json(
            {"model": served.describe(), "window_size": ws, "streams": dict(streams), "alpha": start.alpha}
        )
        window = None  # the speaker window that conditions the next listener window
        while True:
            _shape_limit(
                "stream frames", (stream.windows_done + 1) * ws, self.options.max_stream_frames, "--max-stream-frames"
            )
            out = await asyncio.to_thread(_step, stream, window)
            await websocket.send_json(_window_message(stream.windows_done - 1, out))
            feats = speaker_features(
                await _receive_json(websocket, f"speaker window {stream.windows_done - 1}"), streams, window=ws
            )
            window = {name: torch.from_numpy(values) for name, values in feats.items()}


# ------------------------------------------------------------------------------------------------
# Deploying
# ------------------------------------------------------------------------------------------------


def application(options: ServeOptions):
    """The Serve application: `ReactionServer` with the options' replicas and resources."""
    return ReactionServer.options(
        autoscaling_config={
            "min_replicas": options.min_replicas,
            "max_replicas": options.max_replicas,
            "target_ongoing_requests": options.target_ongoing_requests,
        },
        max_ongoing_requests=options.max_ongoing_requests,
        ray_actor_options={"num_cpus": options.num_cpus},
    ).bind(options)


def check_source(options: ServeOptions) -> str:
    """Fail before deploying when the model cannot be named: returns what it names now."""
    # A malformed URI, a missing file or a model the registry does not have raises, saying what to run.
    source = tracking.check_model(options.tracking_uri, options.model)
    uri, version, _ = resolve(source, options.tracking_uri)
    return uri if version is None else f"{uri} (v{version})"


def deploy(options: ServeOptions) -> str:
    """Start Serve on the Ray runtime (its proxy on options.host:port) and run the app; returns its URL."""
    from reactdiff.ray_runtime import ray_init

    ray_init()
    serve.start(http_options={"host": options.host, "port": options.port})
    serve.run(application(options), name=APP_NAME, route_prefix="/")
    return f"http://{options.host}:{options.port}"


def undeploy() -> None:
    """Ask Serve to delete the app (without waiting: `ray job stop` allows a job 3 s)."""
    serve.delete(APP_NAME, _blocking=False)
