"""Meta-learning in a real browser with a real worker: an owner meta-trains a meta-model on two projects from the
Meta-models page, names it as a third project's warm start, and the project page then says the adapted
meta-model orders the queue, as the database does."""
from __future__ import annotations

import pytest

from learners.models import MetaModel, MetaModelStatus, ModelVersion, WarmStart
from tests.browser import ARTIFACTS, log_in
from tests.conftest import wait_for
from tests.factories import make_user
from tests.test_meta_tasks import digits_project

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("one_torch_thread")]


def test_owner_meta_trains_and_warm_starts_a_project(live_server, new_page, celery_worker):
    from playwright.sync_api import expect

    owner = make_user()
    first = digits_project([0, 1, 2], labelled=10, owner=owner)
    second = digits_project([3, 4, 5], labelled=10, owner=owner)
    target = digits_project([6, 7, 8, 9], labelled=2, unlabelled=15, offset=30, owner=owner)

    page = new_page()
    log_in(page, live_server, owner)
    page.goto(f"{live_server.url}/")
    page.get_by_role("link", name="Meta-models").click()
    page.get_by_label("Name", exact=True).fill("digits 0-5")
    page.get_by_label("Algorithm").select_option("protonet")
    page.get_by_label(first.name).check()
    page.get_by_label(second.name).check()
    page.get_by_label("n_way", exact=True).fill("3")
    page.get_by_label("steps", exact=True).fill("30")
    page.get_by_label("hidden", exact=True).fill("32")
    page.get_by_role("button", name="Meta-train").click()
    expect(page.locator(".messages")).to_contain_text("Meta-training of 'digits 0-5' started")
    # The page refreshes itself while training runs.
    expect(page.locator("tr[data-status='succeeded']")).to_contain_text("digits 0-5", timeout=120_000)
    assert MetaModel.objects.get().status == MetaModelStatus.SUCCEEDED

    page.goto(f"{live_server.url}/projects/{target.pk}/")
    expect(page.locator("#warm-start-state")).to_contain_text("None")
    page.get_by_label("Meta-model").select_option(label="digits 0-5 (protonet)")
    page.get_by_role("button", name="Use as warm start").click()
    expect(page.locator(".messages")).to_contain_text("Warm start: digits 0-5")

    def decided():
        warm = WarmStart.objects.get(project=target)
        return warm.comparison.get("version") and warm

    warm = wait_for(decided, timeout=120, message="the retrain's comparison")
    page.reload()
    version = ModelVersion.objects.get(project=target, number=warm.comparison["version"])
    state = page.locator("#warm-start-state")
    if warm.active:
        expect(state).to_contain_text(f"The adapted meta-model orders the queue (v{version.number})")
        assert version.meta_model_id == warm.meta_model_id
        expect(page.locator("table.grid").first).to_contain_text("meta:protonet (warm start)")
    else:
        expect(state).to_contain_text(f"Handed over at v{version.number}")
        assert version.meta_model_id is None
    expect(state).to_contain_text(f"{warm.comparison['adapted_accuracy']:.3f}")
    page.screenshot(path=str(ARTIFACTS / "warm-start.png"), full_page=True)
