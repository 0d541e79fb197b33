"""Config loading: recipes, overrides and the errors a user sees for bad files."""

from __future__ import annotations

import pytest

from reactdiff.config import ConfigError, load_config


def test_recipe_and_overrides(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train: {epochs: 3}\nmodel: {lrs: {mode: 'off'}}\n")
    cfg = load_config(recipe, ["train.lr=1e-3", "model.mmt.latent_noise=0.3"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.lrs.mode) == (3, 1e-3, "off")
    assert cfg.model.mmt.latent_noise == 0.3


@pytest.mark.parametrize(("text", "message"), [
    (None, "config file .*missing.yaml does not exist"),
    ("train: [epochs: 3", "is not valid YAML"),
    ("- train\n- model\n", "top level must be a mapping of sections"),
    ("train: {epoch: 3}\n", "train.epoch"),
])
def test_bad_recipes_name_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "missing.yaml"
    if text is not None:
        path = tmp_path / "recipe.yaml"
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_bad_override_names_the_key():
    with pytest.raises(ConfigError, match="model.diffusion.condition_dropout"):
        load_config(None, ["model.diffusion.condition_dropout=1.5"])


def test_guidance_without_condition_dropout_is_refused():
    with pytest.raises(ConfigError, match="condition_dropout > 0"):
        load_config(None, ["model.diffusion.guidance_scale=2"])
    assert load_config(None, ["model.diffusion.guidance_scale=2",
                              "model.diffusion.condition_dropout=0.1"]).model.diffusion.guidance_scale == 2
