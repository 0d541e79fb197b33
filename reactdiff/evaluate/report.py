"""Evaluation report helpers: a results table and PNG figures (matplotlib, Agg backend)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reactdiff.data.layout import AU_SLICE, EMOTION_DIM, EXPR_SLICE, EXPRESSION_NAMES, VA_SLICE
from reactdiff.evaluate.metrics import DIRECTIONS
from reactdiff.evaluate.validation import RECONSTRUCTION_DIRECTIONS

# Not one of REACT2024's four naive baselines: a regression fitted on train (baselines.RidgeBaseline).
LEARNED_REFERENCE = "B_Ridge"
LEARNED_REFERENCE_NOTE = (
    "B_Ridge: a learned reference beyond REACT2024's four naive baselines, a lagged ridge regression from "
    "the speaker's past emotion (frames t, t-5, ..., t-20) fitted on train, deviations rescaled to the "
    "training listeners' spread; deterministic. A model that reacts should reach it."
)
PLOTTED_SAMPLES = 3  # sample plots an evaluation or a scoring writes
# Which direction is better for each metric; unknown metrics get no arrow.
HIGHER_IS_BETTER = {name: direction == "max" for name, direction in {**DIRECTIONS, **RECONSTRUCTION_DIRECTIONS}.items()}


def cell(value: object) -> str:
    """A value as a printed table shows it: a float at 4 significant digits (a sampled learning
    rate would otherwise print 19), anything else as it is."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _arrowed(metric: str) -> str:
    better = HIGHER_IS_BETTER.get(metric)
    return metric if better is None else f"{metric} {'↑' if better else '↓'}"


def _metric_names(rows: dict[str, dict[str, float]]) -> list[str]:
    """Known metrics in their canonical order, then any others in first-seen order."""
    seen = list(dict.fromkeys(name for values in rows.values() for name in values))
    return [m for m in HIGHER_IS_BETTER if m in seen] + [m for m in seen if m not in HIGHER_IS_BETTER]


def results_table(rows: dict[str, dict[str, float]]) -> tuple[str, str]:
    """Model and baselines side by side: one row per entry of `rows` ({name: {metric: value}}),
    one column per metric, headers arrowed with the better direction. Returns (markdown, csv);
    a metric an entry lacks is left empty."""
    metrics = _metric_names(rows)
    header = ["method"] + [_arrowed(m) for m in metrics]
    body = [[name] + [f"{values[m]:.4f}" if m in values else "" for m in metrics] for name, values in rows.items()]
    markdown = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in body]
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method"] + metrics)  # plain names in CSV: easier to parse
    writer.writerows(body)
    return markdown + "\n", buffer.getvalue()


def write_results(out_dir: str | Path, rows: dict[str, dict[str, float]]) -> tuple[str, list[Path]]:
    """`results.md`, `results.csv`, `results.json` and the `metrics.png` chart of `rows` in
    `out_dir`; returns (the markdown table, the files)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, csv_text = results_table(rows)
    files = [out_dir / "results.md", out_dir / "results.csv", out_dir / "results.json"]
    files[0].write_text(markdown)
    files[1].write_text(csv_text)
    files[2].write_text(json.dumps(rows, indent=2))
    files.append(plot_metric_comparison(out_dir / "metrics.png", rows))
    return markdown, files


def baseline_verdict(
    rows: dict[str, dict[str, float]], model: str, metrics: tuple[str, ...] = ("FRDist", "FRCorr", "FRDiv")
) -> str:
    """One line per metric saying which baselines (rows named B_*) `model` beats: REACT2024's naive
    ones, then the learned reference B_Ridge, named apart because it is not one of them."""
    lines = []
    for metric in metrics:
        value, higher = rows[model][metric], HIGHER_IS_BETTER[metric]
        baselines = [name for name in rows if name.startswith("B_")]
        beaten = [b for b in baselines if (value > rows[b][metric] if higher else value < rows[b][metric])]
        naive_beaten = [b for b in beaten if b != LEARNED_REFERENCE]
        naive_missed = [b for b in baselines if b not in beaten and b != LEARNED_REFERENCE]
        line = f"{model} {_arrowed(metric)} {value:.4f}: beats {', '.join(naive_beaten) or 'no naive baseline'}" + (
            f"; not {', '.join(naive_missed)}" if naive_missed else ""
        )
        if LEARNED_REFERENCE in rows:
            line += (
                f"; learned reference {LEARNED_REFERENCE}: {'beaten' if LEARNED_REFERENCE in beaten else 'not beaten'}"
            )
        lines.append(line)
    return "\n".join(lines)


def plot_sample(
    path: str | Path,
    speaker_emotion: np.ndarray,
    listener_emotion: np.ndarray,
    generated_emotion: np.ndarray,
    title: str,
) -> Path:
    """Three panels over time: mean AU activation, valence/arousal, and the expression probabilities
    (listener's dominant expression). Speaker and real listener as lines, the alpha generated
    reactions as their mean with a min–max band."""
    speaker_emotion, listener_emotion = np.asarray(speaker_emotion), np.asarray(listener_emotion)
    generated_emotion = np.asarray(generated_emotion)
    if speaker_emotion.shape != listener_emotion.shape or speaker_emotion.shape[-1] != EMOTION_DIM:
        raise ValueError(
            f"plot_sample: expected speaker and listener emotion (T, {EMOTION_DIM}), "
            f"got {speaker_emotion.shape} and {listener_emotion.shape}"
        )
    if generated_emotion.ndim != 3 or generated_emotion.shape[1:] != listener_emotion.shape:
        raise ValueError(
            f"plot_sample: expected generated emotion (alpha, {listener_emotion.shape[0]}, {EMOTION_DIM}), "
            f"got {generated_emotion.shape}"
        )
    expression = int(listener_emotion[:, EXPR_SLICE].mean(axis=0).argmax())
    panels = [
        ("mean AU activation", lambda e: e[..., AU_SLICE].mean(axis=-1)),
        ("valence", lambda e: e[..., VA_SLICE.start]),
        ("arousal", lambda e: e[..., VA_SLICE.start + 1]),
        (f"P({EXPRESSION_NAMES[expression]})", lambda e: e[..., EXPR_SLICE.start + expression]),
    ]
    frames = np.arange(len(listener_emotion))
    fig = _figure((10, 2.2 * len(panels)))
    axes = fig.subplots(len(panels), 1, sharex=True)
    for ax, (label, pick) in zip(axes, panels, strict=True):
        generated = pick(generated_emotion)  # (alpha, T)
        ax.fill_between(
            frames,
            generated.min(axis=0),
            generated.max(axis=0),
            color="C2",
            alpha=0.25,
            label=f"generated (min–max of {len(generated)})",
        )
        ax.plot(frames, generated.mean(axis=0), color="C2", label="generated (mean)")
        ax.plot(frames, pick(listener_emotion), color="C0", label="real listener")
        ax.plot(frames, pick(speaker_emotion), color="C1", alpha=0.7, label="speaker")
        ax.set_ylabel(label)
    axes[0].legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1].set_xlabel("frame (25 fps)")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_metric_comparison(path: str | Path, rows: dict[str, dict[str, float]]) -> Path:
    """One bar chart per metric, methods side by side, titled with the better direction."""
    metrics = _metric_names(rows)
    names = list(rows)
    cols = min(4, len(metrics))
    n_rows = -(-len(metrics) // cols)
    fig = _figure((3.2 * cols, 2.8 * n_rows))
    axes = fig.subplots(n_rows, cols, squeeze=False)
    colours = [f"C{i % 10}" for i in range(len(names))]
    # The grid's last row may have cells to spare: strict=False leaves them empty.
    for ax, metric in zip(axes.flat, metrics, strict=False):
        values = [rows[name].get(metric, np.nan) for name in names]
        ax.bar(range(len(names)), values, color=colours)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(_arrowed(metric), fontsize=9)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def plot_tradeoff(
    path: str | Path, points: dict[str, tuple[float, float]], front: list[str], x_label: str, y_label: str, title: str
) -> Path:
    """Every trial as a point (x, y), the Pareto front highlighted, joined and labelled."""
    fig = _figure((6.5, 4.5))
    ax = fig.subplots()
    names = [name for name, (x, y) in points.items() if np.isfinite(x) and np.isfinite(y)]
    ax.scatter([points[n][0] for n in names], [points[n][1] for n in names], color="0.6", label="trial")
    on_front = sorted((points[n] + (n,) for n in front), key=lambda p: p[0])
    if on_front:
        ax.plot([p[0] for p in on_front], [p[1] for p in on_front], "o-", color="C3", label="Pareto front")
        for x, y, name in on_front:
            ax.annotate(name.rsplit("-", 1)[-1], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _figure(figsize: tuple[float, float]) -> Figure:
    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)  # the Agg canvas attached: files only, no pyplot, no global backend
    return figure


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, format="png")
    return path
