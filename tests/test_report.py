"""Report helpers: table content and real PNG files."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from reactdiff.evaluate.report import baseline_verdict, plot_metric_comparison, plot_sample, results_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ROWS = {
    "ReactDiff": {
        "FRCorr": 0.2613,
        "FRDist": 86.7,
        "FRDiv": 0.0914,
        "FRDvs": 0.138,
        "FRVar": 0.0412,
        "FRSyn": 39.4,
        "FRSyn_all": 40.1,
        "FRRea": 0.52,
    },
    "B_Random": {
        "FRCorr": 0.0012,
        "FRDist": 226.4,
        "FRDiv": 0.1667,
        "FRDvs": 0.1666,
        "FRVar": 0.0833,
        "FRSyn": 44.2,
        "FRSyn_all": 44.0,
        "FRRea": 3.1,
    },
    "B_MeanFr": {"FRCorr": 0.0, "FRDist": 96.1, "FRDiv": 0.0, "FRDvs": 0.0, "FRVar": 0.0},
}


def test_results_table_has_every_name_value_and_direction():
    markdown, csv_text = results_table(ROWS)
    for name in ROWS:
        assert f"| {name} |" in markdown
    for header in ("FRCorr ↑", "FRDist ↓", "FRDiv ↑", "FRDvs ↑", "FRVar ↑", "FRSyn ↓", "FRRea ↓"):
        assert header in markdown
    assert "86.7000" in markdown and "0.1667" in markdown
    parsed = list(csv.DictReader(io.StringIO(csv_text)))
    assert [row["method"] for row in parsed] == list(ROWS)
    assert float(parsed[0]["FRDist"]) == pytest.approx(86.7)
    assert parsed[2]["FRSyn"] == ""  # B_MeanFr has no FRSyn: left empty, not invented
    assert len(markdown.strip().splitlines()) == 2 + len(ROWS)


def test_baseline_verdict_follows_each_metric_direction():
    lines = baseline_verdict(ROWS, "ReactDiff").splitlines()
    assert lines[0] == "ReactDiff FRDist ↓ 86.7000: beats B_Random, B_MeanFr"
    assert lines[1] == "ReactDiff FRCorr ↑ 0.2613: beats B_Random, B_MeanFr"
    assert lines[2] == "ReactDiff FRDiv ↑ 0.0914: beats B_MeanFr; not B_Random"


def _image(path) -> np.ndarray:
    from matplotlib import image

    return image.imread(path)[..., :3]


def _pixels_of(path, colour: str, alpha: float = 1.0) -> int:
    """How many pixels of a PNG are `colour` drawn with `alpha` over the white background."""
    from matplotlib import colors

    rgb = alpha * np.array(colors.to_rgb(colour)) + (1 - alpha)
    return int((np.abs(_image(path) - rgb).max(axis=-1) < 0.02).sum())


def test_plots_draw_every_series(tmp_path):
    """Pixels, not file sizes: a blank figure or a missing series fails (report.py's colours: the
    generated band C2 at alpha 0.25 and its mean C2, the listener C0, the speaker C1 at alpha 0.7)."""
    rng = np.random.default_rng(0)
    frames = 40
    speaker, listener = rng.random((frames, 25)), rng.random((frames, 25))
    generated = rng.random((3, frames, 25))
    sample = plot_sample(tmp_path / "plots" / "sample.png", speaker, listener, generated, "sample 0")
    assert sample.read_bytes().startswith(PNG_SIGNATURE)
    for colour, alpha in (("C2", 0.25), ("C2", 1.0), ("C0", 1.0), ("C1", 0.7)):
        assert _pixels_of(sample, colour, alpha) > 500, (colour, alpha)
    # The lines follow the data: another listener draws another picture.
    other = plot_sample(tmp_path / "other.png", speaker, 1 - listener, generated, "sample 0")
    assert not np.array_equal(_image(sample), _image(other))

    # One bar colour per method (C0, C1, C2 in row order); B_MeanFr is 0 in four of its five
    # metrics, so its bars cover far less than ReactDiff's eight non-zero ones.
    comparison = plot_metric_comparison(tmp_path / "metrics.png", ROWS)
    assert comparison.read_bytes().startswith(PNG_SIGNATURE)
    bars = {name: _pixels_of(comparison, f"C{i}") for i, name in enumerate(ROWS)}
    assert 0 < bars["B_MeanFr"] < bars["ReactDiff"] / 4 and bars["B_Random"] > 0, bars


def test_plot_sample_rejects_mismatched_shapes(tmp_path):
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match=r"generated emotion \(alpha, 40, 25\)"):
        plot_sample(tmp_path / "x.png", rng.random((40, 25)), rng.random((40, 25)), rng.random((40, 25)), "x")


def test_the_verdict_names_b_ridge_as_the_learned_reference_apart_from_the_naive_baselines():
    rows = {**ROWS, "B_Ridge": {"FRCorr": 2.31, "FRDist": 90.0, "FRDiv": 0.0}}
    lines = baseline_verdict(rows, "ReactDiff").splitlines()
    assert lines[0] == "ReactDiff FRDist ↓ 86.7000: beats B_Random, B_MeanFr; learned reference B_Ridge: beaten"
    assert lines[1] == "ReactDiff FRCorr ↑ 0.2613: beats B_Random, B_MeanFr; learned reference B_Ridge: not beaten"
