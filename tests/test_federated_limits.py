"""What a site agrees to, checked without a network: the limits, the coordinator's signature, offers.

The reconstruction probe: without limits, one site trained with batch 1, one step and lr 1 hands the
coordinator the row it trained on, exactly; with the default limits the same request is refused.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from learners.federated.backends.inprocess import InProcessBackend
from learners.federated.coordinator import Coordinator, FederationPlan
from learners.federated.identity import IdentityError, keypair_new, request_sign, request_verify
from learners.federated.limits import LimitRefused, SiteLimits
from learners.federated.local_training import LocalTraining
from learners.federated.models import ModelSpec
from learners.federated.site import Site
from learners.federated.strategies import strategy_create
from learners.federated.wire import Message, message_decode, message_encode
from learners.models import SiteLedgerEntry, SiteOffer
from learners.services.federated_site import OfferInvalid, offer_create, site_answer
from tests.factories import make_user
from tests.test_meta_tasks import digits_project


def probe_plan() -> FederationPlan:
    return FederationPlan(strategy=strategy_create("fedavg"), model=ModelSpec(kind="linear", n_features=64, n_classes=3),
                          training=LocalTraining(epochs=1, batch_size=1, lr=1.0, max_steps=1), rounds=1,
                          min_updates=1, timeout=10.0)


def one_row_site(limits):
    rng = np.random.default_rng(3)
    X = rng.random((20, 64)).astype(np.float32)
    y = np.array([0, 1, 2] * 6 + [0, 1])
    return X, y, Site("only", rows=lambda: (X, y), limits=limits)


def probe(site: Site):
    coordinator = Coordinator(InProcessBackend({"only": site}), probe_plan())
    before = {k: v.copy() for k, v in coordinator.weights.items()}
    result = coordinator.round()
    return result, {k: coordinator.weights[k] - before[k] for k in before}


def test_without_limits_the_probe_reconstructs_a_training_row_exactly():
    X, _, site = one_row_site(limits=None)
    result, change = probe(site)
    assert result.updates == 1
    weight = next(v for k, v in change.items() if v.ndim == 2)
    bias = next(v for k, v in change.items() if v.ndim == 1)
    c = int(np.argmax(np.abs(bias)))
    row = weight[c] / bias[c] if weight.shape[1] == 64 else weight[:, c] / bias[c]
    distances = np.abs(X - row).max(axis=1)
    assert distances.min() < 1e-5  # one of the site's rows, read off the coordinator's weights


def test_default_limits_refuse_the_probe_and_say_why():
    _, _, site = one_row_site(limits=SiteLimits())
    result, change = probe(site)
    assert result.updates == 0 and not result.aggregated
    assert "at least 1 other site" in result.dropouts["only"]
    assert all(not v.any() for v in change.values())


@pytest.mark.parametrize("meta, n_rows, reason", [
    ({"sites": 2, "training": {"batch_size": 8}}, 100, "batch_size 8 is below this site's minimum of 16"),
    ({"sites": 2, "training": {"batch_size": 16}}, 10, "this site has 10 labelled training row(s)"),
    ({"sites": 2, "training": {"batch_size": 16, "epochs": 11}}, 100, "epochs 11 is above"),
    ({"sites": 2, "training": {"batch_size": 16, "epochs": 10}}, 1000, "asks for 630 SGD steps"),
    ({"sites": 1, "training": {"batch_size": 16}}, 100, "at least 1 other site"),
    ({"sites": 2, "strategy": "fedadam", "training": {"batch_size": 16}}, 100, "strategy 'fedadam' is not one"),
])
def test_limits_refuse_requests_outside_them(meta, n_rows, reason):
    limits = SiteLimits(strategies=("fedavg",)) if "strategy" in meta else SiteLimits()
    with pytest.raises(LimitRefused, match=reason.replace("(", r"\(").replace(")", r"\)")):
        limits.check(meta, n_rows)


def test_a_dp_floor_needs_site_noise_at_least_as_strong():
    limits = SiteLimits(dp_max_clip_norm=1.0, dp_min_noise_multiplier=1.0)
    base = {"sites": 3, "training": {"batch_size": 16}}
    for privacy, reason in [(None, "only with differential privacy"),
                            ({"clip_norm": 1.0, "noise_multiplier": 2.0, "mode": "coordinator"}, "mode 'site'"),
                            ({"clip_norm": 2.0, "noise_multiplier": 2.0, "mode": "site"}, "clip_norm 2.0 is weaker"),
                            ({"clip_norm": 1.0, "noise_multiplier": 0.5, "mode": "site"}, "noise_multiplier 0.5")]:
        with pytest.raises(LimitRefused, match=reason):
            limits.check({**base, **({"privacy": privacy} if privacy else {})}, 100)
    limits.check({**base, "privacy": {"clip_norm": 0.5, "noise_multiplier": 1.5, "mode": "site"}}, 100)


def test_a_signature_binds_the_federation_the_site_the_message_and_the_time():
    private, public = keypair_new()
    signed = request_sign(private, federation="f", site="north", message=b"abc")
    request_verify(public, federation="f", site="north", message=b"abc", **signed)
    for changed in ({"federation": "g"}, {"site": "south"}, {"message": b"abd"}):
        arguments = {"federation": "f", "site": "north", "message": b"abc", **signed, **changed}
        with pytest.raises(IdentityError, match="not signed by the coordinator"):
            request_verify(public, **arguments)
    old = request_sign(private, federation="f", site="north", message=b"abc", issued_at=signed["issued_at"] - 7200)
    with pytest.raises(IdentityError, match="issued 7200 s ago"):
        request_verify(public, federation="f", site="north", message=b"abc", **old)


@pytest.mark.django_db
def test_offers_are_checked_as_a_whole_and_only_by_the_projects_manager():
    manager, outsider = make_user(), make_user()
    project = digits_project([0, 1], labelled=3, owner=manager)
    _, key = keypair_new()
    good = dict(project_id=project.pk, federation="hospitals", site_name="north", coordinator_key=key)
    for changed, message in [({"federation": ""}, "federation: give"), ({"site_name": "no spaces"}, "site_name"),
                             ({"transport": "ftp"}, "transport: 'ftp'"), ({"coordinator_key": "ab"}, "64 hex"),
                             ({"limits": {"min_batch": 3}}, "'min_batch' is not a limit"),
                             ({"limits": {"min_batch_size": 0}}, "min_batch_size: a whole number"),
                             ({"holdout_fraction": 1.0}, "holdout_fraction")]:
        with pytest.raises(OfferInvalid, match=message):
            offer_create(user=manager, **{**good, **changed})
    from annotate.errors import WorkbenchError

    with pytest.raises(WorkbenchError):
        offer_create(user=outsider, **good)
    assert not SiteOffer.objects.exists()
    offer_create(user=manager, **good)
    with pytest.raises(OfferInvalid, match="already has an offer"):
        offer_create(user=manager, **good)


@pytest.mark.django_db
def test_the_command_offers_lists_switches_off_and_shows_the_ledger():
    manager = make_user("site-op")
    project = digits_project([0, 1], labelled=3, owner=manager)
    _, key = keypair_new()
    out = io.StringIO()
    call_command("federation_offer", "--user", "site-op", "--project", str(project.pk), "--federation", "hospitals",
                 "--site-name", "north", "--coordinator-key", key, "--limits", '{"min_batch_size": 32}', stdout=out)
    offer = json.loads(out.getvalue())
    assert offer["limits"]["min_batch_size"] == 32 and offer["limits"]["max_steps"] == 200 and offer["enabled"]
    with pytest.raises(CommandError, match="--user"):
        call_command("federation_offer", "--project", str(project.pk), "--federation", "x", "--site-name", "s",
                     "--coordinator-key", key)
    out = io.StringIO()
    call_command("federation_offer", "--user", "site-op", "--disable", str(offer["offer_id"]), stdout=out)
    assert json.loads(out.getvalue())["enabled"] is False
    reply = message_decode(site_answer(federation="hospitals", message=message_encode(Message(kind="hello")),
                                       transport="flower"))
    assert reply.kind == "refused" and "offer is for celery, not flower" in reply.meta["reason"]
    out = io.StringIO()
    call_command("federation_offer", "--user", "site-op", "--ledger", str(offer["offer_id"]), stdout=out)
    entries = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["direction"] for e in entries] == ["received", "refused"]
    assert entries[0]["kind"] == "hello" and "not flower" in entries[1]["reason"]
    assert SiteLedgerEntry.objects.count() == 2


def test_a_site_worker_app_lists_only_the_federated_task():
    from workbench.site_celery import FEDERATED_TASK, site_app

    app = site_app("memory://")
    import learners.tasks  # noqa: F401  - the ordinary tasks, imported in the same process

    assert [name for name in app.tasks if name.startswith("workbench.")] == [FEDERATED_TASK]


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["federatedround", "siteledgerentry"])
def test_rounds_and_ledger_entries_cannot_be_added_in_the_admin(client, model):
    from django.contrib.auth import get_user_model

    admin_user = get_user_model().objects.create_superuser("root-admin", "r@example.org", "pw")
    client.force_login(admin_user)
    assert client.get(f"/admin/learners/{model}/").status_code == 200
    assert client.get(f"/admin/learners/{model}/add/").status_code == 403
