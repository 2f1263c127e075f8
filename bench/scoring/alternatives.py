"""Alternatives to the retrain's two slow steps, timed on a kept benchmark database (prototypes, not app code).

    .venv/bin/python bench/scoring/run.py --sizes 1000000 --alternatives   # runs both after each leg, or by hand:
    .venv/bin/python bench/scoring/run.py --sizes 1000000 --backends sqlite,postgres --keep
    .venv/bin/python bench/scoring/alternatives.py swap --leg sqlite-1000000
    .venv/bin/python bench/scoring/alternatives.py swap --leg postgres-1000000   # the last PostgreSQL leg is kept
    .venv/bin/python bench/scoring/alternatives.py read --leg postgres-1000000

`swap` writes new priorities, predicted labels, confidences and a version
number for every open item of the leg's project in one transaction and
commits, as `model_version_train` does; the values are random (they do not
change the cost). Each variant starts on a fresh connection (on PostgreSQL
after VACUUM (ANALYZE) and CHECKPOINT, as autovacuum would leave it):

- `current`: `annotate.services.queue.queue_reorder`, the application's code
  (one UPDATE per item, executemany in batches of 10,000).
- `current_big_cache` (SQLite): the same with `PRAGMA cache_size` at `--cache-mib`.
- `current_server_binding` (PostgreSQL): the same statements through a psycopg
  cursor that binds server-side (prepared once, not parsed 1M times).
- `bulk`: the scores go into a temporary table (COPY on PostgreSQL,
  executemany on SQLite), then one `UPDATE ... FROM` joins them in.
- `bulk_reindex` (SQLite): `bulk` with the queue index dropped before and
  rebuilt after, in the same transaction.
- `versioned_insert`: the write cost of a different design, where scores live
  in their own table keyed by (version, item) and the swap is a one-row
  pointer update: 1M rows inserted into such a table (with a queue index on
  (version, priority DESC, item)), then dropped.

`read` fetches every open item's feature row the way `features_iter_open`
does (20,000-row keyset pages) and, on PostgreSQL, the same with psycopg's
binary result format, which returns bytea as raw bytes instead of hex text.

Appends each run to `work/<leg>/alternatives.jsonl`, prints one line per variant
and a last line `RESULT <json>` with all of them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORK = HERE / "work"
SCRATCH_TABLE = "bench_scoring_item_score"


def _environment(leg: str) -> None:
    os.environ.update(SECRET_KEY="bench-scoring-not-a-secret", DEBUG="0", WORKBENCH_DATA_DIR=str(WORK / leg),
                      DJANGO_SETTINGS_MODULE="workbench.settings")
    os.environ.pop("DATABASE_URL", None)
    if leg.startswith("postgres"):
        os.environ["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/bench_scoring"
    sys.path.insert(0, str(ROOT))


class Swap:
    """The swap variants; each writes every open item's scores in the current transaction."""

    def __init__(self, cache_mib: int) -> None:
        import numpy as np
        from django.db import connection

        from annotate.models import Item, Project

        self.np = np
        self.connection = connection
        self.cache_mib = cache_mib
        self.project = Project.objects.get()
        self.table = connection.ops.quote_name(Item._meta.db_table)
        self.postgres = connection.vendor == "postgresql"
        self.ids = np.fromiter(
            Item.objects.filter(project=self.project, done=False).order_by("id").values_list("id", flat=True),
            dtype=np.int64,
        )
        self.label_ids = np.array(list(self.project.labels.values_list("id", flat=True)), dtype=np.int64)

    def names(self) -> list[str]:
        if self.postgres:
            return ["current", "current_server_binding", "bulk", "versioned_insert"]
        # SQLite's `current` varies a lot from run to run (see README), so it and its fix run twice.
        return ["current", "current_big_cache", "current", "current_big_cache", "bulk", "bulk_reindex",
                "versioned_insert"]

    def scores(self, seed: int):
        rng = self.np.random.default_rng(seed)
        n = len(self.ids)
        return rng.random(n), self.label_ids[rng.integers(len(self.label_ids), size=n)], rng.random(n)

    def rows(self, priorities, labels, confidences) -> list[tuple]:
        return list(zip(self.ids.tolist(), priorities.tolist(), labels.tolist(), confidences.tolist()))

    def current(self, version: int, priorities, labels, confidences) -> None:
        from annotate.services.queue import queue_reorder

        queue_reorder(project=self.project, item_ids=self.ids, priorities=priorities, predicted_label_ids=labels,
                      confidences=confidences, version_number=version)

    def current_big_cache(self, version: int, priorities, labels, confidences) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(f"PRAGMA cache_size=-{self.cache_mib * 1024}")
        self.current(version, priorities, labels, confidences)

    def current_server_binding(self, version: int, priorities, labels, confidences) -> None:
        """Django's psycopg 3 backend binds client-side, so each UPDATE reaches the server as new SQL text."""
        import psycopg

        sql = (f"UPDATE {self.table} SET priority = %s, predicted_label_id = %s, confidence = %s, "
               f"scored_by_version = {int(version)} WHERE id = %s AND project_id = {int(self.project.pk)}")
        rows = [(p, lab, c, i) for i, p, lab, c in self.rows(priorities, labels, confidences)]
        self.connection.ensure_connection()
        with psycopg.Cursor(self.connection.connection) as cursor:
            for start in range(0, len(rows), 10_000):
                cursor.executemany(sql, rows[start:start + 10_000])

    def _load(self, cursor, table: str, columns: str, types: list[str], rows: list[tuple]) -> None:
        if self.postgres:
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join(["%s"] * len(types))
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)

    def bulk(self, version: int, priorities, labels, confidences) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute("CREATE TEMPORARY TABLE swap_scores (id bigint PRIMARY KEY, priority double precision, "
                           "predicted_label_id bigint, confidence double precision)"
                           + (" ON COMMIT DROP" if self.postgres else ""))
            self._load(cursor, "swap_scores", "id, priority, predicted_label_id, confidence",
                       ["int8", "float8", "int8", "float8"], self.rows(priorities, labels, confidences))
            if self.postgres:
                cursor.execute("ANALYZE swap_scores")
            cursor.execute(
                f"UPDATE {self.table} SET priority = s.priority, predicted_label_id = s.predicted_label_id, "
                f"confidence = s.confidence, scored_by_version = %s FROM swap_scores s "
                f"WHERE {self.table}.id = s.id AND {self.table}.project_id = %s",
                [version, self.project.pk],
            )
            if not self.postgres:
                cursor.execute("DROP TABLE temp.swap_scores")

    def bulk_reindex(self, version: int, priorities, labels, confidences) -> None:
        """SQLite readers keep their WAL snapshot and writers wait for the lock anyway: nobody sees the index gone."""
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'item_queue_open'")
            create = cursor.fetchone()[0]
            cursor.execute('DROP INDEX "item_queue_open"')
        self.bulk(version, priorities, labels, confidences)
        with self.connection.cursor() as cursor:
            cursor.execute(create)

    def versioned_insert(self, version: int, priorities, labels, confidences) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {SCRATCH_TABLE} (version integer NOT NULL, "
                           "item_id bigint NOT NULL, priority double precision NOT NULL, predicted_label_id bigint, "
                           "confidence double precision, PRIMARY KEY (version, item_id))")
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {SCRATCH_TABLE}_queue ON {SCRATCH_TABLE} "
                           "(version, priority DESC, item_id)")
            rows = [(version, *row) for row in self.rows(priorities, labels, confidences)]
            self._load(cursor, SCRATCH_TABLE, "version, item_id, priority, predicted_label_id, confidence",
                       ["int4", "int8", "float8", "int8", "float8"], rows)

    def cleanup(self, name: str) -> None:
        if name == "versioned_insert":
            with self.connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")


def _backend_cpu(connection) -> float:
    if connection.vendor != "postgresql":
        return 0.0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wal_bytes(connection) -> int:
    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        return int(cursor.fetchone()[0])


def _fresh_start(connection, table: str) -> None:
    """A new connection (no PRAGMA left over); on PostgreSQL VACUUM (ANALYZE) and CHECKPOINT first."""
    connection.close()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {table}")
            cursor.execute("CHECKPOINT")


def cmd_swap(args) -> dict:
    from django.db import connection, transaction

    from annotate.models import Item

    swap = Swap(args.cache_mib)
    chosen = args.variants.split(",") if args.variants else swap.names()
    out = {"command": "swap", "leg": args.leg, "vendor": connection.vendor, "open_items": len(swap.ids),
           "cache_mib": args.cache_mib, "variants": []}
    for number, name in enumerate(chosen):
        _fresh_start(connection, swap.table)
        priorities, labels, confidences = swap.scores(number)
        version = 1000 + number
        wal_before, cpu_before = _wal_bytes(connection), _backend_cpu(connection)
        started, own_cpu = time.perf_counter(), time.process_time()
        with transaction.atomic():
            getattr(swap, name)(version, priorities, labels, confidences)
            body = time.perf_counter() - started
        total = time.perf_counter() - started
        if name == "versioned_insert":
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT count(*) FROM {SCRATCH_TABLE} WHERE version = %s", [version])
                written = cursor.fetchone()[0]
        else:
            written = Item.objects.filter(project=swap.project, done=False, scored_by_version=version).count()
        result = {"variant": name, "body_s": round(body, 2), "commit_s": round(total - body, 2),
                  "total_s": round(total, 2), "rows": len(swap.ids), "rows_written": written,
                  "own_cpu_s": round(time.process_time() - own_cpu, 2),
                  "database_cpu_s": round(_backend_cpu(connection) - cpu_before, 2) if swap.postgres else None,
                  "wal_mib": round((_wal_bytes(connection) - wal_before) / 2**20) if swap.postgres else None}
        swap.cleanup(name)
        out["variants"].append(result)
        print(json.dumps(result), flush=True)
    return out


def cmd_read(args) -> dict:
    from django.db import connection

    from annotate.models import Item
    from learners.ml.feature_rows import rows_decode
    from learners.models import FeatureSpace, ItemFeatures

    space = FeatureSpace.objects.get()
    features = connection.ops.quote_name(ItemFeatures._meta.db_table)
    items = connection.ops.quote_name(Item._meta.db_table)
    sql = (f"SELECT f.item_id, f.vector FROM {features} f JOIN {items} i ON i.id = f.item_id "
           f"WHERE f.space_id = %s AND f.item_id > %s AND i.done = %s ORDER BY f.item_id LIMIT %s")

    def read_all(cursor) -> int:
        last_id, rows_read = 0, 0
        while True:
            cursor.execute(sql, [space.pk, last_id, False, 20_000])
            rows = cursor.fetchall()
            if not rows:
                return rows_read
            rows_decode([r[1] for r in rows], dim=space.dim, is_sparse=False)
            last_id = rows[-1][0]
            rows_read += len(rows)

    variants = {"django_cursor": lambda: read_all(connection.cursor())}
    if connection.vendor == "postgresql":
        import psycopg

        def binary() -> int:
            connection.ensure_connection()
            with psycopg.Cursor(connection.connection) as cursor:
                cursor.format = psycopg.pq.Format.BINARY
                return read_all(cursor)

        variants["binary_results"] = binary
    out = {"command": "read", "leg": args.leg, "vendor": connection.vendor, "variants": []}
    for name, read in variants.items():
        _fresh_start(connection, items)
        connection.close()
        cpu_before = _backend_cpu(connection)
        started, own_cpu = time.perf_counter(), time.process_time()
        rows_read = read()
        result = {"variant": name, "seconds": round(time.perf_counter() - started, 2), "rows": rows_read,
                  "own_cpu_s": round(time.process_time() - own_cpu, 2),
                  "database_cpu_s": round(_backend_cpu(connection) - cpu_before, 2)
                  if connection.vendor == "postgresql" else None}
        out["variants"].append(result)
        print(json.dumps(result), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("swap", "read"):
        p = sub.add_parser(name)
        p.add_argument("--leg", required=True, help="a kept leg's folder under bench/scoring/work, e.g. sqlite-1000000")
        if name == "swap":
            p.add_argument("--variants", default=None, help="comma-separated (default: all for the backend)")
            p.add_argument("--cache-mib", type=int, default=256, help="SQLite page cache of current_big_cache")
    args = parser.parse_args()
    _environment(args.leg)
    import django

    django.setup()
    out = {"swap": cmd_swap, "read": cmd_read}[args.command](args) | {"date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with (WORK / args.leg / "alternatives.jsonl").open("a") as results:
        results.write(json.dumps(out) + "\n")
    print("RESULT " + json.dumps(out), flush=True)  # for run.py --alternatives


if __name__ == "__main__":
    main()
