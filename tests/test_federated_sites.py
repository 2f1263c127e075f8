"""Federation across real site deployments: two Celery workers, each with its own SQLite database, on a real Redis.

Each site's labelled digits live only in its own database; the coordinator (this
test process, on the test database) knows each site's queue and project id and
nothing else. Two rounds complete; the payload audit proves that only weight
changes, counts and scalar metrics crossed; a site killed mid-round is a dropout.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from sklearn.datasets import load_digits

from learners.federated.coordinator import Coordinator
from learners.federated.wire import Message, PayloadAudit, message_encode, meta_keys
from learners.models import FederatedRound, FederatedRun
from learners.services.federated import backend_for, federated_run_create, federated_run_execute, federation_check
from tests.conftest import ROOT, WorkerProcess, wait_for, worker_env
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)

DIGITS = load_digits()
CLASSES = ["digit-four-zq", "digit-one-zq", "digit-seven-zq"]  # sorted; distinctive, to search the bytes for
DIGIT_OF = {"digit-one-zq": 1, "digit-four-zq": 4, "digit-seven-zq": 7}
ROWS_PER_CLASS = 24

ALLOWED_META = {
    "train": {"round", "version", "model", "model.kind", "model.n_features", "model.n_classes", "model.hidden",
              "training", "training.epochs", "training.batch_size", "training.lr", "training.proximal_mu",
              "training.max_steps", "seed", "compression", "classes_digest"},
    "update": {"num_examples", "base_version", "metrics", "metrics.train_loss", "metrics.accuracy_before",
               "metrics.loss_before", "metrics.steps", "compression", "compression.name"},
}


def site_rows_for(slug: str, offset: int) -> list[tuple[str, list[int], str]]:
    """(external id, pixels, label) rows of a site: a different slice of each digit per site, non-IID counts."""
    rows = []
    for label, digit in DIGIT_OF.items():
        index = np.flatnonzero(DIGITS.target == digit)
        count = ROWS_PER_CLASS if (digit == 1) == (slug == "north") else ROWS_PER_CLASS // 3
        for row in index[offset:offset + count]:
            rows.append((f"{slug}-secret-{row}", [int(v) for v in DIGITS.data[row]], label))
    return rows


class SiteDeployment:
    """One site: its own SQLite database, set up by a separate process, and its own worker on `site.<slug>`."""

    def __init__(self, slug: str, offset: int, folder) -> None:
        self.slug = slug
        self.database_url = f"sqlite:///{folder / f'site-{slug}.sqlite3'}"
        env = worker_env(DATABASE_URL=self.database_url)
        out = subprocess.run([sys.executable, "-m", "tests.federated_site", slug, str(offset)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        info = json.loads(out.stdout.strip().splitlines()[-1])
        self.project_id = info["project_id"]
        self.external_ids = info["external_ids"]
        self.rows = site_rows_for(slug, offset)
        self.worker = WorkerProcess(queues=f"site.{slug}", name=f"site-{slug}",
                                    env={"DATABASE_URL": self.database_url})

    def stop(self) -> None:
        self.worker.stop()


@pytest.fixture(scope="module")
def sites(django_db_setup, django_db_blocker, redis_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sites")
    deployments = {slug: SiteDeployment(slug, offset, folder) for slug, offset in (("north", 0), ("south", 40))}
    yield deployments
    for deployment in deployments.values():
        deployment.stop()


def make_federation(sites, **settings):
    from learners.services.federated import federation_create

    settings = {"training": {"epochs": 5, "lr": 0.5, "batch_size": 16}, "timeout_seconds": 60.0, **settings}
    return federation_create(
        name=f"digits across sites {time.monotonic_ns()}", owner=make_user(), featuriser="image_pixels",
        n_features=64, classes=CLASSES, backend="celery", estimator="logistic_regression",
        sites=[{"slug": s.slug, "remote_project_id": s.project_id} for s in sites.values()], **settings)


def test_two_site_workers_complete_two_rounds_and_only_updates_cross(sites):
    federation = make_federation(sites)
    run = federated_run_create(federation_id=federation.pk, rounds=2)
    summary = federated_run_execute(run_id=run.pk)

    assert summary["status"] == "succeeded" and summary["rounds"] == 2 and summary["dropouts"] == 0
    rounds = list(FederatedRound.objects.filter(run=run).order_by("number"))
    assert [r.version for r in rounds] == [1, 2]
    for record in rounds:
        assert sorted(record.participants) == ["north", "south"] and record.updates == 2
        assert record.bytes_in > 0 and record.bytes_out > 0
        # the round's ingress is exactly what its audit recorded coming in
        assert record.bytes_in == sum(p["nbytes"] for p in record.payloads if p["direction"] == "in")
    # the second round's weights were evaluated at the sites before training: they learned something
    assert rounds[1].metrics["accuracy_before"] > 0.8
    counts = {p["site"]: p["meta"]["num_examples"] for p in rounds[0].payloads if p["direction"] == "in"}
    assert counts == {slug: len(s.rows) for slug, s in sites.items()}
    assert FederatedRun.objects.get(pk=run.pk).weights


def test_payload_audit_of_a_real_run_shows_no_item_feature_id_or_label_crossed(sites):
    federation = make_federation(sites)
    plan = federation_check(federation, list(federation.sites.all()))
    plan.rounds = 2
    raw: list[bytes] = []
    audit = PayloadAudit()
    original = audit.record
    audit.record = lambda direction, site, data, **kw: (raw.append(bytes(data)), original(direction, site, data, **kw))[1]
    coordinator = Coordinator(backend_for(federation), plan, audit=audit)
    results = coordinator.run()
    assert [r.updates for r in results] == [2, 2]

    shapes = {name: ("float32", shape) for name, shape in plan.model.shapes().items()}
    assert len(audit.records) == 8  # 2 rounds x 2 sites x (out, in)
    for record in audit.records:
        assert record.kind in ("train", "update")
        assert record.arrays == shapes, record  # only the model's own arrays, in the model's shapes
        assert meta_keys(record.meta) <= ALLOWED_META[record.kind], meta_keys(record.meta) - ALLOWED_META[record.kind]
        assert all(isinstance(v, (int, float)) for v in record.meta.get("metrics", {}).values())
    blob = b"".join(raw)
    secrets = [label.encode() for label in CLASSES]
    for site in sites.values():
        secrets += [external_id.encode() for external_id in site.external_ids]
        for _, pixels, _ in site.rows:
            secrets.append(" ".join(str(v) for v in pixels).encode())  # the item payload as imported
            row = np.asarray(pixels, dtype=np.float32)
            secrets += [row.tobytes(), (row / 16.0).astype(np.float32).tobytes()]  # raw and featurised rows
    assert leaks(blob, secrets) == []
    # the scan is not blind: one featurised row inside a message would be caught
    planted = message_encode(Message(kind="update", arrays={"linear.0.weight": np.frombuffer(secrets[-1], np.float32)}))
    assert leaks(blob + planted, secrets) == [secrets[-1][:40]]


def leaks(blob: bytes, secrets: list[bytes]) -> list[bytes]:
    return [secret[:40] for secret in secrets if secret in blob]


def test_site_killed_mid_round_ends_the_round_as_a_dropout(sites):
    federation = make_federation(sites, timeout_seconds=12.0,
                                 training={"epochs": 3000, "lr": 0.05, "batch_size": 8})  # seconds of work per site
    plan = federation_check(federation, list(federation.sites.all()))
    backend = backend_for(federation)
    coordinator = Coordinator(backend, plan)
    from workbench.celery import app

    victim = sites["south"]
    started = {}

    def kill_when_started():
        task_id = backend._pending.get("south")
        if task_id and app.backend.get_task_meta(task_id)["status"] == "STARTED":
            victim.worker.process.kill()
            victim.worker.process.wait()
            started["at"] = time.monotonic()
            return True
        return False

    killer = threading.Thread(target=lambda: wait_for(kill_when_started, timeout=30, interval=0.05))
    killer.start()
    began = time.monotonic()
    result = coordinator.round()
    killer.join()
    elapsed = time.monotonic() - began
    assert "at" in started, "the south worker never started the task"
    assert result.dropouts == {"south": "no reply within 12 s"}
    assert result.participants == ["north", "south"] and result.updates == 1 and result.aggregated
    assert elapsed < 12.0 + 5.0
    # bring the site back for the other tests (module fixture)
    victim.worker = WorkerProcess(queues="site.south", name="site-south-2", env={"DATABASE_URL": victim.database_url})


def test_secure_aggregation_across_site_workers_gives_the_plain_round(sites):
    plain = make_federation(sites)
    secure = make_federation(sites, secure_aggregation=True)
    results = {}
    for federation in (plain, secure):
        plan = federation_check(federation, list(federation.sites.all()))
        coordinator = Coordinator(backend_for(federation), plan)
        result = coordinator.round()
        results[federation.secure_aggregation] = (coordinator, result)
    (clear, _), (masked, b) = results[False], results[True]
    assert b.updates == 2 and not b.dropouts
    for name in clear.weights:
        np.testing.assert_allclose(masked.weights[name], clear.weights[name], atol=1e-3)
    kinds = [r.kind for r in masked.audit.records if r.direction == "in"]
    assert sorted(set(kinds)) == ["secagg_keys", "secagg_masked", "secagg_reveal", "secagg_shares"]
