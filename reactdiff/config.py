"""Typed, validated configuration loaded from YAML and overridable from the command line.

One `ExperimentConfig` describes a whole run (data, model, training, tracking, a sweep's size, and
the synthetic corpus the demo writes). Recipes live in `configs/*.yaml`: one may build on another
(`base: demo.yaml`) and carry `stage1:`, `stage2:` and `sweep:` blocks with the settings of one
stage or of a sweep's trials (see `load_config`). Any field can be overridden with dotted
`key=value` pairs, e.g.
`train.epochs=3 model.diffusion.window_size=25`. Values are parsed as YAML scalars, so
`train.lr=1e-3`, `train.use_gpu=true` and `model.lrs.mode=mean` all do what they look like.

Validation errors name the file (or override) and the dotted key, and say what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reactdiff.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration file or override is invalid; the message says where and what to do."""

    exit_status = 2  # argparse's status for a bad command line


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a sweep or an override must not be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------
# Model (pure PyTorch side reads only these sections)
# --------------------------------------------------------------------------------------------


class MMTConfig(_Strict):
    """Stage 1: the Multi-Modality Transformer autoencoder. Defaults follow the paper."""

    d_model: int = Field(1024, gt=0, description="width of f^v / f^a after intra-modal attention")
    n_heads: int = Field(8, gt=0)
    latent_dim: int = Field(128, gt=0, description="per-frame latent (paper 128, authors' code 256)")
    decoder_layers: int = Field(4, gt=0, description="Transformer layers of the decoder")
    ff_mult: int = Field(2, gt=0, description="feed-forward width as a multiple of the decoder width")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    latent_noise: float = Field(
        0.0,
        ge=0.0,
        description="training only: Gaussian noise added to the latent before decoding, as a fraction "
        "of each dimension's batch std, so the decoder tolerates the imperfect latents stage 2 "
        "samples (0 = the paper's plain autoencoder)",
    )
    w_3dmm: float = Field(10.0, ge=0.0, description="weight of MSE on 3DMM")
    w_emotion: float = Field(10.0, ge=0.0, description="weight of L1 on emotion")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "MMTConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        return self


class LRSConfig(_Strict):
    """Listener Reaction Shifts: per-listener standardisation of the diffusion target."""

    mode: Literal["off", "mean", "mean+scale"] = "mean"
    reference_clips: int = Field(4, ge=1, description="clips per listener used to estimate a style")
    shrinkage: float = Field(4.0, ge=0.0, description="pseudo-count k: style = (n·listener + k·global)/(n + k)")


class DiffusionConfig(_Strict):
    """Stage 2: the conditional latent DDIM."""

    window_size: int = Field(50, gt=0, description="frames per diffusion window (ws)")
    steps: int = Field(20, gt=1, description="diffusion steps T (training and DDIM sampling)")
    cond_dim: int = Field(1024, gt=0, description="width of the speaker condition z_bc")
    unet_channels: list[int] = Field(default_factory=lambda: [128, 256], min_length=1)
    time_embed_dim: int = Field(128, gt=0)
    ema_decay: float = Field(
        0.999,
        ge=0.0,
        lt=1.0,
        description="EMA decay of the denoiser used for sampling, warmed up as min(decay, (1+n)/(10+n))",
    )
    condition_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="classifier-free guidance training: probability of zeroing the speaker "
        "condition (0 = the paper's plain conditional model)",
    )
    guidance_scale: float = Field(
        1.0,
        ge=0.0,
        description="classifier-free guidance weight at sampling; 1 = plain conditional sampling "
        "(values != 1 need condition_dropout > 0 in training)",
    )
    layout: Literal["frames", "time"] = Field(
        "frames",
        description="the denoiser's 1-D UNet: 'frames' (the paper's) reads a window's frames as channels and "
        "convolves along the latent dims; 'time' convolves along the frames, with the speaker's frames as "
        "per-frame input besides z_bc",
    )
    condition_context: int = Field(
        0,
        ge=0,
        description="speaker frames before a listener window's own span that condition it (zeros before the "
        "clip starts): a listener reacting with a lag needs the speaker's recent past at a window's start",
    )
    prediction: Literal["epsilon", "sample", "v_prediction"] = Field(
        "epsilon",
        description="what the denoiser predicts: the paper's noise 'epsilon', the clean latent 'sample' "
        "(x0, as most motion diffusion models) or 'v_prediction'",
    )
    condition_norm: Literal["group", "none"] = Field(
        "group",
        description="z_bc = SiLU(norm(Linear(speaker window))): 'group' is the paper's GroupNorm, which "
        "removes part of the window's level (how aroused, how positive); 'none' keeps it",
    )
    pad_mode: Literal["replicate", "drop"] = Field(
        "replicate",
        description="a clip length that ws does not divide: 'replicate' pads the last window by "
        "repeating the final frame and trims the output back; 'drop' refuses such a length",
    )
    train_mode: Literal["offline", "online"] = Field(
        "offline",
        description="condition stage 2 trains on: 'offline' pairs listener window t with speaker "
        "window t; 'online' with speaker window t-1 (zeros for the first) and runs the MMT "
        "window-causally, as online generation does",
    )

    @model_validator(mode="after")
    def _guidance_needs_condition_dropout(self) -> "DiffusionConfig":
        if self.guidance_scale != 1.0 and self.condition_dropout == 0.0:
            raise ValueError(
                f"guidance_scale={self.guidance_scale} needs a denoiser that also learned the "
                "unconditional case: train with model.diffusion.condition_dropout > 0 (e.g. 0.1) "
                "or keep guidance_scale=1"
            )
        return self


class ModelConfig(_Strict):
    mmt: MMTConfig = MMTConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    lrs: LRSConfig = LRSConfig()
    binarise_au: bool = Field(False, description="threshold generated AUs at 0.5")


# --------------------------------------------------------------------------------------------
# Data, training, tracking
# --------------------------------------------------------------------------------------------


class DataConfig(_Strict):
    # str, not Path: a Path would fold the '//' of s3://bucket/prefix.
    store: str = Field(
        "data/store",
        description="feature store written by `prepare`: a folder or a pyarrow.fs URI (s3://bucket/prefix)",
    )
    corpus: Path | None = Field(
        None,
        description="the corpus the store was prepared from; `evaluate` reads the speakers' real video "
        "and audio from it for its videos (none: no videos)",
    )
    train_split: str = "train"
    val_split: str = "val"
    crop_frames: int = Field(0, ge=0, description="random crop length per training sample; 0 trains on whole clips")
    shuffle_rows: int = Field(
        16,
        ge=0,
        description="rows (dyads) each training worker keeps waiting to draw its batches from at random, "
        "reseeded every epoch; the rows are views, but their Arrow blocks stay in memory while any of "
        "them waits; 0 reads in store order",
    )
    stage2_latents: Literal["cached", "encoded"] = Field(
        "cached",
        description="stage 2: 'cached' encodes every training clip once per run through the frozen MMT and "
        "crops in latent space (the encoder sees whole clips, as in generation; only the denoiser runs per "
        "step); 'encoded' crops the features and encodes them at every step",
    )
    cache: Literal["auto", "always", "never"] = Field(
        "auto",
        description="keep a split in Ray's object store after its first read instead of decoding its "
        "Parquet files every epoch; auto: when it takes at most a quarter of the cluster's object store",
    )


class TrainConfig(_Strict):
    stage: Literal[1, 2] = 1
    name: str = Field("reactdiff", description="run name; re-running the same name resumes")
    storage_path: Path = Field(Path("runs"), description="checkpoints (shared storage on a cluster)")
    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK",
        description="how Ray places the workers on nodes: PACK fills nodes first; STRICT_SPREAD puts each "
        "worker on its own node (one worker per node, e.g. a multi-node run with one GPU per node)",
    )
    strategy: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: Literal[1, 2] = 2
    precision: Literal["fp32", "bf16"] = "fp32"
    batch_size: int = Field(16, ge=1, description="global batch size (split across workers)")
    epochs: int = Field(100, ge=1)
    lr: float = Field(5e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    checkpoints_to_keep: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0, description="worker restarts from the latest checkpoint")
    stage1_model: str = Field(
        "",
        description="stage 2 only: the frozen MMT, a checkpoint path or an MLflow model URI "
        "such as models:/reactdiff-mmt@champion",
    )
    seed: int = 0
    eval_every: int = Field(
        1,
        ge=1,
        description="stage 2: score generated val reactions with the REACT2024 metrics every this many "
        "epochs and at the last (val_FRDist, ...); stage 1 reports its reconstruction metrics every epoch",
    )
    eval_alpha: int | None = Field(
        None,
        ge=1,
        description="reactions per val speaker in that scoring; unset: 3 in sweeps, 10 otherwise",
    )
    eval_samples: int = Field(
        0,
        ge=0,
        description="score a fixed subset of this many val samples (seeded by train.seed); 0 = all",
    )
    eval_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="the denoiser's precision while scoring (encoding, decoding and DDIM steps stay fp32): "
        "auto = bf16 where it runs natively (CUDA, or a CPU with AVX-512 BF16/AMX), else fp32",
    )

    @model_validator(mode="after")
    def _bf16_needs_gpu(self) -> "TrainConfig":
        if self.precision == "bf16" and not self.use_gpu:
            raise ValueError("precision=bf16 needs use_gpu=true; CPU workers train in fp32")
        return self


class TrackingConfig(_Strict):
    tracking_uri: str = Field(
        default_factory=lambda: os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        description="an MLflow server URL or a local sqlite:/// URI (default: $MLFLOW_TRACKING_URI, "
        "as for MLflow's own tools, else sqlite:///mlflow.db)",
    )
    experiment: str = "reactdiff"
    registered_model: str = Field("reactdiff", description="registry name for promoted models")


class TuneConfig(_Strict):
    """`reactdiff tune` defaults a recipe sets; the command's flags override them."""

    space: Path | None = Field(None, description="search space YAML (tune_spaces/); --space overrides")
    num_samples: int = Field(4, ge=1, description="trials; --num-samples overrides")


class SynthConfig(_Strict):
    """The synthetic corpus `reactdiff synth --config` and `reactdiff demo` write."""

    dyads: int = Field(40, ge=1, description="train dyads (split CSV rows)")
    val_dyads: int = Field(10, ge=1)
    # The test split is scored against the baselines, so it wants several sessions: with few, the
    # verdict hangs on a handful of people's chance resemblances (e.g. speaker and listener styles
    # that happen to match, which favours B_Mime).
    test_dyads: int = Field(10, ge=1)
    frames: int = Field(750, ge=2, description="frames used per clip (files hold one more, like REACT2024)")
    video_size: int = Field(64, ge=8, description="pixels of the square MP4s")
    seed: int = 0


class DemoConfig(_Strict):
    """What `reactdiff demo` does beyond training: its online evaluation and final generation."""

    online_samples: int = Field(4, ge=1, description="test samples of the online-mode evaluation")
    generated_clips: int = Field(4, ge=1, description="test speakers the final `generate` writes reactions for")


class ExperimentConfig(_Strict):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)  # reads $MLFLOW_TRACKING_URI at load time
    tune: TuneConfig = TuneConfig()
    synth: SynthConfig = SynthConfig()
    demo: DemoConfig = DemoConfig()


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: '{dotted}' goes through '{key}', which is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """Parse `key=value` strings; values are YAML scalars (numbers, booleans, lists)."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.epochs=3)")
        key, raw = item.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(raw) if raw != "" else ""))
    return parsed


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key (check the spelling; see `reactdiff config`)")
        else:
            lines.append(f"  {where}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def read_yaml_mapping(path: str | Path, what: str, where: str, expected: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is an empty one), or a ConfigError
    naming the file and saying what was expected."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist ({where})")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be {expected}")
    return tree


# A recipe's optional top-level blocks beyond the sections: settings for one stage, and for the
# trials of a sweep. They hold the same sections and are merged over the recipe's own values.
STAGE_BLOCKS = {1: "stage1", 2: "stage2"}
SWEEP_BLOCK = "sweep"
BASE_KEY = "base"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid over `base`, section by section (a list or a scalar replaces the base's)."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_recipe(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe's tree, with the recipe it names as `base:` (relative to its own folder) beneath it."""
    path = Path(path)
    tree = read_yaml_mapping(path, "config file", "recipes live in configs/", "a mapping of sections")
    if BASE_KEY not in tree:
        return tree
    base = path.parent / str(tree.pop(BASE_KEY))
    if base.resolve() in seen:
        raise ConfigError(f"{path}: base: {base} makes a cycle ({' → '.join(str(p) for p in seen)})")
    return _merge(_read_recipe(base, (*seen, path.resolve())), tree)


def _validate(tree: dict[str, Any], source: str) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, *, stage: int | None = None, sweep: bool = False
) -> ExperimentConfig:
    """Load a YAML recipe (or the defaults when `path` is None) and apply dotted overrides.

    The recipe's `stage1:`/`stage2:` block is laid over it for the run's stage (`stage`, else a
    `train.stage` override, else the recipe's), then its `sweep:` block when `sweep` is set, then
    the overrides. Each block is checked even when unused, so a typo in one fails every command.
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        tree = _read_recipe(Path(path))
    blocks = {name: tree.pop(name) for name in (*STAGE_BLOCKS.values(), SWEEP_BLOCK) if name in tree}
    for name, block in blocks.items():
        if not isinstance(block, dict):
            raise ConfigError(f"{source}: '{name}' must be a mapping of sections (e.g. train: {{epochs: 10}})")
        _validate(_merge(tree, block), f"{source}, block '{name}'")
    parsed = parse_overrides(overrides or [])
    stage = (
        stage
        or next((int(value) for key, value in parsed if key == "train.stage"), None)
        or tree.get("train", {}).get("stage", 1)
    )
    if stage not in STAGE_BLOCKS:
        raise ConfigError(f"{source}: train.stage must be 1 or 2 (got {stage!r})")
    tree = _merge(tree, {"train": {"stage": stage}})
    tree = _merge(tree, blocks.get(STAGE_BLOCKS[stage], {}))
    if sweep:
        tree = _merge(tree, blocks.get(SWEEP_BLOCK, {}))
    for key, value in parsed:
        _set_dotted(tree, key, value, f"override {key}")
    if overrides:
        source += " + overrides " + " ".join(overrides)
    return _validate(tree, source)


def flatten(config: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of a config (used for MLflow params and tune-space validation)."""
    flat: dict[str, Any] = {}
    for name, value in config:
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            flat.update(flatten(value, key + "."))
        else:
            flat[key] = str(value) if isinstance(value, Path) else value
    return flat


def apply_flat(config: ExperimentConfig, flat: dict[str, Any], source: str) -> ExperimentConfig:
    """Return a copy of `config` with dotted keys replaced (used by sweeps)."""
    tree = config.model_dump(mode="json")
    for key, value in flat.items():
        _set_dotted(tree, key, value, source)
    return _validate(tree, source)
