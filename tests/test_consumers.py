"""Every consumer reads the output: pandas, pyarrow.dataset, DuckDB and polars get the same
rows of the image and the study datasets and find the model spec in the metadata.

These are the README's snippets ("Reading the results"), run as written there.
"""
from __future__ import annotations

import json

import pytest

from fracture_batch.model.spec import SPEC_METADATA_KEY, ModelSpec
from fracture_batch.scoring.config import DecodeIsolation, ScoreConfig
from fracture_batch.scoring.local import score

from support import modelgen

duckdb = pytest.importorskip("duckdb", reason="duckdb not installed (pip install '.[dev]')")
pl = pytest.importorskip("polars", reason="polars not installed (pip install '.[dev]')")

KEY = {"images": "path", "studies": "study_key"}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    _, onnx_path = modelgen.tiny_models(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("consumers")
    for p, n in (("patient00001/study1_positive", 3), ("patient00002/study1_negative", 2)):
        modelgen.write_images(tmp / "in" / p, n, start=n)
    modelgen.write_bad_inputs(tmp / "in" / "bad")
    cfg = ScoreConfig(inputs=(str(tmp / "in"),), model=str(onnx_path), out=str(tmp / "out"), decoder="python",
                      batch_size=4, decode_workers=1, intra_op_threads=1, decode_isolation=DecodeIsolation.THREAD,
                      part_rows=4)  # several parts, as a real run writes
    score(cfg)
    return tmp / "out"


def _where(out, which: str) -> tuple[str, str]:
    """(directory, glob) of a dataset."""
    d = str(out) if which == "images" else str(out / "_studies")
    return d, d + "/*.parquet"


def _rows(records: list[dict], key: str) -> dict:
    return {r[key]: {k: (None if v != v else v) if isinstance(v, float) else v for k, v in r.items()}
            for r in records}


@pytest.mark.parametrize("which", ["images", "studies"])
def test_pandas_pyarrow_duckdb_polars_read_the_same_rows_and_the_spec(scored, which):
    import pandas as pd
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    directory, glob = _where(scored, which)
    key = KEY[which]

    # pyarrow.dataset
    table = ds.dataset(directory, format="parquet").to_table()
    spec_arrow = ModelSpec.from_json(table.schema.metadata[SPEC_METADATA_KEY.encode()])
    # pandas
    df = pd.read_parquet(directory)
    # DuckDB
    con = duckdb.connect()
    ddf = con.sql(f"SELECT * FROM read_parquet('{glob}')").df()
    meta = dict(con.sql(f"SELECT decode(key), decode(value) FROM parquet_kv_metadata('{glob}')").fetchall())
    # polars
    plf = pl.read_parquet(glob)
    first = sorted(p for p in pq.ParquetDataset(directory).files)[0]
    spec_polars = ModelSpec.from_json(pl.read_parquet_metadata(first)[SPEC_METADATA_KEY])

    expected = _rows(table.to_pylist(), key)
    assert len(expected) == table.num_rows > 0
    for got in (df.to_dict("records"), ddf.to_dict("records"), plf.to_dicts()):
        rows = _rows(got, key)
        assert rows.keys() == expected.keys()
        for k, r in expected.items():
            assert set(rows[k]) == set(r)
            for c, v in r.items():
                w = rows[k][c]
                if isinstance(v, float):
                    assert w == pytest.approx(v, rel=1e-6), (c, k)
                else:
                    assert (None if w is None or (isinstance(w, float) and w != w) else w) == v, (c, k)
    for spec in (spec_arrow, spec_polars, ModelSpec.from_json(meta[SPEC_METADATA_KEY])):
        assert spec.input_size == modelgen.INPUT_SIZE and spec.arch == "resnet18"
    if which == "studies":
        assert json.loads(meta["fracture_batch.studies"])["aggregate"] == "mean"
