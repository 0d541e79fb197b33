"""Printed tables show numbers at 4 significant digits; the CSV beside them keeps every digit."""

from __future__ import annotations

import csv
import io
import math

from reactdiff.evaluate.report import cell
from reactdiff.tune.sweep import _csv, _markdown

LR = 0.0012345678901234567  # a sampled learning rate, as Tune draws it


def test_a_sweep_table_prints_4_significant_digits_and_its_csv_keeps_them_all():
    header = ["rank", "trial", "val_FRCorr", "epochs", "train.lr"]
    body = [[1, "sweep-1", 0.123456789, 4, LR], [2, "sweep-2", math.nan, 2, 3]]
    markdown = _markdown(header, body)
    assert "| 1 | sweep-1 | 0.1235 | 4 | 0.001235 |" in markdown
    assert "| 2 | sweep-2 | nan | 2 | 3 |" in markdown
    rows = list(csv.reader(io.StringIO(_csv(header, body))))
    assert float(rows[1][4]) == LR


def test_a_cell_rounds_floats_only():
    assert [cell(v) for v in (123456.7, 1e-7, 7, "models:/reactdiff@champion")] == [
        "1.235e+05",
        "1e-07",
        "7",
        "models:/reactdiff@champion",
    ]
