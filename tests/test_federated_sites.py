"""Federation across real site deployments: each site its own SQLite database and its own site worker
(`manage.py site_worker`) on the federation's broker, a real Redis.

Each site's labelled digits live only in its own database, and each site decided what it shares: its
manager offered a project to a federation by name, with limits (`SiteOffer`). The coordinator (this
test process, on the test database) knows each site's queue and nothing else. Rounds complete; the
payload audit and every site's own ledger list the same messages, and only weight changes, counts and
scalar metrics crossed; requests outside an offer, and any task but the federated one, are refused
and recorded at the site; a site killed mid-round is a dropout, and a dead site costs no timeout.
"""
from __future__ import annotations

import json
import sqlite3
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
ROWS_PER_CLASS = 30
SITES = (("north", 0), ("south", 40), ("east", 80))
OWN_BROKER = "redis://127.0.0.1:1/0"  # each site's own broker (its own work); the federation never sees it
ALIVE_SECONDS = 3.0  # the site workers' liveness key lives this long (30 s by default)

ALLOWED_META = {
    "train": {"round", "version", "model", "model.kind", "model.n_features", "model.n_classes", "model.hidden",
              "training", "training.epochs", "training.batch_size", "training.lr", "training.proximal_mu",
              "training.max_steps", "seed", "compression", "classes_digest", "strategy", "sites",
              "secure_aggregation"},
    "update": {"num_examples", "base_version", "metrics", "metrics.train_loss", "metrics.accuracy_before",
               "metrics.loss_before", "metrics.steps", "metrics.heldout_accuracy", "metrics.heldout_loss",
               "metrics.heldout_examples", "compression", "compression.name"},
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


def federation_broker() -> str:
    from workbench.celery import app

    return str(app.conf.broker_url)


class SiteDeployment:
    """One site: its own SQLite database, set up by its own process, and its site worker on `site.<slug>`."""

    def __init__(self, slug: str, offset: int, folder, *, worker: bool = True) -> None:
        self.slug = slug
        self.database = folder / f"site-{slug}.sqlite3"
        self.env = {"DATABASE_URL": f"sqlite:///{self.database}", "REDIS_URL": OWN_BROKER,
                    "WORKBENCH_SITE_ALIVE_SECONDS": str(ALIVE_SECONDS)}
        info = json.loads(self.python("-m", "tests.federated_site", "setup", slug, str(offset)).splitlines()[-1])
        self.project_id = info["project_id"]
        self.manager = info["manager"]
        self.external_ids = info["external_ids"]
        self.rows = site_rows_for(slug, offset)
        self.worker: WorkerProcess | None = None
        if worker:
            self.start()

    def python(self, *argv: str) -> str:
        out = subprocess.run([sys.executable, *argv], cwd=ROOT, env=worker_env(**self.env), capture_output=True,
                             text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    def start(self, name: str = "") -> None:
        self.worker = WorkerProcess(name=name or f"site-{self.slug}", env=self.env, argv=[
            sys.executable, "manage.py", "site_worker", "--broker", federation_broker(), "--site", self.slug,
            "--hostname", f"{name or 'site-' + self.slug}@%h"])

    def offer(self, *federations, **settings) -> list[int]:
        """The site's manager offers its project to each federation (the coordinator's key in the offer)."""
        key = {} if settings.get("transport") == "flower" else {"coordinator_key": None}
        specs = [{"project_id": self.project_id, "federation": f.name, "site_name": self.slug,
                  **{k: f.public_key for k in key}, **settings} for f in federations]
        return json.loads(self.python("-m", "tests.federated_site", "offer", self.slug, json.dumps(specs)))

    def query(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(self.database) as db:
            return db.execute(sql, params).fetchall()

    def ledger(self, federation: str) -> list[dict]:
        rows = self.query("SELECT direction, kind, round, nbytes, arrays, meta, reason FROM learners_siteledgerentry "
                          "WHERE federation = ? ORDER BY id", federation)
        return [{"direction": d, "kind": k, "round": r, "nbytes": n, "arrays": json.loads(a), "meta": json.loads(m),
                 "reason": why} for d, k, r, n, a, m, why in rows]

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()


@pytest.fixture(scope="module")
def sites(django_db_setup, django_db_blocker, redis_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sites")
    deployments = {slug: SiteDeployment(slug, offset, folder) for slug, offset in SITES}
    yield deployments
    for deployment in deployments.values():
        deployment.stop()


def make_federation(members, **settings):
    from learners.services.federated import federation_create

    settings = {"training": {"epochs": 5, "lr": 0.5, "batch_size": 16}, "timeout_seconds": 60.0, "backend": "celery",
                **settings}
    return federation_create(
        name=f"digits across sites {time.monotonic_ns()}", owner=make_user(), featuriser="image_pixels",
        n_features=64, classes=CLASSES, estimator="logistic_regression",
        sites=[{"slug": s.slug} for s in members], **settings)


def one_round(federation):
    plan = federation_check(federation, list(federation.sites.all()))
    coordinator = Coordinator(backend_for(federation), plan)
    return coordinator, coordinator.round()


def test_three_site_workers_complete_two_rounds_and_each_ledger_lists_what_the_audit_lists(sites):
    federation = make_federation(sites.values())
    for site in sites.values():
        site.offer(federation)
    run = federated_run_create(federation_id=federation.pk, rounds=2)
    summary = federated_run_execute(run_id=run.pk)

    assert summary["status"] == "succeeded" and summary["rounds"] == 2 and summary["dropouts"] == 0
    rounds = list(FederatedRound.objects.filter(run=run).order_by("number"))
    assert [r.version for r in rounds] == [1, 2]
    for record in rounds:
        assert sorted(record.participants) == sorted(sites) and record.updates == 3
        assert record.bytes_in == sum(p["nbytes"] for p in record.payloads if p["direction"] == "in")
    # the second round's weights, evaluated at each site on rows it keeps aside and never trains on
    assert rounds[1].metrics["heldout_accuracy"] > 0.8
    assert rounds[1].metrics["accuracy_before"] > 0.8
    for slug, site in sites.items():
        update = next(p for p in rounds[0].payloads if p["direction"] == "in" and p["site"] == slug)
        held, trained = update["meta"]["metrics"]["heldout_examples"], update["meta"]["num_examples"]
        assert held > 0 and held + trained == len(site.rows)
        # the site's ledger, in its own database, lists exactly the messages the coordinator's audit lists
        audit = [{"direction": {"out": "received", "in": "sent"}[p["direction"]], "kind": p["kind"],
                  "round": p["round"], "nbytes": p["nbytes"], "arrays": p["arrays"], "meta": p["meta"]}
                 for record in rounds for p in record.payloads if p["site"] == slug]
        ledger = [{k: v for k, v in entry.items() if k != "reason"} for entry in site.ledger(federation.name)]
        assert ledger == audit and len(ledger) == 4
    assert FederatedRun.objects.get(pk=run.pk).weights


def test_payload_audit_of_a_real_run_shows_no_item_feature_id_or_label_crossed(sites):
    federation = make_federation(sites.values())
    for site in sites.values():
        site.offer(federation)
    plan = federation_check(federation, list(federation.sites.all()))
    plan.rounds = 2
    raw: list[bytes] = []
    audit = PayloadAudit()
    original = audit.record
    audit.record = lambda direction, site, data, **kw: (raw.append(bytes(data)), original(direction, site, data, **kw))[1]
    coordinator = Coordinator(backend_for(federation), plan, audit=audit)
    results = coordinator.run()
    assert [r.updates for r in results] == [3, 3]

    shapes = {name: ("float32", shape) for name, shape in plan.model.shapes().items()}
    assert len(audit.records) == 12  # 2 rounds x 3 sites x (out, in)
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


# -- what a site refuses ------------------------------------------------------------------------------------


def refused_entries(site, federation) -> list[dict]:
    return [e for e in site.ledger(federation.name) if e["direction"] == "refused"]


def assert_refused(result, site, federation, reason: str) -> None:
    """The site refused with `reason`: a dropout saying so, nothing sent but the refusal, recorded at the site."""
    assert result.updates == 0 and not result.aggregated
    assert reason in result.dropouts[site.slug], result.dropouts
    ledger = site.ledger(federation.name)
    assert [e["direction"] for e in ledger if e["direction"] != "received"] == ["refused"], ledger
    (entry,) = refused_entries(site, federation)
    assert reason in entry["reason"] and entry["arrays"] == {}  # a refusal carries no arrays


def test_a_federation_the_site_did_not_offer_to_is_refused_and_recorded(sites):
    federation = make_federation([sites["north"], sites["south"]])
    _, result = one_round(federation)
    for slug in ("north", "south"):
        assert_refused(result, sites[slug], federation, "this site has not offered a project to federation")
        assert sites[slug].ledger(federation.name)[0]["direction"] == "refused"  # nothing read, nothing trained


def test_a_batch_below_the_sites_floor_is_refused(sites):
    federation = make_federation([sites["north"], sites["south"]],
                                 training={"epochs": 2, "lr": 0.5, "batch_size": 8})
    sites["north"].offer(federation)
    _, result = one_round(federation)
    assert_refused(result, sites["north"], federation, "batch_size 8 is below this site's minimum of 16")


def test_dp_weaker_than_the_sites_floor_is_refused(sites):
    federation = make_federation([sites["north"], sites["south"]],
                                 privacy={"clip_norm": 1.0, "noise_multiplier": 0.3, "mode": "site"})
    sites["north"].offer(federation, limits={"dp_max_clip_norm": 1.0, "dp_min_noise_multiplier": 1.0})
    _, result = one_round(federation)
    assert_refused(result, sites["north"], federation, "noise_multiplier 0.3 is weaker than this site's floor")


def test_the_reconstruction_probe_is_refused_by_default_limits(sites):
    """One site, batch 1, one step, lr 1: the update would hand over one row (tests/test_federated_limits.py)."""
    federation = make_federation([sites["north"]], min_updates=1, allow_single_site=True,
                                 training={"epochs": 1, "lr": 1.0, "batch_size": 1, "max_steps": 1})
    sites["north"].offer(federation)
    _, result = one_round(federation)
    assert_refused(result, sites["north"], federation, "this site answers only with at least 1 other site")


def test_a_switched_off_offer_and_an_unknown_coordinator_key_are_refused(sites):
    north = sites["north"]
    disabled = make_federation([north, sites["south"]])
    impostor = make_federation([north, sites["south"]])
    other = make_federation([north, sites["south"]])
    north.offer(disabled, enabled=False)
    # the offer names some other coordinator's key: requests signed with this federation's do not verify
    north.python("-m", "tests.federated_site", "offer", "north", json.dumps([
        {"project_id": north.project_id, "federation": impostor.name, "site_name": "north",
         "coordinator_key": other.public_key}]))
    _, result = one_round(disabled)
    assert_refused(result, north, disabled, "this site has switched its offer off")
    _, result = one_round(impostor)
    assert_refused(result, north, impostor, "not signed by the coordinator this site's offer names")


@pytest.mark.parametrize("task, kwargs", [
    ("workbench.export_annotations", {"project_id": 1, "path": "EXPORT", "fmt": "csv"}),
    ("workbench.queue_status", {"project_id": 1}),
    ("workbench.import_items", {"project_id": 1, "path": "EXPORT", "fmt": "jsonl"}),
])
def test_a_non_federated_task_on_a_site_queue_is_refused_without_touching_the_database(sites, task, kwargs,
                                                                                       tmp_path):
    from workbench.celery import app

    north = sites["north"]
    path = tmp_path / "written-by-the-sender.csv"
    kwargs = {k: (str(path) if v == "EXPORT" else v) for k, v in kwargs.items()}
    tables = ("annotate_item", "annotate_annotation", "annotate_project", "annotate_importjob")
    before = {t: north.query(f"SELECT COUNT(*) FROM {t}") for t in tables}
    refused_before = len(north.query("SELECT id FROM learners_siteledgerentry WHERE kind = ?", task))
    result = app.send_task(task, kwargs=kwargs, queue="site.north")
    wait_for(lambda: result.state == "FAILURE", timeout=30, message=f"{task} to fail at the site")
    assert type(result.result).__name__ == "NotRegistered" and task in str(result.result)
    assert {t: north.query(f"SELECT COUNT(*) FROM {t}") for t in tables} == before
    assert not path.exists()
    reasons = north.query("SELECT reason FROM learners_siteledgerentry WHERE kind = ? AND direction = 'refused'",
                          task)
    assert len(reasons) == refused_before + 1 and "not the federated training task" in reasons[-1][0]


# -- dead sites -------------------------------------------------------------------------------------------------


def test_site_killed_mid_round_is_a_dropout_and_a_dead_site_costs_no_timeout(sites):
    north, south = sites["north"], sites["south"]
    federation = make_federation([north, south], timeout_seconds=12.0, allow_single_site=True, min_updates=1,
                                 training={"epochs": 3000, "lr": 0.05, "batch_size": 16})  # seconds of work
    for site in (north, south):
        site.offer(federation, limits={"max_epochs": 3000, "max_steps": 1_000_000})
    plan = federation_check(federation, list(federation.sites.all()))
    backend = backend_for(federation)
    coordinator = Coordinator(backend, plan)
    from workbench.celery import app

    started = {}

    def kill_when_started():
        task_id = backend._pending.get("south")
        if task_id and app.backend.get_task_meta(task_id)["status"] == "STARTED":
            south.worker.process.kill()
            south.worker.process.wait()
            started["at"] = time.monotonic()
            return True
        return False

    killer = threading.Thread(target=lambda: wait_for(kill_when_started, timeout=30, interval=0.01))
    killer.start()
    began = time.monotonic()
    result = coordinator.round()
    killer.join()
    elapsed = time.monotonic() - began
    assert "at" in started, "the south worker never started the task"
    assert result.dropouts == {"south": "no reply within 12 s"}
    assert result.participants == ["north", "south"] and result.updates == 1 and result.aggregated
    assert elapsed < 12.0 + 5.0
    # its liveness key lapses: the next round knows south is down and does not wait for it
    time.sleep(ALIVE_SECONDS + 0.5)
    began = time.monotonic()
    result = coordinator.round()
    assert result.dropouts == {"south": "no worker serves its queue (no liveness beat on the broker)"}
    assert result.updates == 1 and time.monotonic() - began < plan.timeout
    south.start(name="site-south-2")  # back for the other tests (module fixture)


def test_secure_aggregation_across_three_site_workers_gives_the_plain_round(sites):
    plain = make_federation(sites.values())
    secure = make_federation(sites.values(), secure_aggregation=True)
    for site in sites.values():
        site.offer(plain, secure)
    clear, _ = one_round(plain)
    masked, result = one_round(secure)
    assert result.updates == 3 and not result.dropouts
    for name in clear.weights:
        np.testing.assert_allclose(masked.weights[name], clear.weights[name], atol=1e-3)
    kinds = [r.kind for r in masked.audit.records if r.direction == "in"]
    assert sorted(set(kinds)) == ["secagg_keys", "secagg_masked", "secagg_reveal", "secagg_shares"]
    # every one of the four exchanges is in each site's ledger too
    for site in sites.values():
        sent = [e["kind"] for e in site.ledger(secure.name) if e["direction"] == "sent"]
        assert sent == ["secagg_keys", "secagg_shares", "secagg_masked", "secagg_reveal"]
