"""The Flower backend on a real deployment on loopback: a SuperLink, one SuperNode per site, our Flower app.

Each site is its own workbench (own SQLite database) whose manager offered its project to the
federation for the Flower transport; each SuperNode's --node-config names that site's database, and
the ClientApp answers through the same site code as the Celery site worker (offer, limits, ledger).
The coordinator starts the run with `flwr run --format json`, follows `flwr log --stream` and stores
the rounds in the same records as the other backends.
"""
from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from learners.federated.wire import message_decode, meta_keys
from learners.models import FederatedRound, FederatedRun
from learners.services.federated import federated_run_create, federated_run_execute
from tests.conftest import ROOT, worker_env
from tests.test_federated_sites import ALLOWED_META, CLASSES, OWN_BROKER, SiteDeployment, leaks, make_federation

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_env(**extra: str) -> dict[str, str]:
    env = worker_env(**extra)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # flower-superexec is looked up on PATH
    return env


class Process:
    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


@pytest.fixture(scope="module")
def flower(django_db_setup, django_db_blocker, redis_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("flower")
    port = free_port()
    superlink = Process([str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(port),
                         "--isolation", "subprocess", "--disable-runtime-dependency-installation"],
                        folder / "superlink.log", flower_env(FLWR_HOME=str(folder / "superlink-home")))
    sites = {slug: SiteDeployment(slug, offset, folder, worker=False) for slug, offset in (("north", 0),
                                                                                           ("south", 40))}
    nodes = []
    for slug, site in sites.items():
        config = f"database-url='sqlite:///{site.database}' data-dir='{folder / slug}'"
        nodes.append(Process([str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                              "--host", "127.0.0.1", "--port", str(free_port()), "--isolation", "subprocess",
                              "--node-config", config],
                             folder / f"supernode-{slug}.log",
                             flower_env(REDIS_URL=OWN_BROKER, DATABASE_URL="", FLWR_HOME=str(folder / f"home-{slug}"))))
    time.sleep(3)
    for process in (superlink, *nodes):
        assert process.process.poll() is None, process.text()[-3000:]
    yield {"address": f"127.0.0.1:{port}", "sites": sites, "superlink": superlink, "nodes": nodes}
    for process in (*nodes, superlink):
        process.stop()


def flower_federation(flower, **settings):
    """A federation on the test SuperLink, offered by every site for the Flower transport."""
    federation = make_federation(flower["sites"].values(), backend="flower", flower_address=flower["address"],
                                 **settings)
    for site in flower["sites"].values():
        site.offer(federation, transport="flower")
    return federation


def test_three_rounds_through_flower_and_each_ledger_lists_what_the_audit_lists(flower):
    sites = flower["sites"]
    federation = flower_federation(flower)
    run = federated_run_create(federation_id=federation.pk, rounds=3)
    try:
        summary = federated_run_execute(run_id=run.pk)
    except Exception:
        print(flower["superlink"].text()[-4000:], *(n.text()[-4000:] for n in flower["nodes"]))
        raise
    assert summary["status"] == "succeeded" and summary["rounds"] == 3 and summary["dropouts"] == 0, summary
    rounds = list(FederatedRound.objects.filter(run=run).order_by("number"))
    assert [r.version for r in rounds] == [1, 2, 3]
    assert rounds[2].metrics["heldout_accuracy"] > 0.8
    saved = FederatedRun.objects.get(pk=run.pk)
    assert message_decode(bytes(saved.weights)).meta["version"] == 3
    assert saved.plan["flower_hello"]["missing"] == [] and sorted(saved.plan["flower_hello"]["nodes"]) == sorted(sites)
    raw_secrets = [label.encode() for label in CLASSES]
    for slug, site in sites.items():
        audit = [{"direction": {"out": "received", "in": "sent"}[p["direction"]], "kind": p["kind"],
                  "round": p["round"], "nbytes": p["nbytes"], "arrays": p["arrays"], "meta": p["meta"]}
                 for record in rounds for p in record.payloads if p["site"] == slug]
        ledger = [{k: v for k, v in e.items() if k != "reason"} for e in site.ledger(federation.name)
                  if e["kind"] != "hello"]
        assert ledger == audit and len(ledger) == 6
        for entry in ledger:
            assert meta_keys(entry["meta"]) <= ALLOWED_META[entry["kind"]]
        raw_secrets += [e.encode() for e in site.external_ids]
        for _, pixels, _ in site.rows:
            row = np.asarray(pixels, dtype=np.float32)
            raw_secrets += [" ".join(str(v) for v in pixels).encode(), row.tobytes(), (row / 16).tobytes()]
    # every message is in the SuperLink's state only as bytes we can also see in the stored weights/audit:
    # scan what the coordinator kept (final weights) and the sites' ledgers' header text
    blob = bytes(saved.weights) + b"".join(str(r.payloads).encode() for r in rounds)
    assert leaks(blob, raw_secrets) == []


def test_a_byte_scan_of_every_message_through_flower_finds_no_item_feature_id_or_label(flower, tmp_path):
    from learners.federated.coordinator import plan_as_dict
    from learners.federated.flower_run import FlowerRun, flower_home_write, run_config_for
    from learners.services.federated import federation_check

    sites = flower["sites"]
    federation = flower_federation(flower)
    plan = federation_check(federation, list(federation.sites.all()))
    plan.rounds = 2
    flower_home_write(tmp_path, address=flower["address"])
    run = FlowerRun(tmp_path)
    run.start(run_config_for(federation=federation.name, sites=list(sites), payload_bytes=True,
                             plan=plan_as_dict(plan, strategy_parameters={})))
    events = list(run.events())
    assert [e["event"] for e in events] == ["hello", "round", "round", "final"], events[-1]
    payloads = [p for e in events for p in e.get("payloads", [])]
    assert sorted((p["kind"], p["direction"]) for p in payloads) == sorted(
        [("hello", "out")] * 2 + [("hello", "in")] * 2 + [("train", "out")] * 4 + [("update", "in")] * 4)
    blob = b"".join(base64.b64decode(p["bytes"]) for p in payloads)
    assert len(blob) == sum(p["nbytes"] for p in payloads)
    secrets = [label.encode() for label in CLASSES]
    for site in sites.values():
        secrets += [e.encode() for e in site.external_ids]
        for _, pixels, _ in site.rows:
            row = np.asarray(pixels, dtype=np.float32)
            secrets += [" ".join(str(v) for v in pixels).encode(), row.tobytes(), (row / 16).tobytes()]
    assert leaks(blob, secrets) == []
    assert leaks(blob + secrets[-1], secrets) == [secrets[-1][:40]]  # the scan is not blind


def test_flower_celery_and_in_process_give_the_same_global_weights(flower):
    """Same seed, same rows (no hold-out), same strategy: the three backends agree to 1e-6."""
    from learners.federated.backends.inprocess import InProcessBackend
    from learners.federated.coordinator import Coordinator
    from learners.federated.site import Site
    from learners.federated.wire import message_decode as decode
    from learners.services.federated import backend_for, federation_check

    sites = flower["sites"]
    settings = {"training": {"epochs": 3, "lr": 0.5, "batch_size": 16}, "strategy": "fedadam"}
    over_flower = make_federation(sites.values(), backend="flower", flower_address=flower["address"], **settings)
    over_celery = make_federation(sites.values(), **settings)
    for site in sites.values():
        site.offer(over_flower, transport="flower", holdout_fraction=0.0)
        site.offer(over_celery, holdout_fraction=0.0)
        site.start()
    try:
        run = federated_run_create(federation_id=over_flower.pk, rounds=2)
        federated_run_execute(run_id=run.pk)
        flower_weights = decode(bytes(FederatedRun.objects.get(pk=run.pk).weights)).arrays
        plan = federation_check(over_celery, list(over_celery.sites.all()))
        plan.rounds = 2
        celery = Coordinator(backend_for(over_celery), plan)
        celery.run()
    finally:
        for site in sites.values():
            site.stop()
            site.worker = None
    local = {}
    for slug, site in sites.items():
        data = np.load(io.BytesIO(base64.b64decode(site.python("-m", "tests.federated_site", "rows", slug,
                                                               over_celery.name).strip())))
        X, y = data["X"], data["y"]
        local[slug] = Site(slug, rows=lambda X=X, y=y: (X, y), classes=CLASSES)
    plan = federation_check(over_celery, list(over_celery.sites.all()))  # a fresh strategy (FedAdam keeps state)
    plan.rounds = 2
    in_process = Coordinator(InProcessBackend({slug: local[slug] for slug in sites}), plan)
    in_process.run()
    assert set(flower_weights) == set(celery.weights) == set(in_process.weights)
    differences = {(backend, name): float(np.abs(weights[name] - in_process.weights[name]).max())
                   for backend, weights in (("flower", flower_weights), ("celery", celery.weights))
                   for name in celery.weights}
    assert max(differences.values()) < 1e-6, differences
    assert all(np.abs(w).max() > 0.01 for w in in_process.weights.values())  # they trained


def test_a_cancelled_flower_run_is_stopped_after_the_round_in_progress(flower):
    federation = flower_federation(flower)
    run = federated_run_create(federation_id=federation.pk, rounds=5)
    FederatedRun.objects.filter(pk=run.pk).update(cancel_requested=True)  # seen after the first round
    summary = federated_run_execute(run_id=run.pk)
    assert summary["status"] == "cancelled" and summary["rounds"] == 1, summary
