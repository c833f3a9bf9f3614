"""Scoring tables larger than one machine's memory with Dask.

The model file is shipped to each worker once (scattered with ``broadcast=True``) and
loaded there once; every partition of the DataFrame is then scored where it lies, with the
same numbers ``bottleneck score`` writes for the same rows::

    from dask.distributed import Client, LocalCluster
    import dask.dataframe as dd
    from bottleneck_ae.dask import score_dataframe

    client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
    rows = dd.read_csv("huge.csv", blocksize="64MB")
    scored = score_dataframe(rows, "model.safetensors", client)   # lazy
    scored.to_parquet("scores/")                                  # or .compute() when small
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd

from . import _core

# The models each worker process has loaded, by the hash of their file: one load per model
# per worker, however many partitions it scores.
_LOADED = {}


def _model(data: bytes, digest: str):
    model = _LOADED.get(digest)
    if model is None:
        model = _LOADED[digest] = _core.load_bytes(data)
    return model


def score_partition(part: pd.DataFrame, data: bytes, digest: str, id_column=None) -> pd.DataFrame:
    """Scores of one partition: its rows matched to the model's features by column name."""
    model = _model(data, digest)
    features = model.features
    values = np.ascontiguousarray(part[features].to_numpy(dtype=np.float32))
    score, p_value, flag = model.score_table(values, features)
    out = pd.DataFrame(
        {"score": score, "p_value": p_value, "is_anomaly": flag.astype(np.int8)},
        index=part.index,
    )
    if id_column is not None:
        out.insert(0, id_column, part[id_column].to_numpy())
    return out


def score_dataframe(ddf, model_path, client=None, id_column=None):
    """A lazy Dask DataFrame of ``score``, ``p_value`` and ``is_anomaly`` for every row of
    ``ddf`` (with ``id_column`` first when given), partition by partition. With a
    ``client``, the model file goes to each of its workers once; without, it travels with
    the task graph."""
    with open(os.fspath(model_path), "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    _core.load_bytes(data)  # a bad model file fails here, not on every worker
    shipped = client.scatter(data, broadcast=True) if client is not None else data
    meta = pd.DataFrame(
        {
            "score": pd.Series(dtype=np.float32),
            "p_value": pd.Series(dtype=np.float64),
            "is_anomaly": pd.Series(dtype=np.int8),
        }
    )
    if id_column is not None:
        meta.insert(0, id_column, pd.Series(dtype=ddf[id_column].dtype))
    return ddf.map_partitions(score_partition, shipped, digest, id_column, meta=meta)
