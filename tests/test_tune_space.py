"""Search-space files: parsing into Tune domains, and one clear error (file + key) per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.tune.search.sample import Categorical, Float, Integer, LogUniform

from reactdiff.config import ConfigError, ExperimentConfig, load_config
from reactdiff.tune import load_space

ROOT = Path(__file__).parent.parent
TINY = load_config(ROOT / "configs" / "tiny.yaml")


def space_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_every_kind_parses_into_a_tune_domain(tmp_path: Path) -> None:
    path = space_file(
        tmp_path,
        """
train.lr: {loguniform: [1e-4, 1.0e-2]}
model.lrs.shrinkage: {uniform: [0.5, 4]}
model.lrs.reference_clips: {int: [2, 5]}
model.diffusion.window_size: {choice: [5, 10, 25]}
model.lrs.mode: {grid: ["off", "mean+scale"]}
model.diffusion.steps: 8
""",
    )
    space = load_space(path, TINY, stage=2, frames=50)
    domains = space.param_space()

    assert space.constants == {"model.diffusion.steps": 8}
    assert space.apply_constants(TINY).model.diffusion.steps == 8
    assert isinstance(domains["train.lr"], Float) and isinstance(domains["train.lr"].sampler, LogUniform)
    assert (domains["train.lr"].lower, domains["train.lr"].upper) == (1e-4, 1e-2)  # "1e-4" read as a number
    assert isinstance(domains["model.lrs.shrinkage"], Float)
    assert (domains["model.lrs.shrinkage"].lower, domains["model.lrs.shrinkage"].upper) == (0.5, 4)
    assert isinstance(domains["model.lrs.reference_clips"], Integer)
    assert (domains["model.lrs.reference_clips"].lower, domains["model.lrs.reference_clips"].upper) == (2, 6)
    assert isinstance(domains["model.diffusion.window_size"], Categorical)
    assert domains["model.diffusion.window_size"].categories == [5, 10, 25]
    assert domains["model.lrs.mode"] == {"grid_search": ["off", "mean+scale"]}
    assert space.has_grid() and "model.diffusion.steps" not in domains


@pytest.mark.parametrize("name, stage", [("stage1.yaml", 1), ("stage2.yaml", 2), ("tiny_stage2.yaml", 2)])
def test_shipped_spaces_are_valid(name: str, stage: int) -> None:
    base = TINY if name.startswith("tiny") else ExperimentConfig()
    space = load_space(ROOT / "tune_spaces" / name, base, stage, frames=750 if base is not TINY else 50)
    assert space.sampled


def error_of(tmp_path: Path, text: str, stage: int = 2, base: ExperimentConfig = TINY, frames: int | None = 50) -> str:
    path = space_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_space(path, base, stage, frames=frames)
    message = str(info.value)
    assert str(path) in message
    return message


def test_unknown_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, "model.diffusion.windowsize: {choice: [5, 10]}\n")
    assert "model.diffusion.windowsize" in message and "unknown key" in message


def test_range_with_lo_not_below_hi(tmp_path: Path) -> None:
    message = error_of(tmp_path, "model.lrs.shrinkage: {uniform: [4.0, 1.0]}\n")
    assert "model.lrs.shrinkage" in message and "lo < hi" in message


def test_loguniform_needs_a_positive_lower_end(tmp_path: Path) -> None:
    message = error_of(tmp_path, "train.lr: {loguniform: [0, 1.0e-2]}\n")
    assert "train.lr" in message and "0 < lo" in message


def test_empty_choice(tmp_path: Path) -> None:
    message = error_of(tmp_path, "model.diffusion.window_size: {choice: []}\n")
    assert "model.diffusion.window_size" in message and "at least one value" in message


def test_value_the_config_refuses(tmp_path: Path) -> None:
    message = error_of(tmp_path, "model.lrs.mode: {choice: [mean, sideways]}\n")
    assert "model.lrs.mode" in message and "sideways" in message


def test_range_end_the_config_refuses(tmp_path: Path) -> None:
    message = error_of(tmp_path, "model.lrs.reference_clips: {randint: [0, 4]}\n")  # the config needs >= 1
    assert "model.lrs.reference_clips" in message and "greater than or equal to 1" in message


def test_bare_off_gets_a_quoting_hint(tmp_path: Path) -> None:
    message = error_of(tmp_path, "model.lrs.mode: {grid: [off, mean]}\n")
    assert "model.lrs.mode" in message and "quote" in message


def test_float_range_on_an_integer_field(tmp_path: Path) -> None:
    message = error_of(tmp_path, "model.diffusion.steps: {uniform: [4, 20]}\n")
    assert "model.diffusion.steps" in message and "randint" in message


def test_unknown_distribution(tmp_path: Path) -> None:
    message = error_of(tmp_path, "train.lr: {normal: [0.001, 0.0001]}\n")
    assert "train.lr" in message and "unknown distribution 'normal'" in message


def test_keys_the_sweep_sets_or_the_stage_ignores(tmp_path: Path) -> None:
    assert "set by the sweep" in error_of(tmp_path, "train.stage: 1\n")
    assert "train.epochs" in error_of(tmp_path, "train.epochs: {choice: [2, 4]}\n")
    message = error_of(tmp_path, "model.mmt.latent_dim: {choice: [8, 16]}\n", stage=2)
    assert "model.mmt.latent_dim" in message and "stage1_model" in message
    assert "model.lrs.shrinkage" in error_of(tmp_path, "model.lrs.shrinkage: 2.0\n", stage=1)


def test_window_size_must_divide_the_clip_only_with_pad_mode_drop(tmp_path: Path) -> None:
    text = "model.diffusion.window_size: {choice: [10, 15, 25]}\n"
    load_space(space_file(tmp_path, text), TINY, stage=2, frames=50)  # replicate pads 50 frames to 60
    message = error_of(tmp_path, text + "model.diffusion.pad_mode: drop\n", frames=50)
    assert "model.diffusion.window_size" in message and "[15]" in message and "50 frames" in message
    load_space(space_file(tmp_path, text + "model.diffusion.pad_mode: drop\n"), TINY, stage=2, frames=None)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_space(tmp_path / "nope.yaml", TINY, stage=2)
