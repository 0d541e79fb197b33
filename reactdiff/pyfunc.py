"""The served model: the MLflow pyfunc class that `tracking.log_model` logs with a checkpoint,
and what it is logged with (its artifact name, pinned requirements and params signature).
`mlflow models serve` runs it; `reactdiff.tracking` logs and loads it."""

from __future__ import annotations

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from reactdiff import request_checks
from reactdiff.request_checks import BadRequest

CHECKPOINT_ARTIFACT = "checkpoint"  # the pyfunc's artifact: the single-file checkpoint


def _bad_request(err: BadRequest) -> MlflowException:
    # INVALID_PARAMETER_VALUE is answered with HTTP 400 and this message by the scoring server;
    # any other exception from predict becomes a 400 with a generic message that hides the cause.
    return MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE)


class ReactDiffPyfunc(mlflow.pyfunc.PythonModel):
    """The served model: loads the single-file checkpoint and generates reactions.

    Input: a dict of speaker feature arrays {stream: (B, T, D)} with exactly the model's streams (as
    the feature store gives them). Params: alpha (1..MAX_ALPHA, default 10), mode ("offline" |
    "online"), seed (None). Output: {"3dmm": (B, α, T, 58), "emotion": (B, α, T, 25)} as numpy,
    from `reactdiff.predict`, batched and seeded as `generate` and `evaluate` do. A
    stage-1 model returns its reconstruction {"3dmm": (B, T, 58), "emotion": (B, T, 25)} instead.
    A malformed request raises an MlflowException with INVALID_PARAMETER_VALUE (HTTP 400 when served)
    naming the field, what was expected and what to send.
    """

    def load_context(self, context) -> None:
        from reactdiff.models.checkpoint import load_checkpoint

        self.model = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT])

    def predict(self, context, model_input, params=None):
        import torch

        from reactdiff import predict
        from reactdiff.models.mmt import MMT

        stage1 = isinstance(self.model, MMT)
        try:
            feats = request_checks.speaker_features(
                model_input, self.model.streams if stage1 else self.model.mmt.streams
            )
            if not stage1:
                alpha, mode, seed = request_checks.generation_params(params)
                request_checks.clip_frames(self.model, next(iter(feats.values())).shape[1])
        except BadRequest as err:
            raise _bad_request(err) from None
        if not stage1:
            (out,) = predict.reactions(self.model, feats, alpha, mode, seed)
            return out
        with torch.inference_mode():
            threedmm, emotion = self.model.decode(self.model.encode(predict.tensors(feats)))
        return {"3dmm": threedmm.numpy(), "emotion": emotion.numpy()}


# Pinned explicitly: MLflow would otherwise load the model in a subprocess to infer them.
MODEL_REQUIREMENTS = ["torch==2.11.0", "diffusers==0.42.1", "numpy", "pydantic", "pyyaml"]


def signature():
    """Declares the inference params: without them MLflow silently drops alpha/mode/seed."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec

    return ModelSignature(
        params=ParamSchema(
            [
                ParamSpec("alpha", "long", request_checks.DEFAULT_ALPHA),
                ParamSpec("mode", "string", request_checks.MODES[0]),
                ParamSpec("seed", "long", None),
            ]
        )
    )
