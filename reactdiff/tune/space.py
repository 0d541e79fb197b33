"""Search spaces for `reactdiff tune`: YAML files (tune_spaces/*.yaml) that map dotted config keys
(those `reactdiff config` prints) to a constant or to one distribution:

    train.lr: {loguniform: [1.0e-4, 1.0e-2]}        # float, log-uniform in [lo, hi)
    model.mmt.w_3dmm: {uniform: [1.0, 20.0]}         # float, uniform in [lo, hi)
    model.lrs.reference_clips: {randint: [2, 8]}     # integer in lo..hi, both included (`int:` too)
    model.diffusion.window_size: {choice: [25, 50]}  # one of the values, drawn per trial
    model.lrs.mode: {grid: ["off", "mean"]}          # every value, each num_samples times (random search)
    model.lrs.shrinkage: 4.0                         # a constant, applied to every trial

Write floats as `1.0e-3` and quote "off"/"on"/"yes"/"no": YAML 1.1 reads `1e-3` as a string
(range ends are converted anyway) and bare `off` as a boolean. The space is checked before any
trial starts: every key must be a config field relevant to the stage (stage 2 takes its MMT from
`train.stage1_model`, so `model.mmt.*` is refused there; stage 1 refuses `model.diffusion.*` and
`model.lrs.*`); `train.name`/`train.stage` are set by the sweep and `train.epochs` can only be a
constant (it is ASHA's max_t); ranges need lo < hi (and lo > 0 for loguniform), float ranges need
a float field, `randint` an integer one; every choice/grid value and both ends of every range must
be accepted by the config. A window size that does not divide the clip length is fine with the
default `model.diffusion.pad_mode=replicate`; with `drop` it is refused against the store's frame
count. Errors name the file and the key.

A space file may also say which metric it is meant for, under the reserved key `sweep`:

    sweep: {metric: val_FRDist, mode: min}       # or {objectives: "val_FRDist:min,val_FRDiv:max"}

`reactdiff tune` uses it when no --metric/--objectives is given (reactdiff/tune/objectives.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reactdiff.config import ConfigError, ExperimentConfig, apply_flat, flatten, read_yaml_mapping

RANGE_KINDS = ("uniform", "loguniform", "randint")
LIST_KINDS = ("choice", "grid")
KIND_ALIASES = {"int": "randint"}
SET_BY_SWEEP = ("train.name", "train.stage")
# Sections a stage's training never reads: sweeping them would waste trials.
IGNORED_BY_STAGE = {1: ("model.diffusion.", "model.lrs."), 2: ("model.mmt.",)}
OBJECTIVE_KEY = "sweep"  # the metric a space is meant for, not a config key


@dataclass(frozen=True)
class Param:
    key: str
    kind: str  # "constant" | "choice" | "grid" | "uniform" | "loguniform" | "randint"
    values: tuple  # the constant, the choice/grid values, or (lo, hi)

    def domain(self):
        """The Ray Tune domain of a sampled parameter."""
        from ray import tune

        lo, hi = self.values[0], self.values[-1]
        return {
            "choice": lambda: tune.choice(list(self.values)),
            "grid": lambda: tune.grid_search(list(self.values)),
            "uniform": lambda: tune.uniform(lo, hi),
            "loguniform": lambda: tune.loguniform(lo, hi),
            "randint": lambda: tune.randint(lo, hi + 1),  # Tune's upper bound is exclusive
        }[self.kind]()


@dataclass
class SearchSpace:
    source: Path
    params: dict[str, Param]
    objective: dict[str, str] = field(default_factory=dict)  # the file's `sweep:` entry, unchecked

    @property
    def constants(self) -> dict[str, Any]:
        return {k: p.values[0] for k, p in self.params.items() if p.kind == "constant"}

    @property
    def sampled(self) -> dict[str, Param]:
        return {k: p for k, p in self.params.items() if p.kind != "constant"}

    def has_grid(self) -> bool:
        return any(p.kind == "grid" for p in self.params.values())

    def param_space(self) -> dict[str, Any]:
        return {k: p.domain() for k, p in self.sampled.items()}

    def apply_constants(self, cfg: ExperimentConfig) -> ExperimentConfig:
        return apply_flat(cfg, self.constants, f"{self.source} (constants)")


def _fail(source: Path, key: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {message}")


def _number(source: Path, key: str, value: Any) -> float:
    """A range end; YAML 1.1 leaves `1e-3` a string, so numeric strings are accepted."""
    if isinstance(value, bool):
        raise _fail(source, key, f"range ends must be numbers, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _fail(source, key, f"range ends must be numbers, got {value!r}") from None


def _check_value(base: ExperimentConfig, source: Path, key: str, value: Any) -> Any:
    """Validate one candidate by building the config; returns it as the config stores it."""
    try:
        return flatten(apply_flat(base, {key: value}, f"{source} key {key} value {value!r}"))[key]
    except ConfigError as err:
        hint = ""
        if isinstance(value, bool) and isinstance(flatten(base)[key], str):
            hint = " (YAML reads bare off/on/yes/no as booleans: quote the value)"
        raise ConfigError(f"{err}{hint}") from None


def _parse_param(base: ExperimentConfig, defaults: dict[str, Any], source: Path, key: str, spec: Any) -> Param:
    if not isinstance(spec, dict):
        return Param(key, "constant", (_check_value(base, source, key, spec),))
    kinds = ", ".join(LIST_KINDS + RANGE_KINDS)
    if len(spec) != 1:
        raise _fail(source, key, f"a distribution has exactly one of {kinds}; got {sorted(spec)}")
    ((raw_kind, args),) = spec.items()
    kind = KIND_ALIASES.get(raw_kind, raw_kind)
    if kind not in LIST_KINDS + RANGE_KINDS:
        raise _fail(source, key, f"unknown distribution '{raw_kind}' (expected one of {kinds}, or a constant)")
    if key == "train.epochs":
        raise _fail(source, key, "train.epochs is ASHA's max_t: give it as a constant")
    if not isinstance(args, list):
        raise _fail(source, key, f"{raw_kind} takes a list, got {args!r}")

    if kind in LIST_KINDS:
        if not args:
            raise _fail(source, key, f"{raw_kind} needs at least one value")
        return Param(key, kind, tuple(_check_value(base, source, key, v) for v in args))

    if len(args) != 2:
        raise _fail(source, key, f"{raw_kind} takes [lo, hi], got {args!r}")
    lo, hi = (_number(source, key, v) for v in args)
    if not lo < hi:
        raise _fail(source, key, f"{raw_kind} needs lo < hi, got [{args[0]}, {args[1]}]")
    default = defaults[key]
    is_int_field = isinstance(default, int) and not isinstance(default, bool)
    if kind == "randint":
        if not is_int_field:
            raise _fail(
                source,
                key,
                f"randint needs an integer field; {key} is {type(default).__name__}: use uniform/loguniform or choice",
            )
        if lo != int(lo) or hi != int(hi):
            raise _fail(source, key, f"randint takes integer ends, got [{args[0]}, {args[1]}]")
        lo, hi = int(lo), int(hi)
    else:
        if not isinstance(default, float):
            raise _fail(
                source, key, f"{kind} samples floats but {key} is {type(default).__name__}: use randint or choice"
            )
        if kind == "loguniform" and lo <= 0:
            raise _fail(source, key, f"loguniform needs 0 < lo, got lo={args[0]}")
    return Param(key, kind, (_check_value(base, source, key, lo), _check_value(base, source, key, hi)))


def _candidates(param: Param | None, fallback: Any) -> list[Any]:
    """Every value a key can take in a trial (ranges of ints enumerated)."""
    if param is None:
        return [fallback]
    if param.kind == "randint":
        return list(range(param.values[0], param.values[1] + 1))
    return list(param.values)


def load_space(path: str | Path, base: ExperimentConfig, stage: int, frames: int | None = None) -> SearchSpace:
    """Parse and validate a search-space file against `base`; `frames` is the store's clip length."""
    path = Path(path)
    expected = "a mapping of dotted config keys to values or distributions"
    tree = read_yaml_mapping(path, "search space", "spaces live in tune_spaces/", expected)
    objective = tree.pop(OBJECTIVE_KEY, None) or {}
    allowed = {"metric", "mode", "objectives"}
    if not isinstance(objective, dict) or not set(objective) <= allowed:
        raise _fail(path, OBJECTIVE_KEY, f"expected a mapping with some of {sorted(allowed)}, got {objective!r}")
    if not tree:
        raise ConfigError(f"{path}: expected {expected}")
    defaults = flatten(ExperimentConfig())
    params: dict[str, Param] = {}
    for key, spec in tree.items():
        key = str(key)
        if key not in defaults:
            raise _fail(path, key, "unknown key (see `reactdiff config` for every key)")
        if key in SET_BY_SWEEP:
            raise _fail(path, key, "is set by the sweep itself (trial names and --stage); remove it")
        if key.startswith(IGNORED_BY_STAGE[stage]):
            why = "stage 2 takes the MMT from train.stage1_model" if stage == 2 else "stage 1 trains the MMT only"
            raise _fail(path, key, f"has no effect in a stage-{stage} sweep ({why})")
        params[key] = _parse_param(base, defaults, path, key, spec)
    space = SearchSpace(path, params, {k: str(v) for k, v in objective.items()})
    checked = space.apply_constants(base)  # constants together (cross-field checks)

    ws_key, pad_key = "model.diffusion.window_size", "model.diffusion.pad_mode"
    pad_modes = _candidates(params.get(pad_key), checked.model.diffusion.pad_mode)
    if frames and "drop" in pad_modes:
        bad = [ws for ws in _candidates(params.get(ws_key), checked.model.diffusion.window_size) if frames % ws]
        if bad:
            raise _fail(
                path,
                ws_key,
                f"window sizes {bad} do not divide the store's {frames} frames and "
                f"{pad_key}=drop refuses such clips: choose divisors of {frames} or pad_mode=replicate",
            )
    return space
