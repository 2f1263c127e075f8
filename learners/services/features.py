"""Features cached per item and featuriser version.

A project's featuriser is fitted once on a seeded sample of its items (a
FeatureSpace); every item is then featurised once, in batches in the worker,
and its row stored in ItemFeatures. Retraining and scoring read rows, never
raw payloads, so a retrain costs model time, not featurising time. Changing
the project's featuriser (or bumping a featuriser's version) makes a new
space; rows of the old one stay until the project is deleted.
"""
from __future__ import annotations

import io
import logging
from typing import Callable, Iterator

import joblib
import numpy as np
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef

from annotate.models import Item, Project
from learners.ml.feature_rows import rows_decode, rows_encode
from learners.ml.featurisers import FEATURISERS, Featuriser, FeaturiserError, featuriser_create, payload_of
from learners.models import FeatureSpace, ItemFeatures

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
FIT_SAMPLE = 20_000
FILL_BATCH = 2_000
READ_CHUNK = 20_000


class FeaturisingFailed(RuntimeError):
    """An item could not be featurised; the message names it."""


def feature_space_current(project: Project, *, seed: int | None = None) -> FeatureSpace:
    """The project's space for its current featuriser and version, fitted now if it does not exist."""
    cls = FEATURISERS.get(project.featuriser)
    if cls is None:
        raise FeaturisingFailed(f"project {project.pk}: unknown featuriser {project.featuriser!r}")
    existing = FeatureSpace.objects.filter(project=project, featuriser=cls.name, version=cls.version).first()
    if existing is not None:
        return existing
    ids = np.fromiter(Item.objects.filter(project=project).values_list("id", flat=True), dtype=np.int64)
    if len(ids) == 0:
        raise FeaturisingFailed(f"project {project.pk} has no items to fit the {cls.name} featuriser on")
    rng = np.random.default_rng(project.cold_start_seed if seed is None else seed)
    sample = np.sort(rng.choice(ids, size=min(FIT_SAMPLE, len(ids)), replace=False))
    payloads = _payloads(project, sample.tolist())
    try:
        featuriser = featuriser_create(cls.name).fit(payloads)
    except FeaturiserError as exc:
        raise FeaturisingFailed(f"project {project.pk}: fitting {cls.name} failed: {exc}") from exc
    buffer = io.BytesIO()
    joblib.dump(featuriser, buffer)
    try:
        with transaction.atomic():
            return FeatureSpace.objects.create(
                project=project, featuriser=cls.name, version=cls.version, dim=featuriser.dim,
                is_sparse=cls.sparse, state=buffer.getvalue(), fitted_on=len(sample),
            )
    except IntegrityError:  # another worker fitted it first; use theirs so rows agree
        return FeatureSpace.objects.get(project=project, featuriser=cls.name, version=cls.version)


def featuriser_load(space: FeatureSpace) -> Featuriser:
    return joblib.load(io.BytesIO(bytes(space.state)))


def _payloads(project: Project, item_ids: list[int]) -> list:
    by_id: dict[int, dict] = {}
    for start in range(0, len(item_ids), 5_000):
        chunk = item_ids[start:start + 5_000]
        by_id.update(Item.objects.filter(project=project, pk__in=chunk).values_list("id", "data"))
    return [payload_of(project.modality, by_id[i]) for i in item_ids]


def features_fill(space: FeatureSpace, progress: Progress | None = None) -> int:
    """Featurise every item of the space's project that has no row yet; returns how many were added.

    Runs in batches, each committed on its own, so a crash loses at most one
    batch and a second worker filling the same space skips what is done.
    """
    project = space.project
    missing = Item.objects.filter(project=project).exclude(
        Exists(ItemFeatures.objects.filter(space=space, item=OuterRef("pk")))
    )
    total = missing.count()
    if total == 0:
        return 0
    featuriser = featuriser_load(space)
    done, last_id = 0, 0
    if progress:
        progress("featurising", 0, total)
    while True:
        batch = list(missing.filter(pk__gt=last_id).order_by("pk").values_list("id", "external_id", "data")[:FILL_BATCH])
        if not batch:
            break
        last_id = batch[-1][0]
        payloads = [payload_of(project.modality, data) for _, _, data in batch]
        try:
            X = featuriser.transform(payloads)
        except FeaturiserError as exc:
            raise FeaturisingFailed(f"project {project.pk}: {_which_item(featuriser, batch, project)}: {exc}") from exc
        rows = [ItemFeatures(space=space, item_id=item_id, vector=blob)
                for (item_id, _, _), blob in zip(batch, rows_encode(X))]
        ItemFeatures.objects.bulk_create(rows, batch_size=1_000, ignore_conflicts=True)
        done += len(batch)
        if progress:
            progress("featurising", done, total)
    logger.info("project %s: featurised %s items with %s", project.pk, done, space.featuriser)
    return done


def _which_item(featuriser: Featuriser, batch: list, project: Project) -> str:
    for _, external_id, data in batch:
        try:
            featuriser.transform([payload_of(project.modality, data)])
        except FeaturiserError:
            return f"item {external_id!r}"
    return "an item"


def features_load(space: FeatureSpace, item_ids: list[int]):
    """Feature rows of `item_ids`, in that order; FeaturisingFailed names any item without one."""
    by_id: dict[int, bytes] = {}
    for start in range(0, len(item_ids), READ_CHUNK):
        chunk = item_ids[start:start + READ_CHUNK]
        by_id.update(ItemFeatures.objects.filter(space=space, item_id__in=chunk).values_list("item_id", "vector"))
    missing = [i for i in item_ids if i not in by_id]
    if missing:
        raise FeaturisingFailed(f"{len(missing)} items have no {space.featuriser} features yet (e.g. id {missing[0]})")
    return rows_decode([by_id[i] for i in item_ids], dim=space.dim, is_sparse=space.is_sparse)


def features_iter_open(space: FeatureSpace, chunk: int = READ_CHUNK) -> Iterator[tuple[np.ndarray, object]]:
    """(item ids, feature rows) of the project's open items, `chunk` at a time, by item id.

    One keyset-paginated join per chunk over the (space, item) index, so
    memory is bounded by the chunk and no query grows with the pool.
    """
    features = connection.ops.quote_name(ItemFeatures._meta.db_table)
    items = connection.ops.quote_name(Item._meta.db_table)
    sql = (
        f"SELECT f.item_id, f.vector FROM {features} f JOIN {items} i ON i.id = f.item_id "
        f"WHERE f.space_id = %s AND f.item_id > %s AND i.done = %s ORDER BY f.item_id LIMIT %s"
    )
    last_id = 0
    while True:
        rows = _fetch_all(sql, [space.pk, last_id, False, chunk])
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        last_id = int(ids[-1])
        yield ids, rows_decode([r[1] for r in rows], dim=space.dim, is_sparse=space.is_sparse)


def _fetch_all(sql: str, params: list) -> list[tuple]:
    """Rows of one query; on PostgreSQL in the binary result format, which halves the cost of
    reading a million feature blobs (bench/scoring: 19.9 s -> 11.5 s), since bytea need not be hex-decoded."""
    if connection.vendor == "postgresql":
        import psycopg

        connection.ensure_connection()
        # Django's backend binds client-side (ClientCursor), which cannot ask for binary results.
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(sql, params, binary=True)
            return cursor.fetchall()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
