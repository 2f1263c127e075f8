"""Writing the benchmark's items and cached feature rows fast: executemany on SQLite, COPY on PostgreSQL.

Rows have the shape the importer (`annotate.services.importing`) and
`learners.services.features.features_fill` leave. Needs a configured Django
(djside.py imports this after django.setup()).
"""
from __future__ import annotations

import json
import time

import numpy as np
import synthetic
from django.db import connection, transaction
from django.utils import timezone

from annotate.models import Item
from learners.ml.feature_rows import rows_encode
from learners.models import ItemFeatures

INSERT_BATCH = 50_000


def external_id(k: int) -> str:
    return f"item-{k}"


def position_of(external: str) -> int:
    return int(external.rsplit("-", 1)[1])


def labelled_positions(n_items: int, n_labelled: int, seed: int) -> np.ndarray:
    """Which items (0..n-1) carry an imported label: a seeded sample, sorted."""
    rng = np.random.default_rng([seed, 3])
    return np.sort(rng.choice(n_items, size=min(n_labelled, n_items), replace=False))


def item_rows(n_items: int, labelled: np.ndarray, project_id: int, seed: int, created_at):
    """(project_id, external_id, data, priority, annotation_count, lease_count, done, created_at) per item.

    What the importer writes: a seeded random cold-start priority, and items
    with an imported label done with one annotation (overlap 1).
    """
    is_labelled = np.zeros(n_items, dtype=bool)
    is_labelled[labelled] = True
    priorities = np.random.default_rng([seed, 4]).random(n_items)
    for k in range(n_items):
        done = bool(is_labelled[k])
        yield (project_id, external_id(k), json.dumps({"text": f"item {k}"}), float(priorities[k]),
               1 if done else 0, 0, done, created_at)


ITEM_COLUMNS = ("project_id", "external_id", "data", "priority", "annotation_count", "lease_count", "done",
                "created_at")


def batched(rows, size: int):
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def feature_rows(space_id: int, item_ids: np.ndarray, n_items: int, seed: int):
    for start, _, X in synthetic.mixture_chunks(n_items, seed):
        for item_id, blob in zip(item_ids[start:start + len(X)].tolist(), rows_encode(X)):
            yield space_id, item_id, blob


def sqlite_bulk(path: str, project_id: int, space_id: int, n_items: int, labelled: np.ndarray, seed: int,
                 timings: dict) -> np.ndarray:
    """Items and feature rows with a private connection, journal off (the file is the benchmark's own)."""
    import sqlite3

    connection.close()
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("PRAGMA journal_mode=OFF")
        raw.execute("PRAGMA synchronous=OFF")
        raw.execute("PRAGMA cache_size=-262144")  # 256 MiB for this connection only
        created_at = connection.ops.adapt_datetimefield_value(timezone.now())
        started = time.perf_counter()
        raw.execute("BEGIN")
        sql = (f'INSERT INTO "{Item._meta.db_table}" ({", ".join(ITEM_COLUMNS)}) '
               f'VALUES ({", ".join(["?"] * len(ITEM_COLUMNS))})')
        for batch in batched(item_rows(n_items, labelled, project_id, seed, created_at), INSERT_BATCH):
            raw.executemany(sql, batch)
        raw.execute("COMMIT")
        timings["items_s"] = time.perf_counter() - started
        item_ids = _item_ids(raw.execute(f'SELECT id, external_id FROM "{Item._meta.db_table}" '
                                         f"WHERE project_id = ? ORDER BY id", [project_id]).fetchall(), n_items)
        started = time.perf_counter()
        raw.execute("BEGIN")
        sql = f'INSERT INTO "{ItemFeatures._meta.db_table}" (space_id, item_id, vector) VALUES (?, ?, ?)'
        for batch in batched(feature_rows(space_id, item_ids, n_items, seed), INSERT_BATCH):
            raw.executemany(sql, batch)
        raw.execute("COMMIT")
        timings["features_s"] = time.perf_counter() - started
        raw.execute("PRAGMA journal_mode=WAL")  # what the application runs with
    finally:
        raw.close()
    return item_ids


def postgres_bulk(project_id: int, space_id: int, n_items: int, labelled: np.ndarray, seed: int,
                   timings: dict) -> np.ndarray:
    """Items (text COPY, as the importer does) and feature rows (binary COPY) in one transaction each."""
    created_at = timezone.now()
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        columns = ", ".join(ITEM_COLUMNS)
        with cursor.cursor.copy(f'COPY "{Item._meta.db_table}" ({columns}) FROM STDIN') as copy:
            for row in item_rows(n_items, labelled, project_id, seed, created_at):
                copy.write_row(row)
    timings["items_s"] = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT id, external_id FROM "{Item._meta.db_table}" WHERE project_id = %s ORDER BY id',
                       [project_id])
        item_ids = _item_ids(cursor.fetchall(), n_items)
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        sql = f'COPY "{ItemFeatures._meta.db_table}" (space_id, item_id, vector) FROM STDIN (FORMAT BINARY)'
        with cursor.cursor.copy(sql) as copy:
            copy.set_types(["int8", "int8", "bytea"])
            for row in feature_rows(space_id, item_ids, n_items, seed):
                copy.write_row(row)
    timings["features_s"] = time.perf_counter() - started
    return item_ids


def _item_ids(rows: list[tuple[int, str]], n_items: int) -> np.ndarray:
    """Item ids by position k (external id item-k), checked against what was inserted."""
    if len(rows) != n_items:
        raise RuntimeError(f"expected {n_items} items after the insert, found {len(rows)}")
    ids = np.empty(n_items, dtype=np.int64)
    for item_id, external in rows:
        ids[position_of(external)] = item_id
    return ids
