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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "config file .*missing.yaml does not exist"),
        ("train: [epochs: 3", "is not valid YAML"),
        ("- train\n- model\n", "top level must be a mapping of sections"),
        ("train: {epoch: 3}\n", "train.epoch"),
    ],
)
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
    assert (
        load_config(
            None, ["model.diffusion.guidance_scale=2", "model.diffusion.condition_dropout=0.1"]
        ).model.diffusion.guidance_scale
        == 2
    )


def test_stage_and_sweep_blocks_lay_over_the_recipe_and_overrides_win(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "train: {epochs: 5, lr: 0.1}\n"
        "stage1: {train: {epochs: 10}}\n"
        "stage2: {train: {epochs: 20}, data: {crop_frames: 70}}\n"
        "sweep: {train: {epochs: 2, num_workers: 1}}\n"
    )
    assert load_config(recipe).train.epochs == 10  # stage 1 is the default stage
    stage2 = load_config(recipe, stage=2)
    assert (stage2.train.stage, stage2.train.epochs, stage2.data.crop_frames, stage2.train.lr) == (2, 20, 70, 0.1)
    assert load_config(recipe, ["train.stage=2"]).train.epochs == 20  # the override picks the block
    trial = load_config(recipe, stage=2, sweep=True)
    assert (trial.train.epochs, trial.train.num_workers, trial.data.crop_frames) == (2, 1, 70)
    assert load_config(recipe, ["train.epochs=3"], stage=2, sweep=True).train.epochs == 3


def test_a_recipe_builds_on_its_base(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "model: {mmt: {d_model: 64, n_heads: 4}}\nstage1: {train: {epochs: 10}}\ntune: {num_samples: 8}\n"
    )
    (tmp_path / "small.yaml").write_text("base: base.yaml\nmodel: {mmt: {d_model: 32}}\ntune: {num_samples: 1}\n")
    cfg = load_config(tmp_path / "small.yaml")
    assert (cfg.model.mmt.d_model, cfg.model.mmt.n_heads, cfg.train.epochs, cfg.tune.num_samples) == (32, 4, 10, 1)
    (tmp_path / "base.yaml").write_text("base: small.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "small.yaml")


def test_a_typo_in_an_unused_block_is_still_refused(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stage2: {train: {epoch: 20}}\n")
    with pytest.raises(ConfigError, match="(?s)block 'stage2'.*train.epoch"):
        load_config(recipe, stage=1)


def test_the_shipped_recipes_carry_what_the_demo_needs():
    from reactdiff.demo import RECIPES

    full, small = (load_config(RECIPES[size], stage=2, sweep=True) for size in ("full", "small"))
    root = RECIPES["full"].parents[1]
    from reactdiff.tune.space import load_space

    for recipe in (full, small):  # the recipe's search space parses and samples, against the recipe
        assert load_space(root / recipe.tune.space, recipe, stage=2).sampled
    assert small.synth.dyads < full.synth.dyads and small.train.epochs <= full.train.epochs
    assert small.train.name == full.train.name == "demo-sweep"  # small builds on full, not a copy


def test_the_tracking_uri_defaults_to_mlflows_environment_variable(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert load_config(None).tracking.tracking_uri == "http://127.0.0.1:5999"
    assert (
        load_config(None, ["tracking.tracking_uri=sqlite:////tmp/x.db"]).tracking.tracking_uri == "sqlite:////tmp/x.db"
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert load_config(None).tracking.tracking_uri == "sqlite:///mlflow.db"


def test_tune_without_a_space_says_where_to_give_one(tmp_path, capsys):
    from reactdiff.cli import main

    status = main(["tune", "--stage", "2", "--log-dir", str(tmp_path)])  # the defaults name no space
    assert status == 2
    assert "no search space: give --space" in capsys.readouterr().err
