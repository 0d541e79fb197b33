"""`prepare` through the real Ray Data pipeline: layout, both profiles, determinism, bad clips."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reactdiff.cli import main as cli_main
from reactdiff.data import corpus
from reactdiff.data.prepare import PrepareError, PrepareOptions, prepare
from reactdiff.data.store import Store, StoreError, column, to_samples
from reactdiff.data.tiny_models import make_tiny_facial_predictors, make_tiny_wav2vec2


def test_lite_store_holds_every_dyad_and_reads_back(tiny_store, tiny_corpus):
    store = Store(tiny_store)
    manifest = store.manifest
    assert manifest.profile == "lite" and manifest.frames == 50
    assert set(manifest.streams) == {"emotion", "3dmm", "mfcc"}
    for split in ("train", "val", "test"):
        rows = corpus.read_split(tiny_corpus, split)
        arrays = store.read_split(split)
        assert arrays["pair_id"].tolist() == [p.row for p in rows]
        assert store.appropriate(split).shape == (2 * len(rows), 2 * len(rows))
        first = corpus.load_clip(tiny_corpus, split, rows[0].speaker, frames=50)
        np.testing.assert_array_equal(arrays[column("a", "emotion")][0], first.emotion)
        np.testing.assert_array_equal(arrays[column("a", "3dmm")][0], first.face3d)
    samples = to_samples(store.read_split("train"), ["emotion"])
    n = len(corpus.read_split(tiny_corpus, "train"))
    # Role swap: sample n + s is row s with the persons exchanged.
    np.testing.assert_array_equal(samples["speaker"]["emotion"][n], samples["listener"]["emotion"][0])
    assert len(manifest.normalisation["3dmm_mean"]) == 58


def test_store_written_twice_is_identical(tiny_corpus, tiny_store, tmp_path):
    # tiny_store had 2 extraction actors; 1 and 3 finish the parts in other orders. The statistics
    # are reduced in part order, so the manifest (normalisation, fingerprint) does not move.
    for workers in (1, 3):
        again = tmp_path / f"workers-{workers}"
        prepare(PrepareOptions(corpus=tiny_corpus, out=again, rows_per_part=1, workers=workers))
        files = sorted(p.relative_to(tiny_store) for p in tiny_store.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
        for path in files:
            assert (tiny_store / path).read_bytes() == (again / path).read_bytes(), f"{path} differs ({workers} workers)"


def test_paper_profile_with_local_models(tiny_corpus, tmp_path):
    wav2vec2 = make_tiny_wav2vec2(tmp_path / "wav2vec2", hidden_size=16)
    facial = make_tiny_facial_predictors(tmp_path / "facial")
    out = tmp_path / "paper"
    manifest = prepare(PrepareOptions(corpus=tiny_corpus, out=out, profile="paper", splits=("val",),
                                      wav2vec2_dir=wav2vec2, facial_predictors=facial, workers=1))
    dims = {name: spec.dim for name, spec in manifest.streams.items()}
    assert dims == {"emotion": 25, "3dmm": 58, "mfcc": 26, "afr": 32, "va": 64, "au": 25088, "fe": 1408}
    assert manifest.streams["au"].dtype == "float16"  # network activations stored at half precision
    arrays = Store(out).read_split("val", streams=["afr", "au"])
    assert arrays[column("a", "au")].shape == (2, 50, 25088)
    assert np.isfinite(arrays[column("b", "afr")]).all()


def test_paper_profile_without_models_says_what_is_missing(tiny_corpus, tmp_path):
    with pytest.raises(PrepareError, match="--wav2vec2"):
        prepare(PrepareOptions(corpus=tiny_corpus, out=tmp_path / "x", profile="paper"))


def test_bad_clip_is_skipped_and_reported(tiny_corpus, tmp_path):
    broken = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, broken)
    row = corpus.read_split(broken, "train")[1]
    wav = row.listener.file(broken, "train", "Audio_files")
    wav.write_bytes(wav.read_bytes()[:100])  # truncated WAV
    out = tmp_path / "store"
    manifest = prepare(PrepareOptions(corpus=broken, out=out, rows_per_part=2, workers=1))
    rejected = json.loads((out / "rejected.json").read_text())
    assert len(rejected) == 1 and rejected[0]["pair_id"] == row.row
    assert rejected[0]["file"] == str(wav) and rejected[0]["field"] and rejected[0]["expected"]
    kept = Store(out).read_split("train")["pair_id"].tolist()
    assert row.row not in kept and len(kept) == len(corpus.read_split(broken, "train")) - 1
    assert manifest.splits["val"]["rows"] == 2  # the other splits are untouched


def test_nothing_usable_exits_non_zero(tiny_corpus, tmp_path, capsys):
    broken = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, broken)
    for csv_file in broken.rglob("Emotion/**/*.csv"):
        csv_file.write_text("garbage\n1,2\n")
    status = cli_main(["prepare", "--corpus", str(broken), "--out", str(tmp_path / "store"), "--workers", "1",
                       "--log-dir", str(tmp_path / "logs")])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(broken) in err


def test_store_whose_parquet_disagrees_with_its_manifest_is_refused(tiny_store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(tiny_store, copy)
    part = sorted((copy / "val").glob("*.parquet"))[0]
    table = pq.read_table(part).drop_columns(["a__mfcc"])
    table = table.append_column("a__mfcc", pa.array([[0.0] * 10] * table.num_rows, pa.list_(pa.float32(), 10)))
    pq.write_table(table, part)
    with pytest.raises(StoreError, match=r"a__mfcc.*manifest"):
        Store(copy)
