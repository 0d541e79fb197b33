"""reactdiff.tracking is MLflow's one door: every call names its server, so two servers serve one
process side by side; and `parse_model` is the one reader of model references."""

from __future__ import annotations

import os
import re

import mlflow
import pytest
import torch
from test_generate import save_tiny_checkpoint

from reactdiff import tracking
from reactdiff.errors import ModelNotFound
from reactdiff.mlflow_server import mlflow_server
from reactdiff.models import MMT, load_checkpoint


@pytest.fixture(scope="module")
def second_server(tmp_path_factory) -> str:
    """A second real `mlflow server`, besides the session's `tracking_uri`."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow-second")) as url:
        yield url


def test_two_runs_on_two_servers_in_one_process_each_log_to_their_own(tracking_uri, second_server, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "stage2.pt")
    global_before, env_before = mlflow.get_tracking_uri(), os.environ.get(tracking.MLFLOW_TRACKING_URI_ENV)
    servers = {"a": tracking_uri, "b": second_server}
    clients = {name: tracking.client_for(url) for name, url in servers.items()}
    runs = {
        name: tracking.start_or_resume_run(client, "two-servers", f"run-{name}", tags={}, params={"server": name})
        for name, client in clients.items()
    }
    # Interleaved, as a sweep's driver and an evaluation in one process would: epochs of both runs,
    # then a model logged to A (the one call that needs MLflow's global URI) between B's epochs.
    for epoch in range(2):
        for index, (name, client) in enumerate(clients.items()):
            tracking.log_epoch(client, runs[name], {"train_loss": 10.0 * (index + 1) + epoch}, epoch)
    model_uri = tracking.log_model(clients["a"], runs["a"], checkpoint)
    tracking.log_epoch(clients["b"], runs["b"], {"train_loss": 99.0}, 2)
    for name, client in clients.items():
        tracking.finish_run(client, runs[name])

    # log_model put the global URI back, and the environment variable MLflow writes with it.
    assert mlflow.get_tracking_uri() == global_before
    assert os.environ.get(tracking.MLFLOW_TRACKING_URI_ENV) == env_before
    history = {
        name: [(m.step, m.value) for m in client.get_metric_history(runs[name], "train_loss")]
        for name, client in clients.items()
    }
    assert sorted(history["a"]) == [(0, 10.0), (1, 11.0)]
    assert sorted(history["b"]) == [(0, 20.0), (1, 21.0), (2, 99.0)]
    for name, other in (("a", "b"), ("b", "a")):
        run = clients[name].get_run(runs[name])
        assert run.info.status == "FINISHED" and run.data.params == {"server": name}
        assert (
            clients[other].search_runs(
                [tracking.experiment_id(clients[other], "two-servers")],
                filter_string=f"attributes.run_id = '{runs[name]}'",
            )
            == []
        )  # not on the other server
    # The model is on A's server only: it resolves there, and B has no such run.
    assert tracking.parse_model(model_uri).source_run(clients["a"]) == runs["a"]
    run_uri = f"runs:/{runs['a']}/{tracking.MODEL_ARTIFACT}"
    for uri in (model_uri, run_uri):
        resolved = load_checkpoint(tracking.resolve_checkpoint(servers["a"], uri))
        torch.testing.assert_close(resolved.state_dict(), load_checkpoint(checkpoint).state_dict(), rtol=0, atol=0)
        with pytest.raises(ModelNotFound, match=f"{re.escape(uri)}' does not resolve on {servers['b']}"):
            tracking.resolve_checkpoint(servers["b"], uri)


@pytest.mark.parametrize(
    "text, fields",
    [
        ("runs:/abc123/model", {"kind": "run", "run_id": "abc123"}),
        ("models:/reactdiff@champion", {"kind": "registered", "name": "reactdiff", "alias": "champion"}),
        ("models:/reactdiff/3", {"kind": "registered", "name": "reactdiff", "version": "3"}),
        ("models:/m-0123abcd", {"kind": "logged", "name": "m-0123abcd"}),
    ],
)
def test_model_uris_parse_into_their_parts(text, fields):
    ref = tracking.parse_model(text)
    assert {key: getattr(ref, key) for key in fields} == fields and not ref.is_file


@pytest.mark.parametrize(
    "text, message",
    [
        ("runs:/abc123", "runs:/<run id>/<artifact path>"),
        ("models:/reactdiff@", "models:/<name>@<alias>"),
        ("models:/reactdiff/latest", "models:/<name>/<version number>"),
    ],
)
def test_malformed_model_uris_name_the_expected_form(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tracking.parse_model(text)


def test_a_file_is_a_file_and_a_missing_one_names_both_forms(tmp_path, untrained_stage1):
    ref = tracking.parse_model(untrained_stage1)
    assert ref.is_file and isinstance(load_checkpoint(tracking.resolve_checkpoint("unused://", ref)), MMT)
    with pytest.raises(FileNotFoundError, match="neither a checkpoint file nor an MLflow URI"):
        tracking.parse_model(tmp_path / "missing.pt")
