"""Federations as records: creation checks (nothing written on bad input), in-process runs stored round by
round, the workbench.federated_run task on a real worker, the admin pages and the command."""
from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from learners.models import FederatedRound, FederatedRun, Federation, FederationSite
from learners.services.federated import (
    FederationInvalid,
    federated_run_cancel,
    federated_run_create,
    federated_run_execute,
    federation_create,
)
from tests.conftest import wait_for
from tests.factories import make_user
from tests.test_meta_tasks import digits_project
from workbench.celery import enqueue, task_state

CLASSES = ["d0", "d1", "d2"]


def site_projects():
    return digits_project([0, 1, 2], labelled=15), digits_project([0, 1, 2], labelled=10, offset=20)


def create(projects, **settings):
    spec = dict(name="digits federation", owner=make_user(), featuriser="image_pixels", n_features=64,
                classes=CLASSES, training={"epochs": 3, "lr": 0.5},
                sites=[{"slug": f"site-{i}", "project_id": p.pk} for i, p in enumerate(projects)])
    spec.update(settings)
    return federation_create(**spec)


@pytest.mark.django_db
@pytest.mark.parametrize("settings, message", [
    ({"featuriser": "text_tfidf"}, r"featuriser: 'text_tfidf' is fitted per site"),
    ({"classes": ["d2", "d1", "d0"]}, r"classes: list them sorted by name"),
    ({"classes": ["d0"]}, r"classes: give at least two"),
    ({"estimator": "random_forest"}, r"estimator: estimator 'random_forest' has no weights that can be averaged"),
    ({"strategy": "fedprox", "strategy_parameters": {"mu": 1}}, r"strategy: .*unknown parameter 'mu'"),
    ({"strategy": "median", "secure_aggregation": True}, r"robust|clear"),
    ({"privacy": {"clip_norm": -1, "noise_multiplier": 1.0}}, r"privacy: .*clip_norm"),
    ({"compression": "zip"}, r"compression: 'zip'"),
    ({"training": {"epochs": 0}}, r"training: epochs and batch_size must be >= 1"),
    ({"training": {"epoch": 2}}, r"training: unknown settings \['epoch'\]"),
    ({"sites": [{"slug": "a", "project_id": 999999}]}, r"sites: site 'a': no project with id 999999"),
    ({"sites": []}, r"sites: a federation needs at least one site"),
    ({"backend": "celery"}, r"sites: site 'site-0' is another deployment: it offers its own project"),
    ({"secure_aggregation": True}, r"secure_aggregation: needs at least 3 sites a round \(2 here\)"),
    ({"min_updates": 1}, r"min_updates: a round aggregated from one site's update"),
    ({"min_updates": 3}, r"min_updates: 3 updates can never arrive from the 2 site"),
    ({"backend": "flower", "sites": [{"slug": "a"}, {"slug": "b"}]}, r"flower_address: the SuperLink's address"),
    ({"sites": [{"slug": "a", "remote_project_id": 3}, {"slug": "b"}]}, r"'remote_project_id' is not a site setting"),
    ({"n_features": 65}, None),  # the site projects' rows have 64 columns: refused when run, see below
])
def test_create_refuses_bad_settings_and_writes_nothing(settings, message):
    projects = site_projects()
    if message is None:
        federation = create(projects, **settings)
        run = federated_run_create(federation_id=federation.pk, rounds=1)
        federated_run_execute(run_id=run.pk)
        record = FederatedRound.objects.get(run=run)
        assert set(record.dropouts) == {"site-0", "site-1"} and "65" in record.dropouts["site-0"]
        assert not record.aggregated
        return
    with pytest.raises(FederationInvalid, match=message):
        create(projects, **settings)
    assert not Federation.objects.exists() and not FederationSite.objects.exists()


@pytest.mark.django_db
def test_site_project_with_other_labels_is_refused():
    good = digits_project([0, 1, 2], labelled=5)
    other = digits_project([3, 4, 5], labelled=5)
    with pytest.raises(FederationInvalid, match=r"sites: project \d+ of site 'site-1' has labels \['d3', 'd4', 'd5'\]"):
        create([good, other])
    assert not Federation.objects.exists()


@pytest.mark.django_db
def test_in_process_run_stores_every_round_with_its_audit_and_epsilon():
    federation = create(site_projects(), privacy={"clip_norm": 1.0, "noise_multiplier": 0.8, "mode": "site"})
    run = federated_run_create(federation_id=federation.pk, rounds=3)
    summary = federated_run_execute(run_id=run.pk)
    assert summary["status"] == "succeeded" and summary["rounds"] == 3
    rounds = list(FederatedRound.objects.filter(run=run))
    assert [r.number for r in rounds] == [1, 2, 3] and all(r.updates == 2 for r in rounds)
    assert rounds[0].epsilon < rounds[1].epsilon < rounds[2].epsilon
    assert FederatedRun.objects.get(pk=run.pk).epsilon == pytest.approx(rounds[2].epsilon)
    payloads = rounds[0].payloads
    assert {(p["direction"], p["site"]) for p in payloads} == {("out", "site-0"), ("out", "site-1"),
                                                               ("in", "site-0"), ("in", "site-1")}
    assert all(p["meta"]["num_examples"] == 1 for p in payloads if p["direction"] == "in")  # clipped, weight 1
    assert rounds[0].bytes_in == sum(p["nbytes"] for p in payloads if p["direction"] == "in")
    # a finished run is not run twice
    assert federated_run_execute(run_id=run.pk)["already"] is True


@pytest.mark.django_db
def test_a_run_whose_task_is_delivered_again_while_running_ends_failed_and_runs_no_round():
    federation = create(site_projects())
    run = federated_run_create(federation_id=federation.pk, rounds=3)
    # As its worker left it when killed mid-run: running, under the task that is now delivered again.
    FederatedRun.objects.filter(pk=run.pk).update(status="running", task_id="task-1")

    other = federated_run_execute(run_id=run.pk, task_id="task-2")  # another task: the run is someone else's
    assert other["already"] is True and FederatedRun.objects.get(pk=run.pk).status == "running"
    again = federated_run_execute(run_id=run.pk, task_id="task-1")

    run.refresh_from_db()
    assert again["already"] is True and run.status == "failed" and run.finished_at is not None
    assert "would spend the sites' privacy budget again" in run.error
    assert FederatedRound.objects.filter(run=run).count() == 0, "no round was run again"


@pytest.mark.django_db
def test_cancelled_run_stops_before_its_next_round():
    federation = create(site_projects())
    run = federated_run_create(federation_id=federation.pk, rounds=50)
    federated_run_cancel(run.pk)
    summary = federated_run_execute(run_id=run.pk)
    assert summary["status"] == "cancelled" and summary["rounds"] == 0


@pytest.mark.django_db(transaction=True)
def test_federated_run_task_by_name_on_a_real_worker_reports_progress(celery_worker):
    federation = create(site_projects(), mode="async", buffer_size=1)
    run = federated_run_create(federation_id=federation.pk, rounds=4)
    task_id = enqueue("workbench.federated_run", run_id=run.pk)
    seen = []

    def finished():
        state = task_state(task_id)
        seen.append(state)
        return state if state[0] in ("SUCCESS", "FAILURE") else None

    state, result = wait_for(finished, timeout=120, message="the federated run")
    assert state == "SUCCESS", result
    assert result["status"] == "succeeded" and result["rounds"] == 4
    assert FederatedRun.objects.get(pk=run.pk).task_id == task_id
    assert list(FederatedRound.objects.filter(run=run).values_list("version", flat=True)) == [1, 2, 3, 4]
    progress = [meta for state, meta in seen if state == "PROGRESS"]
    assert all(meta["stage"] == "federated aggregations" and meta["total"] == 4 for meta in progress)


@pytest.mark.django_db
def test_admin_lists_rounds_with_participants_dropouts_bytes_and_epsilon(client):
    federation = create(site_projects(), privacy={"clip_norm": 1.0, "noise_multiplier": 1.0, "mode": "site"})
    run = federated_run_create(federation_id=federation.pk, rounds=2)
    federated_run_execute(run_id=run.pk)
    admin = make_user("fed-admin")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    page = client.get("/admin/learners/federatedround/").content.decode()
    first = FederatedRound.objects.get(run=run, number=1)
    assert str(first.bytes_in) in page and f"{first.epsilon:.3f}"[:4] in page
    detail = client.get(f"/admin/learners/federatedrun/{run.pk}/change/").content.decode()
    assert "site-0, site-1" in detail
    audit = client.get(f"/admin/learners/federatedround/{first.pk}/change/").content.decode()
    assert "in site-0 update" in audit and "linear" not in audit.split("payload audit")[0][-10:]


@pytest.mark.django_db
def test_command_runs_a_federation_and_refuses_unknown_ones():
    federation = create(site_projects())
    out = io.StringIO()
    call_command("federated_run", federation.name, "--rounds", "2", stdout=out, stderr=io.StringIO())
    assert json.loads(out.getvalue())["rounds"] == 2
    with pytest.raises(CommandError, match="no federation 'nope'"):
        call_command("federated_run", "nope", stderr=io.StringIO())


@pytest.mark.django_db
def test_site_with_a_per_project_featuriser_refuses_to_train():
    from learners.federated.site import SiteRefused
    from learners.services.federated import site_rows
    from tests.factories import add_items, make_project

    project = make_project(featuriser="text_tfidf")
    add_items(project, ["some text", "more text"])
    with pytest.raises(SiteRefused, match="featuriser 'text_tfidf' is fitted per project"):
        site_rows(project, ["cat", "dog"])
